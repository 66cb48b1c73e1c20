import AutoVoltCore
import AutoVoltMongo
import AutoVoltPostgres
import AutoVoltTestSupport
import Foundation
import Testing

/// Contract section 9: the same simulated capture bills the same Wh per device-day on either
/// backend. One capture (two local days, eight boards of both firmwares, with the simulator's
/// resets, glitches, duplicates and offline backlogs) is replayed into MongoDB (dev-mongo) and
/// into a real PostgreSQL; the same commands derive the ledger and the aggregates on each; then
/// `simulate check` finds no difference with the truth on either, and the two databases' sums
/// per device-day are equal.
@Suite("both backends bill the same", .serialized)
struct BackendParityTests {
    @Test func theSameCaptureBillsTheSameWhPerDeviceDayOnMongoDBAndPostgreSQL() throws {
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("parity-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: out) }
        let mongo = try Rig()
        let postgres = try PostgresRig()
        // Recent days: rejected messages are kept 30 days, on either backend.
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "Asia/Kolkata") ?? .gmt
        let start = calendar.date(byAdding: .day, value: -4, to: Date()) ?? Date()
        let startText = String(format: "%04d-%02d-%02d", calendar.component(.year, from: start), calendar.component(.month, from: start),
                               calendar.component(.day, from: start))
        let capture = try WorkerProcess.runToCompletion(
            ["simulate", "capture", "--devices", "6", "--start", startText, "--days", "2", "--interval", "300", "--seed", "29",
             "--out", out.path],
            environment: mongo.environment)
        try #require(capture.status == 0, "\(capture.stderr)")
        let truth = out.appendingPathComponent("truth.json").path
        let devices = ["AUTOVOLT_DEVICES": out.appendingPathComponent("devices.toml").path, "AUTOVOLT_LOG_LEVEL": "warning"]

        let end = calendar.date(byAdding: .day, value: 2, to: start) ?? start
        let endText = String(format: "%04d-%02d-%02d", calendar.component(.year, from: end), calendar.component(.month, from: end),
                             calendar.component(.day, from: end))
        // The same commands on each: replay the capture, derive the ledger, aggregate the days.
        for (name, environment) in [("MongoDB", mongo.environment), ("PostgreSQL", postgres.environment)] {
            let env = environment.merging(devices) { $1 }
            for step in [["replay", out.appendingPathComponent("capture.txt").path], ["rebuild-ledger"],
                         ["recalculate", "--start", startText, "--end", endText]] {
                let run = try WorkerProcess.runToCompletion(step, environment: env, timeout: 300)
                #expect(run.status == 0, "\(name) \(step): \(run.stderr)")
            }
            let check = try WorkerProcess.runToCompletion(["simulate", "check", truth, "--quiet"], environment: env, timeout: 120)
            #expect(check.status == 0, "\(name): \(check.stdout)\n\(check.stderr)")
            #expect(check.stdout.contains("no differences"), "\(name): \(check.stdout)")
        }

        // The two databases, device-day by device-day, to the micro-watt-hour.
        var fromMongo: [String: Double] = [:]
        for group in try mongo.client.aggregate("device_consumption_ledgers", pipeline: [
            ["$match": ["superseded_by": ["$exists": false], "billable": true]],
            ["$group": ["_id": ["n": "$esp32_name", "d": "$date"], "wh": ["$sum": "$delta_wh"]]],
        ]) {
            guard let id = group["_id"]?.documentValue, let n = id["n"]?.stringValue, let d = id["d"]?.stringValue else { continue }
            fromMongo["\(n)|\(d)"] = (group["wh"]?.doubleValue ?? 0)
        }
        var fromPostgres: [String: Double] = [:]
        for row in try postgres.sql.query("""
            SELECT esp32_name, date, sum(delta_wh) AS wh FROM device_consumption_ledgers
            WHERE superseded_by IS NULL AND billable GROUP BY esp32_name, date
            """) {
            fromPostgres["\(row.string("esp32_name") ?? "?")|\(row.string("date") ?? "?")"] = row.double("wh") ?? 0
        }
        #expect(fromMongo.count >= 12 && Set(fromMongo.keys) == Set(fromPostgres.keys), "\(fromMongo.keys.sorted()) vs \(fromPostgres.keys.sorted())")
        for (key, wh) in fromMongo {
            #expect(abs(wh - (fromPostgres[key] ?? .nan)) < 1e-6, "\(key): MongoDB \(wh) Wh, PostgreSQL \(fromPostgres[key] ?? .nan) Wh")
        }

        // And the check can fail on PostgreSQL: half a watt-hour moved is found.
        try postgres.sql.execute("""
            UPDATE device_consumption_ledgers SET delta_wh = delta_wh + 0.5
            WHERE id = (SELECT id FROM device_consumption_ledgers WHERE billable AND delta_wh > 1 AND superseded_by IS NULL LIMIT 1)
            """)
        let tampered = try WorkerProcess.runToCompletion(["simulate", "check", truth], environment: postgres.environment.merging(devices) { $1 })
        #expect(tampered.status == 1 && tampered.stdout.contains("1 differences"), "\(tampered.stdout)")
    }
}
