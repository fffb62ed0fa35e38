import Airlock
import Foundation
import Libvirt
import Synchronization
import Testing

/// A state folder of its own for tests of the queue and the controller,
/// with the real image catalog and the host's known accelerator, so that
/// no test sees another's jobs and none pays for a KVM probe.
struct TestQueue {
    let state: URL

    init() throws {
        state = FileManager.default.temporaryDirectory.appendingPathComponent(
            "airlock-q-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: state, withIntermediateDirectories: true)
        let accel = Harness.stateFolder.appendingPathComponent("accel")
        if FileManager.default.fileExists(atPath: accel.path) {
            try FileManager.default.copyItem(at: accel, to: state.appendingPathComponent("accel"))
        }
    }

    var environment: [String: String] {
        ["AIRLOCK_STATE_DIR": state.path, "AIRLOCK_IMAGES": Harness.stateFolder.appendingPathComponent("images").path]
    }

    /// Runs `airlock ARGS` against this state folder.
    func airlock(_ arguments: [String], images: URL? = nil) throws -> Harness.Outcome {
        var environment = self.environment
        if let images { environment["AIRLOCK_IMAGES"] = images.path }
        return try Harness.invoke(arguments, results: state, environment: environment)
    }

    /// Submits and returns the printed id (a job's or a batch's).
    func submit(_ arguments: [String], images: URL? = nil, sourceLocation: SourceLocation = #_sourceLocation) throws
        -> String
    {
        let outcome = try airlock(["submit"] + arguments, images: images)
        #expect(outcome.status == 0, "submit failed: \(outcome.stderrText)", sourceLocation: sourceLocation)
        return outcome.stdoutText.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Starts `airlock controller ARGS` in the background.
    func controller(_ arguments: [String] = [], images: URL? = nil) throws -> BackgroundProcess {
        var environment = self.environment
        if let images { environment["AIRLOCK_IMAGES"] = images.path }
        return try BackgroundProcess(["controller"] + arguments, environment: environment)
    }

    func store() throws -> JobStore {
        try JobStore(file: JobStore.file(in: state).path)
    }

    /// Waits until `condition` holds for job `id`, failing after `timeout`.
    @discardableResult
    func waitFor(
        _ id: String, timeout: Duration = .seconds(120), sourceLocation: SourceLocation = #_sourceLocation,
        _ condition: (JobStore.Record) -> Bool
    ) throws -> JobStore.Record? {
        let store = try self.store()
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let record = try store.record(id), condition(record) {
                return record
            }
            Thread.sleep(forTimeInterval: 0.05)
        }
        Issue.record(
            "job \(id) did not get there within \(timeout): \(String(describing: try store.record(id)))",
            sourceLocation: sourceLocation)
        return nil
    }

    /// No guest, no per-job folder and no workload snapshot is left once every job is over.
    func expectNothingLeft(sourceLocation: SourceLocation = #_sourceLocation) throws {
        try Harness.expectNothingLeft(sourceLocation: sourceLocation)
        for folder in ["run", "workloads"] {
            let entries =
                (try? FileManager.default.contentsOfDirectory(atPath: state.appendingPathComponent(folder).path)) ?? []
            #expect(entries.isEmpty, "left in \(folder): \(entries)", sourceLocation: sourceLocation)
        }
    }

    func remove() {
        try? FileManager.default.removeItem(at: state)
    }
}

/// An `airlock` process left running while a test goes on.
final class BackgroundProcess {
    let process = Process()
    private let logFile: URL

    init(_ arguments: [String], environment: [String: String]) throws {
        logFile = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-bg-\(UUID()).log")
        _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)
        process.executableURL = Harness.binary
        process.arguments = arguments
        process.currentDirectoryURL = Harness.repository
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        process.environment = env
        process.standardOutput = FileHandle.nullDevice
        process.standardError = try FileHandle(forWritingTo: logFile)
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    deinit {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(at: logFile)
    }

    /// What it wrote on stderr so far.
    var log: String {
        (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
    }

    var isRunning: Bool { process.isRunning }

    /// Sends a signal and, unless it is SIGKILL's sudden death being
    /// tested, waits for the exit.
    func signal(_ number: Int32) {
        kill(process.processIdentifier, number)
        process.waitUntilExit()
    }

    /// Asks it to stop (SIGTERM) and waits.
    func stop() {
        signal(SIGTERM)
    }
}

/// Counts Airlock guests in a background thread, to check a bound.
final class GuestSampler: @unchecked Sendable {
    // @unchecked: the state lives in the Mutex; the thread only reads `stopped`.
    private let state = Mutex((stopped: false, most: 0, samples: 0))
    private let done = DispatchSemaphore(value: 0)

    init() {
        let thread = Thread { [self] in
            let connection = try? Connection(uri: "qemu:///system")
            while !state.withLock({ $0.stopped }) {
                let count = ((try? connection?.allDomains()) ?? []).filter { $0.name.hasPrefix("airlock-") }.count
                state.withLock {
                    $0.most = max($0.most, count)
                    $0.samples += 1
                }
                Thread.sleep(forTimeInterval: 0.1)
            }
            connection?.close()
            done.signal()
        }
        thread.start()
    }

    /// Stops sampling; returns the most guests seen at once and the number of samples.
    func finish() -> (most: Int, samples: Int) {
        state.withLock { $0.stopped = true }
        done.wait()
        return state.withLock { ($0.most, $0.samples) }
    }
}

extension Harness.Outcome {
    /// The lines of stdout, trimmed.
    var lines: [String] {
        stdoutText.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
    }
}
