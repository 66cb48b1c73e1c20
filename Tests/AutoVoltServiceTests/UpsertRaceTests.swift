import AutoVoltCore
import AutoVoltMongo
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Testing

/// Two workers upserting the same key at the same moment, as mongod lets them (both find
/// nothing, both insert): dev-mongo's `devMongoUpsertRace` makes the other worker's identical
/// upsert land first, then this one runs, with mongod 5.0's outcome (E11000 for the loser, or
/// mongod's own retry as an update when the filter is the unique key).
@Suite("integration: concurrent upserts on the same keys", .serialized)
struct UpsertRaceTests {
    /// A daily aggregate is written with a versioned upsert (filter: `_id` and no version yet),
    /// so the loser gets E11000, reads the winner's document and writes the next version.
    @Test func anAggregateWhoseFirstWriteRacesEndsAsOneDocumentWithTheRightFigures() throws {
        let rig = try AccountingRig()
        _ = try rig.aggregation.addTariff(costPerKwh: 8, currency: "INR", effectiveFrom: 0, classroom: nil, notes: nil, now: day5)
        let before = try rig.mongo.raceUpserts(collection: Collections.dailyAggregates, mode: .times(1))
        try rig.ingest("lab-101", [(day5 + oneHour, 100), (day5 + 3 * oneHour, 400)], now: later)
        #expect(try rig.mongo.raceUpserts(collection: Collections.dailyAggregates, mode: .off) == before + 1, "the race did not happen")
        #expect(rig.count(Collections.dailyAggregates, ["esp32_name": "lab-101"]) == 1)
        let daily = try #require(try rig.daily("lab-101", "2026-11-05"))
        #expect(daily["energy_wh"]?.doubleValue == 300 && daily["cost"]?.doubleValue == 2.4)
        #expect((daily["version"]?.int64Value ?? 0) >= 1)
        #expect(try rig.monthly("lab-101", "2026-11")?["energy_wh"]?.doubleValue == 300)
    }

    /// A review ticket is upserted on exactly its unique key: mongod retries the loser as an
    /// update, and the day has one ticket per device and kind, open.
    @Test func aTicketOpenedByTwoReconciliationsAtOnceIsOneTicket() throws {
        let rig = try AccountingRig()
        let before = try rig.mongo.raceUpserts(collection: Collections.reviewTickets, mode: .alwaysOn)
        let report = try Reconciler(client: rig.client, registry: rig.registry, timeZone: rig.zone, writeConcern: .acknowledged,
                                    logger: rig.logger).run(date: CivilDate("2026-11-05")!, now: later)
        let fired = try rig.mongo.raceUpserts(collection: Collections.reviewTickets, mode: .off) - before
        #expect(fired == report.anomalies.count && fired == 3, "every registered device is silent: three races")
        #expect(rig.count(Collections.reviewTickets) == 3)
        #expect(rig.count(Collections.reviewTickets, ["status": "open", "kind": "silent_device"]) == 3)
    }
}
