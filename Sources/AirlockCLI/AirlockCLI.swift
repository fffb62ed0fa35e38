import Airlock
import AirlockLog
import Foundation

/// The `airlock` command line: picks the subcommand, runs it, and maps every
/// outcome to an exit code. Only this layer prints errors and exits.
public enum AirlockCLI {
    static let usage = """
        Usage: airlock <command> [options]

        Commands:
          run       run one command in a fresh guest and collect its results
          bench     time the hello job against a bare QEMU boot
          gc        remove guests and files left by jobs whose process died
          help      show this text, or 'airlock help COMMAND'

        Run 'airlock COMMAND --help' for a command's options.
        """

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
        let wantsHelp = rest.first == "--help" || rest.first == "-h"
        switch name {
        case "run":
            if wantsHelp { return printHelp(RunCommand.help) }
            return execute(usage: RunCommand.usage) { () throws -> Int32 in
                let command = try RunCommand.parse(rest, environment: environment)
                try command.validate()
                let logger = bootstrapLogger(debug: command.debug, label: "airlock.run")
                let signals = SignalRelay()
                signals.install()
                return try command.run(logger: logger, signals: signals)
            }
        case "bench":
            if wantsHelp { return printHelp(BenchCommand.help) }
            return execute(usage: BenchCommand.usage) { () throws -> Int32 in
                let command = try BenchCommand.parse(rest, environment: environment)
                let logger = bootstrapLogger(debug: command.debug, label: "airlock.bench")
                return try command.run(logger: logger)
            }
        case "gc":
            if wantsHelp { return printHelp(GCCommand.help) }
            return execute(usage: GCCommand.usage) { () throws -> Int32 in
                try GCCommand.parse(rest, environment: environment).run()
            }
        case "help", "--help", "-h":
            switch rest.first {
            case "run": return printHelp(RunCommand.help)
            case "bench": return printHelp(BenchCommand.help)
            case "gc": return printHelp(GCCommand.help)
            default: return printHelp(usage)
            }
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

    private static func bootstrapLogger(debug: Bool, label: String) -> Logger {
        LoggingSystem.bootstrap(StderrLogHandler(verbose: debug))
        return Logger(label: label, level: debug ? .debug : .info)
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
