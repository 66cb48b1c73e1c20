import AutoVoltCore
import AutoVoltLedgerCases
import AutoVoltMongo
import AutoVoltPostgres
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Logging
import Synchronization
import Testing

/// The contract of `LedgerStorage` (issue 21 §3), the same tests against MongoDB (dev-mongo) and
/// PostgreSQL (a server of the test's own): leases between two workers (expiry, renewal, the
/// tail vouched for by the version), idempotent retries (every write twice writes nothing twice),
/// the queries the derivation plans with, late data superseding what it replaces, dirty days and
/// tickets, and through `LedgerStore` the five late-glitch sequences of issue 20 §4
/// (`LateGlitchCases`) billing the same Wh, with the same entries, on both backends.
@Suite("ledger storage conformance: MongoDB and PostgreSQL", .serialized)
struct LedgerStorageConformanceTests {
    static let zone = TimeZone(identifier: "Asia/Kolkata")!
    /// 2026-11-05T00:00+05:30.
    static let day5: EpochMillis = 1_793_817_000_000
    static let minute: EpochMillis = 60_000
    static let hour: EpochMillis = 3_600_000
    static let lab = DeviceInfo(esp32Name: "lab-101", classroom: "CSE-301")

    /// An entry as compared between backends and with the derivation.
    struct Row: Equatable, CustomStringConvertible {
        var id: String
        var start: EpochMillis
        var end: EpochMillis
        var part: Int
        var date: String
        var deltaWh: Double
        var billable: Bool
        var resetMarker: Bool
        var reasons: [String]

        init(id: String, start: EpochMillis, end: EpochMillis, part: Int, date: String, deltaWh: Double, billable: Bool,
             resetMarker: Bool, reasons: [String]) {
            self.id = id
            self.start = start
            self.end = end
            self.part = part
            self.date = date
            self.deltaWh = deltaWh
            self.billable = billable
            self.resetMarker = resetMarker
            self.reasons = reasons
        }

        init(_ e: LedgerEntry) {
            self.init(id: e.id, start: e.start, end: e.end, part: e.part, date: e.date.description, deltaWh: e.deltaWh,
                      billable: e.billable, resetMarker: e.isResetMarker, reasons: e.reasons.map(\.rawValue))
        }

        var description: String { "\(deltaWh) Wh \(start)..\(end) part \(part) \(billable ? "" : "unbillable ")\(reasons)" }
    }

    struct Ticket: Equatable {
        var esp32Name: String
        var date: String
        var kind: String
        var detail: String
        var status: String
    }

    /// One backend's database (the shared `BackendDatabase`) with its ledger storage, and the
    /// reads the tests check the stored data with (straight from the collections or tables, not
    /// through the storage under test).
    final class LedgerDB: Sendable {
        let fixture: BackendDatabase
        let storage: any LedgerStorage

        init(_ backend: StorageBackend) throws {
            fixture = try BackendDatabase(backend, name: "ledger")
            storage = fixture.database.ledgerStorage(writeConcern: .acknowledged)
            // The tests write events of any month straight into `telemetry_events`: a default
            // partition takes them (the drain creates the months' own).
            try fixture.pool?.withConnection { connection in
                try connection.executeScript("CREATE TABLE telemetry_events_test_default PARTITION OF telemetry_events DEFAULT")
            }
        }

        var backend: StorageBackend { fixture.backend }
        var postgres: PostgresServer? { fixture.postgres }
        private var client: MongoClient? { fixture.client }
        private var pool: PostgresPool? { fixture.pool }

        /// Another worker's storage: a connection of its own to the same database.
        func secondStorage() throws -> any LedgerStorage {
            try fixture.anotherWorker().ledgerStorage(writeConcern: .acknowledged)
        }

        func store(_ devices: [DeviceInfo], owner: String = "worker:a", storage: (any LedgerStorage)? = nil) -> LedgerStore {
            LedgerStore(storage: storage ?? self.storage, registry: DeviceRegistry(devices: devices), timeZone: zone, owner: owner,
                        logger: Logger(label: "test"))
        }

        /// The event id and hash the drain gives a reading on the device clock.
        static func ids(_ device: String, _ reading: LedgerReading) -> (id: String, hash: String) {
            ("\(device)@\(reading.time)", EventHash.compute(esp32Name: device, timestampAsSent: String(reading.time), energyWhTotal: reading.energyWh))
        }

        /// Stores readings as the drain does (`processed: false`), received at `receivedAt`;
        /// returns them with the event hashes they were stored with.
        @discardableResult
        func insert(_ device: DeviceInfo, _ readings: [LedgerReading], receivedAt: EpochMillis) throws -> [LedgerReading] {
            let stored = readings.map { r in
                var copy = r
                copy.eventHash = Self.ids(device.esp32Name, r).hash
                return copy
            }
            switch backend {
            case .mongo:
                let docs: [BSONDocument] = stored.map { r in
                    var doc: BSONDocument = [
                        "_id": .string(Self.ids(device.esp32Name, r).id), "event_hash": .string(r.eventHash), "esp32_name": .string(device.esp32Name),
                        "classroom": .string(device.classroom), "device_ts": .millis(r.time), "received_at": .millis(receivedAt),
                        "energy_wh_total": .double(r.energyWh), "switch_state": [1], "clock": "device", "processed": false,
                    ]
                    if let boot = r.bootID { doc["boot_id"] = .string(boot) }
                    if let seq = r.seq { doc["seq"] = .int64(seq) }
                    return doc
                }
                _ = try client?.insertMany(docs, into: Collections.telemetryEvents, ordered: true, writeConcern: .acknowledged)
            case .postgres:
                try pool?.withConnection { connection in
                    for r in stored {
                        try connection.execute("""
                            INSERT INTO telemetry_events (id, event_hash, esp32_name, classroom, device_ts, received_at, energy_wh_total,
                                                          switch_state, clock, processed, boot_id, seq)
                            VALUES ($1, $2, $3, $4, $5::timestamptz, $6::timestamptz, $7::double precision, '[1]'::jsonb, 'device', false, $8, $9::bigint)
                            """, [Self.ids(device.esp32Name, r).id, r.eventHash, device.esp32Name, device.classroom,
                                  PostgresTimestamp(millis: r.time), PostgresTimestamp(millis: receivedAt), r.energyWh, r.bootID, r.seq])
                        // and in the ledger's queue, as the drain's transaction does
                        try connection.execute("""
                            INSERT INTO telemetry_unprocessed (id, esp32_name, device_ts, received_at)
                            VALUES ($1, $2, $3::timestamptz, $4::timestamptz)
                            """, [Self.ids(device.esp32Name, r).id, device.esp32Name, PostgresTimestamp(millis: r.time),
                                  PostgresTimestamp(millis: receivedAt)])
                    }
                }
            }
            return stored
        }

        /// Live entries of a device in time order.
        func live(_ name: String) throws -> [Row] {
            try entries(name, live: true)
        }

        /// Every entry of a device, superseded ones too.
        func allEntries(_ name: String) throws -> [Row] {
            try entries(name, live: false)
        }

        private func entries(_ name: String, live: Bool) throws -> [Row] {
            switch backend {
            case .mongo:
                var filter: BSONDocument = ["esp32_name": .string(name)]
                if live { filter["superseded_by"] = ["$exists": false] }
                return try client?.find(Collections.ledgers, filter: filter, sort: ["start_ts": 1, "part": 1]).map { doc in
                    Row(id: doc["_id"]?.stringValue ?? "?", start: doc["start_ts"]?.dateValue.map(LedgerStore.millis) ?? -1,
                        end: doc["end_ts"]?.dateValue.map(LedgerStore.millis) ?? -1, part: Int(doc["part"]?.int64Value ?? -1),
                        date: doc["date"]?.stringValue ?? "?", deltaWh: doc["delta_wh"]?.doubleValue ?? .nan,
                        billable: doc["billable"]?.boolValue ?? false, resetMarker: doc["is_reset_marker"]?.boolValue ?? false,
                        reasons: doc["quality"]?.documentValue?["reasons"]?.arrayValue?.compactMap(\.stringValue) ?? ["?"])
                } ?? []
            case .postgres:
                return try pool?.withConnection { connection in
                    try connection.query("""
                        SELECT id, start_ts, end_ts, part, date, delta_wh, billable, is_reset_marker, quality->'reasons' AS reasons
                        FROM device_consumption_ledgers WHERE esp32_name = $1\(live ? " AND superseded_by IS NULL" : "")
                        ORDER BY start_ts, part
                        """, [name]).map { row in
                        Row(id: row.string("id") ?? "?", start: row.millis("start_ts") ?? -1, end: row.millis("end_ts") ?? -1,
                            part: row.int("part") ?? -1, date: row.string("date") ?? "?", deltaWh: row.double("delta_wh") ?? .nan,
                            billable: row.bool("billable") ?? false, resetMarker: row.bool("is_reset_marker") ?? false,
                            reasons: row.json("reasons").flatMap { try? JSONDecoder().decode([String].self, from: Data($0.utf8)) } ?? ["?"])
                    }
                } ?? []
            }
        }

        /// `superseded_by` of an entry (nil: live, or not stored).
        func supersededBy(_ id: String) throws -> String? {
            switch backend {
            case .mongo:
                return try client?.findOne(Collections.ledgers, filter: ["_id": .string(id)])?["superseded_by"]?.stringValue
            case .postgres:
                return try pool?.withConnection { connection in
                    try connection.query("SELECT superseded_by FROM device_consumption_ledgers WHERE id = $1", [id]).first?.string("superseded_by")
                }
            }
        }

        func unprocessed() throws -> Int {
            switch backend {
            case .mongo: return try client?.countDocuments(Collections.telemetryEvents, filter: ["processed": false]) ?? -1
            case .postgres:
                // The queue holds exactly the events whose `processed` is false.
                return try pool?.withConnection { connection in
                    try connection.query("""
                        SELECT CASE WHEN (SELECT count(*) FROM telemetry_events WHERE NOT processed)
                                       = (SELECT count(*) FROM telemetry_unprocessed u
                                          WHERE EXISTS (SELECT 1 FROM telemetry_events e WHERE e.id = u.id AND NOT e.processed))
                                     AND (SELECT count(*) FROM telemetry_unprocessed)
                                       = (SELECT count(*) FROM telemetry_events WHERE NOT processed)
                               THEN (SELECT count(*) FROM telemetry_unprocessed) ELSE -1 END AS n
                        """).first?.int("n")
                } ?? -1
            }
        }

        /// Every event unprocessed again (a step that crashed before marking them).
        func markAllUnprocessed() throws {
            switch backend {
            case .mongo:
                _ = try client?.updateMany(Collections.telemetryEvents, filter: [:], update: ["$set": ["processed": false]], writeConcern: .acknowledged)
            case .postgres:
                try pool?.withConnection { connection in
                    try connection.executeScript("""
                        UPDATE telemetry_events SET processed = false;
                        INSERT INTO telemetry_unprocessed (id, esp32_name, device_ts, received_at)
                            SELECT id, esp32_name, device_ts, received_at FROM telemetry_events ON CONFLICT (id) DO NOTHING;
                        """)
                }
            }
        }

        /// Removes events, as their expiry would.
        func deleteEvents(receivedBefore: EpochMillis) throws {
            switch backend {
            case .mongo:
                _ = try client?.deleteMany(Collections.telemetryEvents, filter: ["received_at": ["$lt": .millis(receivedBefore)]],
                                           writeConcern: .acknowledged)
            case .postgres:
                try pool?.withConnection { connection in
                    try connection.execute("DELETE FROM telemetry_events WHERE received_at < $1::timestamptz", [PostgresTimestamp(millis: receivedBefore)])
                }
            }
        }

        func leaseOwner(_ name: String) throws -> String? {
            switch backend {
            case .mongo: return try client?.findOne(LedgerStore.stateCollection, filter: ["_id": .string(name)])?["lease_owner"]?.stringValue
            case .postgres:
                return try pool?.withConnection { connection in
                    try connection.query("SELECT lease_owner FROM ledger_state WHERE id = $1", [name]).first?.string("lease_owner")
                }
            }
        }

        /// `ledger_dirty_days`: id -> (classroom, dirty_at).
        /// The marks by their own key, each with its day ("esp32_name|date").
        func dirtyDays() throws -> [String: (classroom: String, at: EpochMillis, day: String)] {
            var out: [String: (classroom: String, at: EpochMillis, day: String)] = [:]
            switch backend {
            case .mongo:
                for doc in try client?.find(LedgerStore.dirtyDaysCollection, filter: [:]) ?? [] {
                    if let id = doc["_id"]?.stringValue, let at = doc["dirty_at"]?.dateValue.map(LedgerStore.millis) {
                        out[id] = (doc["classroom"]?.stringValue ?? "?", at,
                                   "\(doc["esp32_name"]?.stringValue ?? "?")|\(doc["date"]?.stringValue ?? "?")")
                    }
                }
            case .postgres:
                for row in try pool?.withConnection({ connection in
                    try connection.query("SELECT id, esp32_name, date, classroom, dirty_at FROM ledger_dirty_days")
                }) ?? [] {
                    if let id = row.string("id"), let at = row.millis("dirty_at") {
                        out[id] = (row.string("classroom") ?? "?", at, "\(row.string("esp32_name") ?? "?")|\(row.string("date") ?? "?")")
                    }
                }
            }
            return out
        }

        func tickets() throws -> [Ticket] {
            switch backend {
            case .mongo:
                return try client?.find(Collections.reviewTickets, filter: [:], sort: ["esp32_name": 1, "date": 1, "kind": 1]).map { doc in
                    Ticket(esp32Name: doc["esp32_name"]?.stringValue ?? "?", date: doc["date"]?.stringValue ?? "?", kind: doc["kind"]?.stringValue ?? "?",
                           detail: doc["detail"]?.stringValue ?? "?", status: doc["status"]?.stringValue ?? "?")
                } ?? []
            case .postgres:
                return try pool?.withConnection { connection in
                    try connection.query("""
                        SELECT esp32_name, date, kind, detail #>> '{}' AS detail, status FROM review_tickets ORDER BY esp32_name, date, kind
                        """).map { row in
                        Ticket(esp32Name: row.string("esp32_name") ?? "?", date: row.string("date") ?? "?", kind: row.string("kind") ?? "?",
                               detail: row.string("detail") ?? "?", status: row.string("status") ?? "?")
                    }
                } ?? []
            }
        }
    }

    // MARK: Helpers

    static func reading(_ time: EpochMillis, _ energy: Double, boot: String? = "b1", seq: Int64? = nil) -> LedgerReading {
        LedgerReading(eventHash: "", time: time, energyWh: energy, bootID: boot, seq: seq)
    }

    /// The derivation from scratch of readings (any order) at `now`.
    static func fromScratch(_ readings: [LedgerReading], device: DeviceInfo, now: EpochMillis = .max) -> [LedgerEntry] {
        var calendar = LocalCalendar(timeZone: zone)
        return LedgerDeriver.derive(readings.sorted { $0.time < $1.time }, device: device, calendar: &calendar, now: now)
    }

    static func stored(_ e: LedgerEntry) -> StoredLedgerEntry {
        StoredLedgerEntry(id: e.id, esp32Name: e.esp32Name, start: e.start, end: e.end, dateText: e.date.description, sourceEvents: e.sourceEvents)
    }

    /// `entry` superseded by `replacement` (Core's memberwise initializer is internal).
    static func supersession(_ entry: StoredLedgerEntry, by replacement: String) throws -> LedgerChange.Supersession {
        var supersession = try #require(LedgerDiff.plan(stored: [entry], derived: []).superseding.first)
        supersession.replacement = replacement
        return supersession
    }

    // MARK: Leases

    /// Two owners: a device is held by one at a time; the holder renews; an expired lease goes to
    /// the other; a restarted owner takes its own back at once; a release by one that no longer
    /// holds changes nothing; the tail is believed only with the version before the current one.
    @Test(arguments: StorageBackend.allCases)
    func leasesAreHeldByOneOwnerUntilTheyExpire(_ backend: StorageBackend) throws {
        let db = try LedgerDB(backend)
        let a = db.storage
        let b = try db.secondStorage()
        let t = Self.day5
        let first = try a.acquireLeases(["d1", "d2"], owner: "A", now: t, until: t + 30_000)
        #expect(first.sorted { $0.name < $1.name } == [LedgerLease(name: "d1", version: 1), LedgerLease(name: "d2", version: 1)])
        #expect(try b.acquireLeases(["d1", "d2", "d3"], owner: "B", now: t + 1_000, until: t + 31_000) == [LedgerLease(name: "d3", version: 1)])
        #expect(try b.renewLease("d1", owner: "B", until: t + 40_000) == false, "B does not hold d1")
        #expect(try a.renewLease("d1", owner: "A", until: t + 40_000))
        // At t+35 s d2's lease (until t+30 s) has expired, d1's (renewed to t+40 s) has not.
        #expect(try b.acquireLeases(["d1", "d2"], owner: "B", now: t + 35_000, until: t + 65_000) == [LedgerLease(name: "d2", version: 2)])
        #expect(try a.renewLease("d2", owner: "A", until: t + 70_000) == false, "A lost d2")
        #expect(try db.leaseOwner("d2") == "B")
        // A restarted A takes its own lease back at once.
        #expect(try a.acquireLeases(["d1"], owner: "A", now: t + 36_000, until: t + 66_000) == [LedgerLease(name: "d1", version: 2)])
        // A release by an owner that lost the lease changes nothing.
        try a.releaseLeases([LedgerRelease(name: "d2", version: 1, tail: LedgerTail(last: nil), pendingDipUntil: t)], owner: "A", derivedAt: t)
        #expect(try db.leaseOwner("d2") == "B")
        #expect(try a.pendingDipUntil("d2") == nil)

        // A release records the tail with the version held, and the dip's deadline.
        let tail = LedgerWindow.Interval(start: t - 60_000, end: t - 30_000)
        try a.releaseLeases([LedgerRelease(name: "d1", version: 2, tail: LedgerTail(last: tail), pendingDipUntil: t + 300_000)],
                            owner: "A", derivedAt: t + 37_000)
        #expect(try db.leaseOwner("d1") == nil)
        #expect(try a.pendingDipUntil("d1") == t + 300_000)
        #expect(try a.devicesWithDipDue(now: t + 299_999, limit: 10) == [])
        #expect(try b.devicesWithDipDue(now: t + 300_000, limit: 10) == ["d1"])
        #expect(try b.acquireLeases(["d1"], owner: "B", now: t + 38_000, until: t + 68_000)
            == [LedgerLease(name: "d1", version: 3, tailVersion: 2, tailStart: tail.start, tailEnd: tail.end)])
        // A step that cannot vouch for its tail clears tail_version; no dip clears the deadline.
        try b.releaseLeases([LedgerRelease(name: "d1", version: 3, tail: nil, pendingDipUntil: nil)], owner: "B", derivedAt: t + 39_000)
        let afterUnvouched = try a.acquireLeases(["d1"], owner: "A", now: t + 40_000, until: t + 70_000)
        #expect(afterUnvouched.map(\.version) == [4] && afterUnvouched.first?.tailVersion == nil)
        #expect(try a.pendingDipUntil("d1") == nil)
        #expect(try a.devicesWithDipDue(now: t + 10 * Self.hour, limit: 10) == [])
        // A tail with no interval (a device without entries yet): vouched for, and empty.
        try a.releaseLeases([LedgerRelease(name: "d1", version: 4, tail: LedgerTail(last: nil), pendingDipUntil: nil)], owner: "A", derivedAt: t + 41_000)
        #expect(try a.acquireLeases(["d1"], owner: "A", now: t + 42_000, until: t + 72_000) == [LedgerLease(name: "d1", version: 5, tailVersion: 4)])
    }

    /// Two workers asking for the same forty devices at the same moment, round after round:
    /// each device goes to exactly one of them.
    @Test(arguments: StorageBackend.allCases)
    func twoWorkersRacingForTheSameDevicesShareThemWithoutOverlap(_ backend: StorageBackend) throws {
        let db = try LedgerDB(backend)
        let storages = [db.storage, try db.secondStorage()]
        let names = (0..<40).map { "dev-\($0)" }
        for round in 0..<8 {
            let now = Self.day5 + EpochMillis(round) * Self.minute
            let results = Mutex<[Int: Result<[LedgerLease], any Error>]>([:])
            DispatchQueue.concurrentPerform(iterations: 2) { worker in
                // Each asks in its own order: the backend must not deadlock or double-grant.
                let asked = worker == 0 ? names : names.reversed()
                let result = Result { try storages[worker].acquireLeases(asked, owner: "W\(worker)", now: now, until: now + 30_000) }
                results.withLock { $0[worker] = result }
            }
            let held = try (0..<2).map { worker in try #require(results.withLock { $0[worker] }).get() }
            let first = Set(held[0].map(\.name)), second = Set(held[1].map(\.name))
            #expect(first.isDisjoint(with: second), "round \(round): both hold \(first.intersection(second).sorted())")
            #expect(first.union(second) == Set(names), "round \(round): nobody holds \(Set(names).subtracting(first.union(second)).sorted())")
            for worker in 0..<2 {
                try storages[worker].releaseLeases(held[worker].map { LedgerRelease(name: $0.name, version: $0.version, tail: nil, pendingDipUntil: nil) },
                                                   owner: "W\(worker)", derivedAt: now)
            }
        }
    }

    // MARK: Idempotent writes

    /// Every write of a step, done twice (a retry after a lost answer, or a step run again):
    /// entries are inserted once (the second time they are reported as stored), a supersession
    /// keeps its first replacement, a revived entry is live, a dirty day is one mark with the
    /// latest time, a ticket is the first one, processed events stay processed.
    @Test(arguments: StorageBackend.allCases)
    func writesDoneTwiceWriteNothingTwice(_ backend: StorageBackend) throws {
        let db = try LedgerDB(backend)
        let s = db.storage
        let readings = try db.insert(Self.lab, (0..<6).map { Self.reading(Self.day5 - 90 * Self.minute + EpochMillis($0) * Self.hour, 1000 + Double($0) * 10) },
                                     receivedAt: Self.day5 + 5 * Self.hour)
        let entries = Self.fromScratch(readings, device: Self.lab)
        #expect(entries.count == 6, "five intervals, one across midnight in two parts")
        #expect(try s.insertEntries(entries, createdAt: Self.day5) == [])
        #expect(Set(try s.insertEntries(entries, createdAt: Self.day5 + 1)) == Set(entries.map(\.id)))
        #expect(try db.allEntries(Self.lab.esp32Name) == entries.map(Row.init))

        let old = Self.stored(entries[0])
        try s.supersede([try Self.supersession(old, by: "first")], at: Self.day5)
        try s.supersede([try Self.supersession(old, by: "second")], at: Self.day5 + 1)
        #expect(try db.supersededBy(old.id) == "first")
        #expect(try db.live(Self.lab.esp32Name).map(\.id) == entries.dropFirst().map(\.id))
        try s.reviveEntries([old.id])
        try s.reviveEntries([old.id])
        #expect(try db.supersededBy(old.id) == nil)
        #expect(try db.live(Self.lab.esp32Name) == entries.map(Row.init))

        // One mark per call and day (its own key); a retried mark is stored once.
        let days = [LedgerDirtyDay(esp32Name: "lab-101", date: "2026-11-04", classroom: "CSE-301"),
                    LedgerDirtyDay(esp32Name: "lab-101", date: "2026-11-05", classroom: "CSE-301")]
        try s.markDirtyDays(days, at: Self.day5)
        try s.markDirtyDays(days, at: Self.day5)
        let marked = LedgerDirtyDay(esp32Name: "lab-101", date: "2026-11-05", classroom: "MOVED")
        try s.markDirtyDays([marked], at: Self.day5 + 7)
        let dirty = try db.dirtyDays()
        #expect(dirty.count == 3)
        #expect(dirty[days[0].markID]?.at == Self.day5)
        #expect(dirty[marked.markID]?.at == Self.day5 + 7 && dirty[marked.markID]?.classroom == "MOVED")

        let ticket = LedgerReviewTicket(esp32Name: "lab-101", date: "2026-11-05", kind: "implausible_power", detail: "first", createdAt: Self.day5,
                                        runID: "ledger")
        var again = ticket
        again.detail = "second"
        try s.openReviewTickets([ticket, again])
        try s.openReviewTickets([again])
        #expect(try db.tickets() == [Ticket(esp32Name: "lab-101", date: "2026-11-05", kind: "implausible_power", detail: "first", status: "open")])

        let pending = try s.unprocessedEvents(of: ["lab-101"], limit: 100)
        #expect(pending.count == 6)
        try s.markProcessed(pending.map(\.ref))
        try s.markProcessed(pending.map(\.ref))
        #expect(try db.unprocessed() == 0)
        #expect(try s.unprocessedEvents(of: ["lab-101"], limit: 100).isEmpty)
    }

    // MARK: Reads the derivation plans with

    /// The event reads: the oldest unprocessed events' devices in receive order, a device's
    /// events from a device time in device-time order, the earliest (unprocessed) event, which
    /// hashes are still there; and every kind of live-entry query against the same filter in
    /// Swift over the stored entries.
    @Test(arguments: StorageBackend.allCases)
    func readsReturnWhatTheDerivationAsksFor(_ backend: StorageBackend) throws {
        let db = try LedgerDB(backend)
        let s = db.storage
        let other = DeviceInfo(esp32Name: "lab-102", classroom: "CSE-301")
        let labReadings = try db.insert(Self.lab, (0..<40).map { Self.reading(Self.day5 - 20 * Self.hour + EpochMillis($0) * 3 * Self.hour, 100 + Double($0)) },
                                        receivedAt: Self.day5 + 200 * Self.hour)
        try db.insert(other, [Self.reading(Self.day5, 5)], receivedAt: Self.day5 + 100 * Self.hour)
        #expect(try s.unprocessedEventDevices(limit: 3) == ["lab-102", "lab-101", "lab-101"])
        #expect(Set(try s.eventDeviceNames()) == ["lab-101", "lab-102"])
        #expect(try s.unprocessedEvents(of: ["lab-101"], limit: 1_000).count == 40)
        #expect(try s.unprocessedEvents(of: ["lab-101", "lab-102"], limit: 10).count == 10)

        let from = labReadings[30].time
        let events = try s.events([LedgerDeviceStart("lab-101", from: from), LedgerDeviceStart("lab-102")], limit: 100)
        #expect(events.map(\.esp32Name) == Array(repeating: "lab-101", count: 10) + ["lab-102"])
        let otherReading = LedgerReading(eventHash: LedgerDB.ids("lab-102", Self.reading(Self.day5, 5)).hash, time: Self.day5, energyWh: 5, bootID: "b1")
        #expect(events.compactMap(\.reading) == Array(labReadings[30...]) + [otherReading])
        #expect(events.allSatisfy { !$0.processed && $0.ref.receivedAt != nil })
        #expect(try s.events([LedgerDeviceStart("lab-101")], limit: 5).compactMap(\.reading) == Array(labReadings.prefix(5)))

        #expect(try s.earliestEvent(of: "lab-101", unprocessedOnly: true)
            == LedgerEventTimes(deviceTs: labReadings[0].time, receivedAt: Self.day5 + 200 * Self.hour))
        try s.markProcessed(events.filter { $0.esp32Name == "lab-101" }.map(\.ref))
        #expect(try s.earliestEvent(of: "lab-101", unprocessedOnly: true)?.deviceTs == labReadings[0].time)
        try s.markProcessed(try s.unprocessedEvents(of: ["lab-101"], limit: 1_000).map(\.ref))
        #expect(try s.earliestEvent(of: "lab-101", unprocessedOnly: true) == nil)
        #expect(try s.earliestEvent(of: "lab-101", unprocessedOnly: false)?.deviceTs == labReadings[0].time)
        #expect(try s.earliestEvent(of: "nobody", unprocessedOnly: false) == nil)
        #expect(try s.presentEventHashes(of: "lab-101", among: [labReadings[3].eventHash, "gone", labReadings[7].eventHash])
            == [labReadings[3].eventHash, labReadings[7].eventHash])
        #expect(try s.presentEventHashes(of: "lab-102", among: [labReadings[3].eventHash]).isEmpty)

        // Entries: 3-hour intervals over five days, so several cross midnight in two parts.
        let entries = Self.fromScratch(labReadings, device: Self.lab)
        let others = Self.fromScratch(try db.insert(other, [Self.reading(Self.day5 + Self.hour, 7), Self.reading(Self.day5 + 2 * Self.hour, 9)],
                                                    receivedAt: Self.day5), device: other)
        _ = try s.insertEntries(entries + others, createdAt: Self.day5)
        let superseded = Self.stored(entries[5])
        try s.supersede([try Self.supersession(superseded, by: "rederived")], at: Self.day5)
        let live = (entries + others).map(Self.stored).filter { $0.id != superseded.id }
        func check(_ query: LedgerEntryQuery, _ expected: [StoredLedgerEntry], ordered: Bool, sourceLocation: SourceLocation = #_sourceLocation) throws {
            let got = try s.liveEntries(query)
            if ordered {
                #expect(got == expected, "\(query)", sourceLocation: sourceLocation)
            } else {
                #expect(got.sorted { $0.id < $1.id } == expected.sorted { $0.id < $1.id }, "\(query)", sourceLocation: sourceLocation)
            }
        }
        let lab = live.filter { $0.esp32Name == "lab-101" }
        let mid = entries[20].start
        try check(.of("lab-101"), lab, ordered: false)
        try check(LedgerEntryQuery(devices: [LedgerDeviceStart("lab-101", from: mid), LedgerDeviceStart("lab-102")]),
                  live.filter { $0.esp32Name == "lab-102" || $0.start >= mid }, ordered: false)
        try check(.of("lab-101", startBefore: mid, order: .startDescending, limit: 4),
                  Array(lab.filter { $0.start < mid }.sorted { $0.start > $1.start }.prefix(4)), ordered: true)
        try check(.of("lab-101", endAtLeast: mid, order: .startAscending, limit: 64), lab.filter { $0.end >= mid }.sorted { $0.start < $1.start },
                  ordered: true)
        try check(.of("lab-101", endBefore: mid, order: .startDescending, limit: 8),
                  Array(lab.filter { $0.end < mid }.sorted { $0.start > $1.start }.prefix(8)), ordered: true)
        try check(.of("lab-101", endAtMost: mid, order: .endDescending, limit: 1), Array(lab.filter { $0.end <= mid }.sorted { $0.end > $1.end }.prefix(1)),
                  ordered: true)
        try check(.of("lab-101", endAtLeast: mid, order: .endAscending, limit: 1), Array(lab.filter { $0.end >= mid }.sorted { $0.end < $1.end }.prefix(1)),
                  ordered: true)
        try check(.of("lab-101", startBefore: entries[30].start, from: mid), lab.filter { $0.start >= mid && $0.start < entries[30].start },
                  ordered: false)
        let split = try #require(entries.first { $0.parts == 2 && $0.part == 1 })
        try check(.of("lab-101", startAtMost: split.start + 50 * Self.hour, sourceEvents: split.sourceEvents, from: split.start - 50 * Self.hour),
                  lab.filter { $0.sourceEvents == split.sourceEvents }, ordered: false)
        #expect(try s.parts(ofEntry: split.id) == 2)
        #expect(try s.parts(ofEntry: entries[0].id) == 1)
        #expect(try s.parts(ofEntry: "none") == nil)
    }

    // MARK: Through LedgerStore

    /// A late reading replaces the interval it falls in by two: the old entry stays, superseded
    /// by the new entry over the same start; the day is marked dirty.
    @Test(arguments: StorageBackend.allCases)
    func aLateReadingSupersedesTheIntervalItFallsIn(_ backend: StorageBackend) throws {
        let db = try LedgerDB(backend)
        let store = db.store([Self.lab])
        let t = Self.day5 + 10 * Self.hour
        var stored = try db.insert(Self.lab, [Self.reading(t, 1000), Self.reading(t + 20 * Self.minute, 1020)], receivedAt: t + 20 * Self.minute)
        #expect(try store.advance("lab-101", now: t + 21 * Self.minute) == .done(newEvents: 2))
        let before = try db.live("lab-101")
        #expect(before.map(\.deltaWh) == [20])
        stored += try db.insert(Self.lab, [Self.reading(t + 10 * Self.minute, 1005)], receivedAt: t + 30 * Self.minute)
        #expect(try store.advance("lab-101", now: t + 31 * Self.minute) == .done(newEvents: 1))
        let after = try db.live("lab-101")
        #expect(after == Self.fromScratch(stored, device: Self.lab).map(Row.init))
        #expect(after.map(\.deltaWh) == [5, 15])
        #expect(try db.supersededBy(before[0].id) == after[0].id)
        #expect(Set(try db.dirtyDays().values.map(\.day)) == ["lab-101|2026-11-05"])
        #expect(try db.unprocessed() == 0)
        #expect(try db.leaseOwner("lab-101") == nil)
    }

    /// A step run again over the same events (a crash after its writes, before the processed
    /// marks and the lease's release) writes nothing new and supersedes nothing.
    @Test(arguments: StorageBackend.allCases)
    func aStepRunAgainWritesNothingTwice(_ backend: StorageBackend) throws {
        let db = try LedgerDB(backend)
        let store = db.store([Self.lab])
        var energy = 500.0
        let readings = (0..<30).map { i -> LedgerReading in
            energy = i == 12 ? 3 : (i == 20 ? energy - 20 : energy + 7) // a reset and a rollback among them
            return Self.reading(Self.day5 - 3 * Self.hour + EpochMillis(i) * 15 * Self.minute, energy)
        }
        let stored = try db.insert(Self.lab, readings, receivedAt: Self.day5 + 5 * Self.hour)
        try store.advance("lab-101", now: Self.day5 + 6 * Self.hour)
        let first = try db.allEntries("lab-101")
        #expect(try db.live("lab-101") == Self.fromScratch(stored, device: Self.lab).map(Row.init))
        try db.markAllUnprocessed()
        // The interrupted step never released: its version moved on, so its tail is not believed.
        _ = try db.storage.acquireLeases(["lab-101"], owner: "worker:a", now: Self.day5 + 6 * Self.hour, until: Self.day5 + 6 * Self.hour + 30_000)
        try store.advance("lab-101", now: Self.day5 + 7 * Self.hour)
        #expect(try db.allEntries("lab-101") == first)
        #expect(try db.live("lab-101") == first)
        #expect(store.snapshot.entriesSuperseded == 0)
        #expect(try db.unprocessed() == 0)
    }

    /// An interval above the device's maximum power is kept unbillable, with one review ticket
    /// per device and day; the same ticket text on both backends.
    @Test(arguments: StorageBackend.allCases)
    func implausiblePowerOpensOneTicketPerDeviceAndDay(_ backend: StorageBackend) throws {
        let db = try LedgerDB(backend)
        let store = db.store([Self.lab])
        let t = Self.day5 + 9 * Self.hour
        try db.insert(Self.lab, [Self.reading(t, 100), Self.reading(t + Self.minute, 90_000), Self.reading(t + 2 * Self.minute, 90_010),
                                 Self.reading(t + 3 * Self.minute, 200_000)], receivedAt: t + 3 * Self.minute)
        try store.advance("lab-101", now: t + 4 * Self.minute)
        let live = try db.live("lab-101")
        #expect(live.map(\.billable) == [false, true, false])
        let tickets = try db.tickets()
        #expect(tickets.count == 1)
        #expect(tickets.map { Ticket(esp32Name: $0.esp32Name, date: $0.date, kind: $0.kind, detail: "", status: $0.status) }
            == [Ticket(esp32Name: "lab-101", date: "2026-11-05", kind: "implausible_power", detail: "", status: "open")])
        #expect(tickets.first?.detail.hasPrefix("89900.0 Wh between 2026-11-05T03:30:00.000Z") == true, "\(tickets)")
    }

    /// A rebuild for a device moved to another classroom derives every entry anew (superseding
    /// the old ones); moved back, the old entries are derived again and made live (revived).
    @Test(arguments: StorageBackend.allCases)
    func entriesDerivedAgainAfterBeingSupersededAreLiveAgain(_ backend: StorageBackend) throws {
        let db = try LedgerDB(backend)
        let store = db.store([Self.lab])
        store.stepLimits.writeChunk = 3
        var energy = 500.0
        let readings = (0..<12).map { i -> LedgerReading in
            energy += i == 6 ? -400 : 7
            return Self.reading(Self.day5 + EpochMillis(i) * 5 * Self.minute, energy)
        }
        try db.insert(Self.lab, readings, receivedAt: Self.day5 + Self.hour)
        try store.advance("lab-101", now: Self.day5 + Self.hour)
        let original = try db.live("lab-101")
        #expect(original.count == 11)
        store.registry = DeviceRegistry(devices: [DeviceInfo(esp32Name: "lab-101", classroom: "MOVED")])
        let moved = try store.rebuild("lab-101", dates: nil, now: Self.day5 + 2 * Self.hour)
        #expect(moved.inserted == 11 && moved.superseded == 11 && moved.expired == nil)
        #expect(Set(try db.live("lab-101").map(\.id)).isDisjoint(with: original.map(\.id)))
        store.registry = DeviceRegistry(devices: [Self.lab])
        let back = try store.rebuild("lab-101", dates: nil, now: Self.day5 + 3 * Self.hour)
        #expect(back.inserted == 11)
        #expect(try db.live("lab-101") == original)
        #expect(try db.allEntries("lab-101").count == 22)
        #expect(try db.leaseOwner("lab-101") == nil)
    }

    /// A rebuild after the first day's events expired keeps that day and the interval out of
    /// it as they were, on both backends alike.
    @Test(arguments: StorageBackend.allCases)
    func aRebuildLeavesExpiredHistoryAsItWas(_ backend: StorageBackend) throws {
        let db = try LedgerDB(backend)
        let store = db.store([Self.lab])
        // Hourly readings over three local days, received as they were taken, long ago.
        let start = Self.day5 + 30 * Self.minute
        var all: [LedgerReading] = []
        for i in 0..<72 {
            let r = Self.reading(start + EpochMillis(i) * Self.hour, 1000 + Double(i) * 20)
            all += try db.insert(Self.lab, [r], receivedAt: r.time)
        }
        try store.advance("lab-101", now: start + 73 * Self.hour)
        let before = try db.live("lab-101")
        // Two years and a day later the first day's events are gone.
        let now = start + 731 * 24 * Self.hour
        try db.deleteEvents(receivedBefore: Self.day5 + 24 * Self.hour)
        let result = try store.rebuild("lab-101", dates: nil, now: now)
        let expired = try #require(result.expired)
        #expect(expired.lostDay.description == "2026-11-05")
        #expect(expired.lostDayEnd == Self.day5 + 24 * Self.hour)
        #expect(expired.floor == Self.day5 + 24 * Self.hour + 30 * Self.minute, "the end of the interval across the midnight")
        #expect(result.inserted == 0 && result.superseded == 0)
        #expect(try db.live("lab-101") == before)
    }

    /// Two workers stepping the same devices at once while readings arrive: at the end the
    /// live ledger is the derivation from scratch, every event processed, every lease given back.
    @Test(arguments: StorageBackend.allCases)
    func twoWorkersSteppingTheSameDevicesGiveTheLedgerOfOne(_ backend: StorageBackend) throws {
        let db = try LedgerDB(backend)
        let devices = (0..<4).map { DeviceInfo(esp32Name: "room-\($0)", classroom: "R") }
        let stores = [db.store(devices, owner: "worker:a"), db.store(devices, owner: "worker:b", storage: try db.secondStorage())]
        var rng = SplitMix64(seed: 21)
        var stored: [String: [LedgerReading]] = [:]
        var energy = Dictionary(uniqueKeysWithValues: devices.map { ($0.esp32Name, 100.0) })
        let failures = Mutex<[String]>([])
        for round in 0..<15 {
            let now = Self.day5 + EpochMillis(round) * 10 * Self.minute
            for device in devices {
                let name = device.esp32Name
                var batch: [LedgerReading] = []
                for k in 0..<3 {
                    // Mostly in order, now and then late (between stored readings) or a dip.
                    var time = now - EpochMillis(k) * 2 * Self.minute - 7_000
                    if rng.next() % 5 == 0 { time -= 5 * Self.minute + 13_000 }
                    if stored[name, default: []].contains(where: { $0.time == time }) || batch.contains(where: { $0.time == time }) { continue }
                    energy[name, default: 0] += Double(rng.next() % 9)
                    batch.append(Self.reading(time, rng.next() % 11 == 0 ? 0 : energy[name, default: 0]))
                }
                stored[name, default: []] += try db.insert(device, batch, receivedAt: now)
            }
            DispatchQueue.concurrentPerform(iterations: 2) { worker in
                do {
                    _ = try stores[worker].step(devices.map(\.esp32Name), now: now)
                } catch {
                    failures.withLock { $0.append("round \(round), worker \(worker): \(error)") }
                }
            }
        }
        #expect(failures.withLock { $0 } == [])
        // Whatever was busy for one worker in the last round is finished by a last step.
        let end = Self.day5 + 20 * Self.hour
        _ = try stores[0].step(devices.map(\.esp32Name), now: end)
        for device in devices {
            #expect(try db.live(device.esp32Name) == Self.fromScratch(stored[device.esp32Name] ?? [], device: device, now: end).map(Row.init),
                    "\(device.esp32Name)")
            #expect(try db.leaseOwner(device.esp32Name) == nil)
        }
        #expect(try db.unprocessed() == 0)
    }

    // MARK: The late-glitch sequences on both backends

    enum Mode: String, CaseIterable, Sendable {
        /// One step per reading.
        case live
        /// Step limits of zero events: every step a backlog derived in windows of two readings.
        case windowed
    }

    /// One device fed a case's readings one per step (the late one at each of
    /// `LateGlitchCases.lateDelays`), dips settled by a step at their deadline as the worker's
    /// dip check does: the live rows after every step.
    static func run(_ c: LateGlitchCases.Case, on db: LedgerDB, mode: Mode, index: Int, lateAt: EpochMillis) throws -> (steps: [[Row]], final: [Row]) {
        let device = DeviceInfo(esp32Name: "\(LateGlitchCases.lab.esp32Name)-\(mode.rawValue)-\(index)", classroom: LateGlitchCases.lab.classroom,
                                maxPowerW: LateGlitchCases.lab.maxPowerW, rollbackToleranceWh: LateGlitchCases.lab.rollbackToleranceWh)
        let store = db.store([device])
        if mode == .windowed { store.stepLimits = .init(events: 0, readings: 2) }
        var steps: [[Row]] = []
        func step(_ now: EpochMillis) throws {
            #expect(try store.advance(device.esp32Name, now: now) != .busy)
            steps.append(try db.live(device.esp32Name))
        }
        func settleDip(before now: EpochMillis) throws {
            if let until = try db.storage.pendingDipUntil(device.esp32Name), until <= now { try step(until) }
        }
        var now = LateGlitchCases.t0
        for (i, reading) in c.arrival.enumerated() {
            now = i == c.arrival.count - 1 ? LateGlitchCases.t0 + lateAt : max(now, reading.time + 1_000)
            try settleDip(before: now)
            try db.insert(device, [reading], receivedAt: now)
            try step(now)
        }
        try settleDip(before: now + 10 * LateGlitchCases.minute)
        #expect(try db.storage.pendingDipUntil(device.esp32Name) == nil, "a dip still waits")
        return (steps, try db.live(device.esp32Name))
    }

    /// Issue 20 §4's five sequences through `LedgerStore` on MongoDB and on PostgreSQL: after
    /// every step both backends have the same live entries (ids, times, deltas, reasons), and at
    /// the end both bill the case's Wh with the case's entries.
    @Test(arguments: LateGlitchCases.cases)
    func theLateGlitchSequencesBillTheSameOnBothBackends(_ c: LateGlitchCases.Case) throws {
        let mongo = try LedgerDB(.mongo)
        let postgres = try LedgerDB(.postgres)
        var index = 0
        for mode in Mode.allCases {
            for lateAt in LateGlitchCases.lateDelays {
                index += 1
                let label = "\(c.name) [\(mode.rawValue), late at +\(lateAt / 1000) s]"
                let onMongo = try Self.run(c, on: mongo, mode: mode, index: index, lateAt: lateAt)
                let onPostgres = try Self.run(c, on: postgres, mode: mode, index: index, lateAt: lateAt)
                #expect(onPostgres.steps.map { $0.map(\.id) } == onMongo.steps.map { $0.map(\.id) }, "\(label): the backends differ along the way")
                #expect(onPostgres.final == onMongo.final, "\(label)")
                for (backend, rows) in [("mongo", onMongo.final), ("postgres", onPostgres.final)] {
                    let billed = rows.filter(\.billable).map(\.deltaWh).reduce(0, +)
                    #expect(billed == c.billedWh, "\(label) on \(backend): billed \(billed) Wh: \(rows)")
                    #expect(rows.map(\.deltaWh) == c.entries.map(\.delta), "\(label) on \(backend): \(rows)")
                    #expect(rows.map(\.reasons) == c.entries.map { $0.reasons.map(\.rawValue) }, "\(label) on \(backend): \(rows)")
                }
            }
        }
        #expect(try postgres.unprocessed() == 0 && mongo.unprocessed() == 0)
    }
}
