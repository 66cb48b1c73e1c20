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
            tickets: DashboardData.OpenTickets(), alarms: alarms, tariffs: [])
    }

    /// A week of the same finding on 30 boards is one group of 30 rows at most 12 shown, not 210
    /// lines; kinds and boards the oldest first; every ticket counted in the totals.
    @Test func openTicketsAreGroupedByKindThenBoardBoundedAndOldestFirst() throws {
        var rows: [(kind: String, board: DashboardData.BoardTickets)] = []
        for board in 0..<30 {
            rows.append((kind: "silent_device", board: .init(esp32Name: "b\(board)", classroom: board < 10 ? "CSE-301" : "EEE-105", count: 7,
                                                              oldestDate: "2026-11-\(10 + board % 9)", newestDate: "2026-11-20",
                                                              detail: "no telemetry all day")))
        }
        rows.append((kind: "counter_reset", board: .init(esp32Name: "b3", classroom: "CSE-301", count: 1, oldestDate: "2026-11-02",
                                                         newestDate: "2026-11-02", detail: "<b>1</b> counter reset(s)")))
        var tickets = DashboardData.OpenTickets.grouped(rows.shuffled())
        #expect(tickets.total == 30 * 7 + 1)
        #expect(tickets.byClassroom == ["CSE-301": 71, "EEE-105": 140])
        #expect(tickets.groups.map(\.kind) == ["counter_reset", "silent_device"])
        let silent = try #require(tickets.groups.last)
        #expect(silent.count == 210 && silent.boards.count == 12 && silent.moreBoards == 18)
        #expect(silent.boards.map(\.oldestDate) == silent.boards.map(\.oldestDate).sorted())
        #expect(silent.boards.first?.esp32Name == "b0")
        var data = try Self.data(rooms: [("CSE-301", 1)])
        data.tickets = tickets
        let html = DashboardPage.render(data)
        #expect(html.contains("211 open tickets"))
        #expect(html.contains(#"data-kind="silent_device" data-count="210""#))
        #expect(html.contains("and 18 more boards"))
        #expect(html.contains("2026-11-10 to 2026-11-20"))
        #expect(!html.contains("<b>1</b>") && html.contains("&lt;b&gt;1&lt;/b&gt;"))
        tickets = DashboardData.OpenTickets.grouped([])
        data.tickets = tickets
        #expect(DashboardPage.render(data).contains("0 open tickets"))
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
