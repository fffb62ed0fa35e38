import Airlock
import Foundation
import Libvirt
import Testing

/// Submit now, collect later: the store, the controller and its workers,
/// with real guests under the real libvirtd, one scenario at a time.
extension Integration {
    @Suite("the queue and the controller with real guests", .serialized)
    struct QueueTests {
        init() throws {
            try Harness.requireLibvirt()
        }

        /// A workload whose `job.sh` prints its number, sleeps `SLEEP`
        /// seconds, writes out/r (and `OUT_MB` MiB of out/big), and exits `N`.
        private func workload() throws -> URL {
            try Harness.workload([
                "job.sh": (
                    """
                    echo "job ${N:-0}"
                    [ -n "$SLEEP" ] && sleep "$SLEEP"
                    mkdir -p out && echo ok >out/r
                    [ -n "$OUT_MB" ] && head -c $((OUT_MB * 1048576)) /dev/urandom >out/big
                    exit "${N:-0}"
                    """, 0o755
                )
            ])
        }

        /// A batch file of one line per environment.
        private func batch(_ folder: URL, _ envs: [[String: String]]) throws -> URL {
            let file = folder.appendingPathComponent("batch.jsonl")
            let lines = try envs.map { env -> String in
                let object: [String: Any] = ["workload": folder.path, "command": ["sh", "job.sh"], "env": env]
                return String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
            }
            try Data((lines.joined(separator: "\n") + "\n").utf8).write(to: file)
            return file
        }

        private func starts(_ store: JobStore, _ id: String) throws -> Int {
            try store.history(id).filter { $0.state == .starting }.count
        }

        // MARK: - Batches

        @Test("a batch of 12 at concurrency 3: right exit codes, never more than 3 guests, collect --wait")
        func batchOfTwelve() throws {
            let queue = try TestQueue()
            defer { queue.remove() }
            let work = try workload()
            let file = try batch(work, (0..<12).map { ["N": "\($0 % 4)", "SLEEP": "1"] })
            let batchID = try queue.submit(["--batch", file.path, "--label", "suite=twelve"])
            #expect(batchID.count == 12)

            let sampler = GuestSampler()
            let controller = try queue.controller(["--concurrency", "3", "--cpu-overcommit", "2"])
            let out = queue.state.appendingPathComponent("collected")
            // Started while all 12 are unfinished: it waits, copying each as it ends.
            let collected = try queue.airlock(["collect", "--batch", batchID, "--wait", "--out", out.path])
            let seen = sampler.finish()
            controller.stop()

            #expect(collected.status == 1, "some jobs exit non-zero: \(collected.stderrText)")
            #expect(seen.most <= 3, "at most 3 guests at once, saw \(seen.most)")
            #expect(
                seen.most >= 2, "the controller ran jobs side by side (saw \(seen.most) in \(seen.samples) samples)")
            let store = try queue.store()
            let records = try store.list(.init(batch: batchID))
            #expect(records.count == 12)
            for (index, record) in records.enumerated() {
                let expected = Int32(index % 4)
                #expect(record.state == (expected == 0 ? .succeeded : .failed), "\(record)")
                #expect(record.exitCode == expected)
                #expect(
                    record.attempts == 1,
                    "a workload's own failure is never retried; history: \((try? store.history(record.id)) ?? [])")
                #expect(record.labels == ["suite": "twelve"])
                let folder = out.appendingPathComponent(record.id)
                let stdout = try String(contentsOf: folder.appendingPathComponent("stdout"), encoding: .utf8)
                #expect(stdout == "job \(expected)\n")
                #expect(try String(contentsOf: folder.appendingPathComponent("out/r"), encoding: .utf8) == "ok\n")
                let result = try #require(JobResultFile.read(from: folder))
                #expect(result.exitCode == expected && result.attempt == 1 && result.accelerator != nil)
            }
            #expect(controller.log.contains("job.state=succeeded"), "one line per state change:\n\(controller.log)")
            let listed = try queue.airlock(["ls", "--batch", batchID, "--state", "failed"])
            #expect(listed.lines.count == 1 + 9, "\(listed.stdoutText)")
            try queue.expectNothingLeft()
        }

        @Test("submissions from 8 processes at once all land, none lost or doubled")
        func concurrentSubmits() throws {
            let queue = try TestQueue()
            defer { queue.remove() }
            let work = try workload()
            let file = try batch(work, (0..<25).map { ["N": "\($0)"] })
            let processes = try (0..<8).map { _ -> Process in
                let process = Process()
                process.executableURL = Harness.binary
                process.arguments = ["submit", "--batch", file.path, "--json"]
                var env = ProcessInfo.processInfo.environment
                for (key, value) in queue.environment { env[key] = value }
                process.environment = env
                process.standardOutput = FileHandle.nullDevice
                process.standardError = FileHandle.nullDevice
                try process.run()
                return process
            }
            processes.forEach { $0.waitUntilExit() }
            #expect(processes.allSatisfy { $0.terminationStatus == 0 })
            let records = try queue.store().list()
            #expect(records.count == 200)
            #expect(Set(records.map(\.id)).count == 200)
            #expect(Set(records.compactMap(\.batch)).count == 8)
        }

        // MARK: - Crashes

        @Test("kill -9 of the controller while jobs start, run and collect: they finish, once each")
        func controllerKilled() throws {
            let queue = try TestQueue()
            defer { queue.remove() }
            let work = try workload()
            // Each phase lasts long enough to be caught: the first job sleeps
            // while running, the second sleeps longer and then has 48 MiB to collect.
            let first = try queue.submit([
                "--workload", work.path, "--env", "N=4", "--env", "SLEEP=8", "--", "sh", "job.sh",
            ])
            let second = try queue.submit(
                [
                    "--workload", work.path, "--env", "N=4", "--env", "SLEEP=12", "--env", "OUT_MB=48", "--", "sh",
                    "job.sh",
                ])
            let third = try queue.submit(["--workload", work.path, "--env", "N=4", "--", "sh", "job.sh"])

            var controller = try queue.controller(["--concurrency", "2"])
            // Once its worker has taken the job over from the controller (a
            // job claimed but not yet handed over is simply claimed again).
            let controllerPID = controller.process.processIdentifier
            try queue.waitFor(first) { $0.state == .starting && $0.owner.flatMap(ProcessToken.pid) != controllerPID }
            controller.signal(SIGKILL)
            controller = try queue.controller(["--concurrency", "2"])
            try queue.waitFor(first) { $0.state == .running }
            controller.signal(SIGKILL)
            controller = try queue.controller(["--concurrency", "2"])
            try queue.waitFor(second) { $0.state == .collecting }
            controller.signal(SIGKILL)
            controller = try queue.controller(["--concurrency", "2"])
            for id in [first, second, third] {
                try queue.waitFor(id) { $0.state.isTerminal }
            }
            controller.stop()

            let store = try queue.store()
            for id in [first, second, third] {
                let record = try #require(try store.record(id))
                #expect(record.state == .failed && record.exitCode == 4, "\(record)")
                #expect(try starts(store, id) == 1, "job \(id) ran more than once")
                let folder = URL(fileURLWithPath: record.results)
                #expect(try String(contentsOf: folder.appendingPathComponent("out/r"), encoding: .utf8) == "ok\n")
            }
            let big = try FileManager.default.attributesOfItem(
                atPath: URL(fileURLWithPath: try #require(try store.record(second)).results)
                    .appendingPathComponent("out/big").path)
            #expect((big[.size] as? Int) == 48 << 20)
            try queue.expectNothingLeft()
        }

        @Test("kill -9 of a worker while running and while collecting: the guest goes, the job runs again")
        func workerKilled() throws {
            let queue = try TestQueue()
            defer { queue.remove() }
            let work = try workload()
            let done = try queue.submit(["--workload", work.path, "--", "sh", "job.sh"])
            let controller = try queue.controller(["--concurrency", "1"])
            let finished = try #require(try queue.waitFor(done) { $0.state.isTerminal })
            let before = try Data(
                contentsOf: URL(fileURLWithPath: finished.results).appendingPathComponent("result.json"))

            let running = try queue.submit(["--workload", work.path, "--env", "SLEEP=5", "--", "sh", "job.sh"])
            let runningOwner = try #require(try queue.waitFor(running) { $0.state == .running }?.owner)
            kill(try #require(ProcessToken.pid(of: runningOwner)), SIGKILL)
            let collecting = try queue.submit(["--workload", work.path, "--env", "OUT_MB=64", "--", "sh", "job.sh"])
            let collectingOwner = try #require(
                try queue.waitFor(collecting, timeout: .seconds(180)) { $0.state == .collecting }?.owner)
            kill(try #require(ProcessToken.pid(of: collectingOwner)), SIGKILL)

            let store = try queue.store()
            for id in [running, collecting] {
                let record = try #require(try queue.waitFor(id, timeout: .seconds(180)) { $0.state.isTerminal })
                #expect(record.state == .succeeded, "\(record)")
                #expect(record.attempts == 2)
                let reasons = try store.history(id).compactMap(\.reason)
                #expect(
                    reasons.contains { $0.contains("attempt 1 was killed by signal 9") && $0.contains("queued again") },
                    "\(reasons)")
            }
            controller.stop()
            let after = try Data(
                contentsOf: URL(fileURLWithPath: finished.results).appendingPathComponent("result.json"))
            #expect(before == after, "results already collected stay as they were")
            try queue.expectNothingLeft()
        }

        @Test("libvirtd restarted while jobs run: the controller survives and no guest is left")
        func libvirtdRestarted() throws {
            let queue = try TestQueue()
            defer { queue.remove() }
            let work = try workload()
            let ids = try (0..<2).map { _ in
                try queue.submit(["--workload", work.path, "--env", "SLEEP=6", "--", "sh", "job.sh"])
            }
            let controller = try queue.controller(["--concurrency", "2"])
            for id in ids {
                try queue.waitFor(id) { $0.state == .running }
            }
            try LibvirtDaemon.restart()
            for id in ids {
                let record = try #require(try queue.waitFor(id, timeout: .seconds(180)) { $0.state.isTerminal })
                #expect(record.state == .succeeded || record.reason?.isEmpty == false, "\(record)")
            }
            #expect(controller.isRunning, "the controller survived:\n\(controller.log)")
            // New work still runs once libvirtd is back.
            let later = try queue.submit(["--workload", work.path, "--", "sh", "job.sh"])
            #expect(try queue.waitFor(later) { $0.state.isTerminal }?.state == .succeeded)
            controller.stop()
            try queue.expectNothingLeft()
        }

        @Test("two controllers on one state folder never run the same job")
        func twoControllers() throws {
            let queue = try TestQueue()
            defer { queue.remove() }
            let work = try workload()
            let file = try batch(work, (0..<6).map { ["N": "0", "SLEEP": "\($0 % 2)"] })
            let batchID = try queue.submit(["--batch", file.path])
            let one = try queue.controller(["--concurrency", "2"])
            let two = try queue.controller(["--concurrency", "2"])
            let collected = try queue.airlock([
                "collect", "--batch", batchID, "--wait", "--out", queue.state.appendingPathComponent("c").path,
            ])
            one.stop()
            two.stop()
            #expect(collected.status == 0, "\(collected.stderrText)")
            let store = try queue.store()
            for record in try store.list(.init(batch: batchID)) {
                #expect(record.state == .succeeded)
                #expect(try starts(store, record.id) == 1, "job \(record.id) was started twice")
            }
            try queue.expectNothingLeft()
        }

        // MARK: - Retries, cancel, logs

        @Test("a guest that never boots is retried with back-off; a command's failure is not")
        func retries() throws {
            let queue = try TestQueue()
            defer { queue.remove() }
            _ = try TestImages.sleeper()
            let images = TestImages.catalog
            let work = try workload()
            let broken = try queue.submit(
                [
                    "--image", "sleeper", "--boot-timeout", "3s", "--tcg-timeout-factor", "1", "--retries", "1",
                    "--workload", work.path, "--",
                    "true",
                ],
                images: images)
            let controller = try queue.controller(["--concurrency", "1"], images: images)
            let record = try #require(try queue.waitFor(broken, timeout: .seconds(120)) { $0.state.isTerminal })
            controller.stop()
            #expect(record.state == .failed && record.attempts == 2, "\(record)")
            #expect(record.reason?.contains("did not become ready within 3 s") == true, "\(record.reason ?? "")")
            let history = try queue.store().history(broken)
            #expect(history.map(\.state) == [.queued, .starting, .queued, .starting, .failed])
            let requeued = try #require(history.first { $0.state == .queued && $0.reason != nil })
            let retried = try #require(history.last { $0.state == .starting })
            #expect(retried.at.timeIntervalSince(requeued.at) >= 1.9, "back-off of 2 s before attempt 2")
            try queue.expectNothingLeft()
        }

        @Test("cancel stops a running job and destroys its guest; a queued job is canceled at once")
        func cancel() throws {
            let queue = try TestQueue()
            defer { queue.remove() }
            let work = try workload()
            let queued = try queue.submit(["--workload", work.path, "--", "sh", "job.sh"])
            let canceledQueued = try queue.airlock(["cancel", queued])
            #expect(canceledQueued.status == 0 && canceledQueued.stdoutText == "canceled \(queued)\n")
            #expect(try queue.store().record(queued)?.state == .canceled)

            let running = try queue.submit(["--workload", work.path, "--", "sleep", "600"])
            let controller = try queue.controller(["--concurrency", "1"])
            try queue.waitFor(running) { $0.state == .running }
            let outcome = try queue.airlock(["cancel", running])
            #expect(outcome.status == 0, "\(outcome.stderrText)")
            #expect(outcome.elapsed < .seconds(15))
            let record = try #require(try queue.store().record(running))
            #expect(record.state == .canceled)
            try Harness.expectNothingLeft()
            let collected = try queue.airlock([
                "collect", running, "--out", queue.state.appendingPathComponent("c").path,
            ])
            #expect(collected.status == 130)
            controller.stop()

            // rm forgets finished jobs and their folders, all or none.
            let waiting = try queue.submit(["--workload", work.path, "--", "true"])
            let refused = try queue.airlock(["rm", running, waiting])
            #expect(refused.status == 64 && refused.stderrText.contains("is queued, not finished"))
            #expect(try queue.store().record(running) != nil)
            #expect(try queue.airlock(["rm", String(running.prefix(6))]).status == 64)
            let removed = try queue.airlock(["rm", running, queued])
            #expect(removed.status == 0 && removed.stdoutText == "removed \(running)\nremoved \(queued)\n")
            #expect(try queue.store().record(running) == nil)
            #expect(
                !FileManager.default.fileExists(atPath: queue.state.appendingPathComponent("results/\(running)").path))
            #expect(try queue.airlock(["cancel", waiting]).status == 0)
            try queue.expectNothingLeft()
        }

        @Test("logs -f follows a job from the queue to its end; status shows its history")
        func logsAndStatus() throws {
            let queue = try TestQueue()
            defer { queue.remove() }
            let work = try Harness.workload([
                "talk.sh": ("for i in 1 2 3 4 5; do echo line $i; echo err $i >&2; sleep 0.5; done", 0o644)
            ])
            let id = try queue.submit(["--workload", work.path, "--", "sh", "talk.sh"])
            let controller = try queue.controller(["--concurrency", "1"])
            let logs = try queue.airlock(["logs", id, "-f"])
            controller.stop()
            #expect(logs.status == 0)
            #expect(logs.stdoutText == (1...5).map { "line \($0)\n" }.joined())
            #expect(logs.stderrText.contains("err 5"))
            let status = try queue.airlock(["status", String(id.prefix(6)), "--json"])
            let object = try #require(try JSONSerialization.jsonObject(with: status.stdout) as? [String: Any])
            let states = (object["history"] as? [[String: Any]])?.compactMap { $0["state"] as? String }
            #expect(states == ["queued", "starting", "running", "collecting", "succeeded"])
            #expect(object["command"] as? [String] == ["sh", "talk.sh"])
            try queue.expectNothingLeft()
        }

        @Test("gc settles a job whose controller and worker were both killed")
        func gcAfterCrash() throws {
            let queue = try TestQueue()
            defer { queue.remove() }
            let work = try workload()
            let id = try queue.submit(["--workload", work.path, "--retries", "0", "--", "sleep", "600"])
            let controller = try queue.controller(["--concurrency", "1"])
            let owner = try #require(try queue.waitFor(id) { $0.state == .running }?.owner)
            controller.signal(SIGKILL)
            kill(try #require(ProcessToken.pid(of: owner)), SIGKILL)
            Thread.sleep(forTimeInterval: 0.5)
            // gc on another state folder leaves this folder's guest alone.
            let other = try TestQueue()
            defer { other.remove() }
            let elsewhere = try other.airlock(["gc"])
            #expect(elsewhere.status == 0 && !elsewhere.stdoutText.contains("airlock-\(id)"), "\(elsewhere.stdoutText)")
            let connection = try Connection(uri: "qemu:///system")
            defer { connection.close() }
            #expect(try connection.allDomains().contains { $0.name == "airlock-\(id)" })
            let gc = try queue.airlock(["gc"])
            #expect(gc.status == 0, "\(gc.stderrText)")
            #expect(gc.stdoutText.contains("ended job \(id)"), "\(gc.stdoutText)")
            let record = try #require(try queue.store().record(id))
            #expect(record.state == .lost)
            #expect(JobResultFile.read(from: URL(fileURLWithPath: record.results))?.state == .lost)
            try queue.expectNothingLeft()
        }

        @Test("no job starts while the state folder's disk has less free than --min-free")
        func diskFloor() throws {
            let queue = try TestQueue()
            defer { queue.remove() }
            let work = try workload()
            let id = try queue.submit(["--workload", work.path, "--", "true"])
            let controller = try queue.controller(["--concurrency", "1", "--min-free", "1000000T"])
            Thread.sleep(forTimeInterval: 2)
            controller.stop()
            #expect(try queue.store().record(id)?.state == .queued)
            #expect(controller.log.contains("the state folder's disk is nearly full"), "\(controller.log)")
            #expect(try queue.airlock(["cancel", id]).status == 0)
            try queue.expectNothingLeft()
        }

        @Test("bench batch runs both ways, prints its figures and leaves nothing behind")
        func benchBatch() throws {
            let before = try FileManager.default.contentsOfDirectory(atPath: NSTemporaryDirectory())
                .filter { $0.hasPrefix("airlock-bench-") }
            let outcome = try Harness.invoke(
                ["bench", "batch", "--jobs", "1", "--concurrency", "1", "--backlog", "20"],
                results: FileManager.default.temporaryDirectory)
            #expect(outcome.status == 0, "\(outcome.stderrText)")
            #expect(outcome.stdoutText.contains("concurrency 1"), "\(outcome.stdoutText)")
            #expect(outcome.stdoutText.contains("controller peak RSS"))
            #expect(outcome.stdoutText.contains("scale, 20 queued jobs"))
            let after = try FileManager.default.contentsOfDirectory(atPath: NSTemporaryDirectory())
                .filter { $0.hasPrefix("airlock-bench-") }
            #expect(after == before, "scratch left behind: \(after)")
            try Harness.expectNothingLeft()
        }

        // MARK: - Bad input at submit

        @Test("bad specs and jobs that can never fit are refused at submit, storing nothing")
        func submitRefuses() throws {
            let queue = try TestQueue()
            defer { queue.remove() }
            let work = try workload()
            let spec = work.appendingPathComponent("bad.json")
            try Data(#"{"workload": ".", "command": ["true"], "timeout": 0}"#.utf8).write(to: spec)
            let cases: [([String], String)] = [
                (["-f", spec.path], "'timeout' must be positive"),
                (["--workload", work.path, "--vcpus", "64", "--", "true"], "can never run: it asks for 64 vCPUs"),
                (["--workload", work.path, "--memory", "4T", "--", "true"], "can never run"),
                (
                    ["--image", "does-not-exist", "--workload", work.path, "--", "true"],
                    "unknown image 'does-not-exist'"
                ),
                (["--workload", work.path, "--env", "1A=x", "--", "true"], "'1A' is not a valid environment variable"),
            ]
            for (arguments, fragment) in cases {
                let outcome = try queue.airlock(["submit"] + arguments)
                #expect(outcome.status == 64, "\(arguments): \(outcome.stderrText)")
                #expect(outcome.stderrText.contains(fragment), "\(outcome.stderrText)")
                #expect(outcome.stdout.isEmpty)
            }
            #expect(try queue.store().list().isEmpty)
            try queue.expectNothingLeft()
        }

        @Test("airlock run -f runs a spec file, and options after it win")
        func runSpecFile() throws {
            let work = try workload()
            let spec = work.appendingPathComponent("job.json")
            try Data(#"{"workload": ".", "command": ["sh", "job.sh"], "env": {"N": "3"}, "timeout": "1m"}"#.utf8)
                .write(to: spec)
            let three = try Harness.run(["-f", spec.path])
            #expect(three.status == 3, "\(three.stderrText)")
            let five = try Harness.run(["-f", spec.path, "--env", "N=5"])
            #expect(five.status == 5, "\(five.stderrText)")
            #expect(try five.file("stdout") == Data("job 5\n".utf8))
            try Harness.expectNothingLeft()
        }
    }
}

/// Restarts the host's libvirtd the way scripts/start-libvirtd.sh starts it.
enum LibvirtDaemon {
    static func restart() throws {
        // Spawn, not Foundation's Process: a child of this test process would
        // inherit its blocked SIGTERM, and a libvirtd started with it blocked
        // could not be stopped by the next restart.
        let stop = try Spawn.start(
            "/bin/sh",
            [
                "sh", "-c",
                "pkill -x libvirtd; for i in $(seq 50); do pgrep -x libvirtd >/dev/null || exit 0; sleep 0.1; done; exit 1",
            ])
        let stopped = Spawn.wait(stop)
        let script = Harness.repository.appendingPathComponent("scripts/start-libvirtd.sh").path
        let started = Spawn.wait(try Spawn.start(script, [script]))
        guard stopped == 0, started == 0 else {
            Issue.record("libvirtd did not restart (stop: \(stopped), start: \(started))")
            throw CocoaError(.executableLoad)
        }
    }
}
