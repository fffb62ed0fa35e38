import CSQLite
import Foundation

/// A value SQLite stores or returns.
public enum SQLiteValue: Sendable, Equatable {
    case null
    case integer(Int64)
    case real(Double)
    case text(String)
    case blob([UInt8])
}

/// A compiled statement. Holds its database open while it lives.
public final class Statement {
    private let handle: OpaquePointer
    /// The connection this statement belongs to.
    public let database: Database

    init(_ handle: OpaquePointer, database: Database) {
        self.handle = handle
        self.database = database
    }

    deinit {
        sqlite3_finalize(handle)
    }

    /// Binds parameters by position (1-based in SQL, in order here).
    public func bind(_ values: [SQLiteValue]) throws(SQLiteError) {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
        for (offset, value) in values.enumerated() {
            let index = Int32(offset + 1)
            let code: Int32
            switch value {
            case .null: code = sqlite3_bind_null(handle, index)
            case .integer(let number): code = sqlite3_bind_int64(handle, index, number)
            case .real(let number): code = sqlite3_bind_double(handle, index, number)
            case .text(let text): code = sqlite3_bind_text(handle, index, text, -1, airlock_sqlite_transient())
            case .blob(let bytes):
                code = bytes.withUnsafeBytes {
                    sqlite3_bind_blob(handle, index, $0.baseAddress, Int32($0.count), airlock_sqlite_transient())
                }
            }
            guard code == SQLITE_OK else {
                throw SQLiteError.last(sqlite3_db_handle(handle), code: code, "bind")
            }
        }
    }

    /// Runs the statement to completion and returns every row.
    public func rows(_ values: [SQLiteValue] = []) throws(SQLiteError) -> [[SQLiteValue]] {
        try bind(values)
        defer { sqlite3_reset(handle) }
        var rows: [[SQLiteValue]] = []
        while true {
            let code = sqlite3_step(handle)
            if code == SQLITE_DONE {
                return rows
            }
            guard code == SQLITE_ROW else {
                throw SQLiteError.last(sqlite3_db_handle(handle), code: code, "step")
            }
            rows.append((0..<sqlite3_column_count(handle)).map(column))
        }
    }

    /// Runs a statement that returns no rows.
    public func run(_ values: [SQLiteValue] = []) throws(SQLiteError) {
        _ = try rows(values)
    }

    private func column(_ index: Int32) -> SQLiteValue {
        switch sqlite3_column_type(handle, index) {
        case SQLITE_INTEGER: return .integer(sqlite3_column_int64(handle, index))
        case SQLITE_FLOAT: return .real(sqlite3_column_double(handle, index))
        case SQLITE_TEXT:
            guard let text = sqlite3_column_text(handle, index) else { return .null }
            return .text(String(cString: text))
        case SQLITE_BLOB:
            let count = Int(sqlite3_column_bytes(handle, index))
            guard let bytes = sqlite3_column_blob(handle, index), count > 0 else { return .blob([]) }
            return .blob(Array(UnsafeRawBufferPointer(start: bytes, count: count)))
        default: return .null
        }
    }
}

extension SQLiteValue {
    /// The text, or nil for any other kind of value.
    public var text: String? {
        if case .text(let text) = self { return text }
        return nil
    }

    /// The integer, or nil for any other kind of value.
    public var integer: Int64? {
        if case .integer(let number) = self { return number }
        return nil
    }

    /// The number as a double, for REAL and INTEGER values.
    public var real: Double? {
        switch self {
        case .real(let number): return number
        case .integer(let number): return Double(number)
        default: return nil
        }
    }
}
