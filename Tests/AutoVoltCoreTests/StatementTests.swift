import Foundation
import PropertyBased
import Testing
@testable import AutoVoltCore

@Suite("statements: fixed point, builder, diff, CSV")
struct StatementTests {
    static func day(_ name: String, _ classroom: String, _ date: Int, energy: Double, rate: Double = 7.5, tariff: String = "v1",
                    version: Int64 = 1, cost: Double? = nil, segments: [CostSegment]? = nil) -> StatementDay {
        let priced = cost ?? energy / 1000 * rate
        return StatementDay(aggregateID: "2026-11-\(date)|\(name)", version: version, date: CivilDate(year: 2026, month: 11, day: date),
                            esp32Name: name, classroom: classroom, energyWh: energy, cost: priced, currency: "INR", coverage: 1,
                            confidence: [.high: 10],
                            segments: segments ?? [CostSegment(costVersionID: tariff, costPerKwh: rate, energyWh: energy, cost: priced)])
    }

    static func statement(_ days: [StatementDay], id: String = "2026-11.campus.v1", createdAt: EpochMillis = 0) -> Statement {
        var builder = StatementBuilder(month: "2026-11")
        for d in days { builder.add(d) }
        return builder.finish(id: id, scope: .campus, classrooms: [], version: 1, timeZone: "Asia/Kolkata", createdAt: createdAt, tickets: [])
    }

    @Test func fixedPointTextIsExactAndRoundsHalfAwayFromZero() {
        #expect(FixedPoint.wh(1_234_567) == "1234.567")
        #expect(FixedPoint.kwh(1_234_567) == "1.235")
        #expect(FixedPoint.kwh(1_234_499) == "1.234")
        #expect(FixedPoint.moneyText(125_005, decimals: 2) == "12.50")
        #expect(FixedPoint.moneyText(125_050, decimals: 2) == "12.51")
        #expect(FixedPoint.moneyText(-125_050, decimals: 2) == "-12.51")
        #expect(FixedPoint.moneyText(7, decimals: 4) == "0.0007")
        #expect(FixedPoint.moneyText(0, decimals: 2) == "0.00")
        #expect(FixedPoint.moneyText(-4, decimals: 2) == "0.00")
        #expect(FixedPoint.energy(0.1 + 0.2) == 300)
        // A stored value that is not a number, or absurdly large, is clamped, never a trap.
        #expect(FixedPoint.energy(.nan) == 0)
        #expect(FixedPoint.energy(.infinity) == FixedPoint.energy(1e9) && FixedPoint.money(-1e300) == -FixedPoint.money(1e9))
        #expect(FixedPoint.money(2.675) == 26_750)
    }

    @Test func apportionAddsUpToTheTotal() async {
        await propertyCheck(count: 500, input: Gen.double(in: 0...500).array(of: 1...5)) { parts in
            let total = FixedPoint.money(parts.reduce(0, +))
            let units = FixedPoint.apportion(total: total, parts: parts, scale: FixedPoint.moneyScale)
            #expect(units.reduce(0, +) == total)
            for (unit, part) in zip(units, parts) { #expect(abs(Double(unit) - part * 10_000) <= Double(parts.count) + 1) }
        }
    }

    /// The issue's property: a statement's totals are the sum of its lines and of the daily
    /// aggregates it rests on (in the units the aggregates are counted in), in any order.
    @Test func totalsEqualTheLinesAndTheAggregatesItRestsOn() async {
        let dayGen = zip(Gen.int(in: 0...6), Gen.int(in: 1...30), Gen.double(in: 0...50_000), Gen.int(in: 0...2), Gen.int(in: 0...5))
        await propertyCheck(count: 300, input: dayGen.array(of: 1...60)) { raw in
            var seen = Set<String>()
            let days: [StatementDay] = raw.compactMap { device, date, energy, tariffs, unpricedTenths in
                guard seen.insert("\(device)|\(date)").inserted else { return nil }
                let name = "esp-\(device)", classroom = "C-\(device % 3)"
                if tariffs == 0 {
                    return Self.day(name, classroom, date, energy: energy)
                }
                // A day priced by two versions, or partly unpriced.
                let unpriced = tariffs == 2 ? energy * Double(unpricedTenths) / 10 : 0
                let first = (energy - unpriced) * 0.4, second = (energy - unpriced) * 0.6
                var d = Self.day(name, classroom, date, energy: energy, cost: unpriced > 0 ? nil : first / 1000 * 7.5 + second / 1000 * 9,
                                 segments: [CostSegment(costVersionID: "v1", costPerKwh: 7.5, energyWh: first, cost: first / 1000 * 7.5),
                                            CostSegment(costVersionID: "v2", costPerKwh: 9, energyWh: second, cost: second / 1000 * 9)])
                d.unpricedWh = unpriced
                return d
            }
            let s = Self.statement(days)
            let reversed = Self.statement(days.reversed())
            #expect(s == reversed, "the order the aggregates come in must not matter")
            let energy = days.map { FixedPoint.energy($0.energyWh) }.reduce(0, +)
            #expect(s.energy == energy)
            #expect(s.lines.map(\.energy).reduce(0, +) == energy)
            #expect(s.days.map(\.energy).reduce(0, +) == energy)
            #expect(s.sources.map(\.energy).reduce(0, +) == energy)
            let unknown = days.contains { $0.cost == nil && FixedPoint.energy($0.energyWh) != 0 }
            if unknown {
                #expect(s.cost == nil)
            } else {
                let cost = days.compactMap { $0.cost.map(FixedPoint.money) }.reduce(0, +)
                #expect(s.cost == cost)
                #expect(s.lines.compactMap(\.cost).reduce(0, +) == cost)
                #expect(s.days.compactMap(\.cost).reduce(0, +) == cost)
                #expect(s.segments.map(\.cost).reduce(0, +) == cost)
            }
            #expect(s.segments.map(\.energy).reduce(0, +) == energy - s.unpriced)
            for line in s.lines { #expect(line.segments.map(\.energy).reduce(0, +) == line.energy - line.unpriced) }
            #expect(s.sources.count == days.count)
            #expect(s.lines.map(\.esp32Name) == s.lines.sorted { ($0.classroom, $0.esp32Name) < ($1.classroom, $1.esp32Name) }.map(\.esp32Name))
        }
    }

    @Test func segmentsSpanTheDatesEachTariffPricedAndMergeAcrossDays() {
        let s = Self.statement([
            Self.day("a", "C", 1, energy: 1000), Self.day("a", "C", 2, energy: 1000),
            Self.day("a", "C", 3, energy: 2000, rate: 9, tariff: "v2"), Self.day("b", "C", 2, energy: 500),
        ])
        #expect(s.segments.map(\.costVersionID) == ["v1", "v2"])
        #expect(s.segments[0].from == CivilDate(year: 2026, month: 11, day: 1) && s.segments[0].to == CivilDate(year: 2026, month: 11, day: 2))
        #expect(s.segments[0].energy == 2_500_000 && s.segments[0].cost == 187_500)
        #expect(s.segments[1].energy == 2_000_000 && s.segments[1].cost == 180_000)
        #expect(s.lines.first { $0.esp32Name == "a" }?.segments.count == 2)
        #expect(s.days.map(\.devices) == [1, 2, 1])
        #expect(s.coverage.deviceDays == 4 && s.coverage.daysInMonth == 30)
    }

    @Test func diffNamesLateReadingsTariffChangesRebuildsAndScope() {
        let old = Self.statement([Self.day("a", "C", 1, energy: 1000), Self.day("b", "C", 1, energy: 1000),
                                  Self.day("c", "C", 1, energy: 1000), Self.day("d", "C", 1, energy: 1000),
                                  Self.day("gone", "C", 1, energy: 5)])
        let new = Self.statement([Self.day("a", "C", 1, energy: 1100, version: 2), Self.day("b", "C", 1, energy: 1000, rate: 9, tariff: "v2", version: 2),
                                  Self.day("c", "C", 1, energy: 900, version: 2), Self.day("d", "C", 1, energy: 1000),
                                  Self.day("new", "C", 2, energy: 10)], id: "2026-11.campus.v2")
        let diff = StatementDiff.compare(old, new, lateReadings: ["a": 3])
        let byName = Dictionary(uniqueKeysWithValues: diff.changes.map { ($0.esp32Name, $0) })
        #expect(byName.keys.sorted() == ["a", "b", "c", "gone", "new"], "d did not change")
        #expect(byName["a"]?.reasons == [.lateReadings] && byName["a"]?.lateReadings == 3)
        #expect(byName["b"]?.reasons == [.tariffChange])
        #expect(byName["b"]?.oldCostVersionIDs == ["v1"] && byName["b"]?.newCostVersionIDs == ["v2"])
        #expect(byName["c"]?.reasons == [.rebuild])
        #expect(byName["gone"]?.reasons == [.removedFromScope])
        #expect(byName["new"]?.reasons == [.addedToScope])
        #expect(byName["a"]?.dates == [CivilDate(year: 2026, month: 11, day: 1)])
        #expect(diff.oldEnergy == old.energy && diff.newEnergy == new.energy)
        #expect(StatementDiff.compare(old, old, lateReadings: [:]).changes.isEmpty)
    }

    @Test func csvIsRFC4180WithOneHeaderAndATotalRow() {
        let s = Self.statement([Self.day("a", "Lab, \"north\"", 1, energy: 1234.5678), Self.day("b", "C", 1, energy: 10)])
        let text = String(decoding: StatementCSV.render(s), as: UTF8.self)
        let rows = text.components(separatedBy: "\r\n")
        #expect(rows.last == "", "every row ends with CRLF")
        #expect(rows.count == 1 + 2 + 1 + 1)
        #expect(rows[0] == StatementCSV.header.joined(separator: ","))
        #expect(!text.replacingOccurrences(of: "\r\n", with: "").contains("\n"))
        #expect(rows.contains { $0.contains(#","Lab, ""north""","#) }, "a field with a comma and quotes is quoted, quotes doubled")
        let total = rows[3].split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        #expect(total[5] == "total")
        #expect(total[8] == "1244.568" && total[9] == "1.245")
        #expect(total[10] == FixedPoint.moneyText(s.cost ?? -1))
    }

    @Test func idsMonthsAndScopes() {
        #expect(Statement.id(month: "2026-11", scope: .campus, version: 1) == "2026-11.campus.v1")
        #expect(Statement.id(month: "2026-11", scope: .classroom("CSE-301"), version: 2) == "2026-11.classroom.CSE-301.v2")
        #expect(Statement.id(month: "2026-11", scope: .group("CSE"), version: 3) == "2026-11.group.CSE.v3")
        #expect(Statement.parseMonth("2026-13") == nil && Statement.parseMonth("2026-1") == nil && Statement.parseMonth("nov") == nil)
        #expect(Statement.parseMonth("2026-+1") == nil && CivilDate("2026-+1-01") == nil && CivilDate("+026-01-01") == nil)
        #expect(Statement.dates(ofMonth: "2028-02")?.last == CivilDate(year: 2028, month: 2, day: 29))
        #expect(Statement.previousMonth(of: CivilDate(year: 2027, month: 1, day: 1)) == "2026-12")
        #expect(Statement.previousMonth(of: CivilDate(year: 2026, month: 12, day: 1)) == "2026-11")
        #expect(StatementScope(kind: "group", name: nil) == nil && StatementScope(kind: "campus", name: nil) == .campus)
    }
}
