import CLibssh2
import Foundation

// MARK: - Sessions to hosts: known hosts, key files, forwarded channels

extension Session {
    /// Fails unless the server's host key is the one `knownHostsFile` lists
    /// for `host` (at `port`). A host that is not listed is refused too:
    /// nothing is trusted on first use.
    ///
    /// - Throws: `SSHError.Kind.hostKeyMismatch`, saying which case it was.
    public func verifyKnownHost(_ host: String, port: Int, knownHostsFile: String) throws(SSHError) {
        let session = try pointer()
        var length = 0
        var type: Int32 = 0
        guard let key = libssh2_session_hostkey(session, &length, &type), length > 0 else {
            throw SSHError.last(session, "verifyKnownHost")
        }
        let presented = key.withMemoryRebound(to: UInt8.self, capacity: length) {
            Array(UnsafeBufferPointer(start: $0, count: length))
        }
        let fingerprint = KeyPair.fingerprint(ofBlob: presented)
        guard let hosts = libssh2_knownhost_init(session) else {
            throw SSHError.last(session, "verifyKnownHost")
        }
        defer { libssh2_knownhost_free(hosts) }
        guard libssh2_knownhost_readfile(hosts, knownHostsFile, LIBSSH2_KNOWNHOST_FILE_OPENSSH) >= 0 else {
            throw SSHError(
                .hostKeyMismatch,
                message: "cannot read the known hosts file '\(knownHostsFile)' to check '\(host)' "
                    + "(it presented \(fingerprint))")
        }
        let typeMask =
            LIBSSH2_KNOWNHOST_TYPE_PLAIN | LIBSSH2_KNOWNHOST_KEYENC_RAW | Self.knownHostKeyBits(forHostKeyType: type)
        let check = key.withMemoryRebound(to: CChar.self, capacity: length) { raw in
            libssh2_knownhost_checkp(hosts, host, Int32(port), raw, length, typeMask, nil)
        }
        switch check {
        case LIBSSH2_KNOWNHOST_CHECK_MATCH:
            return
        case LIBSSH2_KNOWNHOST_CHECK_MISMATCH:
            throw SSHError(
                .hostKeyMismatch,
                message: "host key mismatch for '\(host)': it presented \(fingerprint), which is not the key "
                    + "'\(knownHostsFile)' lists")
        default:
            throw SSHError(
                .hostKeyMismatch,
                message: "'\(host)' (port \(port)) is not in the known hosts file '\(knownHostsFile)'; "
                    + "it presented \(fingerprint)")
        }
    }

    /// libssh2's known-host key bits for a `libssh2_session_hostkey` type.
    static func knownHostKeyBits(forHostKeyType type: Int32) -> Int32 {
        switch type {
        case LIBSSH2_HOSTKEY_TYPE_RSA: return LIBSSH2_KNOWNHOST_KEY_SSHRSA
        case LIBSSH2_HOSTKEY_TYPE_DSS: return LIBSSH2_KNOWNHOST_KEY_SSHDSS
        case LIBSSH2_HOSTKEY_TYPE_ECDSA_256: return LIBSSH2_KNOWNHOST_KEY_ECDSA_256
        case LIBSSH2_HOSTKEY_TYPE_ECDSA_384: return LIBSSH2_KNOWNHOST_KEY_ECDSA_384
        case LIBSSH2_HOSTKEY_TYPE_ECDSA_521: return LIBSSH2_KNOWNHOST_KEY_ECDSA_521
        case LIBSSH2_HOSTKEY_TYPE_ED25519: return LIBSSH2_KNOWNHOST_KEY_ED25519
        default: return LIBSSH2_KNOWNHOST_KEY_UNKNOWN
        }
    }

    /// Authenticates with a private key file (OpenSSH or PEM, without a
    /// passphrase); no agent, no password.
    public func authenticate(
        user: String, privateKeyFile: String, deadline: ContinuousClock.Instant
    ) throws(SSHError) {
        let session = try pointer()
        do throws(SSHError) {
            try retry(deadline, "authenticate") {
                libssh2_userauth_publickey_fromfile_ex(
                    session, user, UInt32(user.utf8.count), nil, privateKeyFile, nil)
            }
        } catch {
            guard error.kind == .library else { throw error }
            throw SSHError(
                .authenticationFailed, code: error.code,
                message: "'\(user)' could not log in with the key '\(privateKeyFile)': \(error.message)",
                operation: "authenticate")
        }
        libssh2_keepalive_config(session, 1, UInt32(keepaliveInterval))
        enableKeepalives()
    }

    /// Opens a channel to `host`:`port` as the server sees them (an SSH
    /// `direct-tcpip` channel): the server makes the TCP connection.
    ///
    /// - Throws: `SSHError`; a server that forbids TCP forwarding refuses here.
    public func forwardedChannel(
        toHost host: String, port: Int, deadline: ContinuousClock.Instant?
    ) throws(SSHError) -> Channel {
        let session = try pointer()
        var opened: OpaquePointer?
        try retry(deadline, "forwardedChannel") {
            opened = host.withCString { airlock_ssh_channel_direct_tcpip(session, $0, Int32(port)) }
            return opened == nil ? libssh2_session_last_errno(session) : 0
        }
        guard let opened else {
            throw SSHError.last(session, "forwardedChannel")
        }
        return Channel(opened, session: self)
    }
}
