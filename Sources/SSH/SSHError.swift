import CLibssh2

/// An error from the SSH layer: libssh2's own code and message, or a socket
/// or verification failure described in the same shape.
public struct SSHError: Error, CustomStringConvertible, Sendable {
    /// What went wrong, in broad strokes.
    public enum Kind: Sendable, Equatable {
        /// A libssh2 call failed; `code` is libssh2's error number.
        case library
        /// The TCP connection could not be made or broke.
        case socket
        /// The server presented a host key other than the pinned one.
        case hostKeyMismatch
        /// The server refused our key.
        case authenticationFailed
        /// A deadline passed before the operation finished.
        case timeout
        /// The peer stopped answering keepalives.
        case connectionLost
        /// The caller interrupted the wait.
        case interrupted
    }

    public let kind: Kind
    /// libssh2's error number, or errno for socket errors.
    public let code: Int32
    public let message: String
    /// The Swift operation that failed.
    public let operation: String

    public var description: String { message }

    public init(_ kind: Kind, code: Int32 = 0, message: String, operation: String = #function) {
        self.kind = kind
        self.code = code
        self.message = message
        self.operation = operation
    }

    /// Reads the session's last error. Call right after the failing call.
    static func last(_ session: OpaquePointer, _ operation: String) -> SSHError {
        var text: UnsafeMutablePointer<CChar>?
        var length: Int32 = 0
        let code = libssh2_session_last_error(session, &text, &length, 0)
        let message = text.map { String(cString: $0) } ?? "libssh2 error \(code)"
        if code == LIBSSH2_ERROR_SOCKET_DISCONNECT || code == LIBSSH2_ERROR_SOCKET_RECV
            || code == LIBSSH2_ERROR_SOCKET_SEND
        {
            return SSHError(.connectionLost, code: code, message: message, operation: operation)
        }
        return SSHError(.library, code: code, message: message, operation: operation)
    }
}
