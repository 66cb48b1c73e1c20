import ArgumentParser
import AutoVoltCore
import AutoVoltMongo
import AutoVoltService
import Foundation

/// Prints `value` as JSON (sorted keys, pretty) on stdout.
func printJSON<T: Encodable>(_ value: T) {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
    if let data = try? encoder.encode(value) { print(String(decoding: data, as: UTF8.self)) }
}

/// Runs a one-shot database command with the CLI's exit statuses.
func withDatabase<T>(_ config: WorkerConfig, _ what: String, _ body: (Database) throws -> T) throws -> T {
    try reportingFailures(what) { try body(try Database.open(config)) }
}

/// The same over either backend (AUTOVOLT_DATABASE_URL): the commands whose stores have a
/// PostgreSQL storage.
func withWorkerDatabase<T>(_ config: WorkerConfig, _ what: String,
                           _ body: ((database: WorkerDatabase, writeConcern: WriteConcern)) throws -> T) throws -> T {
    try reportingFailures(what) { try body(try WorkerDatabase.openForCommand(config)) }
}

/// The CLI's exit statuses for a one-shot command: a configuration problem or a foreign database
/// is 78, anything else `WHAT failed: ...` and 1; each one line on stderr.
func reportingFailures<T>(_ what: String, _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let error as ConfigError {
        throw fail(error.description, Exit.config)
    } catch let error as Schema.Conflict {
        throw fail(error.description, Exit.config)
    } catch let error as PostgresSchema.Refusal {
        throw fail(error.description, Exit.config)
    } catch let error as ExitCode {
        throw error
    } catch {
        throw fail("\(what) failed: \(error)", Exit.failure)
    }
}

func changeLines(_ changes: [AggregateChange]) -> [String] {
    changes.map { c in
        let old = c.oldCost.map { String(format: "%.2f", $0) } ?? "null"
        let new = c.newCost.map { String(format: "%.2f", $0) } ?? "null"
        let oldWh = c.oldEnergyWh.map { String(format: "%.3f", $0) } ?? "-"
        return "  \(c.kind) \(c.key) \(c.esp32Name) (\(c.classroom)): energy \(oldWh) -> \(String(format: "%.3f", c.newEnergyWh)) Wh, cost \(old) -> \(new), version \(c.version)"
    }
}

struct CostVersions: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "cost-versions", abstract: "Tariff versions: add one, or list the history.",
        subcommands: [Add.self, List.self])

    struct Add: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a tariff version; every day and month it reaches is recalculated.",
            discussion: "Versions are never edited or deleted: a correction is a new version.")

        @OptionGroup var options: ConfigOptions
        @Option(name: .customLong("cost-per-kwh"), help: "Price of one kWh.") var costPerKwh: Double
        @Option(name: .customLong("effective-from"), help: "YYYY-MM-DD (local midnight) or an ISO 8601 instant.") var effectiveFrom: String
        @Option(help: "Only this classroom (default: every classroom without its own tariff).") var classroom: String?
        @Option(help: "ISO 4217 currency code.") var currency = "INR"
        @Option(help: "Why this version exists.") var notes: String?
        @Flag(help: "Print JSON.") var json = false

        func validate() throws {
            guard costPerKwh.isFinite, costPerKwh >= 0 else { throw ValidationError("--cost-per-kwh must be a number >= 0") }
            guard currency.count == 3, currency.allSatisfy(\.isLetter) else { throw ValidationError("--currency must be a 3-letter code such as INR") }
            guard CivilDate(effectiveFrom) != nil || ISO8601.parseMillis(effectiveFrom) != nil else {
                throw ValidationError("--effective-from \"\(effectiveFrom)\" is not YYYY-MM-DD or an ISO 8601 instant")
            }
        }

        func run() throws {
            let config = try options.load()
            let logger = makeLogger(config)
            let calendar = LocalCalendar(timeZone: config.timeZone)
            let instant = CivilDate(effectiveFrom).map { calendar.startOfDay($0) } ?? ISO8601.parseMillis(effectiveFrom) ?? 0
            do {
                try AggregationStore.checkClassroom(classroom, in: config.devices)
            } catch {
                throw fail("\(error)", ExitCode.validationFailure)
            }
            let result = try withWorkerDatabase(config, "cost-versions add") { db in
                try AggregationStore(storage: db.database.aggregationStorage(writeConcern: db.writeConcern),
                                     registry: config.devices, timeZone: config.timeZone, logger: logger)
                    .addTariff(costPerKwh: costPerKwh, currency: currency.uppercased(), effectiveFrom: instant,
                               classroom: classroom, notes: notes, now: Int64(Date().timeIntervalSince1970 * 1000))
            }
            if json { return printJSON(result) }
            let t = result.tariff
            print("added \(t.id): \(t.costPerKwh) \(t.currency)/kWh from \(t.effectiveFrom) for \(t.classroom ?? "all classrooms")")
            print("\(result.recalculated) aggregates recalculated (each a new version), \(result.changedCount) with changed figures")
            changeLines(result.changes).forEach { print($0) }
            if result.changedCount > result.changes.count { print("(first \(result.changes.count) changes listed)") }
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The tariff history, oldest first.")
        @OptionGroup var options: ConfigOptions
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            let config = try options.load()
            let logger = makeLogger(config)
            let versions = try withWorkerDatabase(config, "cost-versions list") { db in
                try AggregationStore(storage: db.database.aggregationStorage(writeConcern: db.writeConcern),
                                     registry: config.devices, timeZone: config.timeZone, logger: logger).listTariffs().map { TariffDocument($0, timeZone: config.timeZone) }
            }
            if json { return printJSON(versions) }
            if versions.isEmpty { return print("no tariff versions yet: add one with cost-versions add") }
            print("id                                   cost/kWh  currency  effective from            classroom   notes")
            for v in versions {
                print("\(v.id.padding(toLength: 36, withPad: " ", startingAt: 0)) \(String(format: "%8.4f", v.costPerKwh))  \(v.currency.padding(toLength: 8, withPad: " ", startingAt: 0))  \(v.effectiveFrom)  \((v.classroom ?? "all").padding(toLength: 10, withPad: " ", startingAt: 0))  \(v.notes ?? "")")
            }
        }
    }
}

struct Recalculate: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Rebuild daily and monthly aggregates of local dates START...END (inclusive) from the ledger.",
        discussion: "Idempotent in its figures: recalculating again gives the same energy and cost. Every recalculated document gets version + 1, and its previous figures stay in aggregate_history.")

    @OptionGroup var options: ConfigOptions
    @Option(help: "First local date, YYYY-MM-DD.") var start: String
    @Option(help: "Last local date, YYYY-MM-DD (inclusive).") var end: String
    @Option(help: "Only this classroom.") var classroom: String?
    @Option(name: .customLong("esp32-name"), help: "Only this device.") var esp32Name: String?
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        guard let s = CivilDate(start) else { throw ValidationError("--start \"\(start)\" is not a date YYYY-MM-DD") }
        guard let e = CivilDate(end) else { throw ValidationError("--end \"\(end)\" is not a date YYYY-MM-DD") }
        guard s <= e else { throw ValidationError("--end is before --start") }
    }

    func run() throws {
        let config = try options.load()
        let logger = makeLogger(config)
        guard let s = CivilDate(start), let e = CivilDate(end) else { throw ExitCode(64) }
        let report = try withWorkerDatabase(config, "recalculate") { db in
            try AggregationStore(storage: db.database.aggregationStorage(writeConcern: db.writeConcern),
                                 registry: config.devices, timeZone: config.timeZone, logger: logger)
                .recalculate(start: s, end: e, classroom: classroom, esp32Name: esp32Name, now: Int64(Date().timeIntervalSince1970 * 1000))
        }
        if json { return printJSON(report) }
        print("recalculated \(start)...\(end): \(report.recalculated) aggregates (each a new version), \(report.changedCount) with changed figures")
        changeLines(report.changed).forEach { print($0) }
        if report.changedCount > report.changed.count { print("(first \(report.changed.count) changes listed)") }
    }
}

struct Reconcile: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the reconciliation of one local date now (default: yesterday) and print the report.",
        discussion: "Exits 0 even when anomalies are found; they are in the report and in review_tickets.")

    @OptionGroup var options: ConfigOptions
    @Option(help: "Local date, YYYY-MM-DD (default: yesterday).") var date: String?
    @Flag(help: "Print JSON.") var json = false

    func validate() throws {
        if let date, CivilDate(date) == nil { throw ValidationError("--date \"\(date)\" is not a date YYYY-MM-DD") }
    }

    func run() throws {
        let config = try options.load()
        let logger = makeLogger(config)
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        var calendar = LocalCalendar(timeZone: config.timeZone)
        let day = date.flatMap(CivilDate.init) ?? CivilDate(daysSinceEpoch: calendar.date(of: now).daysSinceEpoch - 1)
        let report = try withWorkerDatabase(config, "reconcile") { db in
            let reconciler = Reconciler(storage: db.database.reconciliationStorage(writeConcern: db.writeConcern),
                                        registry: config.devices, timeZone: config.timeZone, logger: logger)
            // By hand it judges at once; the report says if the ledger had not caught up.
            return try reconciler.run(date: day, now: now, judgedOn: DataReadiness(pending: try reconciler.pendingInDatabase(day)))
        }
        if json { return printJSON(report) }
        print(Reconciler.text(report))
    }
}
