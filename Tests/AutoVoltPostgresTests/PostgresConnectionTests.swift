import AutoVoltPostgres
import AutoVoltTestSupport
import Foundation
import Testing

@Suite("PostgreSQL adapter (libpq) against a real server")
struct PostgresConnectionTests {
    @Test("timestamps go in and come back to the millisecond, any offset")
    func timestamps() throws {
        for millis: Int64 in [0, 1, 999, 1_730_822_400_123, -86_400_001, 4_102_444_800_000, 1_583_020_799_999] {
            let text = PostgresTime.format(millis)
            #expect(PostgresTime.parse(text.replacingOccurrences(of: "T", with: " ").replacingOccurrences(of: "Z", with: "+00")) == millis, "\(text)")
        }
        #expect(PostgresTime.parse("2026-12-07 15:30:00.5+05:30") == PostgresTime.parse("2026-12-07 10:00:00.5+00"))
        #expect(PostgresTime.parse("2026-12-07 10:00:00.1234567+00") == PostgresTime.parse("2026-12-07 10:00:00.123+00"))
        #expect(PostgresTime.parse("infinity") == nil)
    }

    @Test("values round-trip through a real server; errors carry the SQLSTATE")
    func roundTrip() throws {
        let server = try PostgresServer()
        let c = try PostgresConnection(url: server.url())
        try c.executeScript("CREATE TABLE t (id text PRIMARY KEY, n bigint, x double precision, b boolean, at timestamptz, doc jsonb, tags text[])")
        let at: Int64 = 1_730_822_400_123
        let inserted = try c.execute("INSERT INTO t VALUES ($1, $2, $3, $4, $5::timestamptz, $6::jsonb, $7::text[])",
                                     ["a\"b\\c\tné", Int64.max, 0.1 + 0.2, true, PostgresTimestamp(millis: at), PostgresJSON("{\"k\": [1, 2]}"),
                                      PostgresTextArray(["x", "y,z", "\"q\""])])
        #expect(inserted == 1)
        let row = try #require(try c.query("SELECT * FROM t").first)
        #expect(row.string("id") == "a\"b\\c\tné")
        #expect(row.int64("n") == Int64.max)
        #expect(row.double("x") == 0.1 + 0.2)
        #expect(row.bool("b") == true)
        #expect(row.millis("at") == at)
        #expect(row.string("tags") == "{x,\"y,z\",\"\\\"q\\\"\"}")
        let found = try c.query("SELECT id FROM t WHERE 'y,z' = ANY(tags) AND n = $1", [Optional<Int64>.some(Int64.max)])
        #expect(found.count == 1)
        #expect(try c.query("SELECT $1::text IS NULL AS isnull", [String?.none]).first?.bool("isnull") == true)

        do {
            try c.execute("INSERT INTO t (id) VALUES ($1)", ["a\"b\\c\tné"])
            Issue.record("a duplicate key was accepted")
        } catch {
            #expect(error.isUniqueViolation)
            #expect(!error.isTransient)
        }
        do {
            try c.execute("INSERT INTO t (id) VALUES ($1)", ["nul\u{0}here"])
            Issue.record("a NUL character was accepted")
        } catch {
            #expect(error.sqlState == "22021" && error.refusesRow)
        }
    }

    @Test("COPY, a server-side cursor in batches, and a transaction that rolls back")
    func copyCursorTransaction() throws {
        let server = try PostgresServer()
        let c = try PostgresConnection(url: server.url())
        try c.executeScript("CREATE TABLE r (id integer PRIMARY KEY, note text)")
        let rows: [[String?]] = (1...2_500).map { [String($0), $0 % 7 == 0 ? nil : "line \($0)\twith\\tab\nand newline"] }
        #expect(try c.copyIn(table: "r", columns: ["id", "note"], rows: rows) == 2_500)
        var seen = 0, batches = 0, nulls = 0
        try c.forEachBatch("SELECT id, note FROM r WHERE id > $1 ORDER BY id", [0], batchSize: 1_000) { batch in
            batches += 1
            for row in batch {
                seen += 1
                if row.string("note") == nil { nulls += 1 } else { #expect(row.string("note") == "line \(row.int("id") ?? -1)\twith\\tab\nand newline") }
            }
        }
        #expect(seen == 2_500 && batches == 3 && nulls == 2_500 / 7)
        struct Stop: Error {}
        #expect(throws: Stop.self) {
            try c.transaction {
                try c.execute("DELETE FROM r")
                throw Stop()
            }
        }
        #expect(!c.inTransaction)
        #expect(try c.query("SELECT count(*) AS n FROM r").first?.int("n") == 2_500)
        // A COPY that fails (a duplicate key) leaves the connection usable.
        #expect(throws: PostgresError.self) { try c.copyIn(table: "r", columns: ["id", "note"], rows: [["1", "again"]]) }
        #expect(try c.query("SELECT count(*) AS n FROM r").first?.int("n") == 2_500)
    }

    @Test("a server restarted under a pool: the call that breaks is transient, the next one reconnects")
    func reconnect() throws {
        let server = try PostgresServer()
        let pool = try PostgresPool(url: server.url(), size: 2)
        try pool.withConnection { try $0.executeScript("CREATE TABLE k (n integer)") }
        server.stop()
        do {
            try pool.withConnection { try $0.execute("INSERT INTO k VALUES (1)") }
            Issue.record("a write to a stopped server succeeded")
        } catch let error as PostgresError {
            #expect(error.isTransient, "\(error)")
        }
        try server.start()
        try pool.withConnection { try $0.execute("INSERT INTO k VALUES (2)") }
        #expect(try pool.withConnection { try $0.query("SELECT count(*) AS n FROM k") }.first?.int("n") == 1)
    }

    @Test("an unreachable server and a bad URL are told apart")
    func connectErrors() throws {
        do {
            _ = try PostgresConnection(url: "postgresql://postgres@127.0.0.1:\(freeTCPPort())/postgres", connectTimeoutSeconds: 2)
            Issue.record("connected to nothing")
        } catch {
            #expect(error.kind == .connection && error.isTransient)
        }
        do {
            _ = try PostgresConnection(url: "postgresql://127.0.0.1:notaport/db")
            Issue.record("connected with a bad URL")
        } catch {
            #expect(error.kind == .invalidURL || error.kind == .connection, "\(error)")
        }
    }
}
