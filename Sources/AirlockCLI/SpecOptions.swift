import Airlock
import Foundation

/// The options that say what a job is, shared by `run` and `submit`, and
/// the `-f FILE` spec file they may start from.
enum SpecOptions {
    static let help = """
          -f, --file FILE       job spec file (JSON); the options below override its keys
          --image NAME          guest image (default: tiny)
          --workload DIR        folder copied to /work in the guest (required without -f)
          --env NAME=VALUE      environment variable for the command (repeatable)
          --timeout DURATION    limit for the command itself, e.g. 90s, 10m (default: 1h)
          --boot-timeout DUR    limit for the guest to boot and answer SSH (default: 60s)
          --tcg-timeout-factor F
                                under TCG emulation the boot limit is F times longer (default: 3)
          --transfer-timeout D  limit for the upload, and for the collection (default: 30m)
          --vcpus N             virtual CPUs (default: 1)
          --memory SIZE         guest memory, e.g. 512M, 2G (default: 512M)
          --disk SIZE           root disk for images with a disk, e.g. 8G (default: the image's size)
          --collect PATH        guest folder brought back as out/ (default: /work/out)
          --max-output SIZE     bytes of stdout and of stderr kept, each (default: 1G)
          --max-results SIZE    bytes of collected files kept (default: 4G)
          --max-result-files N  files and folders collected (default: 50000)
          --max-processes N     processes and threads the command may run at once (default: 1024)
          --egress MODE         what the guest may reach: none (default), open, or
                                allow=HOST:PORT,... (reached in the guest at 127.0.0.1:PORT)
          --secret NAME         pass the environment variable NAME to the command as a secret:
                                never stored or logged (repeatable)
          --secret-file NAME=PATH
                                the same, with the value read from a file when the job starts
          --accel MODE          auto, kvm or tcg (default: auto)
        """

    /// What a job is before its file and options say more.
    static func defaults(_ environment: [String: String]) -> JobSpec {
        JobSpec(
            image: "tiny", workload: URL(fileURLWithPath: "."), command: [],
            stateFolder: Defaults.stateFolder(environment))
    }

    /// The arguments with `-f FILE` taken out, and the file.
    static func extractFile(_ arguments: [String]) throws(UsageError) -> (file: String?, rest: [String]) {
        let (file, rest) = try extract(["-f", "--file"], from: arguments)
        return (file, rest)
    }

    /// Takes one option that may appear once (under any of `names`) and its
    /// value out of the arguments before `--`.
    static func extract(_ names: [String], from arguments: [String]) throws(UsageError) -> (
        value: String?, rest: [String]
    ) {
        let end = arguments.firstIndex(of: "--") ?? arguments.endIndex
        var rest: [String] = []
        var value: String?
        var index = 0
        while index < end {
            let word = arguments[index]
            var found: String?
            if names.contains(word) {
                guard index + 1 < end else { throw UsageError("option '\(word)' needs a value") }
                found = arguments[index + 1]
                index += 1
            } else if let name = names.first(where: { $0.hasPrefix("--") && word.hasPrefix($0 + "=") }) {
                found = String(word.dropFirst(name.count + 1))
            } else {
                rest.append(word)
            }
            if let found {
                guard value == nil else { throw UsageError("'\(names.last ?? word)' may be given only once") }
                value = found
            }
            index += 1
        }
        return (value, rest + arguments[end...])
    }

    /// Whether `arguments` set an option (in either form) before `--`.
    static func mentions(_ option: String, in arguments: [String]) -> Bool {
        let end = arguments.firstIndex(of: "--") ?? arguments.endIndex
        return arguments[..<end].contains { $0 == option || $0.hasPrefix(option + "=") }
    }

    /// The request a command starts from: the spec file's, or the defaults.
    static func start(
        file: String?, arguments: [String], defaults: JobSpec, trailing: [String]
    ) throws(UsageError) -> JobRequest {
        guard let file else { return JobRequest(spec: defaults) }
        var given: Set<String> = []
        if mentions("--workload", in: arguments) { given.insert("workload") }
        if !trailing.isEmpty { given.insert("command") }
        do {
            return try JobFile.load(URL(fileURLWithPath: file), defaults: JobRequest(spec: defaults), given: given)
        } catch {
            throw UsageError(error.message, hint: error.hint)
        }
    }

    /// Applies one job-defining option to `request`.
    ///
    /// - Returns: false when `name` is not such an option.
    static func apply(
        _ name: String, inline: String?, reader: inout ArgumentReader, to request: inout JobRequest
    ) throws(UsageError) -> Bool {
        switch name {
        case "--image": request.spec.image = try reader.value(for: name, inline: inline)
        case "--workload": request.spec.workload = URL(fileURLWithPath: try reader.value(for: name, inline: inline))
        case "--env":
            let pair = try reader.value(for: name, inline: inline)
            guard let equals = pair.firstIndex(of: "=") else {
                throw UsageError("'--env \(pair)' needs the form NAME=VALUE")
            }
            let key = String(pair[..<equals])
            request.spec.environment.removeAll { $0.0 == key }
            request.spec.environment.append((key, String(pair[pair.index(after: equals)...])))
        case "--timeout":
            request.spec.timeout = try ValueParser.duration(try reader.value(for: name, inline: inline), option: name)
        case "--boot-timeout":
            request.spec.bootTimeout = try ValueParser.duration(
                try reader.value(for: name, inline: inline), option: name)
        case "--tcg-timeout-factor":
            let text = try reader.value(for: name, inline: inline)
            guard let factor = Double(text), factor.isFinite else {
                throw UsageError("'\(text)' is not a number for \(name)", hint: "for example --tcg-timeout-factor 3")
            }
            request.spec.tcgTimeoutFactor = factor
        case "--transfer-timeout":
            request.spec.transferTimeout = try ValueParser.duration(
                try reader.value(for: name, inline: inline), option: name)
        case "--vcpus":
            request.spec.vcpus = try ValueParser.integer(try reader.value(for: name, inline: inline), option: name)
        case "--memory":
            let bytes = try ValueParser.size(
                try reader.value(for: name, inline: inline), option: name, defaultUnit: 1 << 20)
            request.spec.memoryMiB = Int(bytes >> 20)
        case "--disk":
            request.spec.diskBytes = try ValueParser.size(
                try reader.value(for: name, inline: inline), option: name, defaultUnit: 1 << 20)
        case "--collect": request.spec.collectPath = try reader.value(for: name, inline: inline)
        case "--max-output":
            request.spec.maxOutputBytes = try ValueParser.size(
                try reader.value(for: name, inline: inline), option: name)
        case "--max-results":
            request.spec.collectLimits.maxBytes = try ValueParser.size(
                try reader.value(for: name, inline: inline), option: name)
        case "--max-result-files":
            request.spec.collectLimits.maxEntries = try ValueParser.integer(
                try reader.value(for: name, inline: inline), option: name)
        case "--max-processes":
            request.spec.maxProcesses = try ValueParser.integer(
                try reader.value(for: name, inline: inline), option: name)
        case "--egress":
            let value = try reader.value(for: name, inline: inline)
            do {
                // Repeated allow lists add up; none and open replace what came before.
                request.spec.egress = try Egress.parse(value).adding(to: request.spec.egress)
            } catch {
                throw UsageError(error.message, hint: error.hint)
            }
        case "--secret":
            // Only a name: a value given here would end up in the shell's history and the process list.
            let secret = try reader.value(for: name, inline: inline)
            guard !secret.contains("=") else {
                throw UsageError(
                    "'--secret' takes the name of an environment variable, not a value",
                    hint: "export the value and pass its name (--secret NAME), or use --secret-file NAME=PATH")
            }
            request.spec.secrets.removeAll { $0.name == secret }
            request.spec.secrets.append(Secret(name: secret))
        case "--secret-file":
            let pair = try reader.value(for: name, inline: inline)
            guard let equals = pair.firstIndex(of: "="), equals != pair.startIndex else {
                throw UsageError("'--secret-file' needs the form NAME=PATH")
            }
            let secret = String(pair[..<equals])
            let path = URL(fileURLWithPath: String(pair[pair.index(after: equals)...])).standardizedFileURL.path
            request.spec.secrets.removeAll { $0.name == secret }
            request.spec.secrets.append(Secret(name: secret, file: path))
        case "--accel":
            let value = try reader.value(for: name, inline: inline)
            guard let choice = JobSpec.AcceleratorChoice(rawValue: value) else {
                throw UsageError("'\(value)' is not an acceleration mode", hint: "use auto, kvm or tcg")
            }
            request.spec.accelerator = choice
        default:
            return false
        }
        return true
    }

    /// The checks of a finished request, naming the spec file when there is one.
    static func validate(_ request: JobRequest, file: String?) throws(AirlockError) {
        do {
            try request.validate()
        } catch {
            throw file.map { error.within(JobFile.source(of: URL(fileURLWithPath: $0))) } ?? error
        }
    }
}
