import AirlockTestSupport
import Foundation
import Testing

@testable import SSH

@Suite("Session", .serialized)
struct SessionTests {
    private func connect(_ server: TestSSHServer, interrupt: Interrupt? = nil) throws -> Session {
        let deadline = ContinuousClock.now + .seconds(10)
        let session = try Session(host: "127.0.0.1", port: server.port, deadline: deadline, interrupt: interrupt)
        try session.verifyHostKey(server.hostKey.publicKeyBlob)
        try session.authenticate(user: "root", key: server.clientKey, deadline: deadline)
        return session
    }

    private func run(_ session: Session, _ command: String) throws -> (CommandExit, [UInt8], [UInt8]) {
        let channel = try session.exec(command, deadline: .now + .seconds(30))
        var out: [UInt8] = []
        var err: [UInt8] = []
        let status = try channel.drain(deadline: .now + .seconds(60)) { stream, bytes in
            if stream == .stdout { out += bytes } else { err += bytes }
        }
        return (status, out, err)
    }

    @Test("authenticates with an in-memory key and runs a command, streams kept apart")
    func runsCommand() throws {
        let server = try TestSSHServer()
        let session = try connect(server)
        let (status, out, err) = try run(session, "echo out; echo err >&2; exit 3")
        #expect(status == .exited(3))
        #expect(String(decoding: out, as: UTF8.self) == "out\n")
        #expect(String(decoding: err, as: UTF8.self) == "err\n")
    }

    @Test("a command killed by a signal reports the signal, not an exit code")
    func reportsSignal() throws {
        let server = try TestSSHServer()
        let session = try connect(server)
        #expect(try run(session, "kill -KILL $$").0 == .signaled("KILL"))
        #expect(try run(session, "kill -TERM $$").0 == .signaled("TERM"))
    }

    @Test("a host key other than the pinned one is refused")
    func refusesWrongHostKey() throws {
        let server = try TestSSHServer()
        let session = try Session(host: "127.0.0.1", port: server.port, deadline: .now + .seconds(10))
        let other = try KeyPair.generate()
        #expect(throws: SSHError.self) { try session.verifyHostKey(other.publicKeyBlob) }
        do {
            try session.verifyHostKey(other.publicKeyBlob)
        } catch {
            #expect(error.kind == .hostKeyMismatch)
        }
    }

    @Test("a key the server does not know is refused")
    func refusesUnknownClientKey() throws {
        let server = try TestSSHServer()
        let session = try Session(host: "127.0.0.1", port: server.port, deadline: .now + .seconds(10))
        do {
            try session.authenticate(user: "root", key: try KeyPair.generate(), deadline: .now + .seconds(10))
            Issue.record("authentication with an unknown key succeeded")
        } catch {
            #expect(error.kind == .authenticationFailed)
        }
    }

    @Test("both streams are drained: megabytes on stderr then stdout then stderr do not stall")
    func drainsBothStreams() throws {
        let server = try TestSSHServer()
        let session = try connect(server)
        let command = "head -c 5242880 /dev/zero >&2; head -c 5242880 /dev/zero; head -c 5242880 /dev/zero >&2"
        let (status, out, err) = try run(session, command)
        #expect(status == .exited(0))
        #expect(out.count == 5_242_880)
        #expect(err.count == 10_485_760)
    }

    @Test("a deadline ends a silent command's wait with a timeout")
    func deadlineTimesOut() throws {
        let server = try TestSSHServer()
        let session = try connect(server)
        let channel = try session.exec("sleep 30", deadline: .now + .seconds(10))
        let start = ContinuousClock.now
        do {
            _ = try channel.drain(deadline: .now + .milliseconds(500)) { _, _ in }
            Issue.record("drain returned before the command ended")
        } catch let error as SSHError {
            #expect(error.kind == .timeout)
        }
        #expect(ContinuousClock.now - start < .seconds(3))
    }

    @Test("an interrupt wakes a blocked wait at once")
    func interruptWakesWait() throws {
        let server = try TestSSHServer()
        let interrupt = Interrupt()
        let session = try connect(server, interrupt: interrupt)
        let channel = try session.exec("sleep 30", deadline: .now + .seconds(10))
        DispatchQueue.global().asyncAfter(deadline: .now() + 0.3) { interrupt.fire() }
        let start = ContinuousClock.now
        do {
            _ = try channel.drain(deadline: nil) { _, _ in }
            Issue.record("drain returned before the command ended")
        } catch let error as SSHError {
            #expect(error.kind == .interrupted)
        }
        #expect(ContinuousClock.now - start < .seconds(3))
    }

    @Test("remote forwarding: the server listens for us, and a connection there arrives as a channel")
    func remoteForwarding() throws {
        let server = try TestSSHServer()
        let session = try connect(server)
        let port = try TestSSHServer.freePort()
        let listener = try session.listen(host: "127.0.0.1", port: port, deadline: .now + .seconds(10))
        #expect(listener.port == port)

        // A client on the server's side connects and speaks first.
        let client = Thread {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(fd) }
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard connected == 0 else { return }
            _ = send(fd, "ping", 4, 0)
            var reply = [UInt8](repeating: 0, count: 16)
            _ = recv(fd, &reply, reply.count, 0)
        }
        client.start()

        let deadline = ContinuousClock.now + .seconds(10)
        var channel: Channel?
        while channel == nil && ContinuousClock.now < deadline {
            channel = try listener.accept()
            if channel == nil { try session.wait(deadline: deadline, "test") }
        }
        let accepted = try #require(channel)
        var received: [UInt8] = []
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64, alignment: 8)
        defer { buffer.deallocate() }
        while received.count < 4 && ContinuousClock.now < deadline {
            if case .data(let count) = try accepted.read(.stdout, into: buffer) {
                received += UnsafeRawBufferPointer(rebasing: buffer[0..<count])
            } else {
                try session.wait(deadline: deadline, "test")
            }
        }
        #expect(received == Array("ping".utf8))
        var sent = 0
        while sent == 0 && ContinuousClock.now < deadline {
            sent = try Array("pong".utf8).withUnsafeBytes { try accepted.send($0) }
        }
        #expect(sent == 4)
        while try !accepted.trySendEOF() {}
        _ = accepted.release()
        listener.cancel()
        session.close()
    }
}
