import Airlock
import Foundation
import Libvirt
import Synchronization
import Testing

/// One hostile workload per attack, each in a real guest. After every one,
/// the host is unaffected (a sentinel file and the host files a guest would
/// want are unchanged), the job ends in the right state with the right
/// reason, and nothing of it is left.
extension Integration {
    @Suite("hostile guests: each attack fails and the host shrugs", .serialized)
    struct AttackTests {
        let sentinel: Sentinel

        init() throws {
            try Harness.requireLibvirt()
            sentinel = try Sentinel()
        }

        /// The checks every attack ends with.
        func expectHostUnaffected(sourceLocation: SourceLocation = #_sourceLocation) throws {
            sentinel.expectUnchanged(sourceLocation: sourceLocation)
            sentinel.remove()
            try Harness.expectNothingLeft(sourceLocation: sourceLocation)
        }

        /// The limits a job reported hitting, by name.
        func limitsHit(_ outcome: Harness.Outcome) throws -> [String] {
            let hits = try outcome.result()["limitsHit"] as? [[String: Any]] ?? []
            return hits.compactMap { $0["limit"] as? String }
        }

        // MARK: - Egress

        /// A guest script that tries each address and port and prints
        /// `reached A:P` or `blocked A:P` for each.
        static func probes(_ targets: [(String, Int)]) -> String {
            let probe = """
                probe() { if echo "ping" | nc -w 3 "$1" "$2" 2>/dev/null | grep -q reply; then echo "reached $1:$2"; \
                else echo "blocked $1:$2"; fi; }
                """
            return probe + "\n" + targets.map { "probe \($0.0) \($0.1)" }.joined(separator: "\n")
        }

        @Test("--egress none (the default): the guest reaches nothing, the host's loopback included")
        func egressNone() throws {
            let allowed = try HostListener()
            let other = try HostListener()
            defer { allowed.stop(); other.stop() }
            let targets = [
                ("10.0.2.2", allowed.port), ("127.0.0.1", allowed.port), ("10.0.2.2", other.port), ("10.0.2.3", 53),
            ]
            let outcome = try Harness.run(["--workload", "examples/hello", "--", "sh", "-c", Self.probes(targets)])
            #expect(outcome.status == 0, "\(outcome.stderrText)")
            for (address, port) in targets {
                #expect(outcome.stdoutText.contains("blocked \(address):\(port)"), "\(outcome.stdoutText)")
            }
            #expect(allowed.connections == 0 && other.connections == 0)
            let egress = try #require(try outcome.result()["egress"] as? [String: Any])
            #expect(egress["mode"] as? String == "none")
            try expectHostUnaffected()
        }

        @Test("--egress allow: the named endpoint is reached at 127.0.0.1:PORT in the guest, and nothing else")
        func egressAllow() throws {
            let allowed = try HostListener()
            let other = try HostListener()
            defer { allowed.stop(); other.stop() }
            let outcome = try Harness.run([
                "--workload", "examples/hello", "--egress", "allow=127.0.0.1:\(allowed.port)", "--", "sh", "-c",
                Self.probes([
                    ("127.0.0.1", allowed.port), ("10.0.2.2", allowed.port), ("127.0.0.1", other.port),
                    ("10.0.2.2", other.port),
                ]),
            ])
            #expect(outcome.status == 0, "\(outcome.stderrText)")
            #expect(outcome.stdoutText.contains("reached 127.0.0.1:\(allowed.port)"), "\(outcome.stdoutText)")
            #expect(outcome.stdoutText.contains("blocked 10.0.2.2:\(allowed.port)"))
            #expect(outcome.stdoutText.contains("blocked 127.0.0.1:\(other.port)"))
            #expect(outcome.stdoutText.contains("blocked 10.0.2.2:\(other.port)"))
            #expect(allowed.connections == 1)
            #expect(other.connections == 0)
            let egress = try #require(try outcome.result()["egress"] as? [String: Any])
            #expect(egress["mode"] as? String == "allow")
            #expect(egress["connections"] as? Int == 1)
            #expect((egress["bytesOut"] as? Int ?? 0) > 0 && (egress["bytesIn"] as? Int ?? 0) > 0)
            try expectHostUnaffected()
        }

        @Test("--egress open reaches the host's loopback, and Airlock says so")
        func egressOpen() throws {
            let listener = try HostListener()
            defer { listener.stop() }
            let outcome = try Harness.run([
                "--workload", "examples/hello", "--egress", "open", "--", "sh", "-c",
                Self.probes([("10.0.2.2", listener.port)]),
            ])
            #expect(outcome.status == 0, "\(outcome.stderrText)")
            #expect(outcome.stdoutText.contains("reached 10.0.2.2:\(listener.port)"), "\(outcome.stdoutText)")
            #expect(listener.connections == 1)
            #expect(outcome.stderrText.contains("warning: --egress open"))
            try expectHostUnaffected()
        }

        @Test("egress by host name on the Debian image: OpenSSH forwards it, the name resolves in the guest")
        func egressByNameOnDebian() throws {
            let listener = try HostListener()
            defer { listener.stop() }
            // The host resolves 'localhost' to ::1 first, where nothing listens: the relay tries the next address.
            let script = """
                import socket
                s = socket.create_connection(("localhost", \(listener.port)), timeout=10)
                s.sendall(b"from-debian\\n")
                print(s.recv(100).decode())
                """
            let outcome = try Harness.run([
                "--image", "debian", "--workload", "examples/hello", "--egress", "allow=localhost:\(listener.port)",
                "--", "python3", "-c", script,
            ])
            #expect(outcome.status == 0, "\(outcome.stderrText)")
            #expect(outcome.stdoutText.contains("reply:from-debian"))
            #expect(listener.connections == 1)
            try expectHostUnaffected()
        }

        @Test(
            "bad egress specs are refused before any guest starts",
            arguments: [
                "allow=", "allow=host", "allow=127.0.0.1:0", "allow=127.0.0.1:22", "allow=a:80,b:80", "sometimes",
                "allow=bad_name!:80",
            ])
        func badEgress(_ egress: String) throws {
            let outcome = try Harness.run(["--workload", "examples/hello", "--egress", egress, "--", "true"])
            #expect(outcome.status == 64, "\(outcome.stderrText)")
            #expect(outcome.stderrText.hasPrefix("Error: "))
            try Harness.expectNothingLeft()
        }

        // MARK: - Resources

        @Test("a fork bomb hits the process limit and the timeout; the guest's SSH still ends it")
        func forkBomb() throws {
            let outcome = try Harness.run([
                "--workload", "examples/hello", "--quiet", "--timeout", "20s", "--",
                "sh", "-c", "bomb() { bomb | bomb & }; bomb; sleep 1000",
            ])
            #expect(outcome.status == 124, "\(outcome.stderrText.suffix(2000))")
            #expect(try outcome.result()["state"] as? String == "timed_out")
            #expect(try limitsHit(outcome).contains("processes"))
            #expect(try limitsHit(outcome).contains("timeout"))
            let run = try #require((try outcome.result()["phases"] as? [String: Double])?["run"])
            #expect(run < 30, "the job took \(run) s to end after a 20 s timeout")
            #expect(outcome.stderrText.contains("limit reached: processes"))
            try expectHostUnaffected()
        }

        @Test("filling the root disk fails only the guest: the limit is reported and the overlay goes")
        func fillRootDisk() throws {
            let pool = Harness.stateFolder.appendingPathComponent("images/.pool")
            let script = """
                avail=$(df -k --output=avail /work | tail -n 1)
                fallocate -l $(( (avail - 4096) * 1024 )) /work/fill
                dd if=/dev/zero of=/work/fill2 bs=64k 2>/dev/null
                echo filled
                """
            let outcome = try Harness.run([
                "--image", "debian", "--workload", "examples/hello", "--quiet", "--", "sh", "-c", script,
            ])
            #expect(outcome.status == 0, "\(outcome.stderrText)")
            #expect(try limitsHit(outcome).contains("disk"), "\(outcome.stderrText)")
            #expect(outcome.stderrText.contains("limit reached: disk"))
            let overlays = ((try? FileManager.default.contentsOfDirectory(atPath: pool.path)) ?? []).filter {
                $0.hasPrefix("airlock-")
            }
            #expect(overlays.isEmpty)
            try expectHostUnaffected()
        }

        @Test("1 GiB written to stdout is counted, its head kept, and Airlock's memory stays small")
        func stdoutFlood() throws {
            // Airlock's own peak memory (VmHWM), read while it runs: the stream must never be held whole.
            let peakKiB = Mutex(0)
            let outcome = try Harness.run([
                "--workload", "examples/hello", "--quiet", "--max-output", "1M", "--",
                "sh", "-c", "head -c 1073741824 /dev/zero; echo done >&2",
            ]) { process in
                while process.isRunning {
                    let status =
                        (try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8))
                        ?? ""
                    for line in status.split(separator: "\n") where line.hasPrefix("VmHWM:") {
                        let kib = Int(line.split(separator: " ")[1]) ?? 0
                        peakKiB.withLock { $0 = max($0, kib) }
                    }
                    Thread.sleep(forTimeInterval: 0.5)
                }
            }
            #expect(outcome.status == 0, "\(outcome.stderrText)")
            let result = try outcome.result()
            #expect(result["stdoutBytes"] as? Int == 1 << 30)
            #expect(result["stdoutTruncated"] as? Bool == true)
            #expect(try outcome.file("stdout").count == 1 << 20)
            #expect(try outcome.file("stderr") == Data("done\n".utf8))
            #expect(try limitsHit(outcome) == ["stdout"])
            let peak = peakKiB.withLock { $0 }
            #expect(peak > 0 && peak < 100 * 1024, "airlock peaked at \(peak) KiB")
            try expectHostUnaffected()
        }

        @Test("100,000 files in out/: collection stops at the file limit and says so")
        func hundredThousandFiles() throws {
            // The tiny guest's files live in RAM: a 512 MiB guest has room for about 58,000 of them.
            let script = "mkdir -p out/many && cd out/many && seq 1 100000 | xargs touch && echo made"
            let outcome = try Harness.run([
                "--workload", "examples/hello", "--quiet", "--memory", "1G", "--max-result-files", "20000", "--",
                "sh", "-c", script,
            ])
            #expect(outcome.status == 0, "\(outcome.stderrText)")
            #expect(try limitsHit(outcome) == ["resultFiles"])
            let kept = try FileManager.default.contentsOfDirectory(
                atPath: outcome.results.appendingPathComponent("out/many").path)
            #expect(kept.count < 20000 && kept.count > 10000, "\(kept.count) files kept")
            #expect(outcome.stderrText.contains("limit reached: resultFiles"))
            try expectHostUnaffected()
        }

        @Test("a 20 GB sparse file is refused by size, without being sent")
        func sparseTwentyGigabytes() throws {
            let script =
                "mkdir -p out && dd if=/dev/zero of=out/sparse bs=1 count=0 seek=21474836480 && echo ok > out/small"
            let outcome = try Harness.run(["--workload", "examples/hello", "--", "sh", "-c", script])
            #expect(outcome.status == 0, "\(outcome.stderrText)")
            #expect(try outcome.file("out/small") == Data("ok\n".utf8))
            #expect(!FileManager.default.fileExists(atPath: outcome.results.appendingPathComponent("out/sparse").path))
            #expect(outcome.stderrText.contains("'sparse': result exceeds limit (20 GiB > 4 GiB)"))
            #expect(try limitsHit(outcome) == ["resultBytes"])
            try expectHostUnaffected()
        }

        // MARK: - Result files

        @Test(
            "a forged tar stream (a link then a file through it, ../, absolute names, links to host files) writes nothing outside"
        )
        func forgedTarStream() throws {
            let results = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-it-forged-\(UUID())")
            let absolute = "/tmp/airlock-forged-\(UUID())"
            var archive: [UInt8] = []
            archive += HostileTar.entry("x", type: "2", link: "..")
            archive += HostileTar.entry("x/payload", type: "0", content: "pwned")
            archive += HostileTar.entry("../escape", type: "0", content: "pwned")
            archive += HostileTar.entry("a/../../escape2", type: "0", content: "pwned")
            archive += HostileTar.entry(absolute, type: "0", content: "pwned")
            archive += HostileTar.entry("shadow", type: "1", link: "/etc/shadow")
            archive += HostileTar.entry("sentinel", type: "1", link: sentinel.file.path)
            archive += HostileTar.entry("tty", type: "3")
            archive += HostileTar.entry("ok.txt", type: "0", content: "fine")
            archive += HostileTar.end
            let workload = try Harness.workload()
            defer { try? FileManager.default.removeItem(at: workload) }
            try Data(archive).write(to: workload.appendingPathComponent("forged.tar"))
            // The guest replaces the shell its SSH server runs commands with, so that Airlock's
            // collection command gets the forged stream instead of a real archive.
            let script = """
                cp forged.tar /tmp/forged.tar && mkdir -p out && echo real > out/real.txt
                printf '#!/bin/busybox sh\\ncase "$2" in *"tar -c"*) cat /tmp/forged.tar;; *) exec /bin/busybox sh "$@";; esac\\n' >/tmp/fakesh
                chmod 755 /tmp/fakesh && rm /bin/sh && cp /tmp/fakesh /bin/sh
                """
            let outcome = try Harness.run(
                ["--workload", workload.path, "--", "sh", "-c", script], results: results)
            #expect(outcome.status == 0, "\(outcome.stderrText)")
            let out = results.appendingPathComponent("out")
            let names = try FileManager.default.contentsOfDirectory(atPath: out.path).sorted()
            #expect(names == ["ok.txt"], "\(names)")
            #expect(try outcome.file("out/ok.txt") == Data("fine".utf8))
            for escaped in [
                results.appendingPathComponent("escape").path,
                results.deletingLastPathComponent().appendingPathComponent("escape").path,
                results.deletingLastPathComponent().appendingPathComponent("escape2").path, absolute,
                results.appendingPathComponent("payload").path,
            ] {
                #expect(!FileManager.default.fileExists(atPath: escaped), "\(escaped) was written")
            }
            let collected = try #require(try outcome.result()["collected"] as? [String: Any])
            let skipped = (collected["skipped"] as? [[String: Any]] ?? []).compactMap { $0["path"] as? String }
            for name in ["x", "x/payload", "../escape", "shadow", "sentinel", "tty"] {
                #expect(skipped.contains(name), "'\(name)' not listed as skipped: \(skipped)")
            }
            try expectHostUnaffected()
        }

        // MARK: - Processes and the guest's own services

        @Test("a process that closes stdout and sleeps on after the command exits does not hold the job")
        func closedStdoutSleeper() throws {
            let script = """
                (exec >&- 2>&- </dev/null; setsid sleep 100000) &
                (exec 1>&-; sleep 100000) &
                echo started
                """
            let outcome = try Harness.run([
                "--workload", "examples/hello", "--timeout", "10m", "--", "sh", "-c", script,
            ])
            #expect(outcome.status == 0, "\(outcome.stderrText)")
            #expect(outcome.stdoutText == "started\n")
            let run = try #require((try outcome.result()["phases"] as? [String: Double])?["run"])
            #expect(run < 10)
            try expectHostUnaffected()
        }

        @Test("killing the guest's SSH server fails the job as a lost connection, at once and without a retry")
        func killSSHServer() throws {
            let outcome = try Harness.run([
                "--workload", "examples/hello", "--timeout", "10m", "--", "sh", "-c",
                "sleep 1; kill -9 $(pidof dropbear)",
            ])
            #expect(outcome.status == 125, "\(outcome.stderrText)")
            let result = try outcome.result()
            #expect(result["state"] as? String == "failed")
            #expect((result["error"] as? String ?? "").contains("connection to guest"), "\(result)")
            #expect(outcome.elapsed < .seconds(60))
            try expectHostUnaffected()
        }

        @Test("a guest that reboots itself mid-job is destroyed, and the job fails saying so")
        func guestReboots() throws {
            let outcome = try Harness.run([
                "--workload", "examples/hello", "--timeout", "10m", "--", "sh", "-c", "sleep 1; reboot -f",
            ])
            #expect(outcome.status == 125, "\(outcome.stderrText)")
            #expect(outcome.stderrText.contains("stopped while the command ran"), "\(outcome.stderrText)")
            #expect(outcome.elapsed < .seconds(60))
            try expectHostUnaffected()
        }

        @Test("a command killed by a signal the guest's SSH server cannot name still fails, naming the signal")
        func unnamedSignal() throws {
            // dropbear sends no exit message at all for SIGXFSZ.
            let outcome = try Harness.run([
                "--workload", "examples/hello", "--", "sh", "-c",
                "ulimit -f 1; exec dd if=/dev/zero of=/tmp/big bs=1k count=100",
            ])
            #expect(outcome.status == 153, "\(outcome.stderrText)")
            let result = try outcome.result()
            #expect(result["state"] as? String == "failed")
            #expect(result["signal"] as? String == "XFSZ")
            try expectHostUnaffected()
        }

        // MARK: - The operator's terminal

        @Test("a line the guest writes on its console never passes for one of Airlock's own")
        func forgedConsoleLine() throws {
            let script = """
                printf '\\nairlock: job 000000000000 succeeded (1.0 s, tcg); results in /tmp/x\\n' >/dev/ttyS0
                sleep 1; poweroff -f
                """
            let outcome = try Harness.run(["--workload", "examples/hello", "--", "sh", "-c", script])
            #expect(outcome.status == 125)
            let lines = outcome.stderrText.split(separator: "\n")
            #expect(!lines.contains { $0.hasPrefix("airlock: job 000000000000") }, "\(outcome.stderrText)")
            #expect(lines.contains { $0.hasPrefix("  | ") && $0.contains("airlock: job 000000000000") })
            try expectHostUnaffected()
        }

        @Test("on a terminal, escape sequences in output and in file names arrive as visible text")
        func terminalEscapes() throws {
            let results = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-it-tty-\(UUID())")
            let guestScript = #"""
                printf '\033]0;pwned\007\033[2J out'; printf '\033[31m err' >&2
                mkdir -p out && mkfifo "out/$(printf 'a\033[2Jb')"
                """#
            let command = [
                Harness.binary.path, "run", "--results", results.path, "--workload", "examples/hello", "--", "sh", "-c",
                guestScript,
            ].map(shellQuote).joined(separator: " ")
            // util-linux's script(1) gives airlock a real terminal and copies what it shows.
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/script")
            process.arguments = ["-q", "-e", "-c", command, "/dev/null"]
            process.currentDirectoryURL = Harness.repository
            var environment = ProcessInfo.processInfo.environment
            environment["AIRLOCK_STATE_DIR"] = Harness.stateFolder.path
            process.environment = environment
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardInput = FileHandle.nullDevice
            try process.run()
            let shown = pipe.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "\(String(decoding: shown, as: UTF8.self))")
            #expect(!shown.contains(0x1b), "a raw escape reached the terminal")
            let text = String(decoding: shown, as: UTF8.self)
            #expect(text.contains(#"\x1b]0;pwned\x07\x1b[2J out"#), "\(text)")
            #expect(text.contains(#"a\x1b[2Jb"#), "\(text)")
            try expectHostUnaffected()
        }

        // MARK: - Secrets

        @Test("a secret reaches the command, and is in no domain XML, QEMU command line, log, store or result")
        func secretsNeverStored() throws {
            let value = "airlock-secret-\(UUID().uuidString)"
            let fileValue = "airlock-file-secret-\(UUID().uuidString)"
            let secretFile = FileManager.default.temporaryDirectory.appendingPathComponent("secret-\(UUID())")
            try Data((fileValue + "\n").utf8).write(to: secretFile)
            defer { try? FileManager.default.removeItem(at: secretFile) }
            let script = #"sleep 4; printf %s "$TOKEN" | sha256sum; printf %s "$FILE_TOKEN" | sha256sum"#

            // While the guest runs: its XML and its QEMU command line.
            var seenWhileRunning: [String] = []
            var domainName: String?
            let outcome = try Harness.run(
                [
                    "--workload", "examples/hello", "--debug", "--secret", "TOKEN", "--secret-file",
                    "FILE_TOKEN=\(secretFile.path)", "--", "sh", "-c", script,
                ], environment: ["TOKEN": value]
            ) { _ in
                let deadline = ContinuousClock.now + .seconds(60)
                while ContinuousClock.now < deadline && seenWhileRunning.isEmpty {
                    Thread.sleep(forTimeInterval: 0.5)
                    guard let connection = try? Connection(uri: "qemu:///system") else { continue }
                    defer { connection.close() }
                    for domain in (try? connection.allDomains()) ?? [] where domain.name.hasPrefix("airlock-") {
                        domainName = domain.name
                        seenWhileRunning.append((try? domain.xml()) ?? "")
                        seenWhileRunning.append(Self.qemuCommandLines())
                    }
                }
            }
            #expect(outcome.status == 0, "\(outcome.stderrText)")
            #expect(outcome.stdoutText.contains(SHA256.hex(Data(value.utf8))), "TOKEN did not arrive intact")
            #expect(outcome.stdoutText.contains(SHA256.hex(Data(fileValue.utf8))), "FILE_TOKEN did not arrive intact")
            #expect(seenWhileRunning.count == 2, "the guest was not seen running")
            var places = seenWhileRunning
            places.append(outcome.stderrText)
            if let domainName {
                places.append(
                    (try? String(contentsOfFile: "/var/log/libvirt/qemu/\(domainName).log", encoding: .utf8)) ?? "")
            }
            places += try Self.filesBelow(outcome.results)
            places += try Self.filesBelow(Harness.stateFolder.appendingPathComponent("run"))
            for text in places {
                #expect(
                    !text.contains(value) && !text.contains(fileValue), "a secret was found in: \(text.prefix(300))")
            }
            try expectHostUnaffected()
        }

        @Test("a submitted job's secret comes from the controller's environment and is never in the store")
        func secretsThroughTheQueue() throws {
            let queue = try TestQueue()
            defer { queue.remove() }
            let value = "airlock-queued-secret-\(UUID().uuidString)"
            let controller = try BackgroundProcess(
                ["controller", "--concurrency", "1"], environment: queue.environment.merging(["TOKEN": value]) { $1 })
            defer { controller.stop() }
            let id = try queue.submit([
                "--workload", "examples/hello", "--secret", "TOKEN", "--", "sh", "-c",
                #"printf %s "$TOKEN" | sha256sum"#,
            ])
            let missing = try queue.submit([
                "--workload", "examples/hello", "--secret", "NOT_SET_ANYWHERE", "--", "true",
            ])
            let done = try queue.waitFor(id) { $0.state.isTerminal }
            let refused = try queue.waitFor(missing) { $0.state.isTerminal }
            #expect(done?.state == .succeeded)
            let stdout = try String(
                contentsOf: queue.state.appendingPathComponent("results/\(id)/stdout"), encoding: .utf8)
            #expect(stdout.contains(SHA256.hex(Data(value.utf8))))
            #expect(refused?.state == .failed)
            #expect(refused?.attempts == 1, "a missing secret is not worth a retry")
            let reason = try #require(try queue.airlock(["status", missing]).stdoutText)
            #expect(reason.contains("secret 'NOT_SET_ANYWHERE' is not set in the environment"), "\(reason)")
            var places = try Self.filesBelow(queue.state)
            places.append(controller.log)
            for text in places {
                #expect(!text.contains(value), "the secret was found in: \(text.prefix(300))")
            }
            try queue.expectNothingLeft()
            sentinel.expectUnchanged()
            sentinel.remove()
        }

        // MARK: - The controller keeps going

        @Test("a batch of attacks through the controller: each ends as it should, and the controller runs on")
        func attacksThroughTheController() throws {
            let queue = try TestQueue()
            defer { queue.remove() }
            let controller = try queue.controller(["--concurrency", "2"])
            defer { controller.stop() }
            let attacks: [(String, String, JobStore.State)] = [
                ("fork bomb", "bomb() { bomb | bomb & }; bomb; sleep 1000", .timedOut),
                ("kill sshd", "sleep 1; kill -9 $(pidof dropbear)", .failed),
                ("reboot", "sleep 1; reboot -f", .failed),
                ("flood", "head -c 5000000 /dev/zero", .succeeded),
                ("background", "setsid sleep 100000 & echo bye", .succeeded),
            ]
            let batch = FileManager.default.temporaryDirectory.appendingPathComponent("attacks-\(UUID()).jsonl")
            defer { try? FileManager.default.removeItem(at: batch) }
            let lines = try attacks.map { attack in
                let spec: [String: Any] = [
                    "workload": Harness.repository.appendingPathComponent("examples/hello").path,
                    "command": ["sh", "-c", attack.1], "timeout": "20s", "maxOutput": "1M",
                    "labels": ["attack": attack.0],
                ]
                return String(decoding: try JSONSerialization.data(withJSONObject: spec), as: UTF8.self)
            }
            try Data(lines.joined(separator: "\n").utf8).write(to: batch)
            let batchID = try queue.submit(["--batch", batch.path])
            let store = try queue.store()
            let jobs = try store.list(JobStore.Filter(batch: batchID))
            #expect(jobs.count == attacks.count)
            for job in jobs {
                let attack = try #require(attacks.first { $0.0 == job.labels["attack"] })
                let record = try queue.waitFor(job.id, timeout: .seconds(240)) { $0.state.isTerminal }
                #expect(record?.state == attack.2, "\(attack.0): \(String(describing: record))")
            }
            #expect(controller.isRunning, "the controller stopped: \(controller.log.suffix(2000))")
            let after = try queue.submit(["--workload", "examples/hello", "--", "sh", "run.sh"])
            #expect(try queue.waitFor(after) { $0.state.isTerminal }?.state == .succeeded)
            try queue.expectNothingLeft()
            sentinel.expectUnchanged()
            sentinel.remove()
        }

        // MARK: - Helpers

        /// Every QEMU process's command line, arguments joined by spaces.
        static func qemuCommandLines() -> String {
            let entries = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
            return entries.filter { Int($0) != nil }.compactMap { pid -> String? in
                guard let data = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
                    String(decoding: data, as: UTF8.self).contains("qemu-system")
                else { return nil }
                return String(decoding: data.map { $0 == 0 ? 0x20 : $0 }, as: UTF8.self)
            }.joined(separator: "\n")
        }

        /// The bytes of every regular file below a folder, as text.
        static func filesBelow(_ folder: URL) throws -> [String] {
            guard let walker = FileManager.default.enumerator(atPath: folder.path) else { return [] }
            var texts: [String] = []
            while let name = walker.nextObject() as? String {
                let path = folder.appendingPathComponent(name).path
                var info = stat()
                guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFREG else { continue }
                texts.append(String(decoding: FileManager.default.contents(atPath: path) ?? Data(), as: UTF8.self))
            }
            return texts
        }
    }
}

/// Quotes a word for sh.
private func shellQuote(_ word: String) -> String {
    "'" + word.replacingOccurrences(of: "'", with: "'\\''") + "'"
}
