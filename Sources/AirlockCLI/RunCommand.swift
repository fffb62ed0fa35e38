import Airlock
import AirlockLog
import Foundation

/// `airlock run`: one job in one fresh guest, with live output.
struct RunCommand {
    static let usage = "airlock run [--image NAME] --workload DIR [options] -- COMMAND [ARG...]"

    static let help = """
        Run one command in a fresh, throwaway guest and bring its results back.

        Usage: \(usage)

        Options:
          --image NAME          guest image (default: tiny)
          --workload DIR        folder copied to /work in the guest (required)
          --env NAME=VALUE      environment variable for the command (repeatable)
          --timeout DURATION    limit for the command itself, e.g. 90s, 10m (default: 1h)
          --boot-timeout DUR    limit for the guest to boot and answer SSH (default: 60s)
          --transfer-timeout D  limit for the upload, and for the collection (default: 30m)
          --vcpus N             virtual CPUs (default: 1)
          --memory SIZE         guest memory, e.g. 512M, 2G (default: 512M)
          --collect PATH        guest folder brought back as out/ (default: /work/out)
          --results DIR         result folder (default: airlock-results/JOB_ID)
          --max-output SIZE     bytes of stdout and of stderr kept, each (default: 1G)
          --max-results SIZE    bytes of collected files kept (default: 4G)
          --accel MODE          auto, kvm or tcg (default: auto)
          --connect URI         libvirt URI (default: qemu:///system)
          --state-dir DIR       Airlock's state (default: $AIRLOCK_STATE_DIR or /var/lib/airlock)
          --images DIR          image catalog (default: $AIRLOCK_IMAGES, else STATE_DIR/images)
          --json                print result.json on stdout instead of streaming output
          --quiet               do not stream the command's output
          --debug               log every step with timestamps

        Exit status: the command's own exit code; 128+N if it died of signal N;
        124 timed out; 125 Airlock could not run the job; 130 canceled;
        64 bad usage; 66 broken image; 69 host not ready; 70 internal error.
        """

    var spec: JobSpec
    var json = false
    var quiet = false
    var debug = false

    /// Turns arguments into a spec. Pure: reads only `environment`.
    static func parse(_ arguments: [String], environment: [String: String]) throws(UsageError) -> RunCommand {
        var reader = ArgumentReader(arguments)
        var image = "tiny"
        var workload: String?
        var env: [(String, String)] = []
        var command = RunCommand(
            spec: JobSpec(
                image: "", workload: URL(fileURLWithPath: "."), command: [],
                stateFolder: Defaults.stateFolder(environment)))
        var images = environment["AIRLOCK_IMAGES"]
        while let option = reader.next() {
            guard let name = option.name else {
                throw UsageError(
                    "unexpected argument '\(option.word)'", hint: "put the command after '--': \(usage)")
            }
            switch name {
            case "--image": image = try reader.value(for: name, inline: option.inline)
            case "--workload": workload = try reader.value(for: name, inline: option.inline)
            case "--env":
                let pair = try reader.value(for: name, inline: option.inline)
                guard let equals = pair.firstIndex(of: "=") else {
                    throw UsageError("'--env \(pair)' needs the form NAME=VALUE")
                }
                env.append((String(pair[..<equals]), String(pair[pair.index(after: equals)...])))
            case "--timeout":
                command.spec.timeout = try ValueParser.duration(
                    try reader.value(for: name, inline: option.inline), option: name)
            case "--boot-timeout":
                command.spec.bootTimeout = try ValueParser.duration(
                    try reader.value(for: name, inline: option.inline), option: name)
            case "--transfer-timeout":
                command.spec.transferTimeout = try ValueParser.duration(
                    try reader.value(for: name, inline: option.inline), option: name)
            case "--vcpus":
                command.spec.vcpus = try ValueParser.integer(
                    try reader.value(for: name, inline: option.inline), option: name)
            case "--memory":
                let bytes = try ValueParser.size(
                    try reader.value(for: name, inline: option.inline), option: name, defaultUnit: 1 << 20)
                command.spec.memoryMiB = Int(bytes >> 20)
            case "--collect": command.spec.collectPath = try reader.value(for: name, inline: option.inline)
            case "--results":
                command.spec.resultsFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            case "--max-output":
                command.spec.maxOutputBytes = try ValueParser.size(
                    try reader.value(for: name, inline: option.inline), option: name)
            case "--max-results":
                command.spec.collectLimits.maxBytes = try ValueParser.size(
                    try reader.value(for: name, inline: option.inline), option: name)
            case "--accel":
                let value = try reader.value(for: name, inline: option.inline)
                guard let choice = JobSpec.AcceleratorChoice(rawValue: value) else {
                    throw UsageError("'\(value)' is not an acceleration mode", hint: "use auto, kvm or tcg")
                }
                command.spec.accelerator = choice
            case "--connect": command.spec.connectURI = try reader.value(for: name, inline: option.inline)
            case "--state-dir":
                command.spec.stateFolder = URL(fileURLWithPath: try reader.value(for: name, inline: option.inline))
            case "--images": images = try reader.value(for: name, inline: option.inline)
            case "--json": command.json = true
            case "--quiet", "-q": command.quiet = true
            case "--debug": command.debug = true
            default:
                throw UsageError("unknown option '\(name)'", hint: "see 'airlock run --help'")
            }
        }
        guard let workload else {
            throw UsageError(
                "missing --workload", hint: "pass the folder to copy into the guest, e.g. --workload examples/hello")
        }
        command.spec.image = image
        command.spec.workload = URL(fileURLWithPath: workload)
        command.spec.environment = env
        command.spec.command = reader.trailing
        command.spec.imagesFolder = images.map { URL(fileURLWithPath: $0) }
        return command
    }

    /// Turns conflicting or impossible values into errors before anything starts.
    func validate() throws(AirlockError) {
        try spec.validate()
    }

    /// Runs the job and renders its result. Returns the process exit code.
    func run(logger: Logger, signals: SignalRelay) throws(AirlockError) -> Int32 {
        let streaming = !json && !quiet
        let runner = JobRunner(spec: spec, logger: logger) { stream, bytes in
            guard streaming else { return }
            Output.write(bytes, to: stream == .stdout ? STDOUT_FILENO : STDERR_FILENO)
        }
        signals.onFirst = {
            Output.note(
                "airlock: stopping job \(runner.jobID) and removing its guest (interrupt again to leave at once)")
            runner.cancel()
        }
        signals.onSecond = {
            let left = runner.leftovers()
            if !left.isEmpty {
                Output.note("airlock: left behind: \(left.joined(separator: ", ")); 'virsh destroy' removes the domain")
            }
        }
        let result = try runner.run()
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

/// Where Airlock keeps its state unless told otherwise.
enum Defaults {
    static func stateFolder(_ environment: [String: String]) -> URL {
        URL(fileURLWithPath: environment["AIRLOCK_STATE_DIR"] ?? "/var/lib/airlock")
    }
}
