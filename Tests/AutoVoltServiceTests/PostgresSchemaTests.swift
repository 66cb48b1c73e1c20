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
}
