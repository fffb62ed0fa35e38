import Foundation
import Testing

@testable import Airlock

@Suite("CloudInitSeed")
struct CloudInitSeedTests {
    @Test("the seed always holds meta-data with the job's own instance-id, and user-data with the job's keys")
    func contents() throws {
        let keys = try GuestKeys.generate()
        let seed = CloudInitSeed(jobID: "0123456789ab", keys: keys, lifetimeSeconds: 900)
        #expect(seed.metaData.contains("instance-id: airlock-0123456789ab\n"))
        #expect(seed.metaData.contains("local-hostname: airlock-0123456789ab\n"))
        let user = seed.userData
        #expect(user.hasPrefix("#cloud-config\n"))
        #expect(user.contains("  - \(keys.client.authorizedKey())\n"))
        #expect(user.contains("ed25519_public: \(keys.host.authorizedKey(comment: seed.hostname))\n"))
        // The private key's lines are indented under the literal block.
        #expect(user.contains("  ed25519_private: |\n    -----BEGIN OPENSSH PRIVATE KEY-----\n"))
        #expect(user.contains("\n    -----END OPENSSH PRIVATE KEY-----\n  ed25519_public: "))
        #expect(user.contains("disable_root: false"))
        #expect(user.contains("sleep 900"))
        #expect(user.contains(ConsoleWatcher.readyLine))
    }

    @Test("the seed is an ISO 9660 image labelled cidata, readable by its owner only")
    func image() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-seed-\(UUID()).iso")
        defer { try? FileManager.default.removeItem(at: file) }
        let seed = CloudInitSeed(jobID: "0123456789ab", keys: try GuestKeys.generate(), lifetimeSeconds: 60)
        try seed.write(to: file)
        let data = try Data(contentsOf: file)
        // The primary volume descriptor sits at sector 16: type 1, "CD001", then the volume id at byte 40.
        let descriptor = data[32768..<(32768 + 2048)]
        #expect(descriptor.first == 1)
        #expect(String(decoding: descriptor.dropFirst(1).prefix(5), as: UTF8.self) == "CD001")
        let volume = String(decoding: descriptor.dropFirst(40).prefix(32), as: UTF8.self)
        #expect(volume.trimmingCharacters(in: .whitespaces).lowercased() == "cidata")
        #expect(data.range(of: Data(seed.userData.utf8)) != nil)
        #expect(data.range(of: Data(seed.metaData.utf8)) != nil)
        let attributes = try FileManager.default.attributesOfItem(atPath: file.path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        // A second write to the same file is refused rather than truncating it.
        #expect(throws: AirlockError.self) { try seed.write(to: file) }
    }
}
