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
        let token = "dash-token-\(UUID().uuidString)"
        let tokenFile = rig.stateDirectory.deletingLastPathComponent().appendingPathComponent("token-\(UUID().uuidString)")
        try token.write(to: tokenFile, atomically: true, encoding: .utf8)
        try rig.startWorker(extra: ["AUTOVOLT_HTTP_ADDR": "127.0.0.1:\(port)", "AUTOVOLT_DEVICES": file.path,
                                    "AUTOVOLT_API_TOKEN_FILE": tokenFile.path])
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
        // Only the page's own script runs (by its hash): injected markup could not run code. The
        // browser steps below (sorting, the tariff form) fail if the hash is not the script's.
        #expect(page.headers["content-security-policy"]?.contains("script-src 'sha256-") == true)
        #expect(page.headers["content-security-policy"]?.contains("script-src 'unsafe-inline'") == false)
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

        try await browserBehaviour(url: "http://127.0.0.1:\(port)/?date=\(date)", port: port, token: token)

        let device = try await get("http://127.0.0.1:\(port)/devices/dash-a1?date=\(date)")
        #expect(device.status == 200 && device.body.contains("Last readings") && device.body.contains("data-ledger-wh=\"195.0\""), "\(device.body.prefix(600))")
        #expect(try await get("http://127.0.0.1:\(port)/devices/bad%20name").status == 400)
        #expect(try await get("http://127.0.0.1:\(port)/?date=yesterday").status == 400)
    }

    /// What the issue promises of the page in a browser, measured in one: readable colours in the
    /// light and the dark theme, no sideways scrolling at 375 px, sortable device table, and a
    /// tariff form that sends the token with its request and keeps it nowhere.
    func browserBehaviour(url: String, port: Int, token: String) async throws {
        // Text and background pairs as the browser computed them: body, muted label on a card,
        // a link, each badge colour, and a button.
        let colours = #"""
            JSON.stringify((function(){var card=document.querySelector('.figure'),bg=getComputedStyle(card).backgroundColor;
            function probe(tag,cls){var e=document.createElement(tag);e.className=cls;e.textContent='x';card.appendChild(e);var c=getComputedStyle(e).color;e.remove();return [c,bg]}
            return [[getComputedStyle(document.body).color,getComputedStyle(document.body).backgroundColor],probe('span','muted'),probe('a',''),
            probe('span','badge ok'),probe('span','badge warn'),probe('span','badge alert'),probe('span','badge sev-low'),probe('span','badge sev-critical'),
            (function(){var b=getComputedStyle(document.querySelector('button'));return [b.color,b.backgroundColor]})()]})())
            """#
        for dark in [false, true] {
            let shot = Self.artifacts.appendingPathComponent(dark ? "dashboard-dark.png" : "dashboard-light.png")
            let values = try browser(url, [colours], dark: dark, screenshot: shot)
            let pairs = try #require((try? JSONSerialization.jsonObject(with: Data(((values.first ?? nil) as? String ?? "").utf8))) as? [[String?]])
            let background = try #require(Self.rgb(pairs.first?[1] ?? ""))
            #expect(dark ? Self.luminance(background) < 0.05 : Self.luminance(background) > 0.8, "dark \(dark): background \(pairs)")
            for pair in pairs {
                guard let fg = pair.first.flatMap({ $0 }).flatMap(Self.rgb), let bg = pair.last.flatMap({ $0 }).flatMap(Self.rgb) else {
                    Issue.record("dark \(dark): a colour pair missing: \(pairs)"); continue
                }
                // WCAG AA for normal text.
                #expect(Self.contrast(fg, bg) >= 4.5, "dark \(dark): \(pair) contrast \(Self.contrast(fg, bg))")
            }
        }

        // 375 px: the page itself never scrolls sideways (wide tables scroll in their own box).
        let narrow = try browser(url, ["document.documentElement.scrollWidth", "innerWidth"], width: 375,
                                 screenshot: Self.artifacts.appendingPathComponent("dashboard-375-full.png"))
        let scrollWidth = try #require(narrow.first as? Int, "\(narrow)"), innerWidth = try #require(narrow.last as? Int, "\(narrow)")
        #expect(innerWidth == 375 && scrollWidth <= innerWidth, "375 px: content \(scrollWidth) px wide")

        // Sorting the device table by kWh: ascending, then descending.
        let column = #"JSON.stringify(Array.from(document.querySelectorAll('#devices tbody tr')).map(function(r){return r.cells[0].textContent}))"#
        let click = #"(function(){var th=Array.from(document.querySelectorAll('#devices th')).find(function(h){return h.textContent==='kWh'});th.click();return true})()"#
        let sorted = try browser(url, [column, click, column, click, column]).compactMap { $0 as? String }
        #expect(sorted == [#"["dash-a1","dash-a2","dash-b1"]"#, #"["dash-a2","dash-a1","dash-b1"]"#, #"["dash-b1","dash-a1","dash-a2"]"#], "\(sorted)")

        // The tariff form: sent with the token, which is then nowhere in the page or its storage.
        let submit = #"""
            new Promise(function(resolve){var f=document.getElementById('tariff-form');f.elements.cost_per_kwh.value='9.25';
            f.elements.effective_from.value='2026-01-01';f.elements.notes.value='from the browser';f.elements.token.value='\#(token)';
            var o=document.getElementById('tariff-result');var t0=Date.now();f.requestSubmit();
            (function poll(){if(o.textContent||Date.now()-t0>20000){resolve(JSON.stringify({result:o.textContent,token:f.elements.token.value,
            local:localStorage.length,session:sessionStorage.length,cookie:document.cookie,html:document.documentElement.outerHTML.indexOf('\#(token)')}))}
            else setTimeout(poll,50)})()})
            """#
        let answer = json(try #require(try browser(url, [submit]).first as? String))
        #expect((answer["result"] as? String)?.hasPrefix("added") == true, "\(answer)")
        #expect(answer["token"] as? String == "" && answer["local"] as? Int == 0 && answer["session"] as? Int == 0
                    && answer["cookie"] as? String == "" && answer["html"] as? Int == -1, "\(answer)")
        let tariffs = try await get("http://127.0.0.1:\(port)/api/power-analytics/cost-versions")
        #expect(tariffs.body.contains("from the browser") && tariffs.body.contains("9.25"), "\(tariffs.body)")
    }

    /// Runs `Tests/browser/cdp.py` (Chromium over the DevTools protocol): each step's value.
    func browser(_ url: String, _ steps: [String], width: Int = 1280, dark: Bool = false, screenshot: URL? = nil) throws -> [Any] {
        var arguments = [packageRoot.appendingPathComponent("Tests/browser/cdp.py").path, "--width", "\(width)"]
        if dark { arguments.append("--dark") }
        if let screenshot { arguments += ["--screenshot", screenshot.path] }
        let run = try runCapturing("/usr/bin/python3", arguments + [url] + steps, timeout: 120)
        #expect(run.status == 0, "cdp.py: \(run.stderr)")
        #expect(run.stdout.split(separator: "\n").count == steps.count, "cdp.py printed: \(run.stdout)")
        return run.stdout.split(separator: "\n").compactMap { line -> [String: Any]? in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any]
        }.map { step in
            if let error = step["error"] { Issue.record("browser step failed: \(error)") }
            return step["value"] ?? NSNull()
        }
    }

    /// `rgb(r, g, b)` or `rgba(r, g, b, a)` as 0...1 components.
    static func rgb(_ css: String) -> (Double, Double, Double)? {
        let numbers = css.split(whereSeparator: { !"0123456789.".contains($0) }).compactMap { Double($0) }
        guard css.hasPrefix("rgb"), numbers.count >= 3 else { return nil }
        return (numbers[0] / 255, numbers[1] / 255, numbers[2] / 255)
    }

    /// WCAG 2 relative luminance and contrast ratio.
    static func luminance(_ c: (Double, Double, Double)) -> Double {
        func channel(_ v: Double) -> Double { v <= 0.03928 ? v / 12.92 : pow((v + 0.055) / 1.055, 2.4) }
        return 0.2126 * channel(c.0) + 0.7152 * channel(c.1) + 0.0722 * channel(c.2)
    }
    static func contrast(_ a: (Double, Double, Double), _ b: (Double, Double, Double)) -> Double {
        let (x, y) = (luminance(a), luminance(b))
        return (max(x, y) + 0.05) / (min(x, y) + 0.05)
    }

    /// Runs Debian's chromium headless; its stdout (the DOM with --dump-dom).
    func chromium(_ arguments: [String]) throws -> String {
        let profile = FileManager.default.temporaryDirectory.appendingPathComponent("chromium-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: profile) }
        return try runCapturing("/usr/bin/chromium", ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                                      "--user-data-dir=\(profile.path)"] + arguments, timeout: 120).stdout
    }
}
