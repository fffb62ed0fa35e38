import Foundation
import Testing

@testable import Airlock

@Suite("ResultCopy")
struct ResultCopyTests {
    private func scratch() throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-copy-\(UUID())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        return folder
    }

    /// Makes `depth` nested folders named `name` under `root` and a file
    /// `leaf` holding `text` at the bottom, relative to open folders.
    private func deepTree(in root: URL, name: String, depth: Int, text: String) {
        var folder = open(root.path, O_RDONLY | O_DIRECTORY)
        for _ in 0..<depth {
            mkdirat(folder, name, 0o755)
            let next = openat(folder, name, O_RDONLY | O_DIRECTORY)
            close(folder)
            folder = next
        }
        let file = openat(folder, "leaf", O_WRONLY | O_CREAT | O_EXCL, 0o644)
        _ = text.utf8CString.withUnsafeBytes { write(file, $0.baseAddress, $0.count - 1) }
        close(file)
        close(folder)
    }

    /// Reads `leaf` at the bottom of such a tree, or nil.
    private func readDeep(in root: URL, name: String, depth: Int) -> String? {
        var folder = open(root.path, O_RDONLY | O_DIRECTORY)
        for _ in 0..<depth {
            let next = openat(folder, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW)
            close(folder)
            guard next >= 0 else { return nil }
            folder = next
        }
        defer { close(folder) }
        let file = openat(folder, "leaf", O_RDONLY | O_NOFOLLOW)
        guard file >= 0 else { return nil }
        defer { close(file) }
        var bytes = [UInt8](repeating: 0, count: 64)
        let count = read(file, &bytes, bytes.count)
        return count >= 0 ? String(decoding: bytes.prefix(count), as: UTF8.self) : nil
    }

    @Test("a tree deeper than a path can name is copied whole")
    func deeperThanPathMax() throws {
        let root = try scratch()
        defer { deepRemove(root) }
        let source = root.appendingPathComponent("job")
        try FileManager.default.createDirectory(at: source, withIntermediateDirectories: true)
        // 20 levels of 250 bytes: 5000 bytes of path below the job folder.
        let name = String(repeating: "d", count: 250)
        deepTree(in: source, name: name, depth: 20, text: "bottom\n")
        let target = root.appendingPathComponent("copy")
        try ResultCopy.copyFolder(source, to: target)
        #expect(readDeep(in: target, name: name, depth: 20) == "bottom\n")

        // FileManager cannot remove such a tree; FileTree can.
        #expect(throws: (any Error).self) { try FileManager.default.removeItem(at: target) }
        try FileTree.remove(target)
        #expect(!FileManager.default.fileExists(atPath: target.path))
        try FileTree.remove(target)
    }

    @Test("removing a tree removes links, not what they point to")
    func removeKeepsLinkTargets() throws {
        let root = try scratch()
        defer { deepRemove(root) }
        let outside = root.appendingPathComponent("outside")
        try FileManager.default.createDirectory(at: outside, withIntermediateDirectories: true)
        try Data("keep".utf8).write(to: outside.appendingPathComponent("file"))
        let tree = root.appendingPathComponent("tree/out")
        try FileManager.default.createDirectory(at: tree, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(
            atPath: tree.appendingPathComponent("link").path, withDestinationPath: outside.path)
        try FileTree.remove(root.appendingPathComponent("tree"))
        #expect(!FileManager.default.fileExists(atPath: root.appendingPathComponent("tree").path))
        #expect(try String(contentsOf: outside.appendingPathComponent("file"), encoding: .utf8) == "keep")
    }

    @Test("links are not followed or copied; result.json temporaries only skipped at the top")
    func linksAndTemporaries() throws {
        let root = try scratch()
        defer { deepRemove(root) }
        let source = root.appendingPathComponent("job")
        try FileManager.default.createDirectory(
            at: source.appendingPathComponent("out"), withIntermediateDirectories: true)
        try Data("x".utf8).write(to: source.appendingPathComponent(".result.json.tmp"))
        try Data("kept".utf8).write(to: source.appendingPathComponent("out/.result.json.tmp"))
        try FileManager.default.createSymbolicLink(
            atPath: source.appendingPathComponent("out/etc").path, withDestinationPath: "/etc")
        let target = root.appendingPathComponent("copy")
        try ResultCopy.copyFolder(source, to: target)
        #expect(!FileManager.default.fileExists(atPath: target.appendingPathComponent(".result.json.tmp").path))
        #expect(
            try String(contentsOf: target.appendingPathComponent("out/.result.json.tmp"), encoding: .utf8) == "kept")
        var info = stat()
        #expect(lstat(target.appendingPathComponent("out/etc").path, &info) != 0)
    }

    /// Removes a tree too deep for FileManager, with `rm`.
    private func deepRemove(_ folder: URL) {
        let remove = Process()
        remove.executableURL = URL(fileURLWithPath: "/bin/rm")
        remove.arguments = ["-rf", folder.path]
        try? remove.run()
        remove.waitUntilExit()
    }
}
