import AutoVoltCore
import AutoVoltMongo
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Logging
import Testing

/// The statement store against the wire-protocol server, with time injected: the month-end
/// routine, what a frozen statement withstands, and every refusal.
@Suite("integration: statements (store)", .serialized)
struct StatementStoreTests {
    static let november = "2026-11"

    final class StatementRig: @unchecked Sendable {  // @unchecked: used from one test at a time
        let accounting: AccountingRig
        let store: StatementStore

        init() throws {
            accounting = try AccountingRig()
            let registry = DeviceRegistry(devices: Array(accounting.registry.devices.values), schedules: [:],
                                          groups: ["Computing": ["CSE-301"], "Labs": ["CSE-301", "EEE-105"]])
            store = StatementStore(client: accounting.client, registry: registry, timeZone: accounting.zone,
                                   writeConcern: .acknowledged, logger: accounting.logger)
        }

        var client: MongoClient { accounting.client }

        /// Three days of hourly readings (5-7 November) for the three devices, at 8 INR/kWh.
        func threeDays() throws {
            _ = try accounting.aggregation.addTariff(costPerKwh: 8, currency: "INR", effectiveFrom: 0, classroom: nil, notes: nil, now: day5)
            for (index, device) in ["lab-101", "lab-102", "lab-201"].enumerated() {
                let step = Double(40 + 7 * index) + 0.123
                let readings: [(time: EpochMillis, energy: Double)] = (0...72).map { hour in
                    (time: day5 + Int64(hour) * oneHour, energy: 1000 + step * Double(hour))
                }
                try accounting.ingest(device, readings, now: day5 + 4 * 24 * oneHour)
            }
        }

        /// The month's daily aggregates, as a statement counts them.
        func aggregateTotals(classrooms: [String]? = nil) throws -> (energy: Int64, cost: Int64, count: Int) {
            var filter: BSONDocument = ["date": ["$gte": "2026-11-01", "$lte": "2026-11-30"]]
            if let classrooms { filter["classroom"] = ["$in": .array(classrooms.map { .string($0) })] }
            let docs = try client.find(Collections.dailyAggregates, filter: filter, limit: 1000)
            return (docs.map { FixedPoint.energy($0["energy_wh"]?.doubleValue ?? 0) }.reduce(0, +),
                    docs.map { FixedPoint.money($0["cost"]?.doubleValue ?? 0) }.reduce(0, +), docs.count)
        }
    }

    @Test func theMonthEndRoutineAndAFrozenStatementThatNeverChanges() throws {
        let rig = try StatementRig()
        try rig.threeDays()
        let now = later
        let draft = try rig.store.generate(month: Self.november, scope: .campus, now: now)
        let totals = try rig.aggregateTotals()
        #expect(draft.id == "2026-11.campus.v1" && draft.version == 1 && draft.status == .draft)
        #expect(draft.energy == totals.energy && draft.cost == totals.cost, "the statement is the sum of the aggregates it rests on")
        #expect(draft.lines.count == 3 && draft.sources.count == totals.count)
        #expect(draft.sources.allSatisfy { $0.version >= 1 })
        #expect(draft.segments.count == 1 && draft.segments[0].costPerKwh == 8)
        #expect(draft.currency == "INR")
        // A new generate replaces the draft: the same id, still version 1.
        let again = try rig.store.generate(month: Self.november, scope: .campus, now: now + 1000)
        #expect(again.id == draft.id && again.version == 1)
        #expect(try rig.store.list(month: Self.november).count == 1)

        let frozen = try rig.store.freeze(draft.id, by: "finance", now: now + 2000)
        #expect(frozen.status == .frozen && frozen.frozenBy == "finance" && frozen.exports.count == 3)
        #expect(throws: StatementError.self) { try rig.store.freeze(draft.id, by: "again", now: now + 3000) }
        var exported: [StatementFormat: [UInt8]] = [:]
        for format in StatementFormat.allCases {
            let (_, bytes) = try rig.store.export(draft.id, format: format)
            #expect(EventHash.sha256Hex(bytes: bytes) == frozen.exports.first { $0.format == format }?.sha256)
            exported[format] = bytes
        }
        let csv = String(decoding: exported[.csv] ?? [], as: UTF8.self)
        let total = try #require(csv.components(separatedBy: "\r\n").first { $0.contains(",total,") })
        let fields = total.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        #expect(fields[8] == FixedPoint.wh(totals.energy) && fields[10] == FixedPoint.moneyText(totals.cost), "CSV totals are the aggregates' exactly")

        // After freezing: a late reading inside the month and a retroactive classroom tariff.
        try rig.accounting.ingest("lab-101", [(time: day5 + 80 * oneHour, energy: 5000)], now: now + 10_000)
        _ = try rig.accounting.aggregation.addTariff(costPerKwh: 11, currency: "INR", effectiveFrom: day5 + 24 * oneHour, classroom: "EEE-105",
                                                     notes: "retroactive", now: now + 20_000)
        let moved = try rig.aggregateTotals()
        #expect(moved.energy != totals.energy && moved.cost != totals.cost)
        #expect(try rig.store.show(draft.id) == frozen, "the frozen statement did not move")
        for format in StatementFormat.allCases {
            #expect(try rig.store.export(draft.id, format: format).bytes == exported[format], "the frozen \(format) export did not move")
        }

        // The next generate is version 2 with the new figures; the diff says why.
        let next = try rig.store.generate(month: Self.november, scope: .campus, now: now + 30_000)
        #expect(next.id == "2026-11.campus.v2" && next.version == 2 && next.energy == moved.energy && next.cost == moved.cost)
        for diff in [try rig.store.diff(draft.id, other: nil, now: now + 40_000), try rig.store.diff(draft.id, other: next.id, now: now + 40_000)] {
            let byName = Dictionary(uniqueKeysWithValues: diff.changes.map { ($0.esp32Name, $0) })
            #expect(byName.keys.sorted() == ["lab-101", "lab-201"], "lab-102 did not change: \(diff.changes)")
            #expect(byName["lab-101"]?.reasons == [.lateReadings] && byName["lab-101"]?.lateReadings == 1)
            #expect(byName["lab-201"]?.reasons == [.tariffChange])
            #expect(byName["lab-201"]?.dates.map(\.description) == ["2026-11-06", "2026-11-07"], "the tariff reaches from the 6th; readings end at midnight on the 8th")
            #expect(diff.oldEnergy == totals.energy && diff.newEnergy == moved.energy)
        }
        #expect(try rig.store.list(month: Self.november).map(\.id) == ["2026-11.campus.v2", "2026-11.campus.v1"])
        let v2 = try rig.store.freeze(next.id, by: "finance", now: now + 50_000)
        #expect(try rig.store.generate(month: Self.november, scope: .campus, now: now + 60_000).version == 3)
        #expect(v2.exports.count == 3)
    }

    /// A statement's device-days (one per board and day, 174 bytes each) are kept beside it in
    /// chunks: inline, 2,500 boards' month made a 13.9 MB document (measured with this test at
    /// 2,500 boards: 873 KB without them), and MongoDB refuses documents over 16 MB, which
    /// dev-mongo does not check; so the sizes are measured here. Read back whole; a draft
    /// generated again leaves only its own; a missing chunk is an error.
    @Test func aLargeCampusStatementKeepsItsDeviceDaysBesideIt() throws {
        let rig = try StatementRig()
        let boards = 300
        let dates = (1...30).map { String(format: "2026-11-%02d", $0) }
        for date in dates {
            let docs: [BSONDocument] = (0..<boards).map { index in
                let name = "board-\(index)"
                return ["_id": .string("\(date)|\(name)"), "date": .string(date), "esp32_name": .string(name), "classroom": .string("R-\(index / 4)"),
                        "energy_wh": 1250.5, "cost": 10.004, "currency": "INR", "unpriced_wh": 0.0, "coverage": 1.0,
                        "confidence": ["high": 2880, "medium": 0, "low": 0], "cost_version_ids": ["tv-1"],
                        "cost_segments": [["cost_version_id": "tv-1", "cost_per_kwh": 8.0, "energy_wh": 1250.5, "cost": 10.004]],
                        "version": 1, "computed_at": .millis(later)]
            }
            _ = try rig.client.insertMany(docs, into: Collections.dailyAggregates, ordered: false, writeConcern: .acknowledged)
        }
        let draft = try rig.store.generate(month: Self.november, scope: .campus, now: later)
        #expect(draft.sources.count == boards * dates.count && draft.lines.count == boards)
        let stored = try #require(try rig.client.findOne(StatementStore.collection, filter: ["_id": .string(draft.id)]))
        let size = try stored.toBSONBytes().count
        #expect(size < boards * 400, "the statement document is \(size) bytes: it grows with the boards, not the device-days")
        let chunks = try rig.client.find(StatementStore.sourcesCollection, filter: ["statement_id": .string(draft.id)], limit: 100)
        #expect(chunks.count == 5)
        for chunk in chunks { #expect(try chunk.toBSONBytes().count < 1 << 20) }
        // What the sources would weigh inline, as before.
        var inline = stored
        inline["aggregates"] = .array(draft.sources.map(StatementDocuments.sourceDocument))
        #expect(try inline.toBSONBytes().count - size > boards * dates.count * 150)

        let shown = try rig.store.show(draft.id)
        #expect(shown.sources == draft.sources)
        // Generated again: the new draft's chunks only.
        let again = try rig.store.generate(month: Self.november, scope: .campus, now: later + 1000)
        #expect(rig.client.countDocumentsOrZero(StatementStore.sourcesCollection) == 5)
        #expect(try rig.store.show(again.id).sources.count == boards * dates.count)
        // A chunk gone is an error, not a shorter list.
        _ = try rig.client.deleteMany(StatementStore.sourcesCollection, filter: ["statement_id": .string(draft.id), "chunk": 3],
                                      writeConcern: .acknowledged)
        #expect(throws: StatementError.self) { try rig.store.show(draft.id).sources.count }
    }

    @Test func scopesAreAClassroomOrARegistryGroup() throws {
        let rig = try StatementRig()
        try rig.threeDays()
        let computing = try rig.store.generate(month: Self.november, scope: try rig.store.scope(classroom: nil, group: "Computing"), now: later)
        #expect(computing.id == "2026-11.group.Computing.v1" && computing.classrooms == ["CSE-301"])
        #expect(computing.lines.map(\.esp32Name) == ["lab-101", "lab-102"])
        #expect(computing.energy == (try rig.aggregateTotals(classrooms: ["CSE-301"])).energy)
        let eee = try rig.store.generate(month: Self.november, scope: .classroom("EEE-105"), now: later)
        #expect(eee.lines.map(\.esp32Name) == ["lab-201"])
        let labs = try rig.store.generate(month: Self.november, scope: .group("Labs"), now: later)
        #expect(labs.energy == computing.energy + eee.energy)
        #expect(throws: StatementError.self) { try rig.store.diff(labs.id, other: eee.id, now: later) }
    }

    @Test func refusalsChangeNothing() throws {
        let rig = try StatementRig()
        try rig.threeDays()
        func refusal(_ body: () throws -> Void) -> StatementError? {
            do {
                try body()
                return nil
            } catch let error as StatementError {
                return error
            } catch {
                return nil
            }
        }
        let cases: [(StatementError?, Int32, Int)] = [
            (refusal { _ = try rig.store.generate(month: "2026-13", scope: .campus, now: later) }, 64, 400),
            (refusal { _ = try rig.store.generate(month: "2027-02", scope: .campus, now: later) }, 64, 400),
            (refusal { _ = try rig.store.generate(month: Self.november, scope: .classroom("NOPE-1"), now: later) }, 64, 404),
            (refusal { _ = try rig.store.scope(classroom: nil, group: "Nope") }, 64, 404),
            (refusal { _ = try rig.store.generate(month: "2026-09", scope: .campus, now: later) }, 1, 404),
            (refusal { _ = try rig.store.show("2026-11.campus.v9") }, 1, 404),
            (refusal { _ = try rig.store.freeze("2026-11.campus.v9", by: "x", now: later) }, 1, 404),
            (refusal { _ = try rig.store.export("2026-11.campus.v9", format: .pdf) }, 1, 404),
        ]
        for (error, exit, status) in cases {
            #expect(error?.exitCode == exit && error?.httpStatus == status, "\(String(describing: error))")
        }
        #expect(rig.accounting.client.countDocumentsOrZero(StatementStore.collection) == 0)
        let draft = try rig.store.generate(month: Self.november, scope: .campus, now: later)
        _ = try rig.store.freeze(draft.id, by: "finance", now: later)
        let twice = refusal { _ = try rig.store.freeze(draft.id, by: "someone", now: later + 1) }
        #expect(twice?.exitCode == 1 && twice?.httpStatus == 409)
        #expect(try rig.store.show(draft.id).frozenBy == "finance")
    }

    /// The scheduler's job on the 1st: drafts for the campus, each group and each classroom
    /// with figures, leased like the other jobs (a second worker makes none), never frozen.
    @Test func theSchedulerDraftsThePreviousMonthOnTheFirst() throws {
        let rig = try StatementRig()
        try rig.threeDays()
        let december1At3 = day5 + 26 * 24 * oneHour + 3 * oneHour + 60_000
        func scheduler(_ owner: String) -> Scheduler {
            let a = rig.accounting
            return Scheduler(client: a.client, schedule: Schedule(reconcileAt: (2, 0), statementAt: (3, 0), lookbackDays: 1), timeZone: a.zone,
                             owner: owner, aggregation: a.aggregation,
                             reconciler: Reconciler(client: a.client, registry: a.registry, timeZone: a.zone, writeConcern: .acknowledged, logger: a.logger),
                             statements: rig.store, writeConcern: .acknowledged, logger: a.logger, listeningSince: day5)
        }
        // Another worker is still reconciling the 30th: the drafts wait for it.
        _ = try rig.client.updateOne(Scheduler.runsCollection, filter: ["_id": "reconcile:2026-11-30"], update: ["$set": [
            "status": "running", "owner": "other", "lease_until": .millis(december1At3 + 3_600_000),
        ]], upsert: true, writeConcern: .acknowledged)
        let waiting = try scheduler("a").tick(now: december1At3).map(\.id)
        #expect(waiting == ["day_close:2026-11-30"], "\(waiting)")
        #expect(try rig.store.list(month: Self.november).isEmpty)
        _ = try rig.client.updateOne(Scheduler.runsCollection, filter: ["_id": "reconcile:2026-11-30"],
                                     update: ["$set": ["status": "done"], "$unset": ["lease_until": ""]], upsert: false, writeConcern: .acknowledged)
        let ran = try scheduler("a").tick(now: december1At3 + 30_000).map(\.id)
        #expect(ran == ["statements:2026-12-01"], "\(ran)")
        #expect(try scheduler("b").tick(now: december1At3 + 60_000).isEmpty)
        let made = try rig.store.list(month: Self.november)
        #expect(Set(made.map(\.id)) == ["2026-11.campus.v1", "2026-11.group.Computing.v1", "2026-11.group.Labs.v1",
                                         "2026-11.classroom.CSE-301.v1", "2026-11.classroom.EEE-105.v1"])
        #expect(made.allSatisfy { $0.status == "draft" })
    }

    /// The races of freeze, staged between its read and its write: a second freeze wins (this
    /// one is told it is frozen), or a generate replaces the draft (this one freezes nothing).
    @Test func aFreezeThatLosesARaceChangesNothing() throws {
        let rig = try StatementRig()
        try rig.threeDays()
        let draft = try rig.store.generate(month: Self.november, scope: .campus, now: later)
        var racing = rig.store
        let store = rig.store
        racing.beforeFreezeWrite = { _ = try? store.freeze(draft.id, by: "the other clerk", now: later + 5) }
        do {
            _ = try racing.freeze(draft.id, by: "finance", now: later)
            Issue.record("both freezes won")
        } catch {
            #expect(error.httpStatus == 409 && error.description.contains("frozen already"), "\(error)")
        }
        let frozen = try rig.store.show(draft.id)
        #expect(frozen.frozenBy == "the other clerk")
        for format in StatementFormat.allCases {
            #expect(EventHash.sha256Hex(bytes: try rig.store.export(draft.id, format: format).bytes)
                    == frozen.exports.first { $0.format == format }?.sha256)
        }

        let other = try rig.store.generate(month: Self.november, scope: .classroom("EEE-105"), now: later)
        racing.beforeFreezeWrite = { _ = try? store.generate(month: Self.november, scope: .classroom("EEE-105"), now: later + 7) }
        do {
            _ = try racing.freeze(other.id, by: "finance", now: later + 10)
            Issue.record("a regenerated draft was frozen unseen")
        } catch {
            #expect(error.httpStatus == 409 && error.description.contains("generated again"), "\(error)")
        }
        let after = try rig.store.show(other.id)
        #expect(after.status == .draft && after.createdAt == later + 7)
    }

    /// The bytes kept at freezing are what an export returns; lost, they are made again and
    /// must match the recorded hash; altered, the export refuses.
    @Test func frozenExportsAreCheckedAgainstTheirHash() throws {
        let rig = try StatementRig()
        try rig.threeDays()
        let draft = try rig.store.generate(month: Self.november, scope: .campus, now: later)
        let frozen = try rig.store.freeze(draft.id, by: "finance", now: later)
        func kept(_ format: StatementFormat) throws -> String {
            StatementStore.exportID(draft.id, format, try #require(frozen.exports.first { $0.format == format }?.sha256))
        }
        #expect(rig.client.countDocumentsOrZero(StatementStore.exportsCollection) == 3, "the three exports kept at freezing")
        let pdf = try rig.store.export(draft.id, format: .pdf).bytes
        _ = try rig.client.deleteMany(StatementStore.exportsCollection, filter: ["_id": .string(try kept(.pdf))], writeConcern: .acknowledged)
        #expect(try rig.store.export(draft.id, format: .pdf).bytes == pdf, "made again from the frozen document, the same bytes")
        #expect(rig.client.countDocumentsOrZero(StatementStore.exportsCollection, ["_id": .string(try kept(.pdf))]) == 1)
        var altered = try rig.store.export(draft.id, format: .csv).bytes
        altered[0] ^= 1
        _ = try rig.client.updateOne(StatementStore.exportsCollection, filter: ["_id": .string(try kept(.csv))],
                                     update: ["$set": ["data": .binary(subtype: 0, data: altered)]], upsert: false, writeConcern: .acknowledged)
        do {
            _ = try rig.store.export(draft.id, format: .csv)
            Issue.record("an altered export was returned")
        } catch {
            #expect(error.description.contains("would differ from the one frozen"), "\(error)")
        }
        #expect(frozen.exports.map(\.format) == [.csv, .pdf, .xlsx])
    }
}

extension MongoClient {
    func countDocumentsOrZero(_ collection: String, _ filter: BSONDocument = [:]) -> Int {
        (try? countDocuments(collection, filter: filter)) ?? 0
    }
}
