import Airlock
import AirlockLog
import Foundation
import Synchronization

/// `airlock collect`: copies finished results out of the state folder.
struct CollectCommand {
    static let usage = "airlock collect JOB_ID|--batch ID [--wait] [--out DIR] [--state-dir DIR]"

    static let help = """
        Copy the result folders of finished jobs to OUT/JOB_ID, and with --wait
        wait until every job named has finished. While waiting on a terminal, a
        progress line shows done, running, queued and failed jobs, the time taken
        and an estimate of the time left; otherwise one line per finished job.
        Collecting again is harmless: results already there are left as they are.

        Usage: \(usage)

        Options:
          --batch ID        every job of a batch
          --wait            wait for unfinished jobs, copying each as it ends
          --out DIR         where result folders go (default: airlock-results)
          --state-dir DIR   Airlock's state (default: $AIRLOCK_STATE_DIR or /var/lib/airlock)

        Exit status: for one job, what 'airlock run' would have returned for it;
        for a batch, 0 if every job succeeded and 1 otherwise; 75 when jobs are
        not finished and --wait was not given; 130 when interrupted (folders
        already copied stay, the one being copied is finished first).
        """

    var id: String?
    var batch: String?
    var wait = false
    var out = URL(fileURLWithPath: "airlock-results")
    var stateFolder: URL

    static func parse(_ arguments: [String], environment: [String: String]) throws(UsageError) -> CollectCommand {
        var command = CollectCommand(stateFolder: Defaults.stateFolder(environment))
        var reader = ArgumentReader(arguments)
        while let option = reader.next() {
            guard let name = option.name else {
                try ArgumentReader.single(option.word, into: &command.id)
                continue
            }
            switch name {
            case "--batch": command.batch = try reader.value(for: name, inline: option.inline)
            case "--wait": command.wait = true
            case "--out": command.out = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            case "--state-dir":
                command.stateFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            default: throw UsageError("unknown option '\(name)'", hint: "see 'airlock collect --help'")
            }
        }
        guard (command.id == nil) != (command.batch == nil) else {
            throw UsageError("name one job id or one --batch", hint: "'airlock ls' lists jobs and their batches")
        }
        return command
    }

    func run(signals: SignalRelay) throws(AirlockError) -> Int32 {
        let queue = try JobQueue(stateFolder: stateFolder)
        let ids: [String]
        if let batch {
            ids = try queue.batch(batch)
        } else {
            ids = [try queue.store.resolve(id ?? "")]
        }
        // A copy in progress is finished first. A second signal leaves at
        // once; the half copy it leaves is hidden (.ID.partial-PID) and
        // removed by the next collect of that job.
        let interrupted = Mutex(false)
        let out = self.out
        signals.onFirst = {
            Output.note("airlock: stopping after the copy in progress (interrupt again to leave at once)")
            interrupted.withLock { $0 = true }
        }
        signals.onSecond = {
            Output.note("airlock: a half-copied folder may be left in '\(out.path)'; collecting again removes it")
        }

        var pending = ids
        var copied: [String: JobStore.Record] = [:]
        var failures: [String] = []
        let progress = Progress(total: ids.count, live: batch != nil && isatty(STDERR_FILENO) == 1)
        while true {
            var still: [String] = []
            for jobID in pending {
                if interrupted.withLock({ $0 }) {
                    progress.end()
                    return ExitCode.canceled
                }
                guard let record = try queue.store.record(jobID) else { continue }
                guard record.state.isTerminal else {
                    still.append(jobID)
                    continue
                }
                do {
                    let (folder, _) = try queue.copyResults(of: jobID, to: out)
                    copied[jobID] = record
                    progress.finished(record, folder: folder.relativePath)
                } catch {
                    failures.append("job '\(jobID)': \(error.description)")
                    copied[jobID] = record
                }
            }
            pending = still
            if pending.isEmpty || !wait { break }
            if let batch {
                progress.show(counts: try queue.store.counts(batch: batch))
            }
            for _ in 0..<5 where !interrupted.withLock({ $0 }) {
                Thread.sleep(forTimeInterval: 0.1)
            }
            if interrupted.withLock({ $0 }) {
                progress.end()
                return ExitCode.canceled
            }
        }
        progress.end()

        if !failures.isEmpty {
            throw AirlockError(
                .internalError,
                "could not collect \(failures.count) of \(ids.count) jobs:\n" + failures.joined(separator: "\n"))
        }
        if !pending.isEmpty {
            Output.note(
                "airlock: \(pending.count) of \(ids.count) jobs are not finished; "
                    + "collect again later, or wait with --wait")
            return ExitCode.tryLater
        }
        if batch == nil, let jobID = ids.first {
            return queue.result(of: jobID)?.processExitCode ?? ExitCode.jobFailed
        }
        return copied.values.allSatisfy { $0.state == .succeeded } ? 0 : 1
    }
}

/// The progress of a wait: a line rewritten in place on a terminal, a line
/// per finished job otherwise.
final class Progress {
    private let total: Int
    private let live: Bool
    private let started = ContinuousClock.now
    private var done = 0
    private var failed = 0
    private var doneWhileWaiting = 0
    private var lineShown = false

    init(total: Int, live: Bool) {
        self.total = total
        self.live = live
    }

    func finished(_ record: JobStore.Record, folder: String) {
        done += 1
        if record.state != .succeeded { failed += 1 }
        if lineShown { doneWhileWaiting += 1 }
        clear()
        Output.note("airlock: job \(record.id) \(Rendering.outcome(record)); results in \(folder) (\(done)/\(total))")
    }

    func show(counts: [JobStore.State: Int]) {
        guard live else {
            lineShown = true
            return
        }
        let elapsed = Double((ContinuousClock.now - started).components.seconds)
        let running = (counts[.starting] ?? 0) + (counts[.running] ?? 0) + (counts[.collecting] ?? 0)
        var line =
            "done \(done)/\(total), running \(running), queued \(counts[.queued] ?? 0), failed \(failed), "
            + "\(Rendering.elapsed(elapsed)) elapsed"
        if doneWhileWaiting > 0 {
            let left = elapsed / Double(doneWhileWaiting) * Double(total - done)
            line += ", about \(Rendering.elapsed(left)) left"
        }
        Output.write(Data(("\r\u{1b}[K" + line).utf8), to: STDERR_FILENO)
        lineShown = true
    }

    private func clear() {
        if live && lineShown {
            Output.write(Data("\r\u{1b}[K".utf8), to: STDERR_FILENO)
        }
    }

    func end() {
        clear()
    }
}
