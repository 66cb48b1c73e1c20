/// Decides whether a device's timestamp can be trusted (contract section 3).
public struct ClockPolicy: Sendable, Equatable {
    /// How far behind the receive time a device time may be (devices and the broker hold readings).
    public var maxLagMillis: Int64
    /// How far ahead of the receive time a device time may be (small clock skew).
    public var maxLeadMillis: Int64
    /// Nothing before 2020-01-01 is a real reading time.
    public var earliestMillis: Int64

    public static let millisecondsThreshold = 100_000_000_000.0 // 10^11
    public static let defaultMaxLagMillis: Int64 = 7 * 86_400_000
    public static let epoch2020Millis: Int64 = 1_577_836_800_000

    public init(maxLagMillis: Int64 = ClockPolicy.defaultMaxLagMillis, maxLeadMillis: Int64 = 300_000,
                earliestMillis: Int64 = ClockPolicy.epoch2020Millis) {
        self.maxLagMillis = maxLagMillis
        self.maxLeadMillis = maxLeadMillis
        self.earliestMillis = earliestMillis
    }

    public struct Decision: Sendable, Equatable {
        public let time: EpochMillis
        public let clock: ClockSource
        public let note: String?
    }

    /// `raw` is the number as sent: above 10^11 it is milliseconds, otherwise seconds.
    public func resolve(raw: Double?, receivedAt: EpochMillis) -> Decision {
        guard let raw else { return Decision(time: receivedAt, clock: .receiver, note: "no timestamp") }
        guard raw.isFinite, abs(raw) < 1e15 else {
            return Decision(time: receivedAt, clock: .receiver, note: "timestamp not a finite time")
        }
        let millis = raw > Self.millisecondsThreshold ? Int64(raw.rounded()) : Int64((raw * 1000).rounded())
        if millis < earliestMillis {
            return Decision(time: receivedAt, clock: .receiver, note: "timestamp before 2020-01-01")
        }
        if millis < receivedAt - maxLagMillis {
            return Decision(time: receivedAt, clock: .receiver, note: "timestamp older than the allowed clock lag")
        }
        if millis > receivedAt + maxLeadMillis {
            return Decision(time: receivedAt, clock: .receiver, note: "timestamp more than 5 minutes ahead of the receive time")
        }
        return Decision(time: millis, clock: .device, note: nil)
    }
}
