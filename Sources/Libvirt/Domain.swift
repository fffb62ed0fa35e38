import CLibvirt
import Foundation

/// A libvirt domain (a guest). Holds its connection open while it lives.
public final class Domain: @unchecked Sendable {
    // @unchecked: the handle never changes after init, and libvirt's domain
    // calls are thread-safe.
    let handle: OpaquePointer
    /// The connection this domain belongs to.
    public let connection: Connection

    init(_ handle: OpaquePointer, connection: Connection) {
        self.handle = handle
        self.connection = connection
    }

    deinit {
        virDomainFree(handle)
    }

    /// The domain's name.
    public var name: String {
        virDomainGetName(handle).map { String(cString: $0) } ?? ""
    }

    /// Starts the virtual CPUs of a paused domain.
    public func resume() throws(LibvirtError) {
        try check(virDomainResume(handle))
    }

    /// Pauses the virtual CPUs.
    public func suspend() throws(LibvirtError) {
        try check(virDomainSuspend(handle))
    }

    /// Stops the domain at once (power cut). A transient domain disappears.
    ///
    /// - Returns: false when the domain was already gone, which counts as done.
    @discardableResult
    public func destroy() throws(LibvirtError) -> Bool {
        if virDomainDestroy(handle) < 0 {
            let error = LibvirtError.last("destroy")
            if error.isNoDomain {
                return false
            }
            throw error
        }
        return true
    }

    /// Removes the persistent definition; "no such domain" counts as done.
    public func undefine() throws(LibvirtError) {
        if virDomainUndefine(handle) < 0 {
            let error = LibvirtError.last("undefine")
            if !error.isNoDomain && error.code != Int32(VIR_ERR_OPERATION_INVALID.rawValue) {
                throw error
            }
        }
    }

    /// The domain's current state and the reason libvirt gives for it.
    public func state() throws(LibvirtError) -> DomainState {
        var state: Int32 = 0
        var reason: Int32 = 0
        try check(virDomainGetState(handle, &state, &reason, 0))
        return DomainState(state: state, reason: reason)
    }

    /// The live XML description.
    public func xml() throws(LibvirtError) -> String {
        let raw = try check(virDomainGetXMLDesc(handle, 0))
        defer { free(raw) }
        return String(cString: raw)
    }

    /// The `<metadata>` element stored under a namespace URI, or nil when absent.
    public func metadata(namespace: String) -> String? {
        guard let raw = virDomainGetMetadata(handle, Int32(VIR_DOMAIN_METADATA_ELEMENT.rawValue), namespace, 0)
        else {
            virResetLastError()
            return nil
        }
        defer { free(raw) }
        return String(cString: raw)
    }

    /// Opens the domain's serial console as a byte stream.
    ///
    /// The stream is blocking: `ConsoleStream.read` waits for the guest.
    public func openConsole() throws(LibvirtError) -> ConsoleStream {
        let stream = try check(virStreamNew(try connection.pointer(), 0), "openConsole")
        if virDomainOpenConsole(handle, nil, stream, UInt32(VIR_DOMAIN_CONSOLE_FORCE.rawValue)) < 0 {
            let error = LibvirtError.last("openConsole")
            virStreamFree(stream)
            throw error
        }
        return ConsoleStream(stream, domain: self)
    }
}

/// A domain's run state, as libvirt reports it.
public struct DomainState: Sendable, Equatable, CustomStringConvertible {
    /// `virDomainState`.
    public let state: Int32
    /// The state's reason code, whose meaning depends on the state.
    public let reason: Int32

    public var isRunning: Bool { state == Int32(VIR_DOMAIN_RUNNING.rawValue) }
    public var isPaused: Bool { state == Int32(VIR_DOMAIN_PAUSED.rawValue) }
    /// Paused because a disk write failed, typically a full host disk.
    public var isPausedOnIOError: Bool {
        isPaused && reason == Int32(VIR_DOMAIN_PAUSED_IOERROR.rawValue)
    }
    public var isStopped: Bool {
        state == Int32(VIR_DOMAIN_SHUTOFF.rawValue) || state == Int32(VIR_DOMAIN_CRASHED.rawValue)
            || state == Int32(VIR_DOMAIN_SHUTDOWN.rawValue)
    }

    public var description: String {
        switch UInt32(state) {
        case VIR_DOMAIN_RUNNING.rawValue: return "running"
        case VIR_DOMAIN_BLOCKED.rawValue: return "blocked"
        case VIR_DOMAIN_PAUSED.rawValue: return isPausedOnIOError ? "paused (I/O error)" : "paused"
        case VIR_DOMAIN_SHUTDOWN.rawValue: return "shutting down"
        case VIR_DOMAIN_SHUTOFF.rawValue: return "shut off"
        case VIR_DOMAIN_CRASHED.rawValue: return "crashed"
        case VIR_DOMAIN_PMSUSPENDED.rawValue: return "suspended"
        default: return "unknown (\(state))"
        }
    }
}
