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
        #expect(image.kernelURL?.path == images.root.appendingPathComponent("tiny/vmlinuz").path)
        #expect(image.minimumMemoryMiB == 128)
    }

    @Test("a disk image's base disk is looked for in the pool, and must be there")
    func diskInPool() throws {
        let images = try catalog { root in
            let folder = root.appendingPathComponent("cloud")
            try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
            let json = """
                {"name": "cloud", "boot": "disk", "disk": "cloud-0123.qcow2", "diskBytes": 2147483648,
                 "sshUser": "root", "keyInjection": "cloud-init", "minimumMemoryMiB": 512, "contentHash": "sha256:0"}
                """
            try Data(json.utf8).write(to: folder.appendingPathComponent("manifest.json"))
        }
        defer { try? FileManager.default.removeItem(at: images.root) }
        #expect(throws: AirlockError.self) { try images.image(named: "cloud") }
        try FileManager.default.createDirectory(at: images.poolFolder, withIntermediateDirectories: true)
        try Data().write(to: images.poolFolder.appendingPathComponent("cloud-0123.qcow2"))
        let image = try images.image(named: "cloud")
        #expect(image.diskURL?.path == images.root.appendingPathComponent(".pool/cloud-0123.qcow2").path)
        #expect(image.keyInjection == .cloudInit && image.boot == .disk && image.kernelURL == nil)
    }

    @Test("a job must fit the image: memory, and a disk no smaller than the image's")
    func jobFits() throws {
        var image = Image(
            name: "debian", boot: .kernel, kernel: "k", initrd: "i", disk: "d.qcow2", diskBytes: 2 << 30,
            cmdline: "", sshUser: "root", keyInjection: .fwcfg, minimumMemoryMiB: 512, contentHash: "")
        var spec = JobSpec(
            image: "debian", workload: URL(fileURLWithPath: "/"), command: ["true"],
            stateFolder: URL(fileURLWithPath: "/"))
        try image.checkFits(spec)
        spec.memoryMiB = 256
        #expect(throws: AirlockError.self) { try image.checkFits(spec) }
        spec.memoryMiB = 512
        spec.diskBytes = 1 << 30
        #expect(throws: AirlockError.self) { try image.checkFits(spec) }
        spec.diskBytes = 4 << 30
        try image.checkFits(spec)
        image.disk = nil
        #expect(throws: AirlockError.self) { try image.checkFits(spec) }
    }

    @Test("the recipe hash changes with any file of the recipe, and only then")
    func recipeHash() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-recipe-\(UUID())")
        try FileManager.default.createDirectory(
            at: folder.appendingPathComponent("files"), withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        try Data("echo build\n".utf8).write(to: folder.appendingPathComponent("build.sh"))
        try Data("init\n".utf8).write(to: folder.appendingPathComponent("files/init"))
        let first = try ImageCatalog.recipeHash(of: folder)
        #expect(try ImageCatalog.recipeHash(of: folder) == first)
        try Data("init 2\n".utf8).write(to: folder.appendingPathComponent("files/init"))
        let second = try ImageCatalog.recipeHash(of: folder)
        #expect(second != first && second.hasPrefix("sha256:"))
        try FileManager.default.moveItem(
            at: folder.appendingPathComponent("files/init"), to: folder.appendingPathComponent("init"))
        #expect(try ImageCatalog.recipeHash(of: folder) != second)
    }

    @Test("a base disk behind a folder QEMU's user cannot pass is named before any guest starts")
    func unreachableBase() throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-home-\(UUID())")
        let pool = folder.appendingPathComponent("images/.pool")
        try FileManager.default.createDirectory(at: pool, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let base = pool.appendingPathComponent("base.qcow2")
        try Data().write(to: base)
        chmod(base.path, 0o444)
        chmod(folder.path, 0o700)
        do {
            try DiskPool.checkReachable(base)
            Issue.record("a base behind a 0700 folder passed")
        } catch {
            #expect(error.code == .hostUnavailable)
            #expect(error.message.contains("the folder '\(folder.path)' (mode 700)"), "\(error.message)")
        }
        chmod(folder.path, 0o711)
        try DiskPool.checkReachable(base)
        chmod(base.path, 0o400)
        #expect(throws: AirlockError.self) { try DiskPool.checkReachable(base) }
    }
}
