import Foundation
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

    @Test("submitted jobs are queued, filterable by state, batch and label, oldest first")
    func submitAndList() throws {
        let store = try JobStore(file: ":memory:")
        try store.submit([
            (id: "a", batch: "b1", spec: "{}", labels: ["model": "x"]),
            (id: "b", batch: "b1", spec: "{}", labels: ["model": "y"]),
            (id: "c", batch: nil, spec: "{}", labels: [:]),
        ])
        #expect(try store.list().map(\.id) == ["a", "b", "c"])
        #expect(try store.list(batch: "b1").map(\.id) == ["a", "b"])
        #expect(try store.list(label: ("model", "y")).map(\.id) == ["b"])
        #expect(try store.list(state: .queued).count == 3)
        #expect(try store.list(label: ("model", "y")).first?.labels == ["model": "y"])
    }

    @Test("transitions are recorded in order with their reasons; a finished job stays finished")
    func transitions() throws {
        let store = try JobStore(file: ":memory:")
        try store.submit([(id: "j", batch: nil, spec: "{}", labels: [:])])
        try store.transition("j", to: .starting)
        try store.transition("j", to: .running)
        try store.transition("j", to: .failed, reason: "command exited with status 3", exitCode: 3)
        #expect(try store.history("j").map(\.0) == [.queued, .starting, .running, .failed])
        let record = try #require(try store.list().first)
        #expect(record.state == .failed)
        #expect(record.exitCode == 3)
        #expect(record.reason == "command exited with status 3")
        do {
            try store.transition("j", to: .running)
            Issue.record("a finished job moved again")
        } catch {
            #expect(error.code == .invalidState)
        }
        do {
            try store.transition("nope", to: .running)
            Issue.record("an unknown job moved")
        } catch {
            #expect(error.code == .notFound)
        }
    }

    @Test("a duplicate id fails the whole submission and stores none of it")
    func duplicateIsAtomic() throws {
        let store = try JobStore(file: ":memory:")
        try store.submit([(id: "a", batch: nil, spec: "{}", labels: [:])])
        do {
            try store.submit([
                (id: "b", batch: nil, spec: "{}", labels: [:]), (id: "a", batch: nil, spec: "{}", labels: [:]),
            ])
            Issue.record("a duplicate id was accepted")
        } catch {
            #expect(error.code == .exists)
        }
        #expect(try store.list().map(\.id) == ["a"])
    }

    @Test("submissions from several connections at once all land, none doubled")
    func concurrentSubmitters() throws {
        let file = temporaryFile()
        defer { remove(file) }
        _ = try JobStore(file: file)
        DispatchQueue.concurrentPerform(iterations: 4) { worker in
            guard let store = try? JobStore(file: file) else { return }
            for index in 0..<50 {
                try? store.submit([(id: "w\(worker)-\(index)", batch: nil, spec: "{}", labels: [:])])
            }
        }
        let ids = try JobStore(file: file).list(limit: 1000).map(\.id)
        #expect(ids.count == 200)
        #expect(Set(ids).count == 200)
    }
}
