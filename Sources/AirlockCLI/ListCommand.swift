import Airlock
import Foundation

/// `airlock ls`: the stored jobs, filtered.
struct ListCommand {
    static let usage =
        "airlock ls [--state STATE] [--batch ID] [--label KEY=VALUE] [--limit N] [--json] [--state-dir DIR]"

    static let help = """
        List stored jobs in submission order.

        Usage: \(usage)

        Options:
          --state STATE       only jobs in this state: queued, starting, running,
                              collecting, succeeded, failed, timed_out, canceled, lost
          --batch ID          only the jobs of this batch
          --label KEY=VALUE   only jobs with this label
          --limit N           only the N most recent jobs
          --json              one JSON array of jobs
          --state-dir DIR     Airlock's state (default: $AIRLOCK_STATE_DIR or /var/lib/airlock)
        """

    var filter = JobStore.Filter()
    var limit = Int.max
    var json = false
    var stateFolder: URL

    static func parse(_ arguments: [String], environment: [String: String]) throws(UsageError) -> ListCommand {
        var command = ListCommand(stateFolder: Defaults.stateFolder(environment))
        var reader = ArgumentReader(arguments)
        while let option = reader.next() {
            guard let name = option.name else { throw UsageError("unexpected argument '\(option.word)'") }
            switch name {
            case "--state":
                let value = try reader.value(for: name, inline: option.inline)
                guard let state = JobStore.State(rawValue: value) else {
                    throw UsageError(
                        "'\(value)' is not a job state",
                        hint: "states: " + JobStore.State.allCases.map(\.rawValue).joined(separator: ", "))
                }
                command.filter.state = state
            case "--batch": command.filter.batch = try reader.value(for: name, inline: option.inline)
            case "--label":
                let pair = try reader.value(for: name, inline: option.inline)
                guard let equals = pair.firstIndex(of: "=") else {
                    throw UsageError("'--label \(pair)' needs the form KEY=VALUE")
                }
                command.filter.label = (String(pair[..<equals]), String(pair[pair.index(after: equals)...]))
            case "--limit":
                command.limit = try ValueParser.integer(
                    try reader.value(for: name, inline: option.inline), option: name)
                guard command.limit >= 0 else { throw UsageError("--limit must not be negative") }
            case "--json": command.json = true
            case "--state-dir":
                command.stateFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            default: throw UsageError("unknown option '\(name)'", hint: "see 'airlock ls --help'")
            }
        }
        return command
    }

    func run() throws(AirlockError) -> Int32 {
        let queue = try JobQueue(stateFolder: stateFolder)
        let records = try queue.store.list(filter, limit: limit)
        if json {
            Output.write(
                Rendering.json(records.map { Rendering.object($0, queue: queue, detailed: false) }), to: STDOUT_FILENO)
            return 0
        }
        let rows = records.map { record -> [String] in
            [
                record.id, record.state.rawValue, record.exitCode.map(String.init) ?? "-",
                "\(record.attempts)/\(record.maxAttempts)", record.batch ?? "-", Rendering.timestamp(record.submitted),
                record.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","),
            ]
        }
        Output.write(
            Data(Rendering.table(["JOB", "STATE", "EXIT", "ATTEMPT", "BATCH", "SUBMITTED", "LABELS"], rows).utf8),
            to: STDOUT_FILENO)
        return 0
    }
}
