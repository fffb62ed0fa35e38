import Foundation
import SQLite
import Synchronization

/// The job database: every job's spec, state, attempts, owner, host, result
/// folder and timestamped transitions, in SQLite (WAL) under the state
/// folder, safe for several processes at once.
///
/// One connection per store, used under a lock, so a store may be shared by
/// threads. Writes take SQLite's write lock at once (`BEGIN IMMEDIATE`), so
/// concurrent writers queue instead of failing, and every read-then-write
/// (claiming a job, cancelling one) is atomic across processes.
///
/// Ownership: a job that is starting, running or collecting has an owner,
/// the process holding it ("PID STARTTIME", see `ProcessToken`). Every
/// change a process makes to a live job is conditional on still owning it,
/// so a process that lost a job (it was reclaimed after a crash) can never
/// overwrite what happened since.
public final class JobStore: @unchecked Sendable {
    // @unchecked: `database` is only touched inside `lock`.
    private let database: Database
    private let lock = Mutex(())

    /// The schema this code reads and writes.
    static let schemaVersion: Int64 = 4

    /// A job's life: queued, then starting, running, collecting, then one terminal state.
    public enum State: String, Sendable, CaseIterable, Codable {
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

        /// Whether a process holds the job (and maybe a guest).
        public var isLive: Bool { self == .starting || self == .running || self == .collecting }

        static let liveSQL = "('starting', 'running', 'collecting')"
        static let terminalSQL = "('succeeded', 'failed', 'timed_out', 'canceled', 'lost')"
    }

    /// A job to add to the queue.
    public struct NewJob: Sendable {
        public var id: String
        public var batch: String?
        /// The stored spec (`StoredSpec` as JSON).
        public var spec: String
        public var labels: [String: String] = [:]
        public var priority = 0
        public var maxAttempts = 1
        public var vcpus = 1
        public var memoryMiB = 512
        /// The workload snapshot file the job uses, if any.
        public var workload: String?
        /// The job's result folder.
        public var results: String
        /// The host the job must run on, by name, or nil for any.
        public var host: String?
        /// A `key=value` label the job's host must have, or nil for any.
        public var hostLabel: String?

        public init(id: String, batch: String? = nil, spec: String, results: String) {
            self.id = id
            self.batch = batch
            self.spec = spec
            self.results = results
        }
    }

    /// One job as stored.
    public struct Record: Sendable, Equatable {
        public var id: String
        public var batch: String?
        public var state: State
        public var spec: String
        public var labels: [String: String]
        public var priority: Int
        public var submitted: Date
        public var updated: Date
        public var attempts: Int
        public var maxAttempts: Int
        public var vcpus: Int
        public var memoryMiB: Int
        public var host: String?
        public var results: String
        public var exitCode: Int32?
        /// Why the job is in its state (the error, the signal, the retry).
        public var reason: String?
        public var owner: String?
        public var cancelRequested: Bool
    }

    /// One timestamped state change.
    public struct Transition: Sendable, Equatable {
        public var state: State
        public var at: Date
        public var reason: String?
    }

    /// Opens (creating if needed) the store at `file`, or in memory for `:memory:`.
    ///
    /// - Throws: `AirlockError` when the database cannot be opened or set up,
    ///   or was made by a newer Airlock.
    public init(file: String) throws(AirlockError) {
        do {
            database = try Database(path: file)
            // Specs hold environment values, which may be secrets.
            if file != ":memory:" {
                _ = chmod(file, 0o600)
            }
            try database.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON;")
            let version = try database.prepare("PRAGMA user_version").rows().first?.first?.integer ?? 0
            guard version <= Self.schemaVersion else {
                throw AirlockError(
                    .invalidState,
                    "the job store '\(file)' has schema \(version), newer than this Airlock's \(Self.schemaVersion)",
                    hint: "use the Airlock that made it, or another --state-dir")
            }
            if version < Self.schemaVersion {
                try database.transaction {
                    try database.execute(Self.schema)
                    // Stores made before hosts existed gain the jobs' host requests.
                    let columns = try database.prepare("PRAGMA table_info(jobs)").rows().compactMap { $0[1].text }
                    for column in ["want_host", "want_label"] where !columns.contains(column) {
                        try database.execute("ALTER TABLE jobs ADD COLUMN \(column) TEXT")
                    }
                    try database.execute("PRAGMA user_version = \(Self.schemaVersion)")
                }
            }
        } catch let error as AirlockError {
            throw error
        } catch {
            throw AirlockError(.internalError, "cannot open the job store '\(file)'", cause: error as? SQLiteError)
        }
    }

    /// The store file under a state folder.
    public static func file(in stateFolder: URL) -> URL {
        stateFolder.appendingPathComponent("jobs.db")
    }

    private static let schema = """
        CREATE TABLE IF NOT EXISTS jobs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            batch TEXT,
            grp TEXT NOT NULL,
            priority INTEGER NOT NULL,
            state TEXT NOT NULL,
            spec TEXT NOT NULL,
            vcpus INTEGER NOT NULL,
            memory_mib INTEGER NOT NULL,
            workload TEXT,
            submitted REAL NOT NULL,
            updated REAL NOT NULL,
            not_before REAL NOT NULL DEFAULT 0,
            attempts INTEGER NOT NULL DEFAULT 0,
            max_attempts INTEGER NOT NULL,
            owner TEXT,
            cancel_requested INTEGER NOT NULL DEFAULT 0,
            host TEXT,
            results TEXT NOT NULL,
            exit_code INTEGER,
            reason TEXT,
            want_host TEXT,
            want_label TEXT
        );
        CREATE INDEX IF NOT EXISTS jobs_queue ON jobs (state, priority, seq);
        CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
        CREATE INDEX IF NOT EXISTS jobs_batch ON jobs (batch, seq);
        CREATE INDEX IF NOT EXISTS jobs_group ON jobs (grp, state);
        CREATE INDEX IF NOT EXISTS jobs_workload ON jobs (workload, state);
        CREATE TABLE IF NOT EXISTS labels (
            job TEXT NOT NULL REFERENCES jobs (id),
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            PRIMARY KEY (job, key)
        ) WITHOUT ROWID;
        CREATE INDEX IF NOT EXISTS labels_key ON labels (key, value);
        CREATE TABLE IF NOT EXISTS transitions (
            job TEXT NOT NULL REFERENCES jobs (id),
            state TEXT NOT NULL,
            at REAL NOT NULL,
            reason TEXT
        );
        CREATE INDEX IF NOT EXISTS transitions_job ON transitions (job);
        CREATE TABLE IF NOT EXISTS controllers (
            owner TEXT PRIMARY KEY,
            uri TEXT NOT NULL,
            concurrency INTEGER NOT NULL,
            vcpus INTEGER NOT NULL,
            memory_mib INTEGER NOT NULL,
            started REAL NOT NULL
        );
        CREATE TABLE IF NOT EXISTS hosts (
            name TEXT PRIMARY KEY,
            uri TEXT NOT NULL UNIQUE,
            vcpus INTEGER,
            memory_mib INTEGER,
            labels TEXT NOT NULL,
            draining INTEGER NOT NULL DEFAULT 0,
            added REAL NOT NULL
        );
        """

    /// Runs `body` on the connection under the lock, turning SQLite's errors
    /// into Airlock's with `what` as the failed action.
    func access<T>(_ what: String, _ body: (Database) throws -> T) throws(AirlockError) -> T {
        do {
            return try lock.withLock { _ in try body(database) }
        } catch let error as AirlockError {
            throw error
        } catch {
            throw AirlockError(.internalError, "cannot \(what) in the job store", cause: error as? SQLiteError)
        }
    }

    static var now: Double { Date().timeIntervalSince1970 }

    // MARK: - Submitting

    /// Adds queued jobs in one transaction: all land, or none.
    ///
    /// - Throws: `AirlockError` `.exists` when an id is taken.
    public func submit(_ jobs: [NewJob]) throws(AirlockError) {
        let now = Self.now
        do {
            try access("store the submitted jobs") { database in
                try database.transaction {
                    let insert = try database.prepare(
                        """
                        INSERT INTO jobs (id, batch, grp, priority, state, spec, vcpus, memory_mib, workload,
                            submitted, updated, max_attempts, results, want_host, want_label)
                        VALUES (?, ?, ?, ?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """)
                    let label = try database.prepare("INSERT INTO labels (job, key, value) VALUES (?, ?, ?)")
                    let transition = try database.prepare(
                        "INSERT INTO transitions (job, state, at) VALUES (?, 'queued', ?)")
                    for job in jobs {
                        // Jobs of a batch share their fairness group; a lone job is a group of its own.
                        let group = job.batch.map { "batch:\($0)" } ?? "job:\(job.id)"
                        try insert.run([
                            .text(job.id), job.batch.map { .text($0) } ?? .null, .text(group),
                            .integer(Int64(job.priority)), .text(job.spec), .integer(Int64(job.vcpus)),
                            .integer(Int64(job.memoryMiB)), job.workload.map { .text($0) } ?? .null, .real(now),
                            .real(now), .integer(Int64(job.maxAttempts)), .text(job.results),
                            job.host.map { .text($0) } ?? .null, job.hostLabel.map { .text($0) } ?? .null,
                        ])
                        for (key, value) in job.labels.sorted(by: { $0.key < $1.key }) {
                            try label.run([.text(job.id), .text(key), .text(value)])
                        }
                        try transition.run([.text(job.id), .real(now)])
                    }
                }
            }
        } catch let error where (error.cause as? SQLiteError)?.isConstraint == true {
            throw AirlockError(.exists, "a job with one of these ids is already in the store", cause: error.cause)
        }
    }

    // MARK: - Reading

    private static let columns = """
        j.id, j.batch, j.state, j.spec, j.priority, j.submitted, j.updated, j.attempts, j.max_attempts,
        j.vcpus, j.memory_mib, j.host, j.results, j.exit_code, j.reason, j.owner, j.cancel_requested
        """

    private static func record(_ row: [SQLiteValue], labels: [String: String]) -> Record {
        Record(
            id: row[0].text ?? "", batch: row[1].text, state: State(rawValue: row[2].text ?? "") ?? .lost,
            spec: row[3].text ?? "", labels: labels, priority: Int(row[4].integer ?? 0),
            submitted: Date(timeIntervalSince1970: row[5].real ?? 0),
            updated: Date(timeIntervalSince1970: row[6].real ?? 0), attempts: Int(row[7].integer ?? 0),
            maxAttempts: Int(row[8].integer ?? 1), vcpus: Int(row[9].integer ?? 1),
            memoryMiB: Int(row[10].integer ?? 0), host: row[11].text, results: row[12].text ?? "",
            exitCode: row[13].integer.map { Int32(truncatingIfNeeded: $0) }, reason: row[14].text,
            owner: row[15].text, cancelRequested: (row[16].integer ?? 0) != 0)
    }

    /// Parses the `key=value,key=value` list that `group_concat` builds.
    private static func labels(_ value: SQLiteValue) -> [String: String] {
        guard let text = value.text else { return [:] }
        var labels: [String: String] = [:]
        for pair in text.split(separator: "\u{1}") {
            let parts = pair.split(separator: "\u{2}", maxSplits: 1, omittingEmptySubsequences: false)
            if parts.count == 2 {
                labels[String(parts[0])] = String(parts[1])
            }
        }
        return labels
    }

    private static let labelsSQL =
        "(SELECT group_concat(key || char(2) || value, char(1)) FROM labels l WHERE l.job = j.id)"

    /// One job, or nil when the store has no such id.
    public func record(_ id: String) throws(AirlockError) -> Record? {
        try access("read job '\(id)'") { database in
            try database.prepare("SELECT \(Self.columns), \(Self.labelsSQL) FROM jobs j WHERE j.id = ?")
                .rows([.text(id)]).first.map { Self.record($0, labels: Self.labels($0[17])) }
        }
    }

    /// The full id of the one job whose id starts with `prefix`.
    ///
    /// - Throws: `AirlockError` `.notFound` when no job matches,
    ///   `.invalidArgument` when several do.
    public func resolve(_ prefix: String) throws(AirlockError) -> String {
        guard !prefix.isEmpty, prefix.allSatisfy({ $0.isHexDigit }) else {
            throw AirlockError(
                .invalidArgument, "'\(prefix)' is not a job id", hint: "job ids are hex digits; 'airlock ls' lists them"
            )
        }
        let matches = try access("look up job '\(prefix)'") { database in
            try database.prepare("SELECT id FROM jobs WHERE id >= ? AND id < ? ORDER BY id LIMIT 2")
                .rows([.text(prefix), .text(prefix + "\u{7f}")]).compactMap { $0[0].text }
        }
        guard let first = matches.first else {
            throw AirlockError(.notFound, "no job '\(prefix)' in the store", hint: "'airlock ls' lists the jobs")
        }
        guard matches.count == 1 else {
            throw AirlockError(.invalidArgument, "'\(prefix)' matches several jobs", hint: "give more of the id")
        }
        return first
    }

    /// What `list` selects.
    public struct Filter: Sendable {
        public var state: State?
        public var batch: String?
        public var label: (key: String, value: String)?

        public init(state: State? = nil, batch: String? = nil, label: (key: String, value: String)? = nil) {
            self.state = state
            self.batch = batch
            self.label = label
        }
    }

    /// Jobs matching every filter given, in submission order; with a
    /// `limit`, the most recent that many.
    public func list(_ filter: Filter = Filter(), limit: Int = .max) throws(AirlockError) -> [Record] {
        var sql = "SELECT \(Self.columns), \(Self.labelsSQL) FROM jobs j WHERE 1 = 1"
        var values: [SQLiteValue] = []
        if let state = filter.state {
            sql += " AND j.state = ?"
            values.append(.text(state.rawValue))
        }
        if let batch = filter.batch {
            sql += " AND j.batch = ?"
            values.append(.text(batch))
        }
        if let label = filter.label {
            sql += " AND j.id IN (SELECT job FROM labels WHERE key = ? AND value = ?)"
            values += [.text(label.key), .text(label.value)]
        }
        sql += " ORDER BY j.seq DESC LIMIT ?"
        values.append(.integer(Int64(min(limit, Int(Int64.max)))))
        return try access("list jobs") { database in
            try database.prepare(sql).rows(values).reversed().map { Self.record($0, labels: Self.labels($0[17])) }
        }
    }

    /// How many jobs of a batch (or of the whole store) are in each state.
    public func counts(batch: String? = nil) throws(AirlockError) -> [State: Int] {
        let rows = try access("count jobs") { database in
            if let batch {
                return try database.prepare("SELECT state, count(*) FROM jobs WHERE batch = ? GROUP BY state")
                    .rows([.text(batch)])
            }
            return try database.prepare("SELECT state, count(*) FROM jobs GROUP BY state").rows()
        }
        var counts: [State: Int] = [:]
        for row in rows {
            if let state = row[0].text.flatMap(State.init(rawValue:)) {
                counts[state] = Int(row[1].integer ?? 0)
            }
        }
        return counts
    }

    /// A job's transitions, in order.
    public func history(_ id: String) throws(AirlockError) -> [Transition] {
        try access("read the history of job '\(id)'") { database in
            try database.prepare("SELECT state, at, reason FROM transitions WHERE job = ? ORDER BY rowid")
                .rows([.text(id)]).compactMap { row in
                    guard let state = row[0].text.flatMap(State.init(rawValue:)), let at = row[1].real else {
                        return nil
                    }
                    return Transition(state: state, at: Date(timeIntervalSince1970: at), reason: row[2].text)
                }
        }
    }

    /// The ids of a batch's jobs, in submission order.
    public func jobs(inBatch batch: String) throws(AirlockError) -> [String] {
        try access("read batch '\(batch)'") { database in
            try database.prepare("SELECT id FROM jobs WHERE batch = ? ORDER BY seq").rows([.text(batch)])
                .compactMap { $0[0].text }
        }
    }

    /// The state of every job of a batch, in submission order.
    public func states(ofBatch batch: String) throws(AirlockError) -> [(id: String, state: State)] {
        try access("read batch '\(batch)'") { database in
            try database.prepare("SELECT id, state FROM jobs WHERE batch = ? ORDER BY seq").rows([.text(batch)])
                .compactMap { row in
                    guard let id = row[0].text, let state = row[1].text.flatMap(State.init(rawValue:)) else {
                        return nil
                    }
                    return (id, state)
                }
        }
    }

    // MARK: - Controllers

    /// A controller as it registered itself.
    public struct ControllerRecord: Sendable, Equatable {
        public var owner: String
        public var uri: String
        public var capacity: HostCapacity
        public var started: Date
    }

    /// Records a running controller and the capacity it schedules against,
    /// so that `submit` can refuse jobs that could never fit.
    public func register(controller owner: String, uri: String, capacity: HostCapacity) throws(AirlockError) {
        try access("register the controller") { database in
            try database.prepare(
                """
                INSERT OR REPLACE INTO controllers (owner, uri, concurrency, vcpus, memory_mib, started)
                VALUES (?, ?, ?, ?, ?, ?)
                """
            ).run([
                .text(owner), .text(uri), .integer(Int64(capacity.concurrency)), .integer(Int64(capacity.vcpus)),
                .integer(Int64(capacity.memoryMiB)), .real(Self.now),
            ])
        }
    }

    /// Removes a controller's record.
    public func unregister(controller owner: String) throws(AirlockError) {
        try access("unregister the controller") { database in
            try database.prepare("DELETE FROM controllers WHERE owner = ?").run([.text(owner)])
        }
    }

    /// Every registered controller, live or not.
    public func controllers() throws(AirlockError) -> [ControllerRecord] {
        try access("list controllers") { database in
            try database.prepare("SELECT owner, uri, concurrency, vcpus, memory_mib, started FROM controllers")
                .rows().map { row in
                    ControllerRecord(
                        owner: row[0].text ?? "", uri: row[1].text ?? "",
                        capacity: HostCapacity(
                            concurrency: Int(row[2].integer ?? 0), vcpus: Int(row[3].integer ?? 0),
                            memoryMiB: Int(row[4].integer ?? 0)),
                        started: Date(timeIntervalSince1970: row[5].real ?? 0))
                }
        }
    }
}
