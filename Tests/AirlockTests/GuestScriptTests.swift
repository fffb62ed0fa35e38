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

    @Test("the run script exports each variable verbatim and execs the quoted command")
    func runScript() throws {
        let script = GuestScript.run(command: ["printf", "%s|%s", "a b"], environment: [("V", "x'y\n$z")])
        #expect(script.contains("export V='x'\\''y\n$z'"))
        #expect(script.hasSuffix("exec 'printf' '%s|%s' 'a b'"))
    }

    @Test(
        "environment names are checked",
        arguments: [("OK", true), ("_x1", true), ("1X", false), ("A-B", false), ("", false), ("A B", false)])
    func environmentNames(_ name: String, _ valid: Bool) {
        #expect(GuestScript.isValidEnvironmentName(name) == valid)
    }
}
