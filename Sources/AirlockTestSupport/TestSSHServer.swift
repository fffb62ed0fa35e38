import Foundation
import SSH

/// An OpenSSH server on 127.0.0.1 that a test starts for itself, with a
/// fresh host key and one authorized client key. It allows TCP forwarding
/// both ways, as OpenSSH does by default.
public final class TestSSHServer {
    public let port: Int
    public let hostKey: KeyPair
    public let clientKey: KeyPair
    private let folder: URL
    private let process: Process

    /// - Parameter extraConfig: sshd_config lines added to the test's own.
    /// - Throws: When the keys cannot be written or sshd does not start.
    public init(extraConfig: String = "") throws {
        hostKey = try KeyPair.generate()
        clientKey = try KeyPair.generate()
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-sshd-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        chmod(folder.path, 0o755)
        let hostKeyFile = folder.appendingPathComponent("host_key")
        try Data(hostKey.openSSHPrivateKey.utf8).write(to: hostKeyFile)
        chmod(hostKeyFile.path, 0o600)
        let authorized = folder.appendingPathComponent("authorized_keys")
        try Data((clientKey.authorizedKey() + "\n").utf8).write(to: authorized)
        chmod(authorized.path, 0o644)

        port = try Self.freePort()
        let config = folder.appendingPathComponent("sshd_config")
        try """
        ListenAddress 127.0.0.1:\(port)
        HostKey \(hostKeyFile.path)
        AuthorizedKeysFile \(authorized.path)
        PasswordAuthentication no
        KbdInteractiveAuthentication no
        PermitRootLogin yes
        StrictModes no
        UsePAM no
        PidFile none
        Subsystem sftp internal-sftp
        \(extraConfig)
        """.write(to: config, atomically: true, encoding: .utf8)

        try FileManager.default.createDirectory(atPath: "/run/sshd", withIntermediateDirectories: true)
        process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/sshd")
        process.arguments = ["-D", "-e", "-f", config.path]
        process.standardError = FileHandle.nullDevice
        try process.run()

        // Wait until it accepts connections.
        let deadline = ContinuousClock.now + .seconds(10)
        while ContinuousClock.now < deadline {
            if LoopbackSocket.accepts(port: port) { return }
            usleep(20_000)
        }
        throw SSHError(.timeout, message: "test sshd did not start on port \(port)")
    }

    deinit {
        process.terminate()
        process.waitUntilExit()
        try? FileManager.default.removeItem(at: folder)
    }

    /// A TCP port on 127.0.0.1 that nothing listens on at the moment.
    public static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
