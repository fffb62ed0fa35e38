import Foundation
import Synchronization

/// Runs a blocking call that might never return (a libvirt call to a remote
/// host that vanished, before libvirt notices) on a thread of its own, and
/// gives up waiting for it after a while. A call given up on keeps its
/// thread until it returns, and its result is dropped.
enum Bounded {
    /// - Returns: What `body` returned, or nil when it did not return within `limit`.
    static func run<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () -> T) -> T? {
        let result = Mutex<T?>(nil)
        let done = DispatchSemaphore(value: 0)
        let thread = Thread {
            let value = body()
            result.withLock { $0 = value }
            done.signal()
        }
        thread.name = "airlock.bounded"
        thread.start()
        guard done.wait(timeout: .now() + .milliseconds(Int(limit.inMilliseconds))) == .success else {
            return nil
        }
        return result.withLock { $0 }
    }
}
