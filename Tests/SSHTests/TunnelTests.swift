import AirlockTestSupport
import Foundation
import Testing

@testable import SSH

@Suite("Sessions to hosts and tunnels through them", .serialized)
struct TunnelTests {
    /// A file in a fresh folder, removed by the caller.
    private func file(_ name: String, _ text: String, mode: mode_t = 0o600) throws -> URL {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("airlock-hostkeys-\(UUID())")
        try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
        let url = folder.appendingPathComponent(name)
        try Data(text.utf8).write(to: url)
        chmod(url.path, mode)
        return url
    }

    private func knownHosts(_ server: TestSSHServer, key: KeyPair) throws -> URL {
        try file("known_hosts", "[127.0.0.1]:\(server.port) \(key.authorizedKey(comment: ""))\n")
    }

    /// A session to the server as a host: checked against known_hosts, logged in with a key file.
    private func hostSession(_ server: TestSSHServer, interrupt: Interrupt? = nil) throws -> Session {
        let deadline = ContinuousClock.now + .seconds(10)
        let known = try knownHosts(server, key: server.hostKey)
        let key = try file("id_ed25519", server.clientKey.openSSHPrivateKey)
        defer {
            try? FileManager.default.removeItem(at: known.deletingLastPathComponent())
            try? FileManager.default.removeItem(at: key.deletingLastPathComponent())
        }
        let session = try Session(host: "127.0.0.1", port: server.port, deadline: deadline, interrupt: interrupt)
        try session.verifyKnownHost("127.0.0.1", port: server.port, knownHostsFile: known.path)
        try session.authenticate(user: "root", privateKeyFile: key.path, deadline: deadline)
        return session
    }

    @Test("a host listed in known_hosts is accepted; another key, or no entry, is refused")
    func knownHosts() throws {
        let server = try TestSSHServer()
        _ = try hostSession(server)

        let other = try KeyPair.generate()
        let wrong = try knownHosts(server, key: other)
        let empty = try file("known_hosts", "")
        defer {
            try? FileManager.default.removeItem(at: wrong.deletingLastPathComponent())
            try? FileManager.default.removeItem(at: empty.deletingLastPathComponent())
        }
        for (known, words) in [(wrong, "host key mismatch"), (empty, "is not in the known hosts file")] {
            let session = try Session(host: "127.0.0.1", port: server.port, deadline: .now + .seconds(10))
            #expect {
                try session.verifyKnownHost("127.0.0.1", port: server.port, knownHostsFile: known.path)
            } throws: { error in
                (error as? SSHError)?.kind == .hostKeyMismatch && "\(error)".contains(words)
            }
        }
    }

    @Test("a session through a tunnel reaches a port on the server's loopback, and ends when the tunnel does")
    func sessionThroughTunnel() throws {
        let server = try TestSSHServer()
        let outerInterrupt = Interrupt()
        let outer = try hostSession(server, interrupt: outerInterrupt)
        let deadline = ContinuousClock.now + .seconds(10)
        // The far end is the same sshd, reached from its own side.
        let tunnel = try Tunnel(
            through: outer, interrupt: outerInterrupt, toHost: "127.0.0.1", port: server.port, deadline: deadline)
        let inner = try Session(socket: tunnel.localSocket, deadline: deadline)
        try inner.verifyHostKey(server.hostKey.publicKeyBlob)
        try inner.authenticate(user: "root", key: server.clientKey, deadline: deadline)
        let channel = try inner.exec("head -c 3000000 /dev/zero | wc -c; echo err >&2; exit 7", deadline: deadline)
        var out: [UInt8] = []
        var err: [UInt8] = []
        let status = try channel.drain(deadline: deadline) { stream, bytes in
            if stream == .stdout { out += bytes } else { err += bytes }
        }
        #expect(String(decoding: out, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines) == "3000000")
        #expect(err == Array("err\n".utf8))
        #expect(status == .exited(7))

        tunnel.close()
        #expect(throws: SSHError.self) {
            let next = try inner.exec("true", deadline: .now + .seconds(5))
            _ = try next.drain(deadline: .now + .seconds(5)) { _, _ in }
        }
        inner.close()
        tunnel.close()
    }

    @Test("a host that forbids TCP forwarding refuses the tunnel with libssh2's reason")
    func forwardingRefused() throws {
        let server = try TestSSHServer(extraConfig: "AllowTcpForwarding no")
        let interrupt = Interrupt()
        let outer = try hostSession(server, interrupt: interrupt)
        #expect(throws: SSHError.self) {
            _ = try Tunnel(
                through: outer, interrupt: interrupt, toHost: "127.0.0.1", port: server.port,
                deadline: .now + .seconds(10))
        }
    }
}
