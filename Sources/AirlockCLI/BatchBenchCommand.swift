import Airlock
import AirlockLog
import Foundation
import Synchronization

/// `airlock bench batch`: the queue's figures, each against a baseline
/// measured in the same run.
///
/// - throughput: N hello jobs through `airlock submit --batch` and one
///   `airlock controller`, against the same N jobs as `airlock run`
///   processes started by hand, at most C at a time;
/// - scale: `airlock ls` and `status` with a backlog of 10,000 queued jobs,
///   and the controller's peak memory with that backlog against its peak
///   with an empty queue.
///
/// Everything runs in a scratch state folder that is removed at the end;
/// the host's accelerator cache and image catalog are reused.
struct BatchBenchCommand {
    static let usage =
        "airlock bench batch [--jobs N] [--concurrency N[,N...]] [--backlog N] [--image NAME] [--state-dir DIR]"

    static let help = """
        Time the job queue against 'airlock run' processes started by hand, and
        measure 'airlock ls', 'status' and the controller's memory on a large queue.

        Usage: \(usage)

        Options:
          --jobs N               hello jobs per throughput round (default: 24)
          --concurrency LIST     guests at once, one round each (default: 1,2,3)
          --backlog N            queued jobs for the scale figures (default: 10000)
          --image NAME           guest image (default: tiny)
          --workload DIR         workload to run (default: examples/hello, relative to the current folder)
          --state-dir DIR        where the accelerator cache and images are read from
                                 (default: $AIRLOCK_STATE_DIR or /var/lib/airlock)
        """

    var jobs = 24
    var concurrency = [1, 2, 3]
    var backlog = 10_000
    var image = "tiny"
    var workload = "examples/hello"
    var stateFolder: URL
    var imagesFolder: URL?

    static func parse(_ arguments: [String], environment: [String: String]) throws(UsageError) -> BatchBenchCommand {
        var command = BatchBenchCommand(stateFolder: Defaults.stateFolder(environment))
        command.imagesFolder = environment["AIRLOCK_IMAGES"].map { URL(fileURLWithPath: $0) }
        var reader = ArgumentReader(arguments)
        while let option = reader.next() {
            guard let name = option.name else {
                throw UsageError("unexpected argument '\(option.word)'")
            }
            switch name {
            case "--jobs":
                command.jobs = try ValueParser.integer(try reader.value(for: name, inline: option.inline), option: name)
                guard (1...1000).contains(command.jobs) else { throw UsageError("--jobs must be 1 to 1000") }
            case "--concurrency":
                let text = try reader.value(for: name, inline: option.inline)
                command.concurrency = try text.split(separator: ",").map { part throws(UsageError) in
                    let value = try ValueParser.integer(String(part), option: name)
                    guard (1...64).contains(value) else { throw UsageError("--concurrency values must be 1 to 64") }
                    return value
                }
                guard !command.concurrency.isEmpty else { throw UsageError("--concurrency needs a value, such as 1,3") }
            case "--backlog":
                command.backlog = try ValueParser.integer(
                    try reader.value(for: name, inline: option.inline), option: name)
                guard (1...1_000_000).contains(command.backlog) else {
                    throw UsageError("--backlog must be 1 to 1000000")
                }
            case "--image": command.image = try reader.value(for: name, inline: option.inline)
            case "--workload": command.workload = try reader.value(for: name, inline: option.inline)
            case "--state-dir":
                command.stateFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            default: throw UsageError("unknown option '\(name)'", hint: "see 'airlock bench batch --help'")
            }
        }
        return command
    }

    func run(signals: SignalRelay) throws -> Int32 {
        let workload = try BenchProcesses.workloadFolder(self.workload)
        let bench = try BenchProcesses.make(
            images: imagesFolder ?? stateFolder.appendingPathComponent("images"),
            accelCache: stateFolder.appendingPathComponent("accel"))
        signals.onFirst = {
            Output.note("airlock: stopping the benchmark; its jobs are canceled and its files removed")
            bench.interrupt()
        }
        defer { bench.tearDown() }

        var report = "Airlock queue bench: image '\(image)', workload '\(self.workload)'\n\n"
        report += "throughput, \(jobs) jobs a round  by hand (airlock run)  queue (submit + controller)  ratio\n"
        for level in concurrency {
            let byHand = try bench.byHand(jobs: jobs, concurrency: level, image: image, workload: workload)
            let queued = try bench.queued(jobs: jobs, concurrency: level, image: image, workload: workload)
            let line = String(
                format: "  concurrency %d               %6.1f jobs/min        %6.1f jobs/min              %5.2f\n",
                level, byHand, queued.jobsPerMinute, queued.jobsPerMinute / byHand)
            report += line
            Output.note("airlock: " + line.trimmingCharacters(in: .whitespacesAndNewlines))
            report += String(
                format: "    controller peak RSS %.1f MiB, worker peak RSS %.1f MiB\n", queued.controllerMiB,
                queued.workerMiB)
        }

        let scale = try bench.scale(backlog: backlog, image: image, workload: workload)
        report += "\nscale, \(backlog) queued jobs                      one job       backlog  backlog/one\n"
        for row in scale {
            report += row.name.padding(toLength: 44, withPad: " ", startingAt: 0)
            let format = row.unit == "s" ? "%9.3f %@   %9.3f %@  %7.2f\n" : "%9.1f %@ %9.1f %@  %7.2f\n"
            report += String(format: format, row.empty, row.unit, row.full, row.unit, row.full / row.empty)
        }
        report += """

            by hand: one 'airlock run' process per job, at most C at a time
            queue: 'airlock submit --batch' of the same jobs, then 'airlock controller --concurrency C
                   --cpu-overcommit C', timed from the submit until the last job has ended
            scale: a state folder holding one job against one holding the backlog; wall time of the
                   command as a process, median of 3 (submit: the one job, or the whole backlog);
                   controller peak RSS (VmHWM) 3 s after its first job started, the rest queued

            """
        print(report, terminator: "")
        return 0
    }
}

/// The processes and scratch state of one `bench batch` or `bench hosts`
/// run, and the clean-up that stops them whatever happens.
final class BenchProcesses: @unchecked Sendable {
    // @unchecked: `running` and `interrupted` sit behind the Mutex; the rest is
    // set in init and read only.
    let scratch: URL
    let images: URL
    let accelCache: URL
    private let state = Mutex((running: [Child](), stateFolders: [URL](), interrupted: false))

    init(scratch: URL, images: URL, accelCache: URL) {
        self.scratch = scratch
        self.images = images
        self.accelCache = accelCache
    }

    /// The benchmark's workload folder, which must exist.
    ///
    /// - Throws: `AirlockError` `.invalidArgument` saying where to run from.
    static func workloadFolder(_ path: String) throws(AirlockError) -> URL {
        let workload = URL(fileURLWithPath: path).standardizedFileURL
        var isFolder: ObjCBool = false
        guard FileManager.default.fileExists(atPath: workload.path, isDirectory: &isFolder), isFolder.boolValue else {
            throw AirlockError(
                .invalidArgument, "workload folder '\(workload.path)' does not exist",
                hint: "run from the repository folder, or pass --workload PATH/examples/hello")
        }
        return workload
    }

    /// A bench in a fresh scratch folder of its own (mkdtemp), never one
    /// found in place. Rounds start from a copy of `accelCache`, kept in
    /// the scratch folder, to which rounds may add what they learn.
    static func make(images: URL, accelCache: URL) throws -> BenchProcesses {
        var template = Array(
            FileManager.default.temporaryDirectory.appendingPathComponent("airlock-bench-XXXXXX").path.utf8CString)
        guard let made = mkdtemp(&template) else {
            throw AirlockError(
                .internalError, "cannot create a scratch folder in '\(FileManager.default.temporaryDirectory.path)'")
        }
        let scratch = URL(fileURLWithPath: String(cString: made))
        // QEMU, running as its own user, passes through to each job's key file.
        _ = chmod(scratch.path, 0o711)
        let cache = scratch.appendingPathComponent(".accel")
        try? FileManager.default.copyItem(at: accelCache, to: cache)
        return BenchProcesses(scratch: scratch, images: images, accelCache: cache)
    }

    struct Interrupted: Error, CustomStringConvertible {
        var description: String { "the benchmark was interrupted" }
    }

    private var interrupted: Bool { state.withLock { $0.interrupted } }

    func interrupt() {
        let running = state.withLock { state in
            state.interrupted = true
            return state.running
        }
        for child in running where !child.hasEnded {
            kill(child.pid, SIGTERM)
        }
    }

    /// Stops every process, cancels every job the benchmark queued, removes the scratch folder.
    func tearDown() {
        let (running, folders) = state.withLock { ($0.running, $0.stateFolders) }
        for child in running where !child.hasEnded {
            kill(child.pid, SIGTERM)
            _ = child.wait()
        }
        for folder in folders {
            cancelStarted(in: folder)
        }
        try? FileManager.default.removeItem(at: scratch)
    }

    /// Cancels the jobs of `folder` that a controller started; queued ones
    /// hold nothing outside the folder, and go with it.
    private func cancelStarted(in folder: URL) {
        guard let queue = try? JobQueue(stateFolder: folder, imagesFolder: images) else { return }
        let logger = Logger(label: "airlock.bench")
        let started = ((try? queue.store.list()) ?? []).filter { !$0.state.isTerminal && $0.state != .queued }
        for record in started {
            _ = try? queue.cancel(record.id, logger: logger)
        }
    }

    /// A fresh state folder with the host's accelerator cache, so no round pays for a probe.
    func stateFolder(_ name: String) throws -> URL {
        let folder = scratch.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        if FileManager.default.fileExists(atPath: accelCache.path) {
            try FileManager.default.copyItem(at: accelCache, to: folder.appendingPathComponent("accel"))
        }
        state.withLock { $0.stateFolders.append(folder) }
        return folder
    }

    // MARK: - Processes

    func start(_ arguments: [String], state folder: URL, output: URL? = nil) throws -> Child {
        if interrupted { throw Interrupted() }
        var environment = ProcessInfo.processInfo.environment
        environment["AIRLOCK_STATE_DIR"] = folder.path
        environment["AIRLOCK_IMAGES"] = images.path
        let pid = try Spawn.start(
            Executable.path, ["airlock"] + arguments, environment: environment, output: output?.path ?? "/dev/null",
            errors: folder.appendingPathComponent("stderr-\(UUID().uuidString.prefix(8))").path)
        let child = Child(pid: pid)
        state.withLock { $0.running.append(child) }
        return child
    }

    /// Waits for `child` to end; its exit status.
    private func finish(_ child: Child) -> Int32 {
        let status = child.wait()
        state.withLock { $0.running.removeAll { $0 === child } }
        return status
    }

    /// Runs `airlock ARGS` to its end; returns its exit status and wall time.
    @discardableResult
    func invoke(_ arguments: [String], state folder: URL, output: URL? = nil) throws -> (Int32, Double) {
        let started = ContinuousClock.now
        let status = finish(try start(arguments, state: folder, output: output))
        if interrupted { throw Interrupted() }
        return (status, (ContinuousClock.now - started).inSeconds)
    }

    // MARK: - Throughput

    /// Jobs a minute with one `airlock run` process per job, at most `concurrency` at a time.
    func byHand(jobs: Int, concurrency: Int, image: String, workload: URL) throws -> Double {
        let folder = try stateFolder("by-hand-\(concurrency)")
        let started = ContinuousClock.now
        var waiting = jobs
        var running: [Child] = []
        while waiting > 0 || !running.isEmpty {
            while waiting > 0 && running.count < concurrency {
                waiting -= 1
                running.append(
                    try start(
                        [
                            "run", "--image", image, "--workload", workload.path, "--env", "HELLO_EXIT=0",
                            "--results", folder.appendingPathComponent("r\(waiting)").path, "--", "sh", "run.sh",
                        ], state: folder))
            }
            Thread.sleep(forTimeInterval: 0.02)
            if interrupted { throw Interrupted() }
            for child in running where child.hasEnded {
                let status = finish(child)
                guard status == 0 else {
                    throw AirlockError(.guestFailed, "a bench job run by hand failed (exit status \(status))")
                }
            }
            running.removeAll { $0.hasEnded }
        }
        return Double(jobs) / (ContinuousClock.now - started).inSeconds * 60
    }

    struct QueuedRound {
        var jobsPerMinute: Double
        var controllerMiB: Double
        var workerMiB: Double
    }

    /// Jobs a minute through `submit --batch` and one controller.
    ///
    /// - Parameters:
    ///   - jobs: Hello jobs in the batch.
    ///   - concurrency: The controller's `--concurrency`.
    ///   - image: The guest image.
    ///   - workload: The workload folder.
    ///   - name: The round's state folder, under the scratch folder.
    ///   - hosts: `airlock host add` arguments run before the submit (none: the controller's own host).
    /// - Returns: The throughput, and the controller's and workers' peak memory.
    /// - Throws: When a job fails or the controller ends early.
    func queued(
        jobs: Int, concurrency: Int, image: String, workload: URL, name: String? = nil, hosts: [[String]] = []
    ) throws -> QueuedRound {
        let folder = try stateFolder(name ?? "queue-\(concurrency)")
        for host in hosts {
            let (status, _) = try invoke(["host", "add"] + host, state: folder)
            guard status == 0 else { throw AirlockError(.invalidArgument, "'airlock host add' failed (\(status))") }
        }
        let batchFile = folder.appendingPathComponent("batch.jsonl")
        let line =
            #"{"image": "\#(image)", "workload": "\#(workload.path)", "command": ["sh", "run.sh"], "env": {"HELLO_EXIT": "0"}}"#
        try Data(String(repeating: line + "\n", count: jobs).utf8).write(to: batchFile)
        let store = try JobStore(file: JobStore.file(in: folder).path)

        let started = ContinuousClock.now
        let (status, _) = try invoke(["submit", "--batch", batchFile.path], state: folder)
        guard status == 0 else { throw AirlockError(.invalidArgument, "the bench batch was refused (\(status))") }
        // As many guests as the hand-run baseline: --concurrency alone limits
        // them, not the host's CPU count.
        let controller = try start(
            ["controller", "--concurrency", "\(concurrency)", "--cpu-overcommit", "\(concurrency)"], state: folder)
        var workerPeak = 0.0
        while true {
            let counts = try store.counts()
            let ended = counts.filter { $0.key.isTerminal }.values.reduce(0, +)
            if ended == jobs { break }
            guard !controller.hasEnded else {
                throw AirlockError(.hostUnavailable, "the bench controller ended early")
            }
            for record in try store.list(.init(state: .running)) {
                if let pid = record.owner.flatMap(ProcessToken.pid) {
                    workerPeak = max(workerPeak, MemoryFigure.peakMiB(of: pid) ?? 0)
                }
            }
            Thread.sleep(forTimeInterval: 0.05)
            if interrupted { throw Interrupted() }
        }
        let elapsed = (ContinuousClock.now - started).inSeconds
        let controllerPeak = MemoryFigure.peakMiB(of: controller.pid) ?? .nan
        kill(controller.pid, SIGTERM)
        _ = finish(controller)
        let failed = try store.counts().filter { $0.key != .succeeded }.values.reduce(0, +)
        guard failed == 0 else {
            throw AirlockError(.guestFailed, "\(failed) of the queued bench jobs did not succeed")
        }
        return QueuedRound(
            jobsPerMinute: Double(jobs) / elapsed * 60, controllerMiB: controllerPeak, workerMiB: workerPeak)
    }

    // MARK: - Hosts

    /// One hello job by hand on `uri`; its result.
    func timedRun(on uri: String, image: String, workload: URL, name: String) throws -> JobResult {
        let folder = try stateFolder(name)
        let results = folder.appendingPathComponent("results")
        let (status, _) = try invoke(
            [
                "run", "--connect", uri, "--image", image, "--workload", workload.path, "--env", "HELLO_EXIT=0",
                "--results", results.path, "--", "sh", "run.sh",
            ], state: folder)
        guard status == 0, let result = JobResultFile.read(from: results) else {
            throw AirlockError(.guestFailed, "a bench job on '\(uri)' failed (exit status \(status))")
        }
        return result
    }

    /// Adds what a folder's accelerator cache learned to the one every later round starts from.
    func keepAcceleratorCache(of name: String) {
        let learned = scratch.appendingPathComponent(name).appendingPathComponent("accel")
        try? FileManager.default.createDirectory(at: accelCache, withIntermediateDirectories: true)
        for file in (try? FileManager.default.contentsOfDirectory(atPath: learned.path)) ?? [] {
            try? FileManager.default.copyItem(
                at: learned.appendingPathComponent(file), to: accelCache.appendingPathComponent(file))
        }
    }

    // MARK: - Scale

    struct ScaleRow {
        var name: String
        var unit: String
        var empty: Double
        var full: Double
    }

    /// `ls`, `status` and the controller's memory, on a state folder holding
    /// one job and on one holding `backlog` queued jobs besides.
    func scale(backlog: Int, image: String, workload: URL) throws -> [ScaleRow] {
        let small = try stateFolder("scale-empty")
        let large = try stateFolder("scale-backlog")
        let line =
            #"{"image": "\#(image)", "workload": "\#(workload.path)", "command": ["sh", "run.sh"], "labels": {"bench": "backlog"}}"#
        /// A filled state folder: the last job submitted, and how long the submit took.
        struct Filled {
            var folder: URL
            var lastJob: String
            var submitSeconds: Double
        }
        let filled = try [(small, 1), (large, backlog)].map { (folder, count) in
            let file = folder.appendingPathComponent("backlog.jsonl")
            try Data(String(repeating: line + "\n", count: count).utf8).write(to: file)
            let output = folder.appendingPathComponent("submit.json")
            let (status, seconds) = try invoke(
                ["submit", "--batch", file.path, "--json"], state: folder, output: output)
            guard status == 0,
                let object = try JSONSerialization.jsonObject(with: Data(contentsOf: output)) as? [String: Any],
                let jobs = object["jobs"] as? [String], let last = jobs.last
            else {
                throw AirlockError(.invalidArgument, "the backlog batch was refused (\(status))")
            }
            return Filled(folder: folder, lastJob: last, submitSeconds: seconds)
        }

        var rows = [
            ScaleRow(
                name: "  submit --batch", unit: "s", empty: filled[0].submitSeconds, full: filled[1].submitSeconds)
        ]
        let commands: [(String, (Filled) -> [String])] = [
            ("  ls (every job)", { _ in ["ls"] }),
            (
                "  ls --state queued --label bench=backlog",
                { _ in ["ls", "--state", "queued", "--label", "bench=backlog"] }
            ),
            ("  ls --state running", { _ in ["ls", "--state", "running"] }),
            ("  status ID", { ["status", $0.lastJob] }),
        ]
        for (name, arguments) in commands {
            // The median of 3 runs, in each folder.
            let figures = try filled.map { one in
                try (0..<3).map { _ in try invoke(arguments(one), state: one.folder).1 }.sorted()[1]
            }
            rows.append(ScaleRow(name: name, unit: "s", empty: figures[0], full: figures[1]))
        }
        let peaks = try [small, large].map { try controllerPeak(in: $0) }
        rows.append(ScaleRow(name: "  controller peak RSS", unit: "MiB", empty: peaks[0], full: peaks[1]))
        return rows
    }

    /// The controller's peak RSS while it runs one job with the rest of the
    /// folder's jobs queued behind it: 3 s (12 scheduling ticks) after the
    /// job started running. The job is canceled at once afterwards.
    private func controllerPeak(in folder: URL) throws -> Double {
        let store = try JobStore(file: JobStore.file(in: folder).path)
        let controller = try start(["controller", "--concurrency", "1"], state: folder)
        let deadline = ContinuousClock.now + .seconds(120)
        while try store.counts()[.running, default: 0] == 0 {
            guard !controller.hasEnded, ContinuousClock.now < deadline else {
                throw AirlockError(.hostUnavailable, "the bench controller did not start its job")
            }
            Thread.sleep(forTimeInterval: 0.05)
            if interrupted { throw Interrupted() }
        }
        Thread.sleep(forTimeInterval: 3)
        let peak = MemoryFigure.peakMiB(of: controller.pid) ?? .nan
        kill(controller.pid, SIGTERM)
        _ = finish(controller)
        cancelStarted(in: folder)
        return peak
    }
}

/// A child `airlock` process of the benchmark.
final class Child: Sendable {
    let pid: pid_t
    private let status = Mutex<Int32?>(nil)

    init(pid: pid_t) {
        self.pid = pid
    }

    /// Whether it has ended; reaps it when it has.
    var hasEnded: Bool {
        status.withLock { status in
            if status == nil { status = Spawn.poll(pid) }
            return status != nil
        }
    }

    /// Waits for it to end; its exit status.
    func wait() -> Int32 {
        if let known = status.withLock({ $0 }) { return known }
        let code = Spawn.wait(pid)
        status.withLock { $0 = code }
        return code
    }
}

/// A process's peak resident memory, from /proc.
enum MemoryFigure {
    static func peakMiB(of pid: pid_t) -> Double? {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
            let kib = line.split(separator: " ").compactMap { Double($0) }.first
            return kib.map { $0 / 1024 }
        }
        return nil
    }
}
