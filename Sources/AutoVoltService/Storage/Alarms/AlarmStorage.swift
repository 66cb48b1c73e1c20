import AutoVoltCore

/// The data operations of the alarms (`AlarmStore`, `AlarmService`): the `alarms` of contract
/// section 8 with the outbox of each alarm's raise, clear and ack, the numbered event log the
/// stream reads (`alarm_events`), and what the alarm timer reads of the other stages
/// (`device_status`, `rejected_messages`). One implementation per backend: `MongoAlarmStorage`,
/// `PostgresAlarmStorage`, held to the same contract by AlarmStorageConformanceTests. Only domain
/// values cross it.
///
/// What raises and clears, ids, retries and what is announced stay in the logic; the storage
/// guarantees:
/// - one active alarm per (rule, esp32_name), whoever writes (a unique key, not a read first);
/// - a change and its event type in the alarm's outbox are one write: no event is lost between
///   an alarm and its event, whoever dies in between;
/// - `publish` stores each outboxed event once, numbered from one sequence shared by every
///   worker, in the order the alarm changed.
/// Blocking: call from a dedicated thread. Errors are the backend's own (`MongoError`,
/// `PostgresError`), classified by `StorageFailure`.
public protocol AlarmStorage: Sendable {
    // MARK: Alarms

    /// Inserts `alarm` as active, `raise` in its outbox. False when nothing was inserted because
    /// an alarm of its id is stored already (an earlier attempt of this raise) or the (rule,
    /// esp32_name) has an active alarm (another worker's, or from before a restart).
    func insertAlarm(_ alarm: NewAlarm) throws -> Bool
    /// Clears the (rule, esp32_name)'s active alarm raised at or before `at`: `status` cleared,
    /// `cleared_at`, `last_value`, and `clear` in its outbox. The alarm as stored now; nil when
    /// there is none (none active, or one raised after `at`).
    func clearActive(rule: String, esp32Name: String, at: EpochMillis, value: Double) throws -> AlarmRecord?
    /// The (rule, esp32_name)'s cleared alarm whose `cleared_at` is exactly `clearedAt` (a clear's
    /// retry finds the alarm it cleared).
    func clearedAlarm(rule: String, esp32Name: String, clearedAt: EpochMillis) throws -> AlarmRecord?
    /// Acknowledges alarm `id` if it is not acknowledged yet: `acknowledged_at`,
    /// `acknowledged_by`, and `ack` in its outbox. The alarm as stored now; nil when there is no
    /// such alarm or it was acknowledged before.
    func acknowledge(id: String, by person: String, at: EpochMillis) throws -> AlarmRecord?
    /// The alarm of this id.
    func alarm(id: String) throws -> AlarmRecord?
    /// The active alarms, at most `limit` (a campus has few).
    func activeAlarms(limit: Int) throws -> [AlarmRecord]
    /// Alarms raised in [from, to) (either bound optional), `activeOnly` those not cleared;
    /// newest `raised_at` first, then by id (byte order); at most `limit`.
    func alarms(activeOnly: Bool, from: EpochMillis?, to: EpochMillis?, limit: Int) throws -> [AlarmRecord]

    // MARK: The outbox and the event log

    /// Alarms with events in their outbox (a worker stopped, or a write failed, between the
    /// alarm's write and its events'), at most `limit`.
    func unpublishedAlarmIDs(limit: Int) throws -> [String]
    /// Moves the alarm's outboxed events, in the order they happened, into the event log, each
    /// numbered from the one sequence and carrying the alarm as it is when stored (its `at` is
    /// the alarm's `raised_at`, `cleared_at` or `acknowledged_at`). Returns those this call
    /// stored: an event stored before, by anyone, is not stored or returned again; of two
    /// publishers at once, each event goes to one.
    func publish(alarmID: String) throws -> [PublishedAlarmEvent]
    /// The last event number handed out (0 before any).
    func lastEventID() throws -> Int64
    /// The stored events numbered after `id`, in number order, at most `limit`.
    func events(after id: Int64, limit: Int) throws -> [AlarmEvent]
    /// Deletes the events stored for an instant before `before` (kept 30 days). MongoDB's TTL
    /// index does it by itself (nothing to do, 0); PostgreSQL deletes them in batches. The
    /// number deleted.
    @discardableResult
    func expireEvents(before: EpochMillis) throws -> Int

    // MARK: What the timer reads of the other stages

    /// Every board's presence in `device_status` (bounded by the campus), `batchSize` at a time.
    func forEachPresence(batchSize: Int, _ body: ([AlarmBook.Presence]) -> Void) throws
    /// The receive times of the device's latest `keep` rejected messages received after `since`,
    /// newest first.
    func recentRejects(of esp32Name: String, since: EpochMillis, keep: Int) throws -> [EpochMillis]
}

/// A raise to store: the alarm as the contract's `alarms` row or document describes it.
public struct NewAlarm: Sendable, Equatable {
    /// `RULE@DEVICE@RAISED_MS`: the same raise retried has the same id.
    public var id: String
    public var rule: String
    public var kind: String
    public var esp32Name: String
    public var classroom: String
    public var severity: String
    public var raisedAt: EpochMillis
    public var value: Double

    public init(id: String, rule: String, kind: String, esp32Name: String, classroom: String, severity: String, raisedAt: EpochMillis,
                value: Double) {
        self.id = id
        self.rule = rule
        self.kind = kind
        self.esp32Name = esp32Name
        self.classroom = classroom
        self.severity = severity
        self.raisedAt = raisedAt
        self.value = value
    }

    /// The alarm as stored by its insert (active, not acknowledged).
    public var record: AlarmRecord {
        AlarmRecord(id: id, rule: rule, kind: kind, esp32Name: esp32Name, classroom: classroom, severity: severity, status: "active",
                    raisedAt: raisedAt, clearedAt: nil, lastValue: value, acknowledgedAt: nil, acknowledgedBy: nil)
    }
}

/// The event types of an alarm's outbox and log.
public enum AlarmEventType {
    public static let raise = "raise"
    public static let clear = "clear"
    public static let ack = "ack"
}
