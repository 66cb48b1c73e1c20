import AutoVoltPostgres
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Testing

@Suite("PostgreSQL schema: versioned migrations")
struct PostgresSchemaTests {
    @Test("migrate creates every table once; a second run and a racing worker change nothing")
    func migrateOnce() throws {
        let server = try PostgresServer()
        let url = server.url(database: try server.createDatabase())
        let a = try PostgresConnection(url: url), b = try PostgresConnection(url: url)
        // Two workers starting together: the advisory lock lets one apply, the other finds it done.
        let results = LockedBox<[[Int]]>([])
        let lock = NSLock()
        let group = DispatchGroup()
        for connection in [a, b] {
            nonisolated(unsafe) let connection = connection
            DispatchQueue.global().async(group: group) {
                let applied = (try? PostgresSchema.migrate(on: connection)) ?? [-1]
                lock.withLock { results.value.append(applied) }
            }
        }
        group.wait()
        #expect(results.value.sorted { $0.count > $1.count } == [PostgresSchema.migrations.map(\.version), []])
        #expect(try PostgresSchema.currentVersion(on: a) == PostgresSchema.latestVersion)
        try PostgresSchema.check(on: a)
        let tables = try a.query("SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'").compactMap { $0.string("table_name") }
        for table in ["schema_migrations", "telemetry_events", "device_consumption_ledgers"] {
            #expect(tables.contains(table), "\(table) missing from \(tables)")
        }
        #expect(try PostgresSchema.migrate(on: a) == [])
    }

    @Test("a schema newer than the worker's, and another program's tables, are refused without a change")
    func refusals() throws {
        let server = try PostgresServer()
        let newer = try PostgresConnection(url: server.url(database: try server.createDatabase()))
        try PostgresSchema.migrate(on: newer)
        try newer.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, 'from the future')", [PostgresSchema.latestVersion + 1])
        #expect(throws: PostgresSchema.Refusal.self) { try PostgresSchema.migrate(on: newer) }
        #expect(throws: PostgresSchema.Refusal.self) { try PostgresSchema.check(on: newer) }

        let foreign = try PostgresConnection(url: server.url(database: try server.createDatabase()))
        try foreign.executeScript("CREATE TABLE telemetry_events (payload text)")
        do {
            try PostgresSchema.migrate(on: foreign)
            Issue.record("another program's table was taken over")
        } catch let refusal as PostgresSchema.Refusal {
            #expect(refusal.description.contains("telemetry_events"))
        }
        #expect(try PostgresSchema.currentVersion(on: foreign) == 0)
        #expect(try foreign.query("SELECT column_name FROM information_schema.columns WHERE table_name = 'telemetry_events'").count == 1)
    }

    @Test("migration 3 queues the events a version-2 database left unprocessed, drops the partial index and makes room on the pages")
    func migration3QueuesWhatWaits() throws {
        let server = try PostgresServer()
        let db = try PostgresConnection(url: server.url(database: try server.createDatabase()))
        try db.executeScript("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        for migration in PostgresSchema.migrations where migration.version <= 2 {
            try db.executeScript(migration.sql)
            try db.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [migration.version, migration.name])
        }
        try db.executeScript("""
            CREATE TABLE telemetry_events_2026_12 PARTITION OF telemetry_events FOR VALUES FROM ('2026-12-01') TO ('2027-01-01');
            INSERT INTO telemetry_events (id, event_hash, esp32_name, classroom, device_ts, received_at, energy_wh_total, switch_state, clock, processed)
            VALUES ('lab-101@1', 'h1', 'lab-101', 'lab', '2026-12-07 10:00:00+00', '2026-12-07 10:00:01+00', 1, '[1]', 'device', true),
                   ('lab-101@2', 'h2', 'lab-101', 'lab', '2026-12-07 10:00:30+00', '2026-12-07 10:00:31+00', 2, '[1]', 'device', false);
            """)
        #expect(try PostgresSchema.migrate(on: db) == [3])
        let queued = try db.query("SELECT id, esp32_name, device_ts, received_at FROM telemetry_unprocessed")
        #expect(queued.map { $0.string("id") } == ["lab-101@2"])
        #expect(queued.first?.millis("received_at") == 1_796_637_631_000)
        #expect(try db.query("SELECT to_regclass('telemetry_events_unprocessed') IS NULL AS gone").first?.bool("gone") == true)
        let options = try db.query("SELECT array_to_string(reloptions, ',') AS o FROM pg_class WHERE relname = 'telemetry_events_2026_12'")
        #expect(options.first?.string("o") == "fillfactor=\(PostgresTables.eventFillFactor)")
        // Setting `processed` touches no index any more: the update stays on its page (HOT).
        try db.execute("UPDATE telemetry_events SET processed = true WHERE id = 'lab-101@2'")
        try db.execute("SELECT pg_stat_force_next_flush()")
        let hot = try db.query("SELECT n_tup_hot_upd AS n FROM pg_stat_user_tables WHERE relname = 'telemetry_events_2026_12'")
        #expect(hot.first?.int("n") == 1)
    }
}
