import AutoVoltCore
import AutoVoltMongo
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Logging
import Testing

/// Issue 20 §2.2: `telemetry_events` keeps 730 days (a TTL on `received_at`), the ledger keeps
/// everything. A rebuild two years on must not read the expired days as days without readings:
/// three days of hourly readings, the first day's events expired, then `rebuild-ledger` (before
/// the fix: the first day 940 Wh -> 0, the next 960 -> 940).
@Suite("integration: rebuild after the events of a day expired", .serialized)
struct RebuildAfterExpiryTests {
    static let zone = TimeZone(identifier: "Asia/Kolkata")!
    static let ttlMillis: EpochMillis = 730 * 86_400_000
    static let name = "lab-101"

    /// A database with three local days of hourly readings of lab-101 (at :30, 40 Wh an hour),
    /// received when taken, the ledger and aggregates derived, then the first day's events
    /// expired by a TTL pass. The days lie about 731, 730 and 729 days back, so the pass runs as
    /// of the second day's midnight plus 730 days (within a day before now); the server's own
    /// TTL monitor is set to an hour so it never runs during the test.
    /// @unchecked: every property is a `let`, and one test uses a rig at a time (the stores it
    /// holds are not Sendable).
    final class Rig: @unchecked Sendable {
        let mongo: DevMongoServer
        let client: MongoClient
        let registry = DeviceRegistry(devices: [DeviceInfo(esp32Name: RebuildAfterExpiryTests.name, classroom: "CSE-301")])
        let ledger: LedgerStore
        let aggregation: AggregationStore
        let now = SystemClock.nowMillis()
        let days: [CivilDate]
        let dayStarts: [EpochMillis]

        init() throws {
            mongo = try DevMongoServer(extraArguments: ["--ttl-interval", "3600"])
            client = try MongoClient(uri: mongo.uri(database: "expiry_\(UUID().uuidString.prefix(6))"))
            try Schema.ensure(on: client)
            let logger = Logger(label: "test")
            ledger = LedgerStore(client: client, registry: registry, timeZone: RebuildAfterExpiryTests.zone, writeConcern: .acknowledged,
                                 owner: "test", logger: logger)
            aggregation = AggregationStore(client: client, registry: registry, timeZone: RebuildAfterExpiryTests.zone,
                                           writeConcern: .acknowledged, logger: logger)
            var calendar = LocalCalendar(timeZone: RebuildAfterExpiryTests.zone)
            // The second day starts at the last local midnight that is 730 days old.
            let second = calendar.day(containing: now - RebuildAfterExpiryTests.ttlMillis)
            let first = calendar.day(containing: second.start - 1)
            let third = calendar.day(containing: second.end)
            days = [first.date, second.date, third.date]
            dayStarts = [first.start, second.start, third.start]
        }

        deinit { mongo.stop() }

        /// 72 readings, one an hour at :30 from the first day's 00:30, 40 Wh apart.
        var readings: [(time: EpochMillis, energy: Double)] {
            (0..<72).map { hour in (dayStarts[0] + 1_800_000 + EpochMillis(hour) * 3_600_000, 10_000 + 40 * Double(hour)) }
        }

        func store() throws {
            let docs: [BSONDocument] = readings.map { r in
                let hash = EventHash.compute(esp32Name: RebuildAfterExpiryTests.name, timestampAsSent: String(r.time / 1000), energyWhTotal: r.energy)
                return ["_id": .string("\(RebuildAfterExpiryTests.name)@\(r.time)"), "event_hash": .string(hash),
                        "esp32_name": .string(RebuildAfterExpiryTests.name), "classroom": "CSE-301", "device_ts": .millis(r.time),
                        "received_at": .millis(r.time), "energy_wh_total": .double(r.energy), "switch_state": [1], "clock": "device",
                        "processed": false]
            }
            _ = try client.insertMany(docs, into: Collections.telemetryEvents, ordered: false, writeConcern: .acknowledged)
            try ledger.advance(RebuildAfterExpiryTests.name, now: now)
            _ = try aggregation.processDirtyDays(now: now)
        }

        /// One TTL pass as of `receivedBefore` + 730 days: what the TTL monitor does then (it
        /// removes the events received before `receivedBefore`). The default: the first day's.
        func expire(receivedBefore: EpochMillis? = nil) throws -> Int {
            let asOf = (receivedBefore ?? dayStarts[1]) + RebuildAfterExpiryTests.ttlMillis
            do {
                let reply = try client.runCommand(["devMongoRunTTLMonitor": 1, "now": .millis(asOf)])
                return Int(reply["deleted"]?.int64Value ?? -1)
            } catch let error {
                // A dev-mongo without devMongoRunTTLMonitor (CommandNotFound): delete what the pass
                // would, by received_at.
                guard case .server(code: 59) = error.kind else { throw error }
                return try client.deleteMany(Collections.telemetryEvents, filter: ["received_at": ["$lt": .millis(asOf - RebuildAfterExpiryTests.ttlMillis)]],
                                             writeConcern: .acknowledged)
            }
        }

        func dailyEnergy() throws -> [Double?] {
            try days.map { day in
                try client.findOne(Collections.dailyAggregates, filter: ["esp32_name": .string(RebuildAfterExpiryTests.name), "date": .string(day.description)])?["energy_wh"]?.doubleValue
            }
        }

        /// Live entries: id, date and energy.
        func live() throws -> [String: (date: String, wh: Double)] {
            let docs = try client.find(Collections.ledgers, filter: ["superseded_by": ["$exists": false]], projection: ["date": 1, "delta_wh": 1])
            return Dictionary(uniqueKeysWithValues: docs.compactMap { d in
                d["_id"]?.stringValue.map { ($0, (d["date"]?.stringValue ?? "", d["delta_wh"]?.doubleValue ?? .nan)) }
            })
        }

        func ids(_ live: [String: (date: String, wh: Double)], on dates: [CivilDate]) -> Set<String> {
            Set(live.filter { entry in dates.contains { $0.description == entry.value.date } }.keys)
        }
    }

    /// The reporter's case: the rebuild changes nothing, whatever its options. The lost day and
    /// the interval from its 23:30 to the next day's 00:30 are kept; the rest is re-derived (and
    /// is what it was).
    @Test(arguments: [nil, 5] as [Int?])
    func aRebuildKeepsTheDaysWhoseEventsExpired(window: Int?) throws {
        let rig = try Rig()
        try rig.store()
        let energy = try rig.dailyEnergy()
        // 00:30 is the baseline; 23 hours inside each day and half of each midnight interval.
        #expect(energy == [940, 960, 940])
        let before = try rig.live()
        #expect(before.count == 73) // 71 intervals, two of them split at midnight

        #expect(try rig.expire() == 24)
        #expect(try rig.client.countDocuments(Collections.telemetryEvents, filter: [:]) == 48)

        let result = try rig.ledger.rebuild(Self.name, dates: nil, now: rig.now, windowReadings: window ?? 20_000)
        _ = try rig.aggregation.processDirtyDays(now: rig.now)
        #expect(result.inserted == 0 && result.superseded == 0)
        let rebuilt = try rig.dailyEnergy()
        #expect(rebuilt == [940, 960, 940])
        let after = try rig.live()
        #expect(rig.ids(after, on: Array(rig.days[1...])) == rig.ids(before, on: Array(rig.days[1...])))
        #expect(Set(after.keys) == Set(before.keys))
        let kept = try #require(result.expired)
        #expect(kept.lostDay == rig.days[0])
        #expect(kept.floor == rig.dayStarts[1] + 1_800_000, "the rebuild starts at the end of the interval from the lost day")

        // With dates, over the lost day or reaching into it: the same.
        for dates in [rig.days[0]...rig.days[2], rig.days[0]...rig.days[0], rig.days[1]...rig.days[1]] {
            let dated = try rig.ledger.rebuild(Self.name, dates: dates, now: rig.now, windowReadings: window ?? 20_000)
            #expect(dated.inserted == 0 && dated.superseded == 0, "\(dates)")
        }
        _ = try rig.aggregation.processDirtyDays(now: rig.now)
        #expect(try rig.dailyEnergy() == [940, 960, 940])
        #expect(Set(try rig.live().keys) == Set(before.keys))
    }

    /// A rebuild that has something to change (the device moved to another classroom, which
    /// changes every entry's id) re-derives from the floor on: the days that lost readings and
    /// the interval out of the last of them keep their entries as they were, the days after are
    /// entries of the new classroom, and no day's energy moves. Expired up to the second day's
    /// midnight, or up to its noon (the second day lost its morning: it is kept whole too).
    @Test(arguments: [(24, 25), (36, 50)])
    func aRebuildThatChangesEntriesStartsAfterTheLostDays(expiredHours: Int, keptEntries: Int) throws {
        let rig = try Rig()
        try rig.store()
        let before = try rig.live()
        let cut = rig.dayStarts[0] + EpochMillis(expiredHours) * 3_600_000
        #expect(try rig.expire(receivedBefore: cut) == expiredHours)
        rig.ledger.registry = DeviceRegistry(devices: [DeviceInfo(esp32Name: Self.name, classroom: "MOVED")])
        let result = try rig.ledger.rebuild(Self.name, dates: nil, now: rig.now, windowReadings: 7)
        _ = try rig.aggregation.processDirtyDays(now: rig.now)
        let after = try rig.live()
        let lostDay = (expiredHours - 1) / 24 // the day of the last reading received before the cut
        let floor = rig.dayStarts[lostDay + 1] + 1_800_000
        #expect(result.expired?.lostDay == rig.days[lostDay])
        #expect(result.expired?.floor == floor)
        let entries = try rig.client.find(Collections.ledgers, filter: ["superseded_by": ["$exists": false]], sort: ["start_ts": 1])
        let keptIDs = Set(entries.filter { ($0["start_ts"]?.dateValue).map(LedgerStore.millis).map { $0 < floor } ?? false }.compactMap { $0["_id"]?.stringValue })
        // 23 intervals in each lost day, and both parts of the one from its 23:30 to 00:30.
        #expect(keptIDs.count == keptEntries)
        #expect(keptIDs.isSubset(of: Set(before.keys)))
        #expect(entries.allSatisfy { doc in
            let start = (doc["start_ts"]?.dateValue).map(LedgerStore.millis) ?? 0
            return doc["classroom"]?.stringValue == (start < floor ? "CSE-301" : "MOVED")
        })
        #expect(result.inserted == after.count - keptEntries && result.superseded == result.inserted)
        let rebuilt = try rig.dailyEnergy()
        #expect(rebuilt == [940, 960, 940])
    }

    /// Every event expired: nothing is left to derive from, and nothing changes.
    @Test func aRebuildOfADeviceWithoutEventsChangesNothing() throws {
        let rig = try Rig()
        try rig.store()
        let before = try rig.live()
        #expect(try rig.expire(receivedBefore: rig.dayStarts[2] + 86_400_000) == 72)
        let result = try rig.ledger.rebuild(Self.name, dates: nil, now: rig.now)
        _ = try rig.aggregation.processDirtyDays(now: rig.now)
        #expect(result.inserted == 0 && result.superseded == 0)
        #expect(result.expired?.lostDay == rig.days[2] && result.expired?.floor == nil)
        #expect(Set(try rig.live().keys) == Set(before.keys))
        let rebuilt = try rig.dailyEnergy()
        #expect(rebuilt == [940, 960, 940])
    }
}

/// Found while looking at the rebuild's floor (issue 20 §4): a late reading just after a device
/// was offline more than eight days. The live step found its restart point among the last eight
/// entries before the reading, which were midnight parts of the offline interval: it restarted
/// at a midnight, without the interval's first reading, and superseded eight of its eleven parts
/// with nothing in their place (102 Wh billed became 27.8). (Here, beside the other long-history
/// test, because this change owns this file; it belongs with LedgerBatchTests.)
@Suite("integration: a late reading after days offline", .serialized)
struct LateReadingAfterDaysOfflineTests {
    /// The late reading after the gap, inside its last day, days inside it, after the last
    /// reading, and a dip after it (settled later); the previous step's tail trusted or not.
    @Test(arguments: [30_000, -oneHour, -3 * 24 * oneHour, 90_000, 200_000] as [EpochMillis], [true, false])
    func theLiveLedgerIsTheDerivation(offset: EpochMillis, tailTrusted: Bool) throws {
        let rig = try AccountingRig()
        let q = day5 + 10 * oneHour, p = q + 10 * 24 * oneHour // ten days offline: eleven parts
        let base: [(time: EpochMillis, energy: Double)] = [(q - 60_000, 999), (q, 1000), (p, 1100), (p + 60_000, 1101), (p + 120_000, 1102)]
        try rig.ingest("lab-101", base, now: p + 130_000)
        if !tailTrusted {
            // A step interrupted after its writes: the tail it recorded is not believed.
            _ = try rig.client.updateOne(LedgerStore.stateCollection, filter: ["_id": "lab-101"], update: ["$inc": ["version": .int64(1)]],
                                         upsert: false, writeConcern: .acknowledged)
        }
        let late: (time: EpochMillis, energy: Double) = offset > 150_000 ? (p + offset, 10) : (p + offset, offset > 0 ? 1101.5 : 1099)
        try rig.ingest("lab-101", [late], now: p + 140_000 + max(0, offset))
        try rig.ledger.advance("lab-101", now: p + 10 * oneHour) // settles a dip
        let live = try rig.liveLedger()
        let expected = rig.expected(["lab-101": base + [late]], now: p + 10 * oneHour)
        #expect(live == expected)
        #expect(abs(live.values.reduce(0, +) - (offset > 150_000 ? 113 : 103)) < 1e-9)
    }
}
