import Airlock
import AirlockLog
import Foundation

/// `airlock cancel`: stops queued and running jobs.
struct CancelCommand {
    static let usage = "airlock cancel JOB_ID...|--batch ID [--state-dir DIR]"

    static let help = """
        Cancel jobs: queued ones at once, running ones by destroying their guest.
        Returns once every running job named has stopped.

        Usage: \(usage)

        Options:
          --batch ID        every unfinished job of a batch
          --state-dir DIR   Airlock's state (default: $AIRLOCK_STATE_DIR or /var/lib/airlock)
        """

    var selection: JobSelection

    static func parse(_ arguments: [String], environment: [String: String]) throws(UsageError) -> CancelCommand {
        CancelCommand(selection: try JobSelection.parse(arguments, environment: environment, command: "cancel"))
    }

    func run(logger: Logger) throws(AirlockError) -> Int32 {
        let queue = try JobQueue(stateFolder: selection.stateFolder)
        var ids: [String] = []
        if let batch = selection.batch {
            ids = try queue.store.states(ofBatch: batch).filter { !$0.state.isTerminal }.map(\.id)
            guard !(try queue.batch(batch)).isEmpty else { return 0 }
        } else {
            for id in selection.ids {
                ids.append(try queue.store.resolve(id))
            }
        }

        // Flag every job first, so that a batch stops as one; then wait for the live ones.
        var waiting: [String] = []
        for id in ids {
            switch try queue.cancel(id, logger: logger, wait: .zero) {
            case .canceled: print("canceled \(id)")
            case .alreadyOver(let state): Output.note("airlock: job \(id) has already ended (\(state.rawValue))")
            case .stillStopping: waiting.append(id)
            }
        }
        var stuck: [String] = []
        for id in waiting {
            switch try queue.cancel(id, logger: logger) {
            case .canceled, .alreadyOver(.canceled): print("canceled \(id)")
            case .alreadyOver(let state): Output.note("airlock: job \(id) ended as \(state.rawValue) first")
            case .stillStopping: stuck.append(id)
            }
        }
        if !stuck.isEmpty {
            throw AirlockError(
                .timeout, "\(stuck.count) jobs did not stop within a minute: \(stuck.joined(separator: ", "))",
                hint: "their workers still hold them; 'airlock status ID' shows where they are")
        }
        return 0
    }
}
