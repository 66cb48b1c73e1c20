import AutoVoltCore
import AutoVoltPostgres
import Foundation

extension PostgresTables {
    /// The alarms of contract section 8 and the stream's event log. `alarms.id` is the MongoDB
    /// `_id` (`RULE@DEVICE@RAISED_MS`, byte order like MongoDB's); `unpublished` is the alarm's
    /// outbox, the event types its raise, clear or ack put there in the same statement; the
    /// partial unique index keeps one active alarm per (rule, esp32_name) whoever inserts.
    /// `alarm_events.id` comes from the sequence `alarm_event_numbers`, so every worker's events
    /// form one sequence; `alarm` is the alarm as the event stored it (the API's JSON); one event
    /// per alarm and type. Events are kept 30 days (`at`), deleted in batches by the alarm timer.
    static let alarms = """
    CREATE TABLE alarms (
        id text COLLATE "C" PRIMARY KEY,
        rule text NOT NULL,
        kind text NOT NULL,
        esp32_name text NOT NULL,
        classroom text NOT NULL,
        severity text NOT NULL,
        status text NOT NULL CHECK (status IN ('active', 'cleared')),
        raised_at timestamptz NOT NULL,
        cleared_at timestamptz,
        last_value double precision,
        acknowledged_at timestamptz,
        acknowledged_by text,
        unpublished jsonb NOT NULL DEFAULT '[]'::jsonb
    );
    CREATE UNIQUE INDEX alarms_one_active_per_rule_device ON alarms (rule, esp32_name) WHERE status = 'active';
    CREATE INDEX alarms_status_raised_at ON alarms (status, raised_at DESC);
    CREATE INDEX alarms_raised_at ON alarms (raised_at DESC);
    CREATE INDEX alarms_esp32_name_raised_at ON alarms (esp32_name, raised_at DESC);
    CREATE INDEX alarms_unpublished ON alarms (id) WHERE unpublished <> '[]'::jsonb;
    CREATE TABLE alarm_events (
        id bigint GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME alarm_event_numbers) PRIMARY KEY,
        type text NOT NULL,
        at timestamptz NOT NULL,
        alarm_id text COLLATE "C" NOT NULL,
        alarm jsonb NOT NULL,
        UNIQUE (alarm_id, type)
    );
    CREATE INDEX alarm_events_at ON alarm_events (at);
    """
}

/// `AlarmStorage` on PostgreSQL. Throws `PostgresError` (and `EncodingError` for an alarm JSON
/// cannot hold, which never happens: non-finite values are written as text).
///
/// - A raise is one `INSERT ... ON CONFLICT DO NOTHING`: the primary key (the same raise
///   retried) and the partial unique index (another active alarm of the rule and device) both
///   make it insert nothing; two racing writers wait on the index and one inserts.
/// - A clear or an ack is one `UPDATE ... WHERE` still in the state it changes `RETURNING` the
///   row, appending its event type to `unpublished` in the same statement.
/// - `publish` is one transaction: the alarm's row locked (`FOR UPDATE`, so two publishers of
///   one alarm run one after the other), each listed event inserted with the next number unless
///   stored, the outbox emptied. There is no state between "event stored" and "outbox emptied".
public final class PostgresAlarmStorage: AlarmStorage {
    public let pool: PostgresPool

    public init(pool: PostgresPool) {
        self.pool = pool
    }

    static let columns = """
    id, rule, kind, esp32_name, classroom, severity, status, raised_at, cleared_at, last_value, acknowledged_at, acknowledged_by
    """

    static func record(_ row: PostgresRow) -> AlarmRecord {
        AlarmRecord(id: row.string("id") ?? "", rule: row.string("rule") ?? "", kind: row.string("kind") ?? "",
                    esp32Name: row.string("esp32_name") ?? "", classroom: row.string("classroom") ?? "",
                    severity: row.string("severity") ?? "", status: row.string("status") ?? "", raisedAt: row.millis("raised_at") ?? 0,
                    clearedAt: row.millis("cleared_at"), lastValue: row.double("last_value"), acknowledgedAt: row.millis("acknowledged_at"),
                    acknowledgedBy: row.string("acknowledged_by"))
    }

    /// An event type as a one-element jsonb array, for `unpublished || $n::jsonb`.
    static func listed(_ type: String) -> PostgresJSON { PostgresJSON("[\"\(type)\"]") }

    // MARK: Alarms

    public func insertAlarm(_ alarm: NewAlarm) throws -> Bool {
        try pool.withConnection { connection in
            try connection.execute("""
                INSERT INTO alarms (id, rule, kind, esp32_name, classroom, severity, status, raised_at, last_value, unpublished)
                VALUES ($1, $2, $3, $4, $5, $6, 'active', $7::timestamptz, $8, $9::jsonb)
                ON CONFLICT DO NOTHING
                """, [alarm.id, alarm.rule, alarm.kind, alarm.esp32Name, alarm.classroom, alarm.severity, PostgresTimestamp(millis: alarm.raisedAt),
                      alarm.value, Self.listed(AlarmEventType.raise)]) == 1
        }
    }

    public func clearActive(rule: String, esp32Name: String, at instant: EpochMillis, value: Double) throws -> AlarmRecord? {
        try pool.withConnection { connection in
            try connection.query("""
                UPDATE alarms SET status = 'cleared', cleared_at = $3::timestamptz, last_value = $4, unpublished = unpublished || $5::jsonb
                WHERE rule = $1 AND esp32_name = $2 AND status = 'active' AND raised_at <= $3::timestamptz
                RETURNING \(Self.columns)
                """, [rule, esp32Name, PostgresTimestamp(millis: instant), value, Self.listed(AlarmEventType.clear)]).first.map(Self.record)
        }
    }

    public func clearedAlarm(rule: String, esp32Name: String, clearedAt instant: EpochMillis) throws -> AlarmRecord? {
        try pool.withConnection { connection in
            try connection.query("""
                SELECT \(Self.columns) FROM alarms
                WHERE rule = $1 AND esp32_name = $2 AND status = 'cleared' AND cleared_at = $3::timestamptz
                LIMIT 1
                """, [rule, esp32Name, PostgresTimestamp(millis: instant)]).first.map(Self.record)
        }
    }

    public func acknowledge(id: String, by person: String, at instant: EpochMillis) throws -> AlarmRecord? {
        try pool.withConnection { connection in
            try connection.query("""
                UPDATE alarms SET acknowledged_at = $3::timestamptz, acknowledged_by = $2, unpublished = unpublished || $4::jsonb
                WHERE id = $1 AND acknowledged_at IS NULL
                RETURNING \(Self.columns)
                """, [id, person, PostgresTimestamp(millis: instant), Self.listed(AlarmEventType.ack)]).first.map(Self.record)
        }
    }

    public func alarm(id: String) throws -> AlarmRecord? {
        try pool.withConnection { connection in
            try connection.query("SELECT \(Self.columns) FROM alarms WHERE id = $1", [id]).first.map(Self.record)
        }
    }

    public func activeAlarms(limit: Int) throws -> [AlarmRecord] {
        guard limit > 0 else { return [] }
        return try pool.withConnection { connection in
            try connection.query("SELECT \(Self.columns) FROM alarms WHERE status = 'active' ORDER BY id LIMIT $1", [limit]).map(Self.record)
        }
    }

    public func alarms(activeOnly: Bool, from: EpochMillis?, to: EpochMillis?, limit: Int) throws -> [AlarmRecord] {
        try pool.withConnection { connection in
            try Self.alarms(on: connection, activeOnly: activeOnly, esp32Name: nil, from: from, to: to, limit: limit)
        }
    }

    /// Alarms, newest `raised_at` first then by id, on a connection the caller holds (the
    /// analytics reads run theirs under a request's deadline): `activeOnly` those not cleared,
    /// `esp32Name` one board's, raised in [from, to).
    public static func alarms(on connection: PostgresConnection, activeOnly: Bool, esp32Name: String?, from: EpochMillis?,
                              to: EpochMillis?, limit: Int) throws -> [AlarmRecord] {
        guard limit > 0 else { return [] }
        var conditions: [String] = []
        var params: [any PostgresBindable] = []
        if activeOnly { conditions.append("status = 'active'") }
        if let esp32Name {
            params.append(esp32Name)
            conditions.append("esp32_name = $\(params.count)")
        }
        if let from {
            params.append(PostgresTimestamp(millis: from))
            conditions.append("raised_at >= $\(params.count)::timestamptz")
        }
        if let to {
            params.append(PostgresTimestamp(millis: to))
            conditions.append("raised_at < $\(params.count)::timestamptz")
        }
        params.append(limit)
        let filter = conditions.isEmpty ? "" : "WHERE " + conditions.joined(separator: " AND ")
        return try connection.query("SELECT \(columns) FROM alarms \(filter) ORDER BY raised_at DESC, id LIMIT $\(params.count)", params)
            .map(record)
    }

    // MARK: The outbox and the event log

    public func unpublishedAlarmIDs(limit: Int) throws -> [String] {
        guard limit > 0 else { return [] }
        return try pool.withConnection { connection in
            try connection.query("SELECT id FROM alarms WHERE unpublished <> '[]'::jsonb ORDER BY id LIMIT $1", [limit])
                .compactMap { $0.string("id") }
        }
    }

    public func publish(alarmID: String) throws -> [PublishedAlarmEvent] {
        try pool.withConnection { connection in
            try connection.transaction { () throws -> [PublishedAlarmEvent] in
                guard let row = try connection.query("""
                    SELECT \(Self.columns), unpublished FROM alarms WHERE id = $1 FOR UPDATE
                    """, [alarmID]).first else { return [] }
                var types: [String] = []
                for type in Self.strings(row.json("unpublished")) where !types.contains(type) { types.append(type) }
                guard !types.isEmpty else { return [] }
                let record = Self.record(row)
                let alarm = PostgresJSON(try Self.json(record))
                var published: [PublishedAlarmEvent] = []
                for type in types {
                    let field = type == AlarmEventType.raise ? "raised_at" : type == AlarmEventType.clear ? "cleared_at" : "acknowledged_at"
                    let at = row.millis(field) ?? SystemClock.nowMillis()
                    // Looked up first so a stored event takes no number (an unused one is a gap the streams wait on).
                    let stored = try connection.query("""
                        INSERT INTO alarm_events (type, at, alarm_id, alarm)
                        SELECT $1::text, $2::timestamptz, $3::text, $4::jsonb
                        WHERE NOT EXISTS (SELECT 1 FROM alarm_events WHERE alarm_id = $3::text AND type = $1::text)
                        ON CONFLICT (alarm_id, type) DO NOTHING
                        RETURNING id
                        """, [type, PostgresTimestamp(millis: at), alarmID, alarm])
                    if !stored.isEmpty { published.append(PublishedAlarmEvent(type: type, alarm: record)) }
                }
                try connection.execute("UPDATE alarms SET unpublished = '[]'::jsonb WHERE id = $1", [alarmID])
                return published
            }
        }
    }

    public func lastEventID() throws -> Int64 {
        try pool.withConnection { connection in
            try connection.query("SELECT CASE WHEN is_called THEN last_value ELSE 0 END AS last FROM alarm_event_numbers")
                .first?.int64("last") ?? 0
        }
    }

    public func events(after id: Int64, limit: Int) throws -> [AlarmEvent] {
        guard limit > 0 else { return [] }
        let rows = try pool.withConnection { connection in
            try connection.query("SELECT id, type, at, alarm FROM alarm_events WHERE id > $1 ORDER BY id LIMIT $2", [id, limit])
        }
        return rows.compactMap { row in
            guard let seq = row.int64("id"), let type = row.string("type"), let alarm = row.json("alarm").flatMap(Self.alarm) else { return nil }
            return AlarmEvent(id: seq, type: type, at: row.millis("at").map { ISO8601.format($0) } ?? "", alarm: alarm)
        }
    }

    static let expiryBatch = 5_000

    public func expireEvents(before: EpochMillis) throws -> Int {
        var deleted = 0
        while true {
            // A batch at a time: short statements, never a long lock on the log the streams read.
            let n = try pool.withConnection { connection in
                try connection.execute("""
                    DELETE FROM alarm_events WHERE id IN (SELECT id FROM alarm_events WHERE at < $1::timestamptz ORDER BY id LIMIT $2)
                    """, [PostgresTimestamp(millis: before), Self.expiryBatch])
            }
            deleted += n
            if n < Self.expiryBatch { return deleted }
        }
    }

    // MARK: JSON

    /// The alarm as its event stores it: the API's JSON (times as ISO 8601 text).
    static func json(_ record: AlarmRecord) throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return String(decoding: try encoder.encode(record), as: UTF8.self)
    }

    static func alarm(_ text: String) -> AlarmRecord? {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return try? decoder.decode(AlarmRecord.self, from: Data(text.utf8))
    }

    /// A jsonb array of strings (`unpublished`).
    static func strings(_ text: String?) -> [String] {
        guard let text, let values = try? JSONDecoder().decode([String].self, from: Data(text.utf8)) else { return [] }
        return values
    }

    // MARK: What the timer reads of the other stages

    public func forEachPresence(batchSize: Int, _ body: ([AlarmBook.Presence]) -> Void) throws {
        try pool.withConnection { connection in
            try connection.forEachBatch("""
                SELECT esp32_name, online, last_status_at, last_telemetry_at FROM device_status ORDER BY esp32_name
                """, [], batchSize: max(1, batchSize)) { rows in
                body(rows.compactMap { row in
                    guard let name = row.string("esp32_name") else { return nil }
                    return AlarmBook.Presence(esp32Name: name, online: row.bool("online"), lastStatusAt: row.millis("last_status_at"),
                                              lastTelemetryAt: row.millis("last_telemetry_at"))
                })
            }
        }
    }

    /// Index rejected_messages_esp32_name_received_at, in each month's partition.
    public func recentRejects(of esp32Name: String, since: EpochMillis, keep: Int) throws -> [EpochMillis] {
        guard keep > 0 else { return [] }
        return try pool.withConnection { connection in
            try connection.query("""
                SELECT received_at FROM rejected_messages WHERE esp32_name = $1 AND received_at > $2::timestamptz
                ORDER BY received_at DESC LIMIT $3
                """, [esp32Name, PostgresTimestamp(millis: since), keep]).compactMap { $0.millis("received_at") }
        }
    }
}
