import Airlock
import AirlockLog
import Foundation

/// `airlock status ID`: one stored job, with its history.
struct StatusCommand {
    static let usage = "airlock status JOB_ID [--json] [--state-dir DIR]"

    static let help = """
        Show one job: its state, exit code, attempts, host, result folder and
        every state change with its time. A unique prefix of the id will do.

        Usage: \(usage)

        Options:
          --json            print the job as a JSON object
          --state-dir DIR   Airlock's state (default: $AIRLOCK_STATE_DIR or /var/lib/airlock)
        """

    var id: String
    var json = false
    var stateFolder: URL

    static func parse(_ arguments: [String], environment: [String: String]) throws(UsageError) -> StatusCommand {
        var command = StatusCommand(id: "", stateFolder: Defaults.stateFolder(environment))
        var reader = ArgumentReader(arguments)
        var id: String?
        while let option = reader.next() {
            guard let name = option.name else {
                try ArgumentReader.single(option.word, into: &id)
                continue
            }
            switch name {
            case "--json": command.json = true
            case "--state-dir":
                command.stateFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            default: throw UsageError("unknown option '\(name)'", hint: "see 'airlock status --help'")
            }
        }
        guard let id else { throw UsageError("missing job id", hint: "'airlock ls' lists the jobs") }
        command.id = id
        return command
    }

    func run() throws(AirlockError) -> Int32 {
        let queue = try JobQueue(stateFolder: stateFolder)
        let record = try queue.job(id)
        let history = try queue.store.history(record.id)
        if json {
            var object = Rendering.object(record, queue: queue, detailed: true)
            object["history"] = history.map { transition -> [String: Any] in
                var entry: [String: Any] = ["state": transition.state.rawValue, "at": Rendering.iso8601(transition.at)]
                entry["reason"] = transition.reason
                return entry
            }
            Output.write(Rendering.json(object), to: STDOUT_FILENO)
            return 0
        }
        let summary = queue.summary(of: record)
        var rows: [[String]] = [
            ["state", Rendering.outcome(record)],
            ["reason", record.reason ?? "-"],
            ["batch", record.batch ?? "-"],
            [
                "labels",
                record.labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ","),
            ],
            ["image", summary.image],
            ["command", summary.command.joined(separator: " ")],
            ["workload", summary.workload],
            ["size", "\(record.vcpus) vCPU, \(record.memoryMiB) MiB"],
            ["priority", "\(record.priority)"],
            ["attempts", "\(record.attempts) of \(record.maxAttempts)"],
            ["host", record.host ?? "-"],
            ["results", record.results],
        ]
        if record.labels.isEmpty { rows.remove(at: 3) }
        var text = "job \(record.id)\n"
        text +=
            Rendering.table(["", ""], rows).split(separator: "\n").dropFirst().map { "  " + $0 }
            .joined(separator: "\n") + "\n"
        text += "history\n"
        for transition in history {
            text += "  \(Rendering.timestamp(transition.at))  \(transition.state.rawValue)"
            if let reason = transition.reason {
                text += "  \(Terminal.escape(reason))"
            }
            text += "\n"
        }
        print(text, terminator: "")
        return 0
    }
}
