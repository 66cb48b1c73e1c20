import AutoVoltCore
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Logging
import Synchronization
import Testing

/// The ledger on a PostgreSQL server that goes away (`pg_ctl stop -m immediate`, a crash) between
/// steps and in the middle of one: the step fails with an error every stage retries
/// (transient), the pool connects afresh once the server is back, and the step run again leaves
/// the ledger of the derivation from scratch, nothing doubled.
@Suite("ledger on PostgreSQL: the server crashes and comes back", .serialized)
struct LedgerPostgresRestartTests {
    typealias Conformance = LedgerStorageConformanceTests

    /// `PostgresLedgerStorage` with a hook run before the processed marks: the moment after a
    /// step's ledger writes and before its events are marked and its lease given back.
    final class CrashBeforeProcessedMarks: LedgerStorage {
        let inner: any LedgerStorage
        let hook = Mutex<(@Sendable () -> Void)?>(nil)
        /// Makes the next mark that replaces a held one fail: a step cut short after every write
        /// but its last mark.
        let failFinalMark = Mutex(false)
        struct Cut: Error {}

        init(_ inner: any LedgerStorage) { self.inner = inner }

        func unprocessedEventDevices(limit: Int) throws -> [String] { try inner.unprocessedEventDevices(limit: limit) }
        func devicesWithDipDue(now: EpochMillis, limit: Int) throws -> [String] { try inner.devicesWithDipDue(now: now, limit: limit) }
        func eventDeviceNames() throws -> [String] { try inner.eventDeviceNames() }
        func acquireLeases(_ names: [String], owner: String, now: EpochMillis, until: EpochMillis) throws -> [LedgerLease] {
            try inner.acquireLeases(names, owner: owner, now: now, until: until)
        }
        func renewLease(_ name: String, owner: String, until: EpochMillis) throws -> Bool { try inner.renewLease(name, owner: owner, until: until) }
        func releaseLeases(_ releases: [LedgerRelease], owner: String, derivedAt: EpochMillis) throws {
            try inner.releaseLeases(releases, owner: owner, derivedAt: derivedAt)
        }
        func pendingDipUntil(_ name: String) throws -> EpochMillis? { try inner.pendingDipUntil(name) }
        func unprocessedEvents(of names: [String], limit: Int) throws -> [LedgerNewEvent] { try inner.unprocessedEvents(of: names, limit: limit) }
        func earliestEvent(of name: String, unprocessedOnly: Bool) throws -> LedgerEventTimes? {
            try inner.earliestEvent(of: name, unprocessedOnly: unprocessedOnly)
        }
        func events(_ devices: [LedgerDeviceStart], limit: Int) throws -> [LedgerStoredEvent] { try inner.events(devices, limit: limit) }
        func presentEventHashes(of name: String, among hashes: [String]) throws -> Set<String> { try inner.presentEventHashes(of: name, among: hashes) }
        func markProcessed(_ events: [LedgerEventRef]) throws {
            if let crash = hook.withLock({ hook in defer { hook = nil }; return hook }) { crash() }
            try inner.markProcessed(events)
        }
        func liveEntries(_ query: LedgerEntryQuery) throws -> [StoredLedgerEntry] { try inner.liveEntries(query) }
        func parts(ofEntry id: String) throws -> Int? { try inner.parts(ofEntry: id) }
        func insertEntries(_ entries: [LedgerEntry], createdAt: EpochMillis) throws -> [String] { try inner.insertEntries(entries, createdAt: createdAt) }
        func reviveEntries(_ ids: [String]) throws { try inner.reviveEntries(ids) }
        func supersede(_ supersessions: [LedgerChange.Supersession], at: EpochMillis) throws { try inner.supersede(supersessions, at: at) }
        func markDirtyDays(_ days: [LedgerDirtyDay], at: EpochMillis, holdUntil: EpochMillis?, replacing: [String]) throws {
            if !replacing.isEmpty, failFinalMark.withLock({ fail in defer { fail = false }; return fail }) { throw Cut() }
            try inner.markDirtyDays(days, at: at, holdUntil: holdUntil, replacing: replacing)
        }
        func openReviewTickets(_ tickets: [LedgerReviewTicket]) throws { try inner.openReviewTickets(tickets) }
    }

    @Test func aStepCutShortByACrashFailsTransientlyAndTheNextOneWritesNothingTwice() throws {
        let db = try Conformance.LedgerDB(.postgres)
        let server = try #require(db.postgres)
        let storage = CrashBeforeProcessedMarks(db.storage)
        let store = db.store([Conformance.lab], storage: storage)
        let t = Conformance.day5 + 8 * Conformance.hour
        let minute = Conformance.minute
        var stored = try db.insert(Conformance.lab, (0..<10).map { Conformance.reading(t + EpochMillis($0) * minute, 100 + Double($0)) },
                                   receivedAt: t + 10 * minute)
        try store.advance("lab-101", now: t + 11 * minute)

        // Between steps: the step fails before it holds anything.
        stored += try db.insert(Conformance.lab, (10..<20).map { Conformance.reading(t + EpochMillis($0) * minute, 100 + Double($0)) }
            + [Conformance.reading(t + 90_000, 101.2)], // and a late one, between the readings at 60 and 120 s
                                receivedAt: t + 20 * minute)
        server.stop(mode: "immediate")
        do {
            try store.advance("lab-101", now: t + 21 * minute)
            Issue.record("a step went through with the server down")
        } catch {
            #expect(storageDisposition(of: error) == .transient, "\(error)")
        }
        try server.start()

        // In the middle of a step: its entries written, its events not marked, its lease never released.
        storage.hook.withLock { $0 = { server.stop(mode: "immediate") } }
        do {
            try store.advance("lab-101", now: t + 22 * minute)
            Issue.record("the step went through a crash")
        } catch {
            #expect(storageDisposition(of: error) == .transient, "\(error)")
        }
        #expect(store.snapshot.errors == 1)
        try server.start()
        #expect(try db.unprocessed() == 11)
        #expect(try db.leaseOwner("lab-101") == "worker:a", "the crashed step's lease, taken back at once by its owner")
        #expect(try store.advance("lab-101", now: t + 23 * minute) == .done(newEvents: 11))
        let live = try db.live("lab-101")
        #expect(live == Conformance.fromScratch(stored, device: Conformance.lab).map(Conformance.Row.init))
        #expect(try db.allEntries("lab-101").count == live.count + 1, "one interval superseded by the late reading, nothing else")
        #expect(try db.unprocessed() == 0)
        #expect(try db.leaseOwner("lab-101") == nil)
    }

    /// A step cut short after its writes, before its last mark: its run again derives the same
    /// entries and has nothing to mark, yet the day is aggregated from all its entries (the held
    /// mark made before the writes is released when the lease is taken again), never by folding
    /// onto sums that still hold the superseded interval.
    @Test(arguments: StorageBackend.allCases)
    func aStepCutShortBeforeItsLastMarkStillHasItsDayAggregatedWhole(_ backend: StorageBackend) throws {
        let db = try Conformance.LedgerDB(backend)
        let storage = CrashBeforeProcessedMarks(db.storage)
        let store = db.store([Conformance.lab], storage: storage)
        let aggregation = AggregationStore(storage: db.fixture.database.aggregationStorage(writeConcern: .acknowledged),
                                           registry: DeviceRegistry(devices: [Conformance.lab]), timeZone: Conformance.zone,
                                           logger: Logger(label: "test"))
        let t = Conformance.day5 + 8 * Conformance.hour, minute = Conformance.minute
        _ = try db.insert(Conformance.lab, (0..<10).map { Conformance.reading(t + EpochMillis($0) * minute, 100 + Double($0)) },
                          receivedAt: t + 10 * minute)
        try store.advance("lab-101", now: t + 11 * minute)
        _ = try aggregation.processDirtyDays(now: t + 11 * minute)
        let nov5 = CivilDate(year: 2026, month: 11, day: 5)
        let id = AggregateFigures.id(key: nov5.description, esp32Name: "lab-101")
        #expect(try aggregation.storage.aggregates(.daily, ids: [id])[id]?.figures.energyWh == 9)

        // A late reading splits the first interval (superseded) and a new one comes after the last.
        _ = try db.insert(Conformance.lab, [Conformance.reading(t + 30_000, 100.9), Conformance.reading(t + 10 * minute, 109.5)],
                          receivedAt: t + 12 * minute)
        storage.failFinalMark.withLock { $0 = true }
        #expect(throws: CrashBeforeProcessedMarks.Cut.self) { try store.advance("lab-101", now: t + 12 * minute) }
        #expect(try aggregation.processDirtyDays(now: t + 12 * minute) == 0, "the day is being written: left alone")
        #expect(try store.advance("lab-101", now: t + 13 * minute) == .done(newEvents: 2))
        // The run again derived the same entries, and only a new reading marks anything now.
        _ = try db.insert(Conformance.lab, [Conformance.reading(t + 11 * minute, 110)], receivedAt: t + 14 * minute)
        try store.advance("lab-101", now: t + 14 * minute)
        _ = try aggregation.processDirtyDays(now: t + 14 * minute)
        let folded = try #require(try aggregation.storage.aggregates(.daily, ids: [id])[id])
        #expect(folded.figures.energyWh == 10, "100 -> 110 once, the superseded interval not kept")
        _ = try aggregation.recalculate(start: nov5, end: nov5, classroom: nil, esp32Name: nil, now: t + 15 * minute)
        #expect(try aggregation.storage.aggregates(.daily, ids: [id])[id]?.figures == folded.figures)
    }
}
