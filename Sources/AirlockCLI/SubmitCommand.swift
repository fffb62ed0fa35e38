import Airlock
import Foundation

/// `airlock submit`: stores jobs in the queue and returns at once.
struct SubmitCommand {
    static let usage =
        "airlock submit [-f FILE | --batch FILE | --workload DIR [options] -- COMMAND [ARG...]] [--label KEY=VALUE]..."

    static let help = """
        Queue jobs for the controller ('airlock controller') and return at once.
        Prints the job id, or for a batch the batch id.

        Usage: \(usage)

        Options:
          --batch FILE          many jobs: one JSON spec per line, or a JSON array;
                                the options below are defaults each line may override
        \(SpecOptions.help)
          --label KEY=VALUE     label the job, for 'airlock ls --label' (repeatable)
          --priority N          higher runs first, -1000 to 1000 (default: 0)
          --retries N           retries after infrastructure failures, 0 to 10 (default: 2)
          --host NAME           run only on this host ('airlock host ls')
          --host-label KEY=VALUE
                                run only on a host with this label
          --json                print {"batch": ..., "jobs": [...]} instead
          --state-dir DIR       Airlock's state (default: $AIRLOCK_STATE_DIR or /var/lib/airlock)
          --images DIR          image catalog (default: $AIRLOCK_IMAGES, else STATE_DIR/images)

        The whole submission is checked before anything is stored: every job's
        values, its image, and whether it can ever fit the host. Workload folders
        are copied into the state folder now; later changes do not reach the job.
        """

    var requests: [JobRequest]
    /// Names each request in messages (its file and line), when it came from a file.
    var sources: [String?]
    var asBatch: Bool
    var json = false
    var stateFolder: URL
    var imagesFolder: URL?

    static func parse(_ arguments: [String], environment: [String: String]) throws(UsageError) -> SubmitCommand {
        let (file, afterFile) = try SpecOptions.extractFile(arguments)
        let (batchFile, arguments) = try SpecOptions.extract(["--batch"], from: afterFile)
        if file != nil && batchFile != nil {
            throw UsageError("give either -f FILE or --batch FILE, not both")
        }
        var reader = ArgumentReader(arguments)
        let defaults = SpecOptions.defaults(environment)
        var request = try SpecOptions.start(
            file: file, arguments: arguments, defaults: defaults, trailing: reader.trailing)
        var command = SubmitCommand(
            requests: [], sources: [], asBatch: batchFile != nil, stateFolder: defaults.stateFolder,
            imagesFolder: environment["AIRLOCK_IMAGES"].map { URL(fileURLWithPath: $0) })
        while let option = reader.next() {
            guard let name = option.name else {
                throw UsageError("unexpected argument '\(option.word)'", hint: "put the command after '--': \(usage)")
            }
            if try SpecOptions.apply(name, inline: option.inline, reader: &reader, to: &request) {
                continue
            }
            switch name {
            case "--label":
                let pair = try reader.value(for: name, inline: option.inline)
                guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
                    throw UsageError("'--label \(pair)' needs the form KEY=VALUE")
                }
                request.labels[String(pair[..<equals])] = String(pair[pair.index(after: equals)...])
            case "--priority":
                request.priority = try ValueParser.integer(
                    try reader.value(for: name, inline: option.inline), option: name)
            case "--retries":
                request.retries = try ValueParser.integer(
                    try reader.value(for: name, inline: option.inline), option: name)
            case "--host": request.host = try reader.value(for: name, inline: option.inline)
            case "--host-label": request.hostLabel = try reader.value(for: name, inline: option.inline)
            case "--json": command.json = true
            case "--state-dir":
                command.stateFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            case "--images":
                command.imagesFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            case "--results":
                throw UsageError(
                    "'--results' does not apply to submitted jobs",
                    hint: "their results stay in the state folder; copy them out with 'airlock collect ID --out DIR'")
            default:
                throw UsageError("unknown option '\(name)'", hint: "see 'airlock submit --help'")
            }
        }
        if !reader.trailing.isEmpty {
            request.spec.command = reader.trailing
        }
        request.spec.stateFolder = command.stateFolder

        if let batchFile {
            var given: Set<String> = []
            if SpecOptions.mentions("--workload", in: arguments) { given.insert("workload") }
            if !reader.trailing.isEmpty { given.insert("command") }
            do {
                command.requests = try JobFile.loadBatch(
                    URL(fileURLWithPath: batchFile), defaults: request, given: given)
            } catch {
                throw UsageError(error.message, hint: error.hint)
            }
            command.sources = Array(repeating: nil, count: command.requests.count)
            return command
        }
        if file == nil && !SpecOptions.mentions("--workload", in: arguments) {
            throw UsageError(
                "missing --workload, -f FILE or --batch FILE",
                hint: "for example: airlock submit --workload examples/hello -- sh run.sh")
        }
        command.requests = [request]
        command.sources = [file.map { JobFile.source(of: URL(fileURLWithPath: $0)) }]
        return command
    }

    func run() throws(AirlockError) -> Int32 {
        let queue = try JobQueue(stateFolder: stateFolder, imagesFolder: imagesFolder)
        let submitted = try queue.submit(requests, sources: sources, asBatch: asBatch)
        if json {
            var object: [String: Any] = ["jobs": submitted.ids]
            object["batch"] = submitted.batch
            Output.write(Rendering.json(object), to: STDOUT_FILENO)
        } else if let batch = submitted.batch {
            print(batch)
            Output.note("airlock: submitted \(submitted.ids.count) jobs as batch \(batch)")
        } else {
            print(submitted.ids[0])
        }
        if (try? queue.liveControllers().isEmpty) == true {
            Output.note(
                "airlock: no controller is running on '\(stateFolder.path)'; "
                    + "the jobs wait until one does ('airlock controller')")
        }
        return 0
    }
}
