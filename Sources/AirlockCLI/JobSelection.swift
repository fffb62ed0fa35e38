import Foundation

/// The jobs a command acts on, as named on its command line: job ids (or
/// unique prefixes), or one `--batch ID`; and the state folder they are in.
struct JobSelection {
    var ids: [String] = []
    var batch: String?
    var stateFolder: URL

    /// Reads `JOB_ID...|--batch ID [--state-dir DIR]` for subcommand `command`.
    static func parse(
        _ arguments: [String], environment: [String: String], command: String
    ) throws(UsageError) -> JobSelection {
        var selection = JobSelection(stateFolder: Defaults.stateFolder(environment))
        var reader = ArgumentReader(arguments)
        while let option = reader.next() {
            guard let name = option.name else {
                selection.ids.append(option.word)
                continue
            }
            switch name {
            case "--batch": selection.batch = try reader.value(for: name, inline: option.inline)
            case "--state-dir":
                selection.stateFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            default: throw UsageError("unknown option '\(name)'", hint: "see 'airlock \(command) --help'")
            }
        }
        guard selection.ids.isEmpty != (selection.batch == nil) else {
            throw UsageError("name job ids or one --batch", hint: "'airlock ls' lists jobs and their batches")
        }
        return selection
    }
}
