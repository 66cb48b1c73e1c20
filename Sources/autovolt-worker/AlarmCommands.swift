import ArgumentParser
import AutoVoltCore
import AutoVoltMongo
import AutoVoltService
import Foundation

struct Alarms: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "alarms", abstract: "Alarms raised by the worker's rules (AUTOVOLT_ALARMS): list them, acknowledge one.",
        subcommands: [List.self, Ack.self])

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Alarms, newest first. Same JSON as GET /api/power-analytics/alarms.")
        @OptionGroup var options: ConfigOptions
        @Option(help: "active (default) or all.") var status = "active"
        @Option(help: "Raised at or after: YYYY-MM-DD (local) or an ISO 8601 instant.") var from: String?
        @Option(help: "Raised before: YYYY-MM-DD (local, inclusive) or an ISO 8601 instant.") var to: String?
        @Option(help: "At most this many.") var limit = 500
        @Flag(help: "Print JSON.") var json = false

        func validate() throws {
            guard status == "active" || status == "all" else { throw ValidationError("--status must be active or all") }
            guard (1...100_000).contains(limit) else { throw ValidationError("--limit must be 1 to 100000") }
        }

        func run() throws {
            let config = try options.load()
            var calendar = LocalCalendar(timeZone: config.timeZone)
            let range: (EpochMillis?, EpochMillis?)
            do throws(AnalyticsParameterError) {
                range = (try from.map { text throws(AnalyticsParameterError) in try AnalyticsQueries.bound(text, name: "--from", isEnd: false, calendar: &calendar).millis },
                         try to.map { text throws(AnalyticsParameterError) in try AnalyticsQueries.bound(text, name: "--to", isEnd: true, calendar: &calendar).millis })
            } catch {
                throw fail(error.message, ExitCode.validationFailure)
            }
            let alarms = try reportingFailures("alarms list") {
                let database = try WorkerDatabase.open(config, poolSize: 1)
                defer { database.close() }
                return try AlarmStore(storage: database.alarmStorage(writeConcern: .acknowledged))
                    .list(activeOnly: status == "active", from: range.0, to: range.1, limit: limit)
            }
            if json { return printJSON(AlarmList(status: status, alarms: alarms)) }
            if alarms.isEmpty { return print(status == "active" ? "no active alarms" : "no alarms in that range") }
            print("id                                                 severity  status   raised at                  device       classroom   value      acknowledged")
            for a in alarms {
                let ack = a.acknowledgedBy.map { "by \($0)" } ?? "-"
                print("\(pad(a.id, 50)) \(pad(a.severity, 9)) \(pad(a.status, 8)) \(pad(a.raisedAt, 26)) \(pad(a.esp32Name, 12)) \(pad(a.classroom, 11)) \(pad(a.lastValue.map { String(format: "%.1f", $0) } ?? "-", 10)) \(ack)")
            }
        }
    }

    struct Ack: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Acknowledge an alarm (its id from alarms list). The alarm stream shows the ack.")
        @OptionGroup var options: ConfigOptions
        @Argument(help: "The alarm id.") var id: String
        @Option(help: "Who acknowledges (default: $USER).") var by: String?
        @Flag(help: "Print JSON.") var json = false

        func run() throws {
            let config = try options.load()
            let person = by ?? ProcessInfo.processInfo.environment["USER"] ?? "cli"
            let outcome = try withWorkerDatabase(config, "alarms ack") { db in
                try AlarmStore(storage: db.database.alarmStorage(writeConcern: db.writeConcern))
                    .acknowledge(id: id, by: person, at: Int64(Date().timeIntervalSince1970 * 1000))
            }
            switch outcome {
            case .acknowledged(let alarm, _):
                if json { return printJSON(alarm) }
                print("acknowledged \(alarm.id) by \(person)")
            case .already(let alarm):
                if json { return printJSON(alarm) }
                print("\(alarm.id) was acknowledged already, at \(alarm.acknowledgedAt ?? "?") by \(alarm.acknowledgedBy ?? "?")")
            case .notFound:
                throw fail("no alarm \(id)", Exit.failure)
            }
        }
    }
}

private func pad(_ text: String, _ width: Int) -> String { text.padding(toLength: max(width, text.count), withPad: " ", startingAt: 0) }

