import AutoVoltCore
import Foundation

/// Time, injected so tests can run a whole night in milliseconds.
public protocol WorkerClock: Sendable {
    func now() -> EpochMillis
}

/// The one wall clock of the worker, in epoch milliseconds (rounded, as BSON dates keep them).
public struct SystemClock: WorkerClock {
    public init() {}
    public func now() -> EpochMillis { SystemClock.nowMillis() }
    public static func nowMillis() -> EpochMillis { EpochMillis((Date().timeIntervalSince1970 * 1000).rounded()) }
}
