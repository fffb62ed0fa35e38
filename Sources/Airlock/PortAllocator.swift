import Foundation

/// Finds TCP ports on 127.0.0.1 that are free right now.
///
/// A port can still be taken between this check and QEMU's bind; the caller
/// retries with a new port when QEMU reports that its forward failed.
enum PortAllocator {
    /// Asks the kernel for a free loopback port.
    static func freeLoopbackPort() throws(AirlockError) -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else {
            throw AirlockError(.internalError, "cannot open a socket to find a free port", cause: POSIXFailure())
        }
        defer { close(fd) }
        var address = loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
        }
        guard bound == 0 else {
            throw AirlockError(.internalError, "cannot bind a loopback port", cause: POSIXFailure())
        }
        let named = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        guard named == 0 else {
            throw AirlockError(.internalError, "cannot read the bound port", cause: POSIXFailure())
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    /// The IPv4 socket address 127.0.0.1:`port`.
    static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = UInt32(0x7f00_0001).bigEndian
        return address
    }
}
