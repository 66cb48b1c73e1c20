import AutoVoltCore
import AutoVoltPostgres
import AutoVoltTestSupport
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// A broker, a real PostgreSQL server with a database of the test's own, and workers run with
/// `AUTOVOLT_DATABASE_URL=postgresql://...` (issue 21). @unchecked: like `Rig`, it is used by
/// one test at a time; `workers` is appended only by that test's thread, and `sql` is one
/// connection that test alone queries.
final class PostgresRig: @unchecked Sendable {
    let broker: MosquittoBroker
    let server: PostgresServer
    let url: String
    let sql: PostgresConnection
    let stateDirectory: URL
    let clientID = "worker-\(UUID().uuidString.prefix(8))"
    var workers: [WorkerProcess] = []

    init() throws {
        broker = try MosquittoBroker()
        server = try PostgresServer()
        url = server.url(database: try server.createDatabase())
        sql = try PostgresConnection(url: url, applicationName: "autovolt-test")
        stateDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("autovolt-state-\(UUID().uuidString)")
    }

    deinit {
        for worker in workers { worker.kill9() }
        broker.stop()
    }

    var environment: [String: String] {
        [
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
            "AUTOVOLT_MQTT_URL": "mqtt://127.0.0.1:\(broker.port)",
            "AUTOVOLT_MQTT_CLIENT_ID": clientID,
            "AUTOVOLT_DATABASE_URL": url,
            "AUTOVOLT_STATE_DIR": stateDirectory.path,
            "AUTOVOLT_DEVICES": packageRoot.appendingPathComponent("config/devices.toml").path,
            "AUTOVOLT_HTTP_ADDR": "off",
            "AUTOVOLT_LOG_LEVEL": "info",
        ]
    }

    @discardableResult
    func startWorker(extra: [String: String] = [:]) throws -> WorkerProcess {
        let worker = WorkerProcess(environment: environment.merging(extra) { $1 })
        try worker.start()
        workers.append(worker)
        #expect(worker.waitUntilSubscribed(), "worker did not connect and subscribe:\n\(worker.log)")
        return worker
    }

    func publisher() throws -> TestPublisher { try TestPublisher(port: broker.port) }

    /// The first column of the first row as a number (-1 when the query fails: tables not there yet).
    func number(_ query: String) -> Double {
        guard let row = try? sql.query(query).first, let text = row.columnsInOrder.first ?? nil else { return -1 }
        return Double(text) ?? -1
    }

    func liveLedgerIDs() -> Set<String> {
        Set(((try? sql.query("SELECT id FROM device_consumption_ledgers WHERE superseded_by IS NULL")) ?? []).compactMap { $0.string("id") })
    }
}

@Suite("integration: the worker on PostgreSQL", .serialized)
struct PostgresWorkerTests {
    @Test("migrate applies the schema once, says so, and run refuses a schema newer than it knows (exit 78)")
    func migrateAndRefuseNewer() throws {
        let rig = try PostgresRig()
        let first = try WorkerProcess.runToCompletion(["migrate"], environment: rig.environment)
        #expect(first.status == 0, "\(first.stderr)")
        #expect(first.stdout.contains("applied 1"), "\(first.stdout)")
        let second = try WorkerProcess.runToCompletion(["migrate"], environment: rig.environment)
        #expect(second.status == 0 && second.stdout.contains("nothing to do"), "\(second.stdout)\(second.stderr)")
        try rig.sql.execute("INSERT INTO schema_migrations (version, name) VALUES (999, 'from a newer worker')")
        let run = try WorkerProcess.runToCompletion(["run"], environment: rig.environment)
        #expect(run.status == 78, "\(run.stderr)")
        #expect(run.stderr.contains("newer than this worker knows"), "\(run.stderr)")
        let both = try WorkerProcess.runToCompletion(["migrate"], environment: rig.environment.merging(["AUTOVOLT_MONGODB_URI": "mongodb://127.0.0.1/x"]) { $1 })
        #expect(both.status == 78, "\(both.stderr)")
    }

    @Test("readings become events, a ledger through resets, glitches and a late reading, and daily aggregates")
    func ledgerAndAggregates() throws {
        let rig = try PostgresRig()
        try rig.startWorker()
        let publisher = try rig.publisher()
        let readings: [(device: String, second: Int, energy: Double)] = [
            ("lab-101", 0, 1000), ("lab-101", 30, 1010), ("lab-101", 60, 0), ("lab-101", 90, 1020),
            ("lab-101", 120, 5), ("lab-101", 150, 8),
        ]
        try publisher.publish(readings.map { telemetryPayload($0.device, second: $0.second, energy: $0.energy) })
        // The same message again is stored once.
        try publisher.publish([telemetryPayload("lab-101", second: 30, energy: 1010)])
        let expected = expectedEntries(readings)
        #expect(eventually(timeout: 60, interval: 0.2) {
            rig.number("SELECT count(*) FROM telemetry_events WHERE NOT processed") == 0 && rig.number("SELECT count(*) FROM telemetry_unprocessed") == 0 && rig.liveLedgerIDs() == expected
        }, "live: \(rig.liveLedgerIDs().count) of \(expected.count)\n\(rig.workers.last?.log ?? "")")
        #expect(rig.number("SELECT count(*) FROM telemetry_events") == 6)
        #expect(rig.number("SELECT sum(delta_wh) FROM device_consumption_ledgers WHERE superseded_by IS NULL AND billable") == 28)
        #expect(rig.number("SELECT count(*) FROM device_consumption_ledgers WHERE is_reset_marker AND quality->'reasons' ? 'counter_reset'") >= 1)

        let late = readings + [("lab-101", 15, 1005)]
        try publisher.publish([telemetryPayload("lab-101", second: 15, energy: 1005)])
        let expectedLate = expectedEntries(late)
        #expect(eventually(timeout: 60, interval: 0.2) { rig.liveLedgerIDs() == expectedLate })
        #expect(rig.number("SELECT sum(delta_wh) FROM device_consumption_ledgers WHERE superseded_by IS NULL AND billable") == 28)
        #expect(rig.number("SELECT count(*) FROM device_consumption_ledgers WHERE superseded_by IS NOT NULL") >= 1)
        // Daily aggregates follow the ledger (the same local days, the same billable Wh).
        #expect(eventually(timeout: 30, interval: 0.2) {
            rig.number("SELECT sum(energy_wh) FROM daily_aggregates WHERE esp32_name = 'lab-101'") == 28
        }, "daily: \(rig.number("SELECT sum(energy_wh) FROM daily_aggregates"))\n\(rig.workers.last?.log ?? "")")
    }

    @Test("kill -9 mid-burst, then PostgreSQL crashed (pg_ctl stop -m immediate) during a burst: nothing lost, nothing doubled")
    func crashes() throws {
        let rig = try PostgresRig()
        let first = try rig.startWorker(extra: ["AUTOVOLT_BATCH_SIZE": "10"])
        let publisher = try rig.publisher()
        var messages: [(topic: String, payload: String)] = []
        for device in ["lab-101", "lab-102", "lab-103"] {
            for i in 0..<100 { messages.append(telemetryPayload(device, second: i * 30, energy: 1000 + Double(i) * 2)) }
        }
        try publisher.publish(Array(messages[0..<150]))
        #expect(eventually(timeout: 30) { rig.number("SELECT count(*) FROM telemetry_events") >= 20 })
        first.kill9()
        try publisher.publish(Array(messages[150..<220]))
        try rig.startWorker(extra: ["AUTOVOLT_BATCH_SIZE": "10"])
        #expect(eventually(timeout: 30) { rig.number("SELECT count(*) FROM telemetry_events") >= 200 })
        rig.server.stop()
        try publisher.publish(Array(messages[220...]))
        try rig.server.start()
        #expect(eventually(timeout: 90, interval: 0.3) {
            rig.number("SELECT count(*) FROM telemetry_events") == 300
                && rig.number("SELECT count(*) FROM telemetry_events WHERE NOT processed") == 0 && rig.number("SELECT count(*) FROM telemetry_unprocessed") == 0
        }, "events: \(rig.number("SELECT count(*) FROM telemetry_events"))\n\(rig.workers.last?.log ?? "")")
        #expect(rig.number("SELECT count(DISTINCT event_hash) FROM telemetry_events") == 300)
        // Each board climbed 198 Wh over its 100 readings: all of it billed once.
        #expect(eventually(timeout: 30, interval: 0.3) {
            rig.number("SELECT sum(delta_wh) FROM device_consumption_ledgers WHERE superseded_by IS NULL AND billable") == 3 * 198
        }, "ledger: \(rig.number("SELECT sum(delta_wh) FROM device_consumption_ledgers WHERE superseded_by IS NULL AND billable"))")
    }
}

extension PostgresWorkerTests {
    @Test("HTTP on PostgreSQL: /health with its figures, the analytics API and the dashboard")
    func http() async throws {
        let rig = try PostgresRig()
        let port = freeTCPPort()
        let tokenFile = FileManager.default.temporaryDirectory.appendingPathComponent("token-\(UUID().uuidString)")
        try "pg-test-token-0123456789".write(to: tokenFile, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: tokenFile) }
        try rig.startWorker(extra: ["AUTOVOLT_HTTP_ADDR": "127.0.0.1:\(port)", "AUTOVOLT_API_TOKEN_FILE": tokenFile.path])
        let publisher = try rig.publisher()
        let readings: [(device: String, second: Int, energy: Double)] = [("lab-101", 0, 1000), ("lab-101", 30, 1010), ("lab-101", 60, 1025)]
        try publisher.publish(readings.map { telemetryPayload($0.device, second: $0.second, energy: $0.energy) })
        #expect(eventually(timeout: 60, interval: 0.2) {
            rig.number("SELECT sum(energy_wh) FROM daily_aggregates WHERE esp32_name = 'lab-101'") == 25
        }, "\(rig.workers.last?.log ?? "")")
        func get(_ path: String) async throws -> (status: Int, body: String) {
            let (data, response) = try await URLSession.shared.data(from: try #require(URL(string: "http://127.0.0.1:\(port)\(path)")))
            return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
        }
        func json(_ text: String) -> [String: Any] { (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:] }

        // Health's figures refresh every 5 s: wait for the three events to show.
        var health: [String: Any] = [:]
        for _ in 0..<40 {
            health = json(try await get("/health").body)
            if ((health["telemetry"] as? [String: Any])?["total_events"] as? Int) == 3 { break }
            try await Task.sleep(for: .milliseconds(250))
        }
        let telemetry = try #require(health["telemetry"] as? [String: Any], "\(health)")
        #expect(telemetry["total_events"] as? Int == 3 && telemetry["unprocessed_events"] as? Int == 0, "\(health)")
        #expect(health["status"] as? String == "healthy", "\(health)")

        var calendar = LocalCalendar(timeZone: TimeZone(identifier: "Asia/Kolkata") ?? .gmt)
        let day = calendar.date(of: EpochMillis(baseTime) * 1000)
        let summary = try await get("/api/power-analytics/summary?date=\(day)")
        #expect(summary.status == 200, "\(summary.body)")
        #expect(json(summary.body)["energy_wh"] as? Double == 25, "\(summary.body)")
        let page = try await get("/?date=\(day)")
        #expect(page.status == 200 && page.body.contains("lab-101"), "\(page.body.prefix(300))")

        // A tariff over HTTP is stored in PostgreSQL and prices the day retroactively.
        var request = URLRequest(url: try #require(URL(string: "http://127.0.0.1:\(port)/api/power-analytics/cost-versions")))
        request.httpMethod = "POST"
        request.setValue("Bearer pg-test-token-0123456789", forHTTPHeaderField: "Authorization")
        request.httpBody = Data(#"{"cost_per_kwh": 8, "effective_from": "2020-01-01"}"#.utf8)
        let (data, response) = try await URLSession.shared.data(for: request)
        #expect((response as? HTTPURLResponse)?.statusCode == 201, "\(String(decoding: data, as: UTF8.self))")
        let versions = try await get("/api/power-analytics/cost-versions")
        #expect(versions.status == 200 && versions.body.contains("\"cost_per_kwh\":8"), "\(versions.body)")
        let priced = json(try await get("/api/power-analytics/summary?date=\(day)").body)
        #expect(priced["cost"] as? Double == 0.2, "\(priced)")
    }
}
