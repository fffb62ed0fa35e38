import Archive
import Foundation

/// The NoCloud seed a cloud image's cloud-init reads at boot: an ISO 9660
/// disk labelled `cidata` holding `meta-data` and `user-data`.
///
/// Every seed carries a fresh `instance-id` (the job's), so cloud-init
/// never mistakes a job for a boot it has already configured, and both
/// files are always written: cloud-init ignores a seed that lacks either.
/// The guest's root account gets the job's client key and the guest the
/// job's host key, which the host pins (given a host key, cloud-init makes
/// no other). When
/// cloud-init has finished, the guest prints Airlock's ready line on its
/// serial console, and the host connects only then.
struct CloudInitSeed {
    let jobID: String
    let metaData: String
    let userData: String

    var hostname: String { "airlock-\(jobID)" }

    /// - Parameters:
    ///   - jobID: The job's id, which names the instance and the host.
    ///   - keys: The job's client and host keys.
    ///   - lifetimeSeconds: The guest powers itself off after this long,
    ///     whatever happens.
    init(jobID: String, keys: GuestKeys, lifetimeSeconds: Int64) {
        self.jobID = jobID
        metaData = "instance-id: airlock-\(jobID)\nlocal-hostname: airlock-\(jobID)\n"
        userData = Self.userData(hostname: "airlock-\(jobID)", keys: keys, lifetimeSeconds: lifetimeSeconds)
    }

    private static func userData(hostname: String, keys: GuestKeys, lifetimeSeconds: Int64) -> String {
        let privateKey = keys.host.openSSHPrivateKey.split(separator: "\n").map { "    \($0)" }
            .joined(separator: "\n")
        // sysrq "o" powers off at once, with no shutdown to wait for.
        let watchdog =
            "(sleep \(lifetimeSeconds); echo o >/proc/sysrq-trigger) </dev/null >/dev/null 2>&1 &"
        return """
            #cloud-config
            disable_root: false
            ssh_pwauth: false
            ssh_deletekeys: true
            ssh_keys:
              ed25519_private: |
            \(privateKey)
              ed25519_public: \(keys.host.authorizedKey(comment: hostname))
            ssh_authorized_keys:
              - \(keys.client.authorizedKey())
            users: []
            bootcmd:
              - [sh, -c, "\(watchdog)"]
            runcmd:
              - [sh, -c, "echo '\(ConsoleWatcher.readyLine)' >/dev/ttyS0"]

            """
    }

    /// Writes the seed image, readable by its owner only (it holds the host key).
    func write(to file: URL) throws(AirlockError) {
        do {
            try ISOWriter.write(
                files: [("meta-data", Data(metaData.utf8)), ("user-data", Data(userData.utf8))],
                volumeID: "cidata", to: file)
        } catch {
            throw AirlockError(.internalError, "cannot write the cloud-init seed '\(file.path)'", cause: error)
        }
    }
}
