import CLibssh2

/// A port the SSH server listens on for this client (remote forwarding):
/// each connection made to it on the server's side arrives as a channel.
///
/// Belongs to the thread that uses its session, like `Channel`.
public final class Listener {
    private var handle: OpaquePointer?
    /// The session the listener lives on; kept alive as long as the listener.
    public let session: Session
    /// The port the server bound.
    public let port: Int

    init(_ handle: OpaquePointer, session: Session, port: Int) {
        self.handle = handle
        self.session = session
        self.port = port
    }

    deinit {
        cancel()
    }

    /// The next connection waiting on the server's side, or nil when none is
    /// waiting now. Never blocks.
    public func accept() throws(SSHError) -> Channel? {
        guard let handle else {
            throw SSHError(.socket, message: "the listener is closed")
        }
        guard let channel = libssh2_channel_forward_accept(handle) else {
            let sessionPointer = try session.pointer()
            if libssh2_session_last_errno(sessionPointer) == LIBSSH2_ERROR_EAGAIN {
                return nil
            }
            throw SSHError.last(sessionPointer, "accept")
        }
        return Channel(channel, session: session)
    }

    /// Asks the server to stop listening, without waiting for its answer.
    /// Safe to call twice.
    public func cancel() {
        if let handle, session.isOpen {
            _ = libssh2_channel_forward_cancel(handle)
        }
        handle = nil
    }
}
