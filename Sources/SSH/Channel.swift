import CLibssh2
import Foundation

/// How a remote command ended.
public enum CommandExit: Sendable, Equatable, CustomStringConvertible {
    /// The command exited with this code.
    case exited(Int32)
    /// The command died of this signal; the name is the one the server sent, without "SIG" (e.g. "KILL").
    case signaled(String)

    public var description: String {
        switch self {
        case .exited(let code): return "exited(\(code))"
        case .signaled(let name): return "signaled(\(name))"
        }
    }
}

/// One SSH session channel running a command.
///
/// Belongs to the thread that uses its session. Reads and writes never block:
/// they wait on the session's socket, within the caller's deadline.
public final class Channel {
    private var handle: OpaquePointer?
    /// The session this channel lives on; kept alive as long as the channel.
    public let session: Session

    init(_ handle: OpaquePointer, session: Session) {
        self.handle = handle
        self.session = session
    }

    deinit {
        free()
    }

    /// Which of the command's output streams.
    public enum Stream: Int32, Sendable {
        case stdout = 0
        case stderr = 1
    }

    /// What one read found.
    public enum ReadResult: Equatable {
        case data(Int)
        case wouldBlock
        case end
    }

    /// Reads what is there now without waiting.
    public func read(_ stream: Stream, into buffer: UnsafeMutableRawBufferPointer) throws(SSHError) -> ReadResult {
        let channel = try pointer()
        let count = airlock_ssh_channel_read(
            channel, stream.rawValue, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), buffer.count)
        if count > 0 {
            return .data(count)
        }
        if count == Int(LIBSSH2_ERROR_EAGAIN) {
            return .wouldBlock
        }
        if count == 0 {
            return libssh2_channel_eof(channel) == 1 ? .end : .wouldBlock
        }
        throw SSHError.last(try session.pointer(), "read")
    }

    /// Writes all of `bytes` to the command's standard input.
    public func write(_ bytes: UnsafeRawBufferPointer, deadline: ContinuousClock.Instant?) throws(SSHError) {
        let channel = try pointer()
        var offset = 0
        while offset < bytes.count {
            try session.checkpoint(deadline: deadline, "write")
            let written = airlock_ssh_channel_write(
                channel, 0, bytes.baseAddress?.advanced(by: offset).assumingMemoryBound(to: CChar.self),
                bytes.count - offset)
            if written == Int(LIBSSH2_ERROR_EAGAIN) {
                try session.wait(deadline: deadline, "write")
                continue
            }
            if written < 0 {
                throw SSHError.last(try session.pointer(), "write")
            }
            offset += written
        }
    }

    /// Writes what the channel's window takes now, without waiting.
    ///
    /// - Returns: The number of bytes taken; 0 when the peer's window is full.
    public func send(_ bytes: UnsafeRawBufferPointer) throws(SSHError) -> Int {
        let channel = try pointer()
        let written = airlock_ssh_channel_write(
            channel, 0, bytes.baseAddress?.assumingMemoryBound(to: CChar.self), bytes.count)
        if written == Int(LIBSSH2_ERROR_EAGAIN) {
            return 0
        }
        if written < 0 {
            throw SSHError.last(try session.pointer(), "send")
        }
        return written
    }

    /// Says that nothing more will be written, without waiting.
    ///
    /// - Returns: false when libssh2 could not send it yet; call again later.
    public func trySendEOF() throws(SSHError) -> Bool {
        let channel = try pointer()
        let result = libssh2_channel_send_eof(channel)
        if result == LIBSSH2_ERROR_EAGAIN {
            return false
        }
        if result < 0 {
            throw SSHError.last(try session.pointer(), "trySendEOF")
        }
        return true
    }

    /// Tells the command that its standard input has ended.
    public func sendEOF(deadline: ContinuousClock.Instant?) throws(SSHError) {
        let channel = try pointer()
        try session.retry(deadline, "sendEOF") { libssh2_channel_send_eof(channel) }
    }

    /// Waits until the socket has something for this session.
    public func wait(deadline: ContinuousClock.Instant?) throws(SSHError) {
        try session.wait(deadline: deadline, "wait")
    }

    /// Reads both output streams until the command ends, handing every chunk
    /// to `output` as it arrives, then returns how the command ended.
    ///
    /// Both streams are always drained, so a command that fills one of them
    /// cannot stall on a full SSH window while the other is being waited for.
    public func drain(
        deadline: ContinuousClock.Instant?,
        output: (Stream, UnsafeRawBufferPointer) throws -> Void
    ) throws -> CommandExit {
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 64 * 1024, alignment: 16)
        defer { buffer.deallocate() }
        var ended: Set<Int32> = []
        while ended.count < 2 {
            try session.checkpoint(deadline: deadline, "drain")
            var progressed = false
            for stream in [Stream.stdout, .stderr] where !ended.contains(stream.rawValue) {
                switch try read(stream, into: buffer) {
                case .data(let count):
                    try output(stream, UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
                    progressed = true
                case .end:
                    ended.insert(stream.rawValue)
                    progressed = true
                case .wouldBlock:
                    break
                }
            }
            if !progressed {
                try session.wait(deadline: deadline, "drain")
            }
        }
        return try close(deadline: deadline)
    }

    /// Closes the channel and reports the command's exit status or signal.
    public func close(deadline: ContinuousClock.Instant?) throws(SSHError) -> CommandExit {
        let channel = try pointer()
        try session.retry(deadline, "close") { libssh2_channel_close(channel) }
        try session.retry(deadline, "close") { libssh2_channel_wait_closed(channel) }

        var name: UnsafeMutablePointer<CChar>?
        var nameLength = 0
        let sessionPointer = try session.pointer()
        _ = libssh2_channel_get_exit_signal(channel, &name, &nameLength, nil, nil, nil, nil)
        if let name {
            let signal = String(cString: name)
            libssh2_free(sessionPointer, name)
            if !signal.isEmpty {
                return .signaled(signal)
            }
        }
        return .exited(libssh2_channel_get_exit_status(channel))
    }

    /// Frees the channel without waiting for the peer. Safe to call twice.
    public func free() {
        if let handle, session.isOpen {
            airlock_ssh_channel_close_free(handle)
        }
        handle = nil
    }

    /// Frees the channel if libssh2 can do so now, closing it first.
    ///
    /// - Returns: false when it could not yet; call again later (or `free()`).
    public func release() -> Bool {
        guard let handle, session.isOpen else {
            handle = nil
            return true
        }
        if airlock_ssh_channel_close_free(handle) == LIBSSH2_ERROR_EAGAIN {
            return false
        }
        self.handle = nil
        return true
    }

    private func pointer(_ operation: String = #function) throws(SSHError) -> OpaquePointer {
        guard let handle else {
            throw SSHError(.socket, message: "the channel is closed", operation: operation)
        }
        return handle
    }
}
