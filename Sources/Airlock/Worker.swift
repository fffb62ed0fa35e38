import AirlockLog
import Foundation
import Synchronization

/// Runs one attempt of a stored job in this process, which the controller
/// started for it: takes the job over from the controller, runs it with
/// `JobRunner`, records each state change, and at the end either finishes
/// the job or, after an infrastructure failure with attempts left, puts it
/// back in the queue.
///
/// One process per running job: a crash while handling one hostile guest
/// cannot touch the others, and a controller that stops or dies leaves
/// running jobs to finish on their own.
public struct Worker: Sendable {
    public let queue: JobQueue
    /// The per-process settings every stored spec runs with: state folder,
    /// image catalog, libvirt URI.
    public let base: JobSpec
    public let logger: Logger

    public init(queue: JobQueue, base: JobSpec, logger: Logger) {
        self.queue = queue
        self.base = base
        self.logger = logger
    }

    /// Runs job `id`, which `claimant` claimed.
    ///
    /// - Parameters:
    ///   - id: The job.
    ///   - claimant: The token of the process that claimed it (the controller).
    ///   - started: Given the runner before it starts, so that the caller
    ///     can cancel it (on SIGTERM).
    /// - Throws: `AirlockError` when the store cannot be used.
    /// - Returns: The attempt's result, or nil when the job was not the
    ///   claimant's to hand over (another process took it meanwhile).
    public func run(
        id: String, claimedBy claimant: String, started: (JobRunner) -> Void = { _ in }
    ) throws(AirlockError) -> JobResult? {
        let me = ProcessToken.current
        guard let (claim, cancelRequested) = try queue.store.adopt(id, from: claimant, to: me) else {
            logger.info("the job was taken over by another process; not running it", metadata: ["job.id": id])
            return nil
        }
        // Derived, not read from the store: the store names no folder root removes.
        let results = queue.resultsFolder(of: id)
        // A previous attempt's partial results make way for this one.
        FileTree.removeIfPossible(results)

        if cancelRequested {
            var result = JobResult(jobID: id, state: .canceled, image: "", host: base.connectURI, startedAt: Date())
            result.error = "canceled before it started"
            result.attempt = claim.attempt
            JobResultFile.write(result, to: results)
            finish(result, claim: claim, owner: me)
            return result
        }

        var spec: JobSpec
        do throws(AirlockError) {
            spec = try StoredSpec.decode(claim.spec, job: id).spec(base: base)
            // The workload comes from the state folder's own copies, never from elsewhere.
            if let snapshot = spec.workloadSnapshot, !queue.isOwnSnapshot(snapshot.file) {
                throw AirlockError(
                    .internalError,
                    "the stored workload of job '\(id)' is not in '\(WorkloadSnapshot.folder(in: queue.stateFolder).path)'",
                    hint: "submit the job again")
            }
        } catch {
            let result = failure(error, claim: claim)
            JobResultFile.write(result, to: results)
            finish(result, claim: claim, owner: me)
            return result
        }
        spec.resultsFolder = results
        if spec.egress == .open {
            logger.warning(
                "job runs with open egress: its guest can reach any address, the host's loopback included",
                metadata: ["job.id": id])
        }

        let store = queue.store
        let logger = self.logger
        let lostOwnership = Mutex(false)
        let runner = JobRunner(
            spec: spec, jobID: id, logger: logger,
            onPhase: { phase in
                let state: JobStore.State = phase == .running ? .running : .collecting
                let held = (try? store.advance(id, to: state, owner: me)) ?? true
                if held {
                    JobEvents.log(logger, id, state, nil)
                } else {
                    lostOwnership.withLock { $0 = true }
                }
            })
        started(runner)

        // `airlock cancel` flags the job in the store; this watcher passes it on.
        let watching = Mutex(true)
        let watcher = Thread {
            while watching.withLock({ $0 }) {
                if (try? store.isCancelRequested(id)) == true || lostOwnership.withLock({ $0 }) {
                    runner.cancel()
                    return
                }
                Thread.sleep(forTimeInterval: 0.5)
            }
        }
        watcher.start()
        defer { watching.withLock { $0 = false } }

        var result: JobResult
        do throws(AirlockError) {
            result = try runner.run()
        } catch {
            result = failure(error, claim: claim)
        }
        result.attempt = claim.attempt

        let retry =
            result.isInfrastructureFailure(commandStarted: runner.commandStarted) && claim.attempt < claim.maxAttempts
            && (try? store.isCancelRequested(id)) != true
        if retry {
            let reason = "attempt \(claim.attempt) failed: \(result.reason ?? "infrastructure failure"); queued again"
            // The next attempt starts from an empty result folder.
            FileTree.removeIfPossible(results)
            switch try? store.requeue(id, owner: me, reason: reason, delay: Recovery.backOff(after: claim.attempt)) {
            case .queued:
                JobEvents.log(logger, id, .queued, reason)
            case .canceled:
                // A cancel came in between: the job ends here, with a result that says so.
                result.state = .canceled
                result.error = "canceled after attempt \(claim.attempt) failed"
                JobResultFile.write(result, to: results)
                JobEvents.log(logger, id, .canceled, result.error)
                queue.releaseWorkload(of: id)
            default:
                break
            }
            return result
        }
        JobResultFile.write(result, to: results)
        finish(result, claim: claim, owner: me)
        return result
    }

    /// A result for an attempt that failed before it made anything; the
    /// caller writes it, unless the attempt is retried.
    private func failure(_ error: AirlockError, claim: JobStore.Claim) -> JobResult {
        var result = JobResult(jobID: claim.id, state: .failed, image: "", host: base.connectURI, startedAt: Date())
        result.attempt = claim.attempt
        result.error = error.description
        result.errorCode = error.code.description
        result.hint = error.hint
        result.finishedAt = Date()
        return result
    }

    /// Records the job's end and lets go of its workload snapshot. The
    /// result folder is complete by now: the store is retried for up to ten
    /// minutes (a large submit may hold it), since a job whose end is not
    /// recorded is taken for one whose worker died, and run again.
    private func finish(_ result: JobResult, claim: JobStore.Claim, owner: String) {
        let state = JobStore.State(rawValue: result.state.rawValue) ?? .failed
        let deadline = ContinuousClock.now + .seconds(600)
        var pause = 0.25
        while true {
            do {
                if try queue.store.advance(
                    claim.id, to: state, owner: owner, reason: result.reason, exitCode: result.exitCode)
                {
                    JobEvents.log(logger, claim.id, state, result.reason)
                }
                break
            } catch {
                guard ContinuousClock.now < deadline else {
                    logger.error("cannot record the end of a job", metadata: ["job.id": claim.id, "error": "\(error)"])
                    break
                }
                logger.warning(
                    "cannot record the end of a job yet; trying again",
                    metadata: ["job.id": claim.id, "error": "\(error)"])
                Thread.sleep(forTimeInterval: pause)
                pause = min(pause * 2, 5)
            }
        }
        queue.releaseWorkload(of: claim.id)
    }
}
