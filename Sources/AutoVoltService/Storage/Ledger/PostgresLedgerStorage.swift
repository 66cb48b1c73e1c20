import AutoVoltCore
import AutoVoltPostgres
import Foundation

extension PostgresTables {
    /// One row per device the ledger has taken: its lease (`lease_owner`, `lease_until`), the
    /// `version` every acquisition bumps, the tail the last finished step recorded
    /// (`tail_version` = the version it held) and the trailing dip's deadline. `id` is the
    /// device's name (the MongoDB document's `_id`).
    static let ledgerState = """
    CREATE TABLE ledger_state (
        id text PRIMARY KEY,
        lease_owner text,
        lease_until timestamptz,
        version bigint NOT NULL DEFAULT 0,
        tail_version bigint,
        tail_start timestamptz,
        tail_end timestamptz,
        pending_dip_until timestamptz,
        last_derived_at timestamptz
    );
    CREATE INDEX ledger_state_pending_dip_until ON ledger_state (pending_dip_until) WHERE pending_dip_until IS NOT NULL;
    """

    /// Device-days whose ledger changed, for re-aggregation. Before migration 2 `id` was
    /// "esp32_name|date" and a day marked again got a new `dirty_at`; since, a row is one mark.
    static let ledgerDirtyDays = """
    CREATE TABLE ledger_dirty_days (
        id text PRIMARY KEY,
        esp32_name text NOT NULL,
        date text NOT NULL,
        classroom text NOT NULL,
        dirty_at timestamptz NOT NULL
    );
    CREATE INDEX ledger_dirty_days_date ON ledger_dirty_days (date);
    CREATE INDEX ledger_dirty_days_dirty_at ON ledger_dirty_days (dirty_at);
    """

    /// Migration 2. The aggregation keeps each day's sums (`daily_aggregates.fold_state`, a
    /// `DayFold`) and reads only the entries after the last one folded, when the day's marks say
    /// that nothing before it changed (`changed_from`, the earliest start of an entry inserted or
    /// superseded; the epoch when not known, so that all entries are read). A row is one mark
    /// (its own `id`): the aggregation deletes the rows it read, and a mark made meanwhile stays.
    /// `hold_until`: a ledger step's mark made before its writes, which the aggregation leaves
    /// (with every other mark of its day) until the step replaces it or the hold expires. The
    /// ledger index (esp32_name, date, start_ts, end_ts) serves the fold's read (and replaces
    /// (esp32_name, date)).
    static let dayFolds = """
    ALTER TABLE ledger_dirty_days ADD COLUMN changed_from timestamptz NOT NULL DEFAULT 'epoch',
        ADD COLUMN hold_until timestamptz;
    CREATE INDEX ledger_dirty_days_esp32_name_date ON ledger_dirty_days (esp32_name, date);
    ALTER TABLE daily_aggregates ADD COLUMN fold_state text;
    ALTER TABLE aggregate_history ADD COLUMN fold_state text;
    CREATE INDEX device_consumption_ledgers_esp32_name_date_start ON device_consumption_ledgers (esp32_name, date, start_ts, end_ts);
    DROP INDEX device_consumption_ledgers_esp32_name_date;
    """
}

/// The ledger's data in PostgreSQL (`ledger_state`, `ledger_dirty_days`, and the ledger's reads
/// and writes of `telemetry_events`, `device_consumption_ledgers` and `review_tickets`).
///
/// Each operation is one statement (a batched read is a cursor): a lease is an
/// `INSERT ... ON CONFLICT DO UPDATE ... WHERE` free, expired or ours `RETURNING` the state,
/// entries a multi-row `INSERT ... ON CONFLICT (id) DO NOTHING RETURNING id`, supersession an
/// `UPDATE ... WHERE superseded_by IS NULL`. No step needs a transaction: every write is
/// idempotent, as on MongoDB. Rows touched by several statements at once (leases, dirty days)
/// are written in key order, so two workers never deadlock on them.
public final class PostgresLedgerStorage: LedgerStorage {
    public let pool: PostgresPool

    public init(pool: PostgresPool) {
        self.pool = pool
    }

    /// Most rows one multi-row INSERT carries (15 parameters each; a statement takes at most 65,535).
    static let rowsPerInsert = 1_000

    private func withConnection<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        try pool.withConnection(body)
    }

    // MARK: Finding work

    public func unprocessedEventDevices(limit: Int) throws -> [String] {
        try withConnection { connection in
            try connection.query("SELECT esp32_name FROM telemetry_unprocessed ORDER BY received_at LIMIT $1", [limit])
                .compactMap { $0.string("esp32_name") }
        }
    }

    public func devicesWithDipDue(now: EpochMillis, limit: Int) throws -> [String] {
        try withConnection { connection in
            try connection.query("SELECT id FROM ledger_state WHERE pending_dip_until <= $1::timestamptz LIMIT $2",
                                 [PostgresTimestamp(millis: now), limit])
                .compactMap { $0.string("id") }
        }
    }

    /// A skip scan over the (esp32_name, device_ts) index: one probe per device, not a sort of
    /// every event.
    public func eventDeviceNames() throws -> [String] {
        try withConnection { connection in
            var names: [String] = []
            try connection.forEachBatch("""
                WITH RECURSIVE names(esp32_name) AS (
                    (SELECT esp32_name FROM telemetry_events ORDER BY esp32_name LIMIT 1)
                    UNION ALL
                    SELECT (SELECT e.esp32_name FROM telemetry_events e WHERE e.esp32_name > n.esp32_name ORDER BY e.esp32_name LIMIT 1)
                    FROM names n WHERE n.esp32_name IS NOT NULL
                )
                SELECT esp32_name FROM names WHERE esp32_name IS NOT NULL
                """, [], batchSize: 1_000) { rows in
                names += rows.compactMap { $0.string("esp32_name") }
            }
            return names
        }
    }

    // MARK: Leases

    public func acquireLeases(_ names: [String], owner: String, now: EpochMillis, until: EpochMillis) throws -> [LedgerLease] {
        // Sorted and unique: one row is locked once, and in the same order by every worker.
        let names = Array(Set(names)).sorted()
        guard !names.isEmpty else { return [] }
        return try withConnection { connection in
            try connection.query("""
                WITH leased AS (
                    INSERT INTO ledger_state AS s (id, lease_owner, lease_until, version)
                    SELECT name, $2::text, $3::timestamptz, 1 FROM unnest($1::text[]) AS name ORDER BY name
                    ON CONFLICT (id) DO UPDATE SET lease_owner = EXCLUDED.lease_owner, lease_until = EXCLUDED.lease_until,
                                                   version = s.version + 1
                        WHERE s.lease_until IS NULL OR s.lease_until < $4::timestamptz OR s.lease_owner = $2::text
                    RETURNING s.id, s.version, s.tail_version, s.tail_start, s.tail_end
                ), released AS (
                    UPDATE ledger_dirty_days d SET hold_until = NULL FROM leased WHERE d.esp32_name = leased.id AND d.hold_until IS NOT NULL
                )
                SELECT * FROM leased
                """, [PostgresTextArray(names), owner, PostgresTimestamp(millis: until), PostgresTimestamp(millis: now)])
            .compactMap { row in
                guard let name = row.string("id"), let version = row.int64("version") else { return nil }
                return LedgerLease(name: name, version: version, tailVersion: row.int64("tail_version"),
                                   tailStart: row.millis("tail_start"), tailEnd: row.millis("tail_end"))
            }
        }
    }

    public func renewLease(_ name: String, owner: String, until: EpochMillis) throws -> Bool {
        try withConnection { connection in
            try connection.execute("UPDATE ledger_state SET lease_until = $3::timestamptz WHERE id = $1 AND lease_owner = $2",
                                   [name, owner, PostgresTimestamp(millis: until)]) == 1
        }
    }

    private struct ReleaseRow: Encodable {
        var id: String
        var version: Int64
        var has_tail: Bool
        var tail_start: Int64?
        var tail_end: Int64?
        var dip: Int64?
    }

    public func releaseLeases(_ releases: [LedgerRelease], owner: String, derivedAt: EpochMillis) throws {
        guard !releases.isEmpty else { return }
        let rows = releases.sorted { $0.name < $1.name }.map { release in
            ReleaseRow(id: release.name, version: release.version, has_tail: release.tail != nil,
                       tail_start: release.tail?.last?.start, tail_end: release.tail?.last?.end, dip: release.pendingDipUntil)
        }
        let json = try Self.json(rows)
        // A tail the step cannot vouch for clears tail_version only (as MongoDB's $unset does).
        try withConnection { connection in
            try connection.execute("""
                UPDATE ledger_state AS s SET
                    lease_owner = NULL, lease_until = NULL, last_derived_at = $2::timestamptz,
                    pending_dip_until = \(Self.timestamp("v.dip")),
                    tail_version = CASE WHEN v.has_tail THEN v.version END,
                    tail_start = CASE WHEN v.has_tail THEN \(Self.timestamp("v.tail_start")) ELSE s.tail_start END,
                    tail_end = CASE WHEN v.has_tail THEN \(Self.timestamp("v.tail_end")) ELSE s.tail_end END
                FROM jsonb_to_recordset($1::jsonb) AS v(id text, version bigint, has_tail boolean, tail_start bigint, tail_end bigint, dip bigint)
                WHERE s.id = v.id AND s.lease_owner = $3
                """, [PostgresJSON(json), PostgresTimestamp(millis: derivedAt), owner])
        }
    }

    public func pendingDipUntil(_ name: String) throws -> EpochMillis? {
        try withConnection { connection in
            try connection.query("SELECT pending_dip_until FROM ledger_state WHERE id = $1", [name]).first?.millis("pending_dip_until")
        }
    }

    // MARK: Events

    public func unprocessedEvents(of names: [String], limit: Int) throws -> [LedgerNewEvent] {
        guard !names.isEmpty else { return [] }
        return try withConnection { connection in
            try connection.query("""
                SELECT id, received_at, esp32_name, device_ts FROM telemetry_unprocessed
                WHERE esp32_name = ANY($1::text[]) LIMIT $2
                """, [PostgresTextArray(names), limit])
            .compactMap { row in
                guard let id = row.string("id"), let name = row.string("esp32_name") else { return nil }
                return LedgerNewEvent(ref: LedgerEventRef(id: id, receivedAt: row.millis("received_at")), esp32Name: name,
                                      deviceTs: row.millis("device_ts"))
            }
        }
    }

    public func earliestEvent(of name: String, unprocessedOnly: Bool) throws -> LedgerEventTimes? {
        try withConnection { connection in
            try connection.query("""
                SELECT device_ts, received_at FROM \(unprocessedOnly ? "telemetry_unprocessed" : "telemetry_events")
                WHERE esp32_name = $1 ORDER BY device_ts LIMIT 1
                """, [name])
            .first.map { LedgerEventTimes(deviceTs: $0.millis("device_ts"), receivedAt: $0.millis("received_at")) }
        }
    }

    /// A device at a time (a lateral subquery each, with its own order and limit): one probe
    /// of the (esp32_name, device_ts) index per device and partition. With the devices as one
    /// `OR` under `ORDER BY ... LIMIT`, the planner walked the whole index in order and
    /// filtered (126,600 rows read for 500 in bench-e2e, about a second).
    public func events(_ devices: [LedgerDeviceStart], limit: Int) throws -> [LedgerStoredEvent] {
        guard !devices.isEmpty else { return [] }
        // Ids in byte order, as MongoDB orders strings: the first of two readings at one instant
        // is the same reading on either backend.
        let sql = """
            SELECT e.id, e.received_at, e.esp32_name, e.event_hash, e.device_ts, e.energy_wh_total, e.boot_id, e.seq, e.clock,
                   e.power_w, e.uptime_s, e.timestamp_sent, e.processed
            FROM unnest($1::text[], $2::text[]::timestamptz[]) AS d(name, since)
            CROSS JOIN LATERAL (
                SELECT * FROM telemetry_events t WHERE t.esp32_name = d.name AND t.device_ts >= d.since
                ORDER BY t.device_ts, t.id COLLATE "C" LIMIT $3
            ) e
            ORDER BY e.esp32_name, e.device_ts, e.id COLLATE "C" LIMIT $3
            """
        let names = PostgresTextArray(devices.map(\.name))
        let since = PostgresTextArray(devices.map { $0.from.map { PostgresTimestamp(millis: $0).postgresText ?? "-infinity" } ?? "-infinity" })
        return try withConnection { connection in
            try connection.query(sql, [names, since, limit]).compactMap(Self.storedEvent)
        }
    }

    static func storedEvent(_ row: PostgresRow) -> LedgerStoredEvent? {
        guard let id = row.string("id"), let name = row.string("esp32_name") else { return nil }
        let time = row.millis("device_ts")
        var reading: LedgerReading?
        if let hash = row.string("event_hash"), let time, let energy = row.double("energy_wh_total") {
            reading = .stored(eventHash: hash, time: time, energyWh: energy, bootID: row.string("boot_id"), seq: row.int64("seq"),
                              clock: row.string("clock"), powerW: row.double("power_w"), uptimeSeconds: row.double("uptime_s"),
                              timestampSent: row.string("timestamp_sent"))
        }
        return LedgerStoredEvent(ref: LedgerEventRef(id: id, receivedAt: row.millis("received_at")), esp32Name: name, deviceTs: time,
                                 processed: row.bool("processed") == true, reading: reading)
    }

    public func presentEventHashes(of name: String, among hashes: [String]) throws -> Set<String> {
        guard !hashes.isEmpty else { return [] }
        return try withConnection { connection in
            Set(try connection.query("SELECT event_hash FROM telemetry_events WHERE esp32_name = $1 AND event_hash = ANY($2::text[])",
                                     [name, PostgresTextArray(hashes)])
                .compactMap { $0.string("event_hash") })
        }
    }

    /// One statement: the events leave `telemetry_unprocessed` and get `processed` together.
    /// The receive times bound the partitions looked in by whole months (the events of one
    /// step are days apart at most, usually seconds). Months, not the step's own range: a
    /// partition filling fast has stale statistics, and a narrow range then looks selective
    /// enough that the planner scans it by `received_at` (60,000 rows read per 130 updated, in
    /// bench-e2e) instead of probing the primary key by id. Rows processed already are not
    /// written again.
    public func markProcessed(_ events: [LedgerEventRef]) throws {
        guard !events.isEmpty else { return }
        let ids = PostgresTextArray(events.map(\.id))
        let times = events.compactMap(\.receivedAt)
        let dequeue = "WITH dequeued AS (DELETE FROM telemetry_unprocessed WHERE id = ANY($1::text[]))"
        try withConnection { connection in
            if times.count == events.count, let first = times.min(), let last = times.max() {
                // A millisecond wider either side: a time stored with microseconds is read rounded.
                let from = PostgresIngestStorage.Month(millis: first - 1), to = PostgresIngestStorage.Month(millis: last + 1).next
                try connection.execute("""
                    \(dequeue) UPDATE telemetry_events SET processed = true
                    WHERE id = ANY($1::text[]) AND received_at >= $2::timestamptz AND received_at < $3::timestamptz AND NOT processed
                    """, [ids, from.start, to.start])
            } else {
                try connection.execute("\(dequeue) UPDATE telemetry_events SET processed = true WHERE id = ANY($1::text[]) AND NOT processed", [ids])
            }
        }
    }

    // MARK: Entries

    public func liveEntries(_ query: LedgerEntryQuery) throws -> [StoredLedgerEntry] {
        guard !query.devices.isEmpty else { return [] }
        var params: [any PostgresBindable] = []
        func bind(_ value: any PostgresBindable, _ cast: String = "") -> String {
            params.append(value)
            return "$\(params.count)\(cast)"
        }
        let devices = query.devices.map { device in
            var clause = "esp32_name = \(bind(device.name))"
            if let from = device.from { clause += " AND start_ts >= \(bind(PostgresTimestamp(millis: from), "::timestamptz"))" }
            return "(\(clause))"
        }
        var conditions = ["superseded_by IS NULL", devices.count == 1 ? devices[0] : "(\(devices.joined(separator: " OR ")))"]
        func time(_ column: String, _ op: String, _ value: EpochMillis?) {
            if let value { conditions.append("\(column) \(op) \(bind(PostgresTimestamp(millis: value), "::timestamptz"))") }
        }
        time("start_ts", "<", query.startBefore)
        time("start_ts", "<=", query.startAtMost)
        time("end_ts", ">=", query.endAtLeast)
        time("end_ts", "<", query.endBefore)
        time("end_ts", "<=", query.endAtMost)
        if let events = query.sourceEvents { conditions.append("source_events = \(bind(PostgresJSON(try Self.json(events)), "::jsonb"))") }
        var sql = "SELECT id, esp32_name, start_ts, end_ts, date, source_events FROM device_consumption_ledgers WHERE "
            + conditions.joined(separator: " AND ")
        switch query.order {
        case .startAscending: sql += " ORDER BY start_ts, id"
        case .startDescending: sql += " ORDER BY start_ts DESC, id DESC"
        case .endAscending: sql += " ORDER BY end_ts, id"
        case .endDescending: sql += " ORDER BY end_ts DESC, id DESC"
        case nil: break
        }
        if let limit = query.limit {
            sql += " LIMIT \(bind(limit))"
            let statement = sql
            return try withConnection { connection in try connection.query(statement, params).compactMap(Self.storedEntry) }
        }
        let statement = sql
        return try withConnection { connection in
            var entries: [StoredLedgerEntry] = []
            try connection.forEachBatch(statement, params, batchSize: 1_000) { rows in entries += rows.compactMap(Self.storedEntry) }
            return entries
        }
    }

    static func storedEntry(_ row: PostgresRow) -> StoredLedgerEntry? {
        guard let id = row.string("id"), let name = row.string("esp32_name"), let start = row.millis("start_ts"),
              let end = row.millis("end_ts") else { return nil }
        let sources = row.json("source_events").flatMap { try? JSONDecoder().decode([String].self, from: Data($0.utf8)) } ?? []
        return StoredLedgerEntry(id: id, esp32Name: name, start: start, end: end, dateText: row.string("date") ?? "", sourceEvents: sources)
    }

    public func parts(ofEntry id: String) throws -> Int? {
        try withConnection { connection in
            try connection.query("SELECT parts FROM device_consumption_ledgers WHERE id = $1", [id]).first?.int("parts")
        }
    }

    private struct Quality: Encodable {
        var confidence: String
        var reasons: [String]
    }

    public func insertEntries(_ entries: [LedgerEntry], createdAt: EpochMillis) throws -> [String] {
        guard !entries.isEmpty else { return [] }
        var existing: [String] = []
        for start in stride(from: 0, to: entries.count, by: Self.rowsPerInsert) {
            let chunk = entries[start..<min(start + Self.rowsPerInsert, entries.count)]
            var params: [any PostgresBindable] = []
            params.reserveCapacity(chunk.count * 15)
            var rows: [String] = []
            for e in chunk {
                let first = params.count + 1
                params += [
                    e.id, e.esp32Name, e.classroom, PostgresTimestamp(millis: e.start), PostgresTimestamp(millis: e.end), e.date.description,
                    e.deltaWh, e.isResetMarker, e.billable,
                    PostgresJSON(try Self.json(Quality(confidence: e.confidence.rawValue, reasons: e.reasons.map(\.rawValue)))),
                    PostgresJSON(try Self.json(e.sourceEvents)), e.part, e.parts, LedgerPolicy.derivationVersion,
                    PostgresTimestamp(millis: createdAt),
                ]
                let casts = ["text", "text", "text", "timestamptz", "timestamptz", "text", "double precision", "boolean", "boolean",
                             "jsonb", "jsonb", "integer", "integer", "integer", "timestamptz"]
                rows.append("(" + casts.enumerated().map { "$\(first + $0.offset)::\($0.element)" }.joined(separator: ", ") + ")")
            }
            let sql = """
                INSERT INTO device_consumption_ledgers (id, esp32_name, classroom, start_ts, end_ts, date, delta_wh, is_reset_marker,
                    billable, quality, source_events, part, parts, derivation_version, created_at)
                VALUES \(rows.joined(separator: ", "))
                ON CONFLICT (id) DO NOTHING RETURNING id
                """
            let inserted = Set(try withConnection { connection in try connection.query(sql, params).compactMap { $0.string("id") } })
            existing += chunk.map(\.id).filter { !inserted.contains($0) }
        }
        return existing
    }

    public func reviveEntries(_ ids: [String]) throws {
        guard !ids.isEmpty else { return }
        try withConnection { connection in
            try connection.execute("""
                UPDATE device_consumption_ledgers SET superseded_by = NULL, superseded_at = NULL
                WHERE id = ANY($1::text[]) AND (superseded_by IS NOT NULL OR superseded_at IS NOT NULL)
                """, [PostgresTextArray(ids)])
        }
    }

    public func supersede(_ supersessions: [LedgerChange.Supersession], at: EpochMillis) throws {
        guard !supersessions.isEmpty else { return }
        let sorted = supersessions.sorted { $0.entry.id < $1.entry.id }
        try withConnection { connection in
            try connection.execute("""
                UPDATE device_consumption_ledgers AS l SET superseded_by = v.replacement, superseded_at = $3::timestamptz
                FROM unnest($1::text[], $2::text[]) AS v(id, replacement)
                WHERE l.id = v.id AND l.superseded_by IS NULL
                """, [PostgresTextArray(sorted.map(\.entry.id)), PostgresTextArray(sorted.map(\.replacement)), PostgresTimestamp(millis: at)])
        }
    }

    public func markDirtyDays(_ days: [LedgerDirtyDay], at: EpochMillis, holdUntil: EpochMillis?, replacing: [String]) throws {
        guard !days.isEmpty || !replacing.isEmpty else { return }
        let sorted = days.sorted { $0.markID < $1.markID }
        try withConnection { connection in
            // One statement: the replaced marks go as the new ones come (changed_from in
            // milliseconds, the epoch when not known).
            try connection.execute("""
                WITH replaced AS (DELETE FROM ledger_dirty_days WHERE id = ANY($7::text[]))
                INSERT INTO ledger_dirty_days (id, esp32_name, date, classroom, dirty_at, changed_from, hold_until)
                SELECT v.id, v.esp32_name, v.date, v.classroom, $5::timestamptz,
                       'epoch'::timestamptz + v.changed_from * interval '1 millisecond', $8::timestamptz
                FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $6::bigint[]) AS v(id, esp32_name, date, classroom, changed_from)
                ORDER BY v.id
                ON CONFLICT (id) DO NOTHING
                """, [PostgresTextArray(sorted.map(\.markID)), PostgresTextArray(sorted.map(\.esp32Name)), PostgresTextArray(sorted.map(\.date)),
                      PostgresTextArray(sorted.map(\.classroom)), PostgresTimestamp(millis: at),
                      PostgresTextArray(sorted.map { String($0.changedFrom ?? 0) }), PostgresTextArray(replacing.sorted()),
                      holdUntil.map { PostgresTimestamp(millis: $0) }])
        }
    }

    /// `detail` is jsonb (the reconciliation's tickets carry documents); the ledger's is a string.
    public func openReviewTickets(_ tickets: [LedgerReviewTicket]) throws {
        guard !tickets.isEmpty else { return }
        var params: [any PostgresBindable] = []
        let rows = tickets.map { ticket in
            let first = params.count + 1
            params += [ticket.esp32Name, ticket.date, ticket.kind, ticket.detail, ticket.status, PostgresTimestamp(millis: ticket.createdAt),
                       ticket.runID]
            return "($\(first)::text, $\(first + 1)::text, $\(first + 2)::text, to_jsonb($\(first + 3)::text), $\(first + 4)::text, "
                + "$\(first + 5)::timestamptz, $\(first + 6)::text)"
        }
        try withConnection { connection in
            try connection.execute("""
                INSERT INTO review_tickets (esp32_name, date, kind, detail, status, created_at, run_id)
                VALUES \(rows.joined(separator: ", "))
                ON CONFLICT (esp32_name, date, kind) DO NOTHING
                """, params)
        }
    }

    // MARK: Helpers

    /// A bigint of epoch milliseconds as timestamptz, exactly (NULL stays NULL).
    static func timestamp(_ millis: String) -> String { "(timestamptz 'epoch' + \(millis) * interval '1 millisecond')" }

    static func json<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try JSONEncoder().encode(value), as: UTF8.self)
    }
}
