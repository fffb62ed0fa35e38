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
            source.setEventHandler { [self] in
                let seen = count.withLock { value -> Int in
                    value += 1
                    return value
                }
                if seen == 1 {
                    onFirst()
                } else {
                    onSecond()
                    exit(130)
                }
            }
            source.resume()
            sources.append(source)
        }
    }
}
