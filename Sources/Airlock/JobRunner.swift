import AirlockLog
import Foundation
import Libvirt
import SSH
import Synchronization

/// Which output stream of the job's command a chunk belongs to.
public enum OutputStream: Sendable {
    case stdout, stderr
}

/// The steps of a job that its observer hears about, after boot.
public enum JobPhase: Sendable {
    /// SSH is up: the workload is about to be pushed and run.
    case running
    /// The command has ended: results are about to be collected.
    case collecting
}

/// Runs one job in one fresh guest, start to finish: make the guest, push the
/// workload, run the command, collect the results, destroy everything.
///
/// `run()` is blocking and is called once, on one thread. `cancel()` may be
/// called from any thread; the job then stops at once and cleans up.
public final class JobRunner: @unchecked Sendable {
    // @unchecked: the mutable guest handles are touched only by the thread in
    // `run()`; `cancel()` and `leftovers()` go through `shared` and
    // `interrupt`, which are thread-safe.
    public let jobID: String
    public let spec: JobSpec
    let logger: Logger
    let output: @Sendable (OutputStream, UnsafeRawBufferPointer) -> Void
    let onPhase: @Sendable (JobPhase) -> Void
    let interrupt = Interrupt()
    let shared = Mutex<
        (
            cancelled: Bool, domain: String?, jobFolder: String?, overlay: String?, diskFull: Bool,
            remoteVolumes: Bool
        )
    >((false, nil, nil, nil, false, false))
    /// The remote host the guest runs on, or nil for this machine.
    let remote: RemoteHost?
    /// How SSH reaches the guest.
    let route: GuestRoute

    /// Whether the job's command was started in the guest. Set by `run()`;
    /// read it after `run()` returns.
    public internal(set) var commandStarted = false

    /// - Parameters:
    ///   - spec: A validated job spec.
    ///   - jobID: The job's id; a fresh one when nil.
    ///   - logger: Receives one debug record per lifecycle step.
    ///   - output: Receives the command's output live, chunk by chunk.
    ///   - onPhase: Told, on `run()`'s thread, when the job moves on from boot to work and from work to collection.
    public init(
        spec: JobSpec, jobID: String? = nil, logger: Logger,
        output: @escaping @Sendable (OutputStream, UnsafeRawBufferPointer) -> Void = { _, _ in },
        onPhase: @escaping @Sendable (JobPhase) -> Void = { _ in }
    ) {
        self.jobID = jobID ?? Self.makeJobID()
        self.spec = spec
        var logger = logger
        logger[metadataKey: "job.id"] = self.jobID
        self.logger = logger
        self.output = output
        self.onPhase = onPhase
        // A URI that cannot be read fails in `run()`, before anything is made.
        remote = (try? RemoteHost.parse(spec.connectURI)) ?? nil
        route = GuestRoute(remote: remote)
    }

    /// Asks the job to stop. Waits in progress end at once; the guest and the
    /// job's files are removed by `run()` before it returns.
    public func cancel() {
        shared.withLock { $0.cancelled = true }
        interrupt.fire()
    }

    var isCancelled: Bool { shared.withLock { $0.cancelled } }

    /// Whether QEMU paused the guest because a write to its disk failed:
    /// the host's disk is full, and the guest will never go on by itself.
    var hostDiskFull: Bool { shared.withLock { $0.diskFull } }

    /// Stops the job because its guest was paused on an I/O error.
    func stopOnDiskFull() {
        shared.withLock { $0.diskFull = true }
        interrupt.fire()
    }

    func diskFullError(_ name: String) -> AirlockError {
        AirlockError(
            .guestFailed,
            "host storage full: guest '\(name)' was paused on an I/O error writing its disk overlay in "
                + "'\(spec.catalog.poolFolder.path)', and the job was stopped",
            hint: "free space on the host's disk that holds the image pool")
    }

    /// Names of what the job has made and not yet removed.
    public func leftovers() -> [String] {
        shared.withLock { state in
            [
                state.domain.map { "domain '\($0)'" }, state.overlay.map { "disk '\($0)'" },
                state.remoteVolumes ? "the job's files on host '\(spec.connectURI)'" : nil,
                state.jobFolder.map { "folder '\($0)'" },
            ].compactMap { $0 }
        }
    }

    /// Writes a `result.json` for a job its caller is leaving at once (a
    /// second Ctrl-C), so that the result folder still says what happened.
    ///
    /// - Parameter leftBehind: What the job made and did not remove.
    public func recordAbandoned(leftBehind: [String]) {
        var result = JobResult(
            jobID: jobID, state: .canceled, image: spec.image, host: spec.connectURI, startedAt: Date())
        result.error =
            "interrupted twice; left at once"
            + (leftBehind.isEmpty ? "" : " with \(leftBehind.joined(separator: ", ")) left behind for 'airlock gc'")
        result.errorCode = AirlockError.Code.cancelled.description
        JobResultFile.write(result, to: resultsFolder)
    }

    /// The folder the results go to.
    public var resultsFolder: URL {
        spec.resultsFolder ?? URL(fileURLWithPath: "airlock-results").appendingPathComponent(jobID)
    }

    // MARK: - The job

    /// Runs the job.
    ///
    /// - Returns: The result, also written to `result.json`, whatever happened
    ///   once the job had started (failure, timeout, cancel included).
    /// - Throws: `AirlockError` only for problems found before anything was
    ///   made: bad input, an unknown or broken image, an unreachable host.
    public func run() throws(AirlockError) -> JobResult {
        let started = ContinuousClock.now

        // 1. Check everything that can be checked before making anything.
        try spec.validate()
        _ = try RemoteHost.parse(spec.connectURI)
        let image = try spec.catalog.image(named: spec.image)
        try image.checkFits(spec)
        // Secrets are read now, so that a missing one fails before anything is made.
        let environment = ProcessInfo.processInfo.environment
        var secretValues: [(String, String)] = []
        for secret in spec.secrets {
            secretValues.append((secret.name, try secret.value(environment: environment)))
        }
        let results = resultsFolder
        if let existing = try? FileManager.default.contentsOfDirectory(atPath: results.path), !existing.isEmpty {
            throw AirlockError(
                .exists, "result folder '\(results.path)' already exists and is not empty",
                hint: "choose another folder with --results")
        }
        let connection = try Connection.airlock(uri: spec.connectURI)
        defer { connection.close() }
        let plan = try acceleratorPlan(connection)
        if let node = try? connection.nodeInfo() {
            if Int64(spec.memoryMiB) * 1024 > node.memoryKiB {
                throw AirlockError(
                    .invalidArgument,
                    "the job asks for \(Sizes.format(Int64(spec.memoryMiB) << 20)) of memory; host "
                        + "'\(connection.uri)' has \(Sizes.format(node.memoryKiB << 10))",
                    hint: "lower --memory")
            }
            if spec.vcpus > node.cpus {
                throw AirlockError(
                    .invalidArgument,
                    "the job asks for \(spec.vcpus) vCPUs; host '\(connection.uri)' has \(node.cpus) CPUs",
                    hint: "lower --vcpus")
            }
        }

        // 2. From here on, every path ends in `cleanUp` and writes result.json.
        var result = JobResult(
            jobID: jobID, state: .failed, image: image.name, host: connection.uri, startedAt: Date())
        result.limits = JobLimits(spec)
        result.egress = EgressReport(spec.egress)
        var guest: Guest?
        var stats = GuestStats()
        do {
            try FileManager.default.createDirectory(at: results, withIntermediateDirectories: true)
            guest = try startGuest(image: image, plan: plan, connection: connection, result: &result)
            if let guest {
                try work(in: guest, image: image, secrets: secretValues, result: &result, stats: &stats)
            }
        } catch {
            record(error, guest: guest, into: &result)
        }
        result.reconcileExit(with: stats)
        result.noteLimits(spec, guest: stats)

        result.imageUploadBytes = guest?.uploaded
        let destroyStart = ContinuousClock.now
        cleanUp(guest)
        result.phases.destroy = seconds(since: destroyStart)
        result.phases.total = seconds(since: started)
        result.finishedAt = Date()
        JobResultFile.write(result, to: results)
        return result
    }

    // MARK: - Phases

    /// A started guest and what belongs to it.
    struct Guest {
        let domain: Domain
        let console: ConsoleWatcher
        let watch: GuestWatch
        let port: Int
        let keys: GuestKeys
        var session: Session?
        /// Bytes of the image sent to a remote host for this job, if any.
        var uploaded: Int64?
    }

    /// The accelerators to try, in order, and whether the first is a probe.
    struct AcceleratorPlan {
        var first: Accelerator
        var probing: Bool
        /// Whether a failed probe falls back to TCG; without it (KVM asked
        /// for by name), the job fails at once instead.
        var fallback = true
    }

    func acceleratorPlan(_ connection: Connection) throws(AirlockError) -> AcceleratorPlan {
        let capabilities: String
        do {
            capabilities = try connection.capabilities()
        } catch {
            throw AirlockError(.hostUnavailable, "cannot read the capabilities of '\(connection.uri)'", cause: error)
        }
        let hasKVM = capabilities.contains("<domain type='kvm'")
        let hasTCG = capabilities.contains("<domain type='qemu'")
        let cache = AcceleratorCache(folder: spec.stateFolder.appendingPathComponent("accel"))
        switch spec.accelerator {
        case .kvm:
            guard hasKVM else {
                throw AirlockError(
                    .hostUnavailable, "host '\(connection.uri)' offers no KVM acceleration",
                    hint: "use --accel tcg (slow emulation) or a host with /dev/kvm")
            }
            let known = cache.lookup(uri: connection.uri)
            if known == .kvm {
                return AcceleratorPlan(first: .kvm, probing: false)
            }
            if known == .tcg {
                throw AirlockError(
                    .hostUnavailable,
                    "KVM did not boot a guest on host '\(connection.uri)' when Airlock last tried it, so this host "
                        + "runs guests under TCG",
                    hint: "use --accel auto or --accel tcg; to have auto try KVM again, delete "
                        + "'\(spec.stateFolder.appendingPathComponent("accel").path)'")
            }
            // Asked for by name: a KVM that cannot boot the guest fails the job soon, rather than at the deadline.
            return AcceleratorPlan(first: .kvm, probing: true, fallback: false)
        case .tcg:
            guard hasTCG else {
                throw AirlockError(
                    .hostUnavailable, "host '\(connection.uri)' cannot emulate x86_64 guests (no qemu domain type)",
                    hint: "install qemu-system-x86 on the host")
            }
            return AcceleratorPlan(first: .tcg, probing: false)
        case .auto:
            guard hasKVM || hasTCG else {
                throw AirlockError(
                    .hostUnavailable, "host '\(connection.uri)' has no usable acceleration for x86_64 guests",
                    hint: "install qemu-system-x86 on the host and restart libvirtd")
            }
            if let known = cache.lookup(uri: connection.uri) {
                return AcceleratorPlan(first: known, probing: false)
            }
            return hasKVM ? AcceleratorPlan(first: .kvm, probing: true) : AcceleratorPlan(first: .tcg, probing: false)
        }
    }

    // MARK: - Clean-up and results

    func record(_ error: Error, guest: Guest?, into result: inout JobResult) {
        // Whatever the pause broke (a read, a write, a wait), the pause is the reason.
        let error = hostDiskFull ? diskFullError(guest?.domain.name ?? "airlock-\(jobID)") : error
        if let error = error as? AirlockError, error.code == .cancelled {
            result.state = .canceled
            result.error = error.description
            return
        }
        if isCancelled {
            result.state = .canceled
            result.error = "canceled"
            return
        }
        result.state = .failed
        result.error = describe(error)
        result.errorCode = (error as? AirlockError)?.code.description
        if error is SSHError {
            result.errorCode = AirlockError.Code.connectionLost.description
        }
        // A remote host that went away failed the job, whatever broke first.
        if let guest, hostGone(guest) {
            result.errorCode = AirlockError.Code.hostUnavailable.description
        }
        result.hint = (error as? AirlockError)?.hint
        logger.debug("job failed", metadata: ["error": result.error ?? ""])
    }

    /// Whether the guest's remote host stopped answering: a libvirt call
    /// fails and the connection is found closed.
    func hostGone(_ guest: Guest) -> Bool {
        guard remote != nil else { return false }
        let domain = guest.domain
        let answered = Bounded.run(.seconds(30)) { (try? domain.state()) != nil }
        return answered != true && !guest.domain.connection.isAlive
    }

    func describe(_ error: Error) -> String {
        if let error = error as? AirlockError {
            return error.description
        }
        return "\(error)"
    }

    /// Destroys the guest and removes the job's files. Never throws; each step
    /// is safe when its set-up never ran.
    func cleanUp(_ guest: Guest?) {
        if let guest {
            guest.session?.close()
            destroy(guest)
        } else if let name = shared.withLock({ $0.domain }) {
            if destroyDomain(named: name, connection: nil) {
                shared.withLock { $0.domain = nil }
            }
        }
        route.close()
        if shared.withLock({ $0.remoteVolumes }) {
            let connection = guest?.domain.connection
            _ = Bounded.run(.seconds(40)) { [self] in removeRemoteVolumes(connection: connection) }
        }
        if let overlay = shared.withLock({ $0.overlay }) {
            // The guest's connection when there is one; a fresh one if libvirtd went away meanwhile.
            let connection = guest.flatMap { $0.domain.connection.isAlive ? $0.domain.connection : nil }
            if DiskPool.removeOverlay(path: overlay, connection: connection ?? (try? Connection(uri: spec.connectURI)))
            {
                logger.debug("overlay removed", metadata: ["disk.path": overlay])
                shared.withLock { $0.overlay = nil }
            } else {
                logger.warning(
                    "the job's disk overlay could not be removed; 'airlock gc' removes it",
                    metadata: ["disk.path": overlay])
            }
        }
        if let folder = shared.withLock({ $0.jobFolder }),
            shared.withLock({ $0.overlay == nil && !$0.remoteVolumes })
        {
            try? FileManager.default.removeItem(atPath: folder)
            shared.withLock { $0.jobFolder = nil }
        }
    }

    func destroy(_ guest: Guest) {
        guest.watch.stop()
        // A remote host that vanished is not waited for: its guest ends by its own lifetime, and gc cleans up.
        let limit: Duration = remote == nil ? .seconds(3600) : .seconds(40)
        let domain = guest.domain
        let gone = Bounded.run(limit) { [self] in destroyDomain(named: domain.name, connection: domain) }
        if gone == true {
            shared.withLock { $0.domain = nil }
        }
        let console = guest.console
        _ = Bounded.run(.seconds(10)) { console.stop() }
    }

    /// Destroys a domain, through `domain` when given, else (or when that
    /// fails) through fresh connections: libvirtd may have restarted under
    /// the job, which leaves the guest running and the old connection dead.
    ///
    /// - Returns: Whether the domain is gone.
    func destroyDomain(named name: String, connection domain: Domain?) -> Bool {
        var lastError: Error?
        if let domain {
            do {
                try domain.destroy()
                logger.debug("domain destroyed", metadata: ["domain.name": name])
                return true
            } catch {
                lastError = error
            }
        }
        // A remote host that went away is not waited for long: its guest ends by its own lifetime.
        let deadline = ContinuousClock.now + (remote == nil ? .seconds(30) : .seconds(10))
        repeat {
            do {
                let connection = try Connection.airlock(uri: spec.connectURI)
                defer { connection.close() }
                if let found = try connection.domain(named: name) {
                    try found.destroy()
                }
                if lastError != nil {
                    logger.info("domain destroyed through a new libvirt connection", metadata: ["domain.name": name])
                }
                return true
            } catch {
                lastError = error
            }
            Thread.sleep(forTimeInterval: 0.5)
        } while ContinuousClock.now < deadline
        logger.warning(
            "guest could not be destroyed; 'airlock gc' removes it once libvirtd answers",
            metadata: ["domain.name": name, "error": "\(lastError.map { "\($0)" } ?? "")"])
        return false
    }

    // MARK: - Helpers

    func seconds(since start: ContinuousClock.Instant) -> Double {
        ((ContinuousClock.now - start).inSeconds * 1000).rounded() / 1000
    }

    /// Twelve random lowercase hex digits.
    static func makeJobID() -> String {
        (0..<6).map { _ in String(format: "%02x", UInt8.random(in: 0...255)) }.joined()
    }
}
