import AutoVoltCore
import AutoVoltMongo
@testable import AutoVoltService
import Foundation
import Testing

/// The page renderer alone (pure): numbers, escaping, and what a card carries.
@Suite("dashboard page rendering")
struct DashboardPageTests {
    static func summary(_ rooms: [(String, Double)]) -> SummaryResult {
        SummaryResult(scope: "campus", period: "2026-12-02", periodType: "day", startDate: "2026-12-02", endDate: "2026-12-02",
                      kwh: rooms.reduce(0) { $0 + $1.1 }, energyWh: rooms.reduce(0) { $0 + $1.1 } * 1000, cost: nil, currency: nil,
                      devices: rooms.count, coverage: 1, days: 1, daysElapsed: 1,
                      byClassroom: rooms.map { ClassroomSummary(classroom: $0.0, kwh: $0.1, energyWh: $0.1 * 1000, cost: 8.5 * $0.1, currency: "INR",
                                                                devices: 1, coverage: 1, days: 1) })
    }

    static func data(rooms: [(String, Double)], alarms: [AlarmRecord] = []) throws -> DashboardData {
        let zone = try #require(TimeZone(identifier: "Asia/Kolkata"))
        let figures = AnalyticsQueries.DeviceDayFigures(["energy_wh": 1500.0, "confidence": ["high": 10, "medium": 1, "low": 0]])
        return DashboardData(
            date: try #require(CivilDate("2026-12-02")), isToday: false, generatedAt: 1_796_300_000_000, timeZone: zone,
            day: summary(rooms), month: MonthFigures(kwh: 3, energyWh: 3000, cost: nil, currency: nil, devices: rooms.count), yesterdaySoFarKwh: nil,
            hourly: Dictionary(uniqueKeysWithValues: rooms.map { ($0.0, [Double](repeating: $0.1 * 1000 / 24, count: 24)) }),
            devices: rooms.map { .init(esp32Name: "dev-\($0.0)", classroom: $0.0, figures: figures) },
            presence: [:], registered: Dictionary(uniqueKeysWithValues: rooms.map { ($0.0, 1) }), classroomOf: [:],
            tickets: [], alarms: alarms, tariffs: [])
    }

    @Test func fixedDecimalsMatchPrintf() {
        var rng = SystemRandomNumberGenerator()
        for _ in 0..<20_000 {
            let v = Double.random(in: -1e7...1e7, using: &rng) / [1, 10, 1000, 1e6][Int.random(in: 0..<4, using: &rng)]
            for digits in 0...4 {
                let printf = String(format: "%.\(digits)f", v)
                // printf rounds the binary value half to even; a tie can only differ in the last digit.
                let ours = DashboardPage.fixed(v, digits)
                #expect(ours == printf || abs((Double(ours) ?? .nan) - (Double(printf) ?? .nan)) <= pow(10, -Double(digits)) * 1.0001,
                        "\(v) with \(digits) decimals: \(ours) vs \(printf)")
            }
        }
        #expect(DashboardPage.fixed(0.0005, 3) == "0.001" && DashboardPage.fixed(-0.0004, 3) == "0.000" && DashboardPage.fixed(12, 0) == "12")
    }

    @Test func namesAreEscapedAndCardsCarryTheirFigures() throws {
        let hostile = #"<script>alert("x")</script>"#
        let alarm = AlarmRecord(["_id": "r@x@1", "rule": .string(hostile), "esp32_name": "dev-1", "classroom": .string(hostile),
                                 "severity": "high", "status": "active", "last_value": 1.0])
        let html = DashboardPage.render(try Self.data(rooms: [(hostile, 1.25), ("CSE-301", 2.5)], alarms: [alarm]))
        #expect(!html.contains("<script>alert"), "a classroom name must never become markup")
        #expect(html.contains("&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"))
        #expect(html.contains(#"data-classroom="CSE-301" data-kwh="2.5""#))
        #expect(html.contains("2.500 kWh") && html.contains("3.750 kWh"))
        // Exactly one script element, embedded; no external reference of any kind.
        #expect(html.components(separatedBy: "<script>").count == 2 && !html.contains("src="))
    }

    @Test func manyClassroomsStackEightAndGroupTheRest() throws {
        let rooms = (0..<30).map { ("R\($0)", Double($0 + 1)) }
        let html = DashboardPage.render(try Self.data(rooms: rooms))
        #expect(html.contains("22 other classrooms"))
        #expect(html.components(separatedBy: "class=card ").count - 1 == 30, "every classroom keeps its card")
    }
}
