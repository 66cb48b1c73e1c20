import AutoVoltCore
import AutoVoltMongo
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// Issue 11 §1: the dashboard's figures are the API's (cards = charts), it loads nothing from
/// outside, and a real browser renders it.
@Suite("integration: dashboard", .serialized)
struct DashboardTests {
    static let registry = """
        [[device]]
        esp32_name = "dash-a1"
        classroom = "CSE-301"

        [[device]]
        esp32_name = "dash-a2"
        classroom = "CSE-301"

        [[device]]
        esp32_name = "dash-b1"
        classroom = "MECH-210"
        """

    /// The artifacts directory of this run (screenshots), kept after the tests.
    static var artifacts: URL {
        let url = packageRoot.appendingPathComponent(".build/test-artifacts")
        try? FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }

    func get(_ url: String) async throws -> (status: Int, headers: [String: String], body: String) {
        let (data, response) = try await URLSession.shared.data(from: try #require(URL(string: url)))
        let http = response as? HTTPURLResponse
        var headers: [String: String] = [:]
        for (k, v) in http?.allHeaderFields ?? [:] { if let k = k as? String, let v = v as? String { headers[k.lowercased()] = v } }
        return (http?.statusCode ?? 0, headers, String(decoding: data, as: UTF8.self))
    }

    func json(_ text: String) -> [String: Any] { (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:] }

    /// `name="value"` attributes of the element that has `data-classroom="classroom"`.
    func attributes(of classroom: String, in html: String) -> [String: String] {
        guard let range = html.range(of: "data-classroom=\"\(classroom)\"") else { return [:] }
        let start = html[..<range.lowerBound].lastIndex(of: "<") ?? range.lowerBound
        let tag = html[start...].prefix { $0 != ">" }
        var found: [String: String] = [:]
        let regex = /([a-z-]+)="([^"]*)"/
        for match in tag.matches(of: regex) { found[String(match.1)] = String(match.2) }
        return found
    }

    @Test func cardsEqualTheAPIAndABrowserRendersThePage() async throws {
        let rig = try Rig()
        let file = rig.stateDirectory.deletingLastPathComponent().appendingPathComponent("dash-\(UUID().uuidString).toml")
        try Self.registry.write(to: file, atomically: true, encoding: .utf8)
        let port = freeTCPPort()
        try rig.startWorker(extra: ["AUTOVOLT_HTTP_ADDR": "127.0.0.1:\(port)", "AUTOVOLT_DEVICES": file.path])
        // Readings of one local day: 20 minutes of three boards, power varying by board.
        var calendar = LocalCalendar(timeZone: try #require(TimeZone(identifier: "Asia/Kolkata")))
        let base = EpochMillis(baseTime) * 1000
        let date = calendar.date(of: base)
        let dayStart = calendar.startOfDay(date)
        // From the first minute of that day: 20 minutes from `base` would cross local midnight
        // when the tests run just before it.
        let start = (dayStart + 60_000) / 1000
        var messages: [(topic: String, payload: String)] = []
        for (device, wattHoursPerStep) in [("dash-a1", 5.0), ("dash-a2", 2.5), ("dash-b1", 8.0)] {
            for step in 0..<40 {
                messages.append(("autovolt/\(device)/telemetry",
                                 #"{"esp32_name":"\#(device)","timestamp":\#(start + Int64(step) * 30),"energy_wh_total":\#(100 + wattHoursPerStep * Double(step)),"switch_state":[1]}"#))
            }
        }
        try rig.publisher().publish(messages)
        #expect(rig.waitForCount("daily_aggregates", 3, filter: ["date": .string(date.description)], timeout: 60))
        // The aggregates settle once every entry is in (39 per board).
        #expect(eventually(timeout: 60) {
            let docs = (try? rig.client.find("daily_aggregates", filter: ["date": .string(date.description)], limit: 10)) ?? []
            return docs.count == 3 && docs.allSatisfy { ($0["entries"]?.intValue ?? 0) == 39 }
        })
        #expect(await HTTPHealthTests.waitForHTTP(URLSession.shared, port))

        let page = try await get("http://127.0.0.1:\(port)/?date=\(date)")
        #expect(page.status == 200 && page.headers["content-type"]?.hasPrefix("text/html") == true)
        #expect(page.headers["content-security-policy"]?.contains("default-src 'none'") == true)
        #expect(page.headers["server-timing"]?.contains("render;dur=") == true)
        // Nothing from outside: no external script, style, font or image.
        for external in ["src=\"http", "href=\"http", "<link", "@import", "url(http", "//cdn"] {
            #expect(!page.body.contains(external), "\(external)")
        }

        let summary = json(try await get("http://127.0.0.1:\(port)/api/power-analytics/summary?date=\(date)").body)
        let byClassroom = (summary["by_classroom"] as? [[String: Any]]) ?? []
        #expect(byClassroom.count == 2)
        for row in byClassroom {
            let classroom = try #require(row["classroom"] as? String)
            let card = attributes(of: classroom, in: page.body)
            #expect(Double(card["data-kwh"] ?? "") == row["kwh"] as? Double, "\(classroom): card \(card), API \(row)")
            // The card's chart adds up to the timeline API's hourly buckets for that classroom.
            let timeline = json(try await get("http://127.0.0.1:\(port)/api/power-analytics/timeline?classroom=\(classroom)&start=\(date)&end=\(date)&bucket=hour").body)
            let chartWh = try #require(Double(card["data-hourly-wh"] ?? ""))
            let apiWh = try #require(timeline["energy_wh"] as? Double)
            #expect(abs(chartWh - apiWh) < 1e-6, "\(classroom): chart \(chartWh) Wh, timeline \(apiWh) Wh")
        }
        let campus = attributes(of: "campus", in: page.body.replacingOccurrences(of: "id=campus data-kwh", with: "data-classroom=\"campus\" data-kwh"))
        #expect(Double(campus["data-kwh"] ?? "") == summary["kwh"] as? Double, "\(campus) vs \(summary)")
        let monthly = json(try await get("http://127.0.0.1:\(port)/api/power-analytics/monthly?month=\(date.description.prefix(7))").body)
        let monthKwh = ((monthly["total"] as? [String: Any])?["current"] as? [String: Any])?["kwh"] as? Double
        #expect(monthKwh != nil && Double(campus["data-month-kwh"] ?? "") == monthKwh, "\(campus) vs \(monthly)")
        // Energy known: 39 steps of 5, 2.5 and 8 Wh = 195, 97.5 and 312 Wh.
        #expect(abs((summary["energy_wh"] as? Double ?? 0) - 604.5) < 1e-6, "\(summary)")

        // A real browser: the classroom totals are in the rendered DOM, and screenshots are kept.
        let dom = try chromium(["--dump-dom", "http://127.0.0.1:\(port)/?date=\(date)"])
        #expect(dom.contains("CSE-301") && dom.contains("MECH-210"))
        for row in byClassroom {
            let kwh = DashboardPage.kwh(row["kwh"] as? Double ?? -1)
            #expect(dom.contains(kwh), "\(kwh) not in the rendered page")
        }
        #expect(dom.contains("dash-b1") && dom.contains("</svg>"))
        for (name, width) in [("dashboard.png", 1280), ("dashboard-375.png", 375)] {
            let shot = Self.artifacts.appendingPathComponent(name)
            try? FileManager.default.removeItem(at: shot)
            _ = try chromium(["--window-size=\(width),1800", "--screenshot=\(shot.path)", "http://127.0.0.1:\(port)/?date=\(date)"])
            let size = (try? FileManager.default.attributesOfItem(atPath: shot.path)[.size] as? Int) ?? 0
            #expect(size > 10_000, "\(name): \(size) bytes")
        }

        let device = try await get("http://127.0.0.1:\(port)/devices/dash-a1?date=\(date)")
        #expect(device.status == 200 && device.body.contains("Last readings") && device.body.contains("data-ledger-wh=\"195.0\""), "\(device.body.prefix(600))")
        #expect(try await get("http://127.0.0.1:\(port)/devices/bad%20name").status == 400)
        #expect(try await get("http://127.0.0.1:\(port)/?date=yesterday").status == 400)
    }

    /// Runs Debian's chromium headless; its stdout (the DOM with --dump-dom).
    func chromium(_ arguments: [String]) throws -> String {
        let profile = FileManager.default.temporaryDirectory.appendingPathComponent("chromium-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: profile) }
        let process = unmaskedProcess("/usr/bin/chromium",
                                      ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--user-data-dir=\(profile.path)"] + arguments)
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("chromium-out-\(UUID().uuidString)")
        FileManager.default.createFile(atPath: out.path, contents: nil)
        defer { try? FileManager.default.removeItem(at: out) }
        process.standardOutput = try FileHandle(forWritingTo: out)
        process.standardError = FileHandle.nullDevice
        try process.run()
        process.waitUntilExit()
        return (try? String(contentsOf: out, encoding: .utf8)) ?? ""
    }
}
