import Foundation
import Synchronization
import Testing

@testable import Airlock

@Suite("JobStore")
struct JobStoreTests {
    private func temporaryFile() -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("airlock-store-\(UUID()).db").path
    }

    private func remove(_ path: String) {
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
    }

    private func job(
        _ id: String, batch: String? = nil, priority: Int = 0, vcpus: Int = 1, memory: Int = 512, attempts: Int = 1,
        labels: [String: String] = [:]
    ) -> JobStore.NewJob {
        var job = JobStore.NewJob(id: id, batch: batch, spec: "{\"id\":\"\(id)\"}", results: "/r/\(id)")
        job.priority = priority
        job.vcpus = vcpus
        job.memoryMiB = memory
        job.maxAttempts = attempts
        job.labels = labels
        return job
    }

    private let roomy = HostCapacity(concurrency: 8, vcpus: 8, memoryMiB: 8192)

    /// Claims until the store has nothing ready, returning the ids in order.
    private func drain(_ store: JobStore, owner: String = "1 1", capacity: HostCapacity) throws -> [String] {
        var ids: [String] = []
        while case .claimed(let claim) = try store.claimNext(owner: owner, host: "test:///default", capacity: capacity)
        {
            ids.append(claim.id)
        }
        return ids
    }

    // MARK: - Submitting and reading

    @Test("submitted jobs are queued, filterable by state, batch and label, in submission order")
    func submitAndList() throws {
        let store = try JobStore(file: ":memory:")
        try store.submit([
            job("a", batch: "b1", labels: ["model": "x"]), job("b", batch: "b1", labels: ["model": "y", "k": "v"]),
            job("c"),
        ])
        #expect(try store.list().map(\.id) == ["a", "b", "c"])
        #expect(try store.list(.init(batch: "b1")).map(\.id) == ["a", "b"])
        #expect(try store.list(.init(label: ("model", "y"))).map(\.id) == ["b"])
        // A limit keeps the most recent, still in submission order.
        #expect(try store.list(limit: 2).map(\.id) == ["b", "c"])
        #expect(try store.list(.init(state: .queued)).count == 3)
        #expect(try store.list(.init(state: .running)).isEmpty)
        #expect(try store.record("b")?.labels == ["model": "y", "k": "v"])
        #expect(try store.record("c")?.results == "/r/c")
        #expect(try store.record("nope") == nil)
        #expect(try store.counts(batch: "b1") == [.queued: 2])
        #expect(try store.history("a").map(\.state) == [.queued])
    }

    @Test("a duplicate id fails the whole submission and stores none of it")
    func duplicateIsAtomic() throws {
        let store = try JobStore(file: ":memory:")
        try store.submit([job("a")])
        #expect(throws: AirlockError.self) { try store.submit([job("b"), job("a")]) }
        #expect(try store.list().map(\.id) == ["a"])
    }

    @Test("a unique id prefix resolves; an ambiguous, unknown or malformed one is refused")
    func resolve() throws {
        let store = try JobStore(file: ":memory:")
        try store.submit([job("abc123"), job("abd456"), job("ff0000")])
        #expect(try store.resolve("abc") == "abc123")
        #expect(try store.resolve("ff0000") == "ff0000")
        for (prefix, code) in [
            ("ab", AirlockError.Code.invalidArgument), ("0", .notFound), ("x'; --", .invalidArgument),
        ] {
            do {
                _ = try store.resolve(prefix)
                Issue.record("'\(prefix)' resolved")
            } catch {
                #expect(error.code == code)
            }
        }
    }

    @Test("the store file is readable by its owner only: specs hold environment values")
    func filePermissions() throws {
        let file = temporaryFile()
        defer { remove(file) }
        _ = try JobStore(file: file)
        let attributes = try FileManager.default.attributesOfItem(atPath: file)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
    }

    // MARK: - Claiming

    @Test("higher priority first, then submission order")
    func priorityThenOrder() throws {
        let store = try JobStore(file: ":memory:")
        try store.submit([
            job("low1", priority: -1), job("mid1"), job("high", priority: 5), job("mid2"), job("low2", priority: -1),
        ])
        #expect(try drain(store, capacity: roomy) == ["high", "mid1", "mid2", "low1", "low2"])
    }

    @Test("a single job submitted after a big batch does not wait for the whole batch")
    func batchDoesNotStarve() throws {
        let store = try JobStore(file: ":memory:")
        try store.submit((1...10).map { job("big\($0)", batch: "big") })
        try store.submit([job("single")])
        let two = HostCapacity(concurrency: 2, vcpus: 8, memoryMiB: 8192)
        // Two batch jobs run; the next free slot goes to the lone job, not the 3rd batch job.
        #expect(try drain(store, capacity: two) == ["big1", "single"])
        #expect(try store.advance("big1", to: .succeeded, owner: "1 1"))
        #expect(try drain(store, capacity: two) == ["big2"])
    }

    @Test("at most the capacity's number of jobs, vCPUs and memory are live at once")
    func capacityLimits() throws {
        let store = try JobStore(file: ":memory:")
        try store.submit((1...5).map { job("j\($0)", vcpus: 2, memory: 1024) })
        #expect(try drain(store, capacity: HostCapacity(concurrency: 3, vcpus: 16, memoryMiB: 65536)).count == 3)
        let store2 = try JobStore(file: ":memory:")
        try store2.submit((1...5).map { job("j\($0)", vcpus: 2, memory: 1024) })
        #expect(try drain(store2, capacity: HostCapacity(concurrency: 9, vcpus: 5, memoryMiB: 65536)).count == 2)
        let store3 = try JobStore(file: ":memory:")
        try store3.submit((1...5).map { job("j\($0)", vcpus: 2, memory: 1024) })
        #expect(try drain(store3, capacity: HostCapacity(concurrency: 9, vcpus: 16, memoryMiB: 3000)).count == 2)
        #expect(
            try store3.claimNext(
                owner: "1 1", host: "test:///default",
                capacity: HostCapacity(concurrency: 9, vcpus: 16, memoryMiB: 3000))
                == .full)
        // Jobs live on another host use that host's capacity, not this one's.
        #expect(
            try store3.claimNext(
                owner: "2 2", host: "qemu+ssh://other/system",
                capacity: HostCapacity(concurrency: 9, vcpus: 16, memoryMiB: 3000)) != .full)
    }

    @Test("a job left to a controller with more room is passed over, and the next one is claimed")
    func leavingForOthers() throws {
        let store = try JobStore(file: ":memory:")
        try store.submit([job("huge", vcpus: 32, memory: 1024), job("small")])
        let small = HostCapacity(concurrency: 4, vcpus: 4, memoryMiB: 8192)
        #expect(
            try store.claimNext(owner: "1 1", host: "test:///default", capacity: small)
                == .neverFits(id: "huge", vcpus: 32, memoryMiB: 1024))
        guard
            case .claimed(let claim) = try store.claimNext(
                owner: "1 1", host: "test:///default", capacity: small, leavingTooBig: true)
        else {
            Issue.record("the small job was not claimed")
            return
        }
        #expect(claim.id == "small")
        #expect(try store.record("huge")?.state == .queued)
        #expect(try store.queuedLargerThan(vcpus: 16, memoryMiB: 8192).map(\.id) == ["huge"])
        #expect(try store.queuedLargerThan(vcpus: 32, memoryMiB: 8192).isEmpty)
    }

    @Test("a job bigger than the whole capacity is reported, not waited for")
    func neverFits() throws {
        let store = try JobStore(file: ":memory:")
        try store.submit([job("huge", vcpus: 4)])
        let outcome = try store.claimNext(
            owner: "1 1", host: "h", capacity: HostCapacity(concurrency: 4, vcpus: 2, memoryMiB: 8192))
        #expect(outcome == .neverFits(id: "huge", vcpus: 4, memoryMiB: 512))
        try store.reject("huge", reason: "too big")
        #expect(try store.record("huge")?.state == .failed)
        #expect(try store.claimNext(owner: "1 1", host: "h", capacity: roomy) == .idle)
    }

    @Test("several processes claiming at once never get the same job")
    func concurrentClaims() throws {
        let file = temporaryFile()
        defer { remove(file) }
        try JobStore(file: file).submit((1...60).map { job("j\($0)") })
        let claimed = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            guard let store = try? JobStore(file: file) else { return }
            let capacity = HostCapacity(concurrency: 1000, vcpus: 1000, memoryMiB: 1 << 30)
            while case .claimed(let claim)? = try? store.claimNext(owner: "\(worker) 1", host: "h", capacity: capacity)
            {
                claimed.withLock { $0.append(claim.id) }
            }
        }
        let ids = claimed.withLock { $0 }
        #expect(ids.count == 60)
        #expect(Set(ids).count == 60)
    }

    // MARK: - Owning

    @Test("only the owner moves a live job; adopt and takeOver hand it on; the end releases it")
    func ownership() throws {
        let store = try JobStore(file: ":memory:")
        try store.submit([job("j", attempts: 3)])
        guard case .claimed(let claim) = try store.claimNext(owner: "10 1", host: "h", capacity: roomy) else {
            Issue.record("nothing claimed")
            return
        }
        #expect(claim.attempt == 1 && claim.maxAttempts == 3)
        #expect(try store.adopt("j", from: "99 9", to: "20 2") == nil)
        #expect(try store.adopt("j", from: "10 1", to: "20 2")?.cancelRequested == false)
        #expect(try !store.advance("j", to: .running, owner: "10 1"))
        #expect(try store.advance("j", to: .running, owner: "20 2"))
        #expect(try store.takeOver("j", from: "20 2", to: "30 3"))
        #expect(try !store.takeOver("j", from: "20 2", to: "40 4"))
        #expect(try store.advance("j", to: .failed, owner: "30 3", reason: "command exited with status 3", exitCode: 3))
        let record = try #require(try store.record("j"))
        #expect(record.state == .failed && record.exitCode == 3 && record.owner == nil)
        #expect(record.reason == "command exited with status 3")
        #expect(try !store.advance("j", to: .running, owner: "30 3"))
        #expect(try store.history("j").map(\.state) == [.queued, .starting, .running, .failed])
    }

    @Test("a requeued job waits out its back-off, then runs as the next attempt")
    func requeueWithBackOff() throws {
        let store = try JobStore(file: ":memory:")
        try store.submit([job("j", attempts: 3)])
        _ = try store.claimNext(owner: "1 1", host: "h", capacity: roomy)
        #expect(try store.requeue("j", owner: "1 1", reason: "boot failed", delay: .milliseconds(300)) == .queued)
        #expect(try store.claimNext(owner: "1 1", host: "h", capacity: roomy) == .idle)
        Thread.sleep(forTimeInterval: 0.4)
        guard case .claimed(let claim) = try store.claimNext(owner: "1 1", host: "h", capacity: roomy) else {
            Issue.record("the job did not come back")
            return
        }
        #expect(claim.attempt == 2)
        #expect(try store.history("j").map(\.reason).contains("boot failed"))
    }

    @Test("a job canceled while its failed attempt is being retried ends as canceled, not queued")
    func cancelDuringRetry() throws {
        let store = try JobStore(file: ":memory:")
        try store.submit([job("j", attempts: 3)])
        _ = try store.claimNext(owner: "1 1", host: "h", capacity: roomy)
        #expect(try store.requestCancel("j") == .requested(owner: "1 1"))
        #expect(try store.requeue("j", owner: "1 1", reason: "boot failed", delay: .zero) == .canceled)
        let record = try #require(try store.record("j"))
        #expect(record.state == .canceled && record.owner == nil)
        #expect(try store.claimNext(owner: "1 1", host: "h", capacity: roomy) == .idle)
        #expect(try store.requeue("j", owner: "1 1", reason: "again", delay: .zero) == nil)
    }

    @Test("remove deletes finished jobs with their history, all or none")
    func remove() throws {
        let store = try JobStore(file: ":memory:")
        try store.submit([job("done", labels: ["k": "v"]), job("queued")])
        _ = try store.claimNext(owner: "1 1", host: "h", capacity: roomy)
        #expect(try store.advance("done", to: .failed, owner: "1 1", exitCode: 2))
        do {
            _ = try store.remove(["done", "queued"])
            Issue.record("removed a queued job")
        } catch {
            #expect(error.message.contains("job 'queued' is queued, not finished; nothing was removed"))
        }
        #expect(try store.record("done") != nil)
        _ = try store.remove(["done"])
        #expect(try store.record("done") == nil)
        #expect(try store.history("done").isEmpty)
        #expect(try store.list(.init(label: ("k", "v"))).isEmpty)
        #expect(try store.list().map(\.id) == ["queued"])
    }

    @Test("cancel ends a queued job at once and flags a live one for its owner")
    func cancel() throws {
        let store = try JobStore(file: ":memory:")
        try store.submit([job("queued"), job("live"), job("done")])
        #expect(try store.requestCancel("queued") == .canceled)
        _ = try store.claimNext(
            owner: "1 1", host: "h", capacity: HostCapacity(concurrency: 2, vcpus: 8, memoryMiB: 8192))
        _ = try store.claimNext(
            owner: "1 1", host: "h", capacity: HostCapacity(concurrency: 2, vcpus: 8, memoryMiB: 8192))
        try store.advance("done", to: .succeeded, owner: "1 1")
        #expect(try store.requestCancel("live") == .requested(owner: "1 1"))
        #expect(try store.isCancelRequested("live"))
        #expect(try store.requestCancel("done") == .finished(.succeeded))
        #expect(try store.record("queued")?.state == .canceled)
        #expect(throws: AirlockError.self) { try store.requestCancel("nope") }
    }

    // MARK: - Many processes

    @Test("submissions from several connections at once all land, none doubled")
    func concurrentSubmitters() throws {
        let file = temporaryFile()
        defer { remove(file) }
        _ = try JobStore(file: file)
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            guard let store = try? JobStore(file: file) else { return }
            for index in 0..<50 {
                try? store.submit([job("w\(worker)-\(index)")])
            }
        }
        let ids = try JobStore(file: file).list().map(\.id)
        #expect(ids.count == 200)
        #expect(Set(ids).count == 200)
    }
}
