import Airlock
import Foundation
import Testing

@testable import AirlockCLI

@Suite("airlock submit and the queue commands' argument parsing")
struct SubmitCommandTests {
    private func folder(_ files: [String: String]) throws -> URL {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-submit-\(UUID())")
        try FileManager.default.createDirectory(at: root.appendingPathComponent("w"), withIntermediateDirectories: true)
        for (name, text) in files {
            try Data(text.utf8).write(to: root.appendingPathComponent(name))
        }
        return root
    }

    @Test("options are defaults for the lines of a batch, which may override them")
    func batchDefaults() throws {
        let root = try folder([
            "b.jsonl": #"{"workload": "w", "command": ["a"]}"# + "\n"
                + #"{"workload": "w", "command": ["b"], "timeout": "5m", "labels": {"x": "1"}}"# + "\n"
        ])
        defer { try? FileManager.default.removeItem(at: root) }
        let command = try SubmitCommand.parse(
            ["--batch", root.appendingPathComponent("b.jsonl").path, "--timeout", "2m", "--label", "run=3"],
            environment: ["AIRLOCK_STATE_DIR": "/s"])
        #expect(command.asBatch)
        #expect(command.requests.map(\.spec.timeout) == [.seconds(120), .seconds(300)])
        #expect(command.requests.map(\.labels) == [["run": "3"], ["run": "3", "x": "1"]])
        #expect(command.stateFolder.path == "/s")
    }

    @Test("options after -f override the spec file, and a command after -- replaces its command")
    func fileOverrides() throws {
        let root = try folder(["job.json": #"{"workload": "w", "command": ["a"], "vcpus": 2, "priority": 1}"#])
        defer { try? FileManager.default.removeItem(at: root) }
        let file = root.appendingPathComponent("job.json").path
        let command = try SubmitCommand.parse(["-f", file, "--vcpus", "1", "--", "b", "c"], environment: [:])
        #expect(!command.asBatch)
        #expect(command.requests.count == 1)
        #expect(command.requests[0].spec.vcpus == 1)
        #expect(command.requests[0].spec.command == ["b", "c"])
        #expect(command.requests[0].priority == 1)
        let run = try RunCommand.parse(["--file=\(file)", "--memory", "1G"], environment: [:])
        #expect(run.spec.command == ["a"] && run.spec.vcpus == 2 && run.spec.memoryMiB == 1024)
    }

    @Test(
        "conflicting or misplaced options are usage errors",
        arguments: [
            (["-f", "a.json", "--batch", "b.jsonl"], "either -f FILE or --batch FILE"),
            (["--workload", "w", "--results", "r", "--", "true"], "'--results' does not apply"),
            (["--", "true"], "missing --workload, -f FILE or --batch FILE"),
            (["--workload", "w", "--label", "novalue", "--", "true"], "KEY=VALUE"),
            (["-f", "a.json", "-f", "b.json"], "may be given only once"),
            (["-f", "/nonexistent/job.json"], "does not exist"),
        ])
    func usageErrors(_ arguments: [String], _ fragment: String) {
        do {
            _ = try SubmitCommand.parse(arguments, environment: [:])
            Issue.record("parsed \(arguments)")
        } catch {
            #expect(error.message.contains(fragment), "\(error.message)")
        }
    }

    @Test("ls refuses an unknown state and names the known ones; collect and cancel need a job or a batch")
    func queueCommands() {
        #expect(throws: UsageError.self) { try ListCommand.parse(["--state", "done"], environment: [:]) }
        #expect(throws: UsageError.self) { try CollectCommand.parse([], environment: [:]) }
        #expect(throws: UsageError.self) { try CollectCommand.parse(["abc", "--batch", "def"], environment: [:]) }
        #expect(throws: UsageError.self) { try CancelCommand.parse([], environment: [:]) }
        #expect(throws: UsageError.self) { try ControllerCommand.parse(["--cpu-overcommit", "0"], environment: [:]) }
        #expect(throws: UsageError.self) { try ControllerCommand.parse(["--concurrency", "0"], environment: [:]) }
    }
}
