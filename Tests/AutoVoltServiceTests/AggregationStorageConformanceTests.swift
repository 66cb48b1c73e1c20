import AutoVoltCore
import AutoVoltMongo
import AutoVoltPostgres
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Logging
import Synchronization
import Testing

/// The aggregation stage's logic over one backend's storage, on a server of the test's own
/// (dev-mongo, or a real PostgreSQL 15), with the ledger's rows written directly as the ledger
/// writes them (live entries, superseded ones, dirty-day marks).
final class AggregationStorageRig: Sendable {
    static let zone = TimeZone(identifier: "Asia/Kolkata")!
    /// 2026-11-05T00:00+05:30
    static let day5: EpochMillis = 1_793_817_000_000
    static let hour: EpochMillis = 3_600_000
    static let day: EpochMillis = 24 * hour
    /// Long after November: every day of it is closed.
    static let later: EpochMillis = day5 + 40 * day

    let fixture: BackendDatabase
    let registry = DeviceRegistry(devices: [
        DeviceInfo(esp32Name: "lab-101", classroom: "CSE-301"),
        DeviceInfo(esp32Name: "lab-102", classroom: "CSE-301"),
        DeviceInfo(esp32Name: "lab-201", classroom: "EEE-105"),
    ])
    let logger = Logger(label: "test")
    let storage: any AggregationStorage
    let store: AggregationStore
    private let marks = Mutex<EpochMillis>(1_800_000_000_000)

    init(_ backend: StorageBackend) throws {
        fixture = try BackendDatabase(backend, name: "aggregation")
        storage = fixture.database.aggregationStorage(writeConcern: .acknowledged)
        store = AggregationStore(storage: storage, registry: registry, timeZone: Self.zone, logger: logger)
    }

    var backend: StorageBackend { fixture.backend }
    var postgres: PostgresServer? { fixture.postgres }
    private var client: MongoClient? { fixture.client }
    private var pool: PostgresPool? { fixture.pool }

    /// Another worker: its own connections to the same database.
    func otherWorker() throws -> AggregationStore {
        AggregationStore(storage: try fixture.anotherWorker(poolSize: 4).aggregationStorage(writeConcern: .acknowledged), registry: registry,
                         timeZone: Self.zone, logger: logger)
    }

    static func date(_ instant: EpochMillis) -> CivilDate {
        var calendar = LocalCalendar(timeZone: zone)
        return calendar.date(of: instant)
    }

    static func midnight(_ date: CivilDate) -> EpochMillis { LocalCalendar(timeZone: zone).startOfDay(date) }

    /// A live ledger entry [start, end) of `deltaWh`, and its day marked dirty (as the ledger does).
    @discardableResult
    func entry(_ name: String, _ start: EpochMillis, _ end: EpochMillis, _ deltaWh: Double, billable: Bool = true,
               confidence: Confidence = .high, mark: Bool = true) throws -> String {
        let id = "e-\(name)-\(start)-\(end)"
        let date = Self.date(start).description
        let classroom = registry.resolve(name).classroom
        switch backend {
        case .mongo:
            _ = try client?.insertMany([[
                "_id": .string(id), "esp32_name": .string(name), "classroom": .string(classroom), "start_ts": .millis(start),
                "end_ts": .millis(end), "date": .string(date), "delta_wh": .double(deltaWh), "is_reset_marker": false,
                "billable": .bool(billable), "quality": ["confidence": .string(confidence.rawValue), "reasons": []],
                "source_events": [], "part": 1, "parts": 1, "derivation_version": 1, "created_at": .millis(start),
            ]], into: Collections.ledgers, ordered: true, writeConcern: .acknowledged)
        case .postgres:
            try pool?.withConnection { connection in
                try connection.execute("""
                    INSERT INTO device_consumption_ledgers (id, esp32_name, classroom, start_ts, end_ts, date, delta_wh, is_reset_marker,
                        billable, quality, source_events, part, parts, derivation_version, created_at)
                    VALUES ($1, $2, $3, $4::timestamptz, $5::timestamptz, $6, $7, false, $8, $9::jsonb, '[]'::jsonb, 1, 1, 1, $4::timestamptz)
                    """, [id, name, classroom, PostgresTimestamp(millis: start), PostgresTimestamp(millis: end), date, deltaWh, billable,
                          PostgresJSON("{\"confidence\": \"\(confidence.rawValue)\", \"reasons\": []}")])
            }
        }
        if mark { try markDirty(name, Self.date(start), changedFrom: start) }
        return id
    }

    /// What a late reading does to an entry: it stays, superseded, and its day is marked from its
    /// start (the id says which: "e-name-start-end").
    func supersede(_ id: String, by replacement: String = "late") throws {
        switch backend {
        case .mongo:
            _ = try client?.updateOne(Collections.ledgers, filter: ["_id": .string(id)],
                                      update: ["$set": ["superseded_by": .string(replacement), "superseded_at": .millis(Self.later)]],
                                      upsert: false, writeConcern: .acknowledged)
        case .postgres:
            try pool?.withConnection { connection in
                try connection.execute("UPDATE device_consumption_ledgers SET superseded_by = $2, superseded_at = now() WHERE id = $1", [id, replacement])
            }
        }
        let parts = id.split(separator: "-")
        if parts.count >= 4, let start = EpochMillis(parts[parts.count - 2]) {
            try markDirty(parts[1..<(parts.count - 2)].joined(separator: "-"), Self.date(start), changedFrom: start)
        }
    }

    /// Marks a device-day through the ledger's own storage, each mark later than the one before;
    /// `changedFrom` nil: not known (the day is read whole).
    func markDirty(_ name: String, _ date: CivilDate, changedFrom: EpochMillis? = nil) throws {
        let at = marks.withLock { value in
            value += 1_000
            return value
        }
        try fixture.database.ledgerStorage(writeConcern: .acknowledged).markDirtyDays(
            [LedgerDirtyDay(esp32Name: name, date: date.description, classroom: registry.resolve(name).classroom, changedFrom: changedFrom)], at: at)
    }

    func daily(_ name: String, _ date: String) throws -> StoredAggregate? {
        let id = AggregateFigures.id(key: date, esp32Name: name)
        return try storage.aggregates(.daily, ids: [id])[id]
    }

    func monthly(_ name: String, _ month: String) throws -> StoredAggregate? {
        let id = AggregateFigures.id(key: month, esp32Name: name)
        return try storage.aggregates(.monthly, ids: [id])[id]
    }

    struct HistoryRow: Equatable {
        var version: Int64
        var energyWh: Double?
        var cost: Double?
    }

    /// The replaced versions of one aggregate, oldest first.
    func history(_ aggregateID: String) throws -> [HistoryRow] {
        switch backend {
        case .mongo:
            guard let client else { return [] }
            return try client.find(AggregateHistory.collection, filter: ["aggregate_id": .string(aggregateID)], sort: ["version": 1], limit: 1_000)
                .map { HistoryRow(version: $0["version"]?.int64Value ?? -1, energyWh: $0["energy_wh"]?.doubleValue, cost: $0["cost"]?.doubleValue) }
        case .postgres:
            guard let pool else { return [] }
            return try pool.withConnection { connection in
                try connection.query("SELECT version, energy_wh, cost FROM aggregate_history WHERE aggregate_id = $1 ORDER BY version", [aggregateID])
                    .map { HistoryRow(version: $0.int64("version") ?? -1, energyWh: $0.double("energy_wh"), cost: $0.double("cost")) }
            }
        }
    }

    func dirtyMarkCount() throws -> Int { try storage.dirtyDays(limit: 10_000, now: Self.later).count }
}

@Suite("aggregation storage: one contract on MongoDB and PostgreSQL", .serialized)
struct AggregationStorageConformanceTests {
    typealias Rig = AggregationStorageRig
    static let nov5 = "2026-11-05", nov6 = "2026-11-06"

    /// A tariff is a new version, never an edit; adding one reprices every day and month it
    /// reaches (a classroom's own only its classroom, from its instant on), each a new version.
    @Test(arguments: StorageBackend.allCases)
    func tariffsAreAddedListedAndApplyRetroactively(_ backend: StorageBackend) throws {
        let rig = try Rig(backend)
        try rig.entry("lab-101", Rig.day5 + Rig.hour, Rig.day5 + 2 * Rig.hour, 300)
        try rig.entry("lab-101", Rig.day5 + Rig.day + Rig.hour, Rig.day5 + Rig.day + 2 * Rig.hour, 500)
        try rig.entry("lab-201", Rig.day5 + Rig.hour, Rig.day5 + 2 * Rig.hour, 200)
        #expect(try rig.store.processDirtyDays(now: Rig.later) == 3)
        let before = try #require(try rig.daily("lab-101", Self.nov5))
        #expect(before.version == 1 && before.figures.energyWh == 300 && before.figures.cost == nil)
        #expect(try rig.monthly("lab-101", "2026-11")?.figures.energyWh == 800)

        let nov1 = Rig.midnight(CivilDate(year: 2026, month: 11, day: 1))
        let global = try rig.store.addTariff(costPerKwh: 10, currency: "INR", effectiveFrom: nov1, classroom: nil, notes: "campus",
                                             now: Rig.later)
        #expect(global.recalculated == 5) // three days, two months
        #expect(global.changedCount == 5)
        #expect(try rig.daily("lab-101", Self.nov5)?.figures.cost == 3)
        #expect(try rig.daily("lab-101", Self.nov5)?.version == 2)
        #expect(try rig.daily("lab-101", Self.nov6)?.figures.cost == 5)
        #expect(try rig.daily("lab-201", Self.nov5)?.figures.cost == 2)
        #expect(try rig.monthly("lab-101", "2026-11")?.figures.cost == 8)
        #expect(try rig.monthly("lab-101", "2026-11")?.version == 2)

        let cse = try rig.store.addTariff(costPerKwh: 20, currency: "INR", effectiveFrom: Rig.day5 + Rig.day, classroom: "CSE-301",
                                          notes: nil, now: Rig.later + 1)
        #expect(cse.recalculated == 2) // lab-101's 6th and its month; not the 5th, not EEE-105
        let nov6 = try #require(try rig.daily("lab-101", Self.nov6))
        #expect(nov6.figures.cost == 10 && nov6.version == 3)
        #expect(nov6.figures.day?.costVersionIDs == [cse.tariff.id])
        #expect(try rig.daily("lab-101", Self.nov5)?.version == 2)
        #expect(try rig.daily("lab-201", Self.nov5)?.version == 2)
        #expect(try rig.monthly("lab-101", "2026-11")?.figures.cost == 13)

        let book = try rig.store.listTariffs()
        #expect(book.map(\.id) == [global.tariff.id, cse.tariff.id])
        #expect(book.first == Tariff(id: global.tariff.id, costPerKwh: 10, currency: "INR", effectiveFrom: nov1, classroom: nil,
                                     createdAt: Rig.later, notes: "campus"))
        #expect(book.last?.classroom == "CSE-301")
    }

    /// Every recomputation is a new version (contract section 4); the figures, and what the
    /// report calls changed, move only with the data. An aggregate no recomputation reaches keeps its version.
    @Test(arguments: StorageBackend.allCases)
    func versionsCountRecomputationsAndFiguresMoveOnlyWithTheData(_ backend: StorageBackend) throws {
        let rig = try Rig(backend)
        try rig.entry("lab-101", Rig.day5 + Rig.hour, Rig.day5 + 2 * Rig.hour, 300)
        try rig.entry("lab-101", Rig.day5 + Rig.day + Rig.hour, Rig.day5 + Rig.day + 2 * Rig.hour, 500)
        _ = try rig.store.processDirtyDays(now: Rig.later)
        let first = try #require(try rig.daily("lab-101", Self.nov5))
        let day5 = CivilDate(year: 2026, month: 11, day: 5)
        let again = try rig.store.recalculate(start: day5, end: day5, classroom: nil, esp32Name: nil, now: Rig.later + 1)
        #expect(again.recalculated == 2 && again.changedCount == 0 && again.changed.isEmpty)
        let second = try #require(try rig.daily("lab-101", Self.nov5))
        #expect(second.version == 2)
        #expect(second.figures == first.figures)
        #expect(try rig.daily("lab-101", Self.nov6)?.version == 1)

        try rig.entry("lab-101", Rig.day5 + 3 * Rig.hour, Rig.day5 + 4 * Rig.hour, 50, mark: false)
        let moved = try rig.store.recalculate(start: day5, end: day5, classroom: nil, esp32Name: nil, now: Rig.later + 2)
        #expect(moved.changedCount == 2)
        let daily = try #require(moved.changed.first { $0.kind == "daily" })
        #expect(daily.oldEnergyWh == 300 && daily.newEnergyWh == 350 && daily.version == 3 && daily.figuresChanged)
        #expect(try rig.monthly("lab-101", "2026-11")?.figures.energyWh == 850)
    }

    /// Another worker writes between this one's read and its write: this write does not apply
    /// over it; the aggregate is computed again from fresh inputs (the other's tariff included)
    /// and written on top. Both are versions, the other's is in the history, nothing is lost
    /// and the figures written last are not older than the ones they replace.
    @Test(arguments: StorageBackend.allCases)
    func aWriterThatLosesTheRaceReadsAgainAndNothingIsLost(_ backend: StorageBackend) throws {
        let rig = try Rig(backend)
        try rig.entry("lab-101", Rig.day5 + Rig.hour, Rig.day5 + 2 * Rig.hour, 300)
        _ = try rig.store.processDirtyDays(now: Rig.later)
        try rig.storage.insertTariff(Tariff(id: "t-first", costPerKwh: 10, currency: "INR", effectiveFrom: 0, classroom: nil, createdAt: Rig.later))
        let other = try rig.otherWorker()
        let day = CivilDate(year: 2026, month: 11, day: 5)
        let otherFailed = Mutex<String?>(nil)
        rig.store.beforeVersionedWrite = {
            rig.store.beforeVersionedWrite = nil
            // The other worker, with a tariff this one has not seen, gets there first.
            do {
                try rig.storage.insertTariff(Tariff(id: "t-second", costPerKwh: 20, currency: "INR", effectiveFrom: 1, classroom: nil,
                                                    createdAt: Rig.later + 1))
                _ = try other.recalculate(start: day, end: day, classroom: nil, esp32Name: nil, now: Rig.later + 1)
            } catch {
                otherFailed.withLock { $0 = "\(error)" }
            }
        }
        let report = try rig.store.recalculate(start: day, end: day, classroom: nil, esp32Name: nil, now: Rig.later + 2)
        #expect(otherFailed.withLock { $0 } == nil)
        // The day and its month recomputed once each; written again with what the other wrote.
        #expect(report.recalculated == 2 && report.changedCount == 0)
        let stored = try #require(try rig.daily("lab-101", Self.nov5))
        // Computed again after the lost race, with the book as it is now (20 from t-second).
        #expect(stored.version == 3 && stored.figures.cost == 6)
        let history = try rig.history("\(Self.nov5)|lab-101")
        #expect(history.map(\.version) == [1, 2])
        #expect(history.last?.cost == 6)
    }

    /// A day close computes a day, and before it writes, the ledger appends an entry and the
    /// aggregation stage writes the day with it (and clears the mark). The close's write does not
    /// apply; it computes the day again and writes what the ledger says now. Before the fix it
    /// wrote the figures it had read, on top, and nothing marked the day again: the bill lost the
    /// entry until someone ran `recalculate`. The month follows the day.
    @Test(arguments: StorageBackend.allCases)
    func aDayCloseThatLosesToTheAggregationStageNeverWritesOlderFigures(_ backend: StorageBackend) throws {
        let rig = try Rig(backend)
        try rig.entry("lab-101", Rig.day5 + Rig.hour, Rig.day5 + 2 * Rig.hour, 300)
        _ = try rig.store.processDirtyDays(now: Rig.day5 + 3 * Rig.hour)
        let stage = try rig.otherWorker()
        let stageFailed = Mutex<String?>(nil)
        rig.store.beforeVersionedWrite = {
            rig.store.beforeVersionedWrite = nil
            do {
                try rig.entry("lab-101", Rig.day5 + 2 * Rig.hour, Rig.day5 + 3 * Rig.hour, 45)
                #expect(try stage.processDirtyDays(now: Rig.later) == 1)
            } catch {
                stageFailed.withLock { $0 = "\(error)" }
            }
        }
        let day = CivilDate(year: 2026, month: 11, day: 5)
        _ = try rig.store.closeDay(day, now: Rig.later)
        #expect(stageFailed.withLock { $0 } == nil)
        #expect(try rig.dirtyMarkCount() == 0)
        let stored = try #require(try rig.daily("lab-101", Self.nov5))
        #expect(stored.figures.energyWh == 345)
        #expect(stored.version == 3)
        #expect(try rig.monthly("lab-101", "2026-11")?.figures.energyWh == 345)
        // The history keeps the closed day's replaced version, and only versions the day had (on
        // MongoDB the close's lost attempt copied v1 before its write; PostgreSQL rolls that back).
        let history = try rig.history("\(Self.nov5)|lab-101").map { [$0.version: $0.energyWh] }
        #expect(history.contains([2: 345]))
        #expect(history.allSatisfy { $0 == [1: 300] || $0 == [2: 345] }, "\(history)")
    }

    /// Two workers recompute the same days at the same moment, round after round: neither
    /// fails, every recomputation is one version, and the history holds each earlier version once.
    @Test(arguments: StorageBackend.allCases)
    func twoWorkersRecomputingAtOnceNeverLoseOrDoubleAVersion(_ backend: StorageBackend) throws {
        let rig = try Rig(backend)
        for device in ["lab-101", "lab-102", "lab-201"] {
            try rig.entry(device, Rig.day5 + Rig.hour, Rig.day5 + 2 * Rig.hour, 100)
            try rig.entry(device, Rig.day5 + Rig.day + Rig.hour, Rig.day5 + Rig.day + 2 * Rig.hour, 400)
        }
        _ = try rig.store.processDirtyDays(now: Rig.later)
        let other = try rig.otherWorker()
        let rounds = 6
        for round in 1...rounds {
            try rig.storage.insertTariff(Tariff(id: "race-\(round)", costPerKwh: Double(round), currency: "INR", effectiveFrom: 0, classroom: nil,
                                                createdAt: Rig.later + Int64(round)))
            let start = CivilDate(year: 2026, month: 11, day: 4), end = CivilDate(year: 2026, month: 11, day: 6)
            let failures = Mutex<[String]>([])
            DispatchQueue.concurrentPerform(iterations: 2) { i in
                do {
                    _ = try (i == 0 ? rig.store : other).recalculate(start: start, end: end, classroom: nil, esp32Name: nil,
                                                                     now: Rig.later + Int64(round) * 1000)
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
            }
            #expect(failures.withLock { $0 } == [])
        }
        for device in ["lab-101", "lab-102", "lab-201"] {
            for (date, energy) in [(Self.nov5, 100.0), (Self.nov6, 400.0)] {
                let stored = try #require(try rig.daily(device, date))
                #expect(stored.version == Int64(2 * rounds + 1), "\(device) \(date)")
                #expect(abs((stored.figures.cost ?? -1) - Double(rounds) * energy / 1000) < 1e-9, "\(device) \(date)")
                #expect(try rig.history("\(date)|\(device)").map(\.version) == Array(1...Int64(2 * rounds)), "\(device) \(date)")
            }
            let month = try #require(try rig.monthly(device, "2026-11"))
            #expect(month.version == Int64(2 * rounds + 1))
            #expect(try rig.history("2026-11|\(device)").map(\.version) == Array(1...Int64(2 * rounds)))
        }
    }

    /// The storage's versioned write on its own: conditional on the version read (or on absence),
    /// one of two racing writes applies, the replaced version is copied once, and what is read
    /// back is what was written, field for field.
    @Test(arguments: StorageBackend.allCases)
    func versionedWritesAreConditionalAndReadBackWhole(_ backend: StorageBackend) throws {
        let rig = try Rig(backend)
        let figures = AggregateFigures(
            kind: .daily, key: Self.nov5, esp32Name: "lab-101", classroom: "CSE-301", energyWh: 1234.5, cost: nil, currency: nil,
            day: DayDetail(costVersionIDs: ["t-a", "t-b"], coverage: 0.75, confidence: [.high: 3, .medium: 0, .low: 1], entries: 4,
                           unpricedWh: 0.1 + 0.2, overlapMillis: 60_000, hourlyWh: (0..<24).map { Double($0) / 3 },
                           costSegments: [CostSegment(costVersionID: "t-a", costPerKwh: 7.25, energyWh: 1000, cost: 7.25),
                                          CostSegment(costVersionID: "t-b", costPerKwh: 8, energyWh: 234.5, cost: 1.876)],
                           complete: true))
        let id = figures.id
        #expect(try rig.storage.writeAggregates(.daily, [AggregateWrite(figures: figures, replacing: nil, keepsHistory: true)],
                                                now: Rig.later, writeID: "w1") == [id])
        // A second first version (another worker that also found none) does not apply, and does not fail.
        var other = figures
        other.energyWh = 1
        #expect(try rig.storage.writeAggregates(.daily, [AggregateWrite(figures: other, replacing: nil, keepsHistory: true)],
                                                now: Rig.later, writeID: "w2") == [])
        let v1 = try #require(try rig.daily("lab-101", Self.nov5))
        #expect(v1.figures == figures)
        #expect(v1.version == 1 && v1.computedAt == Rig.later && v1.writeID == "w1")

        var next = figures
        next.cost = 9.126
        next.currency = "INR"
        #expect(try rig.storage.writeAggregates(.daily, [AggregateWrite(figures: next, replacing: v1, keepsHistory: true)],
                                                now: Rig.later + 1, writeID: "w3") == [id])
        // The same version read, written again by a slower worker: refused.
        #expect(try rig.storage.writeAggregates(.daily, [AggregateWrite(figures: other, replacing: v1, keepsHistory: true)],
                                                now: Rig.later + 2, writeID: "w4") == [])
        let v2 = try #require(try rig.daily("lab-101", Self.nov5))
        #expect(v2.version == 2 && v2.figures == next && v2.writeID == "w3")
        #expect(try rig.history(id) == [.init(version: 1, energyWh: 1234.5, cost: nil)])
        // Without history, the replaced version is not copied.
        #expect(try rig.storage.writeAggregates(.daily, [AggregateWrite(figures: figures, replacing: v2, keepsHistory: false)],
                                                now: Rig.later + 3, writeID: "w5") == [id])
        #expect(try rig.history(id).map(\.version) == [1])

        // A batch where one write lost: the others apply, the loser is named by its absence.
        let month = AggregateFigures(kind: .monthly, key: "2026-11", esp32Name: "lab-101", classroom: "CSE-301", energyWh: 5,
                                     cost: 0.05, currency: "INR", days: 2)
        let other2 = AggregateFigures(kind: .monthly, key: "2026-11", esp32Name: "lab-102", classroom: "CSE-301", energyWh: 6,
                                      cost: nil, currency: nil, days: 1)
        #expect(try rig.storage.writeAggregates(.monthly, [AggregateWrite(figures: month, replacing: nil, keepsHistory: true)],
                                                now: Rig.later, writeID: "m1") == [month.id])
        let read = try #require(try rig.monthly("lab-101", "2026-11"))
        #expect(read.figures == month)
        var moved = month
        moved.energyWh = 6
        #expect(try rig.storage.writeAggregates(.monthly, [AggregateWrite(figures: moved, replacing: read, keepsHistory: true)],
                                                now: Rig.later + 1, writeID: "m2") == [month.id])
        let batch = [AggregateWrite(figures: month, replacing: read, keepsHistory: true),
                     AggregateWrite(figures: other2, replacing: nil, keepsHistory: true)]
        #expect(try rig.storage.writeAggregates(.monthly, batch, now: Rig.later + 2, writeID: "m3") == [other2.id])
        #expect(try rig.monthly("lab-101", "2026-11")?.version == 2)
        #expect(try rig.monthly("lab-101", "2026-11")?.figures.energyWh == 6)
        #expect(try rig.history(month.id) == [.init(version: 1, energyWh: 5, cost: 0.05)])
    }

    /// The live figures of a day still open move with every ledger step without filling the
    /// history; once the day is closed every replaced version is kept.
    @Test(arguments: StorageBackend.allCases)
    func historyKeepsClosedDaysVersionsNotTheLiveUpdatesOfAnOpenDay(_ backend: StorageBackend) throws {
        let rig = try Rig(backend)
        let duringTheDay = Rig.day5 + 10 * Rig.hour
        try rig.entry("lab-101", Rig.day5 + Rig.hour, Rig.day5 + 2 * Rig.hour, 300)
        #expect(try rig.store.processDirtyDays(now: duringTheDay) == 1)
        try rig.entry("lab-101", Rig.day5 + 2 * Rig.hour, Rig.day5 + 3 * Rig.hour, 100)
        #expect(try rig.store.processDirtyDays(now: duringTheDay + 1) == 1)
        let open = try #require(try rig.daily("lab-101", Self.nov5))
        #expect(open.version == 2 && open.figures.day?.complete == false && open.figures.energyWh == 400)
        let id = "\(Self.nov5)|lab-101"
        #expect(try rig.history(id).isEmpty)
        #expect(try rig.history("2026-11|lab-101").isEmpty)

        // The close job, five minutes past midnight.
        let closeAt = Rig.day5 + Rig.day + 6 * 60_000
        _ = try rig.store.closeDay(CivilDate(year: 2026, month: 11, day: 5), now: closeAt)
        let closed = try #require(try rig.daily("lab-101", Self.nov5))
        #expect(closed.version == 3 && closed.figures.day?.complete == true)
        #expect(try rig.history(id) == [.init(version: 2, energyWh: 400, cost: nil)])
        // A late entry for the closed day: its replaced version is kept.
        try rig.entry("lab-101", Rig.day5 + 4 * Rig.hour, Rig.day5 + 5 * Rig.hour, 10)
        #expect(try rig.store.processDirtyDays(now: closeAt + 1) == 1)
        #expect(try rig.history(id).map(\.version) == [2, 3])
        #expect(try rig.daily("lab-101", Self.nov5)?.figures.energyWh == 410)
    }

    /// A month is the sum of its days, across month boundaries, energy and cost.
    @Test(arguments: StorageBackend.allCases)
    func monthlyAggregatesAreTheSumsOfTheirDays(_ backend: StorageBackend) throws {
        let rig = try Rig(backend)
        try rig.storage.insertTariff(Tariff(id: "t", costPerKwh: 7.5, currency: "INR", effectiveFrom: 0, classroom: nil, createdAt: 0))
        let days: [(Int, Double)] = [(-5, 120), (-4, 33.3), (-3, 0.7), (0, 250), (25, 1000), (26, 42)] // Oct 31 ... Dec 1
        for device in ["lab-101", "lab-201"] {
            for (offset, wh) in days {
                let start = Rig.day5 + Int64(offset) * Rig.day + 6 * Rig.hour
                try rig.entry(device, start, start + Rig.hour, wh)
                try rig.entry(device, start + Rig.hour, start + 2 * Rig.hour, wh / 3, billable: false, confidence: .low)
            }
        }
        let report = try rig.store.recalculate(start: CivilDate(year: 2026, month: 10, day: 30), end: CivilDate(year: 2026, month: 12, day: 2),
                                               classroom: nil, esp32Name: nil, now: Rig.later)
        #expect(report.recalculated == 2 * 6 + 2 * 3)
        for device in ["lab-101", "lab-201"] {
            for month in ["2026-10", "2026-11", "2026-12"] {
                var energy = 0.0, cost = 0.0, count = 0
                for (offset, _) in days {
                    let date = Rig.date(Rig.day5 + Int64(offset) * Rig.day + 6 * Rig.hour)
                    guard Aggregator.monthKey(date) == month, let day = try rig.daily(device, date.description) else { continue }
                    energy += day.figures.energyWh
                    cost += day.figures.cost ?? .nan
                    count += 1
                }
                let total = try #require(try rig.monthly(device, month), "\(device) \(month)")
                #expect(abs(total.figures.energyWh - energy) < 1e-9, "\(device) \(month)")
                #expect(abs((total.figures.cost ?? .nan) - cost) < 1e-9, "\(device) \(month)")
                #expect(total.figures.days == count && total.figures.currency == "INR")
                #expect(total.figures.classroom == rig.registry.resolve(device).classroom)
            }
            #expect(try rig.monthly(device, "2026-11")?.figures.energyWh == 33.3 + 0.7 + 250 + 1000)
            #expect(try rig.daily(device, Self.nov5)?.figures.day?.confidence == [.high: 1, .medium: 0, .low: 1])
        }
    }

    /// Each mark of `ledger_dirty_days` is consumed once: processed marks go, a day marked again
    /// while it was being recomputed keeps its mark and is recomputed once more.
    @Test(arguments: StorageBackend.allCases)
    func dirtyDaysAreConsumedExactlyOnce(_ backend: StorageBackend) throws {
        let rig = try Rig(backend)
        try rig.entry("lab-101", Rig.day5 + Rig.hour, Rig.day5 + 2 * Rig.hour, 300)
        try rig.entry("lab-102", Rig.day5 + Rig.hour, Rig.day5 + 2 * Rig.hour, 200)
        try rig.entry("lab-201", Rig.day5 + Rig.day + Rig.hour, Rig.day5 + Rig.day + 2 * Rig.hour, 100)
        // Oldest mark first.
        #expect(try rig.storage.dirtyDays(limit: 2, now: Rig.later).compactMap(\.day?.esp32Name) == ["lab-101", "lab-102"])
        #expect(try rig.store.processDirtyDays(now: Rig.later, limit: 2) == 2)
        #expect(try rig.storage.dirtyDays(limit: 10, now: Rig.later).compactMap(\.day?.esp32Name) == ["lab-201"])
        #expect(try rig.store.processDirtyDays(now: Rig.later) == 1)
        #expect(try rig.store.processDirtyDays(now: Rig.later) == 0)
        #expect(try rig.daily("lab-101", Self.nov5)?.version == 1)

        // The ledger marks a day again while the aggregation recomputes it.
        try rig.entry("lab-101", Rig.day5 + 2 * Rig.hour, Rig.day5 + 3 * Rig.hour, 10)
        rig.store.beforeVersionedWrite = {
            rig.store.beforeVersionedWrite = nil
            _ = try? rig.entry("lab-101", Rig.day5 + 3 * Rig.hour, Rig.day5 + 4 * Rig.hour, 1)
        }
        #expect(try rig.store.processDirtyDays(now: Rig.later) == 1)
        #expect(try rig.dirtyMarkCount() == 1)
        #expect(try rig.daily("lab-101", Self.nov5)?.figures.energyWh == 310)
        #expect(try rig.store.processDirtyDays(now: Rig.later) == 1)
        #expect(try rig.daily("lab-101", Self.nov5)?.figures.energyWh == 311)
        #expect(try rig.dirtyMarkCount() == 0)

        // A mark cleared with the time it had when read: gone; with an older one: kept.
        try rig.markDirty("lab-102", CivilDate(year: 2026, month: 11, day: 5))
        let read = try rig.storage.dirtyDays(limit: 10, now: Rig.later)
        try rig.markDirty("lab-102", CivilDate(year: 2026, month: 11, day: 5))
        try rig.storage.clearDirtyDays(read)
        #expect(try rig.dirtyMarkCount() == 1)
        try rig.storage.clearDirtyDays(try rig.storage.dirtyDays(limit: 10, now: Rig.later))
        #expect(try rig.dirtyMarkCount() == 0)
    }

    /// A day's entries after a position, in (start, end) order: what a stored fold has not
    /// folded yet (an entry of the same start and a later end is after it).
    @Test(arguments: StorageBackend.allCases)
    func liveEntriesAfterAPositionAreTheOnesAFoldHasNotTaken(_ backend: StorageBackend) throws {
        let rig = try Rig(backend)
        let h = Rig.hour, d = Rig.day5
        try rig.entry("lab-101", d + 3 * h, d + 4 * h, 3)
        try rig.entry("lab-101", d + h, d + 2 * h, 1)
        try rig.entry("lab-101", d + 2 * h, d + 2 * h, 0) // an instant
        try rig.entry("lab-101", d + 2 * h, d + 3 * h, 2)
        let late = try rig.entry("lab-101", d + 5 * h, d + 6 * h, 5)
        try rig.supersede(late)
        try rig.entry("lab-102", d + 4 * h, d + 5 * h, 9)
        let day = DeviceDay(esp32Name: "lab-101", date: CivilDate(year: 2026, month: 11, day: 5))
        let other = DeviceDay(esp32Name: "lab-102", date: day.date)
        let whole = try rig.storage.liveEntries(of: [day, other], after: [:])
        #expect(whole[day]?.entries.map(\.deltaWh) == [1, 0, 2, 3])
        let after = try rig.storage.liveEntries(of: [day, other], after: [day: DayFold.EntryPosition(start: d + 2 * h, end: d + 2 * h)])
        #expect(after[day]?.entries.map(\.deltaWh) == [2, 3])
        #expect(after[day]?.classroom == "CSE-301")
        #expect(after[other]?.entries.map(\.deltaWh) == [9], "a day without a position is read whole")
        let none = try rig.storage.liveEntries(of: [day], after: [day: DayFold.EntryPosition(start: d + 3 * h, end: d + 4 * h)])
        #expect(none[day] == nil)
    }

    /// Every mark is a row or document of its own with the earliest start its step changed (the
    /// epoch when not known), removed by the aggregation only once read; the marks of a day a
    /// step is writing (a mark held) are left out until the step replaces its held mark, or the
    /// hold expires, or the device's lease is taken again (the step is over).
    @Test(arguments: StorageBackend.allCases)
    func marksAreOnePerStepAndADayBeingWrittenIsLeftAlone(_ backend: StorageBackend) throws {
        let rig = try Rig(backend)
        let ledger = rig.fixture.database.ledgerStorage(writeConcern: .acknowledged)
        let nov5 = CivilDate(year: 2026, month: 11, day: 5), now = Rig.later
        try rig.markDirty("lab-101", nov5, changedFrom: Rig.day5 + 5 * Rig.hour)
        try rig.markDirty("lab-101", nov5, changedFrom: nil)
        let read = try rig.storage.dirtyDays(limit: 10, now: now)
        #expect(read.map(\.changedFrom) == [Rig.day5 + 5 * Rig.hour, 0])
        try rig.markDirty("lab-101", nov5, changedFrom: Rig.day5 + 9 * Rig.hour)
        try rig.storage.clearDirtyDays(read)
        #expect(try rig.storage.dirtyDays(limit: 10, now: now).map(\.changedFrom) == [Rig.day5 + 9 * Rig.hour], "made after the read: stays")

        // A step marks before it writes (held), then again (not held) replacing the first.
        let before = LedgerDirtyDay(esp32Name: "lab-101", date: "2026-11-05", classroom: "CSE-301", changedFrom: Rig.day5 + 2 * Rig.hour)
        try ledger.markDirtyDays([before], at: now, holdUntil: now + 60_000, replacing: [])
        #expect(try rig.storage.dirtyDays(limit: 10, now: now).isEmpty, "the whole day waits for the step")
        #expect(try rig.storage.dirtyDays(limit: 10, now: now + 60_001).count == 2, "unless the hold has expired")
        let after = LedgerDirtyDay(esp32Name: "lab-101", date: "2026-11-05", classroom: "CSE-301", changedFrom: Rig.day5 + 2 * Rig.hour)
        try ledger.markDirtyDays([after], at: now, holdUntil: nil, replacing: [before.markID])
        try ledger.markDirtyDays([after], at: now, holdUntil: nil, replacing: [before.markID]) // a retry: the same mark
        let marks = try rig.storage.dirtyDays(limit: 10, now: now)
        #expect(marks.count == 2 && marks.contains { $0.id == after.markID } && !marks.contains { $0.id == before.markID })

        // A step cut short leaves its held mark; the next lease on the device releases it.
        let cut = LedgerDirtyDay(esp32Name: "lab-102", date: "2026-11-05", classroom: "CSE-301", changedFrom: Rig.day5 + Rig.hour)
        try ledger.markDirtyDays([cut], at: now, holdUntil: now + 60_000, replacing: [])
        #expect(!(try rig.storage.dirtyDays(limit: 10, now: now).contains { $0.id == cut.markID }))
        _ = try ledger.acquireLeases(["lab-102"], owner: "worker:next", now: now, until: now + 30_000)
        #expect(try rig.storage.dirtyDays(limit: 10, now: now).contains { $0.id == cut.markID })
        try rig.storage.clearDirtyDays(try rig.storage.dirtyDays(limit: 10, now: now))
        #expect(try rig.dirtyMarkCount() == 0)
    }

    /// Today's figures follow the ledger by folding the new entries into the stored sums; a
    /// supersession, an entry before the folded ones or a new tariff reads the day whole. After
    /// every round the stored day is exactly what a recalculation from all entries writes.
    @Test(arguments: StorageBackend.allCases)
    func aDayFoldedRoundByRoundEqualsOneRecalculatedWhole(_ backend: StorageBackend) throws {
        let rig = try Rig(backend)
        let other = try rig.otherWorker() // recalculates, to compare: its writes do not count as ours
        let h = Rig.hour, d = Rig.day5, nov5 = CivilDate(year: 2026, month: 11, day: 5)
        _ = try rig.store.addTariff(costPerKwh: 7.3, currency: "INR", effectiveFrom: d - Rig.day, classroom: nil, notes: nil, now: d)
        var at = d + h
        var ids: [String] = []
        func add(_ count: Int, _ wh: Double) throws {
            for _ in 0..<count {
                ids.append(try rig.entry("lab-101", at, at + 30_000, wh + Double(ids.count) * 0.013))
                at += 30_000
            }
        }
        func roundMatchesWhole(_ note: String) throws {
            _ = try rig.store.processDirtyDays(now: d + 2 * Rig.day)
            let folded = try #require(try rig.daily("lab-101", Self.nov5))
            _ = try other.recalculate(start: nov5, end: nov5, classroom: nil, esp32Name: "lab-101", now: d + 2 * Rig.day)
            let whole = try #require(try rig.daily("lab-101", Self.nov5))
            #expect(folded.figures == whole.figures, "\(note)")
            #expect(whole.figures.day?.fold != nil)
        }
        try add(40, 1.7)
        try roundMatchesWhole("first round")
        #expect(rig.store.folds == .init(folded: 0, readWhole: 1))
        for round in 0..<3 {
            try add(25, 0.9)
            try roundMatchesWhole("append round \(round)")
        }
        #expect(rig.store.folds == .init(folded: 3, readWhole: 1), "appends fold")
        try rig.supersede(ids[50])
        try rig.entry("lab-101", Rig.day5 + h + 50 * 30_000, Rig.day5 + h + 51 * 30_000 - 1, 4.4) // its replacement
        try roundMatchesWhole("after a supersession")
        #expect(rig.store.folds == .init(folded: 3, readWhole: 2))
        try rig.entry("lab-101", d + 10 * 60_000, d + 20 * 60_000, 2.5) // before every folded entry
        try roundMatchesWhole("an entry before the folded ones")
        #expect(rig.store.folds == .init(folded: 3, readWhole: 3))
        try add(10, 0.4)
        _ = try other.addTariff(costPerKwh: 9.1, currency: "INR", effectiveFrom: d + 2 * h, classroom: "CSE-301", notes: nil, now: d + 1)
        try roundMatchesWhole("after a tariff change")
        #expect(rig.store.folds == .init(folded: 3, readWhole: 4), "another book: read whole")
        try add(10, 0.4)
        try roundMatchesWhole("appends again")
        #expect(rig.store.folds == .init(folded: 4, readWhole: 4))
    }

    /// Only live entries count; a day whose entries were all superseded goes to zero (its
    /// aggregate is found though no entry is); the pages of a tariff change cover every
    /// aggregated day once, in date order.
    @Test(arguments: StorageBackend.allCases)
    func liveEntriesDevicesOfADayAndPagesOfAggregatedDays(_ backend: StorageBackend) throws {
        let rig = try Rig(backend)
        let a = try rig.entry("lab-101", Rig.day5 + Rig.hour, Rig.day5 + 2 * Rig.hour, 300)
        try rig.entry("lab-101", Rig.day5 + 2 * Rig.hour, Rig.day5 + 3 * Rig.hour, 20, confidence: .medium)
        let c = try rig.entry("lab-102", Rig.day5 + Rig.hour, Rig.day5 + 2 * Rig.hour, 200)
        try rig.entry("lab-201", Rig.day5 + Rig.hour, Rig.day5 + 2 * Rig.hour, 100)
        _ = try rig.store.processDirtyDays(now: Rig.later)
        try rig.supersede(a)
        try rig.supersede(c)
        let nov5 = CivilDate(year: 2026, month: 11, day: 5)
        let live = try rig.storage.liveEntries(of: [DeviceDay(esp32Name: "lab-101", date: nov5), DeviceDay(esp32Name: "lab-102", date: nov5)],
                                               after: [:])
        #expect(live[DeviceDay(esp32Name: "lab-101", date: nov5)]
            == DayEntries(classroom: "CSE-301", entries: [AggregateEntry(start: Rig.day5 + 2 * Rig.hour, end: Rig.day5 + 3 * Rig.hour,
                                                                           deltaWh: 20, billable: true, confidence: .medium)]))
        #expect(live[DeviceDay(esp32Name: "lab-102", date: nov5)] == nil)
        #expect(try rig.storage.devicesToRecompute(on: nov5, classroom: nil, esp32Name: nil) == ["lab-101", "lab-102", "lab-201"])
        #expect(try rig.storage.devicesToRecompute(on: nov5, classroom: "CSE-301", esp32Name: nil) == ["lab-101", "lab-102"])
        #expect(try rig.storage.devicesToRecompute(on: nov5, classroom: nil, esp32Name: "lab-102") == ["lab-102"])
        _ = try rig.store.recalculate(start: nov5, end: nov5, classroom: "CSE-301", esp32Name: nil, now: Rig.later + 1)
        #expect(try rig.daily("lab-101", Self.nov5)?.figures.energyWh == 20)
        #expect(try rig.daily("lab-102", Self.nov5)?.figures.energyWh == 0)
        #expect(try rig.daily("lab-102", Self.nov5)?.version == 2)
        #expect(try rig.daily("lab-201", Self.nov5)?.version == 1)
        #expect(try rig.monthly("lab-102", "2026-11")?.figures.energyWh == 0)

        for offset in 1...3 {
            for device in ["lab-101", "lab-102", "lab-201"] {
                let start = Rig.day5 + Int64(offset) * Rig.day + Rig.hour
                try rig.entry(device, start, start + Rig.hour, 5)
            }
        }
        _ = try rig.store.processDirtyDays(now: Rig.later)
        var pages: [[DeviceDay]] = []
        var after: DeviceDay?
        while true {
            let page = try rig.storage.aggregatedDays(from: CivilDate(year: 2026, month: 11, day: 6), classroom: nil, after: after, limit: 4)
            if page.isEmpty { break }
            pages.append(page)
            after = page.last
        }
        let all = pages.flatMap { $0 }
        #expect(pages.map(\.count) == [4, 4, 1])
        #expect(all == all.sorted { ($0.date, $0.esp32Name) < ($1.date, $1.esp32Name) })
        #expect(Set(all).count == 9)
        #expect(try rig.storage.aggregatedDays(from: nov5, classroom: "EEE-105", after: nil, limit: 100).map(\.esp32Name) == Array(repeating: "lab-201", count: 4))
    }
}
