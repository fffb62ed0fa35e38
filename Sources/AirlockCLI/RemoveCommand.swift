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

    var ids: [String] = []
    var batch: String?
    var stateFolder: URL

    static func parse(_ arguments: [String], environment: [String: String]) throws(UsageError) -> RemoveCommand {
        var command = RemoveCommand(stateFolder: Defaults.stateFolder(environment))
        var reader = ArgumentReader(arguments)
        while let option = reader.next() {
            guard let name = option.name else {
                command.ids.append(option.word)
                continue
            }
            switch name {
            case "--batch": command.batch = try reader.value(for: name, inline: option.inline)
            case "--state-dir":
                command.stateFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            default: throw UsageError("unknown option '\(name)'", hint: "see 'airlock rm --help'")
            }
        }
        guard command.ids.isEmpty != (command.batch == nil) else {
            throw UsageError("name job ids or one --batch", hint: "'airlock ls' lists jobs and their batches")
        }
        return command
    }

    func run() throws(AirlockError) -> Int32 {
        // Whole ids only: a prefix that names one job today may name another later.
        if let short = ids.first(where: { $0.count != 12 }) {
            throw AirlockError(
                .invalidArgument, "'\(short)' is not a whole job id",
                hint: "rm takes whole ids, as 'airlock ls' shows them")
        }
        let queue = try JobQueue(stateFolder: stateFolder)
        var ids: [String] = []
        if let batch {
            ids = try queue.batch(batch)
        } else {
            for id in self.ids {
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
