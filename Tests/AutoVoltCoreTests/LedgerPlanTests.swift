import AutoVoltCore
import Foundation
import Testing

/// The old-versus-new comparison of a ledger step, without a database.
@Suite("ledger diff")
struct LedgerPlanTests {
    static let device = DeviceInfo(esp32Name: "lab-1", classroom: "A", maxPowerW: 20_000, rollbackToleranceWh: 50)

    static func derive(_ values: [(second: Int64, wh: Double)], device: DeviceInfo = device) -> [LedgerEntry] {
        var calendar = LocalCalendar(timeZone: kolkata)
        let readings = values.map { LedgerReading(eventHash: "h\($0.second)", time: t0 + $0.second * 1000, energyWh: $0.wh) }
        return LedgerDeriver.derive(readings, device: device, calendar: &calendar)
    }

    static func stored(_ entries: [LedgerEntry]) -> [StoredLedgerEntry] {
        entries.map { StoredLedgerEntry(id: $0.id, esp32Name: $0.esp32Name, start: $0.start, end: $0.end,
                                        dateText: $0.date.description, sourceEvents: $0.sourceEvents) }
    }

    @Test func theSameDerivationWritesNothing() {
        let entries = Self.derive([(0, 1000), (30, 1010), (60, 1020)])
        let change = LedgerDiff.plan(stored: Self.stored(entries), derived: entries)
        #expect(change.isEmpty)
        #expect(change.dirtyDates.isEmpty)
    }

    @Test func newReadingsInsertOnlyTheirEntries() {
        let before = Self.derive([(0, 1000), (30, 1010)])
        let after = Self.derive([(0, 1000), (30, 1010), (60, 1020)])
        let change = LedgerDiff.plan(stored: Self.stored(before), derived: after)
        #expect(change.inserting.map(\.id) == [after[1].id])
        #expect(change.superseding.isEmpty)
        #expect(change.dirtyDates == [after[1].date.description])
    }

    /// A low reading that turns out to be a glitch: the reset it looked like is replaced by one
    /// interval over it, and the old entries point at the entry now covering their start.
    @Test func aGlitchReplacesTheResetItLookedLike() {
        let before = Self.derive([(0, 1000), (30, 1010), (60, 5)])
        let after = Self.derive([(0, 1000), (30, 1010), (60, 5), (90, 1030)])
        let change = LedgerDiff.plan(stored: Self.stored(before), derived: after)
        #expect(change.superseding.map(\.entry.id) == [before[1].id])
        #expect(change.superseding.map(\.replacement) == [after[1].id])
        #expect(change.inserting.map(\.id) == [after[1].id])
        #expect(after[1].reasons == [.glitchSkipped])
    }

    /// A registry change (another classroom) changes every id: all replaced, one for one.
    @Test func aMovedDeviceReplacesEveryEntry() {
        let values: [(second: Int64, wh: Double)] = [(0, 1000), (30, 1010), (60, 1020), (90, 1030)]
        let before = Self.derive(values)
        var moved = Self.device
        moved.classroom = "B"
        let after = Self.derive(values, device: moved)
        let change = LedgerDiff.plan(stored: Self.stored(before), derived: after)
        #expect(change.inserting.count == 3)
        #expect(change.superseding.map(\.replacement) == after.map(\.id))
    }

    /// Stored entries the derivation no longer reaches (their readings went away) point nowhere.
    @Test func entriesWithNothingOverThemAreRederived() {
        let before = Self.derive([(0, 1000), (30, 1010), (60, 1020)])
        let after = Self.derive([(0, 1000), (30, 1010)])
        let change = LedgerDiff.plan(stored: Self.stored(before), derived: after)
        #expect(change.superseding.map(\.replacement) == ["rederived"])
    }

    @Test func aWaitingDipIsReportedUntilItSettles() {
        let policy = LedgerPolicy()
        var calendar = LocalCalendar(timeZone: kolkata)
        let readings = [(0, 1000.0), (30, 1010.0), (60, 5.0)].map {
            LedgerReading(eventHash: "d\($0.0)", time: t0 + EpochMillis($0.0) * 1000, energyWh: $0.1)
        }
        let waiting = LedgerDeriver.derive(readings, device: Self.device, calendar: &calendar, policy: policy, now: t0 + 61_000)
        #expect(LedgerDeriver.pendingDipUntil(readings, derived: waiting, policy: policy) == t0 + 60_000 + policy.pendingDipTimeoutMillis)
        let settled = LedgerDeriver.derive(readings, device: Self.device, calendar: &calendar, policy: policy, now: .max)
        #expect(LedgerDeriver.pendingDipUntil(readings, derived: settled, policy: policy) == nil)
        #expect(LedgerDeriver.pendingDipUntil(Array(readings.prefix(1)), derived: [], policy: policy) == nil)
    }
}
