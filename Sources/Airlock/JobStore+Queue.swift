import Foundation
import SQLite

// MARK: - The queue: claiming, owning, finishing and cancelling jobs

extension JobStore {
    /// A job a process now owns, with what it needs to run it.
    public struct Claim: Sendable, Equatable {
        public var id: String
        public var spec: String
        /// 1 for the first attempt.
        public var attempt: Int
        public var maxAttempts: Int
    }

    /// What `claimNext` found.
    public enum ClaimOutcome: Sendable, Equatable {
        /// The job is now owned by the caller, in state `starting`.
        case claimed(Claim)
        /// No job is ready to run (the queue is empty or waiting on back-off).
        case idle
        /// Jobs are ready, but the next one does not fit until others end.
        case full
        /// The next job asks for more than the whole capacity: it can never run
        /// on this host.
        case neverFits(id: String, vcpus: Int, memoryMiB: Int)
    }

    /// Picks the next job and hands it to `owner`, atomically with respect
    /// to every other process using the store.
    ///
    /// Order: the highest priority first; within it, the job whose group (its
    /// batch, or the lone job itself) has the fewest jobs live, so that one
    /// big batch cannot hold back a job submitted after it; then submission
    /// order. The chosen job must fit beside the live ones: at most
    /// `capacity.concurrency` jobs, and their vCPUs and memory within
    /// `capacity`. A job that does not fit now waits (and holds back the ones
    /// behind it, so that big jobs are not starved by small ones).
    /// With `leavingTooBig`, jobs bigger than the whole capacity are passed
    /// over, left for a controller with more room, instead of reported.
    ///
    /// Only jobs that `named` host may run are candidates: a job asking for
    /// a host by name or label runs only where they match.
    public func claimNext(
        owner: String, host: String, capacity: HostCapacity, leavingTooBig: Bool = false,
        named: (name: String, labels: [String: String]) = ("local", [:])
    ) throws(AirlockError) -> ClaimOutcome {
        let now = Self.now
        return try access("claim a job") { database in
            try database.transaction { () throws -> ClaimOutcome in
                // What runs on this host; other hosts' jobs use other capacity.
                let live = try database.prepare(
                    """
                    SELECT grp, count(*), sum(vcpus), sum(memory_mib) FROM jobs
                    WHERE state IN \(State.liveSQL) AND host = ? GROUP BY grp
                    """
                ).rows([.text(host)])
                let liveCount = live.reduce(0) { $0 + Int($1[1].integer ?? 0) }
                let usedVCPUs = live.reduce(0) { $0 + Int($1[2].integer ?? 0) }
                let usedMemory = live.reduce(0) { $0 + Int($1[3].integer ?? 0) }
                // Jobs left to controllers with more room, or asking for another host, are not candidates here.
                let labels = named.labels.map { "\($0.key)=\($0.value)" }.sorted()
                let labelSlots = labels.map { _ in "?" }.joined(separator: ", ")
                var notLeft =
                    " AND (want_host IS NULL OR want_host = ?) AND (want_label IS NULL"
                    + (labels.isEmpty ? ")" : " OR want_label IN (\(labelSlots)))")
                var left: [SQLiteValue] = [.text(named.name)] + labels.map { .text($0) }
                if leavingTooBig {
                    notLeft += " AND vcpus <= ? AND memory_mib <= ?"
                    left += [.integer(Int64(capacity.vcpus)), .integer(Int64(capacity.memoryMiB))]
                }
                guard
                    let top = try database.prepare(
                        "SELECT max(priority) FROM jobs WHERE state = 'queued' AND not_before <= ?" + notLeft
                    ).rows([.real(now)] + left).first?.first?.integer
                else { return .idle }
                guard liveCount < capacity.concurrency else { return .full }

                let select =
                    "SELECT seq, id, vcpus, memory_mib FROM jobs WHERE state = 'queued' AND priority = ? AND not_before <= ?"
                    + notLeft
                // A group with nothing live goes first, oldest head first.
                let liveGroups = live.compactMap { $0[0].text }
                let placeholders = liveGroups.map { _ in "?" }.joined(separator: ", ")
                var candidate = try database.prepare(
                    select + (liveGroups.isEmpty ? "" : " AND grp NOT IN (\(placeholders))") + " ORDER BY seq LIMIT 1"
                ).rows([.integer(top), .real(now)] + left + liveGroups.map { .text($0) }).first
                // Otherwise the group with the fewest live jobs.
                if candidate == nil {
                    let byLoad = live.sorted { ($0[1].integer ?? 0) < ($1[1].integer ?? 0) }.compactMap { $0[0].text }
                    let statement = try database.prepare(select + " AND grp = ? ORDER BY seq LIMIT 1")
                    for group in byLoad {
                        if let row = try statement.rows([.integer(top), .real(now)] + left + [.text(group)]).first {
                            candidate = row
                            break
                        }
                    }
                }
                guard let candidate, let seq = candidate[0].integer, let id = candidate[1].text else { return .idle }
                let vcpus = Int(candidate[2].integer ?? 1)
                let memory = Int(candidate[3].integer ?? 0)
                guard vcpus <= capacity.vcpus, memory <= capacity.memoryMiB else {
                    return .neverFits(id: id, vcpus: vcpus, memoryMiB: memory)
                }
                guard usedVCPUs + vcpus <= capacity.vcpus, usedMemory + memory <= capacity.memoryMiB else {
                    return .full
                }

                try database.prepare(
                    """
                    UPDATE jobs SET state = 'starting', owner = ?, host = ?, attempts = attempts + 1, updated = ?
                    WHERE seq = ? AND state = 'queued'
                    """
                ).run([.text(owner), .text(host), .real(now), .integer(seq)])
                let row = try database.prepare("SELECT spec, attempts, max_attempts FROM jobs WHERE seq = ?")
                    .rows([.integer(seq)])[0]
                let attempt = Int(row[1].integer ?? 1)
                try Self.recordTransition(database, id, .starting, now, "attempt \(attempt) on \(host)")
                return .claimed(
                    Claim(
                        id: id, spec: row[0].text ?? "", attempt: attempt, maxAttempts: Int(row[2].integer ?? 1)))
            }
        }
    }

    /// Hands a starting job from the process that claimed it to the one
    /// that will run it.
    ///
    /// - Returns: The claim, and whether a cancel was asked for meanwhile;
    ///   nil when `from` no longer owns the job.
    public func adopt(_ id: String, from: String, to: String) throws(AirlockError) -> (Claim, cancelRequested: Bool)? {
        try access("take over job '\(id)'") { database in
            try database.transaction { () throws -> (Claim, cancelRequested: Bool)? in
                try database.prepare(
                    "UPDATE jobs SET owner = ?, updated = ? WHERE id = ? AND owner = ? AND state = 'starting'"
                ).run([.text(to), .real(Self.now), .text(id), .text(from)])
                guard database.changes == 1 else { return nil }
                let row = try database.prepare(
                    "SELECT spec, attempts, max_attempts, cancel_requested FROM jobs WHERE id = ?"
                ).rows([.text(id)])[0]
                let claim = Claim(
                    id: id, spec: row[0].text ?? "", attempt: Int(row[1].integer ?? 1),
                    maxAttempts: Int(row[2].integer ?? 1))
                return (claim, (row[3].integer ?? 0) != 0)
            }
        }
    }

    /// Makes `to` the owner of a live job that `from` holds: how a process
    /// takes over the job of one that died, before cleaning up after it.
    ///
    /// - Returns: false when `from` no longer holds the job.
    public func takeOver(_ id: String, from: String, to: String) throws(AirlockError) -> Bool {
        try access("take over job '\(id)'") { database in
            try database.prepare(
                "UPDATE jobs SET owner = ?, updated = ? WHERE id = ? AND owner = ? AND state IN \(State.liveSQL)"
            ).run([.text(to), .real(Self.now), .text(id), .text(from)])
            return database.changes == 1
        }
    }

    /// Moves a live job that `owner` holds to `state`. A terminal state
    /// releases the job.
    ///
    /// - Returns: false when `owner` no longer holds the job, which then stays as it is.
    @discardableResult
    public func advance(
        _ id: String, to state: State, owner: String, reason: String? = nil, exitCode: Int32? = nil
    ) throws(AirlockError) -> Bool {
        let now = Self.now
        return try access("update job '\(id)'") { database in
            try database.transaction { () throws -> Bool in
                try database.prepare(
                    """
                    UPDATE jobs SET state = ?, owner = CASE WHEN ? THEN NULL ELSE owner END, updated = ?,
                        exit_code = ?, reason = ?
                    WHERE id = ? AND owner = ? AND state IN \(State.liveSQL)
                    """
                ).run([
                    .text(state.rawValue), .integer(state.isTerminal ? 1 : 0), .real(now),
                    exitCode.map { .integer(Int64($0)) } ?? .null, reason.map { .text($0) } ?? .null, .text(id),
                    .text(owner),
                ])
                guard database.changes == 1 else { return false }
                try Self.recordTransition(database, id, state, now, reason)
                return true
            }
        }
    }

    /// Puts a live job that `owner` holds back in the queue, to be tried
    /// again no earlier than `delay` from now; or, when a cancel was asked
    /// for meanwhile, ends it as canceled.
    ///
    /// - Returns: `.queued` or `.canceled`; nil when `owner` no longer holds the job.
    @discardableResult
    public func requeue(_ id: String, owner: String, reason: String, delay: Duration) throws(AirlockError) -> State? {
        let now = Self.now
        let notBefore = now + delay.inSeconds
        return try access("requeue job '\(id)'") { database in
            try database.transaction { () throws -> State? in
                let held = try database.prepare(
                    "SELECT cancel_requested FROM jobs WHERE id = ? AND owner = ? AND state IN \(State.liveSQL)"
                ).rows([.text(id), .text(owner)])
                guard let row = held.first else { return nil }
                if row[0].integer == 1 {
                    let why = "canceled; " + reason
                    try database.prepare(
                        "UPDATE jobs SET state = 'canceled', owner = NULL, updated = ?, reason = ? WHERE id = ?"
                    ).run([.real(now), .text(why), .text(id)])
                    try Self.recordTransition(database, id, .canceled, now, why)
                    return .canceled
                }
                try database.prepare(
                    "UPDATE jobs SET state = 'queued', owner = NULL, not_before = ?, updated = ?, reason = ? WHERE id = ?"
                ).run([.real(notBefore), .real(now), .text(reason), .text(id)])
                try Self.recordTransition(database, id, .queued, now, reason)
                return .queued
            }
        }
    }

    /// Queued jobs that ask for more vCPUs or memory than `vcpus` and `memoryMiB`.
    public func queuedLargerThan(vcpus: Int, memoryMiB: Int) throws(AirlockError) -> [(
        id: String, vcpus: Int, memoryMiB: Int
    )] {
        try access("find jobs too big for every host") { database in
            try database.prepare(
                "SELECT id, vcpus, memory_mib FROM jobs WHERE state = 'queued' AND (vcpus > ? OR memory_mib > ?)"
            ).rows([.integer(Int64(vcpus)), .integer(Int64(memoryMiB))]).map {
                ($0[0].text ?? "", Int($0[1].integer ?? 0), Int($0[2].integer ?? 0))
            }
        }
    }

    /// Ends a job that can never run (it is queued and asks for more than the
    /// host has).
    public func reject(_ id: String, reason: String) throws(AirlockError) {
        let now = Self.now
        try access("reject job '\(id)'") { database in
            try database.transaction {
                try database.prepare(
                    "UPDATE jobs SET state = 'failed', updated = ?, reason = ? WHERE id = ? AND state = 'queued'"
                ).run([.real(now), .text(reason), .text(id)])
                if database.changes == 1 {
                    try Self.recordTransition(database, id, .failed, now, reason)
                }
            }
        }
    }

    /// Deletes finished jobs with their labels and history, all or none:
    /// when any of `ids` is unknown or not over, nothing is deleted.
    ///
    /// - Returns: The workload snapshots the jobs used, for the caller to release.
    /// - Throws: `AirlockError` `.invalidArgument` naming the first job that is not over.
    public func remove(_ ids: [String]) throws(AirlockError) -> [String] {
        try access("remove jobs") { database in
            try database.transaction { () throws -> [String] in
                var workloads: Set<String> = []
                let lookup = try database.prepare("SELECT state, workload FROM jobs WHERE id = ?")
                for id in ids {
                    guard let row = try lookup.rows([.text(id)]).first else {
                        throw AirlockError(.notFound, "no job '\(id)' in the store")
                    }
                    let state = State(rawValue: row[0].text ?? "") ?? .queued
                    guard state.isTerminal else {
                        throw AirlockError(
                            .invalidArgument, "job '\(id)' is \(state.rawValue), not finished; nothing was removed",
                            hint: "cancel it first ('airlock cancel \(id)'), or wait for it to end")
                    }
                    if let file = row[1].text { workloads.insert(file) }
                }
                for table in ["labels", "transitions"] {
                    let statement = try database.prepare("DELETE FROM \(table) WHERE job = ?")
                    for id in ids { try statement.run([.text(id)]) }
                }
                let jobs = try database.prepare("DELETE FROM jobs WHERE id = ?")
                for id in ids { try jobs.run([.text(id)]) }
                return workloads.sorted()
            }
        }
    }

    /// What a cancel request found.
    public enum CancelOutcome: Sendable, Equatable {
        /// The job was queued and is now canceled.
        case canceled
        /// The job is live; its owner was asked to stop (and must be told).
        case requested(owner: String?)
        /// The job was already over.
        case finished(State)
    }

    /// Cancels a queued job at once, or flags a live one for its owner.
    public func requestCancel(_ id: String) throws(AirlockError) -> CancelOutcome {
        let now = Self.now
        return try access("cancel job '\(id)'") { database in
            try database.transaction { () throws -> CancelOutcome in
                guard
                    let row = try database.prepare("SELECT state, owner FROM jobs WHERE id = ?").rows([.text(id)])
                        .first, let state = row[0].text.flatMap(State.init(rawValue:))
                else {
                    throw AirlockError(.notFound, "no job '\(id)' in the store")
                }
                switch state {
                case .queued:
                    try database.prepare(
                        "UPDATE jobs SET state = 'canceled', updated = ?, reason = ? WHERE id = ?"
                    ).run([.real(now), .text("canceled before it started"), .text(id)])
                    try Self.recordTransition(database, id, .canceled, now, "canceled before it started")
                    return .canceled
                case .starting, .running, .collecting:
                    try database.prepare("UPDATE jobs SET cancel_requested = 1 WHERE id = ?").run([.text(id)])
                    return .requested(owner: row[1].text)
                default:
                    return .finished(state)
                }
            }
        }
    }

    /// Whether a cancel was asked for on a job.
    public func isCancelRequested(_ id: String) throws(AirlockError) -> Bool {
        try access("read job '\(id)'") { database in
            try database.prepare("SELECT cancel_requested FROM jobs WHERE id = ?").rows([.text(id)]).first?.first?
                .integer == 1
        }
    }

    /// A job that a process holds.
    public struct LiveJob: Sendable, Equatable {
        public var id: String
        public var state: State
        public var owner: String
        public var attempts: Int
        public var maxAttempts: Int
        public var cancelRequested: Bool
    }

    /// Every job in state starting, running or collecting.
    public func liveJobs() throws(AirlockError) -> [LiveJob] {
        try access("list live jobs") { database in
            try database.prepare(
                """
                SELECT id, state, owner, attempts, max_attempts, cancel_requested
                FROM jobs WHERE state IN \(State.liveSQL) ORDER BY seq
                """
            ).rows().map { row in
                LiveJob(
                    id: row[0].text ?? "", state: row[1].text.flatMap(State.init(rawValue:)) ?? .running,
                    owner: row[2].text ?? "", attempts: Int(row[3].integer ?? 0),
                    maxAttempts: Int(row[4].integer ?? 1), cancelRequested: (row[5].integer ?? 0) != 0)
            }
        }
    }

    /// Whether any job that is not over uses the workload snapshot `file`.
    public func isWorkloadInUse(_ file: String) throws(AirlockError) -> Bool {
        try access("look up a workload") { database in
            !(try database.prepare(
                "SELECT 1 FROM jobs WHERE workload = ? AND state NOT IN \(State.terminalSQL) LIMIT 1"
            ).rows([.text(file)]).isEmpty)
        }
    }

    /// The workload snapshot of a job, if it has one.
    public func workload(of id: String) throws(AirlockError) -> String? {
        try access("read job '\(id)'") { database in
            try database.prepare("SELECT workload FROM jobs WHERE id = ?").rows([.text(id)]).first?.first?.text
        }
    }

    static func recordTransition(
        _ database: Database, _ id: String, _ state: State, _ at: Double, _ reason: String?
    ) throws {
        try database.prepare("INSERT INTO transitions (job, state, at, reason) VALUES (?, ?, ?, ?)").run([
            .text(id), .text(state.rawValue), .real(at), reason.map { .text($0) } ?? .null,
        ])
    }
}
