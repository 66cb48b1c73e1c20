import AutoVoltCore
import AutoVoltPostgres
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Synchronization
import Testing

/// A deadlock (40P01) and a serialization failure (40001) on a real PostgreSQL server, met by a
/// stage in the middle of its work (issue 21 §3): the stage's error is transient
/// (`storageDisposition`), the retry goes through, and nothing is lost or doubled, to the Wh.
@Suite("PostgreSQL: a deadlock and a serialization failure are waited out, nothing lost or doubled", .serialized)
struct PostgresDeadlockTests {
    typealias Rig = AggregationStorageRig
    typealias Conformance = LedgerStorageConformanceTests

    /// The stage's loop: a transient error is waited out and the call made again; what each
    /// failed attempt threw is kept.
    static func retried<T>(_ body: () throws -> T) -> (result: T?, failures: [any Error]) {
        var failures: [any Error] = []
        for _ in 0..<10 {
            do {
                return (try body(), failures)
            } catch {
                failures.append(error)
                guard storageDisposition(of: error) == .transient else { break }
                Thread.sleep(forTimeInterval: 0.2)
            }
        }
        return (nil, failures)
    }

    /// What the stage's thread ended with.
    final class Outcome: Sendable {
        let value = Mutex<(processed: Int?, failures: [any Error])?>(nil)
    }

    /// A real deadlock: another session holds the row of one of the two daily aggregates the
    /// stage writes together; the stage locks the other (in id order) and waits; the session
    /// then asks for the stage's row. PostgreSQL breaks the cycle by failing the stage's
    /// transaction with 40P01 (the stage detects it: its `deadlock_timeout` is the shorter).
    /// The retry writes each aggregate once more: one version each, one history row each.
    @Test func aDeadlockedAggregateWriteIsRetriedAndWritesEachVersionOnce() throws {
        let rig = try Rig(.postgres)
        let server = try #require(rig.postgres)
        // The stage's sessions detect the deadlock (3 s: ample for the holder to close the
        // cycle first); the holder's own check comes far later.
        try server.psql("ALTER SYSTEM SET deadlock_timeout = '3s'")
        try server.psql("SELECT pg_reload_conf()")
        try rig.storage.insertTariff(Tariff(id: "t", costPerKwh: 10, currency: "INR", effectiveFrom: 0, classroom: nil, createdAt: 0))
        try rig.entry("lab-101", Rig.day5 + Rig.hour, Rig.day5 + 2 * Rig.hour, 300)
        try rig.entry("lab-201", Rig.day5 + Rig.hour, Rig.day5 + 2 * Rig.hour, 100)
        #expect(try rig.store.processDirtyDays(now: Rig.later) == 2)
        try rig.entry("lab-101", Rig.day5 + 2 * Rig.hour, Rig.day5 + 3 * Rig.hour, 50)
        try rig.entry("lab-201", Rig.day5 + 2 * Rig.hour, Rig.day5 + 3 * Rig.hour, 25)
        let (first, second) = ("2026-11-05|lab-101", "2026-11-05|lab-201")

        let holder = try PostgresConnection(url: rig.fixture.url, applicationName: "lock-holder")
        defer { holder.close() }
        try holder.execute("SET deadlock_timeout = '10min'")
        try holder.execute("SET lock_timeout = '60s'") // a cycle never closed fails the test, not hangs it
        let holderPID = try #require(try holder.query("SELECT pg_backend_pid() AS pid").first?.int("pid"))
        try holder.execute("BEGIN")
        #expect(try holder.query("SELECT id FROM daily_aggregates WHERE id = $1 FOR UPDATE", [second]).count == 1)

        // The aggregation stage, on its own thread.
        let outcome = Outcome()
        let done = DispatchSemaphore(value: 0)
        Thread {
            let run = Self.retried { try rig.store.processDirtyDays(now: Rig.later + 1) }
            outcome.value.withLock { $0 = (run.result, run.failures) }
            done.signal()
        }.start()

        // The stage holds the first row and waits for the second, behind the holder.
        let watcher = try PostgresConnection(url: rig.fixture.url, applicationName: "watcher")
        defer { watcher.close() }
        let waiting = try eventually(timeout: 30, interval: 0.05) {
            try watcher.query("""
                SELECT count(*) AS n FROM pg_stat_activity
                WHERE application_name = 'aggregation' AND wait_event_type = 'Lock' AND $1 = ANY(pg_blocking_pids(pid))
                """, [holderPID]).first?.int("n") == 1
        }
        #expect(waiting, "the stage waits for the holder's row")
        // The cycle: this waits until PostgreSQL fails the stage's transaction, which frees the row.
        do {
            #expect(try holder.query("SELECT id FROM daily_aggregates WHERE id = $1 FOR UPDATE", [first]).count == 1)
        } catch {
            Issue.record("the holder did not get the stage's row: \(error)")
        }
        try holder.execute("ROLLBACK")

        #expect(done.wait(timeout: .now() + 120) == .success, "the stage finished")
        let run = try #require(outcome.value.withLock { $0 })
        #expect(run.processed == 2, "\(run.failures)")
        #expect(run.failures.count == 1, "one deadlock, one retry: \(run.failures)")
        #expect(run.failures.allSatisfy { storageDisposition(of: $0) == .transient }, "\(run.failures)")
        #expect(run.failures.compactMap { ($0 as? PostgresError)?.sqlState } == ["40P01"], "\(run.failures)")

        // Each aggregate written once more: the figures of every entry, one version, one history row.
        let lab101 = try #require(try rig.daily("lab-101", "2026-11-05"))
        let lab201 = try #require(try rig.daily("lab-201", "2026-11-05"))
        #expect(lab101.version == 2 && lab101.figures.energyWh == 350 && lab101.figures.cost == 3.5)
        #expect(lab201.version == 2 && lab201.figures.energyWh == 125 && lab201.figures.cost == 1.25)
        #expect(try rig.history(first).map(\.version) == [1])
        #expect(try rig.history(second).map(\.version) == [1])
        #expect(try rig.monthly("lab-101", "2026-11").map { [$0.version, Int64($0.figures.energyWh)] } == [2, 350])
        #expect(try rig.monthly("lab-201", "2026-11").map { [$0.version, Int64($0.figures.energyWh)] } == [2, 125])
        #expect(try rig.dirtyMarkCount() == 0)
    }

    /// A serialization failure in the middle of a ledger step: its entries are written, then
    /// the statement marking its events processed fails with 40001 (a trigger of the test's, once).
    /// The step fails transiently; the next one leaves the ledger of the derivation from
    /// scratch, every Wh once.
    @Test func aSerializationFailureMidLedgerStepIsRetriedAndBillsEveryWhOnce() throws {
        let db = try Conformance.LedgerDB(.postgres)
        let pool = try #require(db.fixture.pool)
        let store = db.store([Conformance.lab])
        let t = Conformance.day5 + 8 * Conformance.hour
        let minute = Conformance.minute
        var stored = try db.insert(Conformance.lab, (0..<10).map { Conformance.reading(t + EpochMillis($0) * minute, 100 + Double($0)) },
                                   receivedAt: t + 10 * minute)
        #expect(try store.advance("lab-101", now: t + 11 * minute) == .done(newEvents: 10))
        let before = try db.allEntries("lab-101").count
        stored += try db.insert(Conformance.lab, (10..<20).map { Conformance.reading(t + EpochMillis($0) * minute, 100 + Double($0)) }
            + [Conformance.reading(t + 90_000, 101.25)], // and a late one, between the readings at 60 and 120 s
                                receivedAt: t + 20 * minute)

        // The next UPDATE of telemetry_events (the step's processed marks) fails once: a
        // sequence counts, as it is not rolled back with the failed statement.
        try pool.withConnection { connection in
            try connection.executeScript("""
                CREATE SEQUENCE serialization_fault;
                CREATE FUNCTION serialization_fault() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF nextval('serialization_fault') = 1 THEN
                        RAISE EXCEPTION 'could not serialize access (injected)' USING ERRCODE = '40001';
                    END IF;
                    RETURN NULL;
                END $$;
                CREATE TRIGGER serialization_fault BEFORE UPDATE ON telemetry_events
                    FOR EACH STATEMENT EXECUTE FUNCTION serialization_fault();
                """)
        }

        // The step meets the fault after writing its entries, before its events are marked.
        do {
            try store.advance("lab-101", now: t + 21 * minute)
            Issue.record("the step went through the serialization failure")
        } catch {
            #expect(storageDisposition(of: error) == .transient, "\(error)")
            #expect((error as? PostgresError)?.sqlState == "40001", "\(error)")
        }
        #expect(store.snapshot.errors == 1)
        #expect(try db.allEntries("lab-101").count > before, "the failed step's entries were written")
        #expect(try db.unprocessed() == 11, "and its events not marked")

        // The stage's retry.
        let run = Self.retried { try store.advance("lab-101", now: t + 22 * minute) }
        #expect(run.result == .done(newEvents: 11), "\(run.failures)")
        #expect(run.failures.isEmpty, "\(run.failures)")
        #expect(try pool.withConnection { try $0.query("SELECT last_value AS n FROM serialization_fault").first?.int("n") } == 2,
                "the fault fired once, and the retry's marks passed the trigger")

        let live = try db.live("lab-101")
        #expect(live == Conformance.fromScratch(stored, device: Conformance.lab).map(Conformance.Row.init))
        #expect(try db.allEntries("lab-101").count == live.count + 1, "one interval superseded by the late reading, nothing else")
        #expect(live.filter(\.billable).map(\.deltaWh).reduce(0, +) == 19, "from 100 to 119 Wh, every Wh once")
        #expect(try db.unprocessed() == 0)
        #expect(try db.leaseOwner("lab-101") == nil)
    }
}
