import Airlock
import Foundation
import Testing

@testable import AirlockCLI

@Suite("airlock run argument parsing")
struct RunCommandTests {
    private func parse(_ arguments: [String], environment: [String: String] = [:]) throws(UsageError) -> RunCommand {
        try RunCommand.parse(arguments, environment: environment)
    }

    @Test("flags, repeated --env and the command after --")
    func parsesEverything() throws {
        let command = try parse([
            "--image", "tiny", "--workload", "/w", "--env", "A=1", "--env=B=x=y", "--timeout", "1h30m",
            "--boot-timeout", "45s", "--tcg-timeout-factor", "4", "--vcpus", "2", "--memory", "1G", "--collect",
            "/work/res", "--results", "/r",
            "--accel", "tcg", "--json", "--", "python3", "-c", "print('--')",
        ])
        #expect(command.spec.image == "tiny")
        #expect(command.spec.workload.path == "/w")
        #expect(command.spec.environment.map { "\($0.0)=\($0.1)" } == ["A=1", "B=x=y"])
        #expect(command.spec.timeout == .seconds(5400))
        #expect(command.spec.bootTimeout == .seconds(45))
        #expect(command.spec.bootTimeout(on: .tcg) == .seconds(180))
        #expect(command.spec.vcpus == 2)
        #expect(command.spec.memoryMiB == 1024)
        #expect(command.spec.collectPath == "/work/res")
        #expect(command.spec.resultsFolder?.path == "/r")
        #expect(command.spec.accelerator == .tcg)
        #expect(command.json)
        #expect(command.spec.command == ["python3", "-c", "print('--')"])
    }

    @Test("the state folder comes from the flag, then the environment, then the default")
    func stateFolder() throws {
        #expect(try parse(["--workload", "w"]).spec.stateFolder.path == "/var/lib/airlock")
        #expect(try parse(["--workload", "w"], environment: ["AIRLOCK_STATE_DIR": "/s"]).spec.stateFolder.path == "/s")
        #expect(
            try parse(["--workload", "w", "--state-dir", "/f"], environment: ["AIRLOCK_STATE_DIR": "/s"]).spec
                .stateFolder.path == "/f")
    }

    @Test(
        "bad values are usage errors that name the token",
        arguments: [
            (["--workload", "w", "--timeout", "soon"], "'soon' is not a duration"),
            (["--workload", "w", "--memory", "lots"], "'lots' is not a size"),
            (["--workload", "w", "--accel", "fast"], "'fast' is not an acceleration mode"),
            (["--workload", "w", "--tcg-timeout-factor", "nan"], "'nan' is not a number for --tcg-timeout-factor"),
            (["--workload", "w", "--env", "NOVALUE"], "NAME=VALUE"),
            (["--workload", "w", "--frob"], "unknown option '--frob'"),
            (["--workload"], "option '--workload' needs a value"),
            (["--", "true"], "missing --workload"),
            (["--workload", "w", "stray"], "unexpected argument 'stray'"),
        ])
    func usageErrors(_ arguments: [String], _ fragment: String) {
        do {
            _ = try parse(arguments)
            Issue.record("parsed \(arguments)")
        } catch {
            #expect(error.message.contains(fragment), "\(error.message)")
        }
    }

    @Test(
        "durations", arguments: [("90", 90.0), ("90s", 90), ("5m", 300), ("2h", 7200), ("1.5s", 1.5), ("1h30m", 5400)])
    func durations(_ text: String, _ seconds: Double) throws {
        #expect(try ValueParser.duration(text, option: "--timeout") == .milliseconds(Int64(seconds * 1000)))
    }

    @Test(
        "negative, malformed and too long durations are usage errors naming the option",
        arguments: ["-5", "5x", "1e9", "31d", "99999999999999999999"])
    func badDuration(_ text: String) {
        #expect(throws: UsageError.self) { try ValueParser.duration(text, option: "--timeout") }
    }

    @Test("a size that overflows is a usage error, not a crash")
    func hugeSize() {
        #expect(throws: UsageError.self) {
            try ValueParser.size("99999999999999999", option: "--memory", defaultUnit: 1 << 20)
        }
    }

    @Test("Airlock's error codes map to the documented exit codes")
    func exitCodes() {
        #expect(AirlockCLI.exitCode(for: AirlockError(.invalidArgument, "x")) == 64)
        #expect(AirlockCLI.exitCode(for: AirlockError(.notFound, "x")) == 64)
        #expect(AirlockCLI.exitCode(for: AirlockError(.imageInvalid, "x")) == 66)
        #expect(AirlockCLI.exitCode(for: AirlockError(.hostUnavailable, "x")) == 69)
        #expect(AirlockCLI.exitCode(for: AirlockError(.guestFailed, "x")) == 125)
        #expect(AirlockCLI.exitCode(for: AirlockError(.cancelled, "x")) == 130)
    }
}
