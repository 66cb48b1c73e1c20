import AutoVoltCore
import Foundation
import Testing

@Suite("read query computations: periods, buckets, spreading, switch shares, changes")
struct BreakdownTests {
    static let zone = TimeZone(identifier: "Asia/Kolkata")!
    static let newYork = TimeZone(identifier: "America/New_York")!

    static func at(_ text: String) -> EpochMillis { ISO8601.parseMillis(text)! }

    static func buckets(_ from: String, _ to: String, _ size: Breakdown.BucketSize, zone: TimeZone = zone) -> [Breakdown.Bucket] {
        var calendar = LocalCalendar(timeZone: zone)
        return Breakdown.buckets(from: at(from), to: at(to), size: size, calendar: &calendar)
    }

    // MARK: Periods

    @Test func periodsAreADayOrAMonth() {
        #expect(Breakdown.Period("2026-11-01") == .day(CivilDate(year: 2026, month: 11, day: 1)))
        #expect(Breakdown.Period("2026-11") == .month(Breakdown.Month(year: 2026, month: 11)))
        for bad in ["", "2026", "2026-13", "2026-11-31", "2026-1-01", "2026-11-1", "+026-11", "2026-+1", "2026-11-01T00:00:00Z",
                    "26-11", "2026/11", "2026-11-01 "] {
            #expect(Breakdown.Period(bad) == nil, "\(bad)")
        }
        let month = Breakdown.Period("2024-02")!
        #expect(month.firstDay == CivilDate(year: 2024, month: 2, day: 1))
        #expect(month.lastDay == CivilDate(year: 2024, month: 2, day: 29))
        #expect(month.dayCount == 29)
        #expect(month.description == "2024-02")
        #expect(Breakdown.Period("2026-11-05")!.dayCount == 1)
    }

    @Test func monthsKnowTheirNeighbours() {
        #expect(Breakdown.Month("2026-01")!.previous.description == "2025-12")
        #expect(Breakdown.Month("2026-12")!.next.description == "2027-01")
        #expect(Breakdown.Month("2026-03")!.previous.description == "2026-02")
        #expect(Breakdown.Month("0000-00") == nil)
    }

    @Test func elapsedDaysCountOnlyDaysThatHaveBegun() {
        let november = Breakdown.Period("2026-11")!
        #expect(november.elapsedDays(today: CivilDate(year: 2026, month: 11, day: 23)) == 23)
        #expect(november.elapsedDays(today: CivilDate(year: 2026, month: 12, day: 5)) == 30)
        // A month entirely in the future, with data dated in it: never zero days.
        #expect(november.elapsedDays(today: CivilDate(year: 2026, month: 10, day: 1)) == 1)
        #expect(november.elapsedDays(today: CivilDate(year: 2026, month: 10, day: 1), latestData: CivilDate(year: 2026, month: 11, day: 4)) == 4)
        #expect(Breakdown.Period("2026-11-04")!.elapsedDays(today: CivilDate(year: 2026, month: 11, day: 23)) == 1)
    }

    // MARK: Buckets

    @Test func hourBucketsFollowLocalHoursAndAreClippedToTheRange() {
        // Kolkata is UTC+05:30: local hours start at half past the UTC hour.
        let b = Self.buckets("2026-11-01T10:15:00+05:30", "2026-11-01T12:00:00+05:30", .hour)
        #expect(b.map(\.label) == ["2026-11-01T10:00+05:30", "2026-11-01T11:00+05:30"])
        #expect(b[0].start == Self.at("2026-11-01T10:15:00+05:30"))
        #expect(b[0].end == Self.at("2026-11-01T11:00:00+05:30"))
        #expect(b[1].end == Self.at("2026-11-01T12:00:00+05:30"))
        let whole = Self.buckets("2026-11-01T00:00:00+05:30", "2026-11-02T00:00:00+05:30", .hour)
        #expect(whole.count == 24)
        #expect(whole.first?.label == "2026-11-01T00:00+05:30")
        #expect(whole.last?.label == "2026-11-01T23:00+05:30")
        #expect(Self.buckets("2026-11-01T10:00:00Z", "2026-11-01T10:00:00Z", .hour).isEmpty)
    }

    @Test func hourBucketsOnDaylightSavingDays() {
        // New York falls back on 2026-11-01: 25 local hours, 01:00 twice (told apart by the offset).
        let fall = Self.buckets("2026-11-01T00:00:00-04:00", "2026-11-02T00:00:00-05:00", .hour, zone: Self.newYork)
        #expect(fall.count == 25)
        #expect(fall[1].label == "2026-11-01T01:00-04:00")
        #expect(fall[2].label == "2026-11-01T01:00-05:00")
        #expect(fall.allSatisfy { $0.end - $0.start == 3_600_000 })
        // ...and springs forward on 2026-03-08: 23 hours, no 02:00.
        let spring = Self.buckets("2026-03-08T00:00:00-05:00", "2026-03-09T00:00:00-04:00", .hour, zone: Self.newYork)
        #expect(spring.count == 23)
        #expect(spring[2].label == "2026-03-08T03:00-04:00")
        #expect(!spring.contains { $0.label.hasPrefix("2026-03-08T02:") })
        var calendar = LocalCalendar(timeZone: Self.newYork)
        let days = Breakdown.buckets(from: Self.at("2026-11-01T00:00:00-04:00"), to: Self.at("2026-11-03T00:00:00-05:00"),
                                     size: .day, calendar: &calendar)
        #expect(days.map(\.label) == ["2026-11-01", "2026-11-02"])
        #expect(days[0].end - days[0].start == 25 * 3_600_000)
    }

    @Test func dayBucketsAreLocalDates() {
        let b = Self.buckets("2026-11-01T12:00:00+05:30", "2026-11-03T06:00:00+05:30", .day)
        #expect(b.map(\.label) == ["2026-11-01", "2026-11-02", "2026-11-03"])
        #expect(b[0].start == Self.at("2026-11-01T12:00:00+05:30"))
        #expect(b[0].end == Self.at("2026-11-02T00:00:00+05:30"))
        #expect(b[1].end - b[1].start == 86_400_000)
        #expect(b[2].end == Self.at("2026-11-03T06:00:00+05:30"))
        // UTC midnight (05:30 in Kolkata) is no boundary.
        #expect(Self.buckets("2026-11-01T00:00:00Z", "2026-11-01T05:00:00Z", .day).map(\.label) == ["2026-11-01"])
    }

    @Test func localMinuteLabels() {
        #expect(Breakdown.localMinuteLabel(Self.at("2026-11-01T04:30:00Z"), zone: Self.zone) == "2026-11-01T10:00+05:30")
        #expect(Breakdown.localMinuteLabel(Self.at("2026-11-01T04:30:00Z"), zone: TimeZone(identifier: "UTC")!) == "2026-11-01T04:30+00:00")
        #expect(Breakdown.localMinuteLabel(Self.at("2026-01-01T02:00:00Z"), zone: Self.newYork) == "2025-12-31T21:00-05:00")
    }

    // MARK: Spreading

    @Test func energyIsSpreadInProportionToTime() {
        let b = Self.buckets("2026-11-01T10:00:00+05:30", "2026-11-01T13:00:00+05:30", .hour)
        let intervals = [
            // 10:50 to 11:10: 20 Wh, half in each hour.
            Breakdown.Interval(start: Self.at("2026-11-01T10:50:00+05:30"), end: Self.at("2026-11-01T11:10:00+05:30"), energyWh: 20),
            // Inside one hour.
            Breakdown.Interval(start: Self.at("2026-11-01T12:00:00+05:30"), end: Self.at("2026-11-01T12:00:30+05:30"), energyWh: 1.5),
            // Starts before the range: only the part inside counts (a quarter of it).
            Breakdown.Interval(start: Self.at("2026-11-01T09:30:00+05:30"), end: Self.at("2026-11-01T10:10:00+05:30"), energyWh: 40),
            // No duration: counts where it is.
            Breakdown.Interval(start: Self.at("2026-11-01T12:59:59+05:30"), end: Self.at("2026-11-01T12:59:59+05:30"), energyWh: 2),
            // Entirely outside.
            Breakdown.Interval(start: Self.at("2026-11-01T13:00:00+05:30"), end: Self.at("2026-11-01T13:30:00+05:30"), energyWh: 99),
        ]
        let totals = Breakdown.spread(intervals, over: b)
        #expect(totals.count == 3)
        #expect(abs(totals[0] - 20) < 1e-9)   // 10 + 40/4
        #expect(abs(totals[1] - 10) < 1e-9)
        #expect(abs(totals[2] - 3.5) < 1e-9)
    }

    @Test func spreadingAcrossMidnightSplitsByTime() {
        // 21:00 to 03:00 local, 600 Wh: 300 Wh on each local date (docs/ledger.md rule 7).
        let b = Self.buckets("2026-11-01T00:00:00+05:30", "2026-11-03T00:00:00+05:30", .day)
        let interval = Breakdown.Interval(start: Self.at("2026-11-01T21:00:00+05:30"), end: Self.at("2026-11-02T03:00:00+05:30"), energyWh: 600)
        let totals = Breakdown.spread([interval], over: b)
        #expect(totals == [300, 300])
        #expect(Breakdown.spread([interval], over: []) == [])
    }

    @Test func spreadingConservesEnergyInsideTheRange() {
        let b = Self.buckets("2026-11-01T00:00:00+05:30", "2026-11-02T00:00:00+05:30", .hour)
        var intervals: [Breakdown.Interval] = []
        var t = Self.at("2026-11-01T00:00:00+05:30")
        var expected = 0.0
        for i in 0..<2000 {
            let length = EpochMillis(17_000 + (i * 7919) % 60_000)
            let energy = Double((i * 31) % 97) / 10
            intervals.append(Breakdown.Interval(start: t, end: t + length, energyWh: energy))
            let inside = max(0, min(t + length, b.last!.end) - t)
            expected += energy * Double(inside) / Double(length)
            t += length
        }
        let total = Breakdown.spread(intervals, over: b).reduce(0, +)
        #expect(abs(total - expected) < 1e-6)
    }

    // MARK: Switch shares

    static let switches = [
        DeviceInfo.Switch(name: "lights-front", ratedW: 120),
        DeviceInfo.Switch(name: "lights-back", ratedW: 120),
        DeviceInfo.Switch(name: "ceiling-fans", ratedW: 300),
        DeviceInfo.Switch(name: "projector", ratedW: nil),
    ]

    @Test func switchesOnShareInProportionToRatedPower() {
        let shares = Breakdown.switchShares(energyWh: 42, state: .positions([true, false, true, false]), switches: Self.switches)
        #expect(shares == [12, 0, 30, 0])
        let named = Breakdown.switchShares(energyWh: 24, state: .named(["lights-front": true, "lights-back": true, "projector": false]),
                                           switches: Self.switches)
        #expect(named == [12, 12, 0, 0])
        // A shorter array than the registry: the missing switches are off.
        #expect(Breakdown.switchShares(energyWh: 10, state: .positions([false, true]), switches: Self.switches) == [0, 10, 0, 0])
    }

    @Test func energyThatCannotBeAttributed() {
        // Nothing on.
        #expect(Breakdown.switchShares(energyWh: 5, state: .positions([false, false]), switches: Self.switches) == nil)
        #expect(Breakdown.switchShares(energyWh: 5, state: .named([:]), switches: Self.switches) == nil)
        // A switch without rated_w is on: its draw is unknown.
        #expect(Breakdown.switchShares(energyWh: 5, state: .positions([true, false, false, true]), switches: Self.switches) == nil)
        // A switch the registry does not describe is on (by position or by name).
        #expect(Breakdown.switchShares(energyWh: 5, state: .positions([true, false, false, false, true]), switches: Self.switches) == nil)
        #expect(Breakdown.switchShares(energyWh: 5, state: .named(["lights-front": true, "relay_99": true]), switches: Self.switches) == nil)
        // ...but one that is off does not matter.
        #expect(Breakdown.switchShares(energyWh: 5, state: .named(["lights-front": true, "relay_99": false]), switches: Self.switches) == [5, 0, 0, 0])
        // No state, or no switches described.
        #expect(Breakdown.switchShares(energyWh: 5, state: nil, switches: Self.switches) == nil)
        #expect(Breakdown.switchShares(energyWh: 5, state: .positions([true]), switches: []) == nil)
        // Every switch on is rated 0 W.
        #expect(Breakdown.switchShares(energyWh: 5, state: .positions([true]), switches: [.init(name: "x", ratedW: 0)]) == nil)
    }

    @Test func switchTotalsAddUp() {
        var totals = Breakdown.SwitchTotals(switches: Self.switches)
        totals.add(energyWh: 42, durationMillis: 30_000, state: .positions([true, false, true]))
        totals.add(energyWh: 10, durationMillis: 30_000, state: .positions([false, true]))
        totals.add(energyWh: 7, durationMillis: 60_000, state: nil)
        totals.add(energyWh: 3, durationMillis: 30_000, state: .positions([true, false, false, true]))
        #expect(totals.energyWh == [12, 10, 30, 0])
        #expect(totals.unattributedWh == 10)
        #expect(totals.totalWh == 62)
        #expect(totals.onMillis == [60_000, 30_000, 30_000, 30_000])
        #expect(abs(totals.energyWh.reduce(0, +) + totals.unattributedWh - totals.totalWh) < 1e-9)
    }

    // MARK: Changes

    @Test func changesAndPercentages() {
        let up = Breakdown.change(current: 150, previous: 100)
        #expect(up.absolute == 50 && up.percent == 50)
        let down = Breakdown.change(current: 75, previous: 100)
        #expect(down.absolute == -25 && down.percent == -25)
        let fromZero = Breakdown.change(current: 10, previous: 0)
        #expect(fromZero.absolute == 10 && fromZero.percent == nil)
        let unknown = Breakdown.change(current: nil, previous: 3)
        #expect(unknown.absolute == nil && unknown.percent == nil)
        #expect(Breakdown.rounded(0.1 + 0.2, 3) == 0.3)
        #expect(Breakdown.rounded(-0.0001, 3).sign == .plus)
    }
}

@Suite("device-breakdown fallback from the ledger")
struct LedgerDayTests {
    @Test func aDayNotAggregatedYetIsSummedFromItsEntries() {
        let start = nov5, end = nov5 + 24 * hour
        var day = Breakdown.LedgerDay()
        day.add(start: start, end: start + 6 * hour, energyWh: 600, billable: true, confidence: .high, dayStart: start, dayEnd: end)
        day.add(start: start + 6 * hour, end: start + 12 * hour, energyWh: 900, billable: false, confidence: .low, dayStart: start, dayEnd: end)
        day.add(start: start + 12 * hour, end: start + 12 * hour, energyWh: 5, billable: true, confidence: .medium, dayStart: start, dayEnd: end)
        day.add(start: start + 13 * hour, end: start + 14 * hour, energyWh: 1, billable: true, confidence: nil, dayStart: start, dayEnd: end)
        #expect(day.energyWh == 606)
        #expect(day.entries == 4 && day.high == 1 && day.medium == 1 && day.low == 2)
        #expect(day.coverage(dayStart: start, dayEnd: end) == 13.0 / 24)
        // Time outside the day does not count, and coverage never exceeds 1.
        var over = Breakdown.LedgerDay()
        over.add(start: start - hour, end: end + hour, energyWh: 1, billable: true, confidence: .high, dayStart: start, dayEnd: end)
        over.add(start: start, end: end, energyWh: 1, billable: true, confidence: .high, dayStart: start, dayEnd: end)
        #expect(over.coverage(dayStart: start, dayEnd: end) == 1)
    }
}
