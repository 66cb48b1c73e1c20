import AutoVoltCore
import AutoVoltMongo
import Foundation

/// `AlarmStorage` on MongoDB: `alarms` (the outbox is the document's `unpublished` list, pushed
/// in the same document write as the change), `alarm_events` numbered from `counters`, and the
/// timer's reads of `device_status` and `rejected_messages`. Throws `MongoError`.
///
/// Without multi-document transactions, `publish` is steps that are each safe to repeat: an
/// event is looked up before it takes a number, stored under a unique (alarm_id, type), and
/// only then taken off the list, and only if the list is still what was read.
public final class MongoAlarmStorage: AlarmStorage {
    let client: MongoClient
    let writeConcern: WriteConcern

    public init(client: MongoClient, writeConcern: WriteConcern) {
        self.client = client
        self.writeConcern = writeConcern
    }

    static let alarms = AlarmStore.alarms
    static let events = AlarmStore.events
    static let counters = AlarmStore.counters

    static let indexes: [String: [IndexModel]] = [
        alarms: [
            IndexModel(keys: ["rule": 1, "esp32_name": 1], name: "one_active_per_rule_device", unique: true,
                       partialFilterExpression: ["status": "active"]),
            IndexModel(keys: ["status": 1, "raised_at": -1], name: "status_raised_at"),
            IndexModel(keys: ["raised_at": -1], name: "raised_at"),
            IndexModel(keys: ["unpublished": 1], name: "unpublished", partialFilterExpression: ["unpublished": ["$exists": true]]),
        ],
        events: [
            IndexModel(keys: ["at": 1], name: "at_ttl", expireAfterSeconds: 30 * Schema.day),
            IndexModel(keys: ["alarm_id": 1, "type": 1], name: "one_event_per_alarm_and_type", unique: true),
        ],
    ]

    // MARK: Alarms

    public func insertAlarm(_ alarm: NewAlarm) throws -> Bool {
        let doc: BSONDocument = [
            "_id": .string(alarm.id),
            "rule": .string(alarm.rule),
            "kind": .string(alarm.kind),
            "esp32_name": .string(alarm.esp32Name),
            "classroom": .string(alarm.classroom),
            "severity": .string(alarm.severity),
            "status": "active",
            "raised_at": .millis(alarm.raisedAt),
            "cleared_at": .null,
            "last_value": .double(alarm.value),
            "acknowledged_at": .null,
            "acknowledged_by": .null,
            "unpublished": [.string(AlarmEventType.raise)],
        ]
        let result = try client.insertMany([doc], into: Self.alarms, ordered: true, writeConcern: writeConcern)
        if result.writeErrors.contains(where: \.isDuplicateKey) { return false }
        try result.writeErrors.throwUnlessDuplicateKeys()
        return true
    }

    public func clearActive(rule: String, esp32Name: String, at instant: EpochMillis, value: Double) throws -> AlarmRecord? {
        let filter: BSONDocument = ["rule": .string(rule), "esp32_name": .string(esp32Name), "status": "active",
                                    "raised_at": ["$lte": .millis(instant)]]
        return try client.findOneAndUpdate(
            Self.alarms, filter: filter,
            update: ["$set": ["status": "cleared", "cleared_at": .millis(instant), "last_value": .double(value)],
                     "$push": ["unpublished": .string(AlarmEventType.clear)]],
            upsert: false, returnNew: true, writeConcern: writeConcern).map(AlarmRecord.init)
    }

    public func clearedAlarm(rule: String, esp32Name: String, clearedAt instant: EpochMillis) throws -> AlarmRecord? {
        try client.findOne(Self.alarms, filter: ["rule": .string(rule), "esp32_name": .string(esp32Name), "status": "cleared",
                                                 "cleared_at": .millis(instant)]).map(AlarmRecord.init)
    }

    public func acknowledge(id: String, by person: String, at instant: EpochMillis) throws -> AlarmRecord? {
        try client.findOneAndUpdate(
            Self.alarms, filter: ["_id": .string(id), "acknowledged_at": .null],
            update: ["$set": ["acknowledged_at": .millis(instant), "acknowledged_by": .string(person)],
                     "$push": ["unpublished": .string(AlarmEventType.ack)]],
            upsert: false, returnNew: true, writeConcern: writeConcern).map(AlarmRecord.init)
    }

    public func alarm(id: String) throws -> AlarmRecord? {
        try client.findOne(Self.alarms, filter: ["_id": .string(id)]).map(AlarmRecord.init)
    }

    public func activeAlarms(limit: Int) throws -> [AlarmRecord] {
        try client.find(Self.alarms, filter: ["status": "active"],
                        projection: ["rule": 1, "kind": 1, "esp32_name": 1, "severity": 1, "status": 1, "raised_at": 1, "last_value": 1],
                        limit: limit).map(AlarmRecord.init)
    }

    public func alarms(activeOnly: Bool, from: EpochMillis?, to: EpochMillis?, limit: Int) throws -> [AlarmRecord] {
        var filter: BSONDocument = [:]
        if activeOnly { filter["status"] = "active" }
        var range: BSONDocument = [:]
        if let from { range["$gte"] = .millis(from) }
        if let to { range["$lt"] = .millis(to) }
        if !range.isEmpty { filter["raised_at"] = .document(range) }
        return try client.find(Self.alarms, filter: filter, sort: ["raised_at": -1, "_id": 1], limit: limit).map(AlarmRecord.init)
    }

    // MARK: The outbox and the event log

    public func unpublishedAlarmIDs(limit: Int) throws -> [String] {
        try client.find(Self.alarms, filter: ["unpublished": ["$exists": true]], projection: ["_id": 1], limit: limit)
            .compactMap { $0["_id"]?.stringValue }
    }

    public func publish(alarmID: String) throws -> [PublishedAlarmEvent] {
        var published: [PublishedAlarmEvent] = []
        // More than one round only when an ack or clear lands while this one publishes.
        for _ in 0..<4 {
            guard let doc = try client.findOne(Self.alarms, filter: ["_id": .string(alarmID)]),
                  let listed = doc["unpublished"]?.arrayValue else { return published }
            let record = AlarmRecord(doc)
            for type in listed.compactMap(\.stringValue) {
                let field = type == AlarmEventType.raise ? "raised_at" : type == AlarmEventType.clear ? "cleared_at" : "acknowledged_at"
                let at = AnalyticsQueries.millis(doc[field]) ?? SystemClock.nowMillis()
                // Looked up first so a stored event takes no number (an unused one is a gap the streams wait on).
                if try client.findOne(Self.events, filter: ["alarm_id": .string(alarmID), "type": .string(type)], projection: ["_id": 1]) != nil {
                    continue
                }
                if try appendEvent(type: type, alarm: record, at: at) { published.append(PublishedAlarmEvent(type: type, alarm: record)) }
            }
            let done = try client.updateOne(Self.alarms, filter: ["_id": .string(alarmID), "unpublished": .array(listed)],
                                            update: ["$unset": ["unpublished": ""]], upsert: false, writeConcern: writeConcern)
            if done.matchedCount > 0 { return published }
        }
        return published
    }

    /// Numbers the event from one counter (so every worker's events form one sequence) and
    /// stores it; false when the alarm's event of this type is stored already (a race of two
    /// publishers: the other one's number stays unused, a gap the stream passes over).
    func appendEvent(type: String, alarm: AlarmRecord, at instant: EpochMillis) throws(MongoError) -> Bool {
        let counter = try client.findOneAndUpdate(
            Self.counters, filter: ["_id": .string(Self.events)], update: ["$inc": ["seq": .int64(1)]],
            upsert: true, returnNew: true, writeConcern: writeConcern)
        guard let seq = counter?["seq"]?.int64Value else {
            throw MongoError(kind: .invalidArgument, code: 0, domain: 0, message: "the alarm event counter returned no number")
        }
        let doc: BSONDocument = [
            "_id": .int64(seq), "type": .string(type), "at": .millis(instant), "alarm_id": .string(alarm.id),
            "alarm": .document(Self.document(alarm)),
        ]
        let result = try client.insertMany([doc], into: Self.events, ordered: true, writeConcern: writeConcern)
        try result.writeErrors.throwUnlessDuplicateKeys()
        return !result.writeErrors.contains(where: \.isDuplicateKey)
    }

    public func lastEventID() throws -> Int64 {
        try client.findOne(Self.counters, filter: ["_id": .string(Self.events)])?["seq"]?.int64Value ?? 0
    }

    public func events(after id: Int64, limit: Int) throws -> [AlarmEvent] {
        try client.find(Self.events, filter: ["_id": ["$gt": .int64(id)]], sort: ["_id": 1], limit: limit).compactMap { doc in
            guard let seq = doc["_id"]?.int64Value, let type = doc["type"]?.stringValue, let alarm = doc["alarm"]?.documentValue else { return nil }
            let at = AnalyticsQueries.millis(doc["at"]).map { ISO8601.format($0) } ?? ""
            return AlarmEvent(id: seq, type: type, at: at, alarm: AlarmRecord(alarm))
        }
    }

    /// The TTL index on `at` expires them.
    public func expireEvents(before: EpochMillis) throws -> Int { 0 }

    static func document(_ r: AlarmRecord) -> BSONDocument {
        func time(_ text: String?) -> BSON { text.flatMap(ISO8601.parseMillis).map { .millis($0) } ?? .null }
        return [
            "_id": .string(r.id), "rule": .string(r.rule), "kind": .string(r.kind), "esp32_name": .string(r.esp32Name),
            "classroom": .string(r.classroom), "severity": .string(r.severity), "status": .string(r.status),
            "raised_at": time(r.raisedAt), "cleared_at": time(r.clearedAt), "last_value": r.lastValue.map { .double($0) } ?? .null,
            "acknowledged_at": time(r.acknowledgedAt), "acknowledged_by": r.acknowledgedBy.map { .string($0) } ?? .null,
        ]
    }

    // MARK: What the timer reads of the other stages

    public func forEachPresence(batchSize: Int, _ body: ([AlarmBook.Presence]) -> Void) throws {
        try client.forEachBatch(Collections.deviceStatus, filter: [:],
                                projection: ["online": 1, "last_status_at": 1, "last_telemetry_at": 1], batchSize: batchSize) { batch in
            body(batch.compactMap { doc in
                guard let name = doc["_id"]?.stringValue else { return nil }
                return AlarmBook.Presence(esp32Name: name, online: doc["online"]?.boolValue,
                                          lastStatusAt: AnalyticsQueries.millis(doc["last_status_at"]),
                                          lastTelemetryAt: AnalyticsQueries.millis(doc["last_telemetry_at"]))
            })
        }
    }

    /// Index esp32_name_received_at.
    public func recentRejects(of esp32Name: String, since: EpochMillis, keep: Int) throws -> [EpochMillis] {
        try client.find(Collections.rejectedMessages, filter: ["esp32_name": .string(esp32Name), "received_at": ["$gt": .millis(since)]],
                        sort: ["received_at": -1], projection: ["received_at": 1], limit: keep)
            .compactMap { AnalyticsQueries.millis($0["received_at"]) }
    }
}
