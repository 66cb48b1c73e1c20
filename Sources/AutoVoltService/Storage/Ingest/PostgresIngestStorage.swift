import AutoVoltCore
import AutoVoltPostgres
import Foundation
import Synchronization

extension PostgresTables {
    /// Rejected messages, partitioned by month of `received_at` like `telemetry_events`, so the
    /// 30-day retention drops whole partitions. `id` is derived from the journal record (topic,
    /// bytes, receive time), so one `id` always has one `received_at` and the primary key
    /// (which must hold the partition key) is unique by `id`. `payload_hex` is set only in the
    /// minimal form (the rejection with its text was refused: the payload text as hex). `id`
    /// sorts bytewise (`COLLATE "C"`), as MongoDB sorts `_id`: requeue pages by it.
    static let rejectedMessages = """
    CREATE TABLE rejected_messages (
        id text COLLATE "C" NOT NULL,
        topic text NOT NULL,
        payload text NOT NULL,
        payload_hex text,
        payload_bytes bigint NOT NULL,
        reason text NOT NULL,
        detail text NOT NULL,
        received_at timestamptz NOT NULL,
        esp32_name text,
        PRIMARY KEY (id, received_at)
    ) PARTITION BY RANGE (received_at);
    CREATE INDEX rejected_messages_reason_received_at ON rejected_messages (reason, received_at DESC);
    CREATE INDEX rejected_messages_esp32_name_received_at ON rejected_messages (esp32_name, received_at DESC);
    """

    /// A device's presence, one row per board: `online` is null until a status message says it;
    /// `sessions` counts offline (or unknown) to online transitions; the times only move forward;
    /// the heartbeat's fields are the last ones said.
    static let deviceStatus = """
    CREATE TABLE device_status (
        esp32_name text PRIMARY KEY,
        classroom text NOT NULL,
        online boolean,
        sessions bigint NOT NULL DEFAULT 0,
        last_seen_at timestamptz,
        last_status_at timestamptz,
        last_heartbeat_at timestamptz,
        last_telemetry_at timestamptz,
        uptime_s double precision,
        rssi double precision,
        free_heap double precision,
        boot_id text,
        fw_version text
    );
    CREATE INDEX device_status_classroom ON device_status (classroom);
    """
}

/// `IngestStorage` on PostgreSQL.
///
/// - `telemetry_events` and `rejected_messages` are partitioned by UTC month of `received_at`:
///   the month's partition (and the next month's, ahead of need) is created on demand and
///   remembered; retention (`dropExpiredPartitions`) detaches and drops whole partitions.
/// - A unique index on a partitioned table must hold the partition key, so an event's `id` and
///   `event_hash` cannot be unique across months by an index. The drain makes them unique
///   itself: in one transaction it takes an advisory lock per device (every `id` and
///   `event_hash` names its device), in a fixed order, reads which of the batch's ids and
///   hashes are stored, and copies in the others. Two workers draining the same device wait
///   for each other; different devices never do.
/// - A row the server refuses (a data exception or a constraint other than the unique key,
///   class 22 or 23) fails its whole statement: the batch is then written row by row
///   (savepoints), and only the refused rows come back as errors, each from a one-row
///   statement, so `refusedDocument` is said of that row alone.
public final class PostgresIngestStorage: IngestStorage {
    let pool: PostgresPool
    /// Partitions known to exist (created or found by this process).
    private let knownPartitions = Mutex<Set<String>>([])

    /// Retention, in days: `telemetry_events` 730, `rejected_messages` 30 (contract section 9).
    public static let eventRetentionDays: Int64 = 730
    public static let rejectRetentionDays: Int64 = 30
    /// The advisory lock class of the drain's per-device locks (`pg_advisory_xact_lock(class,
    /// hashtext(esp32_name))`; the two-key space does not overlap the one-key space).
    static let deviceLockClass: Int32 = 0x4156_4931 // "AVI1"

    public init(pool: PostgresPool) {
        self.pool = pool
    }

    // MARK: Events

    static let eventColumns = [
        "id", "event_hash", "esp32_name", "classroom", "device_ts", "received_at", "energy_wh_total", "switch_state", "clock",
        "timestamp_sent", "processed", "clock_note", "power_w", "boot_id", "seq", "uptime_s", "fw_version", "extra",
    ]

    /// An event as `telemetry_events` text cells (what `Documents.telemetryEvent` holds, field
    /// for field; the same JSON numbers as the BSON document).
    static func eventRow(_ event: IngestEvent) -> [String?] {
        let r = event.reading
        let extra = JSONValue.object(StoredKeys.storable(r.extra))
        return [
            event.id, r.eventHash, r.esp32Name, event.classroom,
            PostgresTimestamp(millis: r.deviceTime).postgresText, PostgresTimestamp(millis: r.receivedAt).postgresText,
            r.energyWhTotal.postgresText, jsonText(r.switchState), r.clock.rawValue, r.timestampAsSent, "f",
            r.clockNote, r.powerW?.postgresText, r.bootID, r.seq.map { String($0) }, r.uptimeS?.postgresText, r.fwVersion,
            jsonText(extra),
        ]
    }

    public func insertEvents(_ events: [IngestEvent]) throws -> [EventWriteResult] {
        guard !events.isEmpty else { return [] }
        return try pool.withConnection { connection in
            try ensurePartitions(of: "telemetry_events", for: events.map(\.reading.receivedAt), on: connection)
            let results: [EventWriteResult]
            do {
                results = try connection.transaction { try insertEventsLocked(events, on: connection) }
            } catch let error as PostgresError where Self.isMissingPartition(error) {
                throw missingPartition(error)
            }
            analyzeGrowingPartitions(inserted: zip(events, results).compactMap { event, result in
                if case .inserted = result { event.reading.receivedAt } else { nil }
            }, on: connection)
            return results
        }
    }

    /// Rows this process inserted per event partition, for `analyzeGrowingPartitions`.
    private let insertedPerPartition = Mutex<[String: Int]>([:])
    /// Sizes at which a partition this process fills is analyzed.
    static let analyzeThresholds = [1_000, 10_000, 100_000]

    /// Analyzes an event partition when the rows this process put in it pass 1,000, 10,000 and
    /// 100,000. A month's partition starts empty and fills fast, and autovacuum analyzes it a
    /// minute or more later: until then the planner has no statistics for it, guesses that
    /// 130 ids match most of the table, and scans it whole (bench-e2e's first runs). Beyond
    /// 100,000 rows autovacuum's own thresholds keep the statistics close enough. Best effort:
    /// the rows are committed, and a failed ANALYZE only leaves the plans as they were.
    private func analyzeGrowingPartitions(inserted times: [EpochMillis], on connection: PostgresConnection) {
        guard !times.isEmpty else { return }
        var added: [String: Int] = [:]
        for time in times { added["telemetry_events" + Month(millis: time).suffix, default: 0] += 1 }
        let due = insertedPerPartition.withLock { counts in
            added.compactMap { name, count -> String? in
                let before = counts[name, default: 0]
                counts[name] = before + count
                return Self.analyzeThresholds.contains { before < $0 && before + count >= $0 } ? name : nil
            }
        }
        for name in due.sorted() {
            _ = try? connection.execute("ANALYZE \(name)")
        }
    }

    private func insertEventsLocked(_ events: [IngestEvent], on connection: PostgresConnection) throws -> [EventWriteResult] {
        // One lock per device, in key order, so two batches never wait for each other in a circle.
        let devices = Array(Set(events.map(\.reading.esp32Name)))
        try connection.execute("""
            SELECT pg_advisory_xact_lock($1::int4, k)
            FROM (SELECT DISTINCT hashtext(n) AS k FROM unnest($2::text[]) AS n ORDER BY k) AS keys
            """, [Int(Self.deviceLockClass), PostgresTextArray(devices)])
        // A probe of the id index and of the hash index per key and partition (a lateral
        // subquery with a limit is never turned into a join). As one `id = ANY OR event_hash =
        // ANY`, a partition filling fast (stale statistics) was read whole for every batch.
        let stored = try connection.query("""
            SELECT e.id, e.event_hash, e.energy_wh_total FROM unnest($1::text[]) AS k(id)
            CROSS JOIN LATERAL (SELECT id, event_hash, energy_wh_total FROM telemetry_events t WHERE t.id = k.id LIMIT 1) e
            UNION ALL
            SELECT e.id, e.event_hash, e.energy_wh_total FROM unnest($2::text[]) AS k(hash)
            CROSS JOIN LATERAL (SELECT id, event_hash, energy_wh_total FROM telemetry_events t WHERE t.event_hash = k.hash LIMIT 1) e
            """, [PostgresTextArray(events.map(\.id)), PostgresTextArray(events.map(\.reading.eventHash))])
        var storedIDs: Set<String> = [], storedHashes: Set<String> = []
        var storedEnergy: [String: Double] = [:]
        for row in stored {
            if let id = row.string("id") {
                storedIDs.insert(id)
                if let energy = row.double("energy_wh_total") { storedEnergy[id] = energy }
            }
            if let hash = row.string("event_hash") { storedHashes.insert(hash) }
        }

        // What a batch written in order would do: the first of two events with one id or hash
        // is stored, the second finds it (as an unordered insertMany does).
        func plan(skipping refused: Set<Int>) -> (results: [EventWriteResult?], new: [Int]) {
            var ids = storedIDs, hashes = storedHashes, energy = storedEnergy
            var results = [EventWriteResult?](repeating: nil, count: events.count)
            var new: [Int] = []
            for (index, event) in events.enumerated() where !refused.contains(index) {
                if ids.contains(event.id) || hashes.contains(event.reading.eventHash) {
                    results[index] = .alreadyStored(storedEnergyWhTotal: energy[event.id])
                } else {
                    new.append(index)
                    ids.insert(event.id)
                    hashes.insert(event.reading.eventHash)
                    energy[event.id] = event.reading.energyWhTotal
                }
            }
            return (results, new)
        }

        var (results, new) = plan(skipping: [])
        if !new.isEmpty {
            try connection.execute("SAVEPOINT ingest_events")
            do {
                try copyEvents(new.map { events[$0] }, on: connection)
                try connection.execute("RELEASE SAVEPOINT ingest_events")
                for index in new { results[index] = .inserted }
            } catch where Self.refused(error) {
                // A row was refused: which one, the statement does not say. Row by row; a refused
                // row is set aside, and when another event of the batch shares its id or hash
                // (it was planned as already stored) the pass is undone and planned again
                // without it, so that event is the one stored (as an unordered insertMany does).
                try connection.execute("ROLLBACK TO SAVEPOINT ingest_events")
                var refused: [Int: any Error] = [:]
                passes: while true {
                    (results, new) = plan(skipping: Set(refused.keys))
                    for index in new {
                        do {
                            try oneRow(on: connection) { try copyEvents([events[index]], on: connection) }
                            results[index] = .inserted
                        } catch where Self.refused(error) {
                            refused[index] = error
                            let event = events[index]
                            let shared = events.indices.contains { other in
                                other != index && (events[other].id == event.id || events[other].reading.eventHash == event.reading.eventHash)
                            }
                            if shared {
                                try connection.execute("ROLLBACK TO SAVEPOINT ingest_events")
                                continue passes
                            }
                        }
                    }
                    break
                }
                for (index, error) in refused { results[index] = .failed(error) }
            }
        }
        return try results.map { result in
            guard let result else { throw IngestStorageContractError(message: "an event without a result") }
            return result
        }
    }

    /// `COPY` of events (untyped throws: a `do` of typed calls only, with a `catch where`,
    /// crashes Swift 6.3's SIL ownership verifier).
    /// Each event also goes to `telemetry_unprocessed`, in the same transaction, for the ledger.
    private func copyEvents(_ events: [IngestEvent], on connection: PostgresConnection) throws {
        try connection.copyIn(table: "telemetry_events", columns: Self.eventColumns, rows: events.map(Self.eventRow))
        try connection.copyIn(table: "telemetry_unprocessed", columns: ["id", "esp32_name", "device_ts", "received_at"], rows: events.map { event in
            [event.id, event.reading.esp32Name, PostgresTimestamp(millis: event.reading.deviceTime).postgresText,
             PostgresTimestamp(millis: event.reading.receivedAt).postgresText]
        })
    }

    /// Runs a one-row statement in a savepoint: a refusal undoes only it.
    private func oneRow(on connection: PostgresConnection, _ body: () throws -> Void) throws {
        try connection.execute("SAVEPOINT ingest_row")
        do {
            try body()
            try connection.execute("RELEASE SAVEPOINT ingest_row")
        } catch where Self.refused(error) {
            try connection.execute("ROLLBACK TO SAVEPOINT ingest_row")
            throw error
        }
    }

    /// A refusal of the row by the server (class 22, or 23 but the unique key), not a missing
    /// partition.
    static func refused(_ error: any Error) -> Bool {
        guard let error = error as? PostgresError else { return false }
        return error.refusesRow && !isMissingPartition(error)
    }

    // MARK: Rejections

    static let rejectionColumns = ["id", "topic", "payload", "payload_hex", "payload_bytes", "reason", "detail", "received_at", "esp32_name"]

    static func rejectionRow(_ record: RejectedMessageRecord) -> [any PostgresBindable] {
        // `detail` is a person's text about the message, which may quote a NUL of it; PostgreSQL
        // text cannot hold one, so it is written as the escape `\u0000` rather than refused.
        let detail = record.detail.contains("\u{0}") ? record.detail.replacingOccurrences(of: "\u{0}", with: "\\u0000") : record.detail
        return [record.id, record.topic, record.payload, record.payloadHex, record.payloadBytes, record.reason, detail,
                PostgresTimestamp(millis: record.receivedAt), record.esp32Name]
    }

    static func insertSQL(_ table: String, _ columns: [String], rows: Int, suffix: String) -> String {
        var sql = "INSERT INTO \(table) (\(columns.joined(separator: ", "))) VALUES "
        var n = 0
        for row in 0..<rows {
            if row > 0 { sql += ", " }
            sql += "("
            for column in columns.indices {
                n += 1
                sql += column == 0 ? "$\(n)" : ", $\(n)"
            }
            sql += ")"
        }
        return sql + " " + suffix
    }

    public func recordRejections(_ records: [RejectedMessageRecord]) throws -> [(any Error)?] {
        guard !records.isEmpty else { return [] }
        return try pool.withConnection { connection in
            try ensurePartitions(of: "rejected_messages", for: records.map(\.receivedAt), on: connection)
            var results = [(any Error)?](repeating: nil, count: records.count)
            // At most 500 rows (4,500 parameters) a statement.
            for start in stride(from: 0, to: records.count, by: 500) {
                let chunk = Array(records.indices[start..<min(start + 500, records.count)])
                do {
                    try insertRejections(chunk.map { records[$0] }, on: connection)
                } catch where Self.refused(error) {
                    for index in chunk {
                        do {
                            try insertRejections([records[index]], on: connection)
                        } catch where Self.refused(error) {
                            results[index] = error
                        } catch where Self.isMissingPartition(error) {
                            throw missingPartition(error)
                        }
                    }
                } catch where Self.isMissingPartition(error) {
                    throw missingPartition(error)
                }
            }
            return results
        }
    }

    private func insertRejections(_ records: [RejectedMessageRecord], on connection: PostgresConnection) throws {
        try connection.execute(Self.insertSQL("rejected_messages", Self.rejectionColumns, rows: records.count,
                                              suffix: "ON CONFLICT (id, received_at) DO NOTHING"),
                               records.flatMap(Self.rejectionRow))
    }

    // MARK: Presence

    /// `$set` for the fields given, `$max` for the times, `$setOnInsert` for the rest: the
    /// MongoDB update, as one upsert.
    static let presenceSQLTail = """
    ON CONFLICT (esp32_name) DO UPDATE SET
        classroom = EXCLUDED.classroom,
        uptime_s = COALESCE(EXCLUDED.uptime_s, device_status.uptime_s),
        rssi = COALESCE(EXCLUDED.rssi, device_status.rssi),
        free_heap = COALESCE(EXCLUDED.free_heap, device_status.free_heap),
        boot_id = COALESCE(EXCLUDED.boot_id, device_status.boot_id),
        fw_version = COALESCE(EXCLUDED.fw_version, device_status.fw_version),
        last_seen_at = GREATEST(device_status.last_seen_at, EXCLUDED.last_seen_at),
        last_telemetry_at = GREATEST(device_status.last_telemetry_at, EXCLUDED.last_telemetry_at),
        last_heartbeat_at = GREATEST(device_status.last_heartbeat_at, EXCLUDED.last_heartbeat_at)
    """

    static let presenceColumns = [
        "esp32_name", "classroom", "sessions", "last_seen_at", "last_telemetry_at", "last_heartbeat_at",
        "uptime_s", "rssi", "free_heap", "boot_id", "fw_version",
    ]

    static func presenceRow(_ update: PresenceUpdate) -> [any PostgresBindable] {
        [update.esp32Name, update.classroom, 0, update.lastSeenAt.map(PostgresTimestamp.init(millis:)),
         update.lastTelemetryAt.map(PostgresTimestamp.init(millis:)), update.lastHeartbeatAt.map(PostgresTimestamp.init(millis:)),
         update.uptimeS, update.rssi, update.freeHeap, update.bootID, update.fwVersion]
    }

    public func upsertPresence(_ updates: [PresenceUpdate]) throws -> [(any Error)?] {
        guard !updates.isEmpty else { return [] }
        // By name: two workers' upserts lock the rows they share in the same order.
        let order = updates.indices.sorted { updates[$0].esp32Name < updates[$1].esp32Name }
        return try pool.withConnection { connection in
            var results = [(any Error)?](repeating: nil, count: updates.count)
            do {
                try upsertPresence(order.map { updates[$0] }, on: connection)
            } catch where Self.refused(error) {
                for index in order {
                    do {
                        try upsertPresence([updates[index]], on: connection)
                    } catch where Self.refused(error) {
                        results[index] = error
                    }
                }
            }
            return results
        }
    }

    private func upsertPresence(_ updates: [PresenceUpdate], on connection: PostgresConnection) throws {
        try connection.execute(Self.insertSQL("device_status", Self.presenceColumns, rows: updates.count, suffix: Self.presenceSQLTail),
                               updates.flatMap(Self.presenceRow))
    }

    public func writeStatus(_ change: StatusChange) throws {
        let at = PostgresTimestamp(millis: change.at)
        try pool.withConnection { connection in
            if change.online {
                // A session counts only on a transition from offline (or unknown) to online.
                try connection.execute("""
                    INSERT INTO device_status (esp32_name, classroom, online, sessions, last_seen_at, last_status_at)
                    VALUES ($1, $2, true, 1, $3::timestamptz, $3::timestamptz)
                    ON CONFLICT (esp32_name) DO UPDATE SET
                        online = true,
                        classroom = EXCLUDED.classroom,
                        sessions = device_status.sessions + CASE WHEN device_status.online IS TRUE THEN 0 ELSE 1 END,
                        last_seen_at = GREATEST(device_status.last_seen_at, EXCLUDED.last_seen_at),
                        last_status_at = GREATEST(device_status.last_status_at, EXCLUDED.last_status_at)
                    """, [change.esp32Name, change.classroom, at])
            } else {
                try connection.execute("""
                    INSERT INTO device_status (esp32_name, classroom, online, sessions, last_seen_at, last_status_at)
                    VALUES ($1, $2, false, 0, $3::timestamptz, $3::timestamptz)
                    ON CONFLICT (esp32_name) DO UPDATE SET
                        online = false,
                        classroom = EXCLUDED.classroom,
                        last_seen_at = GREATEST(device_status.last_seen_at, EXCLUDED.last_seen_at),
                        last_status_at = GREATEST(device_status.last_status_at, EXCLUDED.last_status_at)
                    """, [change.esp32Name, change.classroom, at])
            }
        }
    }

    // MARK: Requeue

    public func storeRefusedRejections(since: EpochMillis?, after: String?, limit: Int) throws -> [StoredRejection] {
        try pool.withConnection { connection in
            try connection.query("""
                SELECT id, topic, payload, payload_hex, received_at FROM rejected_messages
                WHERE reason = $1 AND ($2::timestamptz IS NULL OR received_at >= $2::timestamptz)
                  AND ($3::text IS NULL OR id > $3::text)
                ORDER BY id LIMIT $4
                """, [RejectReason.storeRefused.rawValue, since.map(PostgresTimestamp.init(millis:)), after, limit])
                .map { row in
                    StoredRejection(id: row.string("id"), topic: row.string("topic"), payload: row.string("payload"),
                                    payloadHex: row.string("payload_hex"), receivedAt: row.millis("received_at"))
                }
        }
    }

    public func deleteRejection(id: String) throws {
        try pool.withConnection { connection in
            _ = try connection.execute("DELETE FROM rejected_messages WHERE id = $1", [id])
        }
    }

    // MARK: Partitions

    /// A UTC month, the unit of partitioning.
    struct Month: Hashable, Comparable, Sendable {
        var year: Int
        var month: Int

        init(year: Int, month: Int) {
            self.year = year
            self.month = month
        }

        init(millis: EpochMillis) {
            let text = PostgresTime.format(millis)  // "YYYY-MM-DDTHH:MM:SS.mmmZ"
            let parts = text.split(separator: "-", maxSplits: 2)
            year = parts.count > 0 ? Int(parts[0]) ?? 1970 : 1970
            month = parts.count > 1 ? Int(parts[1]) ?? 1 : 1
        }

        var next: Month { month == 12 ? Month(year: year + 1, month: 1) : Month(year: year, month: month + 1) }
        /// The first instant of the month, as `timestamptz` text.
        var start: String { String(format: "%04d-%02d-01T00:00:00Z", year, month) }
        /// `_YYYY_MM`
        var suffix: String { String(format: "_%04d_%02d", year, month) }
        /// Epoch milliseconds of the month's first instant.
        var startMillis: EpochMillis {
            PostgresTime.parse(String(format: "%04d-%02d-01 00:00:00+00", year, month)) ?? 0
        }

        static func < (a: Month, b: Month) -> Bool { (a.year, a.month) < (b.year, b.month) }

        /// The month of a partition named `<table>_YYYY_MM`, nil for any other name.
        init?(partition name: String, of table: String) {
            guard name.hasPrefix(table + "_") else { return nil }
            let rest = name.dropFirst(table.count + 1).split(separator: "_")
            guard rest.count == 2, rest[0].count == 4, rest[1].count == 2,
                  let year = Int(rest[0]), let month = Int(rest[1]), (1...12).contains(month) else { return nil }
            self.init(year: year, month: month)
        }
    }

    /// Creates the partitions of the months of `times` (and the month after each, so the turn
    /// of a month finds its partition made) unless known. Each in its own short transaction
    /// with a lock timeout: creating a partition locks the parent, and waiting behind a long
    /// reader must not queue every writer behind it (55P03 is transient: the batch is retried).
    func ensurePartitions(of table: String, for times: [EpochMillis], on connection: PostgresConnection) throws {
        var months: Set<Month> = []
        for time in times {
            let month = Month(millis: time)
            months.insert(month)
            months.insert(month.next)
        }
        let missing = knownPartitions.withLock { known in months.filter { !known.contains(table + $0.suffix) } }
        for month in missing.sorted() {
            let name = table + month.suffix
            let exists = try connection.query("SELECT to_regclass($1) IS NOT NULL AS present", [name]).first?.bool("present") ?? false
            if !exists {
                do {
                    try connection.transaction {
                        try connection.execute("SET LOCAL lock_timeout = '5s'")
                        try connection.execute("""
                            CREATE TABLE IF NOT EXISTS \(name) PARTITION OF \(table)
                            FOR VALUES FROM ('\(month.start)') TO ('\(month.next.start)')\(Self.storageParameters(of: table))
                            """)
                    }
                } catch {
                    // Another worker may have made it meanwhile (42P07, or 23505 on the catalog).
                    // Any other failure is about the request, never a refused row (a default
                    // partition holding rows of the month fails with 23514, say).
                    let now = try connection.query("SELECT to_regclass($1) IS NOT NULL AS present", [name]).first?.bool("present") ?? false
                    guard now else { throw IngestRequestFailure(context: "creating the partition \(name)", underlying: error) }
                }
            }
            _ = knownPartitions.withLock { $0.insert(name) }
        }
    }

    /// Events' pages keep room for `processed` to be set in place (see `PostgresTables.eventFillFactor`).
    static func storageParameters(of table: String) -> String {
        table == "telemetry_events" ? " WITH (fillfactor = \(PostgresTables.eventFillFactor))" : ""
    }

    /// "no partition of relation ... found for row": a partition this process believed in was
    /// dropped (retention elsewhere). A class 23 code, but no fault of the row.
    static func isMissingPartition(_ error: any Error) -> Bool {
        guard let error = error as? PostgresError else { return false }
        return error.sqlState == "23514" && error.message.contains("no partition")
    }

    /// Forgets the known partitions and says to retry: the next attempt makes them again.
    private func missingPartition(_ error: any Error) -> any Error {
        knownPartitions.withLock { $0.removeAll() }
        return IngestPartitionMissing(underlying: error)
    }

    /// Retention: detaches and drops every partition of `telemetry_events` whose month ended
    /// 730 days or more before `now`, and of `rejected_messages` 30 days; never a DELETE, and
    /// nothing else is touched (the ledger, aggregates and statements of those days stay as
    /// they are). A partition is detached `CONCURRENTLY` (the drain and readers go on), then
    /// dropped; one left half-detached by an interrupted run is finished. Only partitions named
    /// `<table>_YYYY_MM` are considered. Returns the tables dropped.
    @discardableResult
    public func dropExpiredPartitions(now: EpochMillis) throws -> [String] {
        let day: EpochMillis = 86_400_000
        var dropped: [String] = []
        for (table, days) in [("telemetry_events", Self.eventRetentionDays), ("rejected_messages", Self.rejectRetentionDays)] {
            let cutoff = now - days * day
            try pool.withConnection { connection in
                // Attached partitions, and tables of ours left detached by an interrupted run.
                let rows = try connection.query("""
                    SELECT c.relname AS name, i.inhrelid IS NOT NULL AS attached, coalesce(i.inhdetachpending, false) AS pending
                    FROM pg_class c
                    LEFT JOIN pg_inherits i ON i.inhrelid = c.oid AND i.inhparent = to_regclass($1::text)
                    WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind = 'r'
                      AND c.relname::text LIKE $1::text || '\\_____\\___'
                    ORDER BY c.relname
                    """, [table])
                for row in rows {
                    guard let name = row.string("name"), let month = Month(partition: name, of: table),
                          month.next.startMillis <= cutoff else { continue }
                    if table == "telemetry_events" {
                        // An event expired before the ledger took it (an outage of two years) leaves
                        // the queue first: a queue row must never outlive its event (the ledger would
                        // derive from a reading it cannot read), and a crash after this is harmless.
                        try connection.execute("DELETE FROM telemetry_unprocessed WHERE received_at < $1::timestamptz",
                                               [PostgresTimestamp(millis: month.next.startMillis)])
                    }
                    if row.bool("attached") == true {
                        if row.bool("pending") == true {
                            try connection.execute("ALTER TABLE \(table) DETACH PARTITION \(name) FINALIZE")
                        } else {
                            try connection.execute("ALTER TABLE \(table) DETACH PARTITION \(name) CONCURRENTLY")
                        }
                    }
                    try connection.execute("DROP TABLE IF EXISTS \(name)")
                    _ = knownPartitions.withLock { $0.remove(name) }
                    dropped.append(name)
                }
            }
        }
        return dropped
    }

    // MARK: JSON

    /// JSON text with the numbers the MongoDB document holds (`BSON(json:)`): an integer literal
    /// that fits 64 bits as that integer, any other number as its double (the literal when the
    /// double is not finite: jsonb's numeric holds it). Keys are written as given (the caller
    /// passes `StoredKeys.storable` forms, which hold no NUL).
    static func jsonText(_ value: JSONValue) -> String {
        var out = ""
        writeJSON(value, to: &out)
        return out
    }

    private static func writeJSON(_ value: JSONValue, to out: inout String) {
        switch value {
        case .null: out += "null"
        case .bool(let b): out += b ? "true" : "false"
        case .number(let n):
            if n.isIntegerLiteral, let i = n.int64Value {
                out += String(i)
            } else if n.value.isFinite {
                out += "\(n.value)"
            } else {
                out += n.literal
            }
        case .string(let s):
            // jsonb cannot hold U+0000 (22P05): a NUL in a string is kept as the six characters
            // `\u0000`, so a valid reading with such a value is stored, not refused.
            JSONValue.writeString(s.contains("\u{0}") ? s.replacingOccurrences(of: "\u{0}", with: "\\u0000") : s, to: &out)
        case .array(let a):
            out += "["
            for (i, v) in a.enumerated() {
                if i > 0 { out += "," }
                writeJSON(v, to: &out)
            }
            out += "]"
        case .object(let o):
            out += "{"
            for (i, m) in o.members.enumerated() {
                if i > 0 { out += "," }
                JSONValue.writeString(m.key, to: &out)
                out += ":"
                writeJSON(m.value, to: &out)
            }
            out += "}"
        }
    }
}

/// A partition the drain believed in is gone (dropped by retention in another process): wait
/// and retry, the next attempt makes it again. Never a refused row.
public struct IngestPartitionMissing: StorageFailure, Sendable {
    public let underlying: any Error
    public var storageDisposition: StorageDisposition { .transient }
    public var storageCode: String { (underlying as? any StorageFailure)?.storageCode ?? "-" }
    public var storageMessage: String { (underlying as? any StorageFailure)?.storageMessage ?? "\(underlying)" }
    public var description: String { "a partition was missing: \(underlying)" }
}
