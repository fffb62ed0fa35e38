import AirlockLog
import Foundation
import SSH

/// Carries a guest's connections to the endpoints its job allows.
///
/// The guest's SSH server listens on the guest's 127.0.0.1 at each allowed
/// endpoint's port (SSH remote forwarding, on a session of the relay's
/// own) and hands each connection made there to Airlock as a channel;
/// Airlock connects to the endpoint from the host and copies bytes both
/// ways. The guest's own network stays restricted: it can reach exactly
/// these endpoints, nothing else, and only while the command runs.
///
/// `listen` runs on the caller's thread; after `start`, the session, its
/// listeners and the connections belong to the relay's thread until
/// `stop` returns.
final class EgressRelay: @unchecked Sendable {
    // @unchecked: see above; `stop` hands over through `interrupt` and `finished`.

    /// Connections open at once; the guest's further connections are closed at once.
    static let maxConnections = 64

    private let session: Session
    private let interrupt: Interrupt
    private let endpoints: [Egress.Endpoint]
    private let logger: Logger
    private var listeners: [(listener: Listener, endpoint: Egress.Endpoint)] = []
    private var connections: [RelayedConnection] = []
    /// Channels that libssh2 could not free yet.
    private var releasing: [Channel] = []
    private var report: EgressReport
    private let finished = DispatchSemaphore(value: 0)
    private var started = false

    /// - Parameters:
    ///   - session: A session of the relay's own, logged in, whose interrupt is `interrupt`.
    ///   - interrupt: Fired by `stop`.
    ///   - egress: The job's egress; its endpoints are served.
    ///   - logger: Told about connections that could not be carried.
    init(session: Session, interrupt: Interrupt, egress: Egress, logger: Logger) {
        self.session = session
        self.interrupt = interrupt
        self.endpoints = egress.endpoints
        self.logger = logger
        self.report = EgressReport(egress)
    }

    /// One address of an endpoint: its family and its `sockaddr` bytes.
    struct Address {
        var family: Int32
        var bytes: [UInt8]
        var parts: (Int32, [UInt8]) { (family, bytes) }
    }

    /// Why an endpoint's name did not resolve.
    struct ResolveFailure: Error, CustomStringConvertible {
        var description: String
    }

    /// Each endpoint's addresses, looked up once, before the command starts:
    /// a slow resolver then cannot stall the relay or its stop.
    private var resolved: [Egress.Endpoint: Result<[Address], ResolveFailure>] = [:]

    /// Looks an endpoint up, by number or by name.
    static func resolve(_ endpoint: Egress.Endpoint) -> Result<[Address], ResolveFailure> {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = Egress.isIPAddress(endpoint.host) ? AI_NUMERICHOST : 0
        var found: UnsafeMutablePointer<addrinfo>?
        let code = getaddrinfo(endpoint.host, String(endpoint.port), &hints, &found)
        guard code == 0 else {
            return .failure(
                ResolveFailure(description: "cannot resolve '\(endpoint.host)': \(String(cString: gai_strerror(code)))")
            )
        }
        defer { freeaddrinfo(found) }
        var addresses: [Address] = []
        var next = found
        while let entry = next {
            if let address = entry.pointee.ai_addr {
                let bytes = UnsafeRawBufferPointer(start: address, count: Int(entry.pointee.ai_addrlen))
                addresses.append(Address(family: entry.pointee.ai_family, bytes: Array(bytes)))
            }
            next = entry.pointee.ai_next
        }
        return .success(addresses)
    }

    /// Resolves every endpoint and asks the guest's SSH server to listen for each.
    ///
    /// - Throws: `AirlockError` `.guestFailed` when it refuses one.
    func listen(deadline: ContinuousClock.Instant) throws(AirlockError) {
        for endpoint in endpoints {
            resolved[endpoint] = Self.resolve(endpoint)
        }
        for endpoint in endpoints {
            do {
                let listener = try session.listen(host: "127.0.0.1", port: endpoint.port, deadline: deadline)
                listeners.append((listener, endpoint))
            } catch {
                throw AirlockError(
                    .guestFailed,
                    "the guest's SSH server would not listen on port \(endpoint.port) for egress endpoint "
                        + "'\(endpoint)'",
                    hint: "the image's SSH server must allow remote TCP forwarding (sshd: AllowTcpForwarding remote)",
                    cause: error)
            }
        }
    }

    /// Starts relaying on a thread of its own.
    func start() {
        started = true
        let thread = Thread { [self] in
            serve()
            finished.signal()
        }
        thread.name = "airlock.egress"
        thread.start()
    }

    /// Stops relaying, closes every connection and the session.
    ///
    /// - Returns: What was carried.
    func stop() -> EgressReport {
        interrupt.fire()
        if started {
            finished.wait()
        }
        for connection in connections {
            connection.close()
        }
        connections.removeAll()
        for listener in listeners {
            listener.listener.cancel()
        }
        listeners.removeAll()
        releasing.removeAll()
        session.close()
        return report
    }

    // MARK: - The relay's thread

    private func serve() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 32 * 1024, alignment: 16)
        defer { buffer.deallocate() }
        do {
            while !interrupt.isFired {
                var progressed = try acceptConnections()
                for connection in connections {
                    progressed = connection.pump(buffer) || progressed
                }
                for connection in connections where connection.isFinished {
                    report.bytesOut += connection.bytesOut
                    report.bytesIn += connection.bytesIn
                    if let failure = connection.failure {
                        report.noteFailure(connection.endpoint, failure)
                        // The guest decides how many: only the first few are logged; result.json counts them all.
                        if report.failed <= EgressReport.maxListedFailures {
                            logger.info(
                                "egress connection dropped",
                                metadata: ["egress.endpoint": "\(connection.endpoint)", "error": failure])
                        }
                    }
                    releasing.append(contentsOf: connection.close())
                }
                connections.removeAll { $0.isFinished }
                releasing.removeAll { $0.release() }
                if !progressed {
                    var descriptors = connections.map(\.pollRequest)
                    try session.wait(deadline: nil, also: &descriptors)
                }
            }
        } catch let error where error.kind == .interrupted {
            return
        } catch {
            logger.info("egress relay stopped", metadata: ["error": "\(error)"])
        }
    }

    /// Takes every connection waiting on the guest's side.
    private func acceptConnections() throws(SSHError) -> Bool {
        var progressed = false
        for (listener, endpoint) in listeners {
            while let channel = try listener.accept() {
                progressed = true
                report.connections += 1
                guard connections.count < Self.maxConnections else {
                    report.noteFailure(endpoint, "more than \(Self.maxConnections) connections open at once")
                    if report.failed <= EgressReport.maxListedFailures {
                        logger.info(
                            "egress connection refused: too many open",
                            metadata: ["egress.endpoint": "\(endpoint)", "egress.open": "\(connections.count)"])
                    }
                    if !channel.release() { releasing.append(channel) }
                    continue
                }
                let connection = RelayedConnection(channel: channel, endpoint: endpoint)
                connection.connect(resolved[endpoint] ?? Self.resolve(endpoint))
                connections.append(connection)
            }
        }
        return progressed
    }
}

/// One guest connection: connecting to the endpoint, then a bridge that
/// copies both ways between the guest's channel and the host socket.
private final class RelayedConnection {
    let channel: Channel
    let endpoint: Egress.Endpoint
    private var socket: Int32 = -1
    private var connecting = false
    private var bridge: ChannelBridge?
    /// The endpoint's addresses not yet tried, in the resolver's order.
    private var addresses: [EgressRelay.Address] = []
    /// Why connecting failed, when it did.
    private var connectFailure: String?

    init(channel: Channel, endpoint: Egress.Endpoint) {
        self.channel = channel
        self.endpoint = endpoint
    }

    var isFinished: Bool { connectFailure != nil || bridge?.isFinished == true }
    var failure: String? { connectFailure ?? bridge?.failure }
    var bytesOut: Int64 { bridge?.bytesFromChannel ?? 0 }
    var bytesIn: Int64 { bridge?.bytesToChannel ?? 0 }

    /// What to wait for on the host socket (-1, which poll skips, for nothing).
    var pollRequest: pollfd {
        if let bridge { return bridge.pollRequest }
        return pollfd(fd: connecting ? socket : -1, events: Int16(POLLOUT), revents: 0)
    }

    /// Starts connecting to the endpoint's first address; `pump` sees the
    /// result and moves on to the next address on failure.
    ///
    /// - Parameter resolved: The endpoint's addresses, or why there are none.
    func connect(_ resolved: Result<[EgressRelay.Address], EgressRelay.ResolveFailure>) {
        switch resolved {
        case .success(let found): addresses = found
        case .failure(let failure): connectFailure = failure.description
        }
        if connectFailure == nil {
            connectNext(lastError: "no address")
        }
    }

    /// Starts connecting to the next address, or fails with `lastError` when none is left.
    private func connectNext(lastError: String) {
        if socket >= 0 {
            Glibc.close(socket)
            socket = -1
        }
        connecting = false
        guard !addresses.isEmpty else {
            connectFailure = "connect: \(lastError)"
            return
        }
        let (family, address) = addresses.removeFirst().parts
        let fd = Glibc.socket(
            family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
        guard fd >= 0 else {
            connectFailure = "socket: \(String(cString: strerror(errno)))"
            return
        }
        socket = fd
        let result = address.withUnsafeBytes {
            Glibc.connect(fd, $0.baseAddress?.assumingMemoryBound(to: sockaddr.self), socklen_t($0.count))
        }
        if result == 0 {
            bridge = ChannelBridge(channel: channel, socket: fd)
            return
        }
        guard errno == EINPROGRESS else {
            connectNext(lastError: String(cString: strerror(errno)))
            return
        }
        connecting = true
    }

    /// Moves what can be moved now, both ways, once connected.
    ///
    /// - Returns: Whether anything moved or changed.
    func pump(_ buffer: UnsafeMutableRawBufferPointer) -> Bool {
        if let bridge {
            return bridge.pump(buffer)
        }
        guard connecting else { return false }
        var descriptor = pollfd(fd: socket, events: Int16(POLLOUT), revents: 0)
        guard poll(&descriptor, 1, 0) > 0 else { return false }
        var code: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        _ = getsockopt(socket, SOL_SOCKET, SO_ERROR, &code, &length)
        connecting = false
        if code == 0 {
            bridge = ChannelBridge(channel: channel, socket: socket)
        } else {
            // Another address may be tried now; bytes move once one answers.
            connectNext(lastError: String(cString: strerror(code)))
        }
        return true
    }

    /// Closes the host socket and releases the channel.
    ///
    /// - Returns: The channel when libssh2 could not free it yet.
    @discardableResult
    func close() -> [Channel] {
        if let bridge {
            return bridge.close() ? [] : [channel]
        }
        if socket >= 0 {
            Glibc.close(socket)
            socket = -1
        }
        return channel.release() ? [] : [channel]
    }
}
