import AirlockLog
import Foundation
import Libvirt
import Synchronization

/// The long-running process that takes queued jobs from the store and runs
/// them within the host's capacity, each in a worker process of its own
/// (`airlock worker`).
///
/// Every tick it reaps the workers that ended, settles the jobs of dead
/// processes (`Recovery`), and claims jobs while there is room. Claiming is
/// atomic in the store, so several controllers on one state folder never
/// run the same job, and together never run more than the largest
/// concurrency among them.
///
/// Stopping the controller (`stop()`, on SIGINT or SIGTERM) stops it taking
/// jobs; running jobs go on in their workers, record their own end, and
/// count against the capacity of the next controller.
///
/// `run()` blocks its thread until `stop()`; `stop()` and `wake()` may be
/// called from any thread.
public final class Controller: @unchecked Sendable {
    // @unchecked: `children` and `connection` are touched only by the thread
    // in `run()`; everything else shared is behind a Mutex.

    /// How the controller runs.
    public struct Options: Sendable {
        /// Guests at most at once.
        public var concurrency = 2
        public var policy = HostCapacity.Policy()
        public var connectURI = "qemu:///system"
        public var imagesFolder: URL?
        /// The `airlock` executable whose `worker` subcommand runs each job.
        public var executable: String
        /// Workers log every step.
        public var debug = false
        /// No job starts while the state folder's file system has less free:
        /// results, output and the store itself are written there.
        public var minimumFreeBytes: Int64 = 2 << 30
        public var tick: Duration = .milliseconds(250)

        public init(executable: String) {
            self.executable = executable
        }
    }

    public let queue: JobQueue
    public let options: Options
    private let logger: Logger
    private let wakeUp = DispatchSemaphore(value: 0)
    private let stopping = Mutex(false)
    /// How each reaped worker ended, by its process token.
    private let endings = Mutex<[String: String]>([:])
    private var children: [pid_t: (job: String, token: String)] = [:]
    private var connection: Connection?
    private var hostDown = false
    private var diskFull = false

    public init(queue: JobQueue, options: Options, logger: Logger) {
        self.queue = queue
        self.options = options
        self.logger = logger
    }

    /// Asks `run()` to return after the current tick.
    public func stop() {
        stopping.withLock { $0 = true }
        wakeUp.signal()
    }

    /// Makes the next tick come at once (a worker ended, a job arrived).
    public func wake() {
        wakeUp.signal()
    }

    private var isStopping: Bool { stopping.withLock { $0 } }

    /// The jobs this controller's workers are running.
    public var runningJobs: [String] { children.values.map(\.job) }

    /// Runs until `stop()`.
    ///
    /// - Returns: The capacity it scheduled against.
    /// - Throws: `AirlockError` when the host cannot be reached at start or
    ///   the store cannot be used.
    public func run() throws(AirlockError) {
        let capacity = try HostCapacity.measure(
            uri: options.connectURI, concurrency: options.concurrency, policy: options.policy)
        let me = ProcessToken.current
        try queue.store.register(controller: me, uri: options.connectURI, capacity: capacity)
        defer { try? queue.store.unregister(controller: me) }
        logger.notice(
            "controller started",
            metadata: [
                "host.uri": options.connectURI, "concurrency": "\(capacity.concurrency)",
                "capacity.vcpus": "\(capacity.vcpus)", "capacity.memory": "\(capacity.memoryMiB) MiB",
                "state.dir": queue.stateFolder.path,
            ])

        let recovery = Recovery(queue: queue, logger: logger) { [self] token in endings.withLock { $0[token] } }
        let collector = GarbageCollector(
            connectURI: options.connectURI, stateFolder: queue.stateFolder, logger: logger)
        var lastSweep = ContinuousClock.now
        while !isStopping {
            reapWorkers()
            do {
                _ = try recovery.run()
            } catch {
                logger.warning("cannot check for jobs whose process died", metadata: ["error": "\(error)"])
            }
            // What gc removes: guests and run folders of processes that died
            // outside the store, and workload copies no job needs any more.
            if ContinuousClock.now - lastSweep > .seconds(60) {
                lastSweep = ContinuousClock.now
                rejectJobsTooBigForEveryone(capacity: capacity)
                // How a worker ended matters only while its job awaits recovery.
                if let owners = try? Set(queue.store.liveJobs().map(\.owner)) {
                    endings.withLock { $0 = $0.filter { owners.contains($0.key) } }
                }
                if let swept = try? collector.sweep() {
                    for item in swept.domains + swept.folders + swept.snapshots {
                        logger.notice("removed a dead job's leftover", metadata: ["item": item])
                    }
                }
            }
            if hostIsReachable() && diskHasRoom() {
                claimJobs(owner: me, capacity: capacity)
            }
            _ = wakeUp.wait(timeout: .now() + .milliseconds(Int(options.tick.inMilliseconds)))
        }
        reapWorkers()
        connection?.close()
        logger.notice(
            "controller stopped", metadata: ["jobs.running": "\(children.count)"])
    }

    // MARK: - Claiming and starting

    private func claimJobs(owner: String, capacity: HostCapacity) {
        // Jobs too big for this host are left to a live controller with more
        // room, if there is one; asked only when such a job comes up.
        var leavingTooBig = false
        while !isStopping {
            let outcome: JobStore.ClaimOutcome
            do {
                outcome = try queue.store.claimNext(
                    owner: owner, host: options.connectURI, capacity: capacity, leavingTooBig: leavingTooBig)
            } catch {
                logger.warning("cannot claim a job", metadata: ["error": "\(error)"])
                return
            }
            switch outcome {
            case .idle, .full:
                return
            case .neverFits(let id, let vcpus, let memory):
                if let largest = try? queue.schedulingCapacity(policy: options.policy),
                    largest.vcpus > capacity.vcpus || largest.memoryMiB > capacity.memoryMiB
                {
                    leavingTooBig = true
                    continue
                }
                fail(
                    id,
                    reason: "the job can never run here: "
                        + (capacity.refusal(vcpus: vcpus, memoryMiB: memory) ?? "it does not fit the host"))
            case .claimed(let claim):
                JobEvents.log(logger, claim.id, .starting, "attempt \(claim.attempt) of \(claim.maxAttempts)")
                start(claim, owner: owner)
            }
        }
    }

    /// Fails queued jobs that no live controller could ever run. While a
    /// bigger controller is live, claiming passes over jobs too big for this
    /// one; these would otherwise wait for good.
    private func rejectJobsTooBigForEveryone(capacity: HostCapacity) {
        // The live controllers include this one.
        let largest = (try? queue.schedulingCapacity(policy: options.policy)) ?? capacity
        let jobs = (try? queue.store.queuedLargerThan(vcpus: largest.vcpus, memoryMiB: largest.memoryMiB)) ?? []
        for job in jobs {
            fail(
                job.id,
                reason: "the job can never run: no controller's host is big enough ("
                    + (capacity.refusal(vcpus: job.vcpus, memoryMiB: job.memoryMiB) ?? "it does not fit") + " here)")
        }
    }

    /// Ends a queued job that can never run, saying why.
    private func fail(_ id: String, reason: String) {
        try? queue.store.reject(id, reason: reason)
        queue.releaseWorkload(of: id)
        JobEvents.log(logger, id, .failed, reason)
    }

    /// Starts the worker for a claimed job, in a process group of its own so
    /// that a Ctrl-C meant for the controller does not reach it.
    private func start(_ claim: JobStore.Claim, owner: String) {
        var arguments = [
            "airlock", "worker", claim.id, "--claimed-by", owner, "--state-dir", queue.stateFolder.path,
            "--connect", options.connectURI,
        ]
        arguments += ["--images", queue.catalog.root.path]
        if options.debug {
            arguments.append("--debug")
        }
        do {
            let pid = try Spawn.start(options.executable, arguments)
            children[pid] = (claim.id, ProcessToken.of(pid) ?? "\(pid) ?")
            logger.debug("worker started", metadata: ["job.id": claim.id, "worker.pid": "\(pid)"])
        } catch {
            let reason = "cannot start a worker: \(error)"
            if let state = try? queue.store.requeue(claim.id, owner: owner, reason: reason, delay: .seconds(5)) {
                JobEvents.log(logger, claim.id, state, reason)
            }
        }
    }

    /// Reaps the workers that ended, remembering how, for Recovery's messages.
    private func reapWorkers() {
        for (pid, child) in children {
            var status: Int32 = 0
            let reaped = waitpid(pid, &status, WNOHANG)
            guard reaped == pid || (reaped < 0 && errno == ECHILD) else { continue }
            children[pid] = nil
            let how = reaped < 0 ? "ended" : Spawn.Ending(status: status).description
            endings.withLock { $0[child.token] = how }
            logger.debug("worker ended", metadata: ["job.id": child.job, "worker.pid": "\(pid)", "how": how])
        }
    }

    /// Whether the state folder's file system has `minimumFreeBytes` free;
    /// says so once when it stops or starts having it.
    private func diskHasRoom() -> Bool {
        var info = statvfs()
        guard statvfs(queue.stateFolder.path, &info) == 0 else { return true }
        let free = Int64(info.f_bavail) * Int64(info.f_frsize)
        let room = free >= options.minimumFreeBytes
        if !room && !diskFull {
            logger.warning(
                "the state folder's disk is nearly full; no job starts until there is room",
                metadata: [
                    "disk.free": Sizes.format(free), "disk.minimum": Sizes.format(options.minimumFreeBytes),
                    "state.dir": queue.stateFolder.path,
                ])
        } else if room && diskFull {
            logger.notice(
                "the state folder's disk has room again; jobs start", metadata: ["disk.free": Sizes.format(free)])
        }
        diskFull = !room
        return room
    }

    /// Whether libvirt answers; the controller starts no job while it does not.
    private func hostIsReachable() -> Bool {
        if let connection, connection.isAlive {
            return true
        }
        connection?.close()
        connection = try? Connection(uri: options.connectURI)
        let reachable = connection != nil
        if reachable == hostDown {
            hostDown = !reachable
            if reachable {
                logger.notice("libvirt answers again; starting jobs", metadata: ["host.uri": options.connectURI])
            } else {
                logger.warning(
                    "libvirt does not answer; no job starts until it does", metadata: ["host.uri": options.connectURI])
            }
        }
        return reachable
    }
}
