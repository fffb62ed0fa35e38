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
}
