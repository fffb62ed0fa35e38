import CLibvirt

/// An error reported by libvirt, carrying libvirt's own code and message.
public struct LibvirtError: Error, CustomStringConvertible, Sendable {
    /// libvirt's error number (`virErrorNumber`), such as `VIR_ERR_NO_DOMAIN`.
    public let code: Int32
    /// The libvirt subsystem that raised the error (`virErrorDomain`).
    public let domain: Int32
    /// libvirt's message, or a fallback when libvirt gave none.
    public let message: String
    /// The Swift operation that failed.
    public let operation: String

    public var description: String { message }

    /// Whether the error says that the domain does not exist (any more).
    public var isNoDomain: Bool {
        code == Int32(VIR_ERR_NO_DOMAIN.rawValue)
            || code == Int32(VIR_ERR_OPERATION_INVALID.rawValue)
                && message.contains("not running")
    }

    /// Whether the error says the connection could not be made or was lost.
    public var isConnectionFailure: Bool {
        code == Int32(VIR_ERR_SYSTEM_ERROR.rawValue) || code == Int32(VIR_ERR_NO_CONNECT.rawValue)
            || code == Int32(VIR_ERR_RPC.rawValue) || code == Int32(VIR_ERR_AUTH_FAILED.rawValue)
    }

    init(code: Int32, domain: Int32, message: String, operation: String) {
        self.code = code
        self.domain = domain
        self.message = message
        self.operation = operation
    }

    /// Reads (and clears) this thread's last libvirt error. Call it right after the failing call.
    static func last(_ operation: String) -> LibvirtError {
        var raw = virError()
        let copied = virCopyLastError(&raw)
        defer {
            virResetError(&raw)
            virResetLastError()
        }
        guard copied >= 0, raw.code != 0 else {
            return LibvirtError(code: 0, domain: 0, message: "libvirt gave no error message", operation: operation)
        }
        let message = raw.message.map { String(cString: $0) } ?? "libvirt error \(raw.code)"
        return LibvirtError(code: raw.code, domain: raw.domain, message: message, operation: operation)
    }
}

/// Checks a libvirt status code (negative means failure).
@discardableResult
func check(_ result: Int32, _ operation: String = #function) throws(LibvirtError) -> Int32 {
    if result < 0 {
        throw LibvirtError.last(operation)
    }
    return result
}

/// Checks a libvirt pointer result (nil means failure).
func check<T>(_ result: T?, _ operation: String = #function) throws(LibvirtError) -> T {
    guard let result else {
        throw LibvirtError.last(operation)
    }
    return result
}
