import Foundation
import Testing

@testable import Airlock

@Suite("GuestScript")
struct GuestScriptTests {
    /// Runs `sh -c` locally and returns its stdout bytes.
    private func shell(_ script: String) throws -> [UInt8] {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return Array(data)
    }

    @Test(
        "quoted words reach a POSIX shell byte for byte",
        arguments: [
            "plain", "with space", "it's", "\"double\"", "$HOME and $(id) and `id`", "back\\slash",
            "new\nline", "tab\there", "ünïcödé ✓", "", "'", "*", "-n",
        ])
    func quoting(_ value: String) throws {
        let output = try shell("printf '%s' \(GuestScript.quote(value))")
        #expect(output == Array(value.utf8))
    }

    @Test("the run script exports each variable verbatim and runs the quoted command")
    func runScript() throws {
        let script = GuestScript.run(command: ["printf", "%s|%s", "a b"], environment: [("V", "x'y\n$z")])
        #expect(script.contains("export V='x'\\''y\n$z'"))
        #expect(script.contains("\n'printf' '%s|%s' 'a b'\nairlock_status=$?\n"))
    }

    /// Runs a piece of the run script in a local shell; never the whole
    /// script, which sets up cgroups that belong to a guest.
    private func runLocally(_ script: String, input: String = "") throws -> (status: Int32, out: String, err: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", script]
        let stdin = Pipe()
        let stdout = Pipe()
        let stderr = Pipe()
        process.standardInput = stdin
        process.standardOutput = stdout
        process.standardError = stderr
        try process.run()
        stdin.fileHandleForWriting.write(Data(input.utf8))
        try stdin.fileHandleForWriting.close()
        let out = String(decoding: stdout.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let err = String(decoding: stderr.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return (process.terminationStatus, out, err)
    }

    @Test("secrets read from standard input arrive byte for byte, and are in no command line")
    func secretsOnStandardInput() throws {
        let secrets = [("A", "plain"), ("B", "with 'quotes' and $(id)\nand a trailing newline\n"), ("C", "ünï ✓")]
        let command = ["sh", "-c", "printf '%s|' \"$A\" \"$B\" \"$C\""]
        let script = GuestScript.run(command: command, environment: [], readsSecrets: true)
        #expect(script.contains(GuestScript.secretsReader))
        for (_, value) in secrets {
            #expect(!script.contains(value))
        }
        let run = try runLocally(
            GuestScript.secretsReader + "\n" + GuestScript.start(command), input: GuestScript.secretLines(secrets))
        #expect(run.out == secrets.map { $0.1 + "|" }.joined())
    }

    @Test(
        "the script ends as the command did, by exit code or by the same signal, and leaves the status behind",
        arguments: [("exit 3", 3, false, "3"), ("kill -USR1 $$", 10, true, "138"), ("exit 0", 0, false, "0")])
    func endsAsTheCommandDid(_ body: String, _ code: Int32, _ signaled: Bool, _ recorded: String) throws {
        let statusFile = FileManager.default.temporaryDirectory.appendingPathComponent("exit-\(UUID())").path
        defer { unlink(statusFile) }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", GuestScript.start(["sh", "-c", body], statusFile: statusFile)]
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationStatus == code)
        #expect((process.terminationReason == .uncaughtSignal) == signaled)
        let status = try String(contentsOfFile: statusFile, encoding: .utf8)
        #expect(status == recorded + "\n")
    }

    @Test("a program the guest does not have is named, with exit status 127")
    func missingProgram() throws {
        let run = try runLocally(GuestScript.start(["no-such-program-here", "x"]))
        #expect(run.status == 127)
        #expect(run.err == "airlock: no-such-program-here: command not found in the guest\n")
    }

    @Test(
        "environment names are checked",
        arguments: [("OK", true), ("_x1", true), ("1X", false), ("A-B", false), ("", false), ("A B", false)])
    func environmentNames(_ name: String, _ valid: Bool) {
        #expect(GuestScript.isValidEnvironmentName(name) == valid)
    }
}
