import Foundation
import Testing

@testable import SQLite

@Suite("SQLite database")
struct DatabaseTests {
    @Test("values of every type round-trip through a table")
    func roundTrip() throws {
        let db = try Database(path: ":memory:")
        try db.execute("CREATE TABLE t (i INTEGER, r REAL, s TEXT, b BLOB, n)")
        let values: [SQLiteValue] = [.integer(-7), .real(2.5), .text("ünï 'q' ✓"), .blob([0, 255, 1]), .null]
        try db.prepare("INSERT INTO t VALUES (?, ?, ?, ?, ?)").run(values)
        #expect(try db.prepare("SELECT * FROM t").rows() == [values])
    }

    @Test("a failed statement carries SQLite's own message and code")
    func errors() throws {
        let db = try Database(path: ":memory:")
        do {
            _ = try db.prepare("SELEKT 1")
            Issue.record("a bad statement compiled")
        } catch {
            #expect(error.message.contains("syntax error"))
            #expect(error.operation == "prepare")
        }
        try db.execute("CREATE TABLE u (k TEXT PRIMARY KEY)")
        let insert = try db.prepare("INSERT INTO u VALUES (?)")
        try insert.run([.text("a")])
        do {
            try insert.run([.text("a")])
            Issue.record("a duplicate key was accepted")
        } catch {
            #expect(error.isConstraint)
        }
    }

    @Test("a transaction rolls back when its body throws")
    func rollback() throws {
        struct Stop: Error {}
        let db = try Database(path: ":memory:")
        try db.execute("CREATE TABLE t (v INTEGER)")
        #expect(throws: Stop.self) {
            try db.transaction {
                try db.prepare("INSERT INTO t VALUES (1)").run()
                throw Stop()
            }
        }
        #expect(try db.prepare("SELECT count(*) FROM t").rows() == [[.integer(0)]])
    }

    @Test("two connections to one WAL file both write; neither loses a row")
    func concurrentWriters() throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-sqlite-\(UUID()).db").path
        defer {
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
        }
        let setup = try Database(path: path)
        try setup.execute("PRAGMA journal_mode=WAL; CREATE TABLE t (v INTEGER)")
        setup.close()
        DispatchQueue.concurrentPerform(iterations: 2) { worker in
            guard let db = try? Database(path: path), let insert = try? db.prepare("INSERT INTO t VALUES (?)") else {
                return
            }
            for value in 0..<200 {
                _ = try? db.transaction { try insert.run([.integer(Int64(worker * 1000 + value))]) }
            }
        }
        let check = try Database(path: path)
        #expect(try check.prepare("SELECT count(DISTINCT v) FROM t").rows() == [[.integer(400)]])
    }
}
