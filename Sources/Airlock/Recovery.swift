import AirlockLog
import Foundation
import Libvirt

/// Settles the jobs whose owning process died: a worker killed mid-job, a
/// controller that claimed a job and crashed before handing it over.
///
/// For each live job whose owner no longer runs, Recovery first takes the
/// job over in the store (so that no other process acts on it at the same
/// time), destroys its guest and removes its files, and then puts it back
/// in the queue if attempts are left, or ends it: `canceled` if a cancel
/// was asked for, else `lost`. A job whose guest cannot be destroyed (libvirt
/// is not answering) is left for the next pass, so nothing leaks.
///
/// The controller runs a pass on every tick; `airlock gc` and `airlock
/// cancel` run one too.
public struct Recovery: Sendable {
    public let queue: JobQueue
    public let logger: Logger
    /// Says how an owner ended, when the caller knows (a reaped child's exit status).
    let describeOwner: @Sendable (String) -> String?

    public init(queue: JobQueue, logger: Logger, describeOwner: @escaping @Sendable (String) -> String? = { _ in nil })
    {
        self.queue = queue
        self.logger = logger
        self.describeOwner = describeOwner
    }

    /// What one pass did.
    public struct Report: Sendable, Equatable {
        /// Jobs put back in the queue.
        public var requeued: [String] = []
        /// Jobs ended as lost or canceled.
        public var ended: [String] = []
        /// Guests destroyed.
        public var domains: [String] = []
        /// Jobs left for later because their guest could not be destroyed.
        public var deferred: [String] = []
    }

    /// Settles every live job whose owner is gone.
    ///
    /// - Parameter only: Settle just this job (when it is orphaned).
    /// - Returns: What was requeued, ended, destroyed and left for later.
    /// - Throws: `AirlockError` when the store cannot be read.
    public func run(only: String? = nil) throws(AirlockError) -> Report {
        var report = Report()
        let me = ProcessToken.current
        for job in try queue.store.liveJobs() where only == nil || job.id == only {
            guard !ProcessToken.isAlive(job.owner) else { continue }
            guard try queue.store.takeOver(job.id, from: job.owner, to: me) else { continue }
            settle(job, owner: me, report: &report)
        }
        return report
    }

    private func settle(_ job: JobStore.LiveJob, owner me: String, report: inout Report) {
        let how = describeOwner(job.owner) ?? "died"
        let domainName = "airlock-\(job.id)"
        let host = (try? queue.store.record(job.id))?.host ?? "qemu:///system"

        // 1. The guest: without it gone, the job is not settled. A remote host
        // that cannot be reached at all is left: its guest powers itself off
        // at the end of its lifetime, and gc removes its files once the host answers.
        let remote = (try? RemoteHost.parse(host)) != nil
        if remote, (try? HostProbe.reachable(host)) == nil {
            logger.warning(
                "the host of a job whose process died does not answer; settling the job without it",
                metadata: ["job.id": job.id, "host.uri": host])
        } else {
            do {
                let connection = try Connection(uri: host)
                defer { connection.close() }
                if let domain = try connection.domain(named: domainName) {
                    try domain.destroy()
                    report.domains.append(domainName)
                    logger.debug("destroyed the guest of a dead job", metadata: ["domain.name": domainName])
                }
            } catch {
                // Hand the job back to the dead owner's token, so the next pass tries again.
                _ = try? queue.store.takeOver(job.id, from: me, to: job.owner)
                report.deferred.append(job.id)
                logger.warning(
                    "cannot destroy the guest of a job whose process died; will try again",
                    metadata: ["job.id": job.id, "domain.name": domainName, "host.uri": host, "error": "\(error)"])
                return
            }
        }

        // 2. Its files: the run folder (keys), and the partial results.
        let runFolder = JobOwner.runFolder(in: queue.stateFolder).appendingPathComponent(job.id)
        if remote {
            // Removed now if the host answers; else the folder stays, naming them for gc.
            let removed = (try? Connection(uri: host)).map {
                RemoteStorage(connection: $0, stateFolder: queue.stateFolder).removeJobVolumes(job.id)
            }
            if removed == true {
                try? FileManager.default.removeItem(at: runFolder)
            }
        } else if case .failed(let overlay) = JobOwner.removeOverlay(
            in: runFolder, connection: try? Connection(uri: host))
        {
            // The folder keeps naming it, so that gc removes it later.
            logger.warning(
                "cannot remove the disk overlay of a job whose process died; gc will",
                metadata: ["job.id": job.id, "disk.path": overlay])
        } else {
            try? FileManager.default.removeItem(at: runFolder)
        }
        FileTree.removeIfPossible(queue.resultsFolder(of: job.id))

        // 3. Again, or the end.
        let reason = "the process running attempt \(job.attempts) \(how) while the job was \(job.state.rawValue)"
        do {
            if job.cancelRequested {
                try end(job, as: .canceled, reason: "canceled; " + reason, owner: me)
                report.ended.append(job.id)
            } else if job.attempts < job.maxAttempts {
                let state = try queue.store.requeue(
                    job.id, owner: me, reason: reason + "; queued again", delay: Self.backOff(after: job.attempts))
                if state == .canceled {
                    // Canceled since it was read: the store has ended it; its result says so.
                    writeResult(job, as: .canceled, reason: "canceled; " + reason)
                    JobEvents.log(logger, job.id, .canceled, "canceled; " + reason)
                    queue.releaseWorkload(of: job.id)
                    report.ended.append(job.id)
                } else {
                    report.requeued.append(job.id)
                    JobEvents.log(logger, job.id, .queued, reason + "; queued again")
                }
            } else {
                try end(job, as: .lost, reason: reason, owner: me)
                report.ended.append(job.id)
            }
        } catch {
            logger.warning("cannot settle a job whose process died", metadata: ["job.id": job.id, "error": "\(error)"])
        }
    }

    private func writeResult(_ job: JobStore.LiveJob, as state: JobResult.State, reason: String) {
        var result = JobResult(jobID: job.id, state: state, image: "", host: "", startedAt: Date())
        result.attempt = job.attempts
        result.error = reason
        result.finishedAt = Date()
        JobResultFile.write(result, to: queue.resultsFolder(of: job.id))
    }

    private func end(_ job: JobStore.LiveJob, as state: JobResult.State, reason: String, owner: String)
        throws(AirlockError)
    {
        writeResult(job, as: state, reason: reason)
        if try queue.store.advance(
            job.id, to: JobStore.State(rawValue: state.rawValue) ?? .lost, owner: owner, reason: reason)
        {
            JobEvents.log(logger, job.id, JobStore.State(rawValue: state.rawValue) ?? .lost, reason)
            queue.releaseWorkload(of: job.id)
        }
    }

    /// How long a job waits before its next attempt: 2 s, then 4 s, 8 s, ... at most a minute.
    public static func backOff(after attempt: Int) -> Duration {
        .seconds(min(60, 2 << min(max(attempt - 1, 0), 5)))
    }
}

/// The one log line per job state change that the controller and its
/// workers write.
enum JobEvents {
    static func log(_ logger: Logger, _ id: String, _ state: JobStore.State, _ reason: String?) {
        var metadata = ["job.id": id, "job.state": state.rawValue]
        metadata["reason"] = reason
        logger.notice("job state changed", metadata: metadata)
    }
}
