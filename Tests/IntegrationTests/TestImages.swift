import Foundation
import Libvirt
import SSH
import Testing

/// Variants of the tiny image whose boot misbehaves on purpose. Each is the
/// tiny image with a second cpio archive appended to its initramfs, which
/// replaces the boot script (the kernel unpacks both, the later one wins).
enum TestImages {
    /// A catalog folder holding `tiny` plus the variants, made once per test process.
    static let catalog: URL = {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-test-images-\(getpid())")
        try? FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        chmod(root.path, 0o755)
        return root
    }()

    static var tinyFolder: URL { Harness.stateFolder.appendingPathComponent("images/tiny") }

    /// An image whose boot script prints one line and sleeps: SSH never starts.
    static func sleeper() throws -> String {
        try variant(
            "sleeper",
            boot: """
                #!/bin/sh
                mount -t devtmpfs devtmpfs /dev
                echo "airlock-test: this guest never starts SSH" >/dev/ttyS0
                exec sleep 100000
                """, extraFiles: [:])
    }

    /// An image that ignores the host key Airlock hands it and uses its own.
    static func rogueHostKey() throws -> String {
        let rogue = try KeyPair.generate()
        let original = try String(
            contentsOf: Harness.repository.appendingPathComponent("images/tiny/init"), encoding: .utf8)
        let marker = "sed -n 's/^hostkey //p'"
        guard
            let line = original.split(separator: "\n", omittingEmptySubsequences: false)
                .first(where: { $0.contains(marker) })
        else {
            Issue.record("images/tiny/init no longer writes the host key with \(marker)")
            throw CocoaError(.fileReadCorruptFile)
        }
        let boot = original.replacingOccurrences(
            of: String(line), with: "\(line)\ncp /etc/rogue_host_key /etc/dropbear/host_key")
        return try variant("rogue", boot: boot, extraFiles: ["etc/rogue_host_key": Data(rogue.dropbearPrivateKey)])
    }

    /// An image whose boot script crashes the kernel.
    static func panicker() throws -> String {
        try variant(
            "panicker",
            boot: """
                #!/bin/sh
                mount -t proc proc /proc
                echo c >/proc/sysrq-trigger
                """, extraFiles: [:])
    }

    /// Pauses every running Airlock guest, as a stalled host would.
    static func suspendAirlockDomains() {
        guard let connection = try? Connection(uri: "qemu:///system") else { return }
        defer { connection.close() }
        for domain in (try? connection.allDomains()) ?? [] where domain.name.hasPrefix("airlock-") {
            try? domain.suspend()
        }
    }

    /// A manifest whose initrd file does not exist.
    static func missingFiles() throws -> String {
        let folder = catalog.appendingPathComponent("broken")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        var manifest = try String(contentsOf: tinyFolder.appendingPathComponent("manifest.json"), encoding: .utf8)
        manifest = manifest.replacingOccurrences(of: "\"name\" : \"tiny\"", with: "\"name\" : \"broken\"")
        try manifest.write(to: folder.appendingPathComponent("manifest.json"), atomically: true, encoding: .utf8)
        return "broken"
    }

    private static func variant(_ name: String, boot: String, extraFiles: [String: Data]) throws -> String {
        let folder = catalog.appendingPathComponent(name)
        if FileManager.default.fileExists(atPath: folder.appendingPathComponent("manifest.json").path) {
            return name
        }
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        chmod(folder.path, 0o755)
        let overlay = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-overlay-\(UUID())")
        defer { try? FileManager.default.removeItem(at: overlay) }
        try FileManager.default.createDirectory(
            at: overlay.appendingPathComponent("sbin"), withIntermediateDirectories: true)
        try FileManager.default.createDirectory(
            at: overlay.appendingPathComponent("etc"), withIntermediateDirectories: true)
        let script = overlay.appendingPathComponent("sbin/airlock-boot")
        try Data(boot.utf8).write(to: script)
        chmod(script.path, 0o755)
        for (path, data) in extraFiles {
            try data.write(to: overlay.appendingPathComponent(path))
            chmod(overlay.appendingPathComponent(path).path, 0o600)
        }

        // kernel as is; initramfs = tiny's + the overlay archive.
        try FileManager.default.copyItem(
            at: tinyFolder.appendingPathComponent("vmlinuz"), to: folder.appendingPathComponent("vmlinuz"))
        var initrd = try Data(contentsOf: tinyFolder.appendingPathComponent("initrd.img"))
        initrd.append(try cpio(overlay))
        try initrd.write(to: folder.appendingPathComponent("initrd.img"))
        var manifest = try String(contentsOf: tinyFolder.appendingPathComponent("manifest.json"), encoding: .utf8)
        manifest = manifest.replacingOccurrences(of: "\"name\" : \"tiny\"", with: "\"name\" : \"\(name)\"")
        try manifest.write(to: folder.appendingPathComponent("manifest.json"), atomically: true, encoding: .utf8)
        return name
    }

    private static func cpio(_ folder: URL) throws -> Data {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "cd '\(folder.path)' && find . | cpio --create --format=newc --owner=0:0 --quiet"]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw CocoaError(.fileWriteUnknown) }
        return data
    }
}
