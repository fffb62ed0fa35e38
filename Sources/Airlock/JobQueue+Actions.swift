import AirlockLog
import Foundation

// MARK: - Cancelling, waiting and copying out

extension JobQueue {
    /// How a cancel ended.
    public enum CancelResult: Sendable, Equatable {
        /// The job is canceled, and its guest (if it had one) is gone.
        case canceled
        /// The job was over before the cancel took effect.
        case alreadyOver(JobStore.State)
        /// The job's process was asked to stop and has not finished within the wait.
        case stillStopping
    }

    /// Cancels a job: a queued one at once; a live one by asking its worker
    /// to stop (it destroys the guest, then records `canceled`), or, when
    /// its process is dead, by settling it here.
    ///
    /// - Parameters:
    ///   - id: The job.
    ///   - logger: Receives the state change.
    ///   - wait: How long to wait for a live job to end.
    /// - Returns: Whether the job is canceled, was over, or is still stopping.
    /// - Throws: `AirlockError` `.notFound` for an unknown job.
    public func cancel(_ id: String, logger: Logger, wait: Duration = .seconds(60)) throws(AirlockError) -> CancelResult
    {
        switch try store.requestCancel(id) {
        case .canceled:
            var result = JobResult(jobID: id, state: .canceled, image: "", host: "", startedAt: Date())
            result.error = "canceled before it started"
            result.finishedAt = Date()
            JobResultFile.write(result, to: resultsFolder(of: id))
            releaseWorkload(of: id)
            JobEvents.log(logger, id, .canceled, result.error)
            return .canceled
        case .finished(let state):
            return .alreadyOver(state)
        case .requested:
            let deadline = ContinuousClock.now + wait
            while ContinuousClock.now < deadline {
                guard let record = try store.record(id) else { break }
                if record.state.isTerminal {
                    return record.state == .canceled ? .canceled : .alreadyOver(record.state)
                }
                if let owner = record.owner, !ProcessToken.isAlive(owner) {
                    _ = try Recovery(queue: self, logger: logger).run(only: id)
                    continue
                }
                Thread.sleep(forTimeInterval: 0.2)
            }
            return .stillStopping
        }
    }

    /// Copies a finished job's result folder to `destination`/`id`.
    ///
    /// A destination that already holds this job's identical `result.json`
    /// counts as done; any other existing destination is an error.
    ///
    /// - Returns: The folder written, and whether it was already there.
    /// - Throws: `AirlockError` `.invalidState` for an unfinished job,
    ///   `.exists` for a destination in the way, `.internalError` when copying fails.
    public func copyResults(of id: String, to destination: URL) throws(AirlockError) -> (folder: URL, fresh: Bool) {
        guard let record = try store.record(id) else {
            throw AirlockError(.notFound, "no job '\(id)' in the store")
        }
        guard record.state.isTerminal else {
            throw AirlockError(
                .invalidState, "job '\(id)' is \(record.state.rawValue), not finished",
                hint: "wait for it with 'airlock collect \(id) --wait'")
        }
        let source = resultsFolder(of: id)
        let target = destination.appendingPathComponent(id)
        let sourceResult = FileManager.default.contents(atPath: source.appendingPathComponent(JobResultFile.name).path)
        if FileManager.default.fileExists(atPath: target.path) {
            let existing = FileManager.default.contents(atPath: target.appendingPathComponent(JobResultFile.name).path)
            if let existing, existing == sourceResult {
                return (target, false)
            }
            throw AirlockError(
                .exists, "'\(target.path)' already exists and holds other results",
                hint: "move it away, or collect into another folder with --out")
        }
        do {
            try FileManager.default.createDirectory(at: destination, withIntermediateDirectories: true)
        } catch {
            throw AirlockError(.invalidArgument, "cannot create '\(destination.path)'", cause: POSIXFailure())
        }
        let partial = destination.appendingPathComponent(".\(id).partial-\(getpid())")
        do throws(AirlockError) {
            // Half copies of this job that an interrupted collect left.
            let stale = ".\(id).partial-"
            for name in (try? FileManager.default.contentsOfDirectory(atPath: destination.path)) ?? []
            where name.hasPrefix(stale) {
                FileTree.removeIfPossible(destination.appendingPathComponent(name))
            }
            if FileManager.default.fileExists(atPath: source.path) {
                try ResultCopy.copyFolder(source, to: partial)
            } else {
                // A job that ended before it had a result folder still gets one saying so.
                var result = JobResult(
                    jobID: id, state: .failed, image: "", host: record.host ?? "", startedAt: record.submitted)
                result.state = JobResult.State(rawValue: record.state.rawValue) ?? .failed
                result.error = record.reason
                JobResultFile.write(result, to: partial)
            }
            guard rename(partial.path, target.path) == 0 else {
                throw AirlockError(.internalError, "cannot move results into '\(target.path)'", cause: POSIXFailure())
            }
        } catch {
            FileTree.removeIfPossible(partial)
            throw error
        }
        return (target, true)
    }

    /// Removes finished jobs from the store and their result folders from
    /// the state folder, all or none (see `JobStore.remove`).
    public func remove(_ ids: [String]) throws(AirlockError) {
        // The folders go first: a job whose folder cannot be removed stays in
        // the store, to be removed again. A finished job stays finished.
        for id in ids {
            guard let record = try store.record(id) else {
                throw AirlockError(.notFound, "no job '\(id)' in the store")
            }
            guard record.state.isTerminal else {
                throw AirlockError(
                    .invalidArgument, "job '\(id)' is \(record.state.rawValue), not finished; nothing was removed",
                    hint: "cancel it first ('airlock cancel \(id)'), or wait for it to end")
            }
        }
        for id in ids {
            try FileTree.remove(resultsFolder(of: id))
        }
        for file in try store.remove(ids) where isOwnSnapshot(file) && (try? store.isWorkloadInUse(file)) == false {
            unlink(file)
        }
    }
}
