import ArgumentParser
import AutoVoltCore
import AutoVoltService
import Foundation

/// `statements generate|freeze|list|show|diff|export`: the month-end routine of the finance office.
struct Statements: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "statements",
        abstract: "Monthly statements: generate a draft, review it, diff it, freeze it, export it.",
        discussion: "A frozen statement and its exports never change; a new generate makes the next version.",
        subcommands: [Generate.self, Freeze.self, List.self, Show.self, Diff.self, Export.self])

    /// Runs a statement command: its own errors are one line with exit 64 (what was asked is
    /// wrong) or 1; configuration and database trouble as for every command.
    static func run<T>(_ options: ConfigOptions, _ what: String, _ body: (StatementStore, WorkerConfig) throws -> T) throws -> T {
        let config = try options.load()
        let logger = makeLogger(config)
        return try withWorkerDatabase(config, what) { db in
            do {
                return try body(StatementStore(storage: db.database.statementStorage(writeConcern: db.writeConcern),
                                               registry: config.devices, timeZone: config.timeZone, logger: logger), config)
            } catch let error as StatementError {
                throw fail("\(what): \(error)", ExitCode(error.exitCode))
            }
        }
    }

    static func now() -> EpochMillis { Int64((Date().timeIntervalSince1970 * 1000).rounded()) }

    static func money(_ units: Int64?, _ currency: String?) -> String {
        units.map { FixedPoint.moneyText($0, decimals: 2) + (currency.map { " \($0)" } ?? "") } ?? "unknown (energy without a tariff)"
    }

    struct Generate: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make the draft statement of a month from the current daily aggregates.",
            discussion: "Version 1, or the next version when the month and scope have a frozen one; an existing draft is replaced.")
        @OptionGroup var options: ConfigOptions
        @Option(help: "YYYY-MM (local months, AUTOVOLT_TIMEZONE).") var month: String
        @Option(help: "Only this classroom.") var classroom: String?
        @Option(help: "A group of classrooms named in the registry ([[group]]).") var group: String?
        @Flag(help: "Print JSON.") var json = false

        func validate() throws {
            guard Statement.parseMonth(month) != nil else { throw ValidationError("--month \"\(month)\" is not YYYY-MM") }
            if classroom != nil, group != nil { throw ValidationError("give --classroom or --group, not both") }
        }

        func run() throws {
            let (statement, summary) = try Statements.run(options, "statements generate") { store, _ in
                let made = try store.generate(month: month, scope: try store.scope(classroom: classroom, group: group), now: Statements.now())
                return (made, store.summary(made))
            }
            if json { return printJSON(summary) }
            print("\(statement.id): \(statement.status.rawValue) version \(statement.version), \(statement.lines.count) devices, "
                  + "\(FixedPoint.kwh(statement.energy)) kWh, cost \(Statements.money(statement.cost, statement.currency)), "
                  + "\(statement.tickets.count) open review tickets")
        }
    }

    struct Freeze: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Freeze a draft: from now on it and its exports never change.")
        @OptionGroup var options: ConfigOptions
        @Argument(help: "The statement's id (statements list).") var id: String
        @Option(help: "Who froze it (default: the login name).") var by: String?
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            let who = by ?? ProcessInfo.processInfo.environment["USER"] ?? "unknown"
            let (statement, summary) = try Statements.run(options, "statements freeze") { store, _ in
                let frozen = try store.freeze(id, by: who, now: Statements.now())
                return (frozen, store.summary(frozen))
            }
            if json { return printJSON(summary) }
            print("\(statement.id): frozen by \(who); \(FixedPoint.kwh(statement.energy)) kWh, cost \(Statements.money(statement.cost, statement.currency))")
            for export in statement.exports { print("  \(export.format.rawValue) sha256 \(export.sha256) (\(export.bytes) bytes)") }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Statements, newest month first.")
        @OptionGroup var options: ConfigOptions
        @Option(help: "Only this month (YYYY-MM).") var month: String?
        @Flag(help: "Print JSON.") var json = false

        func validate() throws {
            if let month, Statement.parseMonth(month) == nil { throw ValidationError("--month \"\(month)\" is not YYYY-MM") }
        }

        func run() throws {
            let list = try Statements.run(options, "statements list") { store, _ in try store.list(month: month) }
            if json { return printJSON(list) }
            if list.isEmpty { return print("no statements\(month.map { " for \($0)" } ?? "")") }
            for s in list {
                let cost = s.cost.map { String(format: "%.2f", $0) + (s.currency.map { " \($0)" } ?? "") } ?? "unknown"
                print("\(s.id)  \(s.status)  \(String(format: "%.3f", s.energyWh / 1000)) kWh  \(cost)"
                      + (s.frozenAt.map { "  frozen \($0) by \(s.frozenBy ?? "?")" } ?? ""))
            }
        }
    }

    struct Show: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One statement: totals, tariff segments and lines.")
        @OptionGroup var options: ConfigOptions
        @Argument(help: "The statement's id.") var id: String
        @Flag(help: "Print JSON (the whole document: lines, days, tickets, the aggregates it rests on).") var json = false

        func run() throws {
            let (s, zone) = try Statements.run(options, "statements show") { store, config in (try store.show(id), config.timeZone) }
            if json { return printJSON(StatementJSON(s, timeZone: zone)) }
            print("\(s.id): \(s.scope), \(s.month), version \(s.version), \(s.status.rawValue)"
                  + (s.frozenBy.map { " by \($0)" } ?? ""))
            print("  energy \(FixedPoint.kwh(s.energy)) kWh, cost \(Statements.money(s.cost, s.currency)); "
                  + "coverage mean \(String(format: "%.1f", s.coverage.mean * 100)) %, \(s.tickets.count) open review tickets")
            for segment in s.segments { print("  tariff \(StatementCSV.tariffText(segment)), cost \(FixedPoint.moneyText(segment.cost, decimals: 2))") }
            for line in s.lines {
                print("  \(line.esp32Name) (\(line.classroom)): \(FixedPoint.kwh(line.energy)) kWh, "
                      + "\(line.cost.map { FixedPoint.moneyText($0, decimals: 2) } ?? "unknown"), \(line.days) days")
            }
        }
    }

    struct Diff: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "What changed between a statement and the current figures, or another version of it.",
            discussion: "Reasons: late_readings (readings of the month received after the statement), tariff_change, "
                + "rebuild (figures moved with no new readings), added_to_scope, removed_from_scope.")
        @OptionGroup var options: ConfigOptions
        @Argument(help: "The statement's id.") var id: String
        @Argument(help: "Another version of the same month and scope (default: the current figures).") var other: String?
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            let diff = try Statements.run(options, "statements diff") { store, _ in try store.diff(id, other: other, now: Statements.now()) }
            if json { return printJSON(StatementDiffJSON(diff)) }
            print("\(diff.from) -> \(diff.to): energy \(FixedPoint.kwh(diff.oldEnergy)) -> \(FixedPoint.kwh(diff.newEnergy)) kWh, "
                  + "cost \(diff.oldCost.map { FixedPoint.moneyText($0, decimals: 2) } ?? "unknown") -> "
                  + "\(diff.newCost.map { FixedPoint.moneyText($0, decimals: 2) } ?? "unknown")")
            if diff.changes.isEmpty { return print("  no device changed") }
            for c in diff.changes {
                let reasons = c.reasons.map { $0 == .lateReadings ? "late readings (\(c.lateReadings))" : $0.rawValue.replacingOccurrences(of: "_", with: " ") }
                print("  \(c.esp32Name) (\(c.classroom)): \(c.oldEnergy.map(FixedPoint.kwh) ?? "-") -> \(c.newEnergy.map(FixedPoint.kwh) ?? "-") kWh, "
                      + "\(c.oldCost.map { FixedPoint.moneyText($0, decimals: 2) } ?? "-") -> \(c.newCost.map { FixedPoint.moneyText($0, decimals: 2) } ?? "-"); "
                      + "\(reasons.joined(separator: ", ")); days \(c.dates.map(\.description).joined(separator: " "))")
            }
        }
    }

    struct ExportReport: Encodable {
        let id, status, format, out: String
        let bytes: Int
        let sha256: String
    }

    struct Export: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Write a statement as CSV, PDF or XLSX.",
            discussion: "A frozen statement's export is the one made when it was frozen, checked against its SHA-256.")
        @OptionGroup var options: ConfigOptions
        @Argument(help: "The statement's id.") var id: String
        @Option(help: "csv, pdf or xlsx.") var format: String
        @Option(help: "The file to write (replaced whole, or not at all).") var out: String
        @Flag(help: "Print JSON: id, status, format, out, bytes, sha256.") var json = false

        func validate() throws {
            guard StatementFormat(rawValue: format) != nil else { throw ValidationError("--format must be csv, pdf or xlsx") }
        }

        func run() throws {
            let chosen = StatementFormat(rawValue: format) ?? .csv
            let (statement, bytes) = try Statements.run(options, "statements export") { store, _ in try store.export(id, format: chosen) }
            // Written beside the target, then renamed over it: a reader never sees half a file.
            let target = URL(fileURLWithPath: out)
            let temporary = target.deletingLastPathComponent().appendingPathComponent(".\(target.lastPathComponent).\(getpid()).partial")
            do {
                try Data(bytes).write(to: temporary)
            } catch {
                throw fail("statements export: cannot write \(out): \((error as NSError).localizedFailureReason ?? error.localizedDescription)", Exit.failure)
            }
            guard rename(temporary.path, target.path) == 0 else {
                let reason = String(cString: strerror(errno))
                try? FileManager.default.removeItem(at: temporary)
                throw fail("statements export: cannot write \(out): \(reason)", Exit.failure)
            }
            let sha = EventHash.sha256Hex(bytes: bytes)
            if json {
                return printJSON(ExportReport(id: statement.id, status: statement.status.rawValue, format: chosen.rawValue, out: out,
                                              bytes: bytes.count, sha256: sha))
            }
            print("\(out): \(statement.id) as \(chosen.rawValue), \(bytes.count) bytes, sha256 \(sha)"
                  + (statement.status == .frozen ? " (as frozen)" : " (draft)"))
        }
    }
}
