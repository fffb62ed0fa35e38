import CSQLite
import Foundation

/// One SQLite connection.
///
/// A connection is used by one thread at a time (SQLite's multi-thread
/// mode); callers that share it serialize their calls. `close()` or the last
/// reference releases it.
public final class Database {
    private var handle: OpaquePointer?

    /// Opens (creating if needed) a database file, or `:memory:`.
    ///
    /// - Parameters:
    ///   - path: A file path, or `:memory:`.
    ///   - busyTimeout: How long a statement waits for another connection's lock.
    /// - Throws: `SQLiteError` when the file cannot be opened.
    public init(path: String, busyTimeout: Duration = .seconds(10)) throws(SQLiteError) {
        var opened: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX
        let code = sqlite3_open_v2(path, &opened, flags, nil)
        guard code == SQLITE_OK, let opened else {
            let error = SQLiteError.last(opened, code: code, "open")
            sqlite3_close_v2(opened)
            throw error
        }
        handle = opened
        sqlite3_busy_timeout(opened, Int32(clamping: busyTimeout.components.seconds * 1000))
        sqlite3_extended_result_codes(opened, 1)
    }

    deinit {
        close()
    }

    /// Closes the connection. Safe to call twice.
    public func close() {
        if let handle {
            sqlite3_close_v2(handle)
            self.handle = nil
        }
    }

    func pointer(_ operation: String = #function) throws(SQLiteError) -> OpaquePointer {
        guard let handle else {
            throw SQLiteError(code: SQLITE_MISUSE, message: "the database is closed", operation: operation)
        }
        return handle
    }

    /// Runs one or more statements that take no parameters and return no rows.
    public func execute(_ sql: String) throws(SQLiteError) {
        let db = try pointer()
        let code = sqlite3_exec(db, sql, nil, nil, nil)
        guard code == SQLITE_OK else {
            throw SQLiteError.last(db, code: code, "execute")
        }
    }

    /// Compiles one statement.
    public func prepare(_ sql: String) throws(SQLiteError) -> Statement {
        let db = try pointer()
        var statement: OpaquePointer?
        let code = sqlite3_prepare_v2(db, sql, -1, &statement, nil)
        guard code == SQLITE_OK, let statement else {
            throw SQLiteError.last(db, code: code, "prepare")
        }
        return Statement(statement, database: self)
    }

    /// Runs `body` in a transaction that takes the write lock at once
    /// (`BEGIN IMMEDIATE`), committing when it returns and rolling back when
    /// it throws.
    public func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN IMMEDIATE")
        do {
            let value = try body()
            try execute("COMMIT")
            return value
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    /// The number of rows the last statement changed.
    public var changes: Int {
        guard let handle else { return 0 }
        return Int(sqlite3_changes(handle))
    }
}
