import Airlock
import AirlockLog
import Foundation

/// The `airlock` command line: picks the subcommand, runs it, and maps every
/// outcome to an exit code. Only this layer prints errors and exits.
public enum AirlockCLI {
    static let usage = """
        Usage: airlock <command> [options]

        One job:
          run         run one command in a fresh guest and collect its results

        Many jobs, later:
          submit      queue a job, or a batch of them, and return at once
          controller  run queued jobs within the host's capacity, until stopped
          ls          list jobs, by state, batch or label
          status      show one job and its history
          logs        print (or follow) a job's output
          collect     copy finished results out, or wait for them
          cancel      stop queued and running jobs
          rm          forget finished jobs and delete their result folders

        Images and hosts:
          image       list, inspect, build, import or remove guest images
          host        add, list, drain or remove the hosts jobs run on

        Upkeep:
          gc          remove guests and files left by processes that died
          bench       time jobs against bare QEMU, or the controller's throughput
          help        show this text, or 'airlock help COMMAND'

        Run 'airlock COMMAND --help' for a command's options.
        """

    /// One subcommand: its texts and how to run it.
    private struct Command: Sendable {
        let usage: String
        let help: String
        let body: @Sendable ([String], [String: String]) throws -> Int32
    }

    private static let commands: [String: Command] = [
        "run": Command(usage: RunCommand.usage, help: RunCommand.help) { arguments, environment in
            let command = try RunCommand.parse(arguments, environment: environment)
            try command.validate()
            let logger = bootstrapLogger(debug: command.debug, label: "airlock.run")
            return try command.run(logger: logger, signals: installSignals())
        },
        "submit": Command(usage: SubmitCommand.usage, help: SubmitCommand.help) { arguments, environment in
            try SubmitCommand.parse(arguments, environment: environment).run()
        },
        "controller": Command(usage: ControllerCommand.usage, help: ControllerCommand.help) { arguments, environment in
            let command = try ControllerCommand.parse(arguments, environment: environment)
            let logger = bootstrapLogger(debug: command.debug, label: "airlock.controller", service: true)
            return try command.run(logger: logger, signals: installSignals())
        },
        "worker": Command(usage: WorkerCommand.usage, help: WorkerCommand.usage) { arguments, environment in
            let command = try WorkerCommand.parse(arguments, environment: environment)
            let logger = bootstrapLogger(debug: command.debug, label: "airlock.worker", service: true)
            return try command.run(logger: logger, signals: installSignals())
        },
        "ls": Command(usage: ListCommand.usage, help: ListCommand.help) { arguments, environment in
            try ListCommand.parse(arguments, environment: environment).run()
        },
        "status": Command(usage: StatusCommand.usage, help: StatusCommand.help) { arguments, environment in
            try StatusCommand.parse(arguments, environment: environment).run()
        },
        "logs": Command(usage: LogsCommand.usage, help: LogsCommand.help) { arguments, environment in
            try LogsCommand.parse(arguments, environment: environment).run()
        },
        "collect": Command(usage: CollectCommand.usage, help: CollectCommand.help) { arguments, environment in
            try CollectCommand.parse(arguments, environment: environment).run(signals: installSignals())
        },
        "cancel": Command(usage: CancelCommand.usage, help: CancelCommand.help) { arguments, environment in
            let command = try CancelCommand.parse(arguments, environment: environment)
            // It reports each job itself; the store's state-change notices would repeat it.
            return try command.run(logger: bootstrapLogger(debug: false, label: "airlock.cancel", level: .warning))
        },
        "rm": Command(usage: RemoveCommand.usage, help: RemoveCommand.help) { arguments, environment in
            try RemoveCommand.parse(arguments, environment: environment).run()
        },
        "image": Command(usage: ImageCommand.usage, help: ImageCommand.help) { arguments, environment in
            let command = try ImageCommand.parse(arguments, environment: environment)
            return try command.run(signals: installSignals())
        },
        "host": Command(usage: HostCommand.usage, help: HostCommand.help) { arguments, environment in
            try HostCommand.parse(arguments, environment: environment).run()
        },
        "gc": Command(usage: GCCommand.usage, help: GCCommand.help) { arguments, environment in
            let command = try GCCommand.parse(arguments, environment: environment)
            return try command.run(logger: bootstrapLogger(debug: false, label: "airlock.gc", level: .warning))
        },
        "bench": Command(usage: BenchCommand.usage, help: BenchCommand.help) { arguments, environment in
            if arguments.first == "hosts" {
                let rest = Array(arguments.dropFirst())
                if rest.first == "--help" || rest.first == "-h" {
                    return printHelp(HostsBenchCommand.help)
                }
                let command = try HostsBenchCommand.parse(rest, environment: environment)
                _ = bootstrapLogger(debug: false, label: "airlock.bench")
                return try command.run(signals: installSignals())
            }
            if arguments.first == "batch" {
                let rest = Array(arguments.dropFirst())
                if rest.first == "--help" || rest.first == "-h" {
                    return printHelp(BatchBenchCommand.help)
                }
                let command = try BatchBenchCommand.parse(rest, environment: environment)
                _ = bootstrapLogger(debug: false, label: "airlock.bench")
                return try command.run(signals: installSignals())
            }
            let command = try BenchCommand.parse(arguments, environment: environment)
            let logger = bootstrapLogger(debug: command.debug, label: "airlock.bench")
            return try command.run(logger: logger)
        },
    ]

    /// Runs the command line from the raw `argv`, refusing arguments that are
    /// not valid UTF-8 (they could not reach the guest byte for byte).
    public static func main(rawArguments: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>, count: Int) -> Int32 {
        var arguments: [String] = []
        for index in 1..<max(1, count) {
            guard let raw = rawArguments[index] else { continue }
            guard let argument = String(validatingCString: raw) else {
                Output.note(
                    "Error: argument \(index) is not valid UTF-8\n"
                        + "Airlock passes values to the guest byte for byte and accepts UTF-8 text only")
                return ExitCode.usage
            }
            arguments.append(argument)
        }
        return main(arguments, environment: ProcessInfo.processInfo.environment)
    }

    /// Runs the command line and returns the process exit code.
    public static func main(_ arguments: [String], environment: [String: String]) -> Int32 {
        // A reader that goes away (`airlock run ... | head`) must not kill
        // Airlock mid-job: writes then fail with EPIPE and the job goes on.
        signal(SIGPIPE, SIG_IGN)
        guard let name = arguments.first else {
            FileHandle.standardError.write(Data((usage + "\n").utf8))
            return ExitCode.usage
        }
        let rest = Array(arguments.dropFirst())
        if let command = commands[name] {
            if rest.first == "--help" || rest.first == "-h" {
                return printHelp(command.help)
            }
            return execute(usage: command.usage) { try command.body(rest, environment) }
        }
        switch name {
        case "help", "--help", "-h":
            return printHelp(rest.first.flatMap { commands[$0]?.help } ?? usage)
        case "version", "--version":
            print("airlock \(Version.string)")
            return 0
        default:
            Output.note("Error: unknown command '\(Terminal.escape(name))'\n\(usage)")
            return ExitCode.usage
        }
    }

    private static func printHelp(_ text: String) -> Int32 {
        print(text)
        return 0
    }

    /// Installs the process's log handler. A service (the controller and its
    /// workers) always logs with timestamps and metadata: its lines are a record.
    private static func bootstrapLogger(
        debug: Bool, label: String, service: Bool = false, level: Logger.Level = .info
    ) -> Logger {
        LoggingSystem.bootstrap(StderrLogHandler(verbose: debug || service))
        return Logger(label: label, level: debug ? .debug : level)
    }

    private static func installSignals() -> SignalRelay {
        let signals = SignalRelay()
        signals.install()
        return signals
    }

    /// Runs a subcommand body and turns its errors into messages and exit codes.
    private static func execute(usage: String, _ body: () throws -> Int32) -> Int32 {
        do {
            return try body()
        } catch let error as UsageError {
            var text = "Error: \(error.message)"
            if let hint = error.hint { text += "\n\(hint)" }
            Output.note(text + "\nUsage: \(usage)")
            return ExitCode.usage
        } catch let error as AirlockError {
            var text = "Error: \(error.description)"
            if let hint = error.hint { text += "\n\(hint)" }
            Output.note(text)
            return exitCode(for: error)
        } catch {
            Output.note("Error: \(error)")
            return ExitCode.internalError
        }
    }

    static func exitCode(for error: AirlockError) -> Int32 {
        switch error.code {
        case .invalidArgument, .notFound, .exists: return ExitCode.usage
        case .imageInvalid: return ExitCode.imageInvalid
        case .hostUnavailable: return ExitCode.hostUnavailable
        case .cancelled: return ExitCode.canceled
        case .timeout: return ExitCode.timedOut
        case .internalError: return ExitCode.internalError
        default: return ExitCode.jobFailed
        }
    }
}

enum Version {
    static let string = "0.1.0"
}
