import ArgumentParser
import AutoVoltCore
import AutoVoltMongo
import AutoVoltService
import Foundation

// `summary`, `timeline`, `device-breakdown`, `monthly`: the read queries of the HTTP API on the
// command line. `--json` prints the document the API answers; without it, a readable table.
// Bad parameters exit 64 with one line on stderr (the same message as the API's 400), a
// database failure exits 1.

/// Parses with the shared parameter parser; a bad value exits 64 (EX_USAGE) with one line.
private func queryParameters<P>(_ parse: () throws(AnalyticsParameterError) -> P) throws -> P {
    do {
        return try parse()
    } catch {
        throw fail(error.message, ExitCode.validationFailure)
    }
}

/// Opens the database of AUTOVOLT_DATABASE_URL, runs `body` over its analytics storage, closes
/// it. An unusable URL exits 78, a database failure 1.
private func runQuery<T>(_ config: WorkerConfig, _ command: String, _ body: (any AnalyticsStorage) throws -> T) throws -> T {
    _ = makeLogger(config)
    let database: WorkerDatabase
    do {
        database = try WorkerDatabase.open(config, poolSize: 1)
    } catch let error as ConfigError {
        throw fail(error.description, Exit.config)
    } catch {
        throw fail("\(command) failed: \(error)", Exit.failure)
    }
    defer { database.close() }
    do {
        return try body(database.analyticsStorage())
    } catch {
        throw fail("\(command) failed: \("\(error)".replacingOccurrences(of: "\n", with: " "))", Exit.failure)
    }
}

private func printQueryJSON<T: Encodable>(_ value: T) {
    StandardStreams.out(AnalyticsQueries.json(value, pretty: true) + Data("\n".utf8))
}

struct Summary: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "summary",
        abstract: "Energy, cost and coverage of a local day or month, for a classroom or the campus.",
        discussion: "From daily_aggregates; a month is the sum of its days. Same JSON as GET /api/power-analytics/summary.")

    @OptionGroup var options: ConfigOptions

    @Option(help: "Classroom (default: the whole campus, with a row per classroom).")
    var classroom: String?

    @Option(help: "Required: a local date YYYY-MM-DD or a month YYYY-MM.")
    var date: String?

    @Flag(help: "Print JSON (the HTTP API's document).")
    var json = false

    func run() throws {
        let config = try options.load()
        let p = try queryParameters { () throws(AnalyticsParameterError) in
            try AnalyticsQueries.summaryParameters(classroom: classroom, date: date)
        }
        let result = try runQuery(config, "summary") { storage in
            try AnalyticsQueries.summary(storage: storage, config: config, parameters: p)
        }
        if json { printQueryJSON(result) } else { print(QueryText.summary(result), terminator: "") }
    }
}

struct Timeline: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "timeline",
        abstract: "Energy per local hour or day between two instants, for a classroom or the campus.",
        discussion: """
            --start and --end are ISO 8601 instants with an offset (2026-11-01T10:00:00+05:30) or local
            dates YYYY-MM-DD (an end date includes that whole day). Buckets default to hours up to two
            days and days beyond; at most \(AnalyticsQueries.maxTimelineDays) days (\(AnalyticsQueries.maxHourlyTimelineDays) with hours).
            From the live billable ledger entries, each spread over the buckets in proportion to time.
            """)

    @OptionGroup var options: ConfigOptions

    @Option(help: "Classroom (default: the whole campus).")
    var classroom: String?

    @Option(help: "Required: first instant or local date.")
    var start: String?

    @Option(help: "Required: end instant (exclusive) or last local date (inclusive).")
    var end: String?

    @Option(help: "hour or day.")
    var bucket: String?

    @Flag(help: "Print JSON (the HTTP API's document).")
    var json = false

    func run() throws {
        let config = try options.load()
        let p = try queryParameters { () throws(AnalyticsParameterError) in
            try AnalyticsQueries.timelineParameters(classroom: classroom, start: start, end: end, bucket: bucket,
                                                    timeZone: config.timeZone)
        }
        let result = try runQuery(config, "timeline") { storage in
            try AnalyticsQueries.timeline(storage: storage, config: config, parameters: p)
        }
        if json { printQueryJSON(result) } else { print(QueryText.timeline(result), terminator: "") }
    }
}

struct DeviceBreakdown: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "device-breakdown",
        abstract: "Per device of a local day: energy, cost, coverage, confidence, and energy per switch.",
        discussion: """
            Each ledger interval's energy is shared among the switches on at its start reading in
            proportion to their rated_w (config/devices.toml); intervals with nothing on, a switch on
            without rated_w, or an unknown switch on count as unattributed.
            """)

    @OptionGroup var options: ConfigOptions

    @Option(help: "Required: a local date YYYY-MM-DD.")
    var date: String?

    @Option(help: "Classroom (default: every device).")
    var classroom: String?

    @Flag(help: "Print JSON (the HTTP API's document).")
    var json = false

    func run() throws {
        let config = try options.load()
        let p = try queryParameters { () throws(AnalyticsParameterError) in
            try AnalyticsQueries.deviceBreakdownParameters(classroom: classroom, date: date)
        }
        let result = try runQuery(config, "device-breakdown") { storage in
            try AnalyticsQueries.deviceBreakdown(storage: storage, config: config, parameters: p)
        }
        if json { printQueryJSON(result) } else { print(QueryText.deviceBreakdown(result), terminator: "") }
    }
}

struct Monthly: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "monthly",
        abstract: "Month over month per classroom: energy and cost of a month and the one before, and the change.",
        discussion: "From monthly_aggregates. Same JSON as GET /api/power-analytics/monthly.")

    @OptionGroup var options: ConfigOptions

    @Option(help: "Required: the month YYYY-MM.")
    var month: String?

    @Option(help: "Classroom (default: every classroom).")
    var classroom: String?

    @Flag(help: "Print JSON (the HTTP API's document).")
    var json = false

    func run() throws {
        let config = try options.load()
        let p = try queryParameters { () throws(AnalyticsParameterError) in
            try AnalyticsQueries.monthlyParameters(classroom: classroom, month: month)
        }
        let result = try runQuery(config, "monthly") { storage in
            try AnalyticsQueries.monthly(storage: storage, config: config, parameters: p)
        }
        if json { printQueryJSON(result) } else { print(QueryText.monthly(result), terminator: "") }
    }
}

// MARK: - Readable output

enum QueryText {
    static func number(_ v: Double, _ decimals: Int) -> String { String(format: "%.\(decimals)f", v) }
    static func money(_ cost: Double?, _ currency: String?) -> String {
        guard let cost else { return "unknown" }
        return number(cost, 2) + (currency.map { " \($0)" } ?? "")
    }
    static func percent(_ fraction: Double) -> String { number(fraction * 100, 1) + " %" }
    static func signed(_ v: Double, _ decimals: Int) -> String { (v > 0 ? "+" : "") + number(v, decimals) }

    /// Columns padded to their widest cell; `right` columns are right-aligned.
    static func table(_ header: [String], _ rows: [[String]], right: Set<Int> = []) -> String {
        let all = [header] + rows
        let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        return all.map { row in
            row.indices.map { column in
                let cell = row[column], padding = String(repeating: " ", count: widths[column] - cell.count)
                return right.contains(column) ? padding + cell : cell + padding
            }.joined(separator: "  ").replacingOccurrences(of: "\\s+$", with: "", options: .regularExpression)
        }.joined(separator: "\n") + "\n"
    }

    static func summary(_ r: SummaryResult) -> String {
        var text = "\(r.scope), \(r.period) (\(r.periodType)): \(number(r.kwh, 3)) kWh, cost \(money(r.cost, r.currency)), "
        text += "\(r.devices) devices, \(r.days) of \(r.daysElapsed) days with data, coverage \(percent(r.coverage))\n"
        if let rows = r.byClassroom, !rows.isEmpty {
            text += "\n" + table(["classroom", "kWh", "cost", "devices", "days", "coverage"], rows.map {
                [$0.classroom, number($0.kwh, 3), money($0.cost, $0.currency), "\($0.devices)", "\($0.days)", percent($0.coverage)]
            }, right: [1, 2, 3, 4, 5])
        }
        return text
    }

    static func timeline(_ r: TimelineResult) -> String {
        var text = "\(r.scope), \(r.start) to \(r.end), \(r.bucket) buckets (\(r.timeZone)): \(number(r.kwh, 3)) kWh\n\n"
        text += table([r.bucket, "kWh"], r.buckets.map { [$0.label, number($0.kwh, 3)] }, right: [1])
        return text
    }

    static func deviceBreakdown(_ r: DeviceBreakdownResult) -> String {
        var text = "\(r.scope), \(r.date): \(number(r.kwh, 3)) kWh, cost \(money(r.cost, r.currency)), \(r.devices.count) devices\n\n"
        text += table(["device", "classroom", "kWh", "cost", "coverage", "high/medium/low", "source"], r.devices.map {
            [$0.esp32Name, $0.classroom, number($0.kwh, 3), money($0.cost, $0.currency), percent($0.coverage),
             "\($0.confidence.high)/\($0.confidence.medium)/\($0.confidence.low)", $0.source]
        }, right: [2, 3, 4])
        for device in r.devices where device.ledgerWh > 0 {
            text += "\n\(device.esp32Name) by switch (\(number(device.ledgerWh / 1000, 3)) kWh in the ledger):\n"
            var rows = device.switches.map {
                [$0.name, $0.ratedW.map { number($0, 0) + " W" } ?? "-", number($0.kwh, 3), percent($0.share), number($0.onHours, 2) + " h"]
            }
            rows.append(["unattributed", "", number(device.unattributed.kwh, 3), percent(device.unattributed.share), ""])
            text += table(["switch", "rated", "kWh", "share", "on"], rows, right: [1, 2, 3, 4])
        }
        return text
    }

    static func monthly(_ r: MonthlyResult) -> String {
        func row(_ c: MonthComparison) -> [String] {
            [c.classroom, number(c.current.kwh, 3), number(c.previous.kwh, 3), signed(c.change.kwh, 3),
             c.change.energyPercent.map { signed($0, 1) + " %" } ?? "-",
             money(c.current.cost, c.current.currency), money(c.previous.cost, c.previous.currency),
             c.change.cost.map { signed($0, 2) } ?? "-"]
        }
        var text = "\(r.scope), \(r.month) against \(r.previousMonth)\n\n"
        let header = ["classroom", "kWh \(r.month)", "kWh \(r.previousMonth)", "change", "change %",
                      "cost \(r.month)", "cost \(r.previousMonth)", "cost change"]
        var rows = r.classrooms.map(row)
        if r.scope == "campus" { rows.append(row(r.total)) }
        text += table(header, rows, right: Set(1...7))
        return text
    }
}
