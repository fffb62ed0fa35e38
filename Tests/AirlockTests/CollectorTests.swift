import Archive
import Foundation
import Testing

@testable import Airlock

@Suite("Collector")
struct CollectorTests {
    /// A scratch folder with a sentinel file beside the result folder.
    struct Scratch {
        let root: URL
        var results: URL { root.appendingPathComponent("results") }
        var sentinel: URL { root.appendingPathComponent("sentinel") }

        init() throws {
            root = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-collect-\(UUID())")
            try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
            try Data("keep me".utf8).write(to: sentinel)
        }

        func remove() { try? FileManager.default.removeItem(at: root) }

        /// Every path under the scratch root, relative.
        func listing() -> [String] {
            (FileManager.default.enumerator(atPath: root.path)?.allObjects as? [String] ?? []).sorted()
        }
    }

    private func archive(_ build: (TarWriter) throws -> Void) throws -> [UInt8] {
        var stream: [UInt8] = []
        let writer = try TarWriter { stream += $0 }
        try build(writer)
        try writer.finish()
        return stream
    }

    private func collect(
        into folder: URL, limits: CollectLimits = .default, _ build: (TarWriter) throws -> Void
    ) throws -> CollectReport {
        try collect(into: folder, limits: limits, stream: try archive(build))
    }

    private func collect(
        into folder: URL, limits: CollectLimits = .default, stream: [UInt8],
        checkpoint: @escaping () throws -> Void = {}
    ) throws -> CollectReport {
        var offset = 0
        let reader = try TarReader { buffer in
            let count = min(buffer.count, stream.count - offset)
            stream.withUnsafeBytes {
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[offset..<(offset + count)]))
            }
            offset += count
            return count
        }
        var report = CollectReport()
        try Collector(limits: limits, checkpoint: checkpoint).collect(from: reader, into: folder, report: &report)
        return report
    }

    @Test("names that climb out or are absolute are rejected and nothing lands outside")
    func rejectsEscapingNames() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let report = try collect(into: scratch.results) { writer in
            try writer.append(path: "../escaped", kind: .file, data: Array("x".utf8))
            try writer.append(path: "a/../../escaped2", kind: .file, data: Array("x".utf8))
            try writer.append(path: "/tmp/evil-\(UUID())", kind: .file, data: Array("x".utf8))
            try writer.append(path: "ok.txt", kind: .file, data: Array("fine".utf8))
        }
        #expect(report.files == 1)
        #expect(report.skipped.count == 3)
        #expect(report.skipped.allSatisfy { $0.reason == "rejected remote name" })
        #expect(scratch.listing() == ["results", "results/ok.txt", "sentinel"])
        #expect(try String(contentsOf: scratch.sentinel, encoding: .utf8) == "keep me")
    }

    @Test("a symlink followed by a file through it is never followed")
    func neverFollowsLinks() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let report = try collect(into: scratch.results) { writer in
            try writer.append(path: "x", kind: .symlink, linkTarget: "..")
            try writer.append(path: "abs", kind: .symlink, linkTarget: scratch.root.path)
            try writer.append(path: "x/payload", kind: .file, data: Array("bad".utf8))
            try writer.append(path: "abs/sentinel", kind: .file, data: Array("overwritten".utf8))
            try writer.append(path: "f", kind: .file, data: Array("ok\n".utf8))
        }
        #expect(report.files == 1)
        #expect(try String(contentsOf: scratch.sentinel, encoding: .utf8) == "keep me")
        #expect(!FileManager.default.fileExists(atPath: scratch.root.appendingPathComponent("payload").path))
        #expect(report.skipped.contains { $0.path == "x" && $0.reason.hasPrefix("symbolic link") })
        #expect(report.skipped.contains { $0.path == "x/payload" && $0.reason == "inside symbolic link 'x'" })
        #expect(FileManager.default.fileExists(atPath: scratch.results.appendingPathComponent("f").path))
    }

    @Test("a folder already created under a name is not replaced by a planted link")
    func existingNamesAreNotOverwritten() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let report = try collect(into: scratch.results) { writer in
            try writer.append(path: "d/file", kind: .file, data: Array("one".utf8))
            try writer.append(path: "d/file", kind: .file, data: Array("two".utf8))
        }
        #expect(report.files == 1)
        #expect(try String(contentsOf: scratch.results.appendingPathComponent("d/file"), encoding: .utf8) == "one")
    }

    @Test("devices, FIFOs, sockets and hard links are listed, not created")
    func specialFilesSkipped() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let report = try collect(into: scratch.results) { writer in
            try writer.append(path: "fifo", kind: .fifo)
            try writer.append(path: "dev", kind: .characterDevice)
            try writer.append(path: "hard", kind: .hardlink, linkTarget: "/etc/shadow")
        }
        #expect(report.files == 0)
        #expect(report.skipped.count == 3)
        #expect(scratch.listing() == ["results", "sentinel"])
    }

    @Test("setuid bits are dropped and the owner can always read")
    func modesAreTamed() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        _ = try collect(into: scratch.results) { writer in
            try writer.append(path: "suid", kind: .file, mode: 0o4755, data: [1])
            try writer.append(path: "none", kind: .file, mode: 0o000, data: [1])
            try writer.append(path: "open", kind: .file, mode: 0o777, data: [1])
        }
        let suid = try FileManager.default.attributesOfItem(atPath: scratch.results.appendingPathComponent("suid").path)
        let none = try FileManager.default.attributesOfItem(atPath: scratch.results.appendingPathComponent("none").path)
        #expect((suid[.posixPermissions] as? Int) == 0o755)
        #expect((none[.posixPermissions] as? Int) == 0o600)
        let open = try FileManager.default.attributesOfItem(atPath: scratch.results.appendingPathComponent("open").path)
        #expect((open[.posixPermissions] as? Int) == 0o755)
    }

    @Test("the byte limit refuses an oversized file before writing it, with sizes in the reason")
    func byteLimit() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let report = try collect(into: scratch.results, limits: CollectLimits(maxBytes: 1 << 20, maxEntries: 100)) {
            writer in
            try writer.append(path: "small.txt", kind: .file, data: Array("ok\n".utf8))
            try writer.append(path: "big.bin", kind: .file, data: [UInt8](repeating: 0, count: 2 << 20))
        }
        #expect(report.files == 1)
        #expect(report.skipped.first?.reason == "result exceeds limit (2.0 MiB > 1 MiB)")
        #expect(report.limitReached != nil)
        #expect(!FileManager.default.fileExists(atPath: scratch.results.appendingPathComponent("big.bin").path))
    }

    @Test("the entry limit stops the collection and says so")
    func entryLimit() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let report = try collect(into: scratch.results, limits: CollectLimits(maxBytes: 1 << 20, maxEntries: 3)) {
            writer in
            for index in 0..<10 {
                try writer.append(path: "f\(index)", kind: .file, data: [1])
            }
        }
        #expect(report.files == 3)
        #expect(report.limitReached == "more than 3 entries")
    }

    @Test("control characters in names are escaped in the report")
    func escapesNames() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let report = try collect(into: scratch.results) { writer in
            try writer.append(path: "a\u{1b}[2Jb", kind: .symlink, linkTarget: "/")
        }
        #expect(report.skipped.first?.path == "a\\x1b[2Jb")
    }

    @Test("deep nesting costs little per entry and past the depth limit is refused")
    func deepNesting() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let deep = Array(repeating: "d", count: 120).joined(separator: "/")
        let tooDeep = Array(repeating: "e", count: 200).joined(separator: "/")
        let start = ContinuousClock.now
        let report = try collect(into: scratch.results) { writer in
            try writer.append(path: "link", kind: .symlink, linkTarget: "/")
            for index in 0..<2000 {
                try writer.append(path: "\(deep)/f\(index)", kind: .file, data: [1])
            }
            try writer.append(path: "\(tooDeep)/f", kind: .file, data: [1])
        }
        #expect(report.files == 2000)
        #expect(report.skipped.last?.reason == "deeper than 128 folders")
        #expect(ContinuousClock.now - start < .seconds(5))
    }

    @Test("a header claiming an enormous size is refused without overflow")
    func enormousClaimedSize() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        var stream = try archive { writer in
            try writer.append(path: "a", kind: .file, data: Array("first!".utf8))
            try writer.append(path: "b", kind: .file, data: [7])
        }
        // Rewrite b's header: size Int64.max - 1 in base-256, then the checksum.
        let header = try #require(stride(from: 0, to: stream.count, by: 512).first { stream[$0] == UInt8(ascii: "b") })
        var size = [UInt8](repeating: 0, count: 12)
        size[0] = 0x80
        withUnsafeBytes(of: (Int64.max - 1).bigEndian) { size.replaceSubrange(4..<12, with: $0) }
        stream.replaceSubrange((header + 124)..<(header + 136), with: size)
        stream.replaceSubrange((header + 148)..<(header + 156), with: [UInt8](repeating: 0x20, count: 8))
        let sum = stream[header..<(header + 512)].reduce(0) { $0 + Int($1) }
        stream.replaceSubrange((header + 148)..<(header + 156), with: Array(String(format: "%06o\0 ", sum).utf8))
        let report = try collect(into: scratch.results, stream: stream)
        #expect(report.files == 1)
        #expect(report.limitReached != nil)
        #expect(report.skipped.first?.path == "b")
    }

    @Test("the skipped list and each reason stay bounded whatever the guest sends")
    func skippedListBounded() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let target = String(repeating: "A", count: 100_000)
        let report = try collect(into: scratch.results, limits: CollectLimits(maxBytes: 1 << 20, maxEntries: 5000)) {
            writer in
            for index in 0..<3000 {
                try writer.append(path: "l\(index)", kind: .symlink, linkTarget: target)
            }
        }
        #expect(report.skipped.count == CollectReport.maxListed)
        #expect(report.skippedUnlisted == 2000)
        #expect(report.skipped.allSatisfy { $0.reason.count <= 303 })
    }

    @Test("refused entries count towards the entry limit too")
    func refusedEntriesCount() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let report = try collect(into: scratch.results, limits: CollectLimits(maxBytes: 1 << 20, maxEntries: 10)) {
            writer in
            for index in 0..<50 {
                try writer.append(path: "/abs\(index)", kind: .file, data: [1])
            }
            try writer.append(path: "late", kind: .file, data: [1])
        }
        #expect(report.files == 0)
        #expect(report.limitReached == "more than 10 entries")
    }

    @Test("runs of zeros are written as holes, with the full length")
    func zerosBecomeHoles() throws {
        let scratch = try Scratch()
        defer { scratch.remove() }
        let zeros = [UInt8](repeating: 0, count: 8 << 20)
        _ = try collect(into: scratch.results) { writer in
            try writer.append(path: "zeros", kind: .file, data: zeros + [1])
        }
        var info = stat()
        #expect(stat(scratch.results.appendingPathComponent("zeros").path, &info) == 0)
        #expect(info.st_size == (8 << 20) + 1)
        #expect(Int(info.st_blocks) * 512 < 1 << 20)
        let data = try Data(contentsOf: scratch.results.appendingPathComponent("zeros"))
        #expect(data.last == 1 && data.dropLast().allSatisfy { $0 == 0 })
    }

    @Test("the checkpoint can stop a collection between entries and between chunks")
    func checkpointStops() throws {
        struct Stop: Error {}
        let scratch = try Scratch()
        defer { scratch.remove() }
        let stream = try archive { writer in
            for index in 0..<10 {
                try writer.append(path: "f\(index)", kind: .file, data: [UInt8](repeating: 7, count: 300_000))
            }
        }
        var calls = 0
        #expect(throws: Stop.self) {
            _ = try collect(into: scratch.results, stream: stream) {
                calls += 1
                if calls > 5 { throw Stop() }
            }
        }
        #expect(calls == 6)
    }
}
