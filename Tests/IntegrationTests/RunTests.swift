import Foundation
import Libvirt
import Synchronization
import Testing

/// `airlock run` end to end with real guests under the real libvirtd. One
/// guest at a time; after every job, nothing of it may be left.
extension Integration {
    @Suite("airlock run with real guests", .serialized)
    struct RunTests {
        init() throws {
            try Harness.requireLibvirt()
        }

        // MARK: - Exit codes and signals

        @Test("the hello example succeeds with its output and result files")
        func helloExample() throws {
            let outcome = try Harness.run([
                "--workload", "examples/hello", "--env", "HELLO_GREETING=hi there", "--", "sh", "run.sh",
            ])
            #expect(outcome.status == 0, "\(outcome.stderrText)")
            #expect(outcome.stdoutText.hasPrefix("hello from airlock"))
            #expect(try String(decoding: outcome.file("stderr"), as: UTF8.self) == "this line goes to stderr\n")
            #expect(try String(decoding: outcome.file("out/greeting.txt"), as: UTF8.self) == "greeting=hi there\n")
            let result = try outcome.result()
            #expect(result["state"] as? String == "succeeded")
            #expect(result["exitCode"] as? Int == 0)
            let phases = try #require(result["phases"] as? [String: Double])
            for phase in ["define", "bootToSSH", "upload", "run", "collect", "destroy", "total"] {
                #expect(phases[phase] != nil, "phase \(phase) missing")
            }
            // libvirt's defaults here: QEMU as its own user, under a seccomp filter.
            let qemu = try #require(result["qemu"] as? [String: Any], "result.json says nothing of QEMU's confinement")
            #expect(qemu["user"] as? String == "libvirt-qemu")
            #expect((qemu["uid"] as? Int ?? 0) != 0)
            #expect(qemu["seccomp"] as? Bool == true)
            #expect(!outcome.stderrText.contains("QEMU runs as root"))
            try Harness.expectNothingLeft()
        }

        @Test("a non-zero exit is passed through and the job counts as failed")
        func exitThree() throws {
            let outcome = try Harness.run([
                "--workload", "examples/hello", "--env", "HELLO_EXIT=3", "--", "sh", "run.sh",
            ])
            #expect(outcome.status == 3)
            let result = try outcome.result()
            #expect(result["state"] as? String == "failed")
            #expect(result["exitCode"] as? Int == 3)
            try Harness.expectNothingLeft()
        }

        @Test(
            "death by signal is reported as the signal, 128+N, and promptly", arguments: [("KILL", 137), ("TERM", 143)])
        func deathBySignal(_ signal: String, _ code: Int32) throws {
            let outcome = try Harness.run(["--workload", "examples/hello", "--", "sh", "-c", "kill -\(signal) $$"])
            #expect(outcome.status == code)
            let result = try outcome.result()
            #expect(result["signal"] as? String == signal)
            #expect(result["exitCode"] == nil)
            let run = try #require((result["phases"] as? [String: Double])?["run"])
            #expect(run < 2)
            try Harness.expectNothingLeft()
        }

        @Test("a command killed by the OOM killer is signaled(KILL), not exit 0")
        func outOfMemory() throws {
            let outcome = try Harness.run(
                ["--workload", "examples/hello", "--memory", "256M", "--", "sh", "-c", "exec tail /dev/zero"])
            #expect(outcome.status == 137, "\(outcome.stderrText)")
            #expect(try outcome.result()["signal"] as? String == "KILL")
            try Harness.expectNothingLeft()
        }

        // MARK: - Output

        @Test("stdout and stderr stay apart, LF only, and no TTY is requested")
        func streamsApart() throws {
            let outcome = try Harness.run(
                [
                    "--workload", "examples/hello", "--", "sh", "-c",
                    "echo out; echo err >&2; [ -t 0 ] || [ -t 1 ] && echo tty",
                ])
            #expect(try outcome.file("stdout") == Data("out\n".utf8))
            #expect(try outcome.file("stderr") == Data("err\n".utf8))
            try Harness.expectNothingLeft()
        }

        @Test("10 MB of stdout with no newline arrives whole, stderr beside it, exit 3")
        func bigOutputArrivesWhole() throws {
            let script =
                "head -c 10485760 /dev/urandom > /tmp/d; base64 /tmp/d | tr -d '\\n'; sha256sum /tmp/d >&2; echo ERR-MARK >&2; exit 3"
            let outcome = try Harness.run(["--workload", "examples/hello", "--quiet", "--", "sh", "-c", script])
            #expect(outcome.status == 3)
            let stdout = try outcome.file("stdout")
            #expect(!stdout.contains(UInt8(ascii: "\n")))
            let decoded = try #require(Data(base64Encoded: stdout))
            #expect(decoded.count == 10_485_760)
            let stderr = String(decoding: try outcome.file("stderr"), as: UTF8.self)
            #expect(stderr.hasPrefix(SHA256.hex(decoded)))
            #expect(stderr.contains("ERR-MARK"))
            try Harness.expectNothingLeft()
        }

        @Test("binary bytes on stdout arrive unchanged and match the collected copy")
        func binaryBytes() throws {
            let outcome = try Harness.run(
                [
                    "--workload", "examples/hello", "--quiet", "--", "sh", "-c",
                    "mkdir -p out && head -c 1048576 /dev/urandom > out/r.bin && cat out/r.bin",
                ])
            #expect(outcome.status == 0)
            let stdout = try outcome.file("stdout")
            #expect(stdout.count == 1_048_576)
            #expect(stdout == (try outcome.file("out/r.bin")))
            try Harness.expectNothingLeft()
        }

        // MARK: - Environment and workload

        @Test("environment values with spaces, quotes, $, newlines and UTF-8 arrive verbatim")
        func environmentVerbatim() throws {
            let values = ["with space", "it's \"quoted\"", "$HOME $(id) `id` \\n", "line1\nline2\n", "ünïcödé ✓ 日本"]
            var arguments = ["--workload", "examples/hello"]
            for (index, value) in values.enumerated() {
                arguments += ["--env", "V\(index)=\(value)"]
            }
            arguments += ["--", "sh", "-c", "printf '%s\\0' \"$V0\" \"$V1\" \"$V2\" \"$V3\" \"$V4\""]
            let outcome = try Harness.run(arguments)
            #expect(outcome.status == 0)
            let parts = try outcome.file("stdout").split(separator: 0, omittingEmptySubsequences: false).dropLast()
            #expect(parts.map { String(decoding: $0, as: UTF8.self) } == values)
            try Harness.expectNothingLeft()
        }

        @Test("modes survive the upload: ./run.sh runs and secret.txt stays 0600")
        func modesKept() throws {
            let workload = try Harness.workload([
                "run.sh": ("#!/bin/sh\necho hi\n", 0o755), "secret.txt": ("s", 0o600),
            ])
            defer { try? FileManager.default.removeItem(at: workload) }
            let outcome = try Harness.run([
                "--workload", workload.path, "--", "sh", "-c", "./run.sh && stat -c %a secret.txt",
            ])
            #expect(outcome.status == 0)
            #expect(outcome.stdoutText == "hi\n600\n")
            try Harness.expectNothingLeft()
        }

        @Test("every workload entry arrives: dotfiles, ignored folders, empty folders, big files")
        func nothingFiltered() throws {
            let big = String(repeating: "0123456789abcdef", count: 20 * 65_536)  // 20 MiB
            let workload = try Harness.workload([
                ".gitignore": ("bin/\n", 0o644), "bin/tool": ("#!/bin/sh\n", 0o755), ".env": ("K=V\n", 0o600),
                "mid.txt": (String(repeating: "x", count: 20_000), 0o644), "big.txt": (big, 0o644),
            ])
            try FileManager.default.createDirectory(
                at: workload.appendingPathComponent("empty"), withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: workload) }
            let outcome = try Harness.run(
                ["--workload", workload.path, "--", "sh", "-c", "ls -A; sha256sum big.txt | cut -d' ' -f1"])
            #expect(outcome.status == 0)
            let lines = outcome.stdoutText.split(separator: "\n").map(String.init)
            #expect(
                Set(lines.dropLast()) == [".env", ".gitignore", "big.txt", "bin", "empty", "mid.txt", "out"]
                    || Set(lines.dropLast()) == [".env", ".gitignore", "big.txt", "bin", "empty", "mid.txt"])
            #expect(lines.last == SHA256.hex(Data(big.utf8)))
            try Harness.expectNothingLeft()
        }

        // MARK: - Hostile results

        @Test("links, FIFOs and escaping names in out/ are refused; plain files come back; nothing outside")
        func hostileResults() throws {
            let results = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-it-hostile-\(UUID())")
            let sentinel = results.deletingLastPathComponent().appendingPathComponent("airlock-sentinel-\(UUID())")
            try Data("sentinel".utf8).write(to: sentinel)
            defer { try? FileManager.default.removeItem(at: sentinel) }
            let script = """
                mkdir -p out/d && ln -s /etc/shadow out/shadow && ln -s ../../.. out/up && ln -s /home out/abs
                mkfifo out/fifo && echo ok > out/f && printf 'x' > "out/a$(printf '\\033')[2Jb"
                """
            let outcome = try Harness.run(["--workload", "examples/hello", "--", "sh", "-c", script], results: results)
            #expect(outcome.status == 0, "\(outcome.stderrText)")
            #expect(try outcome.file("out/f") == Data("ok\n".utf8))
            let out = results.appendingPathComponent("out")
            let names = try FileManager.default.contentsOfDirectory(atPath: out.path).sorted()
            #expect(names == ["a\u{1b}[2Jb", "d", "f"])
            for link in ["shadow", "up", "abs", "fifo"] {
                #expect(
                    (try? FileManager.default.destinationOfSymbolicLink(atPath: out.appendingPathComponent(link).path))
                        == nil)
            }
            #expect(try Data(contentsOf: sentinel) == Data("sentinel".utf8))
            #expect(!outcome.stderrText.contains("\u{1b}"), "a raw escape reached the terminal")
            #expect(outcome.stderrText.contains("a\\x1b[2Jb") || outcome.stderrText.contains("not collected"))
            try Harness.expectNothingLeft()
        }

        @Test("background processes are killed when the command ends, so the job ends and results are stable")
        func backgroundProcessesKilled() throws {
            let script =
                "mkdir -p out; setsid sh -c 'while :; do date >> out/grow.log; sleep 0.1; done' & sleep 1; exit 0"
            let outcome = try Harness.run([
                "--workload", "examples/hello", "--timeout", "60s", "--", "sh", "-c", script,
            ])
            #expect(outcome.status == 0)
            let run = try #require((try outcome.result()["phases"] as? [String: Double])?["run"])
            #expect(run < 10)
            let collected = try #require((try outcome.result()["collected"]) as? [String: Any])
            #expect(collected["bytes"] as? Int == (try outcome.file("out/grow.log")).count)
            try Harness.expectNothingLeft()
        }

        // MARK: - Time limits

        @Test("--timeout 3 on sleep 600 ends as timed_out soon after the deadline, exit 124")
        func timeout() throws {
            let outcome = try Harness.run(
                [
                    "--workload", "examples/hello", "--timeout", "3", "--", "sh", "-c",
                    "sh -c 'sleep 1000; :' & sleep 600; :",
                ])
            #expect(outcome.status == 124)
            let result = try outcome.result()
            #expect(result["state"] as? String == "timed_out")
            let run = try #require((result["phases"] as? [String: Double])?["run"])
            #expect(run >= 3 && run < 8)
            try Harness.expectNothingLeft()
        }

        @Test("a command that exits 124 by itself is exited(124), not a timeout")
        func exit124IsNotTimeout() throws {
            let outcome = try Harness.run(["--workload", "examples/hello", "--", "sh", "-c", "exit 124"])
            #expect(outcome.status == 124)
            #expect(try outcome.result()["state"] as? String == "failed")
            #expect(try outcome.result()["exitCode"] as? Int == 124)
            try Harness.expectNothingLeft()
        }

        @Test(
            "a guest that never starts SSH fails within the boot deadline (longer under TCG), with its console tail")
        func bootDeadline() throws {
            let image = try TestImages.sleeper()
            let outcome = try Harness.run(
                [
                    "--images", TestImages.catalog.path, "--image", image, "--workload", "examples/hello",
                    "--boot-timeout", "4s", "--tcg-timeout-factor", "2.5",
                    "--", "true",
                ])
            #expect(outcome.status == 125)
            let emulated = try outcome.result()["accelerator"] as? String == "tcg"
            #expect(outcome.elapsed > (emulated ? .seconds(10) : .seconds(4)))
            #expect(outcome.elapsed < .seconds(25))
            let limit = emulated ? "10 s (the boot timeout of 4 s × 2.5 under TCG)" : "4 s"
            #expect(outcome.stderrText.contains("did not become ready within \(limit)"), "\(outcome.stderrText)")
            #expect(outcome.stderrText.contains("this guest never starts SSH"))
            try Harness.expectNothingLeft()
        }

        @Test("a guest presenting another host key is refused")
        func hostKeyMismatch() throws {
            let image = try TestImages.rogueHostKey()
            let outcome = try Harness.run(
                ["--images", TestImages.catalog.path, "--image", image, "--workload", "examples/hello", "--", "true"])
            #expect(outcome.status == 125)
            #expect(outcome.stderrText.contains("host key mismatch"))
            try Harness.expectNothingLeft()
        }

        // MARK: - Ctrl-C

        @Test("Ctrl-C while the command runs stops the job, removes the guest and exits 130", arguments: [1.0, 7.0])
        func interrupt(after seconds: Double) throws {
            let outcome = try Harness.run(["--workload", "examples/hello", "--", "sleep", "600"]) { process in
                Thread.sleep(forTimeInterval: seconds)
                kill(process.processIdentifier, SIGINT)
            }
            #expect(outcome.status == 130)
            #expect(outcome.elapsed < .seconds(seconds + 10))
            #expect(try outcome.result()["state"] as? String == "canceled")
            try Harness.expectNothingLeft()
        }

        // MARK: - Limits and faults

        @Test("--max-output keeps the head of stdout, flags it, and stderr keeps its own budget")
        func outputCap() throws {
            let script = "head -c 3000000 /dev/zero; echo ERR-MARK >&2; exit 3"
            let outcome = try Harness.run(
                ["--workload", "examples/hello", "--quiet", "--max-output", "1M", "--", "sh", "-c", script])
            #expect(outcome.status == 3)
            let result = try outcome.result()
            #expect(result["stdoutTruncated"] as? Bool == true)
            #expect(result["stdoutBytes"] as? Int == 3_000_000)
            #expect(try outcome.file("stdout").count == 1 << 20)
            #expect(result["stderrTruncated"] as? Bool == false)
            #expect(try outcome.file("stderr") == Data("ERR-MARK\n".utf8))
            try Harness.expectNothingLeft()
        }

        @Test("a 1 TiB sparse file is refused by size without being sent; small files still come back")
        func sparseResult() throws {
            let script =
                "mkdir -p out && dd if=/dev/zero of=out/sparse.img bs=1 count=0 seek=1099511627776 && echo ok > out/small.txt"
            let outcome = try Harness.run(
                ["--workload", "examples/hello", "--max-results", "100M", "--", "sh", "-c", script])
            #expect(outcome.status == 0, "\(outcome.stderrText)")
            #expect(try outcome.file("out/small.txt") == Data("ok\n".utf8))
            #expect(
                !FileManager.default.fileExists(atPath: outcome.results.appendingPathComponent("out/sparse.img").path))
            #expect(outcome.stderrText.contains("'sparse.img': result exceeds limit (1 TiB > 100 MiB)"))
            let collect = try #require((try outcome.result()["phases"] as? [String: Double])?["collect"])
            #expect(collect < 5)
            try Harness.expectNothingLeft()
        }

        @Test("a guest that panics fails at once, quoting the panic from its console")
        func kernelPanic() throws {
            let image = try TestImages.panicker()
            let outcome = try Harness.run(
                ["--images", TestImages.catalog.path, "--image", image, "--workload", "examples/hello", "--", "true"])
            #expect(outcome.status == 125)
            #expect(outcome.elapsed < .seconds(20))
            #expect(outcome.stderrText.contains("stopped before it became ready"))
            #expect(outcome.stderrText.contains("Kernel panic"))
            try Harness.expectNothingLeft()
        }

        @Test("a guest powering itself off mid-job fails the job with a clear reason")
        func guestPowersOff() throws {
            let outcome = try Harness.run(["--workload", "examples/hello", "--", "sh", "-c", "sleep 1; poweroff -f"])
            #expect(outcome.status == 125)
            #expect(outcome.stderrText.contains("stopped while the command ran"), "\(outcome.stderrText)")
            try Harness.expectNothingLeft()
        }

        @Test("a guest paused mid-command is found dead by keepalives, not after the job timeout")
        func pausedGuestDetected() throws {
            let outcome = try Harness.run(["--workload", "examples/hello", "--timeout", "30m", "--", "sleep", "900"]) {
                _ in
                Thread.sleep(forTimeInterval: 9)
                TestImages.suspendAirlockDomains()
            }
            #expect(outcome.status == 125)
            #expect(outcome.elapsed < .seconds(90))
            #expect(outcome.stderrText.contains("connection to guest"), "\(outcome.stderrText)")
            try Harness.expectNothingLeft()
        }

        @Test("a workload holding a FIFO is refused before any guest starts")
        func fifoInWorkload() throws {
            let workload = try Harness.workload(["run.sh": ("true\n", 0o755)])
            defer { try? FileManager.default.removeItem(at: workload) }
            mkfifo(workload.appendingPathComponent("pipe").path, 0o644)
            let outcome = try Harness.run(["--workload", workload.path, "--", "true"])
            #expect(outcome.status == 64)
            #expect(outcome.stderrText.contains("'pipe' in workload folder"))
            #expect(outcome.elapsed < .seconds(3))
            try Harness.expectNothingLeft()
        }

        // MARK: - Side by side

        @Test("three jobs at once get distinct ports, all on 127.0.0.1, and all succeed")
        func concurrentJobs() throws {
            let outcomes = Mutex<[Int: Harness.Outcome]>([:])
            let listeners = Mutex<Set<String>>([])
            DispatchQueue.concurrentPerform(iterations: 4) { index in
                if index == 3 {
                    // Sample the listening sockets while the guests run.
                    for _ in 0..<40 {
                        Thread.sleep(forTimeInterval: 0.5)
                        let found = Harness.qemuListeners()
                        listeners.withLock { $0.formUnion(found) }
                    }
                    return
                }
                let outcome = try? Harness.run([
                    "--workload", "examples/hello", "--", "sh", "-c", "sleep 3; echo \(index)",
                ])
                outcomes.withLock { $0[index] = outcome }
            }
            let seen = listeners.withLock { $0 }
            var ports: Set<Int> = []
            for index in 0..<3 {
                let outcome = try #require(outcomes.withLock { $0[index] })
                #expect(outcome.status == 0, "\(outcome.stderrText)")
                #expect(outcome.stdoutText == "\(index)\n")
                ports.insert(try #require(try outcome.result()["sshPort"] as? Int))
            }
            #expect(ports.count == 3)
            #expect(!seen.isEmpty)
            #expect(seen.allSatisfy { $0.hasPrefix("127.0.0.1:") }, "\(seen)")
            try Harness.expectNothingLeft()
        }

        @Test("a second Ctrl-C leaves at once and names what it left behind")
        func secondInterrupt() throws {
            let outcome = try Harness.run(["--workload", "examples/hello", "--", "sleep", "600"]) { process in
                Thread.sleep(forTimeInterval: 0.3)
                kill(process.processIdentifier, SIGINT)
                Thread.sleep(forTimeInterval: 0.2)
                kill(process.processIdentifier, SIGINT)
            }
            #expect(outcome.status == 130)
            #expect(outcome.elapsed < .seconds(5))
            // Whatever was left is named, so that it can be removed by hand. A
            // domain libvirt was still creating appears a moment later.
            Thread.sleep(forTimeInterval: 2)
            let connection = try Connection(uri: "qemu:///system")
            defer { connection.close() }
            for domain in try connection.allDomains() where domain.name.hasPrefix("airlock-") {
                #expect(outcome.stderrText.contains(domain.name))
                try domain.destroy()
            }
            let run = Harness.stateFolder.appendingPathComponent("run")
            for folder in (try? FileManager.default.contentsOfDirectory(atPath: run.path)) ?? [] {
                #expect(outcome.stderrText.contains(folder))
                try FileManager.default.removeItem(at: run.appendingPathComponent(folder))
            }
            try Harness.expectNothingLeft()
        }

        @Test("after SIGKILL of airlock, gc finds the guest by its metadata and removes it and its files")
        func gcAfterKill() throws {
            let results = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-it-kill-\(UUID())")
            let outcome = try Harness.run(["--workload", "examples/hello", "--", "sleep", "600"], results: results) {
                process in
                Thread.sleep(forTimeInterval: 9)
                kill(process.processIdentifier, SIGKILL)
            }
            #expect(outcome.status == 9 || outcome.status == 137)
            let connection = try Connection(uri: "qemu:///system")
            defer { connection.close() }
            let left = try connection.allDomains().map(\.name).filter { $0.hasPrefix("airlock-") }
            #expect(left.count == 1, "the killed job's guest should still run before gc: \(left)")

            let gc = try Harness.invoke(["gc"], results: results)
            #expect(gc.status == 0)
            for name in left {
                #expect(gc.stdoutText.contains("destroyed domain \(name)"))
            }
            #expect(gc.stdoutText.contains("removed folder"))
            try Harness.expectNothingLeft()

            let again = try Harness.invoke(["gc"], results: results)
            #expect(again.stdoutText.isEmpty)
            #expect(again.stderrText.contains("nothing to remove"))
        }

        @Test("gc leaves a job whose airlock process still runs alone")
        func gcSparesLiveJobs() throws {
            let gcOutput = Mutex<Harness.Outcome?>(nil)
            let outcome = try Harness.run(["--workload", "examples/hello", "--", "sh", "-c", "sleep 8; echo alive"]) {
                _ in
                Thread.sleep(forTimeInterval: 6)
                let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-it-gc-\(UUID())")
                let gc = try? Harness.invoke(["gc"], results: scratch)
                gcOutput.withLock { $0 = gc }
            }
            #expect(outcome.status == 0)
            #expect(outcome.stdoutText == "alive\n")
            let gc = try #require(gcOutput.withLock { $0 })
            #expect(gc.stdoutText.isEmpty, "gc removed something of a live job: \(gc.stdoutText)")
            try Harness.expectNothingLeft()
        }
    }
}
