import Foundation
import Synchronization

/// Wakes a waiting thread; many signals before a wait coalesce into one wake-up.
final class Wakeup: Sendable {
    private let semaphore = DispatchSemaphore(value: 0)
    /// A signal is in the semaphore and not yet taken by a wait.
    private let pending = Mutex(false)

    func signal() {
        let shouldSignal = pending.withLock { pending in
            defer { pending = true }
            return !pending
        }
        if shouldSignal { semaphore.signal() }
    }

    /// Returns early when signalled.
    func wait(seconds: Double) {
        _ = semaphore.wait(timeout: .now() + seconds)
        pending.withLock { $0 = false }
    }
}
