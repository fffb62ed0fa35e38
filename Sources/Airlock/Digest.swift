import CCrypto
import Foundation

/// SHA-256 of files and bytes, in the `sha256:<hex>` notation manifests use.
enum Digest {
    /// Hashes the files one after the other, as if they were one stream.
    ///
    /// - Throws: `AirlockError` `.imageInvalid` naming a file that cannot be read.
    static func sha256(files: [URL]) throws(AirlockError) -> String {
        guard let context = EVP_MD_CTX_new() else {
            throw AirlockError(.internalError, "OpenSSL could not start a SHA-256 digest")
        }
        defer { EVP_MD_CTX_free(context) }
        EVP_DigestInit_ex(context, EVP_sha256(), nil)
        var buffer = [UInt8](repeating: 0, count: 1 << 20)
        for file in files {
            let fd = open(file.path, O_RDONLY | O_CLOEXEC)
            guard fd >= 0 else {
                throw AirlockError(.imageInvalid, "cannot read '\(file.path)'", cause: POSIXFailure())
            }
            defer { close(fd) }
            while true {
                let count = read(fd, &buffer, buffer.count)
                if count < 0 && errno == EINTR { continue }
                guard count >= 0 else {
                    throw AirlockError(.imageInvalid, "cannot read '\(file.path)'", cause: POSIXFailure())
                }
                if count == 0 { break }
                EVP_DigestUpdate(context, buffer, count)
            }
        }
        return finish(context)
    }

    /// Hashes bytes.
    static func sha256(_ data: Data) -> String {
        guard let context = EVP_MD_CTX_new() else { return "" }
        defer { EVP_MD_CTX_free(context) }
        EVP_DigestInit_ex(context, EVP_sha256(), nil)
        data.withUnsafeBytes { _ = EVP_DigestUpdate(context, $0.baseAddress, $0.count) }
        return finish(context)
    }

    private static func finish(_ context: OpaquePointer) -> String {
        var digest = [UInt8](repeating: 0, count: 32)
        var size: UInt32 = 0
        EVP_DigestFinal_ex(context, &digest, &size)
        return "sha256:" + digest.map { String(format: "%02x", $0) }.joined()
    }
}
