import CCrypto
import Foundation

/// An Ed25519 key pair, made fresh for one job and never written to the
/// host's disk by this type.
public struct KeyPair: Sendable {
    /// The 32-byte private seed.
    private let seed: [UInt8]
    /// The 32-byte public key.
    public let publicKey: [UInt8]

    /// Makes a new random key pair.
    ///
    /// - Throws: `SSHError` when OpenSSL cannot make the key.
    public static func generate() throws(SSHError) -> KeyPair {
        var seed = [UInt8](repeating: 0, count: 32)
        guard RAND_bytes(&seed, 32) == 1 else {
            throw SSHError(.library, message: "OpenSSL could not produce random bytes")
        }
        return try KeyPair(seed: seed)
    }

    /// Rebuilds a key pair from its private seed.
    public init(seed: [UInt8]) throws(SSHError) {
        guard seed.count == 32,
            let key = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nil, seed, 32)
        else {
            throw SSHError(.library, message: "OpenSSL rejected the Ed25519 seed")
        }
        defer { EVP_PKEY_free(key) }
        var publicKey = [UInt8](repeating: 0, count: 32)
        var length = 32
        guard EVP_PKEY_get_raw_public_key(key, &publicKey, &length) == 1, length == 32 else {
            throw SSHError(.library, message: "OpenSSL could not derive the Ed25519 public key")
        }
        self.seed = seed
        self.publicKey = publicKey
    }

    /// The public key in SSH wire format, as a server presents it.
    public var publicKeyBlob: [UInt8] {
        var writer = WireWriter()
        writer.string("ssh-ed25519")
        writer.string(publicKey)
        return writer.bytes
    }

    /// The public key as one `authorized_keys` line, without a newline.
    public func authorizedKey(comment: String = "airlock") -> String {
        "ssh-ed25519 \(Data(publicKeyBlob).base64EncodedString()) \(comment)"
    }

    /// SHA-256 fingerprint in OpenSSH's notation (`SHA256:...`).
    public var fingerprint: String {
        Self.fingerprint(ofBlob: publicKeyBlob)
    }

    /// SHA-256 fingerprint of any SSH public key blob.
    public static func fingerprint(ofBlob blob: [UInt8]) -> String {
        var digest = [UInt8](repeating: 0, count: 32)
        var size: UInt32 = 0
        _ = EVP_Digest(blob, blob.count, &digest, &size, EVP_sha256(), nil)
        let text = Data(digest).base64EncodedString().replacingOccurrences(of: "=", with: "")
        return "SHA256:\(text)"
    }

    /// The private key in OpenSSH's unencrypted format, for libssh2.
    public var openSSHPrivateKey: String {
        var inner = WireWriter()
        // The two check words only have to match each other.
        let check = UInt32.random(in: .min ... .max)
        inner.uint32(check)
        inner.uint32(check)
        inner.string("ssh-ed25519")
        inner.string(publicKey)
        inner.string(seed + publicKey)
        inner.string("airlock")
        var pad: UInt8 = 1
        while inner.bytes.count % 8 != 0 {
            inner.bytes.append(pad)
            pad += 1
        }

        var outer = WireWriter()
        outer.bytes.append(contentsOf: Array("openssh-key-v1".utf8) + [0])
        outer.string("none")
        outer.string("none")
        outer.string("")
        outer.uint32(1)
        outer.string(publicKeyBlob)
        outer.string(inner.bytes)

        let body = Data(outer.bytes).base64EncodedString(options: [.lineLength64Characters, .endLineWithLineFeed])
        return "-----BEGIN OPENSSH PRIVATE KEY-----\n\(body)\n-----END OPENSSH PRIVATE KEY-----\n"
    }

    /// The private key in dropbear's host key format.
    public var dropbearPrivateKey: [UInt8] {
        var writer = WireWriter()
        writer.string("ssh-ed25519")
        writer.string(seed + publicKey)
        return writer.bytes
    }
}

/// Builds byte strings in the SSH wire encoding (RFC 4251).
struct WireWriter {
    var bytes: [UInt8] = []

    mutating func uint32(_ value: UInt32) {
        bytes += [UInt8(value >> 24), UInt8((value >> 16) & 0xff), UInt8((value >> 8) & 0xff), UInt8(value & 0xff)]
    }

    mutating func string(_ value: [UInt8]) {
        uint32(UInt32(value.count))
        bytes += value
    }

    mutating func string(_ value: String) {
        string(Array(value.utf8))
    }
}
