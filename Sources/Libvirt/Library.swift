import CLibvirt
import Foundation
import Synchronization

/// Process-wide libvirt set-up, done once before the first connection.
enum Library {
    private static let initialized = Mutex(false)

    /// Initializes libvirt, silences its default error printer, which
    /// would otherwise write every error to standard error, and runs
    /// libvirt's event loop on a thread of its own: with it, connections
    /// to remote hosts send keepalives, and a host that stops answering
    /// fails the calls waiting on it instead of holding them for ever.
    static func initialize() {
        initialized.withLock { done in
            guard !done else { return }
            _ = virInitialize()
            virSetErrorFunc(nil) { _, _ in }
            if virEventRegisterDefaultImpl() == 0 {
                let thread = Thread {
                    while true {
                        _ = virEventRunDefaultImpl()
                    }
                }
                thread.name = "airlock.libvirt-events"
                thread.start()
            }
            done = true
        }
    }
}
