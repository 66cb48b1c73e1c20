import AutoVoltCore
import AutoVoltMongo
import Foundation

/// One alarm as the API, the CLI, the stream and the webhook show it (the `alarms` document).
public struct AlarmRecord: Codable, Sendable, Equatable {
    public var id: String
    public var rule: String
    public var kind: String
    public var esp32Name: String
    public var classroom: String
    public var severity: String
    public var status: String
    public var raisedAt: String
    public var clearedAt: String?
    public var lastValue: Double?
    public var acknowledgedAt: String?
    public var acknowledgedBy: String?

    enum CodingKeys: String, CodingKey {
        case id, rule, kind, classroom, severity, status
        case esp32Name = "esp32_name", raisedAt = "raised_at", clearedAt = "cleared_at", lastValue = "last_value"
        case acknowledgedAt = "acknowledged_at", acknowledgedBy = "acknowledged_by"
    }

    init(_ doc: BSONDocument) {
        func text(_ key: String) -> String { doc[key]?.stringValue ?? "" }
        func time(_ key: String) -> String? { AnalyticsQueries.millis(doc[key]).map { ISO8601.format($0) } }
        id = text("_id")
        rule = text("rule")
        kind = text("kind")
        esp32Name = text("esp32_name")
        classroom = text("classroom")
        severity = text("severity")
        status = text("status")
        raisedAt = time("raised_at") ?? ""
        clearedAt = time("cleared_at")
        lastValue = doc["last_value"]?.doubleValue
        acknowledgedAt = time("acknowledged_at")
        acknowledgedBy = doc["acknowledged_by"]?.stringValue
    }
}

/// The answer of `GET /api/power-analytics/alarms` and `alarms list --json`.
public struct AlarmList: Encodable, Sendable {
    public let status: String
    public let count: Int
    public let alarms: [AlarmRecord]
    public init(status: String, alarms: [AlarmRecord]) {
        self.status = status
        self.count = alarms.count
        self.alarms = alarms
    }
}

/// One raise, clear or ack, numbered for the stream (`Last-Event-ID`).
public struct AlarmEvent: Codable, Sendable, Equatable {
    public var id: Int64
    public var type: String
    public var at: String
    public var alarm: AlarmRecord
}

/// One raise, clear or ack that this call put into `alarm_events` (for the log and the webhook).
public struct PublishedAlarmEvent: Sendable {
    public var type: String
    public var alarm: AlarmRecord
}

/// The `alarms` collection (one document per raise) and `alarm_events` (the stream's log).
/// Every write is safe to repeat and to race: the unique partial index on (rule, esp32_name)
/// over active documents makes a second raise a duplicate, a clear or an ack matches only a
/// document still in the state it changes.
///
/// Events cannot be lost between the two collections: each raise, clear or ack writes its event
/// type into the alarm's own `unpublished` list in the same (atomic) document write, and
/// `publish` moves it to `alarm_events` (numbered, unique per alarm and type) before removing
/// it. A worker killed, or a write retried, in between leaves the type listed, and the next
/// `publish` of that alarm (any worker's timer sweeps them) stores it once.
public struct AlarmStore: Sendable {
    public static let alarms = "alarms"
    public static let events = "alarm_events"
    static let counters = "counters"

    let client: MongoClient
    let writeConcern: WriteConcern

    public init(client: MongoClient, writeConcern: WriteConcern) {
        self.client = client
        self.writeConcern = writeConcern
    }

    /// For reads only (lists, the stream): no write concern applies.
    public static func reader(_ client: MongoClient) -> AlarmStore { AlarmStore(client: client, writeConcern: .acknowledged) }

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

    static func alarmID(rule: String, esp32Name: String, at instant: EpochMillis) -> String { "\(rule)@\(esp32Name)@\(instant)" }

    /// Stores a raise. Nil when the (rule, device) already has an active alarm (this worker
    /// before a restart, or another worker, raised it first). A raise already stored by an
    /// earlier attempt of this very change (a lost answer, then a retry) is returned as stored.
    func raise(_ change: AlarmBook.Change) throws(MongoError) -> AlarmRecord? {
        let id = Self.alarmID(rule: change.rule.name, esp32Name: change.esp32Name, at: change.at)
        let doc: BSONDocument = [
            "_id": .string(id),
            "rule": .string(change.rule.name),
            "kind": .string(change.rule.kind.rawValue),
            "esp32_name": .string(change.esp32Name),
            "classroom": .string(change.classroom),
            "severity": .string(change.rule.severity.rawValue),
            "status": "active",
            "raised_at": .millis(change.at),
            "cleared_at": .null,
            "last_value": .double(change.value),
            "acknowledged_at": .null,
            "acknowledged_by": .null,
            "unpublished": ["raise"],
        ]
        let result = try client.insertMany([doc], into: Self.alarms, ordered: true, writeConcern: writeConcern)
        if result.writeErrors.contains(where: \.isDuplicateKey) {
            return try client.findOne(Self.alarms, filter: ["_id": .string(id)]).map(AlarmRecord.init)
        }
        try result.writeErrors.throwUnlessDuplicateKeys()
        return AlarmRecord(doc)
    }

    /// Stores a clear of the (rule, device)'s active alarm raised at or before `at` (a clear
    /// decided from an older reading, by another worker of the share group, leaves a newer alarm
    /// alone). Nil when there is none; the alarm this very clear already cleared (a retry) is
    /// returned as stored.
    func clear(rule: String, esp32Name: String, at instant: EpochMillis, value: Double) throws(MongoError) -> AlarmRecord? {
        let filter: BSONDocument = ["rule": .string(rule), "esp32_name": .string(esp32Name), "status": "active",
                                    "raised_at": ["$lte": .millis(instant)]]
        if let cleared = try client.findOneAndUpdate(
            Self.alarms, filter: filter,
            update: ["$set": ["status": "cleared", "cleared_at": .millis(instant), "last_value": .double(value)],
                     "$push": ["unpublished": "clear"]],
            upsert: false, returnNew: true, writeConcern: writeConcern) {
            return AlarmRecord(cleared)
        }
        return try client.findOne(Self.alarms, filter: ["rule": .string(rule), "esp32_name": .string(esp32Name), "status": "cleared",
                                                        "cleared_at": .millis(instant)]).map(AlarmRecord.init)
    }

    func clear(_ change: AlarmBook.Change) throws(MongoError) -> AlarmRecord? {
        try clear(rule: change.rule.name, esp32Name: change.esp32Name, at: change.at, value: change.value)
    }

    public enum AckOutcome: Sendable {
        case acknowledged(AlarmRecord, published: [PublishedAlarmEvent])
        /// Acknowledged before (by whom it says): nothing changed.
        case already(AlarmRecord)
        case notFound
    }

    public func acknowledge(id: String, by person: String, at instant: EpochMillis) throws(MongoError) -> AckOutcome {
        if let updated = try client.findOneAndUpdate(
            Self.alarms, filter: ["_id": .string(id), "acknowledged_at": .null],
            update: ["$set": ["acknowledged_at": .millis(instant), "acknowledged_by": .string(person)], "$push": ["unpublished": "ack"]],
            upsert: false, returnNew: true, writeConcern: writeConcern) {
            return .acknowledged(AlarmRecord(updated), published: try publish(alarmID: id))
        }
        guard let existing = try client.findOne(Self.alarms, filter: ["_id": .string(id)]) else { return .notFound }
        return .already(AlarmRecord(existing))
    }

    /// The active alarms (a campus has few), for the book and the gauge.
    func activeAlarms(limit: Int = 100_000) throws(MongoError) -> [AlarmRecord] {
        try client.find(Self.alarms, filter: ["status": "active"],
                        projection: ["rule": 1, "kind": 1, "esp32_name": 1, "severity": 1, "status": 1, "raised_at": 1, "last_value": 1],
                        limit: limit).map(AlarmRecord.init)
    }

    /// Alarms raised in [from, to), newest first; `activeOnly` keeps those not cleared.
    public func list(activeOnly: Bool, from: EpochMillis?, to: EpochMillis?, limit: Int) throws(MongoError) -> [AlarmRecord] {
        var filter: BSONDocument = [:]
        if activeOnly { filter["status"] = "active" }
        var range: BSONDocument = [:]
        if let from { range["$gte"] = .millis(from) }
        if let to { range["$lt"] = .millis(to) }
        if !range.isEmpty { filter["raised_at"] = .document(range) }
        return try client.find(Self.alarms, filter: filter, sort: ["raised_at": -1, "_id": 1], limit: limit).map(AlarmRecord.init)
    }

    // MARK: The stream's log

    /// Alarms with events not yet in `alarm_events` (a worker stopped, or a write failed, between
    /// the alarm's write and its event's): the timer publishes them.
    func unpublishedAlarmIDs(limit: Int) throws(MongoError) -> [String] {
        try client.find(Self.alarms, filter: ["unpublished": ["$exists": true]], projection: ["_id": 1], limit: limit)
            .compactMap { $0["_id"]?.stringValue }
    }

    /// Moves the alarm's unpublished events, in the order they happened, into `alarm_events`;
    /// returns those this call stored (an event stored before, by anyone, is not stored again).
    /// Each event carries the alarm as it is when the event is stored.
    public func publish(alarmID: String) throws(MongoError) -> [PublishedAlarmEvent] {
        var published: [PublishedAlarmEvent] = []
        // More than one round only when an ack or clear lands while this one publishes.
        for _ in 0..<4 {
            guard let doc = try client.findOne(Self.alarms, filter: ["_id": .string(alarmID)]),
                  let listed = doc["unpublished"]?.arrayValue else { return published }
            let record = AlarmRecord(doc)
            for type in listed.compactMap(\.stringValue) {
                let field = type == "raise" ? "raised_at" : type == "clear" ? "cleared_at" : "acknowledged_at"
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

    /// The last event number handed out (a stream without `Last-Event-ID` starts after it).
    public func lastEventID() throws(MongoError) -> Int64 {
        try client.findOne(Self.counters, filter: ["_id": .string(Self.events)])?["seq"]?.int64Value ?? 0
    }

    public func events(after id: Int64, limit: Int) throws(MongoError) -> [AlarmEvent] {
        try client.find(Self.events, filter: ["_id": ["$gt": .int64(id)]], sort: ["_id": 1], limit: limit).compactMap { doc in
            guard let seq = doc["_id"]?.int64Value, let type = doc["type"]?.stringValue, let alarm = doc["alarm"]?.documentValue else { return nil }
            let at = AnalyticsQueries.millis(doc["at"]).map { ISO8601.format($0) } ?? ""
            return AlarmEvent(id: seq, type: type, at: at, alarm: AlarmRecord(alarm))
        }
    }

    static func document(_ r: AlarmRecord) -> BSONDocument {
        func time(_ text: String?) -> BSON { text.flatMap(ISO8601.parseMillis).map { .millis($0) } ?? .null }
        return [
            "_id": .string(r.id), "rule": .string(r.rule), "kind": .string(r.kind), "esp32_name": .string(r.esp32Name),
            "classroom": .string(r.classroom), "severity": .string(r.severity), "status": .string(r.status),
            "raised_at": time(r.raisedAt), "cleared_at": time(r.clearedAt), "last_value": r.lastValue.map { .double($0) } ?? .null,
            "acknowledged_at": time(r.acknowledgedAt), "acknowledged_by": r.acknowledgedBy.map { .string($0) } ?? .null,
        ]
    }
}

/// The order in which a stream hands out events. Event numbers come from one counter, but two
/// workers may store them out of order (7 stored before 6): a gap is waited for briefly before
/// it is passed over (a number taken by a worker that died before storing its event).
public struct AlarmEventCursor: Sendable {
    public private(set) var lastID: Int64
    private var gapSeenAt: EpochMillis?
    public static let gapPatienceMillis: EpochMillis = 3000

    public init(after id: Int64) { lastID = id }

    /// The events to send now, of those stored after `lastID` (sorted by id).
    public mutating func take(_ events: [AlarmEvent], now: EpochMillis) -> [AlarmEvent] {
        var out: [AlarmEvent] = []
        for event in events where event.id > lastID {
            if event.id != lastID + 1 {
                let since = gapSeenAt ?? now
                gapSeenAt = since
                guard now - since >= Self.gapPatienceMillis else { break }
            }
            gapSeenAt = nil
            out.append(event)
            lastID = event.id
        }
        return out
    }
}
