import Foundation

/// A local socket that reaches `host`:`port` as an SSH server sees them,
/// through a `direct-tcpip` channel of a session to that server: how a
/// guest's SSH port, open only on a remote host's loopback, is reached.
///
/// Hand `localSocket` to `Session(socket:)`. A thread of the tunnel's own
/// copies bytes between the socket and the channel, and owns the outer
/// session until `close()`. When the outer connection dies, the local
/// socket ends, and the session on it sees a lost connection.
public final class Tunnel: @unchecked Sendable {
    // @unchecked: the outer session and the bridge are used only by the
    // tunnel's thread; `close` hands over through `interrupt` and `finished`.
    private let session: Session
    private let interrupt: Interrupt
    private let bridge: ChannelBridge
    private let finished = DispatchSemaphore(value: 0)
    /// The socket that speaks to the far end; whoever takes it closes it.
    public let localSocket: Int32

    /// - Parameters:
    ///   - session: A logged-in session to the server, made with `interrupt`; the tunnel owns it.
    ///   - interrupt: Fired by `close`.
    ///   - host: The address to reach, as the server sees it (`127.0.0.1` for its loopback).
    ///   - port: The port to reach.
    ///   - deadline: When to give up opening the channel.
    /// - Throws: `SSHError`; a server that forbids TCP forwarding refuses here.
    public init(
        through session: Session, interrupt: Interrupt, toHost host: String, port: Int,
        deadline: ContinuousClock.Instant
    ) throws(SSHError) {
        let channel = try session.forwardedChannel(toHost: host, port: port, deadline: deadline)
        var ends: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &ends) == 0 else {
            channel.free()
            throw SSHError(.socket, code: errno, message: "socketpair: \(String(cString: strerror(errno)))")
        }
        _ = fcntl(ends[0], F_SETFL, fcntl(ends[0], F_GETFL) | O_NONBLOCK)
        self.session = session
        self.interrupt = interrupt
        bridge = ChannelBridge(channel: channel, socket: ends[0])
        localSocket = ends[1]
        let thread = Thread { [self] in
            carry()
            finished.signal()
        }
        thread.name = "airlock.tunnel"
        thread.start()
    }

    private func carry() {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
        defer { buffer.deallocate() }
        while !bridge.isFinished && !interrupt.isFired {
            if bridge.pump(buffer) {
                continue
            }
            var descriptors = [bridge.pollRequest]
            do {
                try session.wait(deadline: nil, also: &descriptors)
            } catch {
                break
            }
        }
        // The local end goes with the channel, so the session on it sees the end.
        if !bridge.close() {
            bridge.channel.free()
        }
    }

    /// Stops carrying, closes the channel and the outer session. Safe to call twice.
    public func close() {
        interrupt.fire()
        finished.wait()
        finished.signal()
        session.close()
    }
}
