import Foundation
import Testing

@testable import Archive

@Suite("Tar writer and reader")
struct TarRoundTripTests {
    /// Writes with `build`, then reads every entry back with its data.
    private func roundTrip(_ build: (TarWriter) throws -> Void) throws -> [(TarEntry, [UInt8])] {
        var stream: [UInt8] = []
        let writer = try TarWriter { stream += $0 }
        try build(writer)
        try writer.finish()

        var offset = 0
        let reader = try TarReader { buffer in
            let count = min(buffer.count, stream.count - offset, 777)  // odd chunk sizes on purpose
            stream.withUnsafeBytes {
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[offset..<(offset + count)]))
            }
            offset += count
            return count
        }
        var entries: [(TarEntry, [UInt8])] = []
        let chunk = UnsafeMutableRawBufferPointer.allocate(byteCount: 1000, alignment: 8)
        defer { chunk.deallocate() }
        while let entry = try reader.next() {
            var data: [UInt8] = []
            while case let count = try reader.read(into: chunk), count > 0 {
                data += chunk[0..<count]
            }
            entries.append((entry, data))
        }
        return entries
    }

    @Test("a folder tree keeps names, modes, symlinks, empty folders and exact bytes")
    func folderTree() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-tar-\(UUID())")
        defer { try? FileManager.default.removeItem(at: folder) }
        try FileManager.default.createDirectory(
            at: folder.appendingPathComponent("empty"), withIntermediateDirectories: true)
        let random = (0..<100_003).map { _ in UInt8.random(in: 0...255) }
        try Data(random).write(to: folder.appendingPathComponent("blob.bin"))
        try Data("#!/bin/sh\necho hi\n".utf8).write(to: folder.appendingPathComponent("run.sh"))
        chmod(folder.appendingPathComponent("run.sh").path, 0o755)
        try Data("s".utf8).write(to: folder.appendingPathComponent(".env"))
        chmod(folder.appendingPathComponent(".env").path, 0o600)
        try FileManager.default.createSymbolicLink(
            atPath: folder.appendingPathComponent("link").path, withDestinationPath: "run.sh")
        let long = String(repeating: "n", count: 150)
        try Data("x".utf8).write(to: folder.appendingPathComponent(long))

        var count = 0
        let entries = try roundTrip { count = try $0.appendContents(of: folder) }
        #expect(count == 6)
        // Folders are stored with a trailing slash, as tar does.
        let byName = Dictionary(
            uniqueKeysWithValues: entries.map {
                (String(decoding: $0.0.path, as: UTF8.self).trimmingCharacters(in: CharacterSet(charactersIn: "/")), $0)
            })
        #expect(byName["blob.bin"]?.1 == random)
        #expect(byName["run.sh"]?.0.mode == 0o755)
        #expect(byName[".env"]?.0.mode == 0o600)
        #expect(byName["empty"]?.0.kind == .directory)
        #expect(byName["link"]?.0.kind == .symlink)
        #expect(byName["link"]?.0.linkTarget == Array("run.sh".utf8))
        #expect(byName[long]?.1 == Array("x".utf8))
    }

    @Test("a folder named through a symbolic link is archived as the folder it points to")
    func linkedRoot() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-tar-\(UUID())")
        defer { try? FileManager.default.removeItem(at: base) }
        let real = base.appendingPathComponent("real")
        try FileManager.default.createDirectory(at: real, withIntermediateDirectories: true)
        try Data("echo hi\n".utf8).write(to: real.appendingPathComponent("run.sh"))
        let link = base.appendingPathComponent("link")
        try FileManager.default.createSymbolicLink(atPath: link.path, withDestinationPath: "real")

        var count = 0
        let entries = try roundTrip { count = try $0.appendContents(of: link) }
        #expect(count == 1)
        #expect(entries.map { String(decoding: $0.0.path, as: UTF8.self) } == ["run.sh"])
        #expect(entries.first?.1 == Array("echo hi\n".utf8))
    }

    @Test("hostile entries come back exactly as stored, for the collector to judge")
    func hostileEntries() throws {
        let entries = try roundTrip { writer in
            try writer.append(path: "../escape", kind: .file, data: [1])
            try writer.append(path: "/abs", kind: .file, data: [2])
            try writer.append(path: "x", kind: .symlink, linkTarget: "..")
            try writer.append(path: "fifo", kind: .fifo)
        }
        #expect(entries.map { String(decoding: $0.0.path, as: UTF8.self) } == ["../escape", "/abs", "x", "fifo"])
        #expect(entries[2].0.linkTarget == Array("..".utf8))
        #expect(entries[3].0.kind == .fifo)
    }

    @Test("an error thrown by the sink stops writing and is rethrown")
    func sinkErrorStops() throws {
        struct Full: Error {}
        let writer = try TarWriter { _ in throw Full() }
        #expect(throws: Full.self) {
            try writer.append(path: "big", kind: .file, data: [UInt8](repeating: 7, count: 100_000))
            try writer.finish()
        }
    }
}
