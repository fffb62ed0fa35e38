/// The one error type Airlock's core throws.
///
/// It carries a broad code, a lowercase message naming the object, an
/// optional hint that says how to fix it, and the underlying cause (a
/// libvirt, SSH or archive error, with that library's own message).
public struct AirlockError: Error, CustomStringConvertible, Sendable {
    /// A broad class of failure. Extensible: new codes may be added.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private enum Value: String, Sendable {
            case invalidArgument, notFound, exists, invalidState, timeout, unsupported, cancelled
            case internalError, hostUnavailable, imageInvalid, guestFailed, connectionLost
        }

        private let value: Value
        private init(_ value: Value) { self.value = value }

        public var description: String { value.rawValue }

        /// The caller asked for something malformed.
        public static let invalidArgument = Code(.invalidArgument)
        /// A named thing does not exist.
        public static let notFound = Code(.notFound)
        /// A named thing already exists.
        public static let exists = Code(.exists)
        /// The thing is in the wrong state for the request.
        public static let invalidState = Code(.invalidState)
        /// A deadline passed.
        public static let timeout = Code(.timeout)
        /// Not built (yet) or not possible here.
        public static let unsupported = Code(.unsupported)
        /// Stopped on request (Ctrl-C, cancel).
        public static let cancelled = Code(.cancelled)
        /// A bug in Airlock.
        public static let internalError = Code(.internalError)
        /// libvirt cannot be reached or cannot run guests.
        public static let hostUnavailable = Code(.hostUnavailable)
        /// An image's manifest or files are missing or broken.
        public static let imageInvalid = Code(.imageInvalid)
        /// The guest did not boot, died, or misbehaved.
        public static let guestFailed = Code(.guestFailed)
        /// The SSH connection to the guest broke or went silent.
        public static let connectionLost = Code(.connectionLost)
    }

    public let code: Code
    /// Lowercase, no trailing period; names the object in single quotes.
    public let message: String
    /// How to fix it, when known.
    public let hint: String?
    /// The lower layer's error.
    public let cause: (any Error & Sendable)?

    public init(_ code: Code, _ message: String, hint: String? = nil, cause: (any Error & Sendable)? = nil) {
        self.code = code
        self.message = message
        self.hint = hint
        self.cause = cause
    }

    /// The same error with `context` (such as the file and line a job came
    /// from) in front of its message.
    public func within(_ context: String) -> AirlockError {
        AirlockError(code, "\(context): \(message)", hint: hint, cause: cause)
    }

    /// The message followed by the cause's own message.
    public var description: String {
        guard let cause else { return message }
        return "\(message): \(cause)"
    }
}
