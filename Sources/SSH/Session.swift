import CLibssh2
import Foundation
import Synchronization

/// One SSH connection to a guest, authenticated with a job's own key and
/// checked against the guest's pinned host key.
///
/// A session is used by one thread at a time. The socket is non-blocking:
/// every wait is a `poll` bounded by a deadline and woken by `Interrupt`.
/// While waiting, the session sends keepalives and declares the connection
/// lost when nothing at all arrives for `deadAfter`.
public final class Session {
    private var handle: OpaquePointer?
    private var socket: Int32 = -1
    private let interrupt: Interrupt?
    /// Seconds between keepalive probes.
    public let keepaliveInterval: Int
    /// How long the peer may stay silent, despite keepalives, before the
    /// connection counts as lost.
    public let deadAfter: Duration
    private var lastInbound = ContinuousClock.now
    /// Keepalives start only after authentication: some servers (dropbear)
    /// drop a client that sends a global request before it has logged in.
    private var keepalivesOn = false

    /// Connects a TCP socket and runs the SSH handshake.
    ///
    /// - Parameters:
    ///   - host: An IPv4 address, such as `127.0.0.1`, or a host name.
    ///   - port: The TCP port.
    ///   - deadline: When to give up on connect and handshake.
    ///   - interrupt: Wakes blocked waits when fired.
    ///   - keepaliveInterval: Seconds between keepalives once logged in.
    ///   - deadAfter: Silence after which the connection counts as lost.
    /// - Throws: `SSHError` on socket, handshake, timeout or interrupt.
    public init(
        host: String, port: Int, deadline: ContinuousClock.Instant, interrupt: Interrupt? = nil,
        keepaliveInterval: Int = 10, deadAfter: Duration = .seconds(40)
    ) throws(SSHError) {
        Library.initialize()
        self.interrupt = interrupt
        self.keepaliveInterval = keepaliveInterval
        self.deadAfter = deadAfter
        do throws(SSHError) {
            try connectSocket(host: host, port: port, deadline: deadline)
            try handshake(deadline: deadline)
        } catch {
            close()
            throw error
        }
    }

    /// Runs the SSH handshake over a socket that is already connected, such
    /// as one end of a `Tunnel`. The session owns the socket from here on.
    ///
    /// - Parameters:
    ///   - connected: A connected stream socket.
    ///   - deadline: When to give up on the handshake.
    ///   - interrupt: Wakes blocked waits when fired.
    ///   - keepaliveInterval: Seconds between keepalives once logged in.
    ///   - deadAfter: Silence after which the connection counts as lost.
    /// - Throws: `SSHError` on handshake, timeout or interrupt.
    public init(
        socket connected: Int32, deadline: ContinuousClock.Instant, interrupt: Interrupt? = nil,
        keepaliveInterval: Int = 10, deadAfter: Duration = .seconds(40)
    ) throws(SSHError) {
        Library.initialize()
        self.interrupt = interrupt
        self.keepaliveInterval = keepaliveInterval
        self.deadAfter = deadAfter
        socket = connected
        _ = fcntl(connected, F_SETFL, fcntl(connected, F_GETFL) | O_NONBLOCK)
        do throws(SSHError) {
            try handshake(deadline: deadline)
        } catch {
            close()
            throw error
        }
    }

    /// Makes the libssh2 session on the connected socket and runs the SSH handshake.
    private func handshake(deadline: ContinuousClock.Instant) throws(SSHError) {
        guard let session = airlock_ssh_session_init() else {
            throw SSHError(.library, message: "libssh2 could not allocate a session")
        }
        handle = session
        libssh2_session_set_blocking(session, 0)
        try retry(deadline, "handshake") { libssh2_session_handshake(session, socket) }
    }

    deinit {
        close()
    }

    /// Frees the session and closes the socket. Safe to call twice.
    ///
    /// A polite disconnect is attempted without waiting: a peer that has gone
    /// silent cannot hold this call up.
    public func close() {
        if let handle {
            _ = libssh2_session_disconnect_ex(handle, SSH_DISCONNECT_BY_APPLICATION, "bye", "")
            libssh2_session_free(handle)
            self.handle = nil
        }
        if socket >= 0 {
            Glibc.close(socket)
            socket = -1
        }
    }

    /// Whether the session is still open. Once it is closed, libssh2 has
    /// freed its channels and listeners too, and their handles must not be used.
    var isOpen: Bool { handle != nil }

    // MARK: - Trust

    /// The host key the server presented, in SSH wire format.
    public func hostKeyBlob() throws(SSHError) -> [UInt8] {
        let session = try pointer()
        var length = 0
        var type: Int32 = 0
        guard let raw = libssh2_session_hostkey(session, &length, &type), length > 0 else {
            throw SSHError.last(session, "hostKeyBlob")
        }
        return raw.withMemoryRebound(to: UInt8.self, capacity: length) {
            Array(UnsafeBufferPointer(start: $0, count: length))
        }
    }

    /// Fails unless the server's host key is exactly `expected`.
    ///
    /// - Throws: `SSHError.Kind.hostKeyMismatch`, naming both fingerprints.
    public func verifyHostKey(_ expected: [UInt8]) throws(SSHError) {
        let presented = try hostKeyBlob()
        guard presented == expected else {
            throw SSHError(
                .hostKeyMismatch,
                message: "host key mismatch: expected \(KeyPair.fingerprint(ofBlob: expected)), "
                    + "got \(KeyPair.fingerprint(ofBlob: presented))")
        }
    }

    /// Authenticates with the given key only; no agent, no password.
    public func authenticate(user: String, key: KeyPair, deadline: ContinuousClock.Instant) throws(SSHError) {
        let session = try pointer()
        let pem = key.openSSHPrivateKey
        do throws(SSHError) {
            try retry(deadline, "authenticate") {
                user.withCString { userPointer in
                    pem.withCString { keyPointer in
                        airlock_ssh_userauth_publickey_frommemory(session, userPointer, keyPointer, strlen(keyPointer))
                    }
                }
            }
        } catch {
            guard error.kind == .library else { throw error }
            throw SSHError(
                .authenticationFailed, code: error.code,
                message: "the guest refused the job's key: \(error.message) (libssh2 error \(error.code))",
                operation: "authenticate")
        }
        libssh2_keepalive_config(session, 1, UInt32(keepaliveInterval))
        keepalivesOn = true
    }

    /// Starts keepalives once logged in.
    func enableKeepalives() {
        keepalivesOn = true
    }

    // MARK: - Channels

    /// Opens a session channel and starts `command` on it.
    public func exec(_ command: String, deadline: ContinuousClock.Instant?) throws(SSHError) -> Channel {
        let session = try pointer()
        var opened: OpaquePointer?
        try retry(deadline, "exec") {
            opened = airlock_ssh_channel_open_session(session)
            if opened == nil {
                return libssh2_session_last_errno(session)
            }
            return 0
        }
        guard let channel = opened else {
            throw SSHError.last(session, "exec")
        }
        let result = Channel(channel, session: self)
        try retry(deadline, "exec") {
            command.withCString { airlock_ssh_channel_exec(channel, $0) }
        }
        return result
    }

    /// Asks the server to listen on `host`:`port` on its side and to hand
    /// each connection made there back to this session as a channel (SSH
    /// remote forwarding).
    ///
    /// - Throws: `SSHError` when the server refuses, for example because its
    ///   configuration forbids remote forwarding or the port is taken.
    public func listen(host: String, port: Int, deadline: ContinuousClock.Instant?) throws(SSHError) -> Listener {
        let session = try pointer()
        var opened: OpaquePointer?
        var bound: Int32 = 0
        try retry(deadline, "listen") {
            opened = host.withCString { airlock_ssh_forward_listen(session, $0, Int32(port), &bound) }
            return opened == nil ? libssh2_session_last_errno(session) : 0
        }
        guard let opened else {
            throw SSHError.last(session, "listen")
        }
        return Listener(opened, session: self, port: Int(bound))
    }

    // MARK: - Waiting

    func pointer(_ operation: String = #function) throws(SSHError) -> OpaquePointer {
        guard let handle else {
            throw SSHError(.socket, message: "the SSH session is closed", operation: operation)
        }
        return handle
    }

    /// Repeats a libssh2 call while it says "would block", waiting on the socket in between.
    func retry(
        _ deadline: ContinuousClock.Instant?, _ operation: String, _ body: () -> Int32
    ) throws(SSHError) {
        let session = try pointer(operation)
        while true {
            let result = body()
            if result == LIBSSH2_ERROR_EAGAIN {
                try wait(deadline: deadline, operation)
                continue
            }
            if result < 0 {
                throw SSHError.last(session, operation)
            }
            return
        }
    }

    /// Throws when the interrupt has fired or the deadline has passed. Loops
    /// that keep receiving data call it too, so that a peer that never stops
    /// sending cannot outrun a deadline or a Ctrl-C.
    public func checkpoint(deadline: ContinuousClock.Instant?, _ operation: String = #function) throws(SSHError) {
        if interrupt?.isFired == true {
            throw SSHError(.interrupted, message: "interrupted", operation: operation)
        }
        if let deadline, ContinuousClock.now >= deadline {
            throw SSHError(.timeout, message: "timed out", operation: operation)
        }
    }

    /// Blocks until the socket is ready in the direction libssh2 needs, the
    /// deadline passes, the interrupt fires or the peer is found dead.
    func wait(deadline: ContinuousClock.Instant?, _ operation: String) throws(SSHError) {
        var none: [pollfd] = []
        try wait(deadline: deadline, also: &none, operation)
    }

    /// Like `wait`, but also wakes when one of `descriptors` is ready for
    /// its events; their `revents` say which. Used by loops that serve this
    /// session and sockets of their own on one thread.
    public func wait(
        deadline: ContinuousClock.Instant?, also descriptors: inout [pollfd], _ operation: String = #function
    ) throws(SSHError) {
        let session = try pointer(operation)
        try checkpoint(deadline: deadline, operation)
        let now = ContinuousClock.now
        if now - lastInbound > deadAfter {
            throw SSHError(
                .connectionLost,
                message: "connection to guest lost: no answer for \(deadAfter.seconds) s",
                operation: operation)
        }

        var nextKeepalive = Int32(keepaliveInterval)
        if keepalivesOn {
            _ = libssh2_keepalive_send(session, &nextKeepalive)
        }

        var timeout = Duration.seconds(max(1, Int(nextKeepalive)))
        if let deadline {
            timeout = min(timeout, deadline - now)
        }
        let directions = libssh2_session_block_directions(session)
        var events: Int16 = Int16(POLLIN)
        if directions & LIBSSH2_SESSION_BLOCK_OUTBOUND != 0 {
            events |= Int16(POLLOUT)
        }
        var fds = [pollfd(fd: socket, events: events, revents: 0)]
        if let interrupt {
            fds.append(pollfd(fd: interrupt.descriptor, events: Int16(POLLIN), revents: 0))
        }
        let own = fds.count
        fds += descriptors
        let milliseconds = Int32(clamping: max(1, timeout.milliseconds))
        let ready = poll(&fds, nfds_t(fds.count), milliseconds)
        if ready > 0 && fds[0].revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
            lastInbound = .now
        }
        for index in descriptors.indices {
            descriptors[index].revents = ready > 0 ? fds[own + index].revents : 0
        }
    }

    private func connectSocket(host: String, port: Int, deadline: ContinuousClock.Instant) throws(SSHError) {
        let fd = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            throw SSHError(.socket, code: errno, message: "socket: \(String(cString: strerror(errno)))")
        }
        socket = fd
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        var one: Int32 = 1
        _ = setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))

        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 || Self.resolve(host, into: &address.sin_addr) else {
            throw SSHError(.socket, message: "cannot resolve '\(host)' to an IPv4 address")
        }
        let result = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        if result == 0 {
            return
        }
        guard errno == EINPROGRESS else {
            let code = errno
            throw SSHError(
                .socket, code: code, message: "connect to \(host):\(port): \(String(cString: strerror(code)))")
        }
        while true {
            if interrupt?.isFired == true {
                throw SSHError(.interrupted, message: "interrupted")
            }
            let now = ContinuousClock.now
            guard now < deadline else {
                throw SSHError(.timeout, message: "connect to \(host):\(port) timed out")
            }
            var fds = [pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)]
            if let interrupt {
                fds.append(pollfd(fd: interrupt.descriptor, events: Int16(POLLIN), revents: 0))
            }
            let ready = poll(&fds, nfds_t(fds.count), Int32(clamping: max(1, (deadline - now).milliseconds)))
            if ready > 0 && fds[0].revents != 0 {
                var code: Int32 = 0
                var length = socklen_t(MemoryLayout<Int32>.size)
                _ = getsockopt(fd, SOL_SOCKET, SO_ERROR, &code, &length)
                if code != 0 {
                    throw SSHError(
                        .socket, code: code, message: "connect to \(host):\(port): \(String(cString: strerror(code)))")
                }
                lastInbound = .now
                return
            }
        }
    }
}

extension Session {
    /// The first IPv4 address of a host name.
    static func resolve(_ host: String, into address: inout in_addr) -> Bool {
        var hints = addrinfo()
        hints.ai_family = AF_INET
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var found: UnsafeMutablePointer<addrinfo>?
        guard getaddrinfo(host, nil, &hints, &found) == 0, let entry = found, let raw = entry.pointee.ai_addr else {
            return false
        }
        defer { freeaddrinfo(found) }
        address = raw.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
        return true
    }
}

enum Library {
    private static let initialized = Mutex(false)

    static func initialize() {
        initialized.withLock { done in
            guard !done else { return }
            _ = libssh2_init(0)
            done = true
        }
    }
}

extension Duration {
    var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }

    var seconds: Int64 { components.seconds }
}
