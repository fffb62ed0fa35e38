import CArchive

/// An error from libarchive, or from the stream feeding it.
public struct ArchiveError: Error, CustomStringConvertible, Sendable {
    /// libarchive's errno-style code, or 0.
    public let code: Int32
    public let message: String
    /// The Swift operation that failed.
    public let operation: String

    public var description: String { message }

    public init(code: Int32 = 0, message: String, operation: String = #function) {
        self.code = code
        self.message = message
        self.operation = operation
    }

    static func last(_ archive: OpaquePointer, _ operation: String) -> ArchiveError {
        let message = archive_error_string(archive).map { String(cString: $0) } ?? "libarchive error"
        return ArchiveError(code: archive_errno(archive), message: message, operation: operation)
    }
}
