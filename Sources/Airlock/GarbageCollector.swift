import AirlockLog
import Foundation
import Libvirt

/// Finds what jobs left behind when the process running them died (SIGKILL,
/// a crash, a power cut) and removes it: stored jobs whose process is gone
/// (through `Recovery`: requeued or ended), Airlock domains whose owner is
/// gone, job folders with no live owner and the disk overlays they name,
/// and workload snapshots no unfinished job uses.
///
/// Each job folder holds an `owner` file (the PID and start time of the
/// process running the job); a domain is Airlock's when its `<metadata>`
/// carries Airlock's namespace. Jobs whose owner still runs are left alone.
public struct GarbageCollector: Sendable {
    public let connectURI: String
    public let stateFolder: URL
    public let logger: Logger

    public init(connectURI: String, stateFolder: URL, logger: Logger) {
        self.connectURI = connectURI
        self.stateFolder = stateFolder
        self.logger = logger
    }

    /// What one pass removed.
    public struct Report: Sendable, Equatable {
        public var domains: [String] = []
        public var folders: [String] = []
        /// Job disk overlays removed.
        public var disks: [String] = []
        /// Storage pools stopped because their folder is gone.
        public var pools: [String] = []
        /// Stored jobs whose process died, put back in the queue.
        public var requeued: [String] = []
        /// Stored jobs whose process died, ended as lost or canceled.
        public var ended: [String] = []
        /// Workload snapshots removed.
        public var snapshots: [String] = []
    }

    /// Removes leftovers of dead jobs.
    ///
    /// - Returns: The names of the domains destroyed and folders removed.
    /// - Throws: `AirlockError` when libvirt cannot be reached.
    public func run() throws(AirlockError) -> Report {
        let connection = try Connection.airlock(uri: connectURI)
        defer { connection.close() }
        var report = Report()

        // Stored jobs first: Recovery destroys their guests and settles them in the store.
        let queue = try existingQueue()
        if let queue {
            let recovered = try Recovery(queue: queue, logger: logger).run()
            report.requeued = recovered.requeued
            report.ended = recovered.ended
            report.domains += recovered.domains
        }
        let swept = sweep(connection, queue: queue)
        report.domains += swept.domains
        report.folders = swept.folders
        report.disks = swept.disks
        report.pools = swept.pools
        report.snapshots = swept.snapshots
        return report
    }

    /// What `run()` does besides settling stored jobs: the controller calls
    /// it now and then, having its own recovery.
    ///
    /// - Throws: `AirlockError` when libvirt cannot be reached.
    public func sweep() throws(AirlockError) -> Report {
        let connection = try Connection.airlock(uri: connectURI)
        defer { connection.close() }
        return sweep(connection, queue: try existingQueue())
    }

    /// The state folder's job queue, when it has a store; gc never creates one.
    private func existingQueue() throws(AirlockError) -> JobQueue? {
        guard FileManager.default.fileExists(atPath: JobStore.file(in: stateFolder).path) else { return nil }
        return try JobQueue(stateFolder: stateFolder)
    }

    private func sweep(_ connection: Connection, queue: JobQueue?) -> Report {
        var report = Report()
        let runFolder = JobOwner.runFolder(in: stateFolder)
        let domains: [Domain]
        do {
            domains = try connection.allDomains()
        } catch {
            logger.warning("cannot list the domains", metadata: ["host.uri": connectURI, "error": "\(error)"])
            domains = []
        }
        // Only guests made for this state folder: another folder's jobs (a
        // test's, a second installation's) have owners this one cannot see.
        let mine = stateFolder.resolvingSymlinksInPath().path
        for domain in domains {
            let name = domain.name
            guard name.hasPrefix("airlock-"),
                let metadata = domain.metadata(namespace: DomainSpec.metadataNamespace),
                DomainSpec.stateFolder(inMetadata: metadata) == mine
            else {
                continue
            }
            let jobID = String(name.dropFirst("airlock-".count))
            guard !JobOwner.isAlive(in: runFolder.appendingPathComponent(jobID)) else { continue }
            if (try? domain.destroy()) != nil {
                report.domains.append(name)
            }
        }

        // A job folder is this host's to clean when the job ran here: a remote
        // job's folder names its host, a local job's names none.
        let remote = (try? RemoteHost.parse(connectURI)) != nil
        let folders = (try? FileManager.default.contentsOfDirectory(atPath: runFolder.path)) ?? []
        for jobID in folders.sorted() {
            let folder = runFolder.appendingPathComponent(jobID)
            guard !JobOwner.isAlive(in: folder) else { continue }
            let host = JobOwner.remoteHost(in: folder)
            guard remote ? host == connectURI : host == nil else { continue }
            if remote {
                let storage = RemoteStorage(connection: connection, stateFolder: stateFolder)
                guard storage.removeJobVolumes(jobID) else { continue }
                report.disks.append("\(connectURI) \(RemoteStorage.jobPrefix(jobID))*")
            }
            switch JobOwner.removeOverlay(in: folder, connection: connection) {
            case .removed(let overlay): report.disks.append(overlay)
            case .failed: continue  // The folder names it: keep the folder for the next pass.
            case .none: break
            }
            if (try? FileManager.default.removeItem(at: folder)) != nil {
                report.folders.append(folder.path)
            }
        }
        // A remote host keeps the files of attempts that lost it while they ran.
        if remote {
            report.disks += sweepRemoteOrphans(connection, queue: queue)
            return report
        }
        report.disks += sweepOrphanOverlays(connection, domains: Set(domains.map(\.name)))
        report.pools = sweepStalePools(connection)
        if let queue {
            report.snapshots = sweepSnapshots(queue)
        }
        return report
    }

    /// Removes overlays in this state folder's pool that no job folder
    /// names and no guest uses: left by a process that died after removing
    /// its folder, or by a folder removed by hand. Young ones are left
    /// alone, and so is any whose job still has a domain (a job of another
    /// state folder sharing the images).
    private func sweepOrphanOverlays(_ connection: Connection, domains: Set<String>) -> [String] {
        let pool = DiskPool(catalog: ImageCatalog(root: stateFolder.appendingPathComponent("images")))
        let runFolder = JobOwner.runFolder(in: stateFolder)
        var removed: [String] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: pool.folder.path)) ?? []
        where name.hasPrefix("airlock-") && name.hasSuffix(".qcow2") {
            let jobID = String(name.dropFirst("airlock-".count).dropLast(".qcow2".count))
            let path = pool.folder.appendingPathComponent(name).path
            let attributes = try? FileManager.default.attributesOfItem(atPath: path)
            let age = Date().timeIntervalSince(attributes?[.modificationDate] as? Date ?? Date())
            guard age > 60, !domains.contains("airlock-\(jobID)"),
                !FileManager.default.fileExists(atPath: runFolder.appendingPathComponent(jobID).path)
            else { continue }
            if DiskPool.removeOverlay(path: path, connection: connection) {
                removed.append(path)
            }
        }
        return removed
    }

    /// Removes the job files in a remote host's pool that no job folder
    /// names and whose job (one of this state folder's) is not running
    /// there now: left by an attempt that lost the host and was run again.
    /// Jobs this store does not know (another controller's) are left alone.
    private func sweepRemoteOrphans(_ connection: Connection, queue: JobQueue?) -> [String] {
        guard let queue, let pool = try? connection.storagePool(named: RemoteStorage.poolName) else { return [] }
        try? pool.refresh()
        let runFolder = JobOwner.runFolder(in: stateFolder)
        var jobs: Set<String> = []
        for name in (try? pool.volumeNames()) ?? [] where name.hasPrefix("airlock-") {
            jobs.insert(String(name.dropFirst("airlock-".count).prefix(12)))
        }
        var removed: [String] = []
        for jobID in jobs.sorted() {
            guard let record = try? queue.store.record(jobID),
                !(record.state.isLive && record.host == connectURI),
                !FileManager.default.fileExists(atPath: runFolder.appendingPathComponent(jobID).path)
            else { continue }
            if RemoteStorage(connection: connection, stateFolder: stateFolder).removeJobVolumes(jobID) {
                removed.append("\(connectURI) \(RemoteStorage.jobPrefix(jobID))*")
            }
        }
        return removed
    }

    /// Stops Airlock's storage pools whose folder is gone (a state folder
    /// removed, a test's scratch): libvirt keeps a transient pool until then.
    private func sweepStalePools(_ connection: Connection) -> [String] {
        var stopped: [String] = []
        for pool in (try? connection.allStoragePools()) ?? [] where pool.name.hasPrefix("airlock-") {
            guard let path = try? pool.targetPath(), !FileManager.default.fileExists(atPath: path) else { continue }
            if (try? pool.destroy()) != nil {
                stopped.append(pool.name)
            }
        }
        return stopped
    }

    /// Removes snapshots that no unfinished job uses. Young ones are left
    /// alone: a submission may be about to store the jobs that use them.
    private func sweepSnapshots(_ queue: JobQueue) -> [String] {
        let folder = WorkloadSnapshot.folder(in: stateFolder)
        var removed: [String] = []
        for name in (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? [] {
            let file = folder.appendingPathComponent(name).path
            let attributes = try? FileManager.default.attributesOfItem(atPath: file)
            let age = Date().timeIntervalSince(attributes?[.modificationDate] as? Date ?? .distantPast)
            let unused =
                name.hasSuffix(".part")
                ? age > 3600
                : name.hasSuffix(".tar") && age > 3600
                    && (try? queue.store.isWorkloadInUse(file)) == false
            if unused, unlink(file) == 0 {
                removed.append(file)
            }
        }
        return removed
    }
}

/// The process that runs a job, recorded in its folder as a `ProcessToken`.
enum JobOwner {
    static let fileName = "owner"
    /// The file naming the job's disk overlay, written before the overlay is made.
    static let overlayFile = "overlay"
    /// Names the remote host that holds the job's volumes, if it ran on one.
    static let remoteFile = "remote"

    /// The URI of the remote host a job folder names, or nil for a local job.
    static func remoteHost(in folder: URL) -> String? {
        guard let text = try? String(contentsOf: folder.appendingPathComponent(remoteFile), encoding: .utf8) else {
            return nil
        }
        let uri = text.trimmingCharacters(in: .whitespacesAndNewlines)
        return uri.isEmpty ? nil : uri
    }

    /// What became of the overlay a job folder names.
    enum OverlayRemoval {
        case removed(String)
        case failed(String)
    }

    /// Removes the overlay a job folder names, if any (nil when it names none).
    static func removeOverlay(in folder: URL, connection: Connection?) -> OverlayRemoval? {
        guard let text = try? String(contentsOf: folder.appendingPathComponent(overlayFile), encoding: .utf8)
        else { return nil }
        let path = text.trimmingCharacters(in: .whitespacesAndNewlines)
        guard URL(fileURLWithPath: path).lastPathComponent == DiskPool.overlayName(jobID: folder.lastPathComponent),
            FileManager.default.fileExists(atPath: path)
        else { return nil }
        return DiskPool.removeOverlay(path: path, connection: connection) ? .removed(path) : .failed(path)
    }

    /// The folder that holds one folder per job while it runs.
    static func runFolder(in stateFolder: URL) -> URL {
        stateFolder.appendingPathComponent("run")
    }

    /// Records the current process as the owner of the job folder.
    static func record(in folder: URL) {
        _ = FileManager.default.createFile(
            atPath: folder.appendingPathComponent(fileName).path, contents: Data("\(ProcessToken.current)\n".utf8))
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
        return ProcessToken.isAlive(text.trimmingCharacters(in: .whitespacesAndNewlines))
    }
}
