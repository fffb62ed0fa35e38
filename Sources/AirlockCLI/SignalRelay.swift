import Dispatch
import Foundation
import Synchronization

/// Turns SIGINT and SIGTERM into calls: the first asks the job (or the
/// controller) to stop and clean up; the second leaves at once (exit 130)
/// after `onSecond` has said what was left behind.
final class SignalRelay: @unchecked Sendable {
    // @unchecked: `sources` is only touched by the thread that installs the
    // sources (the main thread, once); the handlers sit behind a Mutex.
    private struct Handlers {
        var onFirst: (@Sendable () -> Void)?
        var onSecond: @Sendable () -> Void = {}
        /// A first signal came before `onFirst` was set; setting it runs it at once.
        var firstMissed = false
    }

    private var sources: [DispatchSourceSignal] = []
    private let queue = DispatchQueue(label: "airlock.signals")
    private let handlers = Mutex(Handlers())
    private let count = Mutex(0)

    /// Called on the first signal. May be set at any time, from any thread;
    /// set after the first signal came, it runs at once.
    var onFirst: @Sendable () -> Void {
        get {
            let handler: (@Sendable () -> Void)? = handlers.withLock { $0.onFirst }
            return handler ?? {}
        }
        set {
            let missed = handlers.withLock { handlers in
                handlers.onFirst = newValue
                defer { handlers.firstMissed = false }
                return handlers.firstMissed
            }
            if missed {
                queue.async(execute: newValue)
            }
        }
    }

    /// Called on the second signal, just before the process exits.
    var onSecond: @Sendable () -> Void {
        get { handlers.withLock { $0.onSecond } }
        set { handlers.withLock { $0.onSecond = newValue } }
    }

    func install() {
        // A signal sent before this point, to a process started with it
        // blocked, waits as pending; ignoring it below would discard it.
        var pending = sigset_t()
        sigpending(&pending)
        var early = 0
        for number in [SIGINT, SIGTERM] {
            if sigismember(&pending, number) == 1 { early += 1 }
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { [self, source] in
                // Signals that arrive close together are delivered as one event.
                deliver(max(1, Int(source.data)))
            }
            source.resume()
            sources.append(source)
        }
        if early > 0 {
            queue.async { [self, early] in deliver(early) }
        }
    }

    private func deliver(_ delivered: Int) {
        let (before, after) = count.withLock { value -> (Int, Int) in
            defer { value += delivered }
            return (value, value + delivered)
        }
        if before == 0 {
            let handler = handlers.withLock { handlers in
                if handlers.onFirst == nil { handlers.firstMissed = true }
                return handlers.onFirst
            }
            handler?()
        }
        if after >= 2 {
            onSecond()
            exit(130)
        }
    }

    /// Calls `body` whenever a child process ends (SIGCHLD).
    func watchChildren(_ body: @escaping @Sendable () -> Void) {
        let source = DispatchSource.makeSignalSource(signal: SIGCHLD, queue: queue)
        source.setEventHandler(handler: body)
        source.resume()
        sources.append(source)
    }
}
