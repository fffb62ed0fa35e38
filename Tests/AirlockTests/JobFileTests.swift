import Foundation
import Testing

@testable import Airlock

@Suite("Job spec and batch files")
struct JobFileTests {
    /// A folder holding a workload folder `w` and the given files.
    private func folder(_ files: [String: String]) throws -> URL {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-spec-\(UUID())")
        try FileManager.default.createDirectory(
            at: root.appendingPathComponent("w"), withIntermediateDirectories: true)
        for (name, text) in files {
            try Data(text.utf8).write(to: root.appendingPathComponent(name))
        }
        return root
    }

    private var defaults: JobRequest {
        JobRequest(
            spec: JobSpec(
                image: "tiny", workload: URL(fileURLWithPath: "."), command: [], stateFolder: URL(fileURLWithPath: "/s")
            ))
    }

    private func load(_ text: String) throws(AirlockError) -> JobRequest {
        let root: URL
        do {
            root = try folder(["job.json": text])
        } catch {
            throw AirlockError(.internalError, "test folder")
        }
        defer { try? FileManager.default.removeItem(at: root) }
        let file = root.appendingPathComponent("job.json")
        let request = try JobFile.load(file, defaults: defaults)
        do {
            try request.validate()
        } catch {
            throw error.within(JobFile.source(of: file))
        }
        return request
    }

    @Test("every key is read, durations and sizes in either form, the workload relative to the file")
    func everyKey() throws {
        let root = try folder([
            "job.json": """
            {"image": "tiny", "workload": "w", "command": ["python3", "-c", "print(1)"],
             "env": {"B": "2", "A": "x y"}, "timeout": "1h30m", "bootTimeout": 45, "transferTimeout": 1.5,
             "vcpus": 2, "memory": "1G", "collect": "/work/res", "maxOutput": 1024, "maxResults": "2M",
             "accel": "tcg", "labels": {"model": "m1"}, "priority": 7, "retries": 0, "tcgTimeoutFactor": 2.5}
            """
        ])
        defer { try? FileManager.default.removeItem(at: root) }
        let request = try JobFile.load(root.appendingPathComponent("job.json"), defaults: defaults)
        try request.validate()
        let spec = request.spec
        #expect(spec.workload.path == root.appendingPathComponent("w").standardizedFileURL.path)
        #expect(spec.command == ["python3", "-c", "print(1)"])
        #expect(spec.environment.map { "\($0.0)=\($0.1)" } == ["A=x y", "B=2"])
        #expect(spec.timeout == .seconds(5400))
        #expect(spec.bootTimeout == .seconds(45))
        #expect(spec.bootTimeout(on: .kvm) == .seconds(45) && spec.bootTimeout(on: .tcg) == .milliseconds(112_500))
        #expect(spec.transferTimeout == .milliseconds(1500))
        #expect(spec.vcpus == 2 && spec.memoryMiB == 1024)
        #expect(spec.collectPath == "/work/res")
        #expect(spec.maxOutputBytes == 1024 && spec.collectLimits.maxBytes == 2 << 20)
        #expect(spec.accelerator == .tcg)
        #expect(request.labels == ["model": "m1"] && request.priority == 7 && request.retries == 0)
    }

    /// Bad values from the field (BC-40): each is refused with a message naming the key.
    @Test(
        "impossible values are refused, naming the key and the file",
        arguments: [
            (#"{"workload": "w", "command": ["true"], "timeout": 0}"#, "'timeout' must be positive"),
            (#"{"workload": "w", "command": ["true"], "timeout": -5}"#, "'timeout' is not a duration"),
            (#"{"workload": "w", "command": ["true"], "timeout": "NaN"}"#, "'timeout' is not a duration"),
            (#"{"workload": "w", "command": ["true"], "timeout": 1e309}"#, "'timeout' holds a number too large"),
            (#"{"workload": "w", "command": ["true"], "timeout": "99d"}"#, "'timeout' is not a duration"),
            (#"{"workload": "w", "command": ["true"], "memory": -1}"#, "'memory' is not a positive size"),
            (#"{"workload": "w", "command": ["true"], "cpus": 0}"#, "unknown key 'cpus'"),
            (#"{"workload": "w", "command": ["true"], "vcpus": 0}"#, "vCPUs is out of range"),
            (#"{"workload": "w", "command": ["true"], "tcgTimeoutFactor": 0.5}"#, "TCG timeout factor must be from 1"),
            (#"{"workload": "w", "command": ["true"], "tcgTimeoutFactor": "3"}"#, "must be a number, not a string"),
            (#"{"workload": "w", "command": ["true"], "vcpus": 1.5}"#, "'vcpus' must be a whole number"),
            (
                #"{"workload": "w", "command": ["true"], "vcpus": true}"#,
                "'vcpus' must be a whole number, not true or false"
            ),
            (#"{"workload": "w"}"#, "'command' is missing"),
            (#"{"workload": "w", "command": ""}"#, "'command' must be a list of strings, not a string"),
            (#"{"workload": "w", "command": [""]}"#, "'command' must name a program"),
            (#"{"workload": "w", "command": ["sh", 1]}"#, "element 2 of 'command' must be a string"),
            (#"{"workload": "w", "command": ["true"], "env": {"A=B": "x"}}"#, "'A=B' is not a valid environment"),
            (#"{"workload": "w", "command": ["true"], "env": {"A": "x\u0000y"}}"#, "the value of 'A' contains a NUL"),
            (#"{"workload": "w", "command": ["true"], "results": "../../etc"}"#, "'results' cannot be set"),
            (#"{"workload": "w", "command": ["true"], "timeout": null}"#, "'timeout' is null"),
            (#"{"workload": "missing", "command": ["true"]}"#, "does not exist"),
            (#"{"command": ["true"]}"#, "'workload' is missing"),
            (#"{"workload": "w", "command": ["true"], "collect": "relative"}"#, "must be an absolute guest path"),
            (#"{"workload": "w", "command": ["true"], "retries": 99}"#, "retries 99 is out of range"),
            (#"{"workload": "w", "command": ["true"], "labels": {"bad key": "x"}}"#, "'bad key' is not a valid label"),
            (#"["not", "an", "object"]"#, "must be a JSON object, not a list"),
            (#"{"workload": "w", "command": ["true"]"#, "is not valid JSON"),
        ])
    func refused(_ text: String, _ fragment: String) {
        do {
            _ = try load(text)
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains(fragment), "\(error.message)")
            #expect(error.message.contains("job.json"), "\(error.message)")
        }
    }

    @Test("a spec file must be a regular file: a FIFO is refused without blocking")
    func fifoRefused() throws {
        let root = try folder([:])
        defer { try? FileManager.default.removeItem(at: root) }
        let fifo = root.appendingPathComponent("job.json")
        #expect(mkfifo(fifo.path, 0o600) == 0)
        do {
            _ = try JobFile.load(fifo, defaults: defaults)
            Issue.record("read a FIFO")
        } catch {
            #expect(error.message.contains("is not a regular file"), "\(error.message)")
        }
    }

    @Test("an unknown key suggests the known one it resembles")
    func suggestion() {
        do {
            _ = try load(#"{"workload": "w", "command": ["true"], "boot_timeout": "5s"}"#)
            Issue.record("accepted an unknown key")
        } catch {
            #expect(error.hint?.contains("did you mean 'bootTimeout'?") == true, "\(error.hint ?? "")")
        }
        // Typos within two edits of exactly one key.
        #expect(JobFile.suggestion(for: "comand") == "command")
        #expect(JobFile.suggestion(for: "timout") == "timeout")
        #expect(JobFile.suggestion(for: "priorty") == "priority")
        #expect(JobFile.suggestion(for: "colour") == nil)
    }

    @Test("a batch in JSON lines names the line of a bad job; blank and comment lines are skipped")
    func batchLines() throws {
        let good = #"{"workload": "w", "command": ["true"]}"#
        let root = try folder([
            "ok.jsonl": "# two jobs\n\(good)\n\n{\"workload\": \"w\", \"command\": [\"false\"], \"priority\": 2}\n",
            "bad.jsonl": "\(good)\n\(good)\n{\"workload\": \"w\", \"command\": [\"true\"], \"timeout\": 0}\n",
            "empty.jsonl": "# nothing\n\n",
        ])
        defer { try? FileManager.default.removeItem(at: root) }
        let jobs = try JobFile.loadBatch(root.appendingPathComponent("ok.jsonl"), defaults: defaults)
        #expect(jobs.map(\.spec.command) == [["true"], ["false"]])
        #expect(jobs.map(\.priority) == [0, 2])
        do {
            _ = try JobFile.loadBatch(root.appendingPathComponent("bad.jsonl"), defaults: defaults)
            Issue.record("a bad line was accepted")
        } catch {
            #expect(error.message.contains("bad.jsonl' line 3: 'timeout' must be positive"), "\(error.message)")
        }
        #expect(throws: AirlockError.self) {
            try JobFile.loadBatch(root.appendingPathComponent("empty.jsonl"), defaults: defaults)
        }
    }

    @Test("a batch as a JSON array names the element of a bad job; defaults apply to every job")
    func batchArray() throws {
        let root = try folder([
            "jobs.json":
                #"[{"command": ["a"]}, {"command": ["b"], "labels": {"n": "2"}}, {"command": ["c"], "vcpus": 0}]"#,
            "ok.json": #"[{"command": ["a"]}, {"command": ["b"], "labels": {"n": "2"}}]"#,
        ])
        defer { try? FileManager.default.removeItem(at: root) }
        var base = defaults
        base.spec.workload = root.appendingPathComponent("w")
        base.labels = ["run": "7"]
        do {
            _ = try JobFile.loadBatch(root.appendingPathComponent("jobs.json"), defaults: base, given: ["workload"])
            Issue.record("a bad element was accepted")
        } catch {
            #expect(error.message.contains("element 3"), "\(error.message)")
        }
        let jobs = try JobFile.loadBatch(root.appendingPathComponent("ok.json"), defaults: base, given: ["workload"])
        #expect(jobs.map(\.labels) == [["run": "7"], ["run": "7", "n": "2"]])
    }
}
