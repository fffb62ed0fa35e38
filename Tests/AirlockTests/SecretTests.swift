import Foundation
import Testing

@testable import Airlock

@Suite("Secret")
struct SecretTests {
    private func file(_ bytes: [UInt8]) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("secret-\(UUID())")
        try Data(bytes).write(to: url)
        return url
    }

    @Test("a secret comes from the environment, or from a file without its last newline")
    func values() throws {
        #expect(try Secret(name: "TOKEN").value(environment: ["TOKEN": "abc def"]) == "abc def")
        let withNewline = try file(Array("line one\nline two\n".utf8))
        defer { try? FileManager.default.removeItem(at: withNewline) }
        #expect(try Secret(name: "T", file: withNewline.path).value(environment: [:]) == "line one\nline two")
        let crlf = try file(Array("value\r\n".utf8))
        defer { try? FileManager.default.removeItem(at: crlf) }
        #expect(try Secret(name: "T", file: crlf.path).value(environment: [:]) == "value")
    }

    @Test("a missing, oversized, NUL-holding or non-UTF-8 secret is refused, and the message never holds the value")
    func refusals() throws {
        let big = try file(Array(repeating: UInt8(ascii: "s"), count: Secret.maxBytes + 1))
        let nul = try file([0x61, 0x00, 0x62])
        let binary = try file([0xff, 0xfe, 0x73])
        defer { [big, nul, binary].forEach { try? FileManager.default.removeItem(at: $0) } }
        let cases: [(Secret, [String: String], String)] = [
            (Secret(name: "MISSING"), [:], "is not set in the environment"),
            (Secret(name: "T", file: "/nonexistent/secret"), [:], "cannot read secret 'T'"),
            (Secret(name: "T", file: "/tmp"), [:], "not a regular file"),
            (Secret(name: "T", file: big.path), [:], "is over 64 KiB"),
            (Secret(name: "T", file: nul.path), [:], "contains a NUL byte"),
            (Secret(name: "T", file: binary.path), [:], "is not UTF-8"),
            (Secret(name: "T"), ["T": String(repeating: "v", count: Secret.maxBytes + 1)], "is over 64 KiB"),
        ]
        for (secret, environment, reason) in cases {
            #expect {
                try secret.value(environment: environment)
            } throws: { error in
                let text = "\(error)"
                return text.contains(reason) && !text.contains("sss") && !text.contains("vvv")
            }
        }
    }

    @Test("a job refuses a secret name that is not a variable, or one given twice or also as --env")
    func jobValidation() throws {
        let workload = FileManager.default.temporaryDirectory.appendingPathComponent("workload-\(UUID())")
        try FileManager.default.createDirectory(at: workload, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: workload) }
        var spec = JobSpec(image: "tiny", workload: workload, command: ["true"], stateFolder: workload)
        spec.secrets = [Secret(name: "GOOD")]
        try spec.validate()
        for secrets in [[Secret(name: "1BAD")], [Secret(name: "A"), Secret(name: "A", file: "/f")]] {
            spec.secrets = secrets
            #expect(throws: AirlockError.self) { try spec.validate() }
        }
        spec.secrets = [Secret(name: "HOME")]
        spec.environment = [("HOME", "/root")]
        #expect(throws: AirlockError.self) { try spec.validate() }
        // A secret file is checked, not read, before anything is stored or started.
        spec.environment = []
        spec.secrets = [Secret(name: "T", file: "/nonexistent/secret")]
        #expect {
            try spec.validate()
        } throws: { error in
            "\(error)".contains("of secret 'T' is not a readable file")
        }
    }

    @Test("the stored spec keeps a secret's name and file, never its value")
    func stored() throws {
        var spec = JobSpec(
            image: "tiny", workload: URL(fileURLWithPath: "/w"), command: ["true"],
            stateFolder: URL(fileURLWithPath: "/s"))
        spec.secrets = [Secret(name: "TOKEN"), Secret(name: "KEY", file: "/etc/airlock/key")]
        spec.egress = .allow([.init(host: "127.0.0.1", port: 8080)])
        spec.maxProcesses = 99
        let json = StoredSpec(spec).json()
        let back = try StoredSpec.decode(json, job: "j").spec(base: spec)
        #expect(back.secrets == spec.secrets)
        #expect(back.egress == spec.egress)
        #expect(back.maxProcesses == 99)
        // A spec stored before these keys existed reads with their defaults.
        var old = try #require(try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any])
        old["secrets"] = nil
        old["egress"] = nil
        old["maxProcesses"] = nil
        let oldJSON = String(decoding: try JSONSerialization.data(withJSONObject: old), as: UTF8.self)
        let defaulted = try StoredSpec.decode(oldJSON, job: "j").spec(base: spec)
        #expect(defaulted.secrets.isEmpty && defaulted.egress == .none)
        #expect(defaulted.maxProcesses == JobSpec.defaultMaxProcesses)
    }
}

@Suite("Job limits")
struct JobLimitsTests {
    @Test("the guest's stat lines are read; RAM file systems never count as a full disk")
    func guestStats() {
        let lines: [Substring] = [
            "stat oom_kill 2", "stat pids_max 17", "stat disk ext4 4096 12 524288", "refused 5 ./x",
        ]
        let stats = GuestStats(lines: lines)
        #expect(stats.oomKills == 2 && stats.processLimitHits == 17 && stats.diskFull)
        #expect(!GuestStats(lines: ["stat disk ext4 4096 100000 524288"]).diskFull)
        #expect(!GuestStats(lines: ["stat disk tmpfs 4096 0 524288"]).diskFull)
        #expect(GuestStats(lines: ["stat oom_kill", "stat pids_max x", "garbage"]) == GuestStats())
    }

    @Test("an exit 0 the run script saw otherwise becomes the status or the signal it saw")
    func reconcile() {
        func outcome(_ status: Int32?, state: JobResult.State = .succeeded) -> JobResult {
            var result = JobResult(jobID: "j", state: state, image: "tiny", host: "h", startedAt: Date())
            result.exitCode = state == .succeeded ? 0 : nil
            var stats = GuestStats()
            stats.exitStatus = status
            result.reconcileExit(with: stats)
            return result
        }
        let bus = outcome(135)
        #expect(bus.state == .failed && bus.signal == "BUS" && bus.exitCode == nil && bus.processExitCode == 135)
        let three = outcome(3)
        #expect(three.state == .failed && three.exitCode == 3 && three.processExitCode == 3)
        #expect(outcome(0).state == .succeeded)
        #expect(outcome(nil).state == .succeeded)
        #expect(outcome(135, state: .timedOut).signal == nil)
        #expect(GuestStats(lines: ["stat exit 300"]).exitStatus == nil)
        #expect(GuestStats(lines: ["stat exit 153"]).exitStatus == 153)
    }

    @Test("every limit a job ran into is named, with the option that sets it")
    func hits() {
        let spec = JobSpec(
            image: "tiny", workload: URL(fileURLWithPath: "/w"), command: ["true"],
            stateFolder: URL(fileURLWithPath: "/s"))
        var result = JobResult(jobID: "j", state: .timedOut, image: "tiny", host: "h", startedAt: Date())
        result.stdoutTruncated = true
        result.stdoutBytes = 5 << 30
        var report = CollectReport()
        report.limitReached = "more than 50000 entries"
        result.collected = report
        var stats = GuestStats()
        stats.oomKills = 1
        stats.processLimitHits = 3
        stats.diskFull = true
        result.noteLimits(spec, guest: stats)
        let names = result.limitsHit?.map(\.limit) ?? []
        #expect(names == ["timeout", "stdout", "memory", "processes", "disk", "resultFiles"])
        #expect(result.limitsHit?.allSatisfy { $0.detail.contains("--") } == true)

        var clean = JobResult(jobID: "j", state: .succeeded, image: "tiny", host: "h", startedAt: Date())
        clean.noteLimits(spec, guest: GuestStats())
        #expect(clean.limitsHit == nil)
    }
}
