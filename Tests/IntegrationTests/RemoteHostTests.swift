import Airlock
import AirlockTestSupport
import Foundation
import Libvirt
import Synchronization
import Testing

/// A second libvirt host, reachable only as a remote one: its own network
/// and mount namespaces, libvirtd and sshd (`scripts/netns-host.sh`).
final class NamespaceHost {
    let name: String
    let folder: URL
    let uri: String

    /// - Parameter index: Picks the addresses (10.231.INDEX.0/24); tests use distinct ones.
    /// - Throws: When the host does not start.
    init(index: Int) throws {
        name = "airlock-t\(index)"
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("netns-\(index)-\(UUID())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        chmod(folder.path, 0o711)
        let outcome = try Self.script(["up", name, String(index), folder.path])
        guard outcome.status == 0 else {
            Issue.record("the namespace host did not start: \(outcome.text)")
            throw POSIXError(.EHOSTDOWN)
        }
        uri = outcome.text.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    deinit {
        remove()
    }

    /// The host dies: every process of it ends (its daemons and its
    /// guests), while its address stays, refusing connections.
    func kill() {
        _ = try? Self.script(["kill", name])
    }

    /// Removes the namespace and the host's files. Call it once nothing
    /// connects to the host any more (stop controllers first).
    func remove() {
        _ = try? Self.script(["down", name])
        try? FileManager.default.removeItem(at: folder)
    }

    /// Runs a shell command inside the host's network namespace.
    func inside(_ command: String) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
        process.arguments = ["netns", "exec", name, "bash", "-c", command]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    private static func script(_ arguments: [String]) throws -> (status: Int32, text: String) {
        let process = Process()
        process.executableURL = Harness.repository.appendingPathComponent("scripts/netns-host.sh")
        process.arguments = arguments
        // A file, not a pipe: the host's daemons outlive the script.
        let output = FileManager.default.temporaryDirectory.appendingPathComponent("netns-out-\(UUID())")
        _ = FileManager.default.createFile(atPath: output.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: output) }
        let handle = try FileHandle(forWritingTo: output)
        process.standardOutput = handle
        process.standardError = handle
        process.standardInput = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        try handle.close()
        return (process.terminationStatus, try String(contentsOf: output, encoding: .utf8))
    }

    /// The names of Airlock's volumes in the host's pool.
    func volumes() throws -> [String] {
        let connection = try Connection(uri: uri)
        defer { connection.close() }
        guard let pool = try connection.storagePool(named: "airlock-remote") else { return [] }
        try pool.refresh()
        return try pool.volumeNames()
    }

    /// The host's Airlock guests.
    func guests() throws -> [String] {
        let connection = try Connection(uri: uri)
        defer { connection.close() }
        return try connection.allDomains().map(\.name).filter { $0.hasPrefix("airlock-") }
    }
}

extension Integration {
    @Suite("remote hosts, reached through libvirt and SSH", .serialized)
    struct RemoteHostTests {
        init() throws {
            try Harness.requireLibvirt()
        }

        @Test("a job runs on a remote host through the jump path; its guest's port is not reachable from here")
        func jumpPath() throws {
            let host = try NamespaceHost(index: 41)
            defer { host.remove() }
            let port = Mutex<Int?>(nil)
            let reachedHere = Mutex<Bool?>(nil)
            let reachedThere = Mutex<Int32?>(nil)
            let outcome = try Harness.run(
                [
                    "--connect", host.uri, "--accel", "tcg", "--workload", "examples/hello", "--", "sh", "-c",
                    "sleep 6; sh run.sh",
                ]
            ) { _ in
                // While the command runs: the guest's forwarded port, from its XML on the remote host.
                let deadline = ContinuousClock.now + .seconds(60)
                while ContinuousClock.now < deadline, port.withLock({ $0 }) == nil {
                    Thread.sleep(forTimeInterval: 0.5)
                    guard let connection = try? Connection(uri: host.uri) else { continue }
                    defer { connection.close() }
                    for domain in (try? connection.allDomains()) ?? [] where domain.name.hasPrefix("airlock-") {
                        let xml = (try? domain.xml()) ?? ""
                        if let range = xml.range(of: "hostfwd=tcp:127.0.0.1:"),
                            let found = Int(xml[range.upperBound...].prefix { $0.isNumber })
                        {
                            port.withLock { $0 = found }
                        }
                    }
                }
                guard let found = port.withLock({ $0 }) else { return }
                reachedHere.withLock { $0 = LoopbackSocket.accepts(port: found) }
                reachedThere.withLock { $0 = try? host.inside("exec 3<>/dev/tcp/127.0.0.1/\(found)") }
            }
            #expect(outcome.status == 0, "\(outcome.stderrText)")
            #expect(outcome.stdoutText.hasPrefix("hello from airlock"))
            #expect(try outcome.result()["host"] as? String == host.uri)
            #expect(port.withLock { $0 } != nil, "the guest's port was not found")
            #expect(reachedHere.withLock { $0 } == false, "the guest's port answered in this namespace")
            #expect(reachedThere.withLock { $0 } == 0, "the guest's port did not answer on its host")
            #expect(try host.guests().isEmpty)
            #expect(try host.volumes().allSatisfy { $0.hasPrefix("image-") }, "a job volume was left")
            try Harness.expectNothingLeft()
        }

        @Test("an image is sent to a host once: the second job finds it there")
        func imageSentOnce() throws {
            let host = try NamespaceHost(index: 42)
            defer { host.remove() }
            var uploads: [Int] = []
            for _ in 0..<2 {
                let outcome = try Harness.run([
                    "--connect", host.uri, "--accel", "tcg", "--workload", "examples/hello", "--", "true",
                ])
                #expect(outcome.status == 0, "\(outcome.stderrText)")
                uploads.append(try outcome.result()["imageUploadBytes"] as? Int ?? -1)
            }
            #expect(uploads[0] > 1_000_000, "the first job sent \(uploads[0]) bytes")
            #expect(uploads[1] == 0, "the second job sent \(uploads[1]) bytes")
            // The kernel and initrd, each with its mark: one copy.
            let volumes = try host.volumes()
            #expect(volumes.count == 4, "\(volumes)")
            try Harness.expectNothingLeft()
        }

        @Test("host add, ls and drain: a drained host gets no job; an unreachable one says why, quickly")
        func hostCommands() throws {
            let host = try NamespaceHost(index: 43)
            defer { host.remove() }
            let queue = try TestQueue()
            defer { queue.remove() }
            #expect(try queue.airlock(["host", "add", "local", "qemu:///system"]).status == 0)
            #expect(try queue.airlock(["host", "add", "remote", host.uri, "--label", "zone=ns"]).status == 0)
            #expect(try queue.airlock(["host", "add", "nowhere", "qemu+ssh://root@127.0.0.1:1/system"]).status == 0)
            let duplicate = try queue.airlock(["host", "add", "remote", "qemu:///session"])
            #expect(duplicate.status == 64 && duplicate.stderrText.contains("already added"))
            let refused = try queue.airlock(["host", "add", "bad", "qemu+tcp://h/system"])
            #expect(refused.status == 64 && refused.stderrText.contains("through SSH"))

            let listed = try queue.airlock(["host", "ls", "--json"])
            #expect(listed.status == 0)
            #expect(listed.elapsed < .seconds(30))
            let hosts = try #require(try JSONSerialization.jsonObject(with: listed.stdout) as? [[String: Any]])
            let byName = Dictionary(uniqueKeysWithValues: hosts.map { ($0["name"] as? String ?? "", $0) })
            #expect(byName["local"]?["reachable"] as? Bool == true)
            #expect(byName["remote"]?["reachable"] as? Bool == true)
            #expect(byName["remote"]?["guests"] as? Int == 0)
            #expect(byName["nowhere"]?["reachable"] as? Bool == false)
            #expect((byName["nowhere"]?["problem"] as? String ?? "").contains("refused"))
            #expect(try queue.airlock(["host", "rm", "nowhere"]).status == 0)

            // Drained: jobs pinned to it wait; the others go elsewhere.
            #expect(try queue.airlock(["host", "drain", "remote"]).status == 0)
            let controller = try queue.controller(["--concurrency", "1"])
            defer { controller.stop() }
            let pinned = try queue.submit([
                "--host-label", "zone=ns", "--accel", "tcg", "--workload", "examples/hello", "--", "true",
            ])
            let anywhere = try queue.submit(["--accel", "tcg", "--workload", "examples/hello", "--", "true"])
            let done = try queue.waitFor(anywhere) { $0.state.isTerminal }
            #expect(done?.state == .succeeded && done?.host == "qemu:///system")
            #expect(try queue.store().record(pinned)?.state == .queued)
            #expect(try queue.airlock(["host", "undrain", "remote"]).status == 0)
            let ran = try queue.waitFor(pinned) { $0.state.isTerminal }
            #expect(ran?.state == .succeeded && ran?.host == host.uri, "\(String(describing: ran))")

            let unknown = try queue.airlock([
                "submit", "--host", "elsewhere", "--workload", "examples/hello", "--", "true",
            ])
            #expect(unknown.status == 64 && unknown.stderrText.contains("asks for host 'elsewhere'"))
            try queue.expectNothingLeft()
            #expect(try host.guests().isEmpty)
        }

        @Test("a batch spreads over two hosts; when one dies mid-batch, every job still ends, on the other")
        func batchSurvivesAHost() throws {
            let host = try NamespaceHost(index: 44)
            defer { host.remove() }
            let queue = try TestQueue()
            defer { queue.remove() }
            #expect(try queue.airlock(["host", "add", "local", "qemu:///system"]).status == 0)
            #expect(try queue.airlock(["host", "add", "remote", host.uri]).status == 0)
            let controller = try queue.controller(["--concurrency", "1"])
            defer { controller.stop() }

            // First a batch that runs through: both hosts take jobs.
            let first = try batch(queue, jobs: 4, command: "sh run.sh")
            var hosts: [String: Int] = [:]
            for id in first {
                let record = try queue.waitFor(id, timeout: .seconds(180)) { $0.state.isTerminal }
                #expect(record?.state == .succeeded, "\(String(describing: record))")
                hosts[record?.host ?? "", default: 0] += 1
            }
            #expect(hosts["qemu:///system", default: 0] >= 1 && hosts[host.uri, default: 0] >= 1, "\(hosts)")

            // Then one whose remote jobs lose their host part way.
            let second = try batch(queue, jobs: 4, command: "sleep 10; echo done")
            let store = try queue.store()
            let deadline = ContinuousClock.now + .seconds(120)
            while ContinuousClock.now < deadline {
                let onRemote = try second.compactMap { try store.record($0) }.filter {
                    $0.host == host.uri && $0.state == .running
                }
                if !onRemote.isEmpty { break }
                Thread.sleep(forTimeInterval: 0.2)
            }
            host.kill()
            for id in second {
                let record = try queue.waitFor(id, timeout: .seconds(300)) { $0.state.isTerminal }
                #expect(record?.state == .succeeded, "\(String(describing: record))")
                #expect(record?.host == "qemu:///system", "\(String(describing: record))")
            }
            let retried = try second.compactMap { try store.record($0) }.filter { $0.attempts > 1 }
            #expect(!retried.isEmpty, "no job was running on the host that died")
            #expect(controller.isRunning)
            #expect(controller.log.contains("host is unhealthy"), "\(controller.log.suffix(3000))")
            try queue.expectNothingLeft()
        }

        /// Submits a batch of hello jobs under TCG and returns their ids.
        private func batch(_ queue: TestQueue, jobs: Int, command: String) throws -> [String] {
            let file = FileManager.default.temporaryDirectory.appendingPathComponent("batch-\(UUID()).jsonl")
            defer { try? FileManager.default.removeItem(at: file) }
            let workload = Harness.repository.appendingPathComponent("examples/hello").path
            let line = try JSONSerialization.data(withJSONObject: [
                "workload": workload, "command": ["sh", "-c", command], "accel": "tcg",
            ])
            try Data(Array(repeating: String(decoding: line, as: UTF8.self), count: jobs).joined(separator: "\n").utf8)
                .write(to: file)
            let id = try queue.submit(["--batch", file.path])
            return try queue.store().list(JobStore.Filter(batch: id)).map(\.id)
        }
    }
}
