import AirlockLog
import AirlockTestSupport
import Foundation
import SSH
import Synchronization
import Testing

@testable import Airlock

@Suite("Egress")
struct EgressTests {
    @Test("none, open and allow lists are read; endpoints print back as given")
    func parsesModes() throws {
        #expect(try Egress.parse("none") == .none)
        #expect(try Egress.parse("open") == .open)
        let allow = try Egress.parse("allow=127.0.0.1:8080,api.example.com:443,[::1]:9000")
        #expect(
            allow
                == .allow([
                    .init(host: "127.0.0.1", port: 8080), .init(host: "api.example.com", port: 443),
                    .init(host: "::1", port: 9000),
                ]))
        #expect(allow.description == "allow=127.0.0.1:8080,api.example.com:443,[::1]:9000")
        #expect(allow.endpoints.filter(\.hostIsName).map(\.host) == ["api.example.com"])
    }

    @Test(
        "bad egress is refused with the reason",
        arguments: [
            ("allow=", "not HOST:PORT"), ("allow=host", "not HOST:PORT"), ("allow=h:0", "port 0"),
            ("allow=h:22", "port 22"), ("allow=h:70000", "port 70000"), ("allow=a:80,b:80", "share port 80"),
            ("allow=bad_name:80", "not an IP address or a host name"), ("allow=-x.example:80", "not an IP"),
            ("open=1", "not an egress mode"), ("allow=h:8x", "not HOST:PORT"), ("allow=::1:80", "not HOST:PORT"),
        ])
    func refusesBadEgress(_ text: String, _ reason: String) {
        #expect {
            try Egress.parse(text)
        } throws: { error in
            (error as? AirlockError)?.message.contains(reason) == true
        }
    }

    @Test("a second allow list adds to the first; none and open replace it; a clash is refused")
    func repeated() throws {
        let first = try Egress.parse("allow=127.0.0.1:1")
        #expect(
            try Egress.parse("allow=127.0.0.1:2").adding(to: first)
                == .allow([
                    .init(host: "127.0.0.1", port: 1), .init(host: "127.0.0.1", port: 2),
                ]))
        #expect(try Egress.parse("allow=127.0.0.1:1").adding(to: first) == first)
        #expect(try Egress.none.adding(to: first) == .none)
        #expect(try Egress.open.adding(to: first) == .open)
        #expect(throws: AirlockError.self) { try Egress.parse("allow=10.0.0.1:1").adding(to: first) }
    }

    @Test("egress survives the store as it was given")
    func codable() throws {
        for egress in [Egress.none, .open, try Egress.parse("allow=10.0.0.1:1,[::1]:2")] {
            let data = try JSONEncoder().encode(egress)
            #expect(try JSONDecoder().decode(Egress.self, from: data) == egress)
        }
    }
}

@Suite("EgressRelay", .serialized)
struct EgressRelayTests {
    /// A relay on a real sshd: it listens on 127.0.0.1:PORT on the
    /// server's side and carries connections to the same port on 127.0.0.2,
    /// where the test's endpoint listens.
    private func relay(
        _ server: TestSSHServer, endpoint: Egress.Endpoint
    ) throws -> EgressRelay {
        let interrupt = Interrupt()
        let deadline = ContinuousClock.now + .seconds(10)
        let session = try Session(host: "127.0.0.1", port: server.port, deadline: deadline, interrupt: interrupt)
        try session.verifyHostKey(server.hostKey.publicKeyBlob)
        try session.authenticate(user: "root", key: server.clientKey, deadline: deadline)
        let relay = EgressRelay(
            session: session, interrupt: interrupt, egress: .allow([endpoint]),
            logger: Logger(label: "test", handler: InMemoryLogHandler()))
        try relay.listen(deadline: deadline)
        relay.start()
        return relay
    }

    @Test("connections are carried both ways, several at once, and counted")
    func carriesConnections() throws {
        let server = try TestSSHServer()
        let endpoint = try EchoServer(address: "127.0.0.2")
        defer { endpoint.stop() }
        let relay = try relay(server, endpoint: .init(host: "127.0.0.2", port: endpoint.port))
        let payloads = (0..<5).map { index in Data((0..<200_000).map { UInt8(($0 + index) % 251) }) }
        let answers = Mutex<[Int: Data]>([:])
        let group = DispatchGroup()
        for (index, payload) in payloads.enumerated() {
            group.enter()
            Thread {
                let answer = try? EchoServer.exchange(port: endpoint.port, payload: payload)
                answers.withLock { $0[index] = answer }
                group.leave()
            }.start()
        }
        #expect(group.wait(timeout: .now() + 30) == .success)
        let report = relay.stop()
        for (index, payload) in payloads.enumerated() {
            #expect(answers.withLock { $0[index] } == payload, "connection \(index) came back changed")
        }
        #expect(report.connections == 5)
        #expect(report.failed == 0)
        #expect(report.bytesOut == 1_000_000)
        #expect(report.bytesIn == 1_000_000)
    }

    @Test("a connection to an endpoint that refuses is dropped and counted")
    func refusedEndpoint() throws {
        let server = try TestSSHServer()
        let port = try TestSSHServer.freePort()
        let relay = try relay(server, endpoint: .init(host: "127.0.0.2", port: port))
        let answer = try? EchoServer.exchange(port: port, payload: Data("hello".utf8))
        #expect(answer == nil || answer?.isEmpty == true)
        Thread.sleep(forTimeInterval: 0.3)
        let report = relay.stop()
        #expect(report.connections == 1)
        #expect(report.failed == 1)
    }
}

/// An echo server on one loopback address, and a client that sends a
/// payload to 127.0.0.1 at the same port and reads back what comes.
final class EchoServer: @unchecked Sendable {
    // @unchecked: `fd` is written once in init; the thread only reads it.
    let port: Int
    private let fd: Int32
    private let done = DispatchSemaphore(value: 0)

    init(address: String) throws {
        (fd, port) = try LoopbackSocket.listen(address: address)
        Thread { [self] in
            while true {
                let client = accept(fd, nil, nil)
                guard client >= 0 else { break }
                Thread {
                    var buffer = [UInt8](repeating: 0, count: 65536)
                    while true {
                        let count = recv(client, &buffer, buffer.count, 0)
                        guard count > 0 else { break }
                        _ = buffer.withUnsafeBytes { send(client, $0.baseAddress, count, Int32(MSG_NOSIGNAL)) }
                    }
                    close(client)
                }.start()
            }
            done.signal()
        }.start()
    }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
        done.wait()
    }

    /// Sends `payload` to 127.0.0.1:`port`, half-closes, and reads until the peer closes.
    static func exchange(port: Int, payload: Data) throws -> Data {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var timeout = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { throw POSIXError(.ECONNREFUSED) }
        // Written from a thread of its own, so that a full window one way cannot stall the other.
        let writer = Thread {
            payload.withUnsafeBytes { bytes in
                var offset = 0
                while offset < bytes.count {
                    let sent = send(
                        fd, bytes.baseAddress?.advanced(by: offset), bytes.count - offset, Int32(MSG_NOSIGNAL))
                    guard sent > 0 else { return }
                    offset += sent
                }
            }
            shutdown(fd, Int32(SHUT_WR))
        }
        writer.start()
        var answer = Data()
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let count = recv(fd, &buffer, buffer.count, 0)
            guard count > 0 else { break }
            answer.append(contentsOf: buffer[0..<count])
        }
        return answer
    }
}
