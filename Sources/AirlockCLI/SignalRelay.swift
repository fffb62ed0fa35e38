import Dispatch
import Foundation
import Synchronization

/// Turns SIGINT and SIGTERM into calls: the first asks the job to stop and
/// clean up; the second leaves at once (exit 130) after `onSecond` has said
/// what was left behind.
final class SignalRelay: @unchecked Sendable {
    // @unchecked: the handlers are set before the sources fire and are only
    // read on `queue`.
    private let queue = DispatchQueue(label: "airlock.signals")
    private var sources: [DispatchSourceSignal] = []
    private let count = Mutex(0)
    var onFirst: @Sendable () -> Void = {}
    var onSecond: @Sendable () -> Void = {}

    func install() {
        for number in [SIGINT, SIGTERM] {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: queue)
            source.setEventHandler { [self, source] in
                // Signals that arrive close together are delivered as one event.
                let delivered = max(1, Int(source.data))
                let (before, after) = count.withLock { value -> (Int, Int) in
                    defer { value += delivered }
                    return (value, value + delivered)
                }
                if before == 0 {
                    onFirst()
                }
                if after >= 2 {
                    onSecond()
                    exit(130)
                }
            }
            source.resume()
            sources.append(source)
        }
    }
}
