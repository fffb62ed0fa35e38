import CLibvirt
import Foundation
import Synchronization

/// A domain's serial console, read as a stream of bytes.
///
/// One thread reads; any thread may `close()` it, which ends a read in progress.
public final class ConsoleStream: @unchecked Sendable {
    // @unchecked: `handle` is read by one reader thread; closing is guarded
    // by `state` so that the stream is aborted once and freed once.
    private let handle: OpaquePointer
    private let domain: Domain
    private let state = Mutex<(closed: Bool, reading: Bool, freed: Bool)>((false, false, false))

    init(_ handle: OpaquePointer, domain: Domain) {
        self.handle = handle
        self.domain = domain
    }

    deinit {
        let freed = state.withLock { $0.freed }
        if !freed {
            virStreamAbort(handle)
            virStreamFree(handle)
        }
    }

    /// Reads up to `maxLength` bytes, blocking until the guest writes.
    ///
    /// - Returns: The bytes read, or nil at the end of the stream (the domain
    ///   stopped, or the stream was closed).
    public func read(maxLength: Int = 16384) throws(LibvirtError) -> [UInt8]? {
        let open = state.withLock { value -> Bool in
            if value.closed { return false }
            value.reading = true
            return true
        }
        guard open else { return nil }
        defer { state.withLock { $0.reading = false } }

        var buffer = [UInt8](repeating: 0, count: maxLength)
        let count = buffer.withUnsafeMutableBytes { raw in
            virStreamRecv(handle, raw.baseAddress?.assumingMemoryBound(to: CChar.self), maxLength)
        }
        if count == 0 {
            return nil
        }
        if count < 0 {
            if state.withLock({ $0.closed }) {
                return nil
            }
            throw LibvirtError.last("read")
        }
        return Array(buffer[0..<Int(count)])
    }

    /// Stops the stream. A blocked `read` returns nil. Safe to call twice.
    public func close() {
        let first = state.withLock { value -> Bool in
            defer { value.closed = true }
            return !value.closed
        }
        if first {
            virStreamAbort(handle)
        }
    }
}
