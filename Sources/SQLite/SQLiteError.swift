import CSQLite

/// An error reported by SQLite, with SQLite's own result code and message.
public struct SQLiteError: Error, CustomStringConvertible, Sendable {
    /// SQLite's extended result code.
    public let code: Int32
    public let message: String
    /// The Swift operation that failed.
    public let operation: String

    public var description: String { message }

    /// Whether another connection held the lock for longer than the busy timeout.
    public var isBusy: Bool { code & 0xff == SQLITE_BUSY || code & 0xff == SQLITE_LOCKED }

    /// Whether a UNIQUE, PRIMARY KEY or other constraint refused the change.
    public var isConstraint: Bool { code & 0xff == SQLITE_CONSTRAINT }

    init(code: Int32, message: String, operation: String) {
        self.code = code
        self.message = message
        self.operation = operation
    }

    /// Reads the connection's last error. Call right after the failing call.
    static func last(_ handle: OpaquePointer?, code: Int32, _ operation: String) -> SQLiteError {
        let message =
            handle.flatMap { sqlite3_errmsg($0) }.map { String(cString: $0) }
            ?? String(cString: sqlite3_errstr(code))
        let extended = handle.map { sqlite3_extended_errcode($0) } ?? code
        return SQLiteError(code: extended, message: message, operation: operation)
    }
}
