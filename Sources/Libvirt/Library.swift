import CLibvirt
import Synchronization

/// Process-wide libvirt set-up, done once before the first connection.
enum Library {
    private static let initialized = Mutex(false)

    /// Initializes libvirt and silences its default error printer, which
    /// would otherwise write every error to standard error.
    static func initialize() {
        initialized.withLock { done in
            guard !done else { return }
            _ = virInitialize()
            virSetErrorFunc(nil) { _, _ in }
            done = true
        }
    }
}
