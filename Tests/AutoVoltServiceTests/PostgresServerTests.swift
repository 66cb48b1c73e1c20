import AutoVoltTestSupport
import Foundation
import Testing

/// The PostgreSQL server the tests start for themselves (issue 21 §3): initdb, pg_ctl on a free
/// port, SQL through psql, and a crash (`pg_ctl stop -m immediate`) that loses nothing committed.
@Suite("PostgreSQL test server")
struct PostgresServerTests {
    @Test func startsAnswersAndKeepsWhatWasCommittedAcrossACrash() throws {
        let server = try PostgresServer()
        #expect(try server.psql("SHOW server_version").hasPrefix("15"), "\(server.log)")
        let database = try server.createDatabase()
        try server.psql("CREATE TABLE readings (id bigint PRIMARY KEY, wh double precision NOT NULL)", database: database)
        try server.psql("INSERT INTO readings SELECT g, g * 1.5 FROM generate_series(1, 1000) g", database: database)
        try server.restart(mode: "immediate")
        #expect(try server.psql("SELECT count(*), sum(wh) FROM readings", database: database) == "1000|750750")
        // The URL a worker would be given names the server and the database.
        #expect(server.url(database: database) == "postgresql://postgres@127.0.0.1:\(server.port)/\(database)")
        server.stop()
        #expect(!server.isRunning)
        #expect(throws: PostgresServerError.self) { try server.psql("SELECT 1") }
    }
}
