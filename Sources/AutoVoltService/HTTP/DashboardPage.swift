import AutoVoltCore
import Foundation

/// The dashboard as one server-rendered HTML page: inline SVG charts, and the little style and
/// script it has embedded here (no CDN, no external font: the campus server has no internet).
/// Pure: `render` turns `DashboardData` into text. Each card carries its figures as `data-`
/// attributes too, so a test (or a script) can compare them with the API's.
public enum DashboardPage {
    public static func render(_ d: DashboardData) -> String {
        var html = HTML()
        html.head(title: "AutoVolt: \(d.date)")
        html.raw("<header><h1>AutoVolt campus energy</h1><form method=get action=\"/\"><label>Date <input type=date name=date value=\"\(d.date)\"></label> <button>Show</button></form></header><main>")

        // Campus header
        let day = d.day
        html.raw("<section class=campus id=campus data-kwh=\"\(day.kwh)\" data-cost=\"\(day.cost.map { "\($0)" } ?? "")\" data-month-kwh=\"\(d.month.kwh)\">")
        html.raw("<div class=figure><span class=label>\(d.isToday ? "Today so far" : esc(d.date.description))</span><span class=value>\(kwh(day.kwh))</span><span class=sub>\(money(day.cost, day.currency))</span></div>")
        if let yesterday = d.yesterdaySoFarKwh {
            html.raw("<div class=figure><span class=label>Yesterday, same time</span><span class=value>\(kwh(yesterday))</span><span class=sub>\(delta(day.kwh, yesterday))</span></div>")
        }
        html.raw("<div class=figure><span class=label>\(esc(String(d.date.description.prefix(7)))) so far</span><span class=value>\(kwh(d.month.kwh))</span><span class=sub>\(money(d.month.cost, d.month.currency))</span></div>")
        let online = d.presence.values.filter { $0.online == true }.count
        html.raw("<div class=figure><span class=label>Boards online</span><span class=value>\(online)</span><span class=sub>of \(d.registered.values.reduce(0, +)) registered</span></div>")
        html.raw("<div class=figure><span class=label>Active alarms</span><span class=value>\(d.alarms.count)</span><span class=sub><a href=\"#tickets\">\(d.tickets.total) open ticket\(d.tickets.total == 1 ? "" : "s")</a></span></div>")
        html.raw("</section>")

        // The day's hourly chart, stacked by classroom
        let classrooms = d.hourly.keys.sorted()
        html.raw("<section><h2>Hourly energy, \(esc(d.date.description))</h2>")
        // Eight classrooms stacked (the largest that day), the rest as one grey band: more are unreadable.
        let totals = d.hourly.mapValues { $0.reduce(0, +) }
        let ranked = classrooms.enumerated().sorted { (totals[$0.element] ?? 0) > (totals[$1.element] ?? 0) }
        var stacked = ranked.prefix(ranked.count > 9 ? 8 : 9).map { (name: $0.element, values: d.hourly[$0.element] ?? [], color: color($0.offset)) }
        if ranked.count > 9 {
            var rest: [Double] = []
            for entry in ranked.dropFirst(8) {
                for (i, v) in (d.hourly[entry.element] ?? []).enumerated() {
                    if rest.count <= i { rest.append(0) }
                    rest[i] += v
                }
            }
            stacked.append((name: "\(ranked.count - 8) other classrooms", values: rest, color: "#9aa3ad"))
        }
        html.raw(stackedChart(stacked))
        html.raw("</section>")

        // Classroom cards
        let summaries = Dictionary((day.byClassroom ?? []).map { ($0.classroom, $0) }, uniquingKeysWith: { a, _ in a })
        var onlineBy: [String: Int] = [:]
        for (name, p) in d.presence where p.online == true { onlineBy[d.classroomOf[name] ?? DeviceInfo.unassignedClassroom, default: 0] += 1 }
        let ticketsBy = d.tickets.byClassroom
        let alarmsBy = Dictionary(grouping: d.alarms, by: \.classroom).mapValues(\.count)
        html.raw("<section><h2>Classrooms</h2><div class=cards>")
        for (index, classroom) in classrooms.enumerated() {
            let s = summaries[classroom]
            let series = d.hourly[classroom] ?? []
            html.raw("<article class=card data-classroom=\"\(esc(classroom))\" data-kwh=\"\(s?.kwh ?? 0)\" data-cost=\"\(s?.cost.map { "\($0)" } ?? "")\" data-hourly-wh=\"\(series.reduce(0, +))\">")
            html.raw("<h3><span class=swatch style=\"background:\(color(index))\"></span>\(esc(classroom))</h3>")
            html.raw("<p class=big>\(kwh(s?.kwh ?? 0))</p><p>\(money(s?.cost, s?.currency))</p>")
            html.raw("<p>\(onlineBy[classroom] ?? 0) / \(d.registered[classroom] ?? 0) boards online</p>")
            let alarms = alarmsBy[classroom] ?? 0, tickets = ticketsBy[classroom] ?? 0
            html.raw("<p><span class=\"\(alarms > 0 ? "badge alert" : "badge")\">\(alarms) alarm\(alarms == 1 ? "" : "s")</span> <span class=\"\(tickets > 0 ? "badge warn" : "badge")\">\(tickets) ticket\(tickets == 1 ? "" : "s")</span></p>")
            html.raw(sparkline(series, color: color(index)))
            html.raw("</article>")
        }
        html.raw("</div></section>")

        // Active alarms and open tickets
        html.raw("<section id=alarms><h2>Active alarms</h2>")
        if d.alarms.isEmpty { html.raw("<p class=muted>None.</p>") } else {
            html.table(["Severity", "Rule", "Device", "Classroom", "Raised", "Value", "Acknowledged"], d.alarms.map { a in
                ["<span class=\"badge sev-\(esc(a.severity))\">\(esc(a.severity))</span>", esc(a.rule), deviceLink(a.esp32Name, d.date),
                 esc(a.classroom), esc(local(a.raisedAt, d.timeZone)), a.lastValue.map { fixed($0, 1) } ?? "",
                 a.acknowledgedBy.map { "by \(esc($0))" } ?? "<span class=muted>no</span>"]
            })
        }
        html.raw("</section><section id=tickets><h2>Open review tickets</h2>")
        if d.tickets.groups.isEmpty { html.raw("<p class=muted>None.</p>") } else {
            // By kind, then board, the oldest first: a board with a week of the same finding is one row.
            html.raw("<p class=muted>\(d.tickets.total) open, by kind and board, the oldest first. The nightly reconciliation resolves a ticket when its finding no longer holds.</p>")
            for group in d.tickets.groups {
                html.raw("<h3 class=ticket-kind data-kind=\"\(esc(group.kind))\" data-count=\"\(group.count)\">\(esc(group.kind.replacingOccurrences(of: "_", with: " "))) <span class=\"badge warn\">\(group.count)</span></h3>")
                var rows = group.boards.map { b -> [String] in
                    let days = b.oldestDate == b.newestDate ? esc(b.oldestDate) : "\(esc(b.oldestDate)) to \(esc(b.newestDate))"
                    return [deviceLink(b.esp32Name, d.date), esc(b.classroom), "\(b.count)", days, esc(b.detail)]
                }
                if group.moreBoards > 0 { rows.append(["<span class=muted>and \(group.moreBoards) more boards</span>", "", "", "", ""]) }
                html.table(["Device", "Classroom", "Tickets", "Days", "Latest detail"], rows)
            }
        }
        html.raw("</section>")

        // Devices
        html.raw("<section id=devices><h2>Devices, \(esc(d.date.description))</h2><p class=muted>Click a heading to sort.</p>")
        var rows: [[String]] = []
        var listed = Set<String>()
        for device in d.devices {
            listed.insert(device.esp32Name)
            rows.append(deviceRow(name: device.esp32Name, classroom: device.classroom, kwh: device.figures.kwh,
                                  confidence: device.figures.confidence, presence: d.presence[device.esp32Name], data: d))
        }
        for name in Set(d.presence.keys).union(d.classroomOf.keys).subtracting(listed).sorted() {
            rows.append(deviceRow(name: name, classroom: d.classroomOf[name] ?? DeviceInfo.unassignedClassroom, kwh: 0,
                                  confidence: ConfidenceCounts(), presence: d.presence[name], data: d))
        }
        html.table(["Device", "Classroom", "Online", "Last seen", "Sessions", "Last reading", "kWh", "Confidence (h/m/l)"], rows, sortable: true)
        html.raw("</section>")

        // Tariffs
        html.raw("<section id=tariffs><h2>Tariffs (cost versions)</h2>")
        if d.tariffs.isEmpty { html.raw("<p class=muted>No tariff yet: costs are unknown until one is added.</p>") } else {
            html.table(["Effective from", "Classroom", "Cost per kWh", "Notes", "Added"], d.tariffs.map { t in
                [esc(t.effectiveFrom), esc(t.classroom ?? "all"), "\(fixed(t.costPerKwh, 4)) \(esc(t.currency))", esc(t.notes ?? ""), esc(t.createdAt)]
            })
        }
        html.raw("""
            <form id=tariff-form><h3>Add a tariff</h3>
            <label>Cost per kWh <input name=cost_per_kwh type=number step=any min=0 required></label>
            <label>Effective from <input name=effective_from type=date required></label>
            <label>Classroom <input name=classroom placeholder="all"></label>
            <label>Notes <input name=notes></label>
            <label>API token <input name=token type=password autocomplete=off required></label>
            <button>Add</button> <output id=tariff-result></output>
            <p class=muted>The token is sent with this request only; the page never stores it. Every day and month the tariff reaches is recalculated.</p>
            </form></section>
            """)
        html.raw("</main><footer>Generated \(esc(localTime(d.generatedAt, d.timeZone))) by autovolt-worker · <a href=\"/health\">health</a> · <a href=\"/metrics\">metrics</a></footer>")
        html.script(live: d.isToday)
        return html.text
    }

    public static func renderDevice(_ p: DevicePageData) -> String {
        var html = HTML()
        html.head(title: "AutoVolt: \(p.esp32Name)")
        html.raw("<header><h1><a href=\"/?date=\(p.date)\">AutoVolt</a> / \(esc(p.esp32Name))</h1><form method=get><label>Date <input type=date name=date value=\"\(p.date)\"></label> <button>Show</button></form></header><main>")
        let state = p.presence.map { $0.online == true ? "online" : $0.online == false ? "offline" : "unknown" } ?? "never seen"
        let billable = p.entries.filter(\.billable).reduce(0) { $0 + $1.deltaWh }
        html.raw("<section class=campus data-device=\"\(esc(p.esp32Name))\" data-ledger-wh=\"\(billable)\">")
        html.raw("<div class=figure><span class=label>Classroom</span><span class=value>\(esc(p.classroom))</span></div>")
        html.raw("<div class=figure><span class=label>State</span><span class=value>\(state)</span><span class=sub>\(p.presence?.sessions ?? 0) sessions</span></div>")
        html.raw("<div class=figure><span class=label>Ledger \(p.date)</span><span class=value>\(kwh(billable / 1000))</span><span class=sub>\(p.entries.count) entries</span></div></section>")
        html.raw("<section><h2>Ledger of \(p.date)</h2>")
        html.raw(ledgerChart(p))
        let marked = p.entries.filter { !$0.reasons.isEmpty }
        if marked.isEmpty { html.raw("<p class=muted>No resets, rollbacks, gaps or glitches.</p>") } else {
            html.table(["From", "To", "Wh", "Confidence", "Marked", "Billable"], marked.prefix(200).map { e in
                [localTime(e.start, p.timeZone), localTime(e.end, p.timeZone), fixed(e.deltaWh, 3), esc(e.confidence),
                 e.reasons.map { "<span class=\"badge \(Self.markerClass($0))\">\(esc($0))</span>" }.joined(separator: " "), e.billable ? "yes" : "no"]
            })
        }
        if p.entriesTruncated { html.raw("<p class=muted>First \(DevicePageData.entryLimit) entries shown.</p>") }
        html.raw("</section><section><h2>Last readings</h2>")
        html.table(["Device time", "Received", "Counter Wh", "Power W", "Clock"], p.readings.map { r in
            [localTime(r.deviceTime, p.timeZone), localTime(r.receivedAt, p.timeZone), fixed(r.energyWh, 3),
             r.powerW.map { fixed($0, 1) } ?? "", esc(r.clock)]
        })
        html.raw("</section><section><h2>Rejected messages</h2>")
        if p.rejects.isEmpty { html.raw("<p class=muted>None.</p>") } else {
            html.table(["Received", "Reason", "Detail"], p.rejects.map { [localTime($0.receivedAt, p.timeZone), esc($0.reason), esc($0.detail)] })
        }
        html.raw("</section><section><h2>Alarms</h2>")
        if p.alarms.isEmpty { html.raw("<p class=muted>None.</p>") } else {
            html.table(["Severity", "Rule", "Status", "Raised", "Cleared", "Value"], p.alarms.map { a in
                ["<span class=\"badge sev-\(esc(a.severity))\">\(esc(a.severity))</span>", esc(a.rule), esc(a.status),
                 esc(local(a.raisedAt, p.timeZone)), esc(a.clearedAt.map { local($0, p.timeZone) } ?? ""), a.lastValue.map { fixed($0, 1) } ?? ""]
            })
        }
        html.raw("</section></main>")
        html.script(live: false)
        return html.text
    }

    // MARK: Pieces

    static func deviceRow(name: String, classroom: String, kwh value: Double, confidence: ConfidenceCounts,
                          presence: DashboardData.Presence?, data d: DashboardData) -> [String] {
        let state = presence.map { $0.online == true ? "<span class=\"badge ok\">online</span>" : $0.online == false ? "<span class=\"badge alert\">offline</span>" : "<span class=badge>unknown</span>" } ?? "<span class=badge>never seen</span>"
        return [deviceLink(name, d.date), esc(classroom), state, presence?.lastSeenAt.map { localTime($0, d.timeZone) } ?? "",
                "\(presence?.sessions ?? 0)", presence?.lastTelemetryAt.map { localTime($0, d.timeZone) } ?? "",
                fixed(value, 3), "\(confidence.high)/\(confidence.medium)/\(confidence.low)"]
    }

    static func markerClass(_ reason: String) -> String {
        switch reason {
        case "counter_reset", "counter_rollback", "reboot": "alert"
        case "glitch_skipped", "implausible_power", "counter_stuck_with_power": "warn"
        default: ""
        }
    }

    static func deviceLink(_ name: String, _ date: CivilDate) -> String {
        "<a href=\"/devices/\(esc(name.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? name))?date=\(date)\">\(esc(name))</a>"
    }

    static let palette = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"]
    static func color(_ index: Int) -> String { palette[index % palette.count] }

    /// 24 hourly bars (23 or 25 on no day in Asia/Kolkata, but any zone works), stacked by classroom.
    static func stackedChart(_ series: [(name: String, values: [Double], color: String)]) -> String {
        let hours = series.map(\.values.count).max() ?? 24
        guard hours > 0 else { return "<p class=muted>No data.</p>" }
        var totals = [Double](repeating: 0, count: hours)
        for s in series { for (i, v) in s.values.enumerated() { totals[i] += v } }
        let top = niceCeiling(totals.max() ?? 0)
        let width = 720.0, height = 220.0, left = 64.0, bottom = 20.0
        let barWidth = (width - left) / Double(hours)
        var svg = "<div class=chart-box><svg class=chart viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=img aria-label=\"hourly energy by classroom\">"
        for step in 0...4 {
            let value = top * Double(step) / 4
            let y = height - bottom - (height - bottom - 10) * Double(step) / 4
            svg += "<line x1=\"\(left)\" x2=\"\(width)\" y1=\"\(fmt(y))\" y2=\"\(fmt(y))\" class=grid /><text x=\"\(left - 4)\" y=\"\(fmt(y + 4))\" class=axis text-anchor=end>\(shortWh(value))</text>"
        }
        var base = [Double](repeating: 0, count: hours)
        for s in series {
            for (hour, value) in s.values.enumerated() where value > 0 && top > 0 {
                let h = (height - bottom - 10) * value / top
                let y = height - bottom - (height - bottom - 10) * base[hour] / top - h
                svg += "<rect x=\"\(fmt(left + Double(hour) * barWidth + 1))\" y=\"\(fmt(y))\" width=\"\(fmt(max(1, barWidth - 2)))\" height=\"\(fmt(h))\" fill=\"\(s.color)\"><title>\(esc(s.name)) \(twoDigits(hour)):00 \(fixed(value, 1)) Wh</title></rect>"
                base[hour] += value
            }
        }
        for hour in stride(from: 0, to: hours, by: 3) {
            svg += "<text x=\"\(fmt(left + (Double(hour) + 0.5) * barWidth))\" y=\"\(fmt(height - 5))\" class=axis text-anchor=middle>\(twoDigits(hour))</text>"
        }
        svg += "</svg>"
        let legend = series.map { "<span><span class=swatch style=\"background:\($0.color)\"></span>\(esc($0.name))</span>" }.joined(separator: " ")
        return svg + "</div><p class=legend>\(legend)</p>"
    }

    static func sparkline(_ values: [Double], color: String) -> String {
        guard !values.isEmpty else { return "" }
        let top = max(values.max() ?? 0, 1e-9)
        let w = 240.0 / Double(values.count)
        var svg = "<svg class=spark viewBox=\"0 0 240 40\" aria-hidden=true>"
        for (i, v) in values.enumerated() where v > 0 {
            let h = 38 * v / top
            svg += "<rect x=\"\(fmt(Double(i) * w))\" y=\"\(fmt(40 - h))\" width=\"\(fmt(max(1, w - 1)))\" height=\"\(fmt(h))\" fill=\"\(color)\" />"
        }
        return svg + "</svg>"
    }

    /// The day's ledger as bars of Wh per entry along the day; resets and rollbacks marked red.
    static func ledgerChart(_ p: DevicePageData) -> String {
        guard let first = p.entries.first?.start, let last = p.entries.last?.end, last > first else { return "<p class=muted>No ledger entries that day.</p>" }
        let top = max(p.entries.map(\.deltaWh).max() ?? 0, 1e-9)
        let span = Double(last - first)
        var svg = "<div class=chart-box><svg class=chart viewBox=\"0 0 720 160\" role=img aria-label=\"ledger entries\">"
        for e in p.entries {
            let x = 720 * Double(e.start - first) / span
            let w = max(1, 720 * Double(e.end - e.start) / span)
            let h = max(1, 140 * e.deltaWh / top)
            let marked = e.reasons.contains { ["counter_reset", "counter_rollback", "reboot"].contains($0) }
            svg += "<rect x=\"\(fmt(x))\" y=\"\(fmt(150 - h))\" width=\"\(fmt(w))\" height=\"\(fmt(h))\" class=\"\(marked ? "mark" : e.billable ? "bar" : "nobill")\" />"
            if marked { svg += "<line x1=\"\(fmt(x))\" x2=\"\(fmt(x))\" y1=\"0\" y2=\"150\" class=mark-line><title>\(esc(e.reasons.joined(separator: ", ")))</title></line>" }
        }
        return svg + "</svg></div>"
    }

    // MARK: Formatting

    static func esc(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for c in text.unicodeScalars {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.unicodeScalars.append(c)
            }
        }
        return out
    }

    static func kwh(_ value: Double) -> String { fixed(value, 3) + " kWh" }
    static func money(_ cost: Double?, _ currency: String?) -> String {
        guard let cost else { return "<span class=muted>cost unknown</span>" }
        return "\(fixed(cost, 2)) \(esc(currency ?? ""))"
    }
    static func delta(_ now: Double, _ then: Double) -> String {
        guard then > 0 else { return "" }
        let change = (now - then) / then * 100
        return String(format: "%+.0f%% today", change)
    }
    static func fmt(_ v: Double) -> String { fixed(v, 1) }

    /// `v` with `digits` decimals, rounded half away from zero (String(format:) is ten times
    /// slower, and the page formats thousands of numbers).
    static func fixed(_ v: Double, _ digits: Int) -> String {
        guard v.isFinite else { return "\(v)" }
        let scale = [1.0, 10, 100, 1000, 10_000, 100_000, 1_000_000][max(0, min(6, digits))]
        let scaled = (abs(v) * scale).rounded()
        guard scaled < 9e15 else { return "\(v)" }
        let n = Int64(scaled)
        let unit = Int64(scale)
        var text = (v < 0 && n != 0 ? "-" : "") + String(n / unit)
        if digits > 0 {
            let fraction = String(n % unit)
            text += "." + String(repeating: "0", count: digits - fraction.count) + fraction
        }
        return text
    }

    static func twoDigits(_ n: Int) -> String { n < 10 ? "0\(n)" : "\(n)" }
    static func shortWh(_ wh: Double) -> String { wh >= 1000 ? fixed(wh / 1000, 1) + " kWh" : fixed(wh, 0) + " Wh" }
    static func niceCeiling(_ v: Double) -> Double {
        guard v > 0 else { return 1 }
        let magnitude = pow(10, floor(log10(v)))
        for step in [1.0, 2, 2.5, 5, 10] where step * magnitude >= v { return step * magnitude }
        return 10 * magnitude
    }
    static func localTime(_ millis: EpochMillis, _ zone: TimeZone) -> String {
        let offset = zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(millis) / 1000))
        let text = ISO8601.format(millis, offsetSeconds: offset) // 2026-12-03T15:43:20.000+05:30
        return String(text.prefix(19)).replacingOccurrences(of: "T", with: " ")
    }
    static func local(_ iso: String, _ zone: TimeZone) -> String { ISO8601.parseMillis(iso).map { localTime($0, zone) } ?? iso }
}

/// The page under construction, with its head, table and script pieces.
struct HTML {
    private(set) var text = ""

    init() { text.reserveCapacity(64 * 1024) }

    mutating func raw(_ s: String) { text += s }

    mutating func head(title: String) {
        raw("<!doctype html><html lang=en><head><meta charset=utf-8><meta name=viewport content=\"width=device-width,initial-scale=1\">")
        raw("<title>\(DashboardPage.esc(title))</title><style>\(Self.style)</style></head><body>")
    }

    mutating func table(_ headings: [String], _ rows: [[String]], sortable: Bool = false) {
        raw("<div class=scroll><table\(sortable ? " class=sortable" : "")><thead><tr>")
        for h in headings { raw("<th>\(DashboardPage.esc(h))</th>") }
        raw("</tr></thead><tbody>")
        for row in rows {
            raw("<tr>")
            for cell in row { raw("<td>\(cell)</td>") }
            raw("</tr>")
        }
        raw("</tbody></table></div>")
    }

    /// Sorting, the tariff form, and live refresh: the alarm stream reloads the page on a raise,
    /// clear or ack; a minute's poll covers new readings.
    mutating func script(live: Bool) {
        raw("<script>\(Self.commonScript)\(live ? Self.liveScript : "")</script></body></html>")
    }

    static let style = """
        :root{--bg:#f6f7f9;--fg:#1d2330;--card:#fff;--muted:#667085;--line:#d9dde3;--accent:#2f6fde;--ok:#18794a;--warn:#975a16;--alert:#c53030;--on-accent:#fff}
        @media (prefers-color-scheme:dark){:root{--bg:#11151c;--fg:#e6e9ef;--card:#1b212b;--muted:#98a2b3;--line:#2d3440;--accent:#7aa7ff;--ok:#5ccf8a;--warn:#f0b95b;--alert:#ff7b7b;--on-accent:#11151c}}
        *{box-sizing:border-box}body{margin:0;font:15px/1.4 system-ui,"DejaVu Sans",sans-serif;background:var(--bg);color:var(--fg)}
        header{display:flex;flex-wrap:wrap;gap:.5rem 1rem;align-items:center;justify-content:space-between;padding:.75rem 1rem;border-bottom:1px solid var(--line);background:var(--card)}
        h1{font-size:1.2rem;margin:0}h2{font-size:1.05rem;margin:1.25rem 0 .5rem}h3{font-size:1rem;margin:0 0 .25rem}
        a{color:var(--accent)}main{padding:0 1rem 2rem;max-width:1200px;margin:0 auto}footer{padding:1rem;color:var(--muted);text-align:center;font-size:.85rem}
        .campus{display:grid;grid-template-columns:repeat(auto-fit,minmax(160px,1fr));gap:.75rem;margin-top:1rem}
        .figure,.card,form#tariff-form{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.75rem}
        .figure .label{display:block;color:var(--muted);font-size:.85rem}.figure .value{display:block;font-size:1.4rem;font-weight:600}.figure .sub{color:var(--muted);font-size:.85rem}
        .cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(240px,1fr));gap:.75rem}.card p{margin:.2rem 0}.card .big{font-size:1.3rem;font-weight:600}
        .swatch{display:inline-block;width:.8em;height:.8em;border-radius:2px;margin-right:.35em;vertical-align:-.05em}
        .badge{display:inline-block;padding:0 .45em;border-radius:999px;border:1px solid var(--line);font-size:.8rem}
        .badge.ok{color:var(--ok);border-color:var(--ok)}.badge.warn,.sev-low{color:var(--warn);border-color:var(--warn)}.badge.alert,.sev-high,.sev-critical{color:var(--alert);border-color:var(--alert)}
        .muted{color:var(--muted)}.chart-box{overflow-x:auto}.chart{display:block;min-width:640px;width:100%;height:auto;background:var(--card);border:1px solid var(--line);border-radius:8px}.spark{width:100%;height:40px}
        .chart .grid{stroke:var(--line)}.chart .axis{fill:var(--muted);font-size:11px}.chart .bar{fill:var(--accent)}.chart .nobill{fill:var(--muted)}.chart .mark{fill:var(--alert)}.chart .mark-line{stroke:var(--alert);stroke-dasharray:3 3}
        .legend{display:flex;flex-wrap:wrap;gap:.75rem;font-size:.85rem}
        .scroll{overflow-x:auto;background:var(--card);border:1px solid var(--line);border-radius:8px}
        table{border-collapse:collapse;width:100%;font-size:.9rem}th,td{text-align:left;padding:.35rem .6rem;border-bottom:1px solid var(--line);white-space:nowrap}
        table.sortable th{cursor:pointer}table.sortable th:after{content:" \\2195";color:var(--muted)}
        form#tariff-form{margin-top:.75rem;display:grid;gap:.5rem;grid-template-columns:repeat(auto-fit,minmax(200px,1fr))}form#tariff-form h3,form#tariff-form p{grid-column:1/-1}
        input,button{font:inherit;padding:.3rem .5rem;border:1px solid var(--line);border-radius:6px;background:var(--bg);color:var(--fg)}label{display:flex;flex-direction:column;font-size:.85rem;gap:.15rem}
        header label{flex-direction:row;align-items:center;gap:.4rem}button{background:var(--accent);color:var(--on-accent);border:0;cursor:pointer}
        @media (max-width:480px){main{padding:0 .5rem 1.5rem}.figure .value{font-size:1.15rem}}
        """

    static let commonScript = """
        document.querySelectorAll('table.sortable').forEach(function(t){t.querySelectorAll('th').forEach(function(th,i){var asc=true;th.addEventListener('click',function(){var rows=Array.from(t.tBodies[0].rows);rows.sort(function(a,b){var x=a.cells[i].textContent,y=b.cells[i].textContent,nx=parseFloat(x),ny=parseFloat(y);var c=(!isNaN(nx)&&!isNaN(ny)&&/^[\\d.\\-]/.test(x))?nx-ny:x.localeCompare(y);return asc?c:-c});asc=!asc;rows.forEach(function(r){t.tBodies[0].appendChild(r)})})})});
        var f=document.getElementById('tariff-form');if(f){f.addEventListener('submit',function(e){e.preventDefault();var d=new FormData(f),o=document.getElementById('tariff-result');var body={cost_per_kwh:parseFloat(d.get('cost_per_kwh')),effective_from:d.get('effective_from')};if(d.get('classroom'))body.classroom=d.get('classroom');if(d.get('notes'))body.notes=d.get('notes');fetch('/api/power-analytics/cost-versions',{method:'POST',headers:{'Content-Type':'application/json','Authorization':'Bearer '+d.get('token')},body:JSON.stringify(body)}).then(function(r){return r.json().then(function(j){o.textContent=r.ok?('added; '+j.recalculated+' aggregates recalculated'):(j.error||r.status);if(r.ok){f.reset();setTimeout(function(){location.reload()},800)}})}).catch(function(err){o.textContent=String(err)});f.elements.token.value=''})}
        """

    static let liveScript = """
        (function(){var reload=function(){location.reload()};if(window.EventSource){var s=new EventSource('/api/power-analytics/alarms/stream');['raise','clear','ack'].forEach(function(k){s.addEventListener(k,reload)})}setTimeout(reload,60000)})();
        """
}
