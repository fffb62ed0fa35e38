import Foundation
import Testing

@testable import Airlock

@Suite("ImageCatalog")
struct ImageCatalogTests {
    private func catalog(_ build: (URL) throws -> Void) throws -> ImageCatalog {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-images-\(UUID())")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        try build(root)
        return ImageCatalog(root: root)
    }

    private func manifest(_ name: String, in root: URL, files: Bool) throws {
        let folder = root.appendingPathComponent(name)
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let json = """
            {"name": "\(name)", "boot": "kernel", "kernel": "vmlinuz", "initrd": "initrd.img",
             "cmdline": "quiet", "sshUser": "root", "keyInjection": "fwcfg", "minimumMemoryMiB": 128,
             "contentHash": "sha256:0"}
            """
        try Data(json.utf8).write(to: folder.appendingPathComponent("manifest.json"))
        if files {
            try Data().write(to: folder.appendingPathComponent("vmlinuz"))
            try Data().write(to: folder.appendingPathComponent("initrd.img"))
        }
    }

    @Test("an unknown image names the known ones")
    func unknownImageListsKnown() throws {
        let images = try catalog { root in
            try manifest("tiny", in: root, files: true)
            try manifest("other", in: root, files: true)
        }
        defer { try? FileManager.default.removeItem(at: images.root) }
        do {
            _ = try images.image(named: "nope")
            Issue.record("an unknown image loaded")
        } catch {
            #expect(error.code == .notFound)
            #expect(error.message.contains("known images: other, tiny"))
        }
    }

    @Test("an image whose files are missing is reported as broken")
    func missingFiles() throws {
        let images = try catalog { try manifest("tiny", in: $0, files: false) }
        defer { try? FileManager.default.removeItem(at: images.root) }
        do {
            _ = try images.image(named: "tiny")
            Issue.record("a broken image loaded")
        } catch {
            #expect(error.code == .imageInvalid)
            #expect(error.message.contains("'vmlinuz'"))
        }
    }

    @Test("names that could leave the catalog folder are refused", arguments: ["../etc", "a/b", "..", ".", ""])
    func unsafeNames(_ name: String) throws {
        let images = try catalog { _ in }
        defer { try? FileManager.default.removeItem(at: images.root) }
        #expect(throws: AirlockError.self) { try images.image(named: name) }
    }

    @Test("a good image loads with its paths resolved")
    func loads() throws {
        let images = try catalog { try manifest("tiny", in: $0, files: true) }
        defer { try? FileManager.default.removeItem(at: images.root) }
        let image = try images.image(named: "tiny")
        #expect(image.kernelURL.path == images.root.appendingPathComponent("tiny/vmlinuz").path)
        #expect(image.minimumMemoryMiB == 128)
    }
}
