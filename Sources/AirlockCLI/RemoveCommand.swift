import Airlock
import Foundation

/// `airlock rm`: forgets finished jobs and deletes their result folders.
struct RemoveCommand {
    static let usage = "airlock rm JOB_ID...|--batch ID [--state-dir DIR]"

    static let help = """
        Remove finished jobs: their records and history from the store, and
        their result folders from the state folder ('collect' them first to
        keep copies). All or nothing: if any job named is not finished,
        nothing is removed.

        Usage: \(usage)

        Options:
          --batch ID        every job of a batch
          --state-dir DIR   Airlock's state (default: $AIRLOCK_STATE_DIR or /var/lib/airlock)
        """

    var selection: JobSelection

    static func parse(_ arguments: [String], environment: [String: String]) throws(UsageError) -> RemoveCommand {
        RemoveCommand(selection: try JobSelection.parse(arguments, environment: environment, command: "rm"))
    }

    func run() throws(AirlockError) -> Int32 {
        // Whole ids only: a prefix that names one job today may name another later.
        if let short = selection.ids.first(where: { $0.count != 12 }) {
            throw AirlockError(
                .invalidArgument, "'\(short)' is not a whole job id",
                hint: "rm takes whole ids, as 'airlock ls' shows them")
        }
        let queue = try JobQueue(stateFolder: selection.stateFolder)
        var ids: [String] = []
        if let batch = selection.batch {
            ids = try queue.batch(batch)
        } else {
            for id in selection.ids {
                ids.append(try queue.store.resolve(id))
            }
        }
        try queue.remove(ids)
        for id in ids {
            print("removed \(id)")
        }
        return 0
    }
}
