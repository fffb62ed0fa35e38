import Airlock
import AirlockLog
import Foundation
import Synchronization

/// `airlock run`: one job in one fresh guest, with live output.
struct RunCommand {
    static let usage = "airlock run [-f FILE] [--image NAME] [--workload DIR] [options] [-- COMMAND [ARG...]]"

    static let help = """
        Run one command in a fresh, throwaway guest and bring its results back.

        Usage: \(usage)

        Options:
        \(SpecOptions.help)
          --results DIR         result folder (default: airlock-results/JOB_ID)
          --connect URI         libvirt URI (default: qemu:///system)
          --host NAME           run on this added host ('airlock host ls'), instead of --connect
          --state-dir DIR       Airlock's state (default: $AIRLOCK_STATE_DIR or /var/lib/airlock)
          --images DIR          image catalog (default: $AIRLOCK_IMAGES, else STATE_DIR/images)
          --json                print result.json on stdout instead of streaming output
          --quiet               do not stream the command's output
          --debug               log every step with timestamps

        A command after '--' replaces the spec file's command.

        Exit status: the command's own exit code; 128+N if it died of signal N;
        124 timed out; 125 Airlock could not run the job; 130 canceled;
        64 bad usage; 66 broken image; 69 host not ready; 70 internal error.
        """

    var spec: JobSpec
    /// The spec file the job came from, for messages.
    var file: String?
    var json = false
    var quiet = false
    var debug = false
    /// An added host to run on, by name.
    var host: String?

    /// Turns arguments into a spec. Pure apart from reading a spec file; reads only `environment`.
    static func parse(_ arguments: [String], environment: [String: String]) throws(UsageError) -> RunCommand {
        let (file, arguments) = try SpecOptions.extractFile(arguments)
        var reader = ArgumentReader(arguments)
        let defaults = SpecOptions.defaults(environment)
        var request = try SpecOptions.start(
            file: file, arguments: arguments, defaults: defaults, trailing: reader.trailing)
        var command = RunCommand(spec: request.spec, file: file)
        var images = environment["AIRLOCK_IMAGES"]
        while let option = reader.next() {
            guard let name = option.name else {
                var isFolder: ObjCBool = false
                if FileManager.default.fileExists(atPath: option.word, isDirectory: &isFolder), isFolder.boolValue {
                    throw UsageError(
                        "unexpected argument '\(option.word)'",
                        hint: "to run a job on that folder, pass it with --workload: \(usage)")
                }
                throw UsageError(
                    "unexpected argument '\(option.word)'", hint: "put the command after '--': \(usage)")
            }
            if try SpecOptions.apply(name, inline: option.inline, reader: &reader, to: &request) {
                continue
            }
            switch name {
            case "--results":
                command.spec.resultsFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            case "--connect": command.spec.connectURI = try reader.value(for: name, inline: option.inline)
            case "--host": command.host = try reader.value(for: name, inline: option.inline)
            case "--state-dir":
                command.spec.stateFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            case "--images": images = try reader.value(for: name, inline: option.inline)
            case "--json": command.json = true
            case "--quiet", "-q": command.quiet = true
            case "--debug": command.debug = true
            case "--label", "--priority", "--retries", "--batch", "--host-label":
                throw UsageError("'\(name)' belongs to 'airlock submit'", hint: "airlock run runs one job at once")
            default:
                throw UsageError("unknown option '\(name)'", hint: "see 'airlock run --help'")
            }
        }
        if file == nil && !SpecOptions.mentions("--workload", in: arguments) {
            throw UsageError(
                "missing --workload", hint: "pass the folder to copy into the guest, e.g. --workload examples/hello")
        }
        // Per-invocation settings stay; the job's own come from the file and options.
        let settings = command.spec
        command.spec = request.spec
        command.spec.resultsFolder = settings.resultsFolder
        command.spec.connectURI = settings.connectURI
        command.spec.stateFolder = settings.stateFolder
        if !reader.trailing.isEmpty {
            command.spec.command = reader.trailing
        }
        command.spec.imagesFolder = images.map { URL(fileURLWithPath: $0) }
        return command
    }

    /// Turns conflicting or impossible values into errors before anything starts.
    func validate() throws(AirlockError) {
        try SpecOptions.validate(JobRequest(spec: spec), file: file)
    }

    /// Runs the job and renders its result. Returns the process exit code.
    func run(logger: Logger, signals: SignalRelay) throws(AirlockError) -> Int32 {
        var spec = self.spec
        if let host {
            let hosts = try JobQueue(stateFolder: spec.stateFolder).store.hosts()
            guard let found = hosts.first(where: { $0.name == host }) else {
                throw AirlockError(
                    .invalidArgument, "no host '\(Terminal.escape(host))'",
                    hint: "'airlock host ls' lists the hosts; 'airlock host add NAME URI' adds one")
            }
            spec.connectURI = found.uri
        }
        let streaming = !json && !quiet
        // A guest's escape sequences reach a terminal only as visible text.
        let filters = Mutex(
            (
                out: isatty(STDOUT_FILENO) == 1 ? TerminalFilter() : nil,
                err: isatty(STDERR_FILENO) == 1 ? TerminalFilter() : nil
            ))
        let runner = JobRunner(spec: spec, logger: logger) { stream, bytes in
            guard streaming else { return }
            let fd = stream == .stdout ? STDOUT_FILENO : STDERR_FILENO
            let safe: [UInt8]? = filters.withLock { filters in
                if stream == .stdout {
                    return filters.out?.filter(bytes)
                }
                return filters.err?.filter(bytes)
            }
            if let safe {
                safe.withUnsafeBytes { Output.write($0, to: fd) }
            } else {
                Output.write(bytes, to: fd)
            }
        }
        signals.onFirst = {
            Output.note(
                "airlock: stopping job \(runner.jobID) and removing its guest (interrupt again to leave at once)")
            runner.cancel()
        }
        signals.onSecond = {
            let left = runner.leftovers()
            if !left.isEmpty {
                Output.note("airlock: left behind: \(left.joined(separator: ", ")); 'airlock gc' removes them")
            }
            runner.recordAbandoned(leftBehind: left)
        }
        if spec.egress == .open {
            Output.note(Self.openEgressWarning)
        }
        let result = try runner.run()
        if streaming {
            // A character the stream ended in the middle of, made visible.
            let (out, err) = filters.withLock { ($0.out?.finish() ?? [], $0.err?.finish() ?? []) }
            out.withUnsafeBytes { Output.write($0, to: STDOUT_FILENO) }
            err.withUnsafeBytes { Output.write($0, to: STDERR_FILENO) }
        }
        if json {
            Output.write(ResultRendering.json(result), to: STDOUT_FILENO)
        } else {
            Output.note(
                ResultRendering.summary(
                    result, folder: runner.resultsFolder.relativePath,
                    collectPath: spec.collectPath == JobSpec.defaultCollectPath ? nil : spec.collectPath))
        }
        return result.processExitCode
    }
}

extension RunCommand {
    /// Printed whenever a job runs with `--egress open`.
    static let openEgressWarning =
        "airlock: warning: --egress open: the guest can reach any address, the host's own loopback services "
        + "included (as 10.0.2.2)"
}

/// Where Airlock keeps its state unless told otherwise.
enum Defaults {
    static func stateFolder(_ environment: [String: String]) -> URL {
        URL(fileURLWithPath: environment["AIRLOCK_STATE_DIR"] ?? "/var/lib/airlock")
    }
}
