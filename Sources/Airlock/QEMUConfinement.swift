import AirlockLog
import Foundation
import Synchronization

/// How a local guest's QEMU process is confined: the account it runs as
/// and whether a seccomp filter is on (libvirt's `user` and
/// `seccomp_sandbox` in qemu.conf). Read from libvirt's PID file and
/// /proc once the guest runs, kept in result.json, and warned about once
/// per process when QEMU runs as root or unfiltered.
public struct QEMUConfinement: Sendable, Codable, Equatable {
    public var uid: UInt32
    public var user: String?
    public var seccomp: Bool

    public var isConfined: Bool { uid != 0 && seccomp }

    /// The confinement of a running domain of the local system libvirt;
    /// nil for other hosts, or when the process cannot be read.
    static func read(domainName: String, uri: String) -> QEMUConfinement? {
        guard uri == "qemu:///system",
            let pidText = try? String(contentsOfFile: "/run/libvirt/qemu/\(domainName).pid", encoding: .utf8),
            let pid = Int32(pidText.trimmingCharacters(in: .whitespacesAndNewlines)),
            let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
        else { return nil }
        return parse(status: status)
    }

    /// Reads the effective uid and the seccomp mode from /proc/PID/status text.
    static func parse(status: String) -> QEMUConfinement? {
        var uid: UInt32?
        var seccomp: Bool?
        for line in status.split(separator: "\n") {
            let fields = line.split(whereSeparator: { $0 == "\t" || $0 == " " })
            if fields.first == "Uid:", fields.count > 2 {
                uid = UInt32(fields[2])
            } else if fields.first == "Seccomp:", fields.count > 1 {
                seccomp = fields[1] == "2"
            }
        }
        guard let uid, let seccomp else { return nil }
        let user = getpwuid(uid).map { String(cString: $0.pointee.pw_name) }
        return QEMUConfinement(uid: uid, user: user, seccomp: seccomp)
    }

    private static let warned = Atomic<Bool>(false)

    /// Warns, once per process, when QEMU is not confined.
    func warnIfUnconfined(_ logger: Logger) {
        guard !isConfined, !Self.warned.exchange(true, ordering: .relaxed) else { return }
        var problems: [String] = []
        if uid == 0 { problems.append("runs as root") }
        if !seccomp { problems.append("runs without a seccomp sandbox") }
        logger.warning(
            "QEMU \(problems.joined(separator: " and ")): a guest that escaped QEMU would have more of the host; "
                + "see 'Hardening the host' in the README (user and seccomp_sandbox in /etc/libvirt/qemu.conf)")
    }
}
