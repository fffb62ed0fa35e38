import Foundation

/// Names a process so that a reused PID is never mistaken for it: "PID
/// STARTTIME BOOT", with the start time from /proc in clock ticks since boot
/// and the first characters of the kernel's boot id, since after a reboot
/// the same PID may well start at the same tick.
///
/// Jobs record their owner this way, in the store and in their run folder;
/// an owner is alive while a process with that PID and start time runs, in
/// this boot. The names mean something on this machine only.
public enum ProcessToken {
    /// The token of this process.
    public static var current: String {
        let pid = getpid()
        return "\(pid) \(status(of: pid)?.start ?? "0") \(boot)"
    }

    /// The token of the process `pid`, or nil when it does not run.
    public static func of(_ pid: Int32) -> String? {
        guard let status = status(of: pid), !status.exited else { return nil }
        return "\(pid) \(status.start) \(boot)"
    }

    /// Whether the process a token names still runs. A process that has
    /// exited but not been reaped (a zombie) counts as gone, and so does
    /// every process of an earlier boot.
    public static func isAlive(_ token: String) -> Bool {
        guard let pid = pid(of: token) else { return false }
        // Tokens of earlier versions, without the boot, name this boot's processes.
        let known = token.split(separator: " ").count == 2 ? token + " \(boot)" : token
        return of(pid) == known
    }

    /// The PID part of a token.
    public static func pid(of token: String) -> Int32? {
        let fields = token.split(separator: " ")
        guard fields.count == 2 || fields.count == 3, let pid = Int32(fields[0]), pid > 0 else { return nil }
        return pid
    }

    /// This boot's id, shortened: enough to tell boots apart.
    static let boot: String = {
        let id = (try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8)) ?? ""
        let short = id.trimmingCharacters(in: .whitespacesAndNewlines).prefix(8)
        return short.isEmpty ? "-" : String(short)
    }()

    /// Fields 3 (state) and 22 (start time) of /proc/PID/stat.
    private static func status(of pid: Int32) -> (start: String, exited: Bool)? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        // Fields after the command name, which may itself hold spaces.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 19 else { return nil }
        return (String(fields[19]), fields[0] == "Z" || fields[0] == "X")
    }
}
