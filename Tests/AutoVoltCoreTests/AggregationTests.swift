import AutoVoltCore
import Foundation
import Testing

/// 2026-11-05T00:00+05:30
let nov5: EpochMillis = 1_793_817_000_000
let hour: EpochMillis = 3_600_000

func tariff(_ id: String, _ price: Double, from: EpochMillis, classroom: String? = nil, created: EpochMillis = 0) -> Tariff {
    Tariff(id: id, costPerKwh: price, currency: "INR", effectiveFrom: from, classroom: classroom, createdAt: created)
}

@Suite("tariffs and aggregation")
struct AggregationTests {
    @Test func classroomTariffBeatsTheGlobalOne() {
        let book = TariffBook([tariff("g", 7, from: 0), tariff("c", 9, from: nov5 - 10 * 24 * hour, classroom: "CSE-301"),
                               tariff("g2", 8, from: nov5)])
        #expect(book.tariff(classroom: "CSE-301", at: nov5 + hour)?.id == "c")
        #expect(book.tariff(classroom: "EEE-105", at: nov5 + hour)?.id == "g2")
        #expect(book.tariff(classroom: "EEE-105", at: nov5 - hour)?.id == "g")
        #expect(TariffBook([]).tariff(classroom: "x", at: nov5) == nil)
    }

    @Test func aCorrectionIsANewerVersionWithTheSameEffectiveTime() {
        let book = TariffBook([tariff("old", 7, from: nov5, created: 1), tariff("fix", 7.5, from: nov5, created: 2)])
        #expect(book.tariff(classroom: "x", at: nov5)?.id == "fix")
    }

    @Test func costIsEnergyInKWhTimesThePrice() {
        let price = TariffBook([tariff("g", 7.5, from: 0)]).price(energyWh: 2000, classroom: "x", start: nov5, end: nov5 + hour)
        #expect(price.cost == 15)
        #expect(price.versionIDs == ["g"])
    }

    @Test func aTariffChangeInsideAnIntervalSplitsItsCostByTime() {
        let book = TariffBook([tariff("a", 6, from: 0), tariff("b", 10, from: nov5 + 12 * hour)])
        // 1 kWh used evenly from 11:00 to 13:00: half at 6, half at 10.
        let price = book.price(energyWh: 1000, classroom: "x", start: nov5 + 11 * hour, end: nov5 + 13 * hour)
        #expect(abs((price.cost ?? 0) - 8) < 1e-9)
        #expect(price.versionIDs == ["a", "b"])
    }

    @Test func energyBeforeAnyTariffHasNoCost() {
        let book = TariffBook([tariff("a", 6, from: nov5 + 12 * hour)])
        let price = book.price(energyWh: 1000, classroom: "x", start: nov5, end: nov5 + hour)
        #expect(price.cost == nil && price.unpricedWh == 1000)
    }

    @Test func dailyFiguresSumBillableEntriesWithCoverageAndConfidence() {
        var calendar = LocalCalendar(timeZone: kolkata)
        let entries = [
            AggregateEntry(start: nov5, end: nov5 + 6 * hour, deltaWh: 600, billable: true, confidence: .high),
            AggregateEntry(start: nov5 + 6 * hour, end: nov5 + 12 * hour, deltaWh: 900, billable: false, confidence: .low),
        ]
        let day = Aggregator.daily(date: CivilDate("2026-11-05")!, esp32Name: "d", classroom: "x", entries: entries,
                                   tariffs: TariffBook([tariff("g", 8, from: 0)]), calendar: &calendar)
        #expect(day.energyWh == 600)
        #expect(day.cost == 4.8)
        #expect(day.coverage == 0.5)
        #expect(day.confidence == [.high: 1, .low: 1])
        #expect(day.overlapMillis == 0)
    }

    /// What a statement shows as tariff segments: the day's energy and cost per version, a
    /// change at 13:00 splitting an entry by time; they add up to the day's figures.
    @Test func dailyFiguresCarryTheEnergyAndCostOfEachTariffVersion() {
        var calendar = LocalCalendar(timeZone: kolkata)
        let entries = [
            AggregateEntry(start: nov5 + 10 * hour, end: nov5 + 12 * hour, deltaWh: 400, billable: true, confidence: .high),
            AggregateEntry(start: nov5 + 12 * hour, end: nov5 + 14 * hour, deltaWh: 600, billable: true, confidence: .high),
        ]
        let day = Aggregator.daily(date: CivilDate("2026-11-05")!, esp32Name: "d", classroom: "x", entries: entries,
                                   tariffs: TariffBook([tariff("a", 8, from: 0), tariff("b", 10, from: nov5 + 13 * hour)]), calendar: &calendar)
        #expect(day.costSegments.map(\.costVersionID) == ["a", "b"])
        #expect(day.costSegments.map(\.energyWh) == [700, 300])
        #expect(day.costSegments.map(\.costPerKwh) == [8, 10])
        #expect(abs(day.costSegments.map(\.cost).reduce(0, +) - (day.cost ?? 0)) < 1e-12)
        #expect(abs((day.cost ?? 0) - (0.7 * 8 + 0.3 * 10)) < 1e-12)
    }

    /// Live entries never overlap; when some do (a defect), the day says by how much, in any
    /// order of the entries, and the overlap does not count twice as coverage.
    @Test func overlappingEntriesAreMeasuredAndNotCoveredTwice() {
        var calendar = LocalCalendar(timeZone: kolkata)
        let entries = [
            AggregateEntry(start: nov5, end: nov5 + 6 * hour, deltaWh: 600, billable: true, confidence: .high),
            AggregateEntry(start: nov5 + 5 * hour, end: nov5 + 7 * hour, deltaWh: 10, billable: true, confidence: .high),
            AggregateEntry(start: nov5 + 6 * hour, end: nov5 + 12 * hour, deltaWh: 900, billable: true, confidence: .high),
        ]
        for order in [entries, entries.reversed(), [entries[1], entries[0], entries[2]]] {
            let day = Aggregator.daily(date: CivilDate("2026-11-05")!, esp32Name: "d", classroom: "x", entries: order,
                                       tariffs: TariffBook([]), calendar: &calendar)
            #expect(day.overlapMillis == 2 * hour)
            #expect(day.coverage == 0.5)
        }
    }

    /// Aggregator.daily prices through precomputed segments; TariffBook.price is the plain
    /// per-entry lookup. Over random tariff histories (global and classroom versions, changes
    /// inside entries, days before any tariff) both must give the same figures.
    @Test func dailyPricingAgreesWithPricingEachEntry() {
        for seed in 0..<300 {
            var rng = SplitMix64(seed: UInt64(seed))
            var versions: [Tariff] = []
            for i in 0..<Int.random(in: 0...6, using: &rng) {
                let from = nov5 + EpochMillis(Int.random(in: -30...30, using: &rng)) * hour
                let classroom = Bool.random(using: &rng) ? "x" : (Bool.random(using: &rng) ? nil : "y")
                versions.append(tariff("t\(i)", Double(Int.random(in: 1...20, using: &rng)), from: from, classroom: classroom,
                                       created: EpochMillis(i)))
            }
            let book = TariffBook(versions)
            var entries: [AggregateEntry] = []
            var time = nov5 + EpochMillis(Int.random(in: 0...600, using: &rng)) * 1000
            while time < nov5 + 24 * hour {
                let end = min(time + EpochMillis(Int.random(in: 1...7_200, using: &rng)) * 1000, nov5 + 24 * hour)
                entries.append(AggregateEntry(start: time, end: end, deltaWh: Double(Int.random(in: 0...500, using: &rng)),
                                              billable: Int.random(in: 0..<10, using: &rng) > 0,
                                              confidence: Confidence.allCases.randomElement(using: &rng) ?? .high))
                time = end + EpochMillis(Int.random(in: 0...1, using: &rng)) * 600_000
            }
            var calendar = LocalCalendar(timeZone: TimeZone(identifier: "Asia/Kolkata")!)
            let day = Aggregator.daily(date: CivilDate("2026-11-05")!, esp32Name: "d", classroom: "x", entries: entries,
                                       tariffs: book, calendar: &calendar)
            var cost = 0.0, unpriced = 0.0, energy = 0.0
            var ids: [String] = []
            var currency: String?
            var confidence: [Confidence: Int] = [:]
            for entry in entries {
                confidence[entry.confidence, default: 0] += 1
                guard entry.billable else { continue }
                energy += entry.deltaWh
                let price = book.price(energyWh: entry.deltaWh, classroom: "x", start: entry.start, end: entry.end)
                cost += price.cost ?? 0
                unpriced += price.unpricedWh
                for id in price.versionIDs where !ids.contains(id) { ids.append(id) }
                currency = currency ?? price.currency
            }
            #expect(abs(day.energyWh - energy) < 1e-9 * max(1, energy), "seed \(seed)")
            #expect(abs(day.unpricedWh - unpriced) < 1e-9 * max(1, unpriced), "seed \(seed)")
            if unpriced > 1e-9 {
                #expect(day.cost == nil, "seed \(seed)")
            } else {
                #expect(abs((day.cost ?? .nan) - cost) < 1e-9 * max(1, cost), "seed \(seed)")
            }
            #expect(day.costVersionIDs == ids, "seed \(seed)")
            #expect(day.currency == currency, "seed \(seed)")
            #expect(day.confidence == confidence, "seed \(seed)")
        }
    }

    @Test func monthIsTheSumOfItsDaysAndUnknownIfAnyDayIs() {
        func day(_ d: Int, _ wh: Double, _ cost: Double?) -> DailyFigures {
            DailyFigures(date: CivilDate(year: 2026, month: 11, day: d), esp32Name: "d", classroom: "x", energyWh: wh, cost: cost,
                         currency: "INR", costVersionIDs: [], coverage: 1, confidence: [:], entries: 1, unpricedWh: 0)
        }
        #expect(Aggregator.monthly(month: "2026-11", days: [day(1, 1000, 7), day(2, 2000, 14)]).cost == 21)
        #expect(Aggregator.monthly(month: "2026-11", days: [day(1, 1000, 7), day(2, 2000, nil)]).cost == nil)
        #expect(Aggregator.monthly(month: "2026-11", days: [day(1, 1000, 7), day(2, 0, nil)]).cost == 7)
    }

    @Test func monthBoundaryIsLocalMidnight() {
        var calendar = LocalCalendar(timeZone: kolkata)
        // 2026-11-30T23:30+05:30 is still November locally, though it is 18:00 UTC.
        let lateNovember = calendar.startOfDay(CivilDate("2026-12-01")!) - 30 * 60_000
        #expect(Aggregator.monthKey(calendar.date(of: lateNovember)) == "2026-11")
        #expect(Aggregator.monthKey(calendar.date(of: lateNovember + 31 * 60_000)) == "2026-12")
    }
}

@Suite("scheduler decisions")
struct ScheduleTests {
    let schedule = Schedule(reconcileAt: (2, 0), dayCloseDelayMinutes: 5, lookbackDays: 3)

    func due(_ now: EpochMillis, done: Set<String> = []) -> [String] {
        var calendar = LocalCalendar(timeZone: kolkata)
        return schedule.due(now: now, calendar: &calendar, done: done).map(\.id)
    }

    @Test func aNightDayCloseThenReconciliation() {
        let midnight = nov5 // 2026-11-05 00:00 local
        #expect(!due(midnight - 60_000, done: ["day_close:2026-11-02", "reconcile:2026-11-02", "day_close:2026-11-03", "reconcile:2026-11-03"]).contains("day_close:2026-11-04"))
        let done: Set<String> = ["day_close:2026-11-02", "reconcile:2026-11-02", "day_close:2026-11-03", "reconcile:2026-11-03"]
        #expect(due(midnight + 6 * 60_000, done: done) == ["day_close:2026-11-04"])
        #expect(due(midnight + 2 * hour + 60_000, done: done.union(["day_close:2026-11-04"])) == ["reconcile:2026-11-04"])
        #expect(due(midnight + 3 * hour, done: done.union(["day_close:2026-11-04", "reconcile:2026-11-04"])).isEmpty)
    }

    @Test func aWorkerThatWasDownCatchesUpOldestFirst() {
        let jobs = due(nov5 + 3 * hour)
        #expect(jobs == ["day_close:2026-11-02", "reconcile:2026-11-02", "day_close:2026-11-03", "reconcile:2026-11-03",
                         "day_close:2026-11-04", "reconcile:2026-11-04"])
    }

    /// On the 1st, after the last day of the month is closed and reconciled, the drafts of the
    /// month's statements; once, and never on another day.
    @Test func statementDraftsOnTheFirstAfterTheMonthsLastDay() {
        let december1 = nov5 + 26 * 24 * hour // 2026-12-01 00:00 local
        let jobs = due(december1 + 3 * hour + 60_000)
        #expect(jobs.suffix(3) == ["day_close:2026-11-30", "reconcile:2026-11-30", "statements:2026-12-01"], "\(jobs)")
        #expect(!due(december1 + 2 * hour + 30 * 60_000).contains("statements:2026-12-01"), "not before AUTOVOLT_STATEMENT_AT")
        #expect(!due(december1 + 3 * hour + 60_000, done: ["statements:2026-12-01"]).contains("statements:2026-12-01"))
        #expect(!due(nov5 + 3 * hour).contains { $0.hasPrefix("statements") })
        var calendar = LocalCalendar(timeZone: kolkata)
        let late = Schedule(reconcileAt: (2, 0), statementAt: (6, 30), dayCloseDelayMinutes: 5, lookbackDays: 3)
        #expect(late.due(now: december1 + 6 * hour, calendar: &calendar, done: []).allSatisfy { $0.kind != .statements })
        #expect(late.due(now: december1 + 7 * hour, calendar: &calendar, done: []).last?.id == "statements:2026-12-01")
    }
}
