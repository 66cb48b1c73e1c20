import AutoVoltCore
import AutoVoltMongo
import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Logging
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// The read queries against scripts/dev-mongo, with aggregates, ledger entries and events
/// inserted directly (Asia/Kolkata, config/devices.toml).
final class QueryFixture: @unchecked Sendable {
    let mongo: DevMongoServer
    let client: MongoClient
    let database = "autovolt_q_\(UUID().uuidString.prefix(8))"
    let config: WorkerConfig

    static func at(_ text: String) -> BSON { .datetime(Date(timeIntervalSince1970: Double(ISO8601.parseMillis(text)!) / 1000)) }

    var environment: [String: String] {
        [
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
            "AUTOVOLT_MONGODB_URI": mongo.uri(database: database),
            "AUTOVOLT_DEVICES": packageRoot.appendingPathComponent("config/devices.toml").path,
            "AUTOVOLT_TIMEZONE": "Asia/Kolkata",
            "AUTOVOLT_HTTP_ADDR": "off",
            "AUTOVOLT_LOG_LEVEL": "warning",
        ]
    }

    init(seed: Bool = true) throws {
        mongo = try DevMongoServer()
        client = try MongoClient(uri: mongo.uri(database: database))
        let env = [
            "AUTOVOLT_MONGODB_URI": mongo.uri(database: database),
            "AUTOVOLT_DEVICES": packageRoot.appendingPathComponent("config/devices.toml").path,
            "AUTOVOLT_TIMEZONE": "Asia/Kolkata",
        ]
        config = try WorkerConfig(values: env, readFile: { try String(contentsOfFile: $0, encoding: .utf8) })
        if seed { try Self.seed(client) }
    }

    deinit {
        client.close()
        mongo.stop()
    }

    static func daily(_ date: String, _ device: String, _ classroom: String, energy: Double, cost: Double?,
                      coverage: Double = 1, unpriced: Double = 0) -> BSONDocument {
        [
            "_id": .string("\(date)|\(device)"), "date": .string(date), "esp32_name": .string(device), "classroom": .string(classroom),
            "energy_wh": .double(energy), "cost": cost.map { .double($0) } ?? .null, "currency": cost == nil ? .null : "INR",
            "cost_version_ids": cost == nil ? [] : ["v1"], "version": .int64(1), "computed_at": .datetime(Date()),
            "coverage": .double(coverage), "confidence": ["high": .int64(10), "medium": .int64(2), "low": .int64(1)],
            "entries": .int64(13), "complete": .bool(coverage >= 1), "unpriced_wh": .double(unpriced),
        ]
    }

    static func monthly(_ month: String, _ device: String, _ classroom: String, energy: Double, cost: Double?) -> BSONDocument {
        [
            "_id": .string("\(month)|\(device)"), "month": .string(month), "esp32_name": .string(device), "classroom": .string(classroom),
            "energy_wh": .double(energy), "cost": cost.map { .double($0) } ?? .null, "currency": cost == nil ? .null : "INR",
            "version": .int64(1), "computed_at": .datetime(Date()), "days": .int64(30),
        ]
    }

    static func entry(_ id: String, _ device: String, _ classroom: String, _ start: String, _ end: String, date: String,
                      wh: Double, billable: Bool = true, confidence: String = "high", startEvent: String,
                      supersededBy: String? = nil) -> BSONDocument {
        var doc: BSONDocument = [
            "_id": .string(id), "esp32_name": .string(device), "classroom": .string(classroom),
            "start_ts": at(start), "end_ts": at(end), "date": .string(date), "delta_wh": .double(wh),
            "is_reset_marker": false, "billable": .bool(billable),
            "quality": ["confidence": .string(confidence), "reasons": []],
            "source_events": [.string(startEvent), .string("end-of-\(id)")],
        ]
        if let supersededBy { doc["superseded_by"] = .string(supersededBy) }
        return doc
    }

    static func event(_ hash: String, _ device: String, _ time: String, _ state: BSON) -> BSONDocument {
        [
            "_id": .string("\(device)@\(hash)"), "event_hash": .string(hash), "esp32_name": .string(device),
            "device_ts": at(time), "received_at": at(time), "energy_wh_total": 1000.0, "switch_state": state,
            "clock": "device", "processed": true,
        ]
    }

    static func seed(_ client: MongoClient) throws {
        _ = try client.insertMany([
            daily("2026-11-01", "lab-101", "CSE-301", energy: 1000, cost: 7.5),
            daily("2026-11-01", "lab-102", "CSE-301", energy: 3000, cost: 22.5, coverage: 0.5),
            daily("2026-11-01", "lab-103", "EEE-105", energy: 2000, cost: nil, unpriced: 2000),
            daily("2026-11-02", "lab-101", "CSE-301", energy: 500, cost: 3.75),
            daily("2026-10-15", "lab-101", "CSE-301", energy: 800, cost: 6),
        ], into: Collections.dailyAggregates, ordered: true, writeConcern: .acknowledged)
        _ = try client.insertMany([
            monthly("2026-11", "lab-101", "CSE-301", energy: 4500, cost: 33.75),
            monthly("2026-11", "lab-102", "CSE-301", energy: 3000, cost: 22.5),
            monthly("2026-11", "lab-103", "EEE-105", energy: 2000, cost: nil),
            monthly("2026-10", "lab-101", "CSE-301", energy: 5000, cost: 37.5),
            monthly("2026-10", "lab-103", "EEE-105", energy: 0, cost: 0),
            monthly("2026-10", "mech-210-a", "MECH-210", energy: 1000, cost: 7.5),
            monthly("2026-09", "lab-101", "CSE-301", energy: 9999, cost: 99),
        ], into: Collections.monthlyAggregates, ordered: true, writeConcern: .acknowledged)
        _ = try client.insertMany([
            // lab-101: 10:50-11:10 (crosses the local hour), 11:10-11:40, a superseded and an
            // unbillable entry, and an interval across local midnight split in two.
            entry("e1", "lab-101", "CSE-301", "2026-11-01T10:50:00+05:30", "2026-11-01T11:10:00+05:30", date: "2026-11-01", wh: 20, startEvent: "hA"),
            entry("e2", "lab-101", "CSE-301", "2026-11-01T11:10:00+05:30", "2026-11-01T11:40:00+05:30", date: "2026-11-01", wh: 30, startEvent: "hB"),
            entry("e3", "lab-101", "CSE-301", "2026-11-01T11:10:00+05:30", "2026-11-01T11:40:00+05:30", date: "2026-11-01", wh: 99, startEvent: "hB", supersededBy: "e2"),
            entry("e4", "lab-101", "CSE-301", "2026-11-01T11:40:00+05:30", "2026-11-01T11:41:00+05:30", date: "2026-11-01", wh: 500, billable: false, confidence: "low", startEvent: "hX"),
            entry("e5", "lab-101", "CSE-301", "2026-11-01T23:30:00+05:30", "2026-11-02T00:00:00+05:30", date: "2026-11-01", wh: 30, confidence: "medium", startEvent: "hC"),
            entry("e6", "lab-101", "CSE-301", "2026-11-02T00:00:00+05:30", "2026-11-02T00:30:00+05:30", date: "2026-11-02", wh: 30, confidence: "medium", startEvent: "hC"),
            // lab-102 (object-form switches): one interval with relay_16 on, one whose start event is unknown.
            entry("f1", "lab-102", "CSE-301", "2026-11-01T09:00:00+05:30", "2026-11-01T09:30:00+05:30", date: "2026-11-01", wh: 40, startEvent: "hE"),
            entry("f2", "lab-102", "CSE-301", "2026-11-01T09:30:00+05:30", "2026-11-01T10:00:00+05:30", date: "2026-11-01", wh: 10, startEvent: "nowhere"),
            // lab-103: both switches on.
            entry("g1", "lab-103", "EEE-105", "2026-11-01T10:00:00+05:30", "2026-11-01T10:30:00+05:30", date: "2026-11-01", wh: 100, startEvent: "hD"),
            // mech-210-b: no aggregate yet, no switches described.
            entry("m1", "mech-210-b", "MECH-210", "2026-11-01T08:00:00+05:30", "2026-11-01T09:00:00+05:30", date: "2026-11-01", wh: 50, confidence: "medium", startEvent: "hM"),
        ], into: Collections.ledgers, ordered: true, writeConcern: .acknowledged)
        _ = try client.insertMany([
            // hA lies days before the interval (found by event_hash, not by the day's range).
            event("hA", "lab-101", "2026-10-29T10:50:00+05:30", [1, 0, 1, 0]),
            event("hB", "lab-101", "2026-11-01T11:10:00+05:30", [.bool(true), .bool(true), .bool(false), .bool(false)]),
            event("hC", "lab-101", "2026-11-01T23:30:00+05:30", [0, 0, 0, 1]),
            event("hE", "lab-102", "2026-11-01T09:00:00+05:30", ["relay_16": true, "relay_17": 0]),
            event("hD", "lab-103", "2026-11-01T10:00:00+05:30", [1, 1]),
            event("hM", "mech-210-b", "2026-11-01T08:00:00+05:30", [1]),
        ], into: Collections.telemetryEvents, ordered: true, writeConcern: .acknowledged)
    }
}

func approx(_ a: Double?, _ b: Double, _ tolerance: Double = 1e-3) -> Bool {
    guard let a else { return false }
    return abs(a - b) <= tolerance
}

/// The JSON of a result as a dictionary.
func queryJSON(_ data: Data) -> [String: Any] {
    (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:]
}

@Suite("read queries: summary, timeline, device-breakdown, monthly", .serialized)
struct QueryTests {
    @Test func summaryOfADayAndAMonth() throws {
        let f = try QueryFixture()
        let day = try AnalyticsQueries.summary(client: f.client, config: f.config,
                                               parameters: AnalyticsQueries.summaryParameters(classroom: nil, date: "2026-11-01"))
        #expect(day.scope == "campus")
        #expect(day.periodType == "day")
        #expect(day.energyWh == 6000 && day.kwh == 6)
        #expect(day.cost == nil, "lab-103 has energy without a tariff")
        #expect(day.currency == "INR")
        #expect(day.devices == 3 && day.days == 1)
        #expect(approx(day.coverage, 2.5 / 3))
        let rooms = try #require(day.byClassroom)
        #expect(rooms.map(\.classroom) == ["CSE-301", "EEE-105"])
        #expect(rooms[0].energyWh == 4000 && rooms[0].cost == 30 && rooms[0].devices == 2 && rooms[0].coverage == 0.75)
        #expect(rooms[1].energyWh == 2000 && rooms[1].cost == nil)

        let json = queryJSON(AnalyticsQueries.json(day))
        #expect(json["cost"] is NSNull)
        #expect(json["energy_wh"] as? Double == 6000)
        #expect((json["by_classroom"] as? [[String: Any]])?.first?["energy_wh"] as? Double == 4000)
        for key in ["scope", "period", "kwh", "energy_wh", "cost", "currency", "devices", "coverage", "days", "by_classroom"] {
            #expect(json[key] != nil, "\(key)")
        }

        let classroom = try AnalyticsQueries.summary(client: f.client, config: f.config,
                                                     parameters: AnalyticsQueries.summaryParameters(classroom: "CSE-301", date: "2026-11-01"))
        #expect(classroom.scope == "CSE-301" && classroom.energyWh == 4000 && classroom.cost == 30 && classroom.byClassroom == nil)
        #expect(queryJSON(AnalyticsQueries.json(classroom))["by_classroom"] == nil)

        // A month sums its days; on 2026-11-02 two days have begun, so coverage is over 2 × 2 device-days.
        let now = ISO8601.parseMillis("2026-11-02T12:00:00+05:30")!
        let month = try AnalyticsQueries.summary(client: f.client, config: f.config,
                                                 parameters: AnalyticsQueries.summaryParameters(classroom: "CSE-301", date: "2026-11"), now: now)
        #expect(month.period == "2026-11" && month.periodType == "month")
        #expect(month.startDate == "2026-11-01" && month.endDate == "2026-11-30")
        #expect(month.energyWh == 4500 && month.cost == 33.75 && month.currency == "INR")
        #expect(month.devices == 2 && month.days == 2 && month.daysElapsed == 2)
        #expect(month.coverage == 0.625)

        let empty = try AnalyticsQueries.summary(client: f.client, config: f.config,
                                                 parameters: AnalyticsQueries.summaryParameters(classroom: "NOPE-1", date: "2026-11-01"))
        #expect(empty.energyWh == 0 && empty.devices == 0 && empty.cost == 0 && empty.coverage == 0)
    }

    @Test func timelineSpreadsEntriesOverLocalHoursAndDays() throws {
        let f = try QueryFixture()
        func timeline(_ classroom: String?, _ start: String, _ end: String, _ bucket: String? = nil) throws -> TimelineResult {
            try AnalyticsQueries.timeline(client: f.client, config: f.config, parameters: AnalyticsQueries.timelineParameters(
                classroom: classroom, start: start, end: end, bucket: bucket, timeZone: f.config.timeZone))
        }
        // Hours: e1 (10:50-11:10, 20 Wh) is split 10 + 10; g1 (EEE-105) is in the 10:00 hour;
        // superseded and unbillable entries count nowhere.
        let hours = try timeline(nil, "2026-11-01T10:00:00+05:30", "2026-11-01T12:00:00+05:30")
        #expect(hours.bucket == "hour")
        #expect(hours.buckets.map(\.label) == ["2026-11-01T10:00+05:30", "2026-11-01T11:00+05:30"])
        #expect(hours.buckets.map(\.energyWh) == [110, 40])
        #expect(hours.energyWh == 150 && hours.kwh == 0.15)
        #expect(hours.start == "2026-11-01T04:30:00.000Z")
        let room = try timeline("CSE-301", "2026-11-01T10:00:00+05:30", "2026-11-01T12:00:00+05:30")
        #expect(room.buckets.map(\.energyWh) == [10, 40])
        #expect(room.scope == "CSE-301")

        // Across local midnight: the split entry lands on each side.
        let midnight = try timeline("CSE-301", "2026-11-01T23:00:00+05:30", "2026-11-02T01:00:00+05:30")
        #expect(midnight.buckets.map(\.label) == ["2026-11-01T23:00+05:30", "2026-11-02T00:00+05:30"])
        #expect(midnight.buckets.map(\.energyWh) == [30, 30])
        // Minute precision (as the labels are written) is accepted too.
        let labels = try timeline("CSE-301", "2026-11-01T23:00+05:30", "2026-11-02T01:00+05:30")
        #expect(labels.buckets.map(\.energyWh) == [30, 30])

        // Whole days (summed by the database) ...
        let days = try timeline(nil, "2026-11-01", "2026-11-02", "day")
        #expect(days.buckets.map(\.label) == ["2026-11-01", "2026-11-02"])
        #expect(days.buckets.map(\.energyWh) == [280, 30])
        #expect(days.start == "2026-10-31T18:30:00.000Z" && days.end == "2026-11-02T18:30:00.000Z")
        // ... and a partial first day (from the entries).
        let partial = try timeline(nil, "2026-11-01T11:00:00+05:30", "2026-11-02", "day")
        #expect(partial.buckets.map(\.energyWh) == [70, 30])
        #expect(partial.buckets[0].start == "2026-11-01T05:30:00.000Z")
        // Longer than two days: days by default.
        let week = try timeline(nil, "2026-10-30", "2026-11-05")
        #expect(week.bucket == "day" && week.buckets.count == 7 && week.energyWh == 310)
        let json = queryJSON(AnalyticsQueries.json(hours))
        #expect(json["time_zone"] as? String == "Asia/Kolkata")
        #expect((json["buckets"] as? [[String: Any]])?.first?["energy_wh"] as? Double == 110)
    }

    /// `hourly_wh` of the daily aggregates answers an hourly timeline with the same figures as
    /// spreading the ledger entries; a device-day the ledger changed since, one without
    /// `hourly_wh`, and the clipped hours at the ends are read from the ledger.
    @Test func hourlyTimelineFromAggregatesEqualsTheLedger() throws {
        let f = try QueryFixture()
        func timeline(_ classroom: String?, _ start: String, _ end: String) throws -> [Double] {
            try AnalyticsQueries.timeline(client: f.client, config: f.config, parameters: AnalyticsQueries.timelineParameters(
                classroom: classroom, start: start, end: end, bucket: "hour", timeZone: f.config.timeZone)).buckets.map(\.energyWh)
        }
        let ranges: [(String?, String, String)] = [
            (nil, "2026-11-01T10:00:00+05:30", "2026-11-01T12:00:00+05:30"),
            ("CSE-301", "2026-11-01T23:00:00+05:30", "2026-11-02T01:00:00+05:30"),
            (nil, "2026-11-01T10:30:00+05:30", "2026-11-02T00:15:00+05:30"),
            (nil, "2026-11-01", "2026-11-02"),
        ]
        // The fixture's aggregates have no hourly_wh: the ledger answers.
        let before = try ranges.map { try timeline($0.0, $0.1, $0.2) }
        #expect(before[0] == [110, 40])
        let store = AggregationStore(client: f.client, registry: f.config.devices, timeZone: f.config.timeZone,
                                     writeConcern: .acknowledged, logger: Logger(label: "test"))
        _ = try store.recalculate(start: CivilDate("2026-10-30")!, end: CivilDate("2026-11-05")!, classroom: nil, esp32Name: nil,
                                  now: ISO8601.parseMillis("2026-11-10T00:00:00+05:30")!)
        let doc = try #require(try f.client.findOne(Collections.dailyAggregates, filter: ["esp32_name": "lab-101", "date": "2026-11-01"]))
        let values = doc["hourly_wh"]?.arrayValue ?? []
        let hourly = values.compactMap { $0.doubleValue }
        #expect(hourly.count == 24)
        #expect(abs(hourly.reduce(0, +) - (doc["energy_wh"]?.doubleValue ?? -1)) < 1e-9)
        for (range, expected) in zip(ranges, before) {
            #expect(try timeline(range.0, range.1, range.2) == expected, "\(range)")
        }
        // The aggregates do answer: a changed hour shows ...
        var changed = hourly
        changed[10] += 1000
        _ = try f.client.updateOne(Collections.dailyAggregates, filter: ["_id": doc["_id"] ?? .null],
                                   update: ["$set": ["hourly_wh": .array(changed.map { .double($0) })]], upsert: false,
                                   writeConcern: .acknowledged)
        #expect(try timeline(nil, ranges[0].1, ranges[0].2) == [before[0][0] + 1000, before[0][1]])
        // ... until the ledger marks the device-day dirty: then its entries answer.
        _ = try f.client.insertMany([["_id": "lab-101|2026-11-01", "esp32_name": "lab-101", "date": "2026-11-01", "classroom": "CSE-301",
                                      "dirty_at": .datetime(Date())]], into: "ledger_dirty_days", ordered: true, writeConcern: .acknowledged)
        #expect(try timeline(nil, ranges[0].1, ranges[0].2) == before[0])
        // An aggregate whose hours do not fit the day (or are missing) is not used either.
        _ = try f.client.updateOne(Collections.dailyAggregates, filter: ["esp32_name": "lab-102", "date": "2026-11-01"],
                                   update: ["$set": ["hourly_wh": [1, 2, 3]]], upsert: false, writeConcern: .acknowledged)
        for (range, expected) in zip(ranges, before) {
            #expect(try timeline(range.0, range.1, range.2) == expected, "\(range)")
        }
    }

    @Test func deviceBreakdownSharesEnergyAmongTheSwitchesOn() throws {
        let f = try QueryFixture()
        let result = try AnalyticsQueries.deviceBreakdown(client: f.client, config: f.config,
                                                          parameters: AnalyticsQueries.deviceBreakdownParameters(classroom: nil, date: "2026-11-01"))
        #expect(result.devices.map(\.esp32Name) == ["lab-101", "lab-102", "lab-103", "mech-210-b"])
        #expect(result.cost == nil && result.energyWh == 6050)

        let lab101 = result.devices[0]
        #expect(lab101.source == "aggregate" && lab101.energyWh == 1000 && lab101.cost == 7.5 && lab101.currency == "INR")
        #expect(lab101.confidence == ConfidenceCounts(high: 10, medium: 2, low: 1) && lab101.entries == 13 && lab101.complete == true)
        #expect(lab101.ledgerWh == 80)
        // e1 (20 Wh, front lights 120 W and fans 300 W on): 5.714 + 14.286; e2 (30 Wh, both
        // lights): 15 + 15; e5 (30 Wh, projector 350 W on): 30.
        let byName = Dictionary(uniqueKeysWithValues: lab101.switches.map { ($0.name, $0) })
        #expect(approx(byName["lights-front"]?.energyWh, 20.0 * 120 / 420 + 15))
        #expect(approx(byName["lights-back"]?.energyWh, 15))
        #expect(approx(byName["ceiling-fans"]?.energyWh, 20.0 * 300 / 420))
        #expect(approx(byName["projector"]?.energyWh, 30))
        #expect(lab101.unattributed.energyWh == 0)
        #expect(approx(byName["lights-front"]?.onHours, (20.0 + 30) / 60))
        #expect(approx(byName["projector"]?.share, 30.0 / 80, 1e-4))
        #expect(byName["projector"]?.ratedW == 350)

        // Object form: relay_16 on gets f1; f2's start event is unknown: unattributed.
        let lab102 = result.devices[1]
        #expect(lab102.switches.map(\.energyWh) == [40, 0])
        #expect(lab102.unattributed.energyWh == 10 && lab102.unattributed.share == 0.2)
        #expect(lab102.coverage == 0.5)

        let lab103 = result.devices[2]
        #expect(lab103.cost == nil)
        #expect(approx(lab103.switches[0].energyWh, 100.0 * 2000 / 2160) && approx(lab103.switches[1].energyWh, 100.0 * 160 / 2160))

        // No aggregate yet: figures from the ledger, cost unknown; no switches described.
        let mech = result.devices[3]
        #expect(mech.source == "ledger" && mech.energyWh == 50 && mech.cost == nil && mech.classroom == "MECH-210")
        #expect(mech.switches.isEmpty && mech.unattributed.energyWh == 50 && mech.unattributed.share == 1)
        #expect(mech.confidence == ConfidenceCounts(high: 0, medium: 1, low: 0) && mech.entries == 1)
        #expect(approx(mech.coverage, 1.0 / 24, 1e-4))

        let json = queryJSON(AnalyticsQueries.json(result))
        let first = try #require((json["devices"] as? [[String: Any]])?.first)
        #expect(first["esp32_name"] as? String == "lab-101")
        #expect((first["switches"] as? [[String: Any]])?.first?["rated_w"] as? Double == 120)
        #expect((first["confidence"] as? [String: Any])?["high"] as? Int == 10)
        #expect(first["unattributed"] is [String: Any])

        let room = try AnalyticsQueries.deviceBreakdown(client: f.client, config: f.config,
                                                        parameters: AnalyticsQueries.deviceBreakdownParameters(classroom: "CSE-301", date: "2026-11-01"))
        #expect(room.devices.map(\.esp32Name) == ["lab-101", "lab-102"] && room.cost == 30 && room.scope == "CSE-301")
    }

    @Test func monthlyComparesWithThePreviousMonth() throws {
        let f = try QueryFixture()
        let result = try AnalyticsQueries.monthly(client: f.client, config: f.config,
                                                  parameters: AnalyticsQueries.monthlyParameters(classroom: nil, month: "2026-11"))
        #expect(result.month == "2026-11" && result.previousMonth == "2026-10")
        #expect(result.classrooms.map(\.classroom) == ["CSE-301", "EEE-105", "MECH-210"])
        let cse = result.classrooms[0]
        #expect(cse.current.energyWh == 7500 && cse.previous.energyWh == 5000 && cse.current.devices == 2)
        #expect(cse.change.energyWh == 2500 && cse.change.energyPercent == 50)
        #expect(cse.change.cost == 18.75 && cse.change.costPercent == 50)
        let eee = result.classrooms[1]
        #expect(eee.change.energyWh == 2000 && eee.change.energyPercent == nil, "previous month is 0")
        #expect(eee.current.cost == nil && eee.change.cost == nil)
        let mech = result.classrooms[2]
        #expect(mech.current.energyWh == 0 && mech.change.energyPercent == -100 && mech.change.cost == -7.5)
        #expect(result.total.current.energyWh == 9500 && result.total.previous.energyWh == 6000)
        #expect(result.total.change.energyPercent == 58.33 && result.total.current.cost == nil)

        let json = queryJSON(AnalyticsQueries.json(result))
        let change = (json["classrooms"] as? [[String: Any]])?[1]["change"] as? [String: Any]
        #expect(change?["energy_percent"] is NSNull)
        #expect(json["previous_month"] as? String == "2026-10")

        let january = try AnalyticsQueries.monthly(client: f.client, config: f.config,
                                                   parameters: AnalyticsQueries.monthlyParameters(classroom: "CSE-301", month: "2027-01"))
        #expect(january.previousMonth == "2026-12" && january.classrooms.isEmpty && january.total.change.energyPercent == nil)
    }

    @Test func badParametersAreReportedWithAMessage() {
        let zone = TimeZone(identifier: "Asia/Kolkata")!
        func message(_ body: () throws -> Void) -> String? {
            do { try body(); return nil } catch let error as AnalyticsParameterError { return error.message } catch { return "\(error)" }
        }
        #expect(message { _ = try AnalyticsQueries.summaryParameters(classroom: nil, date: nil) }?.contains("date is required") == true)
        #expect(message { _ = try AnalyticsQueries.summaryParameters(classroom: "", date: "") }?.contains("date is required") == true)
        #expect(message { _ = try AnalyticsQueries.summaryParameters(classroom: nil, date: "2026-13-01") }?.contains("2026-13-01") == true)
        #expect(message { _ = try AnalyticsQueries.summaryParameters(classroom: nil, date: "yesterday") } != nil)
        #expect(message { _ = try AnalyticsQueries.deviceBreakdownParameters(classroom: nil, date: "2026-11") }?.contains("YYYY-MM-DD") == true)
        #expect(message { _ = try AnalyticsQueries.deviceBreakdownParameters(classroom: nil, date: nil) } != nil)
        #expect(message { _ = try AnalyticsQueries.monthlyParameters(classroom: nil, month: "2026-11-01") }?.contains("YYYY-MM") == true)
        #expect(message { _ = try AnalyticsQueries.monthlyParameters(classroom: nil, month: nil) } == "month is required: YYYY-MM")
        func timeline(_ start: String?, _ end: String?, _ bucket: String? = nil) -> String? {
            message { _ = try AnalyticsQueries.timelineParameters(classroom: nil, start: start, end: end, bucket: bucket, timeZone: zone) }
        }
        #expect(timeline("2026-11-02", "2026-11-01") == "start is after end")
        #expect(timeline("2026-11-02T00:00:00+05:30", "2026-11-01") == "start is after end")
        #expect(timeline("2026-11-02T10:00:00Z", "2026-11-01T10:00:00Z") == "start is after end")
        #expect(timeline("2026-11-01T10:00:00Z", "2026-11-01T10:00:00Z")?.contains("empty") == true)
        #expect(timeline(nil, "2026-11-01")?.contains("start is required") == true)
        #expect(timeline("2026-11-01", nil)?.contains("end is required") == true)
        #expect(timeline("2026-11-01T10:00:00", "2026-11-02")?.contains("no UTC offset") == true)
        #expect(timeline("soon", "2026-11-02")?.contains("\"soon\"") == true)
        #expect(timeline("2026-11-01", "2026-11-02", "week") == "bucket \"week\" is not hour or day")
        #expect(timeline("2026-01-01", "2026-12-31")?.contains("at most 93") == true)
        #expect(timeline("2026-10-01", "2026-11-15", "hour")?.contains("at most 31") == true)
        // And the good ones.
        let p = try? AnalyticsQueries.timelineParameters(classroom: "", start: "2026-11-01", end: "2026-11-01", bucket: nil, timeZone: zone)
        #expect(p?.bucket == .hour && p?.classroom == nil && p.map { $0.end - $0.start } == 86_400_000)
        #expect((try? AnalyticsQueries.timelineParameters(classroom: nil, start: "2026-11-01", end: "2026-11-05", bucket: "DAY", timeZone: zone))?.bucket == .day)
        #expect((try? AnalyticsQueries.summaryParameters(classroom: " CSE-301 ", date: "2026-11"))?.classroom == "CSE-301")
    }

    @Test func cliPrintsTheSameJSONAndExitsWithTheContractStatuses() throws {
        let f = try QueryFixture()
        let ok = try WorkerProcess.runToCompletion(["summary", "--date", "2026-11-01", "--json"], environment: f.environment)
        #expect(ok.status == 0, "stderr: \(ok.stderr)")
        let json = queryJSON(Data(ok.stdout.utf8))
        #expect(json["energy_wh"] as? Double == 6000)
        #expect(json["cost"] is NSNull)
        #expect((json["by_classroom"] as? [Any])?.count == 2)
        let direct = try AnalyticsQueries.summary(client: f.client, config: f.config,
                                                  parameters: AnalyticsQueries.summaryParameters(classroom: nil, date: "2026-11-01"))
        #expect(NSDictionary(dictionary: json).isEqual(to: queryJSON(AnalyticsQueries.json(direct))))

        let table = try WorkerProcess.runToCompletion(["device-breakdown", "--date", "2026-11-01", "--classroom", "CSE-301"],
                                                      environment: f.environment)
        #expect(table.status == 0, "stderr: \(table.stderr)")
        #expect(table.stdout.contains("lab-101") && table.stdout.contains("lights-front") && table.stdout.contains("unattributed"))
        for command in [["timeline", "--start", "2026-11-01", "--end", "2026-11-02"], ["monthly", "--month", "2026-11"],
                        ["summary", "--date", "2026-11"]] {
            let run = try WorkerProcess.runToCompletion(command, environment: f.environment)
            #expect(run.status == 0 && !run.stdout.isEmpty, "\(command): \(run.stderr)")
        }

        let bad = try WorkerProcess.runToCompletion(["summary", "--date", "2026-13-01", "--json"], environment: f.environment)
        #expect(bad.status == 64)
        #expect(bad.stdout.isEmpty)
        let lines = bad.stderr.split(separator: "\n")
        #expect(lines.count == 1 && bad.stderr.contains("2026-13-01"), "stderr: \(bad.stderr)")
        let backwards = try WorkerProcess.runToCompletion(["timeline", "--start", "2026-11-02", "--end", "2026-11-01"], environment: f.environment)
        #expect(backwards.status == 64 && backwards.stderr.contains("start is after end"))

        // No database: exit 1 with one line.
        var unreachable = f.environment
        unreachable["AUTOVOLT_MONGODB_URI"] = "mongodb://127.0.0.1:1/x?serverSelectionTimeoutMS=300&connectTimeoutMS=300"
        let down = try WorkerProcess.runToCompletion(["monthly", "--month", "2026-11"], environment: unreachable)
        #expect(down.status == 1, "stderr: \(down.stderr)")
        #expect(down.stderr.split(separator: "\n").count == 1 && down.stderr.contains("monthly failed"), "stderr: \(down.stderr)")
    }

    @Test func httpAnswersJSONAnd400ForBadParameters() async throws {
        let rig = try Rig()
        try QueryFixture.seed(rig.client)
        let port = freeTCPPort()
        try rig.startWorker(extra: ["AUTOVOLT_HTTP_ADDR": "127.0.0.1:\(port)", "AUTOVOLT_TIMEZONE": "Asia/Kolkata"])
        func get(_ path: String) async throws -> (status: Int, json: [String: Any]) {
            let url = URL(string: "http://127.0.0.1:\(port)/api/power-analytics/\(path)")!
            let (data, response) = try await URLSession.shared.data(from: url)
            return ((response as? HTTPURLResponse)?.statusCode ?? 0, queryJSON(data))
        }
        var summary: (status: Int, json: [String: Any]) = (0, [:])
        for _ in 0..<50 {
            if let answer = try? await get("summary?date=2026-11-01"), answer.status != 0 { summary = answer; break }
            try await Task.sleep(nanoseconds: 200_000_000)
        }
        #expect(summary.status == 200)
        #expect(summary.json["energy_wh"] as? Double == 6000 && summary.json["scope"] as? String == "campus")
        let room = try await get("summary?classroom=CSE-301&date=2026-11")
        #expect(room.status == 200 && room.json["scope"] as? String == "CSE-301" && room.json["by_classroom"] == nil)
        let timeline = try await get("timeline?classroom=CSE-301&start=2026-11-01T23:00:00%2B05:30&end=2026-11-02T01:00:00%2B05:30")
        #expect(timeline.status == 200)
        #expect((timeline.json["buckets"] as? [[String: Any]])?.compactMap { $0["energy_wh"] as? Double } == [30, 30])
        let breakdown = try await get("device-breakdown?date=2026-11-01&classroom=CSE-301")
        #expect(breakdown.status == 200 && (breakdown.json["devices"] as? [Any])?.count == 2)
        let monthly = try await get("monthly?month=2026-11")
        #expect(monthly.status == 200 && (monthly.json["classrooms"] as? [Any])?.count == 3)

        for (path, fragment) in [("summary?date=2026-13-01", "2026-13-01"), ("summary", "date is required"),
                                 ("timeline?start=2026-11-02&end=2026-11-01", "start is after end"),
                                 ("timeline?start=2026-11-01&end=2026-11-02&bucket=week", "bucket"),
                                 ("device-breakdown", "date is required"), ("monthly?month=11-2026", "YYYY-MM")] {
            let answer = try await get(path)
            #expect(answer.status == 400, "\(path)")
            #expect((answer.json["error"] as? String)?.contains(fragment) == true, "\(path): \(answer.json)")
        }
    }
}
