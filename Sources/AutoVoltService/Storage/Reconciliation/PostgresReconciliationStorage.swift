import AutoVoltCore
import AutoVoltPostgres
import Foundation

extension PostgresTables {
    /// The reconciliation's reports, the review tickets it and the ledger open, and the
    /// scheduler's run records with their leases (contract section 4, the documents' fields as
    /// columns). `reconciliation_reports.run_id` is the MongoDB `_id`; `scheduler_runs.id` the
    /// job's ("day_close:2026-11-05", "reconcile_again:2026-11-05"). A ticket's `detail` is jsonb
    /// (a JSON string today); its key is (esp32_name, date, kind), which the ledger's
    /// `INSERT ... ON CONFLICT DO NOTHING` relies on. Dates are "YYYY-MM-DD" in byte order.
    static let reconciliation = """
    CREATE TABLE reconciliation_reports (
        run_id text PRIMARY KEY,
        date text COLLATE "C" NOT NULL,
        started_at timestamptz NOT NULL,
        finished_at timestamptz NOT NULL,
        status text NOT NULL,
        devices_checked integer NOT NULL,
        anomalies jsonb NOT NULL,
        missing_heartbeats jsonb NOT NULL,
        aggregate_mismatches jsonb NOT NULL,
        tickets_opened integer NOT NULL,
        tickets_resolved integer NOT NULL,
        tickets_still_open integer NOT NULL,
        data_complete boolean NOT NULL,
        incomplete_data text,
        aggregates_computed_at timestamptz,
        judged_again boolean NOT NULL DEFAULT false
    );
    CREATE INDEX reconciliation_reports_finished_at ON reconciliation_reports (finished_at DESC);
    CREATE INDEX reconciliation_reports_date_started_at ON reconciliation_reports (date, started_at);
    CREATE TABLE review_tickets (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        esp32_name text NOT NULL,
        date text COLLATE "C" NOT NULL,
        kind text NOT NULL,
        detail jsonb,
        status text NOT NULL,
        created_at timestamptz NOT NULL,
        run_id text,
        last_run_id text,
        reopened_at timestamptz,
        resolved_at timestamptz,
        resolved_run_id text,
        UNIQUE (esp32_name, date, kind)
    );
    CREATE INDEX review_tickets_date_kind ON review_tickets (date, kind);
    CREATE INDEX review_tickets_status_date ON review_tickets (status, date);
    CREATE TABLE scheduler_runs (
        id text PRIMARY KEY,
        kind text NOT NULL,
        date text COLLATE "C" NOT NULL,
        status text NOT NULL,
        owner text,
        started_at timestamptz,
        lease_until timestamptz,
        finished_at timestamptz,
        run_id text,
        error text
    );
    """
}

/// `ReconciliationStorage` on PostgreSQL. Throws `PostgresError`.
///
/// - The day's figures are `GROUP BY esp32_name` sums over the day's rows (the ledger by its
///   date index, events by the queue `telemetry_unprocessed` and the (esp32_name,
///   device_ts) index): only a row per device comes back.
/// - A day's tickets are judged in one transaction under an advisory lock of the day, so two
///   judgements of one day (two workers, a CLI run beside the scheduler) run one after the
///   other and the second sees what the first wrote; a ticket the ledger inserts meanwhile is
///   met by `ON CONFLICT`.
/// - A run is leased by one `INSERT ... ON CONFLICT (id) DO UPDATE ... WHERE` (free or
///   expired, and the condition) `RETURNING`: of two workers, the second waits for the first's
///   row and finds it held.
public final class PostgresReconciliationStorage: ReconciliationStorage {
    public let pool: PostgresPool

    public init(pool: PostgresPool) {
        self.pool = pool
    }

    /// The first key of the advisory locks of a day's tickets (two-key locks: a key space apart
    /// from the single-key locks of migrations and the drain). "reco".
    static let ticketLockClass: Int32 = 0x7265_636F

    private func withConnection<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        try pool.withConnection(body)
    }

    // MARK: What is still on its way

    public func hasUnprocessedEvents(before: EpochMillis) throws -> Bool {
        try withConnection { connection in
            try connection.query("""
                SELECT EXISTS (SELECT 1 FROM telemetry_unprocessed WHERE device_ts < $1::timestamptz) AS present
                """, [PostgresTimestamp(millis: before)]).first?.bool("present") ?? false
        }
    }

    public func hasDirtyDays(upTo date: CivilDate) throws -> Bool {
        try withConnection { connection in
            try connection.query("SELECT EXISTS (SELECT 1 FROM ledger_dirty_days WHERE date <= $1) AS present", [date.description])
                .first?.bool("present") ?? false
        }
    }

    // MARK: The day's figures

    public func ledgerFigures(of date: CivilDate) throws -> [String: LedgerDayFigures] {
        // A midnight-split interval counts once, by its first part (part 0). A device is listed
        // when it has a billable entry or a flagged first part, as the MongoDB pipeline lists it.
        let rows = try withConnection { connection in
            try connection.query("""
                SELECT esp32_name,
                       coalesce(sum(delta_wh) FILTER (WHERE billable), 0) AS wh,
                       count(*) FILTER (WHERE billable) AS billable_entries,
                       count(*) FILTER (WHERE part = 0 AND quality->'reasons' ? 'counter_reset') AS resets,
                       count(*) FILTER (WHERE part = 0 AND quality->'reasons' ? 'glitch_skipped') AS glitches,
                       count(*) FILTER (WHERE part = 0 AND quality->'reasons' ? 'implausible_power') AS implausible,
                       count(*) FILTER (WHERE part = 0 AND quality->'reasons' ? 'long_gap') AS long_gaps,
                       count(*) FILTER (WHERE part = 0 AND quality->'reasons' ?| $2::text[]) AS flagged
                FROM device_consumption_ledgers
                WHERE date = $1 AND superseded_by IS NULL
                GROUP BY esp32_name
                """, [date.description, PostgresTextArray(LedgerDayFigures.flaggedReasons)])
        }
        var figures: [String: LedgerDayFigures] = [:]
        for row in rows {
            guard let name = row.string("esp32_name"), (row.int("billable_entries") ?? 0) > 0 || (row.int("flagged") ?? 0) > 0 else { continue }
            figures[name] = LedgerDayFigures(billableWh: row.double("wh") ?? 0, resets: row.int("resets") ?? 0,
                                             glitches: row.int("glitches") ?? 0, implausible: row.int("implausible") ?? 0,
                                             longGaps: row.int("long_gaps") ?? 0)
        }
        return figures
    }

    public func dayAggregates(of date: CivilDate) throws -> DayAggregates {
        var result = DayAggregates()
        // One row per device of the day: bounded by the campus.
        try withConnection { connection in
            try connection.forEachBatch("""
                SELECT esp32_name, energy_wh, cost, overlap_ms, computed_at FROM daily_aggregates WHERE date = $1
                """, [date.description], batchSize: 1000) { rows in
                for row in rows {
                    guard let name = row.string("esp32_name") else { continue }
                    let computedAt = row.millis("computed_at")
                    result.byDevice[name] = DayAggregate(energyWh: row.double("energy_wh") ?? 0, cost: row.double("cost"),
                                                         overlapMillis: row.int64("overlap_ms"), computedAt: computedAt)
                    if let at = computedAt { result.newestComputedAt = max(result.newestComputedAt ?? at, at) }
                }
            }
        }
        return result
    }

    public func unprocessedEventCounts(from: EpochMillis, to: EpochMillis) throws -> [String: Int] {
        let rows = try withConnection { connection in
            try connection.query("""
                SELECT esp32_name, count(*) AS n FROM telemetry_unprocessed
                WHERE device_ts >= $1::timestamptz AND device_ts < $2::timestamptz
                GROUP BY esp32_name
                """, [PostgresTimestamp(millis: from), PostgresTimestamp(millis: to)])
        }
        var counts: [String: Int] = [:]
        for row in rows { if let name = row.string("esp32_name") { counts[name] = row.int("n") ?? 0 } }
        return counts
    }

    /// One statement: an index probe (esp32_name, device_ts) per device and partition.
    public func devicesWithoutEvents(_ names: [String], from: EpochMillis, to: EpochMillis) throws -> Set<String> {
        guard !names.isEmpty else { return [] }
        let rows = try withConnection { connection in
            try connection.query("""
                SELECT d.name FROM unnest($1::text[]) AS d(name)
                WHERE NOT EXISTS (SELECT 1 FROM telemetry_events e
                                  WHERE e.esp32_name = d.name AND e.device_ts >= $2::timestamptz AND e.device_ts < $3::timestamptz)
                """, [PostgresTextArray(names), PostgresTimestamp(millis: from), PostgresTimestamp(millis: to)])
        }
        return Set(rows.compactMap { $0.string("name") })
    }

    public func presence() throws -> [String: DevicePresence] {
        var statuses: [String: DevicePresence] = [:]
        try withConnection { connection in
            try connection.forEachBatch("SELECT esp32_name, online, last_heartbeat_at FROM device_status", [], batchSize: 1000) { rows in
                for row in rows {
                    guard let name = row.string("esp32_name") else { continue }
                    statuses[name] = DevicePresence(online: row.bool("online"), lastHeartbeatAt: row.millis("last_heartbeat_at"))
                }
            }
        }
        return statuses
    }

    // MARK: Review tickets

    public func judgeTickets(date: CivilDate, kinds: [String], runID: String, now: EpochMillis,
                             _ decide: ([TicketKey: StoredTicket]) -> [TicketChange]) throws -> Int {
        let day = date.description
        return try withConnection { connection in
            try connection.transaction {
                try connection.execute("SELECT pg_advisory_xact_lock($1::integer, hashtext($2))", [Self.ticketLockClass, day])
                // One row per device and kind of the day at most: bounded by the campus.
                var existing: [TicketKey: (id: String, open: Bool)] = [:]
                for row in try connection.query("""
                    SELECT id, esp32_name, kind, status FROM review_tickets WHERE date = $1 AND kind = ANY($2::text[])
                    ORDER BY id FOR UPDATE
                    """, [day, PostgresTextArray(kinds)]) {
                    guard let id = row.string("id"), let name = row.string("esp32_name"), let kind = row.string("kind") else { continue }
                    existing[TicketKey(esp32Name: name, kind: kind)] = (id, row.string("status") == "open")
                }
                let changes = decide(existing.mapValues { StoredTicket(isOpen: $0.open) })
                var kept: [(id: String, detail: String, reopen: Bool)] = []
                var opened: [(key: TicketKey, detail: String)] = []
                var resolved: [String] = []
                for change in changes {
                    switch change {
                    case let .keep(key, detail, reopen):
                        if let ticket = existing[key] { kept.append((ticket.id, detail, reopen)) }
                    case let .open(key, detail):
                        opened.append((key, detail))
                    case let .resolve(key):
                        if let ticket = existing[key] { resolved.append(ticket.id) }
                    }
                }
                let at = PostgresTimestamp(millis: now)
                if !kept.isEmpty {
                    try connection.execute("""
                        UPDATE review_tickets t SET detail = to_jsonb(v.detail), last_run_id = $4,
                            status = CASE WHEN v.reopen THEN 'open' ELSE t.status END,
                            reopened_at = CASE WHEN v.reopen THEN $5::timestamptz ELSE t.reopened_at END,
                            resolved_at = CASE WHEN v.reopen THEN NULL ELSE t.resolved_at END,
                            resolved_run_id = CASE WHEN v.reopen THEN NULL ELSE t.resolved_run_id END
                        FROM unnest($1::text[]::bigint[], $2::text[], $3::text[]::boolean[]) AS v(id, detail, reopen)
                        WHERE t.id = v.id
                        """, [PostgresTextArray(kept.map(\.id)), PostgresTextArray(kept.map(\.detail)),
                              PostgresTextArray(kept.map { $0.reopen ? "t" : "f" }), runID, at])
                }
                var inserted = 0
                if !opened.isEmpty {
                    // A ticket of the same key that appeared since the read (the ledger's
                    // implausible_power) is not this run's: it only gets last_run_id.
                    let rows = try connection.query("""
                        INSERT INTO review_tickets (esp32_name, date, kind, detail, status, created_at, run_id, last_run_id)
                        SELECT v.esp32_name, $1, v.kind, to_jsonb(v.detail), 'open', $5::timestamptz, $6, $6
                        FROM unnest($2::text[], $3::text[], $4::text[]) AS v(esp32_name, kind, detail)
                        ORDER BY v.esp32_name, v.kind
                        ON CONFLICT (esp32_name, date, kind) DO UPDATE SET last_run_id = EXCLUDED.last_run_id
                        RETURNING (xmax = 0) AS inserted
                        """, [day, PostgresTextArray(opened.map(\.key.esp32Name)), PostgresTextArray(opened.map(\.key.kind)),
                              PostgresTextArray(opened.map(\.detail)), at, runID])
                    inserted = rows.filter { $0.bool("inserted") == true }.count
                }
                if !resolved.isEmpty {
                    try connection.execute("""
                        UPDATE review_tickets SET status = 'resolved', resolved_at = $2::timestamptz, resolved_run_id = $3
                        WHERE id = ANY($1::text[]::bigint[]) AND status = 'open'
                        """, [PostgresTextArray(resolved), at, runID])
                }
                return inserted
            }
        }
    }

    // MARK: Reports

    public func insertReport(_ record: ReconciliationReportRecord) throws -> Bool {
        let report = record.report
        let params: [any PostgresBindable] = [
            report.runID, report.date, PostgresTimestamp(millis: record.startedAt), PostgresTimestamp(millis: record.finishedAt),
            report.status, report.devicesChecked, PostgresJSON(try Self.json(report.anomalies)),
            PostgresJSON(try Self.json(report.missingHeartbeats)), PostgresJSON(try Self.json(report.aggregateMismatches)),
            report.ticketsOpened, report.ticketsResolved, report.ticketsStillOpen, report.dataComplete, report.incompleteData,
            record.aggregatesComputedAt.map { PostgresTimestamp(millis: $0) }, record.judgedAgain,
        ]
        return try withConnection { connection in
            try connection.execute("""
                INSERT INTO reconciliation_reports (run_id, date, started_at, finished_at, status, devices_checked, anomalies,
                    missing_heartbeats, aggregate_mismatches, tickets_opened, tickets_resolved, tickets_still_open, data_complete,
                    incomplete_data, aggregates_computed_at, judged_again)
                VALUES ($1, $2, $3::timestamptz, $4::timestamptz, $5, $6::integer, $7::jsonb, $8::jsonb, $9::jsonb, $10::integer,
                        $11::integer, $12::integer, $13::boolean, $14, $15::timestamptz, $16::boolean)
                ON CONFLICT (run_id) DO NOTHING
                """, params) == 1
        }
    }

    static func json<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try JSONEncoder().encode(value), as: UTF8.self)
    }

    public func lastReconciliation() throws -> (at: EpochMillis, runID: String)? {
        let row = try withConnection { connection in
            try connection.query("SELECT finished_at, run_id FROM reconciliation_reports ORDER BY finished_at DESC LIMIT 1").first
        }
        guard let row, let at = row.millis("finished_at"), let id = row.string("run_id") else { return nil }
        return (at, id)
    }

    public func lastJudgements(from: CivilDate, before: CivilDate) throws -> [CivilDate: DayJudgement] {
        let rows = try withConnection { connection in
            try connection.query("""
                SELECT DISTINCT ON (date) date, started_at, aggregates_computed_at FROM reconciliation_reports
                WHERE date >= $1 AND date < $2 ORDER BY date, started_at DESC
                """, [from.description, before.description])
        }
        var judged: [CivilDate: DayJudgement] = [:]
        for row in rows {
            guard let day = row.string("date").flatMap(CivilDate.init), let at = row.millis("started_at") else { continue }
            judged[day] = DayJudgement(startedAt: at, aggregatesComputedAt: row.millis("aggregates_computed_at"))
        }
        return judged
    }

    public func newestAggregates(from: CivilDate, before: CivilDate) throws -> [CivilDate: EpochMillis] {
        let rows = try withConnection { connection in
            try connection.query("""
                SELECT date, max(computed_at) AS at FROM daily_aggregates WHERE date >= $1 AND date < $2 GROUP BY date
                """, [from.description, before.description])
        }
        var changed: [CivilDate: EpochMillis] = [:]
        for row in rows {
            if let day = row.string("date").flatMap(CivilDate.init), let at = row.millis("at") { changed[day] = at }
        }
        return changed
    }

    // MARK: The scheduler

    /// No index leads with `received_at` (partitions replace MongoDB's TTL index), so a plain
    /// `min(received_at)` would read every partition. Partitions are by month of `received_at`:
    /// the oldest one holding a row holds the first event, and only it (and a default partition,
    /// which the worker never makes) is read. Once per process: the scheduler remembers it.
    public func firstReceivedAt() throws -> EpochMillis? {
        try withConnection { connection in
            let partitions = try connection.query("""
                SELECT c.oid::regclass::text AS name, pg_get_expr(c.relpartbound, c.oid) AS bound
                FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                WHERE i.inhparent = 'telemetry_events'::regclass
                """)
            if partitions.isEmpty {
                return try connection.query("SELECT min(received_at) AS first FROM telemetry_events").first?.millis("first")
            }
            // "FOR VALUES FROM ('2026-11-01 00:00:00+00') TO (...)": in text order, oldest first
            // (the session's time zone is UTC, so every bound reads alike).
            let ranged = partitions.filter { $0.string("bound") != "DEFAULT" }.sorted { ($0.string("bound") ?? "") < ($1.string("bound") ?? "") }
            var candidates: [String] = partitions.filter { $0.string("bound") == "DEFAULT" }.compactMap { $0.string("name") }
            for partition in ranged {
                guard let name = partition.string("name") else { continue }
                if try connection.query("SELECT EXISTS (SELECT 1 FROM ONLY \(name)) AS present").first?.bool("present") == true {
                    candidates.append(name)
                    break
                }
            }
            var first: EpochMillis?
            for name in candidates {
                if let at = try connection.query("SELECT min(received_at) AS first FROM ONLY \(name)").first?.millis("first") {
                    first = min(first ?? at, at)
                }
            }
            return first
        }
    }

    public func doneRuns(_ ids: [String]) throws -> Set<String> {
        guard !ids.isEmpty else { return [] }
        return Set(try withConnection { connection in
            try connection.query("SELECT id FROM scheduler_runs WHERE id = ANY($1::text[]) AND status = 'done'", [PostgresTextArray(ids)])
                .compactMap { $0.string("id") }
        })
    }

    public func acquireRun(_ lease: RunLease, condition: RunCondition) throws -> Bool {
        var params: [any PostgresBindable] = [lease.id, lease.kind, lease.date.description, lease.owner,
                                              PostgresTimestamp(millis: lease.startedAt), PostgresTimestamp(millis: lease.leaseUntil)]
        let extra: String
        switch condition {
        case .notDone:
            extra = "r.status IS DISTINCT FROM 'done'"
        case let .lastStartedAtOrBefore(at):
            params.append(PostgresTimestamp(millis: at))
            extra = "(r.started_at IS NULL OR r.started_at <= $7::timestamptz)"
        }
        return try withConnection { connection in
            try !connection.query("""
                INSERT INTO scheduler_runs AS r (id, kind, date, status, owner, started_at, lease_until)
                VALUES ($1, $2, $3, 'running', $4, $5::timestamptz, $6::timestamptz)
                ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, date = EXCLUDED.date, status = 'running', owner = EXCLUDED.owner,
                                               started_at = EXCLUDED.started_at, lease_until = EXCLUDED.lease_until
                WHERE (r.lease_until IS NULL OR r.lease_until < $5::timestamptz) AND \(extra)
                RETURNING id
                """, params).isEmpty
        }
    }

    public func finishRun(id: String, owner: String, finishedAt: EpochMillis, runID: String?) throws {
        try withConnection { connection in
            try connection.execute("""
                UPDATE scheduler_runs SET status = 'done', finished_at = $3::timestamptz, run_id = coalesce($4, run_id), lease_until = NULL
                WHERE id = $1 AND owner = $2
                """, [id, owner, PostgresTimestamp(millis: finishedAt), runID])
        }
    }

    public func failRun(id: String, owner: String, error: String?) throws {
        try withConnection { connection in
            try connection.execute("""
                UPDATE scheduler_runs SET status = 'failed', error = coalesce($3, error), lease_until = NULL
                WHERE id = $1 AND owner = $2
                """, [id, owner, error])
        }
    }
}
