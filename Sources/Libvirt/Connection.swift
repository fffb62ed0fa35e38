import CLibvirt
import Foundation
import Synchronization

/// A connection to one libvirt hypervisor endpoint, such as `qemu:///system`.
///
/// libvirt's connection and domain calls are safe to make from several threads
/// at once, so a connection may be shared; each call blocks its caller until
/// libvirt answers. The connection is closed by `close()` or when the last
/// reference goes away.
public final class Connection: @unchecked Sendable {
    // @unchecked: the pointer is only swapped under `handle`'s lock, and
    // libvirt itself serializes calls made on one connection.
    private let handle: Mutex<OpaquePointer?>

    /// The URI this connection was opened with.
    public let uri: String

    /// Opens a read-write connection.
    ///
    /// - Parameter uri: A libvirt URI, for example `qemu:///system` or `test:///default`.
    /// - Throws: `LibvirtError` when libvirt cannot be reached.
    public init(uri: String) throws(LibvirtError) {
        Library.initialize()
        let pointer = virConnectOpen(uri)
        guard let pointer else {
            throw LibvirtError.last("open")
        }
        // To a remote host: a keepalive every 5 s, and the connection is dead
        // after 5 go unanswered. A local libvirtd's socket says when it goes,
        // and a busy one (guests under emulation on every core) must not be
        // taken for a dead one.
        if URLComponents(string: uri)?.host?.isEmpty == false {
            _ = virConnectSetKeepAlive(pointer, 5, 5)
        }
        self.handle = Mutex(pointer)
        self.uri = uri
    }

    deinit {
        close()
    }

    /// Closes the connection. Safe to call more than once.
    public func close() {
        let pointer = handle.withLock { value -> OpaquePointer? in
            defer { value = nil }
            return value
        }
        if let pointer {
            virConnectClose(pointer)
        }
    }

    func pointer(_ operation: String = #function) throws(LibvirtError) -> OpaquePointer {
        guard let pointer = handle.withLock({ $0 }) else {
            throw LibvirtError(
                code: Int32(VIR_ERR_INVALID_CONN.rawValue), domain: 0,
                message: "connection is closed", operation: operation)
        }
        return pointer
    }

    /// The host's name as libvirt reports it.
    public func hostname() throws(LibvirtError) -> String {
        let raw = try check(virConnectGetHostname(try pointer()))
        defer { free(raw) }
        return String(cString: raw)
    }

    /// The capabilities XML of the hypervisor.
    public func capabilities() throws(LibvirtError) -> String {
        let raw = try check(virConnectGetCapabilities(try pointer()))
        defer { free(raw) }
        return String(cString: raw)
    }

    /// The host's logical CPUs and memory.
    public func nodeInfo() throws(LibvirtError) -> NodeInfo {
        var info = virNodeInfo()
        try check(virNodeGetInfo(try pointer(), &info))
        return NodeInfo(cpus: Int(info.cpus), memoryKiB: Int64(info.memory))
    }

    /// Whether the connection is still usable.
    public var isAlive: Bool {
        guard let pointer = handle.withLock({ $0 }) else { return false }
        return virConnectIsAlive(pointer) == 1
    }

    /// Creates and starts a transient domain from its XML description.
    ///
    /// - Parameters:
    ///   - xml: The domain XML.
    ///   - paused: Leave the virtual CPUs stopped until `Domain.resume()`.
    /// - Returns: The running (or paused) domain.
    /// - Throws: `LibvirtError` with libvirt's reason when the domain cannot start.
    public func createDomain(xml: String, paused: Bool = false) throws(LibvirtError) -> Domain {
        let flags = paused ? VIR_DOMAIN_START_PAUSED.rawValue : 0
        let raw = try check(virDomainCreateXML(try pointer(), xml, flags))
        return Domain(raw, connection: self)
    }

    /// Looks a domain up by name.
    ///
    /// - Returns: The domain, or nil when no domain has that name.
    public func domain(named name: String) throws(LibvirtError) -> Domain? {
        guard let raw = virDomainLookupByName(try pointer(), name) else {
            let error = LibvirtError.last("domain(named:)")
            if error.code == Int32(VIR_ERR_NO_DOMAIN.rawValue) {
                return nil
            }
            throw error
        }
        return Domain(raw, connection: self)
    }

    /// Every domain the hypervisor knows, running or defined.
    public func allDomains() throws(LibvirtError) -> [Domain] {
        var list: UnsafeMutablePointer<OpaquePointer?>?
        let count = try check(virConnectListAllDomains(try pointer(), &list, 0))
        defer { free(list) }
        var domains: [Domain] = []
        for index in 0..<Int(count) {
            if let raw = list?[index] {
                domains.append(Domain(raw, connection: self))
            }
        }
        return domains
    }
}

/// What a host has to give its guests.
public struct NodeInfo: Sendable, Equatable {
    /// Logical CPUs.
    public var cpus: Int
    /// Memory in KiB.
    public var memoryKiB: Int64
}
