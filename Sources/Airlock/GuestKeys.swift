import Foundation
import SSH

/// The two keys made fresh for one guest: the host key it will present
/// (pinned by Airlock) and the client key Airlock logs in with.
struct GuestKeys {
    let host: KeyPair
    let client: KeyPair

    static func generate() throws(SSHError) -> GuestKeys {
        GuestKeys(host: try KeyPair.generate(), client: try KeyPair.generate())
    }

    /// The bundle the guest's boot script reads from fw_cfg: the host key
    /// twice, as a `hostkey` line (dropbear's format, base64) and a
    /// `hostkey-openssh` line (OpenSSH's key file, base64), and an
    /// `authorized` line.
    var bundle: String {
        "hostkey \(Data(host.dropbearPrivateKey).base64EncodedString())\n"
            + "hostkey-openssh \(Data(host.openSSHPrivateKey.utf8).base64EncodedString())\n"
            + "authorized \(client.authorizedKey())\n"
    }

    /// Writes the bundle to a new file readable by its owner only.
    func write(to file: URL) throws(AirlockError) {
        guard
            FileManager.default.createFile(
                atPath: file.path, contents: Data(bundle.utf8), attributes: [.posixPermissions: 0o600])
        else {
            throw AirlockError(.internalError, "cannot write the key file '\(file.path)'")
        }
    }
}
