import Foundation
import Synchronization

/// A flag that wakes every SSH wait in progress, from any thread.
///
/// SSH sessions wait in `poll` on their socket and on this flag's pipe, so
/// firing it makes a blocked call return `SSHError.Kind.interrupted` at once.
public final class Interrupt: Sendable {
    private let readEnd: Int32
    private let writeEnd: Int32
    private let fired = Atomic<Bool>(false)

    public init() {
        var fds: [Int32] = [-1, -1]
        if pipe(&fds) == 0 {
            _ = fcntl(fds[0], F_SETFL, O_NONBLOCK)
            _ = fcntl(fds[1], F_SETFL, O_NONBLOCK)
            _ = fcntl(fds[0], F_SETFD, FD_CLOEXEC)
            _ = fcntl(fds[1], F_SETFD, FD_CLOEXEC)
        }
        readEnd = fds[0]
        writeEnd = fds[1]
    }

    deinit {
        if readEnd >= 0 { Glibc.close(readEnd) }
        if writeEnd >= 0 { Glibc.close(writeEnd) }
    }

    /// Whether `fire()` has been called.
    public var isFired: Bool { fired.load(ordering: .acquiring) }

    /// Wakes all waiters now and makes later waits fail at once.
    /// Async-signal-safe apart from the atomic store, so it may be called from a signal handler's queue.
    public func fire() {
        fired.store(true, ordering: .releasing)
        var byte: UInt8 = 1
        _ = write(writeEnd, &byte, 1)
    }

    /// The descriptor that becomes readable once fired.
    var descriptor: Int32 { readEnd }
}
