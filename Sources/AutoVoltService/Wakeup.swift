import Foundation

/// Wakes a waiting thread; many signals before a wait coalesce into one wake-up.
final class Wakeup: @unchecked Sendable {
    private let lock = NSLock()
    private let semaphore = DispatchSemaphore(value: 0)
    private var pending = false

    func signal() {
        let shouldSignal: Bool = lock.withLock {
            defer { pending = true }
            return !pending
        }
        if shouldSignal { semaphore.signal() }
    }

    /// Returns early when signalled.
    func wait(seconds: Double) {
        _ = semaphore.wait(timeout: .now() + seconds)
        lock.withLock { pending = false }
    }
}
