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

    /// Times as epoch milliseconds (shown as ISO 8601 UTC, as every backend shows them).
    public init(id: String, rule: String, kind: String, esp32Name: String, classroom: String, severity: String, status: String,
                raisedAt: EpochMillis, clearedAt: EpochMillis?, lastValue: Double?, acknowledgedAt: EpochMillis?, acknowledgedBy: String?) {
        self.id = id
        self.rule = rule
        self.kind = kind
        self.esp32Name = esp32Name
        self.classroom = classroom
        self.severity = severity
        self.status = status
        self.raisedAt = ISO8601.format(raisedAt)
        self.clearedAt = clearedAt.map { ISO8601.format($0) }
        self.lastValue = lastValue
        self.acknowledgedAt = acknowledgedAt.map { ISO8601.format($0) }
        self.acknowledgedBy = acknowledgedBy
    }

    /// An `alarms` document (or the `alarm` of an `alarm_events` document).
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

/// The alarms (one per raise) and their event log, on any backend (`AlarmStorage`). Every write
/// is safe to repeat and to race: one active alarm per (rule, esp32_name) is the storage's unique
/// key, so a second raise is refused; a clear or an ack matches only an alarm still in the state
/// it changes.
///
/// Events cannot be lost between the alarm and the log: each raise, clear or ack puts its event
/// type into the alarm's outbox (`unpublished`) in the same write, and `publish` moves it to
/// `alarm_events` (numbered, unique per alarm and type). A worker killed, or a write retried, in
/// between leaves the type listed, and the next `publish` of that alarm (any worker's timer
/// sweeps them) stores it once.
public struct AlarmStore: Sendable {
    public static let alarms = "alarms"
    public static let events = "alarm_events"
    static let counters = "counters"

    public let storage: any AlarmStorage

    public init(storage: any AlarmStorage) {
        self.storage = storage
    }

    /// On MongoDB.
    public init(client: MongoClient, writeConcern: WriteConcern) {
        self.init(storage: MongoAlarmStorage(client: client, writeConcern: writeConcern))
    }

    static var indexes: [String: [IndexModel]] { MongoAlarmStorage.indexes }

    static func alarmID(rule: String, esp32Name: String, at instant: EpochMillis) -> String { "\(rule)@\(esp32Name)@\(instant)" }

    /// How long the event log keeps an event (the stream's `Last-Event-ID` reach).
    public static let eventRetentionMillis: EpochMillis = 30 * 86_400_000

    /// Stores a raise. Nil when the (rule, device) already has an active alarm (this worker
    /// before a restart, or another worker, raised it first). A raise already stored by an
    /// earlier attempt of this very change (a lost answer, then a retry) is returned as stored.
    func raise(_ change: AlarmBook.Change) throws -> AlarmRecord? {
        let alarm = NewAlarm(id: Self.alarmID(rule: change.rule.name, esp32Name: change.esp32Name, at: change.at), rule: change.rule.name,
                             kind: change.rule.kind.rawValue, esp32Name: change.esp32Name, classroom: change.classroom,
                             severity: change.rule.severity.rawValue, raisedAt: change.at, value: change.value)
        if try storage.insertAlarm(alarm) { return alarm.record }
        return try storage.alarm(id: alarm.id)
    }

    /// Stores a clear of the (rule, device)'s active alarm raised at or before `at` (a clear
    /// decided from an older reading, by another worker of the share group, leaves a newer alarm
    /// alone). Nil when there is none; the alarm this very clear already cleared (a retry) is
    /// returned as stored.
    func clear(rule: String, esp32Name: String, at instant: EpochMillis, value: Double) throws -> AlarmRecord? {
        if let cleared = try storage.clearActive(rule: rule, esp32Name: esp32Name, at: instant, value: value) { return cleared }
        return try storage.clearedAlarm(rule: rule, esp32Name: esp32Name, clearedAt: instant)
    }

    func clear(_ change: AlarmBook.Change) throws -> AlarmRecord? {
        try clear(rule: change.rule.name, esp32Name: change.esp32Name, at: change.at, value: change.value)
    }

    public enum AckOutcome: Sendable {
        case acknowledged(AlarmRecord, published: [PublishedAlarmEvent])
        /// Acknowledged before (by whom it says): nothing changed.
        case already(AlarmRecord)
        case notFound
    }

    /// Acknowledges alarm `id` and publishes the ack (the CLI's `alarms ack` and the API's).
    public func acknowledge(id: String, by person: String, at instant: EpochMillis) throws -> AckOutcome {
        if let updated = try storage.acknowledge(id: id, by: person, at: instant) {
            return .acknowledged(updated, published: try publish(alarmID: id))
        }
        guard let existing = try storage.alarm(id: id) else { return .notFound }
        return .already(existing)
    }

    /// The active alarms (a campus has few), for the book and the gauge.
    func activeAlarms(limit: Int = 100_000) throws -> [AlarmRecord] {
        try storage.activeAlarms(limit: limit)
    }

    /// Alarms raised in [from, to), newest first; `activeOnly` keeps those not cleared.
    public func list(activeOnly: Bool, from: EpochMillis?, to: EpochMillis?, limit: Int) throws -> [AlarmRecord] {
        try storage.alarms(activeOnly: activeOnly, from: from, to: to, limit: limit)
    }

    // MARK: The stream's log

    /// Alarms with events not yet in `alarm_events` (a worker stopped, or a write failed, between
    /// the alarm's write and its event's): the timer publishes them.
    func unpublishedAlarmIDs(limit: Int) throws -> [String] {
        try storage.unpublishedAlarmIDs(limit: limit)
    }

    /// Moves the alarm's unpublished events, in the order they happened, into `alarm_events`;
    /// returns those this call stored (an event stored before, by anyone, is not stored again).
    /// Each event carries the alarm as it is when the event is stored.
    public func publish(alarmID: String) throws -> [PublishedAlarmEvent] {
        try storage.publish(alarmID: alarmID)
    }

    /// The last event number handed out (a stream without `Last-Event-ID` starts after it).
    public func lastEventID() throws -> Int64 {
        try storage.lastEventID()
    }

    public func events(after id: Int64, limit: Int) throws -> [AlarmEvent] {
        try storage.events(after: id, limit: limit)
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
