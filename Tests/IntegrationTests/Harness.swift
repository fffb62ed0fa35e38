import Foundation
import Libvirt
import Testing

/// Every suite that boots guests or checks libvirt for leftovers nests here,
/// so that they run one test at a time: a leftover check must never see
/// another test's guest.
@Suite("Integration", .serialized)
struct Integration {}

/// Runs the built `airlock` binary against the real libvirtd and checks that
/// nothing of a job is left behind afterwards.
enum Harness {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    static let binary = repository.appendingPathComponent(".build/debug/airlock")
    static let stateFolder = URL(
        fileURLWithPath: ProcessInfo.processInfo.environment["AIRLOCK_STATE_DIR"] ?? "/var/lib/airlock")

    /// What one `airlock` invocation did.
    struct Outcome {
        var status: Int32
        var stdout: Data
        var stderr: Data
        var results: URL
        var elapsed: Duration

        var stdoutText: String { String(decoding: stdout, as: UTF8.self) }
        var stderrText: String { String(decoding: stderr, as: UTF8.self) }

        /// result.json as a dictionary.
        func result() throws -> [String: Any] {
            let data = try Data(contentsOf: results.appendingPathComponent("result.json"))
            return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        }

        func file(_ name: String) throws -> Data {
            try Data(contentsOf: results.appendingPathComponent(name))
        }
    }

    /// Fails (never skips) when libvirtd is not reachable, saying how to start it.
    static func requireLibvirt() throws {
        do {
            let connection = try Connection(uri: "qemu:///system")
            connection.close()
        } catch {
            let message =
                "libvirtd is not reachable at qemu:///system (\(error)). Start it with 'scripts/start-libvirtd.sh' "
                + "or run the whole suite with 'scripts/test.sh', which installs and starts everything."
            Issue.record(Comment(rawValue: message))
            throw error
        }
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            Issue.record("the airlock binary is missing at \(binary.path); run 'swift build' first")
            throw CocoaError(.fileNoSuchFile)
        }
    }

    /// Runs `airlock run ARGS` with a fresh result folder.
    static func run(
        _ arguments: [String], results: URL? = nil, environment: [String: String] = [:],
        afterLaunch: ((Process) -> Void)? = nil
    ) throws -> Outcome {
        let folder =
            results
            ?? FileManager.default.temporaryDirectory
            .appendingPathComponent("airlock-it-\(UUID().uuidString.prefix(8))")
        var full = ["run", "--results", folder.path]
        full += arguments
        return try invoke(full, results: folder, environment: environment, afterLaunch: afterLaunch)
    }

    /// Runs `airlock ARGS` as given.
    static func invoke(
        _ arguments: [String], results: URL, environment: [String: String] = [:],
        afterLaunch: ((Process) -> Void)? = nil
    ) throws -> Outcome {
        let process = Process()
        process.executableURL = binary
        process.arguments = arguments
        process.currentDirectoryURL = repository
        var env = ProcessInfo.processInfo.environment
        env["AIRLOCK_STATE_DIR"] = stateFolder.path
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-it-out-\(UUID())")
        let err = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-it-err-\(UUID())")
        _ = FileManager.default.createFile(atPath: out.path, contents: nil)
        _ = FileManager.default.createFile(atPath: err.path, contents: nil)
        defer {
            try? FileManager.default.removeItem(at: out)
            try? FileManager.default.removeItem(at: err)
        }
        process.standardOutput = try FileHandle(forWritingTo: out)
        process.standardError = try FileHandle(forWritingTo: err)
        process.standardInput = FileHandle.nullDevice
        let start = ContinuousClock.now
        try process.run()
        afterLaunch?(process)
        process.waitUntilExit()
        return Outcome(
            status: process.terminationStatus, stdout: try Data(contentsOf: out), stderr: try Data(contentsOf: err),
            results: results, elapsed: ContinuousClock.now - start)
    }

    /// Checks that libvirt has no `airlock-*` domain and the state folder no
    /// per-job files: nothing leaks, whatever the job did.
    static func expectNothingLeft(sourceLocation: SourceLocation = #_sourceLocation) throws {
        let connection = try Connection(uri: "qemu:///system")
        defer { connection.close() }
        let names = try connection.allDomains().map(\.name).filter { $0.hasPrefix("airlock-") }
        #expect(names.isEmpty, "domains left: \(names)", sourceLocation: sourceLocation)
        let run = stateFolder.appendingPathComponent("run")
        let files = (try? FileManager.default.contentsOfDirectory(atPath: run.path)) ?? []
        #expect(files.isEmpty, "job folders left in \(run.path): \(files)", sourceLocation: sourceLocation)
        let pool = stateFolder.appendingPathComponent("images/.pool")
        let overlays = ((try? FileManager.default.contentsOfDirectory(atPath: pool.path)) ?? []).filter {
            $0.hasPrefix("airlock-") || $0.hasPrefix(".incoming-")
        }
        #expect(overlays.isEmpty, "disk overlays left in \(pool.path): \(overlays)", sourceLocation: sourceLocation)
    }

    /// A workload folder made from name → contents (and optional mode).
    static func workload(_ files: [String: (String, Int)] = [:]) throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-wl-\(UUID())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        for (name, (contents, mode)) in files {
            let url = folder.appendingPathComponent(name)
            try FileManager.default.createDirectory(
                at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
            try Data(contents.utf8).write(to: url)
            chmod(url.path, mode_t(mode))
        }
        return folder
    }
}

extension Harness {
    /// The local addresses of the TCP sockets QEMU listens on, from `ss`.
    static func qemuListeners() -> Set<String> {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/ss")
        process.arguments = ["-Hltnp"]
        let pipe = Pipe()
        process.standardOutput = pipe
        guard (try? process.run()) != nil else { return [] }
        let text = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        var found: Set<String> = []
        for line in text.split(separator: "\n") where line.contains("qemu-system") {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if fields.count > 3 {
                found.insert(String(fields[3]))
            }
        }
        return found
    }
}

/// SHA-256 through the system's sha256sum, for comparing with what a guest printed.
enum SHA256 {
    static func hex(_ data: Data) -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sha256sum")
        let input = Pipe()
        let output = Pipe()
        process.standardInput = input
        process.standardOutput = output
        guard (try? process.run()) != nil else { return "" }
        DispatchQueue.global().async {
            input.fileHandleForWriting.write(data)
            try? input.fileHandleForWriting.close()
        }
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        return String(text.prefix(64))
    }
}
