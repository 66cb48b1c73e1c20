import AutoVoltCore
@testable import AutoVoltService
import Testing

/// A stored event read back as a reading takes whatever the database holds: numbers as sent.
@Suite("stored events as readings")
struct StoredReadingTests {
    static func reading(uptime: Double?, sent: String? = "1796700000") -> LedgerReading {
        LedgerReading.stored(eventHash: "h", time: 1_796_700_000_000, energyWh: 1, bootID: nil, seq: nil, clock: "device",
                             powerW: nil, uptimeSeconds: uptime, timestampSent: sent)
    }

    @Test("an uptime_s no clock can hold is no uptime, never a crash (found by scripts/fuzz-api)")
    func absurdUptimes() {
        #expect(Self.reading(uptime: 1e300).uptimeMillis == nil)
        #expect(Self.reading(uptime: 9.3e15).uptimeMillis == nil)
        #expect(Self.reading(uptime: -5).uptimeMillis == nil)
        #expect(Self.reading(uptime: .nan).uptimeMillis == nil)
        #expect(Self.reading(uptime: .infinity).uptimeMillis == nil)
        #expect(Self.reading(uptime: 12.5).uptimeMillis == 12_500)
        // A millis() timestamp as sent still counts as the uptime when uptime_s is absurd.
        #expect(Self.reading(uptime: 1e300, sent: "1234567").uptimeMillis == 1_234_567)
    }
}
