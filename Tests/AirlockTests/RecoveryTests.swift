import AirlockLog
import Foundation
import Testing

@testable import Airlock

@Suite("Recovery of jobs whose process died")
struct RecoveryTests {
    /// A token no running process has.
    private let dead = "2147483000 1 -"

    @Test("a job whose process died is queued again while attempts are left, else ends as lost")
    func settles() throws {
        let state = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-recovery-\(UUID())")
        defer { try? FileManager.default.removeItem(at: state) }
        let queue = try JobQueue(stateFolder: state)
        var again = JobStore.NewJob(id: "aaaa", spec: "{}", results: queue.resultsFolder(of: "aaaa").path)
        again.maxAttempts = 2
        let last = JobStore.NewJob(id: "bbbb", spec: "{}", results: queue.resultsFolder(of: "bbbb").path)
        try queue.store.submit([again, last])
        let capacity = HostCapacity(concurrency: 4, vcpus: 4, memoryMiB: 4096)
        for _ in 0..<2 {
            _ = try queue.store.claimNext(owner: dead, host: "test:///default", capacity: capacity)
        }
        // Partial results of the dead attempt, which must not survive it.
        try FileManager.default.createDirectory(at: queue.resultsFolder(of: "aaaa"), withIntermediateDirectories: true)
        try Data("partial".utf8).write(to: queue.resultsFolder(of: "aaaa").appendingPathComponent("stdout"))

        let records = InMemoryLogHandler()
        let report = try Recovery(queue: queue, logger: Logger(label: "test", handler: records)).run()
        #expect(report.requeued == ["aaaa"])
        #expect(report.ended == ["bbbb"])
        #expect(report.deferred.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: queue.resultsFolder(of: "aaaa").path))
        #expect(try queue.store.record("aaaa")?.state == .queued)
        let lost = try #require(try queue.store.record("bbbb"))
        #expect(lost.state == .lost)
        #expect(lost.reason?.contains("the process running attempt 1 died while the job was starting") == true)
        #expect(JobResultFile.read(from: queue.resultsFolder(of: "bbbb"))?.state == .lost)
        #expect(records.records.contains { $0.metadata["job.state"] == "lost" && $0.metadata["job.id"] == "bbbb" })

        // A second pass finds nothing: live owners and settled jobs are left alone.
        _ = try queue.store.claimNext(owner: ProcessToken.current, host: "test:///default", capacity: capacity)
        #expect(try Recovery(queue: queue, logger: Logger(label: "test", handler: records)).run() == .init())
    }

    @Test("a process token names this process, and a dead or malformed one is not alive")
    func tokens() {
        #expect(ProcessToken.isAlive(ProcessToken.current))
        #expect(!ProcessToken.isAlive(dead))
        let fields = ProcessToken.current.split(separator: " ")
        #expect(fields.count == 3)
        #expect(!ProcessToken.isAlive("\(getpid()) 1 \(fields[2])"), "same PID, other start time")
        #expect(!ProcessToken.isAlive("\(getpid()) \(fields[1]) 0000beef"), "same PID and start, other boot")
        #expect(ProcessToken.isAlive("\(getpid()) \(fields[1])"), "a token of an earlier version, without the boot")
        #expect(!ProcessToken.isAlive("garbage"))
        #expect(ProcessToken.pid(of: ProcessToken.current) == getpid())
    }
}
