import AutoVoltCore
import Foundation
import PropertyBased
import Testing

/// `hourly_wh`: a daily aggregate's billable energy per local hour (Aggregator.daily).
@Suite("hourly energy of a day")
struct HourlyTests {
    let berlin = TimeZone(identifier: "Europe/Berlin")!

    func day(_ text: String, _ entries: [AggregateEntry], zone: TimeZone) -> DailyFigures {
        var calendar = LocalCalendar(timeZone: zone)
        return Aggregator.daily(date: CivilDate(text)!, esp32Name: "d", classroom: "x", entries: entries,
                                tariffs: TariffBook([]), calendar: &calendar)
    }

    @Test func anEntryAcrossAnHourIsSplitByTime() {
        // 10:30 to 11:30 local, 100 Wh: 50 in hour 10, 50 in hour 11; a non-billable entry counts nowhere.
        let figures = day("2026-11-05", [
            AggregateEntry(start: nov5 + 10 * hour + hour / 2, end: nov5 + 11 * hour + hour / 2, deltaWh: 100, billable: true, confidence: .high),
            AggregateEntry(start: nov5 + 12 * hour, end: nov5 + 13 * hour, deltaWh: 900, billable: false, confidence: .low),
            AggregateEntry(start: nov5 + 23 * hour + 59 * 60_000, end: nov5 + 24 * hour, deltaWh: 6, billable: true, confidence: .high),
        ], zone: kolkata)
        #expect(figures.hourlyWh.count == 24)
        #expect(figures.hourlyWh[10] == 50 && figures.hourlyWh[11] == 50)
        #expect(figures.hourlyWh[12] == 0 && figures.hourlyWh[23] == 6)
        #expect(figures.hourlyWh.reduce(0, +) == figures.energyWh)
    }

    @Test func anEntryOfNoDurationCountsInItsHour() {
        let figures = day("2026-11-05", [
            AggregateEntry(start: nov5 + 3 * hour, end: nov5 + 3 * hour, deltaWh: 7, billable: true, confidence: .medium),
        ], zone: kolkata)
        #expect(figures.hourlyWh[3] == 7)
    }

    @Test func daylightSavingDaysHave23And25Hours() {
        var calendar = LocalCalendar(timeZone: berlin)
        for (text, count) in [("2026-03-29", 23), ("2026-10-25", 25), ("2026-10-26", 24)] {
            let start = calendar.startOfDay(CivilDate(text)!)
            let end = calendar.startOfDay(CivilDate(daysSinceEpoch: CivilDate(text)!.daysSinceEpoch + 1))
            // One entry over the whole day: each hour gets its share of time.
            let figures = day(text, [AggregateEntry(start: start, end: end, deltaWh: Double(count) * 10, billable: true, confidence: .high)],
                              zone: berlin)
            #expect(figures.hourlyWh.count == count, "\(text)")
            #expect(figures.hourlyWh.allSatisfy { abs($0 - 10) < 1e-9 }, "\(text)")
            // The hours are the hourly timeline's buckets of that day.
            let buckets = Breakdown.buckets(from: start, to: end, size: .hour, calendar: &calendar)
            #expect(buckets.count == count)
        }
    }

    /// Whatever the entries, the hours sum to the day's energy (to rounding), there is one per
    /// local hour, and none is negative.
    @Test func hoursSumToTheDay() async {
        let zones = [kolkata, berlin]
        let days = ["2026-11-05", "2026-03-29", "2026-10-25"]
        await propertyCheck(count: 300, input: Gen.int(in: 0...5), Gen.int64(in: 0...86_400_000).array(of: 0...60),
                            Gen.double(in: 0...500).array(of: 60...60)) { choice, cuts, energies in
            let zone = zones[choice % 2], text = days[choice % 3]
            var calendar = LocalCalendar(timeZone: zone)
            let start = calendar.startOfDay(CivilDate(text)!)
            let end = calendar.startOfDay(CivilDate(daysSinceEpoch: CivilDate(text)!.daysSinceEpoch + 1))
            let points = ([start, end] + cuts.map { start + $0 % (end - start) }).sorted()
            var entries: [AggregateEntry] = []
            for i in points.indices.dropFirst() {
                entries.append(AggregateEntry(start: points[i - 1], end: points[i], deltaWh: energies[i % energies.count],
                                              billable: i % 7 != 0, confidence: .high))
            }
            let figures = Aggregator.daily(date: CivilDate(text)!, esp32Name: "d", classroom: "x", entries: entries,
                                           tariffs: TariffBook([]), calendar: &calendar)
            let hours = Int((end - start + hour - 1) / hour)
            #expect(figures.hourlyWh.count == hours)
            #expect(abs(figures.hourlyWh.reduce(0, +) - figures.energyWh) <= 1e-9 * max(1, figures.energyWh))
            #expect(figures.hourlyWh.allSatisfy { $0 >= 0 })
            // Each hour equals the plain spread of the billable entries over the timeline's buckets.
            let buckets = Breakdown.buckets(from: start, to: end, size: .hour, calendar: &calendar)
            let spread = Breakdown.spread(entries.filter(\.billable).filter { $0.end > $0.start }
                .map { Breakdown.Interval(start: $0.start, end: $0.end, energyWh: $0.deltaWh) }, over: buckets)
            let instants = entries.filter { $0.billable && $0.end <= $0.start }
            if instants.isEmpty {
                for i in spread.indices { #expect(abs(spread[i] - figures.hourlyWh[i]) <= 1e-6) }
            }
        }
    }
}
