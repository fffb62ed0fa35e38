import Foundation
import Libvirt

/// Finds what jobs left behind when the process running them died (SIGKILL,
/// a crash, a power cut) and removes it: Airlock domains whose owner is gone,
/// and job folders with no live owner.
///
/// Each job folder holds an `owner` file (the PID and start time of the
/// process running the job); a domain is Airlock's when its `<metadata>`
/// carries Airlock's namespace. Jobs whose owner still runs are left alone.
public struct GarbageCollector: Sendable {
    public let connectURI: String
    public let stateFolder: URL

    public init(connectURI: String, stateFolder: URL) {
        self.connectURI = connectURI
        self.stateFolder = stateFolder
    }

    /// What one pass removed.
    public struct Report: Sendable, Equatable {
        public var domains: [String] = []
        public var folders: [String] = []
    }

    /// Removes leftovers of dead jobs.
    ///
    /// - Returns: The names of the domains destroyed and folders removed.
    /// - Throws: `AirlockError` when libvirt cannot be reached.
    public func run() throws(AirlockError) -> Report {
        let connection = try Connection.airlock(uri: connectURI)
        defer { connection.close() }
        var report = Report()
        let runFolder = JobOwner.runFolder(in: stateFolder)

        let domains: [Domain]
        do {
            domains = try connection.allDomains()
        } catch {
            throw AirlockError(.hostUnavailable, "cannot list the domains of '\(connectURI)'", cause: error)
        }
        for domain in domains {
            let name = domain.name
            guard name.hasPrefix("airlock-"), domain.metadata(namespace: DomainSpec.metadataNamespace) != nil else {
                continue
            }
            let jobID = String(name.dropFirst("airlock-".count))
            guard !JobOwner.isAlive(in: runFolder.appendingPathComponent(jobID)) else { continue }
            if (try? domain.destroy()) != nil {
                report.domains.append(name)
            }
        }

        let folders = (try? FileManager.default.contentsOfDirectory(atPath: runFolder.path)) ?? []
        for jobID in folders.sorted() {
            let folder = runFolder.appendingPathComponent(jobID)
            guard !JobOwner.isAlive(in: folder) else { continue }
            if (try? FileManager.default.removeItem(at: folder)) != nil {
                report.folders.append(folder.path)
            }
        }
        return report
    }
}

/// The process that runs a job, recorded in its folder as "PID STARTTIME"
/// (the start time from /proc, so that a reused PID is not mistaken for it).
enum JobOwner {
    static let fileName = "owner"

    /// The folder that holds one folder per job while it runs.
    static func runFolder(in stateFolder: URL) -> URL {
        stateFolder.appendingPathComponent("run")
    }

    /// Records the current process as the owner of the job folder.
    static func record(in folder: URL) {
        let pid = getpid()
        guard let start = startTime(of: pid) else { return }
        _ = FileManager.default.createFile(
            atPath: folder.appendingPathComponent(fileName).path, contents: Data("\(pid) \(start)\n".utf8))
    }

    /// Whether the process recorded in the folder still runs. A folder
    /// without an owner file is only alive while it is very new (its owner
    /// may be about to write it).
    static func isAlive(in folder: URL) -> Bool {
        let file = folder.appendingPathComponent(fileName)
        guard let text = try? String(contentsOf: file, encoding: .utf8) else {
            let attributes = try? FileManager.default.attributesOfItem(atPath: folder.path)
            let made = attributes?[.modificationDate] as? Date ?? .distantPast
            return Date().timeIntervalSince(made) < 10
        }
        let fields = text.split(separator: " ").map { $0.trimmingCharacters(in: .whitespacesAndNewlines) }
        guard fields.count == 2, let pid = Int32(fields[0]) else { return false }
        return startTime(of: pid) == fields[1]
    }

    /// Field 22 of /proc/PID/stat: the process's start time in clock ticks.
    private static func startTime(of pid: Int32) -> String? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let close = stat.lastIndex(of: ")")
        else { return nil }
        // Fields after the command name, which may itself hold spaces.
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 19 ? String(fields[19]) : nil
    }
}
