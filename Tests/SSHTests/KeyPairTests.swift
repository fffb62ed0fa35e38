import Foundation
import Testing

@testable import SSH

@Suite("KeyPair")
struct KeyPairTests {
    @Test("the OpenSSH private key is accepted by ssh-keygen and yields the same public key")
    func openSSHFormatRoundTrips() throws {
        let key = try KeyPair.generate()
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-keytest-\(UUID())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: folder) }
        let file = folder.appendingPathComponent("id")
        try Data(key.openSSHPrivateKey.utf8).write(to: file)
        chmod(file.path, 0o600)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/ssh-keygen")
        process.arguments = ["-y", "-f", file.path]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        process.waitUntilExit()
        let derived = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(process.terminationStatus == 0)
        #expect(derived.split(separator: " ").prefix(2) == key.authorizedKey().split(separator: " ").prefix(2))
    }

    @Test("two generated keys differ")
    func keysAreFresh() throws {
        #expect(try KeyPair.generate().publicKey != KeyPair.generate().publicKey)
    }
}
