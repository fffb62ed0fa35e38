import AirlockLog
import Foundation

/// The queue of jobs under one state folder, as the command line sees it:
/// submit, look up, cancel, wait for and copy out jobs. The controller takes
/// jobs from the same store; see `Controller`.
public struct JobQueue: Sendable {
    public let stateFolder: URL
    /// The image catalog submissions are checked against.
    public let catalog: ImageCatalog
    public let store: JobStore

    /// Opens the queue, creating the state folder and store if needed.
    ///
    /// - Throws: `AirlockError` when the store cannot be opened.
    public init(stateFolder: URL, imagesFolder: URL? = nil) throws(AirlockError) {
        self.stateFolder = stateFolder
        self.catalog = ImageCatalog(root: imagesFolder ?? stateFolder.appendingPathComponent("images"))
        do {
            try FileManager.default.createDirectory(at: stateFolder, withIntermediateDirectories: true)
            try FileManager.default.createDirectory(
                at: stateFolder.appendingPathComponent("results"), withIntermediateDirectories: true,
                attributes: [.posixPermissions: 0o700])
        } catch {
            throw AirlockError(
                .invalidArgument, "cannot create the state folder '\(stateFolder.path)'", cause: POSIXFailure())
        }
        self.store = try JobStore(file: JobStore.file(in: stateFolder).path)
    }

    /// The folder that holds every stored job's result folder.
    public var resultsRoot: URL { stateFolder.appendingPathComponent("results") }

    /// Where a stored job's results go.
    public func resultsFolder(of id: String) -> URL { resultsRoot.appendingPathComponent(id) }

    // MARK: - Submitting

    /// What `submit` stored.
    public struct Submitted: Sendable, Equatable {
        public var ids: [String]
        public var batch: String?
    }

    /// Checks every request and stores them all as queued jobs, or none.
    ///
    /// Each request's image must exist and the job must fit the capacity of
    /// the live controllers (or, with none running, this machine). Workload
    /// folders are snapshotted now, once per distinct folder.
    ///
    /// - Parameters:
    ///   - requests: The jobs; `sources` names each one in messages (a file
    ///     and line), in the same order.
    ///   - sources: Where each request came from, for messages.
    ///   - asBatch: Give the jobs a batch id, even a single one.
    ///   - policy: The overcommit assumed when no controller runs.
    /// - Returns: The new job ids, and the batch id.
    /// - Throws: `AirlockError` naming the first bad job; nothing is stored then.
    public func submit(
        _ requests: [JobRequest], sources: [String?] = [], asBatch: Bool, policy: HostCapacity.Policy = .init()
    ) throws(AirlockError) -> Submitted {
        let capacity = try schedulingCapacity(policy: policy)
        let registered = try store.hosts()
        let hosts = registered.isEmpty ? [JobStore.Host(name: "local", uri: "qemu:///system")] : registered
        for (index, request) in requests.enumerated() {
            let source = index < sources.count ? sources[index] : nil
            do throws(AirlockError) {
                try request.validate()
                if request.host != nil || request.hostLabel != nil,
                    !hosts.contains(where: { $0.accepts(host: request.host, label: request.hostLabel) })
                {
                    let want = request.host.map { "host '\($0)'" } ?? "a host labelled '\(request.hostLabel ?? "")'"
                    throw AirlockError(
                        .invalidArgument, "the job asks for \(want), and there is none",
                        hint: "'airlock host ls' lists the hosts; 'airlock host add' adds one")
                }
                let image = try catalog.image(named: request.spec.image)
                try image.checkFits(request.spec)
                if let refusal = capacity.refusal(vcpus: request.spec.vcpus, memoryMiB: request.spec.memoryMiB) {
                    throw AirlockError(
                        .invalidArgument, "the job can never run: \(refusal)",
                        hint:
                            "ask for less, or run the controller with a higher --cpu-overcommit or --memory-overcommit")
                }
            } catch {
                throw source.map { error.within($0) } ?? error
            }
        }

        // One snapshot per distinct folder; removed again if storing fails.
        var snapshots: [String: WorkloadSnapshot] = [:]
        var jobs: [JobStore.NewJob] = []
        let batch = asBatch ? JobRunner.makeJobID() : nil
        do {
            for request in requests {
                let folder = request.spec.workload.standardizedFileURL.path
                if snapshots[folder] == nil {
                    snapshots[folder] = try WorkloadSnapshot.make(of: request.spec.workload, in: stateFolder)
                }
                var spec = request.spec
                spec.workloadSnapshot = snapshots[folder]
                let id = JobRunner.makeJobID()
                var job = JobStore.NewJob(
                    id: id, batch: batch, spec: StoredSpec(spec).json(), results: resultsFolder(of: id).path)
                job.labels = request.labels
                job.priority = request.priority
                job.maxAttempts = request.retries + 1
                job.vcpus = spec.vcpus
                job.memoryMiB = spec.memoryMiB
                job.workload = spec.workloadSnapshot?.file
                job.host = request.host
                job.hostLabel = request.hostLabel
                jobs.append(job)
            }
            // gc leaves snapshots alone for an hour after their last change:
            // however long the copies took, the jobs are stored within it.
            for snapshot in snapshots.values {
                utimes(snapshot.file, nil)
            }
            try store.submit(jobs)
        } catch {
            for snapshot in snapshots.values {
                unlink(snapshot.file)
            }
            throw error
        }
        return Submitted(ids: jobs.map(\.id), batch: batch)
    }

    /// The largest capacity among live controllers, or this machine's when
    /// none runs.
    func schedulingCapacity(policy: HostCapacity.Policy) throws(AirlockError) -> HostCapacity {
        let live = try liveControllers()
        guard !live.isEmpty else {
            return HostCapacity.thisMachine(concurrency: 1, policy: policy)
        }
        return HostCapacity(
            concurrency: live.map(\.capacity.concurrency).max() ?? 1, vcpus: live.map(\.capacity.vcpus).max() ?? 0,
            memoryMiB: live.map(\.capacity.memoryMiB).max() ?? 0)
    }

    /// Controllers registered in the store whose process still runs.
    public func liveControllers() throws(AirlockError) -> [JobStore.ControllerRecord] {
        try store.controllers().filter { ProcessToken.isAlive($0.owner) }
    }

    // MARK: - Looking up

    /// A stored job by id or unique id prefix.
    ///
    /// - Throws: `AirlockError` `.notFound` or `.invalidArgument`.
    public func job(_ idOrPrefix: String) throws(AirlockError) -> JobStore.Record {
        let id = try store.resolve(idOrPrefix)
        guard let record = try store.record(id) else {
            throw AirlockError(.notFound, "no job '\(idOrPrefix)' in the store")
        }
        return record
    }

    /// The ids of a batch's jobs.
    ///
    /// - Throws: `AirlockError` `.notFound` for an unknown batch.
    public func batch(_ id: String) throws(AirlockError) -> [String] {
        let ids = try store.jobs(inBatch: id)
        guard !ids.isEmpty else {
            throw AirlockError(.notFound, "no batch '\(id)' in the store", hint: "'airlock ls' shows each job's batch")
        }
        return ids
    }

    /// The command a stored job runs, for display.
    public func summary(of record: JobStore.Record) -> (image: String, command: [String], workload: String) {
        guard let stored = try? StoredSpec.decode(record.spec, job: record.id) else { return ("?", [], "?") }
        return (stored.image, stored.command, stored.workload)
    }

    /// The result a finished job wrote, if it wrote one.
    public func result(of id: String) -> JobResult? {
        JobResultFile.read(from: resultsFolder(of: id))
    }

    /// Removes the workload snapshot of a job once no unfinished job uses it.
    func releaseWorkload(of id: String) {
        guard let file = try? store.workload(of: id), isOwnSnapshot(file), (try? store.isWorkloadInUse(file)) == false
        else { return }
        unlink(file)
    }

    /// Whether `file` is one of this state folder's workload copies: the
    /// only files Airlock deletes because the store names them.
    func isOwnSnapshot(_ file: String) -> Bool {
        let folder = WorkloadSnapshot.folder(in: stateFolder).resolvingSymlinksInPath().path
        let parent = URL(fileURLWithPath: file).deletingLastPathComponent().resolvingSymlinksInPath().path
        return parent == folder && file.hasSuffix(".tar")
    }
}
