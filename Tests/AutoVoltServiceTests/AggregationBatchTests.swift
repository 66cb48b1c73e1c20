import AutoVoltCore
import AutoVoltMongo
@testable import AutoVoltService
import Foundation
import Synchronization
import Testing

@Suite("integration: aggregate batches", .serialized)
struct AggregationBatchTests {
    /// Another worker writes new figures between this worker's read and its write: the batch
    /// write must not apply over them; the aggregate is computed again from fresh inputs and
    /// written on top, so both figures are in the history and no version is lost.
    @Test func aWriteBetweenReadAndWriteIsNotOverwritten() throws {
        let rig = try AccountingRig()
        try rig.ingest("lab-101", [(day5 + oneHour, 100), (day5 + 2 * oneHour, 400)], now: later)
        let id = "2026-11-05|lab-101"
        #expect(try rig.daily("lab-101", "2026-11-05")?["version"]?.int64Value == 1)
        let other = AggregationStore(client: rig.client, registry: rig.registry, timeZone: rig.zone, writeConcern: .acknowledged,
                                     logger: rig.logger)
        let day = CivilDate(year: 2026, month: 11, day: 5)
        let first = Tariff(id: "t-first", costPerKwh: 10, currency: "INR", effectiveFrom: 0, classroom: nil, createdAt: later, notes: nil)
        _ = try rig.client.insertMany([AggregationStore.document(first)], into: Collections.costVersions, ordered: true, writeConcern: .acknowledged)
        rig.aggregation.beforeVersionedWrite = {
            rig.aggregation.beforeVersionedWrite = nil
            // The other worker, with a tariff this one has not seen, gets there first.
            let second = Tariff(id: "t-second", costPerKwh: 20, currency: "INR", effectiveFrom: 1, classroom: nil, createdAt: later + 1, notes: nil)
            _ = try? rig.client.insertMany([AggregationStore.document(second)], into: Collections.costVersions, ordered: true,
                                           writeConcern: .acknowledged)
            _ = try? other.recalculate(start: day, end: day, classroom: nil, esp32Name: nil, now: later + 1)
        }
        let report = try rig.aggregation.recalculate(start: day, end: day, classroom: nil, esp32Name: nil, now: later + 2)
        #expect(report.recalculated == 2 && report.changedCount == 0) // written again with what the other wrote
        let stored = try #require(try rig.daily("lab-101", "2026-11-05"))
        #expect(stored["version"]?.int64Value == 3)
        #expect(stored["cost"]?.doubleValue == 6) // computed again after the lost race: 300 Wh at 20
        let history = try rig.client.find("aggregate_history", filter: ["aggregate_id": .string(id)], sort: ["version": 1])
        #expect(history.compactMap { $0["version"]?.int64Value } == [1, 2])
        #expect(history.last?["cost"]?.doubleValue == 6) // the other worker's figures (at 20) kept
    }

    /// Two workers recompute the same days at the same moment after every price change: neither
    /// fails (colliding upserts and lost conditional writes are read again), and every
    /// recalculation is applied once: each aggregate's version ends at one plus the number of
    /// recalculations (two per round), and its history holds each earlier version once.
    @Test func twoWorkersRecomputingAtOnceNeverLoseOrDoubleAVersion() throws {
        let rig = try AccountingRig()
        for device in ["lab-101", "lab-102", "lab-201"] {
            try rig.ingest(device, [(day5 + oneHour, 100), (day5 + 2 * oneHour, 400), (day5 + 26 * oneHour, 900)], now: later)
        }
        let other = AggregationStore(client: try MongoClient(uri: rig.mongo.uri(database: rig.client.databaseName)), registry: rig.registry,
                                     timeZone: rig.zone, writeConcern: .acknowledged, logger: rig.logger)
        let rounds = 12
        for round in 1...rounds {
            // A price change stored directly, so that only the two racing recalculations apply it.
            let tariff = Tariff(id: "race-\(round)", costPerKwh: Double(round), currency: "INR", effectiveFrom: 0, classroom: nil,
                                createdAt: later + Int64(round), notes: nil)
            _ = try rig.client.insertMany([AggregationStore.document(tariff)], into: Collections.costVersions, ordered: true,
                                          writeConcern: .acknowledged)
            let start = CivilDate(year: 2026, month: 11, day: 4), end = CivilDate(year: 2026, month: 11, day: 6)
            let failures = Mutex<[String]>([])
            // Both at the same `now`, with the same figures: only the write_id tells them apart.
            DispatchQueue.concurrentPerform(iterations: 2) { i in
                do {
                    _ = try (i == 0 ? rig.aggregation : other).recalculate(start: start, end: end, classroom: nil, esp32Name: nil,
                                                                           now: later + Int64(round) * 1000)
                } catch {
                    failures.withLock { $0.append("\(error)") }
                }
            }
            #expect(failures.withLock { $0 } == [])
        }
        let dailies = try rig.client.find(Collections.dailyAggregates, filter: ["cost": ["$gt": 0]])
        #expect(dailies.count == 6)
        for doc in dailies {
            let id = try #require(doc["_id"]?.stringValue)
            // Version 1 had no tariff (cost null); each round two recalculations, each a version.
            #expect(doc["version"]?.int64Value == Int64(2 * rounds + 1), "\(id)")
            let expectedCost = Double(rounds) * (doc["energy_wh"]?.doubleValue ?? 0) / 1000
            #expect(abs((doc["cost"]?.doubleValue ?? -1) - expectedCost) < 1e-9, "\(id)")
            let history = try rig.client.find("aggregate_history", filter: ["aggregate_id": .string(id)])
            #expect(history.compactMap { $0["version"]?.int64Value }.sorted() == Array(1...Int64(2 * rounds)), "\(id)")
        }
    }
}
