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
    // @unchecked: `children`, `monitors` and `settings` are touched only by
    // the thread in `run()`; everything else shared is behind a Mutex.

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
    /// One monitor per host, by name, and each host's settings as last read.
    private var monitors: [String: HostMonitor] = [:]
    private var settings: [String: JobStore.Host] = [:]
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
    /// The hosts are those `airlock host add` registered in the store, or,
    /// with none registered, the one at `connectURI` (named `local`). Each
    /// is watched by a `HostMonitor`; jobs start only on healthy hosts that
    /// are not draining, and a batch spreads: each job goes to the host
    /// with the most free room.
    ///
    /// - Throws: `AirlockError` when the store cannot be used, or when no
    ///   host is registered and `connectURI` cannot be reached at start.
    public func run() throws(AirlockError) {
        let me = ProcessToken.current
        var hosts = try currentHosts()
        if hosts == [JobStore.Host(name: "local", uri: options.connectURI)] {
            // The one host of a single-host setup must answer now, as it always had to.
            let capacity = try HostCapacity.measure(
                uri: options.connectURI, concurrency: options.concurrency, policy: options.policy)
            try queue.store.register(controller: me, uri: options.connectURI, capacity: capacity)
        }
        defer { try? queue.store.unregister(controller: me) }
        syncMonitors(hosts)
        defer { monitors.values.forEach { $0.stop() } }
        logger.notice(
            "controller started",
            metadata: [
                "hosts": hosts.map { "\($0.name)=\($0.uri)" }.joined(separator: ","),
                "concurrency": "\(options.concurrency) per host", "state.dir": queue.stateFolder.path,
            ])

        let recovery = Recovery(queue: queue, logger: logger) { [self] token in endings.withLock { $0[token] } }
        var lastSweep = ContinuousClock.now
        var lastHostsRead = ContinuousClock.now
        while !isStopping {
            reapWorkers()
            do {
                _ = try recovery.run()
            } catch {
                logger.warning("cannot check for jobs whose process died", metadata: ["error": "\(error)"])
            }
            // Hosts added, removed or drained meanwhile.
            if ContinuousClock.now - lastHostsRead > .seconds(2) {
                lastHostsRead = ContinuousClock.now
                if let read = try? currentHosts() {
                    hosts = read
                    syncMonitors(hosts)
                }
                registerLargest(owner: me)
                failJobsForNoHost(hosts)
            }
            // What gc removes: guests and run folders of processes that died
            // outside the store, and workload copies no job needs any more.
            if ContinuousClock.now - lastSweep > .seconds(60) {
                lastSweep = ContinuousClock.now
                rejectJobsTooBigForEveryone()
                // How a worker ended matters only while its job awaits recovery.
                if let owners = try? Set(queue.store.liveJobs().map(\.owner)) {
                    endings.withLock { $0 = $0.filter { owners.contains($0.key) } }
                }
                sweep()
            }
            if diskHasRoom() {
                claimJobs(owner: me)
            }
            _ = wakeUp.wait(timeout: .now() + .milliseconds(Int(options.tick.inMilliseconds)))
        }
        reapWorkers()
        logger.notice(
            "controller stopped", metadata: ["jobs.running": "\(children.count)"])
    }

    // MARK: - Hosts

    /// The registered hosts, or the one at `connectURI` when none is.
    private func currentHosts() throws(AirlockError) -> [JobStore.Host] {
        let registered = try queue.store.hosts()
        return registered.isEmpty ? [JobStore.Host(name: "local", uri: options.connectURI)] : registered
    }

    /// Starts a monitor for each new host, stops those of hosts removed,
    /// and takes each host's current settings (draining, labels).
    private func syncMonitors(_ hosts: [JobStore.Host]) {
        let names = Set(hosts.map(\.name))
        for (name, monitor) in monitors where !names.contains(name) {
            monitor.stop()
            monitors[name] = nil
            logger.notice("host removed; no job starts there", metadata: ["host": name])
        }
        for host in hosts {
            if let monitor = monitors[host.name], monitor.host.uri == host.uri, monitor.host.vcpus == host.vcpus,
                monitor.host.memoryMiB == host.memoryMiB
            {
                settings[host.name] = host
                continue
            }
            monitors[host.name]?.stop()
            let monitor = HostMonitor(
                host: host, concurrency: options.concurrency, policy: options.policy, logger: logger)
            monitor.start()
            monitors[host.name] = monitor
            settings[host.name] = host
        }
    }

    /// The largest capacity among healthy hosts, recorded for `submit`'s
    /// check that a job can ever fit.
    private func registerLargest(owner: String) {
        let capacities = monitors.values.compactMap { $0.status.healthy ? $0.status.capacity : nil }
        guard let largest = capacities.max(by: { ($0.vcpus, $0.memoryMiB) < ($1.vcpus, $1.memoryMiB) }) else {
            return
        }
        let uri = monitors.count == 1 ? monitors.values.first?.host.uri ?? options.connectURI : "hosts"
        try? queue.store.register(controller: owner, uri: uri, capacity: largest)
    }

    /// Fails queued jobs that ask for a host that is not there.
    private func failJobsForNoHost(_ hosts: [JobStore.Host]) {
        for job in (try? queue.store.queuedForNoHost(hosts)) ?? [] {
            fail(
                job.id,
                reason: "the job asks for \(job.want), and there is none ('airlock host ls' lists the hosts)")
        }
    }

    /// Runs gc's sweep on every healthy host.
    private func sweep() {
        for monitor in monitors.values where monitor.status.healthy {
            let collector = GarbageCollector(
                connectURI: monitor.host.uri, stateFolder: queue.stateFolder, logger: logger)
            if let swept = try? collector.sweep() {
                for item in swept.domains + swept.folders + swept.snapshots {
                    logger.notice("removed a dead job's leftover", metadata: ["item": item, "host": monitor.host.name])
                }
            }
        }
    }

    // MARK: - Claiming and starting

    private func claimJobs(owner: String) {
        var candidates = monitors.values.filter { monitor in
            monitor.status.healthy && monitor.status.capacity != nil
                && settings[monitor.host.name]?.draining != true
        }
        // Jobs too big for one host are left to a host, or a controller, with more room.
        let largest = largestCapacity()
        var leaving: Set<String> = []
        while !isStopping && !candidates.isEmpty {
            // The host with the most free room first, so that a batch spreads over the hosts.
            let usage = (try? queue.store.liveUsage()) ?? [:]
            func free(_ monitor: HostMonitor) -> Int {
                (monitor.status.capacity?.concurrency ?? 0) - (usage[monitor.host.uri]?.jobs ?? 0)
            }
            candidates.sort { free($0) > free($1) || (free($0) == free($1) && $0.host.name < $1.host.name) }
            let monitor = candidates[0]
            guard let capacity = monitor.status.capacity else {
                candidates.removeFirst()
                continue
            }
            let host = settings[monitor.host.name] ?? monitor.host
            let outcome: JobStore.ClaimOutcome
            do {
                outcome = try queue.store.claimNext(
                    owner: owner, host: host.uri, capacity: capacity, leavingTooBig: leaving.contains(host.name),
                    named: (host.name, host.labels))
            } catch {
                logger.warning("cannot claim a job", metadata: ["error": "\(error)"])
                return
            }
            switch outcome {
            case .idle, .full:
                candidates.removeFirst()
            case .neverFits(let id, let vcpus, let memory):
                if vcpus <= largest.vcpus && memory <= largest.memoryMiB {
                    leaving.insert(host.name)
                    continue
                }
                fail(
                    id,
                    reason: "the job can never run here: "
                        + (capacity.refusal(vcpus: vcpus, memoryMiB: memory) ?? "it does not fit the host"))
            case .claimed(let claim):
                JobEvents.log(
                    logger, claim.id, .starting, "attempt \(claim.attempt) of \(claim.maxAttempts) on \(host.name)")
                start(claim, owner: owner, on: host)
            }
        }
    }

    /// The largest capacity among healthy hosts and live controllers.
    private func largestCapacity() -> HostCapacity {
        var capacities = monitors.values.compactMap { $0.status.healthy ? $0.status.capacity : nil }
        if let others = try? queue.schedulingCapacity(policy: options.policy) {
            capacities.append(others)
        }
        return capacities.max(by: { ($0.vcpus, $0.memoryMiB) < ($1.vcpus, $1.memoryMiB) })
            ?? HostCapacity(concurrency: 0, vcpus: 0, memoryMiB: 0)
    }

    /// Fails queued jobs that no live controller could ever run. While a
    /// bigger controller is live, claiming passes over jobs too big for this
    /// one; these would otherwise wait for good.
    private func rejectJobsTooBigForEveryone() {
        let largest = largestCapacity()
        // With no healthy host, nothing is known to be too big.
        guard largest.vcpus > 0 else { return }
        let jobs = (try? queue.store.queuedLargerThan(vcpus: largest.vcpus, memoryMiB: largest.memoryMiB)) ?? []
        for job in jobs {
            fail(
                job.id,
                reason: "the job can never run: no host is big enough ("
                    + (largest.refusal(vcpus: job.vcpus, memoryMiB: job.memoryMiB) ?? "it does not fit")
                    + " on the largest)")
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
    private func start(_ claim: JobStore.Claim, owner: String, on host: JobStore.Host) {
        var arguments = [
            "airlock", "worker", claim.id, "--claimed-by", owner, "--state-dir", queue.stateFolder.path,
            "--connect", host.uri,
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
}
