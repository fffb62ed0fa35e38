import Foundation
import Libvirt
import Synchronization

/// Polls a running guest's state in libvirt on a thread of its own. QEMU
/// pauses a guest whose disk write failed (a full host disk, BC-12): such a
/// guest never goes on by itself, and its SSH only falls silent, so the job
/// is told at once rather than at its timeout.
final class GuestWatch: Sendable {
    private let domain: Domain
    private let onIOErrorPause: @Sendable () -> Void
    private let stopped = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)

    init(domain: Domain, onIOErrorPause: @escaping @Sendable () -> Void) {
        self.domain = domain
        self.onIOErrorPause = onIOErrorPause
    }

    func start() {
        let thread = Thread { [self] in
            defer { finished.signal() }
            while !stopped.load(ordering: .acquiring) {
                // A guest that is gone needs no more watching.
                guard let state = try? domain.state(), !state.isStopped else { return }
                if state.isPausedOnIOError {
                    onIOErrorPause()
                    return
                }
                Thread.sleep(forTimeInterval: 0.5)
            }
        }
        thread.name = "airlock.guest-watch"
        thread.start()
    }

    /// Stops polling; waits for the thread's current poll to end.
    func stop() {
        guard !stopped.exchange(true, ordering: .acquiringAndReleasing) else { return }
        _ = finished.wait(timeout: .now() + 2)
    }
}
