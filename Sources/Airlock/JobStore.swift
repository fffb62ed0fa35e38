import Foundation
import SQLite
import Synchronization

/// The job database: every job's spec, state and timestamped transitions, in
/// SQLite (WAL) under the state folder, safe for several processes at once.
///
/// One connection per store, used under a lock, so a store may be shared by
/// threads. Writes take SQLite's write lock at once (`BEGIN IMMEDIATE`), so
/// concurrent submitters queue instead of failing.
public final class JobStore: @unchecked Sendable {
    // @unchecked: `database` is only touched inside `lock`.
    private let database: Database
    private let lock = Mutex(())

    /// A job's life: queued, then starting, running, collecting, then one terminal state.
    public enum State: String, Sendable, CaseIterable {
        case queued, starting, running, collecting
        case succeeded, failed
        case timedOut = "timed_out"
        case canceled, lost

        /// Whether the job is over.
        public var isTerminal: Bool {
            switch self {
            case .queued, .starting, .running, .collecting: return false
            default: return true
            }
        }
    }

    /// One job as stored.
    public struct Record: Sendable, Equatable {
        public var id: String
        public var batch: String?
        public var state: State
        public var spec: String
        public var labels: [String: String]
        public var submitted: Date
        public var exitCode: Int32?
        public var reason: String?
    }

    /// Opens (creating if needed) the store at `file`, or in memory for `:memory:`.
    ///
    /// - Throws: `AirlockError` when the database cannot be opened or set up.
    public init(file: String) throws(AirlockError) {
        do {
            database = try Database(path: file)
            try database.execute(
                """
                PRAGMA journal_mode=WAL;
                PRAGMA synchronous=NORMAL;
                CREATE TABLE IF NOT EXISTS jobs (
                    id TEXT PRIMARY KEY,
                    batch TEXT,
                    state TEXT NOT NULL,
                    spec TEXT NOT NULL,
                    submitted REAL NOT NULL,
                    exit_code INTEGER,
                    reason TEXT
                );
                CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, submitted);
                CREATE INDEX IF NOT EXISTS jobs_batch ON jobs (batch);
                CREATE TABLE IF NOT EXISTS labels (
                    job TEXT NOT NULL REFERENCES jobs (id),
                    key TEXT NOT NULL,
                    value TEXT NOT NULL,
                    PRIMARY KEY (job, key)
                );
                CREATE INDEX IF NOT EXISTS labels_key ON labels (key, value);
                CREATE TABLE IF NOT EXISTS transitions (
                    job TEXT NOT NULL REFERENCES jobs (id),
                    state TEXT NOT NULL,
                    at REAL NOT NULL,
                    reason TEXT
                );
                CREATE INDEX IF NOT EXISTS transitions_job ON transitions (job);
                """)
        } catch {
            throw AirlockError(.internalError, "cannot open the job store '\(file)'", cause: error)
        }
    }

    /// Adds queued jobs in one transaction: all land, or none.
    ///
    /// - Parameter jobs: (id, batch, spec JSON, labels) for each job.
    /// - Throws: `AirlockError` `.exists` when an id is taken.
    public func submit(_ jobs: [(id: String, batch: String?, spec: String, labels: [String: String])])
        throws(AirlockError)
    {
        let now = Date().timeIntervalSince1970
        do {
            try lock.withLock { _ in
                try database.transaction {
                    let insert = try database.prepare(
                        "INSERT INTO jobs (id, batch, state, spec, submitted) VALUES (?, ?, 'queued', ?, ?)")
                    let label = try database.prepare("INSERT INTO labels (job, key, value) VALUES (?, ?, ?)")
                    let transition = try database.prepare(
                        "INSERT INTO transitions (job, state, at) VALUES (?, 'queued', ?)")
                    for job in jobs {
                        try insert.run([
                            .text(job.id), job.batch.map { .text($0) } ?? .null, .text(job.spec), .real(now),
                        ])
                        for (key, value) in job.labels.sorted(by: { $0.key < $1.key }) {
                            try label.run([.text(job.id), .text(key), .text(value)])
                        }
                        try transition.run([.text(job.id), .real(now)])
                    }
                }
            }
        } catch let error as SQLiteError where error.isConstraint {
            throw AirlockError(.exists, "a job with one of these ids is already in the store", cause: error)
        } catch {
            throw AirlockError(.internalError, "cannot store the submitted jobs", cause: error as? SQLiteError)
        }
    }

    /// Moves a job to `state`, recording when and why.
    ///
    /// - Throws: `AirlockError` `.notFound` for an unknown job, `.invalidState`
    ///   when the job is already over.
    public func transition(
        _ id: String, to state: State, reason: String? = nil, exitCode: Int32? = nil
    ) throws(AirlockError) {
        let now = Date().timeIntervalSince1970
        let outcome: Result<Void, AirlockError>
        do {
            outcome = try lock.withLock { _ in
                try database.transaction { () throws -> Result<Void, AirlockError> in
                    let rows = try database.prepare("SELECT state FROM jobs WHERE id = ?").rows([.text(id)])
                    guard case .text(let current)? = rows.first?.first else {
                        return .failure(AirlockError(.notFound, "no job '\(id)' in the store"))
                    }
                    if State(rawValue: current)?.isTerminal == true {
                        return .failure(AirlockError(.invalidState, "job '\(id)' is already \(current)"))
                    }
                    try database.prepare("UPDATE jobs SET state = ?, exit_code = ?, reason = ? WHERE id = ?").run([
                        .text(state.rawValue), exitCode.map { .integer(Int64($0)) } ?? .null,
                        reason.map { .text($0) } ?? .null, .text(id),
                    ])
                    try database.prepare("INSERT INTO transitions (job, state, at, reason) VALUES (?, ?, ?, ?)").run([
                        .text(id), .text(state.rawValue), .real(now), reason.map { .text($0) } ?? .null,
                    ])
                    return .success(())
                }
            }
        } catch {
            throw AirlockError(.internalError, "cannot update job '\(id)'", cause: error as? SQLiteError)
        }
        try outcome.get()
    }

    /// Jobs matching every given filter, oldest first.
    public func list(state: State? = nil, batch: String? = nil, label: (String, String)? = nil, limit: Int = 1000)
        throws(AirlockError) -> [Record]
    {
        var sql = "SELECT id, batch, state, spec, submitted, exit_code, reason FROM jobs WHERE 1 = 1"
        var values: [SQLiteValue] = []
        if let state {
            sql += " AND state = ?"
            values.append(.text(state.rawValue))
        }
        if let batch {
            sql += " AND batch = ?"
            values.append(.text(batch))
        }
        if let label {
            sql += " AND id IN (SELECT job FROM labels WHERE key = ? AND value = ?)"
            values += [.text(label.0), .text(label.1)]
        }
        sql += " ORDER BY submitted, id LIMIT ?"
        values.append(.integer(Int64(limit)))
        do {
            return try lock.withLock { _ in
                let labels = try database.prepare("SELECT key, value FROM labels WHERE job = ?")
                return try database.prepare(sql).rows(values).map { row in
                    var record = Self.record(row)
                    for pair in try labels.rows([.text(record.id)]) {
                        if case .text(let key) = pair[0], case .text(let value) = pair[1] {
                            record.labels[key] = value
                        }
                    }
                    return record
                }
            }
        } catch {
            throw AirlockError(.internalError, "cannot read the job store", cause: error as? SQLiteError)
        }
    }

    /// A job's transitions, in order: (state, time, reason).
    public func history(_ id: String) throws(AirlockError) -> [(State, Date, String?)] {
        do {
            return try lock.withLock { _ in
                try database.prepare("SELECT state, at, reason FROM transitions WHERE job = ? ORDER BY rowid")
                    .rows([.text(id)]).compactMap { row in
                        guard case .text(let name) = row[0], let state = State(rawValue: name),
                            case .real(let at) = row[1]
                        else { return nil }
                        let reason: String? = if case .text(let text) = row[2] { text } else { nil }
                        return (state, Date(timeIntervalSince1970: at), reason)
                    }
            }
        } catch {
            throw AirlockError(.internalError, "cannot read the history of job '\(id)'", cause: error as? SQLiteError)
        }
    }

    private static func record(_ row: [SQLiteValue]) -> Record {
        func text(_ value: SQLiteValue) -> String? {
            if case .text(let text) = value { return text }
            return nil
        }
        var submitted = Date(timeIntervalSince1970: 0)
        if case .real(let seconds) = row[4] {
            submitted = Date(timeIntervalSince1970: seconds)
        }
        var exitCode: Int32?
        if case .integer(let code) = row[5] {
            exitCode = Int32(truncatingIfNeeded: code)
        }
        return Record(
            id: text(row[0]) ?? "", batch: text(row[1]), state: State(rawValue: text(row[2]) ?? "") ?? .lost,
            spec: text(row[3]) ?? "", labels: [:], submitted: submitted, exitCode: exitCode, reason: text(row[6]))
    }
}
