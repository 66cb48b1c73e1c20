import AutoVoltCore
import AutoVoltPostgres
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Logging
import Testing

/// The drain on a real PostgreSQL through faults (issue 21 §3): `pg_ctl restart -m immediate`
/// in the middle of a burst, with the drain's retry (keep the batch, wait, again): every
/// reading is stored once, nothing is set aside, the presence is whole.
@Suite("ingest on PostgreSQL through a crash of the server", .serialized)
struct IngestPostgresFaultTests {
    @Test func aServerCrashMidBurstLosesAndDoublesNothing() throws {
        let server = try PostgresServer()
        let url = server.url(database: try server.createDatabase())
        let pool = try PostgresPool(url: url, size: 2, applicationName: "ingest-fault")
        defer { pool.close() }
        try pool.withConnection { connection in try PostgresSchema.migrate(on: connection) }
        let processor = IngestProcessor(storage: PostgresIngestStorage(pool: pool), decoder: MessageDecoder(),
                                        registry: IngestStorageConformanceTests.registry, logger: Logger(label: "ingest-fault"))
        let base = IngestStorageConformanceTests.december
        let devices = (0..<10).map { "board-\($0)" }
        let batches: [[InboundMessage]] = (0..<30).map { b in
            (0..<100).map { i in
                let n = b * 100 + i
                return IngestStorageConformanceTests.telemetry(devices[n % devices.count], at: (base + EpochMillis(n) * 1000) / 1000,
                                                               Double(n), receivedAt: base + EpochMillis(n) * 1000)
            }
        }

        let crashed = DispatchSemaphore(value: 0)
        var total = BatchOutcome()
        var failures = 0
        for (index, batch) in batches.enumerated() {
            if index == 10 {
                DispatchQueue.global().async {
                    try? server.restart(mode: "immediate")
                    crashed.signal()
                }
            }
            // The drain's loop: a batch leaves the journal only once `ingest` returns.
            var attempts = 0
            while true {
                attempts += 1
                do {
                    total.add(try processor.ingest(batch))
                    break
                } catch {
                    // Never taken for a refused row (that would set good readings aside).
                    let disposition = storageDisposition(of: error)
                    #expect(disposition == .transient || disposition == .persistent, "\(error)")
                    // libpq reports a connection lost mid-statement without a SQLSTATE while its
                    // status still says CONNECTION_OK; AutoVoltPostgres then says protocolError
                    // (persistent: retried all the same, but logged as needing a person).
                    withKnownIssue("connection loss classified as a protocol error", isIntermittent: true) {
                        #expect(disposition == .transient, "\(error)")
                    }
                    failures += 1
                    guard attempts < 200 else { throw error }
                    Thread.sleep(forTimeInterval: 0.1)
                }
            }
        }
        crashed.wait()
        #expect(server.isRunning)
        #expect(total.rejectedTotal == 0 && total.storageErrors == 0)
        #expect(total.inserted + total.duplicates >= 3000 && total.inserted <= 3000)
        // The pool's other connection went idle across the crash: its first use fails (transient,
        // as the worker's stages retry it) and the pool drops it.
        let counts = try retryingTransient { try pool.withConnection { connection in
            try connection.query("""
                SELECT (SELECT count(*) FROM telemetry_events) AS events,
                       (SELECT count(DISTINCT event_hash) FROM telemetry_events) AS hashes,
                       (SELECT count(*) FROM rejected_messages) AS rejects,
                       (SELECT count(*) FROM device_status WHERE last_telemetry_at IS NOT NULL) AS boards
                """).first
        } }
        #expect(counts?.int("events") == 3000 && counts?.int("hashes") == 3000, "failures \(failures)")
        #expect(counts?.int("rejects") == 0 && counts?.int("boards") == devices.count)
    }
}
