import Foundation

/// Copies bytes both ways between a channel and a connected socket, without
/// ever blocking, and passes each side's end of data on to the other.
///
/// Belongs to the thread that uses the channel's session. That thread calls
/// `pump` whenever the session's socket or `pollRequest` is ready, and
/// `close` once `isFinished`.
public final class ChannelBridge {
    public let channel: Channel
    public private(set) var socket: Int32
    /// Bytes read from one side and not yet taken by the other.
    private var toSocket: [UInt8] = []
    private var toChannel: [UInt8] = []
    private var channelEnded = false
    private var socketEnded = false
    private var socketShutDown = false
    private var channelToldEnd = false
    /// Set when the channel's side went away first; not a failure.
    private var abandoned = false
    /// Bytes carried from the channel to the socket, and back.
    public private(set) var bytesFromChannel: Int64 = 0
    public private(set) var bytesToChannel: Int64 = 0
    /// Why the bridge stopped early, when it did.
    public private(set) var failure: String?

    /// - Parameters:
    ///   - channel: An open channel.
    ///   - socket: A connected, non-blocking socket; the bridge closes it.
    public init(channel: Channel, socket: Int32) {
        self.channel = channel
        self.socket = socket
    }

    /// Whether both directions are done, or the bridge failed.
    public var isFinished: Bool {
        failure != nil || abandoned
            || (channelEnded && socketShutDown && socketEnded && toChannel.isEmpty && channelToldEnd)
    }

    /// What to wait for on the socket. When the bridge wants nothing from
    /// it (it waits on the channel instead), the descriptor is -1, which
    /// poll skips: a socket that hung up would otherwise wake it at once,
    /// again and again.
    public var pollRequest: pollfd {
        var events: Int16 = 0
        if !toSocket.isEmpty { events |= Int16(POLLOUT) }
        if toChannel.isEmpty && !socketEnded { events |= Int16(POLLIN) }
        return pollfd(fd: events == 0 ? -1 : socket, events: events, revents: 0)
    }

    /// Moves what can be moved now, both ways.
    ///
    /// - Parameter buffer: Scratch space for one read.
    /// - Returns: Whether anything moved or changed.
    public func pump(_ buffer: UnsafeMutableRawBufferPointer) -> Bool {
        guard !isFinished else { return false }
        do {
            let out = try channelToSocket(buffer)
            let back = try socketToChannel(buffer)
            return out || back
        } catch  where channelEnded {
            // The channel's side closed and went: what still comes has nowhere to go.
            abandoned = true
            return true
        } catch {
            failure = "\(error)"
            return true
        }
    }

    private func channelToSocket(_ buffer: UnsafeMutableRawBufferPointer) throws -> Bool {
        var progressed = false
        if toSocket.isEmpty && !channelEnded {
            switch try channel.read(.stdout, into: buffer) {
            case .data(let count):
                toSocket = Array(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
                progressed = true
            case .end:
                channelEnded = true
                progressed = true
            case .wouldBlock:
                break
            }
        }
        if !toSocket.isEmpty {
            let sent = toSocket.withUnsafeBytes { send(socket, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent > 0 {
                toSocket.removeFirst(sent)
                bytesFromChannel += Int64(sent)
                progressed = true
            } else if sent < 0 && errno != EAGAIN && errno != EINTR {
                throw SSHError(.socket, code: errno, message: "send: \(String(cString: strerror(errno)))")
            }
        }
        if channelEnded && toSocket.isEmpty && !socketShutDown {
            _ = shutdown(socket, Int32(SHUT_WR))
            socketShutDown = true
            progressed = true
        }
        return progressed
    }

    private func socketToChannel(_ buffer: UnsafeMutableRawBufferPointer) throws -> Bool {
        var progressed = false
        if toChannel.isEmpty && !socketEnded {
            let count = recv(socket, buffer.baseAddress, buffer.count, 0)
            if count > 0 {
                toChannel = Array(UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
                progressed = true
            } else if count == 0 {
                socketEnded = true
                progressed = true
            } else if errno != EAGAIN && errno != EINTR {
                throw SSHError(.socket, code: errno, message: "recv: \(String(cString: strerror(errno)))")
            }
        }
        if !toChannel.isEmpty {
            let sent = try toChannel.withUnsafeBytes { try channel.send($0) }
            if sent > 0 {
                toChannel.removeFirst(sent)
                bytesToChannel += Int64(sent)
                progressed = true
            }
        }
        if socketEnded && toChannel.isEmpty && !channelToldEnd {
            if try channel.trySendEOF() {
                channelToldEnd = true
                progressed = true
            }
        }
        return progressed
    }

    /// Closes the socket and releases the channel. Safe to call twice.
    ///
    /// - Returns: false when libssh2 could not free the channel yet; call
    ///   `channel.release()` again later.
    @discardableResult
    public func close() -> Bool {
        if socket >= 0 {
            Glibc.close(socket)
            socket = -1
        }
        return channel.release()
    }
}
