@testable import AutoVoltCore
import AutoVoltExport
import AutoVoltMongo
import AutoVoltPostgres
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Logging
import Synchronization
import Testing

/// The contract of `StatementStorage` (issue 21 §3), the same tests through `StatementStore` on
/// MongoDB (dev-mongo) and PostgreSQL (a server of the test's own): the month-end routine
/// (generate, regenerate, freeze, export, diff with late readings, the next version), two
/// freezes racing (one wins), a freeze racing a generate (nothing frozen), two generates racing
/// (one draft, only its sources), a frozen statement untouched by a generate that meets it,
/// exports kept once per hash and checked, sources in chunks (a missing one is an error), and
/// the same statement, JSON and CSV bytes on both backends for the same data. The figures are
/// written with the other stages' own storages, so the reads are checked against what the
/// writers really store.
@Suite("statement storage conformance: MongoDB and PostgreSQL", .serialized)
struct StatementStorageConformanceTests {
    static let zone = TimeZone(identifier: "Asia/Kolkata")!
    static func at(_ text: String) -> EpochMillis { ISO8601.parseMillis(text) ?? 0 }
    static let seededAt = at("2026-11-30T09:00:00+05:30")
    /// When the drafts are made: after the month.
    static let december2 = at("2026-12-02T10:00:00+05:30")
    static let november = "2026-11"

    static let registry = DeviceRegistry(
        devices: [DeviceInfo(esp32Name: "lab-101", classroom: "CSE-301"), DeviceInfo(esp32Name: "lab-102", classroom: "CSE-301"),
                  DeviceInfo(esp32Name: "lab-201", classroom: "EEE-105"), DeviceInfo(esp32Name: "lab-301", classroom: "LAB-X")],
        schedules: [:], groups: ["Computing": ["CSE-301"], "Labs": ["CSE-301", "EEE-105"]])

    /// One backend's database (the shared `BackendDatabase`) with the storage under test behind
    /// a `StatementStore`, the other stages' storages to write the figures with, and direct
    /// reads and writes.
    final class StatementDB: Sendable {
        let fixture: BackendDatabase
        let storage: any StatementStorage
        let store: StatementStore
        let aggregation: any AggregationStorage
        let ingest: any IngestStorage
        let ledger: any LedgerStorage

        init(_ backend: StorageBackend) throws {
            fixture = try BackendDatabase(backend, name: "statements")
            let database = fixture.database
            storage = database.statementStorage(writeConcern: .acknowledged)
            aggregation = database.aggregationStorage(writeConcern: .acknowledged)
            ingest = database.ingestStorage(writeConcern: .acknowledged)
            ledger = database.ledgerStorage(writeConcern: .acknowledged)
            store = StatementStore(storage: storage, registry: StatementStorageConformanceTests.registry,
                                   timeZone: StatementStorageConformanceTests.zone, logger: Logger(label: "statement-conformance"))
        }

        var backend: StorageBackend { fixture.backend }
        var client: MongoClient? { fixture.client }
        var pool: PostgresPool? { fixture.pool }

        /// Another worker's store: a connection of its own to the same database.
        func secondStore() throws -> StatementStore {
            StatementStore(storage: try fixture.anotherWorker().statementStorage(writeConcern: .acknowledged),
                           registry: StatementStorageConformanceTests.registry, timeZone: StatementStorageConformanceTests.zone,
                           logger: Logger(label: "statement-conformance-2"))
        }

        // MARK: Writing the figures

        func writeDaily(_ figures: [AggregateFigures], now: EpochMillis = StatementStorageConformanceTests.seededAt) throws {
            for start in stride(from: 0, to: figures.count, by: 500) {
                let batch = Array(figures[start..<min(start + 500, figures.count)])
                let stored = try aggregation.aggregates(.daily, ids: batch.map(\.id))
                let writes = batch.map { AggregateWrite(figures: $0, replacing: stored[$0.id], keepsHistory: false) }
                let applied = try aggregation.writeAggregates(.daily, writes, now: now, writeID: UUID().uuidString)
                #expect(applied.count == batch.count, "\(backend): daily aggregates written")
            }
        }

        func writeEvents(_ events: [IngestEvent]) throws {
            for result in try ingest.insertEvents(events) {
                if case .failed(let error) = result { Issue.record("\(backend): event not stored: \(error)") }
            }
        }

        /// Ten days of November for three boards at two tariffs, three unpriced days of a
        /// fourth, tariff versions, and an open review ticket.
        func seed() throws {
            try aggregation.insertTariff(Tariff(id: "v1", costPerKwh: 8, currency: "INR", effectiveFrom: at("2026-01-01T00:00:00+05:30"),
                                                classroom: nil, createdAt: at("2026-01-01T00:00:00+05:30"), notes: "campus"))
            try aggregation.insertTariff(Tariff(id: "v2", costPerKwh: 11, currency: "INR", effectiveFrom: at("2026-11-06T00:00:00+05:30"),
                                                classroom: "EEE-105", createdAt: at("2026-11-20T00:00:00+05:30"), notes: "retroactive"))
            var figures: [AggregateFigures] = []
            for day in 1...10 {
                let date = String(format: "2026-11-%02d", day)
                for (index, (name, room)) in [("lab-101", "CSE-301"), ("lab-102", "CSE-301"), ("lab-201", "EEE-105")].enumerated() {
                    let energy = 1000 + Double(index) * 37.125 + Double(day) * 1.5 + 0.0004
                    let (version, rate) = room == "EEE-105" && day >= 6 ? ("v2", 11.0) : ("v1", 8.0)
                    figures.append(Seed.daily(date, name, room, energy: energy, versions: [(version, rate)]))
                }
                if day <= 3 { figures.append(Seed.daily(date, "lab-301", "LAB-X", energy: 250.25 * Double(day), versions: [])) }
            }
            try writeDaily(figures)
            try ledger.openReviewTickets([
                LedgerReviewTicket(esp32Name: "lab-101", date: "2026-11-04", kind: "implausible_power", detail: "3 kW for 2 minutes",
                                   createdAt: seededAt, runID: "run-1"),
                LedgerReviewTicket(esp32Name: "lab-201", date: "2026-11-07", kind: "implausible_power", detail: "\"quoted\" detail",
                                   createdAt: seededAt, runID: "run-1"),
            ])
        }

        // MARK: Direct reads and writes

        /// The sources kept of a statement: chunks per token.
        func sourceTokens(_ id: String) throws -> [String: Int] {
            var tokens: [String: Int] = [:]
            switch backend {
            case .mongo:
                for doc in try client?.find(StatementStore.sourcesCollection, filter: ["statement_id": .string(id)], limit: 10_000) ?? [] {
                    tokens[doc["token"]?.stringValue ?? "", default: 0] += 1
                }
            case .postgres:
                let rows = try pool?.withConnection { connection in
                    try connection.query("SELECT token, count(*) AS n FROM statement_sources WHERE statement_id = $1 GROUP BY token", [id])
                } ?? []
                for row in rows { tokens[row.string("token") ?? ""] = row.int("n") ?? 0 }
            }
            return tokens
        }

        func exportCount(_ id: String) throws -> Int {
            switch backend {
            case .mongo:
                return try client?.countDocuments(StatementStore.exportsCollection, filter: ["statement_id": .string(id)]) ?? -1
            case .postgres:
                return try pool?.withConnection { connection in
                    try connection.query("SELECT count(*) AS n FROM statement_exports WHERE statement_id = $1", [id]).first?.int("n")
                } ?? -1
            }
        }

        func deleteChunk(_ id: String, chunk: Int) throws {
            switch backend {
            case .mongo:
                _ = try client?.deleteMany(StatementStore.sourcesCollection, filter: ["statement_id": .string(id), "chunk": .int64(Int64(chunk))],
                                           writeConcern: .acknowledged)
            case .postgres:
                _ = try pool?.withConnection { connection in
                    try connection.execute("DELETE FROM statement_sources WHERE statement_id = $1 AND chunk = $2::integer", [id, chunk])
                }
            }
        }

        func deleteExport(_ exportID: String) throws {
            switch backend {
            case .mongo:
                _ = try client?.deleteMany(StatementStore.exportsCollection, filter: ["_id": .string(exportID)], writeConcern: .acknowledged)
            case .postgres:
                _ = try pool?.withConnection { connection in try connection.execute("DELETE FROM statement_exports WHERE id = $1", [exportID]) }
            }
        }

        /// Other bytes under a kept export's id (an operator's mistake, a disk's): as a new
        /// record, since PostgreSQL refuses to change one (checked by the caller).
        func replaceExport(_ exportID: String, statementID: String, format: StatementFormat, sha256: String, bytes: [UInt8]) throws {
            try deleteExport(exportID)
            try storage.keepExport(statementID: statementID, format: format, sha256: sha256, bytes: bytes)
        }
    }

    enum Seed {
        /// A daily aggregate priced by `versions` (version, rate), the energy split evenly;
        /// none: unpriced.
        static func daily(_ date: String, _ device: String, _ classroom: String, energy: Double, versions: [(String, Double)]) -> AggregateFigures {
            let share = energy / Double(max(1, versions.count))
            let segments = versions.map { CostSegment(costVersionID: $0.0, costPerKwh: $0.1, energyWh: share, cost: share / 1000 * $0.1) }
            let cost: Double? = versions.isEmpty ? nil : segments.map(\.cost).reduce(0, +)
            return AggregateFigures(kind: .daily, key: date, esp32Name: device, classroom: classroom, energyWh: energy, cost: cost,
                                    currency: versions.isEmpty ? nil : "INR",
                                    day: DayDetail(costVersionIDs: versions.map(\.0), coverage: 0.9875,
                                                   confidence: [.high: 2800, .medium: 70, .low: 10], entries: 2880,
                                                   unpricedWh: versions.isEmpty ? energy : 0, overlapMillis: 0, hourlyWh: [],
                                                   costSegments: segments, complete: true))
        }

        static func event(_ device: String, _ classroom: String, deviceTime: EpochMillis, receivedAt: EpochMillis, energy: Double) -> IngestEvent {
            IngestEvent(reading: TelemetryReading(
                esp32Name: device, deviceTime: deviceTime, receivedAt: receivedAt, clock: .device, clockNote: nil,
                timestampAsSent: ISO8601.format(deviceTime), energyWhTotal: energy, switchState: .array([.bool(true)]), powerW: nil,
                bootID: "b1", seq: 1, uptimeS: 10, fwVersion: "1.0", payloadClassroom: nil, extra: JSONObject(),
                eventHash: EventHash.sha256Hex(bytes: Array("\(device)|\(deviceTime)|\(energy)".utf8))), classroom: classroom)
        }
    }

    static func refusal(_ body: () throws -> Void) -> StatementError? {
        do {
            try body()
            return nil
        } catch let error as StatementError {
            return error
        } catch {
            return nil
        }
    }

    static func isAlreadyFrozen(_ error: StatementError?) -> Bool {
        if case .alreadyFrozen? = error { return true }
        return false
    }

    // MARK: The month-end routine

    @Test(arguments: StorageBackend.allCases)
    func theMonthEndRoutine(_ backend: StorageBackend) throws {
        let db = try StatementDB(backend)
        try db.seed()
        let store = db.store
        let draft = try store.generate(month: Self.november, scope: .campus, now: Self.december2)
        #expect(draft.id == "2026-11.campus.v1" && draft.version == 1 && draft.status == .draft)
        #expect(draft.lines.map(\.esp32Name) == ["lab-101", "lab-102", "lab-201", "lab-301"])
        #expect(draft.sources.count == 33 && draft.cost == nil && draft.unpriced == FixedPoint.energy(250.25 * 6))
        #expect(Set(draft.segments.map(\.costVersionID)) == ["v1", "v2"])
        #expect(draft.tickets.map(\.esp32Name) == ["lab-101", "lab-201"] && draft.tickets[1].detail == "\"quoted\" detail")
        #expect(try store.show(draft.id) == draft, "\(backend): read back as generated")

        // Generated again: the same id and version; only the new draft's sources are kept.
        let again = try store.generate(month: Self.november, scope: .campus, now: Self.december2 + 1000)
        #expect(again.id == draft.id && again.createdAt == Self.december2 + 1000)
        #expect(try db.sourceTokens(draft.id).count == 1)
        #expect(try store.list(month: Self.november).map(\.id) == [draft.id])

        let frozen = try store.freeze(draft.id, by: "finance", now: Self.december2 + 2000)
        #expect(frozen.status == .frozen && frozen.exports.map(\.format) == [.csv, .pdf, .xlsx])
        #expect(Self.isAlreadyFrozen(Self.refusal { _ = try store.freeze(draft.id, by: "again", now: Self.december2 + 3000) }))
        #expect(try store.show(draft.id) == frozen)
        var exported: [StatementFormat: [UInt8]] = [:]
        for format in StatementFormat.allCases {
            let bytes = try store.export(draft.id, format: format).bytes
            #expect(EventHash.sha256Hex(bytes: bytes) == frozen.exports.first { $0.format == format }?.sha256)
            exported[format] = bytes
        }
        #expect(try db.exportCount(draft.id) == 3)

        // After the freeze: lab-101's 6th gets a late reading (received on the 3rd of December)
        // and its aggregate moves; lab-201's tariff is corrected.
        try db.writeEvents([
            Seed.event("lab-101", "CSE-301", deviceTime: Self.at("2026-11-06T10:00:00+05:30"), receivedAt: Self.at("2026-11-06T10:00:02+05:30"), energy: 1),
            Seed.event("lab-101", "CSE-301", deviceTime: Self.at("2026-11-06T11:00:00+05:30"), receivedAt: Self.at("2026-12-03T09:00:00+05:30"), energy: 2),
            Seed.event("lab-102", "CSE-301", deviceTime: Self.at("2026-12-05T11:00:00+05:30"), receivedAt: Self.at("2026-12-05T11:00:01+05:30"), energy: 3),
        ])
        try db.writeDaily([Seed.daily("2026-11-06", "lab-101", "CSE-301", energy: 1500, versions: [("v1", 8)]),
                           Seed.daily("2026-11-07", "lab-201", "EEE-105", energy: 1000 + 2 * 37.125 + 7 * 1.5 + 0.0004, versions: [("v2", 12)])],
                          now: Self.at("2026-12-03T10:00:00+05:30"))
        #expect(try store.show(draft.id) == frozen, "\(backend): the frozen statement did not move")
        for format in StatementFormat.allCases {
            #expect(try store.export(draft.id, format: format).bytes == exported[format], "\(backend): the frozen \(format) export did not move")
        }

        let next = try store.generate(month: Self.november, scope: .campus, now: Self.at("2026-12-04T10:00:00+05:30"))
        #expect(next.id == "2026-11.campus.v2" && next.version == 2 && next.energy == frozen.energy + FixedPoint.energy(1500 - (1000 + 6 * 1.5 + 0.0004)))
        // A reading received after v2 was made counts against the figures now, not against v2.
        try db.writeEvents([Seed.event("lab-101", "CSE-301", deviceTime: Self.at("2026-11-06T12:00:00+05:30"),
                                       receivedAt: Self.at("2026-12-05T09:00:00+05:30"), energy: 4)])
        let toNow = try store.diff(draft.id, other: nil, now: Self.at("2026-12-06T10:00:00+05:30"))
        let toNext = try store.diff(draft.id, other: next.id, now: Self.at("2026-12-06T10:00:00+05:30"))
        for (diff, late) in [(toNow, 2), (toNext, 1)] {
            let byName = Dictionary(uniqueKeysWithValues: diff.changes.map { ($0.esp32Name, $0) })
            #expect(byName.keys.sorted() == ["lab-101", "lab-201"], "\(backend): \(diff.changes)")
            #expect(byName["lab-101"]?.reasons == [.lateReadings] && byName["lab-101"]?.lateReadings == late, "\(backend): \(diff.changes)")
            #expect(byName["lab-201"]?.reasons == [.tariffChange])
            #expect(byName["lab-101"]?.dates.map(\.description) == ["2026-11-06"])
        }
        #expect(try store.list(month: Self.november).map(\.id) == ["2026-11.campus.v2", "2026-11.campus.v1"])
        #expect(try store.list(month: nil).map(\.status) == ["draft", "frozen"])
        _ = try store.freeze(next.id, by: "finance", now: Self.at("2026-12-06T11:00:00+05:30"))
        #expect(try store.generate(month: Self.november, scope: .campus, now: Self.at("2026-12-06T12:00:00+05:30")).version == 3)
        #expect(try db.storage.lastFrozenVersion(month: Self.november, scopeKey: "campus") == 2)
        #expect(try db.storage.lastFrozenVersion(month: Self.november, scopeKey: "group:Labs") == 0)
    }

    // MARK: A frozen statement never changes

    /// A generate that read the versions before a freeze and writes after it meets the frozen
    /// id: nothing is written, the frozen statement, its sources and exports stay, and the
    /// store goes round to the next version.
    @Test(arguments: StorageBackend.allCases)
    func aRegenerationNeverTouchesAFrozenStatement(_ backend: StorageBackend) throws {
        let db = try StatementDB(backend)
        try db.seed()
        let draft = try db.store.generate(month: Self.november, scope: .group("Labs"), now: Self.december2)
        let frozen = try db.store.freeze(draft.id, by: "finance", now: Self.december2 + 1000)
        let tokens = try db.sourceTokens(draft.id)
        let exports = try StatementFormat.allCases.map { try db.store.export(draft.id, format: $0).bytes }

        var stale = draft
        stale.createdAt = Self.december2 + 5000
        stale.lines = Array(stale.lines.prefix(1))
        #expect(try db.storage.saveDraft(stale, token: "stale-token") == .versionFrozen)
        #expect(try db.store.show(draft.id) == frozen)
        #expect(try db.sourceTokens(draft.id) == tokens, "\(backend): the frozen statement's sources only")
        #expect(try StatementFormat.allCases.map { try db.store.export(draft.id, format: $0).bytes } == exports)
        #expect(try db.storage.freeze(id: draft.id, draftToken: nil, frozenAt: 0, by: "x", exports: []) == false)
        #expect(try db.storage.freeze(id: draft.id, draftToken: "stale-token", frozenAt: 0, by: "x", exports: []) == false)

        let next = try db.store.generate(month: Self.november, scope: .group("Labs"), now: Self.december2 + 6000)
        #expect(next.id == "2026-11.group.Labs.v2" && next.status == .draft)
        #expect(try db.store.show(draft.id) == frozen)

        if backend == .postgres, let pool = db.pool {
            // The database itself refuses to change what is frozen.
            for sql in ["UPDATE statements SET frozen_by = 'someone else' WHERE id = $1", "DELETE FROM statements WHERE id = $1",
                        "DELETE FROM statement_sources WHERE statement_id = $1", "UPDATE statement_exports SET bytes = 0 WHERE statement_id = $1"] {
                #expect(throws: PostgresError.self, "\(sql)") { try pool.withConnection { connection in try connection.execute(sql, [draft.id]) } }
            }
            #expect(try db.store.show(draft.id) == frozen)
        }
    }

    // MARK: Races

    /// Two freezes of one draft, staged between a freeze's read and its write, then two at once
    /// on two connections: one wins, the other is told it is frozen, and what is stored is the
    /// winner's with the winner's exports.
    @Test(arguments: StorageBackend.allCases)
    func twoFreezesRacingOneWins(_ backend: StorageBackend) throws {
        let db = try StatementDB(backend)
        try db.seed()
        let other = try db.secondStore()
        let draft = try db.store.generate(month: Self.november, scope: .classroom("CSE-301"), now: Self.december2)
        var staged = db.store
        staged.beforeFreezeWrite = { _ = try? other.freeze(draft.id, by: "the other clerk", now: Self.december2 + 5) }
        #expect(Self.isAlreadyFrozen(Self.refusal { _ = try staged.freeze(draft.id, by: "finance", now: Self.december2 + 10) }))
        let staged1 = try db.store.show(draft.id)
        #expect(staged1.frozenBy == "the other clerk" && staged1.frozenAt == Self.december2 + 5)

        var at = Self.december2 + 60_000
        for round in 0..<3 {
            at += 60_000
            let next = try db.store.generate(month: Self.november, scope: .classroom("CSE-301"), now: at)
            #expect(next.version == round + 2)
            let freezeAt = at
            let outcomes = Mutex<[String: Result<Statement, StatementError>]>([:])
            let stores = [("a", db.store), ("b", other)]
            DispatchQueue.concurrentPerform(iterations: 2) { i in
                let (who, store) = stores[i]
                let result: Result<Statement, StatementError>
                do throws(StatementError) { result = .success(try store.freeze(next.id, by: who, now: freezeAt + Int64(i) + 1)) } catch {
                    result = .failure(error)
                }
                outcomes.withLock { $0[who] = result }
            }
            let results = outcomes.withLock { $0 }
            let winners = results.compactMap { who, result in (try? result.get()).map { (who, $0) } }
            #expect(winners.count == 1, "\(backend): round \(round): \(results)")
            for (_, result) in results {
                if case .failure(let error) = result { #expect(Self.isAlreadyFrozen(error), "\(backend): \(error)") }
            }
            guard let (who, won) = winners.first else { continue }
            let stored = try db.store.show(next.id)
            #expect(stored.frozenBy == who && stored == won)
            for format in StatementFormat.allCases {
                #expect(EventHash.sha256Hex(bytes: try other.export(next.id, format: format).bytes) == won.exports.first { $0.format == format }?.sha256)
            }
        }
    }

    /// A draft generated again between a freeze's read and its write is not frozen: the freeze
    /// says so, the new draft stays a draft with its own sources only.
    @Test(arguments: StorageBackend.allCases)
    func aFreezeRacingAGenerateFreezesNothing(_ backend: StorageBackend) throws {
        let db = try StatementDB(backend)
        try db.seed()
        let other = try db.secondStore()
        let draft = try db.store.generate(month: Self.november, scope: .classroom("EEE-105"), now: Self.december2)
        var racing = db.store
        racing.beforeFreezeWrite = { _ = try? other.generate(month: Self.november, scope: .classroom("EEE-105"), now: Self.december2 + 7) }
        let error = Self.refusal { _ = try racing.freeze(draft.id, by: "finance", now: Self.december2 + 10) }
        #expect(error?.httpStatus == 409 && error?.description.contains("generated again") == true, "\(backend): \(String(describing: error))")
        let after = try db.store.show(draft.id)
        #expect(after.status == .draft && after.createdAt == Self.december2 + 7 && after.exports.isEmpty)
        #expect(try db.sourceTokens(draft.id).count == 1)
        // Reviewed and frozen again: it freezes.
        #expect(try db.store.freeze(draft.id, by: "finance", now: Self.december2 + 20).status == .frozen)
    }

    /// Two workers generating the same draft at once: one draft stays, with its own sources
    /// only; versions stay unique per month and scope.
    @Test(arguments: StorageBackend.allCases)
    func twoGeneratesRacingLeaveOneDraftAndItsSources(_ backend: StorageBackend) throws {
        let db = try StatementDB(backend)
        try db.seed()
        let other = try db.secondStore()
        let stores = [db.store, other]
        for round in 0..<3 {
            let failures = Mutex<[StatementError]>([])
            DispatchQueue.concurrentPerform(iterations: 2) { i in
                do throws(StatementError) {
                    _ = try stores[i].generate(month: Self.november, scope: .campus, now: Self.december2 + Int64(round * 10 + i))
                } catch {
                    failures.withLock { $0.append(error) }
                }
            }
            #expect(failures.withLock { $0 }.isEmpty, "\(backend): \(failures.withLock { $0 })")
            let listed = try db.store.list(month: Self.november)
            #expect(listed.map(\.id) == ["2026-11.campus.v1"], "\(backend): \(listed.map(\.id))")
            let tokens = try db.sourceTokens("2026-11.campus.v1")
            #expect(tokens.count == 1 && tokens.values.first == 1, "\(backend): round \(round): \(tokens)")
            #expect(try db.store.show("2026-11.campus.v1").sources.count == 33)
        }
    }

    // MARK: Exports and sources

    /// The bytes kept at freezing are kept once per (statement, format, SHA-256); lost, they are
    /// rendered again and kept if the hash matches; other bytes under the hash are refused.
    @Test(arguments: StorageBackend.allCases)
    func exportsAreKeptOncePerHashAndChecked(_ backend: StorageBackend) throws {
        let db = try StatementDB(backend)
        try db.seed()
        let draft = try db.store.generate(month: Self.november, scope: .campus, now: Self.december2)
        // A draft's export is rendered each time, kept nowhere.
        _ = try db.store.export(draft.id, format: .pdf)
        #expect(try db.exportCount(draft.id) == 0)
        let frozen = try db.store.freeze(draft.id, by: "finance", now: Self.december2 + 1)
        #expect(try db.exportCount(draft.id) == 3)
        let csv = try db.store.export(draft.id, format: .csv).bytes
        let sha = try #require(frozen.exports.first { $0.format == .csv }?.sha256)
        // Kept again: once.
        try db.storage.keepExport(statementID: draft.id, format: .csv, sha256: sha, bytes: csv)
        try db.storage.keepExport(statementID: draft.id, format: .csv, sha256: sha, bytes: [1, 2, 3])
        #expect(try db.exportCount(draft.id) == 3)
        #expect(try db.storage.keptExport(statementID: draft.id, format: .csv, sha256: sha) == KeptExport(data: csv))
        #expect(try db.storage.keptExport(statementID: draft.id, format: .csv, sha256: "0") == nil)

        let pdfID = StatementStore.exportID(draft.id, .pdf, try #require(frozen.exports.first { $0.format == .pdf }?.sha256))
        let pdf = try db.store.export(draft.id, format: .pdf).bytes
        try db.deleteExport(pdfID)
        #expect(try db.exportCount(draft.id) == 2)
        #expect(try db.store.export(draft.id, format: .pdf).bytes == pdf, "\(backend): made again, the same bytes")
        #expect(try db.exportCount(draft.id) == 3)

        var altered = csv
        altered[0] ^= 1
        try db.replaceExport(StatementStore.exportID(draft.id, .csv, sha), statementID: draft.id, format: .csv, sha256: sha, bytes: altered)
        let error = Self.refusal { _ = try db.store.export(draft.id, format: .csv) }
        #expect(error?.description.contains("would differ from the one frozen") == true, "\(backend): \(String(describing: error))")
    }

    /// A month of 70 boards (2,100 device-days) keeps its device-days in two chunks; they read
    /// back whole and in order; a draft generated again keeps only its own; a missing chunk is
    /// an error, never a short list.
    @Test(arguments: StorageBackend.allCases)
    func sourcesInChunksAndAMissingChunkIsAnError(_ backend: StorageBackend) throws {
        let db = try StatementDB(backend)
        var figures: [AggregateFigures] = []
        for day in 1...30 {
            for board in 0..<70 {
                figures.append(Seed.daily(String(format: "2026-11-%02d", day), "board-\(board)", "R-\(board / 10)",
                                          energy: 100 + Double(board) + Double(day) / 8, versions: [("v1", 8)]))
            }
        }
        try db.writeDaily(figures)
        let draft = try db.store.generate(month: Self.november, scope: .campus, now: Self.december2)
        #expect(draft.sources.count == 2100 && draft.lines.count == 70)
        #expect(draft.sources.map(\.aggregateID) == draft.sources.map(\.aggregateID).sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) })
        #expect(Array(try db.sourceTokens(draft.id).values) == [2])
        #expect(try db.store.show(draft.id).sources == draft.sources)
        let stored = try #require(try db.storage.statement(id: draft.id))
        #expect(stored.sources?.count == 2100 && stored.sources?.chunks == 2 && stored.draftToken == stored.sources?.token)

        let again = try db.store.generate(month: Self.november, scope: .campus, now: Self.december2 + 1000)
        #expect(Array(try db.sourceTokens(draft.id).values) == [2])
        #expect(try db.store.show(again.id).sources.count == 2100)
        try db.deleteChunk(draft.id, chunk: 1)
        let error = Self.refusal { _ = try db.store.show(draft.id) }
        #expect(error?.description.contains("2000 of its 2100 device-days") == true, "\(backend): \(String(describing: error))")
        #expect(Self.refusal { _ = try db.store.freeze(draft.id, by: "finance", now: Self.december2 + 2000) } != nil)
        // Generated again, whole again.
        _ = try db.store.generate(month: Self.november, scope: .campus, now: Self.december2 + 3000)
        #expect(try db.store.show(draft.id).sources.count == 2100)
    }

    // MARK: The same on both

    /// The same figures on both backends give the same statements (every scope the scheduler
    /// drafts), the same JSON and CSV bytes, and the same exports frozen. Review tickets keep
    /// each database's own id, so those are compared without it.
    @Test func theSameStatementJSONAndCSVOnBothBackends() throws {
        let mongo = try StatementDB(.mongo), postgres = try StatementDB(.postgres)
        var made: [StorageBackend: [Statement]] = [:]
        var frozen: [StorageBackend: Statement] = [:]
        for db in [mongo, postgres] {
            try db.seed()
            let drafts = db.store.generateMonthEnd(month: Self.november, now: Self.december2)
            #expect(drafts.failed.isEmpty, "\(db.backend): \(drafts.failed.map(\.error))")
            made[db.backend] = drafts.made
            frozen[db.backend] = try db.store.freeze("2026-11.classroom.LAB-X.v1", by: "finance", now: Self.december2 + 1000)
            _ = try db.store.freeze("2026-11.group.Labs.v1", by: "finance", now: Self.december2 + 2000)
        }
        /// Without the tickets' ids, and so without the frozen XLSX's hash when there are
        /// tickets (its Tickets sheet lists their ids).
        func normalised(_ s: Statement) -> Statement {
            var s = s
            if !s.tickets.isEmpty { s.exports.removeAll { $0.format == .xlsx } }
            s.tickets = s.tickets.map { var t = $0; t.id = ""; return t }
            return s
        }
        func json(_ s: Statement) throws -> String {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys]
            return String(decoding: try encoder.encode(StatementJSON(normalised(s), timeZone: Self.zone)), as: UTF8.self)
        }
        let ids = (made[.mongo] ?? []).map(\.id)
        #expect(ids == ["2026-11.campus.v1", "2026-11.group.Computing.v1", "2026-11.group.Labs.v1", "2026-11.classroom.CSE-301.v1",
                        "2026-11.classroom.EEE-105.v1", "2026-11.classroom.LAB-X.v1"])
        #expect(ids == (made[.postgres] ?? []).map(\.id))
        for id in ids {
            let a = try mongo.store.show(id), b = try postgres.store.show(id)
            #expect(normalised(a) == normalised(b), "\(id): the same statement on both")
            #expect(try json(a) == json(b), "\(id): the same JSON")
            #expect(StatementCSV.render(normalised(a)) == StatementCSV.render(normalised(b)), "\(id): the same CSV")
        }
        // Without review tickets, the frozen exports are the same files; with them, the XLSX
        // lists each database's ticket ids, the CSV and PDF do not.
        #expect(frozen[.mongo]?.exports == frozen[.postgres]?.exports, "the same exports frozen (hashes and sizes)")
        for format in StatementFormat.allCases {
            #expect(try mongo.store.export("2026-11.classroom.LAB-X.v1", format: format).bytes
                    == postgres.store.export("2026-11.classroom.LAB-X.v1", format: format).bytes, "\(format)")
        }
        for format in [StatementFormat.csv, .pdf] {
            #expect(try mongo.store.export("2026-11.group.Labs.v1", format: format).bytes
                    == postgres.store.export("2026-11.group.Labs.v1", format: format).bytes, "\(format)")
        }
        let summaries = try [mongo, postgres].map { try $0.store.list(month: Self.november).map { s in
            [s.id, s.scope, "\(s.version)", s.status, "\(s.energyWh)", "\(String(describing: s.cost))", s.createdAt, s.frozenAt ?? "-"]
        } }
        #expect(summaries[0] == summaries[1])
        // The hand-worked total of the Computing group: lab-101 and lab-102, ten days at 8 INR/kWh.
        let computing = try postgres.store.show("2026-11.group.Computing.v1")
        var energy: Int64 = 0
        for day in 1...10 {
            for index in 0..<2 {
                let wh: Double = 1000 + Double(index) * 37.125 + Double(day) * 1.5 + 0.0004
                energy += FixedPoint.energy(wh)
            }
        }
        #expect(computing.energy == energy && computing.lines.count == 2)
    }
}
