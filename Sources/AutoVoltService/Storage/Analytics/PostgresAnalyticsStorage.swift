import AutoVoltCore
import AutoVoltPostgres
import Foundation

/// `AnalyticsStorage` on PostgreSQL. Throws `PostgresError`. Owns no table: it reads the ledger's,
/// the aggregation's, the ingest's, the reconciliation's and the alarms' (and `cost_versions`).
///
/// Sums are the database's: `GROUP BY GROUPING SETS` gives a scope's total and its classrooms'
/// in one statement (distinct devices and dates counted by the server), the hourly timeline sums
/// the aggregates' `hourly_wh` element by element, open tickets are grouped per kind and board.
/// What grows with the data (intervals, entries, the events of a window, statuses) is read
/// through a server-side cursor, a batch at a time.
///
/// With a `deadline` (an HTTP request's), each operation runs in a transaction whose
/// `statement_timeout` is set (`SET LOCAL`) to the time left before every statement and every
/// batch of a cursor, so a query made of several statements keeps to one budget, as MongoDB's
/// `maxTimeMS` does; past the deadline nothing more is sent. Either way the error is SQLSTATE
/// 57014 (`isDeadlineExceeded`).
public final class PostgresAnalyticsStorage: AnalyticsStorage {
    public let pool: PostgresPool
    public let deadline: ContinuousClock.Instant?

    public init(pool: PostgresPool, deadline: ContinuousClock.Instant? = nil) {
        self.pool = pool
        self.deadline = deadline
    }

    /// Whether `error` is a statement stopped by the deadline (query_canceled: `statement_timeout`).
    public static func isDeadlineExceeded(_ error: any Error) -> Bool {
        (error as? PostgresError)?.sqlState == "57014"
    }

    static let batchSize = 2_000

    // MARK: Connection, deadline

    /// Runs `body` on a pooled connection; with a deadline, inside a transaction armed with it.
    private func read<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        try pool.withConnection { connection in
            guard deadline != nil else { return try body(connection) }
            return try connection.transaction {
                try arm(connection)
                return try body(connection)
            }
        }
    }

    /// Sets `statement_timeout` to what is left of the deadline (nothing without one); past it,
    /// throws what the server would have.
    private func arm(_ connection: PostgresConnection) throws {
        guard let deadline else { return }
        let left = ContinuousClock.now.duration(to: deadline).components
        let ms = left.seconds * 1000 + left.attoseconds / 1_000_000_000_000_000
        guard ms > 0 else {
            throw PostgresError(kind: .server, sqlState: "57014", message: "canceling statement due to statement timeout (the deadline passed)")
        }
        // An integer we computed: no injection, and SET takes no parameters.
        try connection.execute("SET LOCAL statement_timeout = \(ms)")
    }

    /// A cursor's rows a batch at a time, the deadline re-armed before each FETCH.
    private func forEachBatch(_ connection: PostgresConnection, _ sql: String, _ params: [any PostgresBindable],
                              batchSize: Int = PostgresAnalyticsStorage.batchSize, _ body: ([PostgresRow]) throws -> Void) throws {
        try connection.forEachBatch(sql, params, batchSize: batchSize) { rows in
            try body(rows)
            try arm(connection)
        }
    }

    // MARK: JSON cells

    static func json(_ text: String?) -> JSONValue? {
        guard let text else { return nil }
        return try? JSONValue.parse(text)
    }

    static func strings(_ text: String?) -> [String] {
        guard case .array(let items)? = json(text) else { return [] }
        return items.compactMap(\.stringValue)
    }

    /// `switch_state` as stored (array of 0/1 or booleans, or an object of name to boolean or
    /// 0/1); nil for anything else: what MongoDB's reading of the same document gives.
    static func switchState(_ value: JSONValue?) -> Breakdown.SwitchState? {
        func onOff(_ v: JSONValue) -> Bool? {
            switch v {
            case .bool(let b): return b
            case .number(let n): return n.value != 0
            default: return nil
            }
        }
        switch value {
        case .array(let items)?:
            var out: [Bool] = []
            for item in items {
                guard let on = onOff(item) else { return nil }
                out.append(on)
            }
            return .positions(out)
        case .object(let object)?:
            var out: [String: Bool] = [:]
            for member in object {
                guard let on = onOff(member.value) else { return nil }
                out[member.key] = on
            }
            return .named(out)
        default:
            return nil
        }
    }

    static func int(_ text: String?) -> Int? {
        guard let text else { return nil }
        return Int(text) ?? Double(text).flatMap { Int(exactly: $0) }
    }

    /// One row of a `GROUPING SETS` sum.
    static func totals(_ row: PostgresRow) -> AggregateTotals {
        AggregateTotals(energyWh: row.double("energy_wh") ?? 0, cost: row.double("cost") ?? 0, costUnknown: row.bool("cost_unknown") ?? false,
                        currencies: Set(strings(row.json("currencies"))), devices: row.int("devices") ?? 0, days: row.int("days") ?? 0,
                        coverage: row.double("coverage") ?? 0, latestDate: row.string("latest"))
    }

    // MARK: daily_aggregates

    public func dailyTotals(from first: CivilDate, to last: CivilDate, classroom: String?) throws -> GroupedTotals {
        try read { connection in
            var result = GroupedTotals()
            for row in try connection.query("""
                SELECT classroom, GROUPING(classroom) AS is_total, sum(energy_wh) AS energy_wh, sum(cost) AS cost,
                       bool_or(cost IS NULL AND (energy_wh > 0 OR unpriced_wh > 0)) AS cost_unknown,
                       jsonb_agg(DISTINCT currency) FILTER (WHERE currency IS NOT NULL) AS currencies,
                       count(DISTINCT esp32_name) AS devices, count(DISTINCT date) AS days,
                       sum(least(1, greatest(0, coverage))) AS coverage, max(date) AS latest
                FROM daily_aggregates
                WHERE date >= $1 AND date <= $2 AND ($3::text IS NULL OR classroom = $3)
                GROUP BY GROUPING SETS ((classroom), ())
                """, [first.description, last.description, classroom]) {
                var totals = Self.totals(row)
                if row.int("is_total") == 1 {
                    result.total = totals
                } else {
                    totals.latestDate = nil
                    result.byClassroom[row.string("classroom") ?? DeviceInfo.unassignedClassroom] = totals
                }
            }
            return result
        }
    }

    /// One statement: the usable aggregates (an array of exactly the date's hours, all numbers,
    /// the device-day not dirty), summed per date and hour, and their devices per date.
    public func hourlySums(hoursPerDate: [String: Int], classroom: String?) throws -> [String: HourlySums] {
        guard !hoursPerDate.isEmpty else { return [:] }
        let dates = hoursPerDate.keys.sorted()
        return try read { connection in
            var sums: [String: HourlySums] = [:]
            for row in try connection.query("""
                WITH wanted AS (
                    SELECT * FROM unnest($1::text[], $2::int[]) AS w(date, hours)
                ), usable AS MATERIALIZED (
                    SELECT a.date, a.esp32_name, a.hourly_wh
                    FROM daily_aggregates a JOIN wanted w ON w.date = a.date
                    WHERE ($3::text IS NULL OR a.classroom = $3)
                      AND CASE WHEN jsonb_typeof(a.hourly_wh) = 'array' THEN jsonb_array_length(a.hourly_wh) END = w.hours
                      AND NOT EXISTS (SELECT 1 FROM jsonb_array_elements(CASE WHEN jsonb_typeof(a.hourly_wh) = 'array'
                                                                               THEN a.hourly_wh ELSE '[]'::jsonb END) AS v
                                      WHERE jsonb_typeof(v) <> 'number')
                      AND NOT EXISTS (SELECT 1 FROM ledger_dirty_days d WHERE d.esp32_name = a.esp32_name AND d.date = a.date)
                )
                SELECT u.date, e.ord, sum(CASE WHEN jsonb_typeof(e.value) = 'number' THEN (e.value)::float8 END) AS wh,
                       NULL::jsonb AS devices
                FROM usable u CROSS JOIN LATERAL jsonb_array_elements(u.hourly_wh) WITH ORDINALITY AS e(value, ord)
                GROUP BY u.date, e.ord
                UNION ALL
                SELECT date, NULL, NULL, jsonb_agg(esp32_name) FROM usable GROUP BY date
                """, [PostgresTextArray(dates), PostgresTextArray(dates.map { String(hoursPerDate[$0] ?? 0) }), classroom]) {
                guard let date = row.string("date"), let count = hoursPerDate[date] else { continue }
                var sum = sums[date] ?? HourlySums(devices: [], hourlyWh: [Double](repeating: 0, count: count))
                if let ord = row.int("ord") {
                    if ord >= 1 && ord <= count { sum.hourlyWh[ord - 1] = row.double("wh") ?? 0 }
                } else {
                    sum.devices.formUnion(Self.strings(row.json("devices")))
                }
                sums[date] = sum
            }
            return sums
        }
    }

    public func dailyAggregates(date: CivilDate, classroom: String?, withHourly: Bool) throws -> [DailyAggregateRow] {
        try read { connection in
            var rows: [DailyAggregateRow] = []
            try forEachBatch(connection, """
                SELECT esp32_name, classroom, energy_wh, cost, currency, coverage, confidence->>'high' AS high,
                       confidence->>'medium' AS medium, confidence->>'low' AS low, entries, complete, unpriced_wh,
                       \(withHourly ? "hourly_wh" : "NULL::jsonb AS hourly_wh")
                FROM daily_aggregates WHERE date = $1 AND ($2::text IS NULL OR classroom = $2)
                ORDER BY esp32_name
                """, [date.description, classroom], batchSize: 500) { batch in
                for row in batch {
                    guard let name = row.string("esp32_name") else { continue }
                    var hourly: [Double]?
                    if withHourly, case .array(let items)? = Self.json(row.json("hourly_wh")) {
                        hourly = items.map { $0.numberValue?.value ?? 0 }
                    }
                    rows.append(DailyAggregateRow(
                        esp32Name: name, classroom: row.string("classroom"), energyWh: row.double("energy_wh"), cost: row.double("cost"),
                        currency: row.string("currency"), coverage: row.double("coverage"),
                        confidence: ConfidenceCounts(high: Self.int(row.string("high")) ?? 0, medium: Self.int(row.string("medium")) ?? 0,
                                                     low: Self.int(row.string("low")) ?? 0),
                        entries: row.int("entries"), complete: row.bool("complete"), unpricedWh: row.double("unpriced_wh"), hourlyWh: hourly))
                }
            }
            return rows
        }
    }

    public func hourlyTotal(date: CivilDate) throws -> [Double] {
        try read { connection in
            var sums: [Double] = []
            for row in try connection.query("""
                SELECT e.ord, sum(CASE WHEN jsonb_typeof(e.value) = 'number' THEN (e.value)::float8 ELSE 0 END) AS wh
                FROM daily_aggregates a
                CROSS JOIN LATERAL jsonb_array_elements(CASE WHEN jsonb_typeof(a.hourly_wh) = 'array' THEN a.hourly_wh ELSE '[]'::jsonb END)
                    WITH ORDINALITY AS e(value, ord)
                WHERE a.date = $1
                GROUP BY e.ord ORDER BY e.ord
                """, [date.description]) {
                guard let ord = row.int("ord"), ord >= 1 else { continue }
                if sums.count < ord { sums += [Double](repeating: 0, count: ord - sums.count) }
                sums[ord - 1] = row.double("wh") ?? 0
            }
            return sums
        }
    }

    // MARK: monthly_aggregates

    /// A monthly aggregate has no `unpriced_wh`: its cost is unknown when it has energy and no cost.
    public func monthlyTotals(months: [String], classroom: String?) throws -> [String: GroupedTotals] {
        guard !months.isEmpty else { return [:] }
        return try read { connection in
            var result: [String: GroupedTotals] = [:]
            for row in try connection.query("""
                SELECT month, classroom, GROUPING(classroom) AS is_total, sum(energy_wh) AS energy_wh, sum(cost) AS cost,
                       bool_or(cost IS NULL AND energy_wh > 0) AS cost_unknown,
                       jsonb_agg(DISTINCT currency) FILTER (WHERE currency IS NOT NULL) AS currencies,
                       count(DISTINCT esp32_name) AS devices
                FROM monthly_aggregates
                WHERE month = ANY($1::text[]) AND ($2::text IS NULL OR classroom = $2)
                GROUP BY GROUPING SETS ((month, classroom), (month))
                """, [PostgresTextArray(months), classroom]) {
                guard let month = row.string("month") else { continue }
                let totals = Self.totals(row)
                if row.int("is_total") == 1 {
                    result[month, default: GroupedTotals()].total = totals
                } else {
                    result[month, default: GroupedTotals()].byClassroom[row.string("classroom") ?? DeviceInfo.unassignedClassroom] = totals
                }
            }
            return result
        }
    }

    // MARK: device_consumption_ledgers

    public func liveBillableEnergy(dates: [String], classroom: String?) throws -> [String: Double] {
        guard !dates.isEmpty else { return [:] }
        return try read { connection in
            var energy: [String: Double] = [:]
            for row in try connection.query("""
                SELECT date, sum(delta_wh) AS energy_wh FROM device_consumption_ledgers
                WHERE date = ANY($1::text[]) AND superseded_by IS NULL AND billable AND ($2::text IS NULL OR classroom = $2)
                GROUP BY date
                """, [PostgresTextArray(dates), classroom]) {
                if let date = row.string("date") { energy[date, default: 0] += row.double("energy_wh") ?? 0 }
            }
            return energy
        }
    }

    public func forEachLiveBillableInterval(_ query: LiveIntervalQuery, _ body: ([Breakdown.Interval]) -> Void) throws {
        var params: [any PostgresBindable] = [PostgresTimestamp(millis: query.startBefore), PostgresTimestamp(millis: query.endFrom),
                                              query.classroom]
        var conditions = ["superseded_by IS NULL", "billable", "start_ts < $1::timestamptz", "end_ts >= $2::timestamptz",
                          "($3::text IS NULL OR classroom = $3)"]
        switch query.dates {
        case .list(let dates):
            params.append(PostgresTextArray(dates))
            conditions.append("date = ANY($\(params.count)::text[])")
        case .range(let first, let last):
            params += [first, last]
            conditions.append("date >= $\(params.count - 1)::text AND date <= $\(params.count)::text")
        }
        if !query.excludingDevices.isEmpty {
            params.append(PostgresTextArray(query.excludingDevices))
            conditions.append("esp32_name <> ALL($\(params.count)::text[])")
        }
        try read { connection in
            try forEachBatch(connection, """
                SELECT start_ts, end_ts, delta_wh FROM device_consumption_ledgers WHERE \(conditions.joined(separator: " AND "))
                """, params) { rows in
                body(rows.compactMap { row -> Breakdown.Interval? in
                    guard let start = row.millis("start_ts"), let end = row.millis("end_ts"), let energy = row.double("delta_wh") else { return nil }
                    return Breakdown.Interval(start: start, end: end, energyWh: energy)
                })
            }
        }
    }

    public func devicesWithLiveEntries(date: CivilDate, classroom: String?) throws -> Set<String> {
        try read { connection in
            Set(try connection.query("""
                SELECT DISTINCT esp32_name FROM device_consumption_ledgers
                WHERE date = $1 AND superseded_by IS NULL AND ($2::text IS NULL OR classroom = $2)
                """, [date.description, classroom]).compactMap { $0.string("esp32_name") })
        }
    }

    public func forEachLiveEntry(date: CivilDate, classroom: String?, devices: [String], _ body: ([LedgerEntryRow]) -> Void) throws {
        guard !devices.isEmpty else { return }
        try read { connection in
            try forEachBatch(connection, """
                SELECT esp32_name, classroom, start_ts, end_ts, delta_wh, billable,
                       CASE WHEN jsonb_typeof(quality->'confidence') = 'string' THEN quality->>'confidence' END AS confidence,
                       CASE WHEN jsonb_typeof(source_events->0) = 'string' THEN source_events->>0 END AS start_event
                FROM device_consumption_ledgers
                WHERE date = $1 AND superseded_by IS NULL AND esp32_name = ANY($2::text[]) AND ($3::text IS NULL OR classroom = $3)
                """, [date.description, PostgresTextArray(devices), classroom]) { rows in
                body(rows.compactMap { row -> LedgerEntryRow? in
                    guard let name = row.string("esp32_name"), let start = row.millis("start_ts"), let end = row.millis("end_ts") else { return nil }
                    return LedgerEntryRow(esp32Name: name, classroom: row.string("classroom"), start: start, end: end,
                                          energyWh: row.double("delta_wh") ?? 0, billable: row.bool("billable") ?? false,
                                          confidence: row.string("confidence").flatMap(Confidence.init(rawValue:)),
                                          startEvent: row.string("start_event"))
                })
            }
        }
    }

    /// By start time, then id in byte order (as MongoDB sorts `_id`).
    public func ledgerEntries(esp32Name: String, date: CivilDate, limit: Int) throws -> [DevicePageData.Entry] {
        guard limit > 0 else { return [] }
        return try read { connection in
            try connection.query("""
                SELECT start_ts, end_ts, delta_wh, billable,
                       CASE WHEN jsonb_typeof(quality->'confidence') = 'string' THEN quality->>'confidence' END AS confidence,
                       quality->'reasons' AS reasons
                FROM device_consumption_ledgers WHERE esp32_name = $1 AND date = $2
                ORDER BY start_ts, id COLLATE "C" LIMIT $3
                """, [esp32Name, date.description, limit]).map { row in
                DevicePageData.Entry(start: row.millis("start_ts") ?? 0, end: row.millis("end_ts") ?? 0, deltaWh: row.double("delta_wh") ?? 0,
                                     confidence: row.string("confidence") ?? "", reasons: Self.strings(row.json("reasons")),
                                     billable: row.bool("billable") ?? true)
            }
        }
    }

    // MARK: telemetry_events

    /// The devices' events of the window first (the `esp32_name, device_ts` index of each
    /// partition); hashes not found there (an interval that began long before) by `event_hash`.
    public func switchStates(hashes: Set<String>, devices: [String], from: EpochMillis, to: EpochMillis) throws -> [String: Breakdown.SwitchState] {
        guard !hashes.isEmpty else { return [:] }
        return try read { connection in
            var states: [String: Breakdown.SwitchState] = [:]
            var found = Set<String>()
            func take(_ rows: [PostgresRow]) {
                for row in rows {
                    guard let hash = row.string("event_hash"), hashes.contains(hash) else { continue }
                    found.insert(hash)
                    if let state = Self.switchState(Self.json(row.json("switch_state"))) { states[hash] = state }
                }
            }
            if !devices.isEmpty {
                try forEachBatch(connection, """
                    SELECT event_hash, switch_state FROM telemetry_events
                    WHERE esp32_name = ANY($1::text[]) AND device_ts >= $2::timestamptz AND device_ts < $3::timestamptz
                    """, [PostgresTextArray(devices.sorted()), PostgresTimestamp(millis: from), PostgresTimestamp(millis: to)]) { take($0) }
            }
            let missing = hashes.subtracting(found).sorted()
            var index = 0
            while index < missing.count {
                let chunk = Array(missing[index..<min(index + 500, missing.count)])
                try arm(connection)
                take(try connection.query("SELECT event_hash, switch_state FROM telemetry_events WHERE event_hash = ANY($1::text[])",
                                          [PostgresTextArray(chunk)]))
                index += 500
            }
            return states
        }
    }

    public func recentReadings(esp32Name: String, limit: Int) throws -> [DevicePageData.Reading] {
        guard limit > 0 else { return [] }
        return try read { connection in
            try connection.query("""
                SELECT device_ts, received_at, energy_wh_total, power_w, clock FROM telemetry_events
                WHERE esp32_name = $1 ORDER BY device_ts DESC LIMIT $2
                """, [esp32Name, limit]).map { row in
                DevicePageData.Reading(deviceTime: row.millis("device_ts") ?? 0, receivedAt: row.millis("received_at") ?? 0,
                                       energyWh: row.double("energy_wh_total") ?? 0, powerW: row.double("power_w"),
                                       clock: row.string("clock") ?? "")
            }
        }
    }

    // MARK: device_status, rejected_messages, review_tickets, alarms, cost_versions

    static func statusRow(_ row: PostgresRow) -> DeviceStatusRow? {
        guard let name = row.string("esp32_name") else { return nil }
        return DeviceStatusRow(esp32Name: name, classroom: row.string("classroom"), online: row.bool("online"),
                               lastSeenAt: row.millis("last_seen_at"), lastTelemetryAt: row.millis("last_telemetry_at"),
                               sessions: row.int("sessions") ?? 0)
    }

    static let statusColumns = "esp32_name, classroom, online, last_seen_at, last_telemetry_at, sessions"

    public func deviceStatuses() throws -> [DeviceStatusRow] {
        try read { connection in
            var rows: [DeviceStatusRow] = []
            try forEachBatch(connection, "SELECT \(Self.statusColumns) FROM device_status ORDER BY esp32_name", []) { batch in
                rows += batch.compactMap(Self.statusRow)
            }
            return rows
        }
    }

    public func deviceStatus(esp32Name: String) throws -> DeviceStatusRow? {
        try read { connection in
            try connection.query("SELECT \(Self.statusColumns) FROM device_status WHERE esp32_name = $1", [esp32Name]).first.flatMap(Self.statusRow)
        }
    }

    public func recentRejects(esp32Name: String, limit: Int) throws -> [DevicePageData.Reject] {
        guard limit > 0 else { return [] }
        return try read { connection in
            try connection.query("""
                SELECT received_at, reason, detail FROM rejected_messages WHERE esp32_name = $1 ORDER BY received_at DESC LIMIT $2
                """, [esp32Name, limit]).map { row in
                DevicePageData.Reject(receivedAt: row.millis("received_at") ?? 0, reason: row.string("reason") ?? "",
                                      detail: row.string("detail") ?? "")
            }
        }
    }

    /// A ticket's `detail` is jsonb: the ledger's and the reconciliation's are JSON strings,
    /// shown as their text; anything else shows as "" (as on MongoDB, where it is not a string).
    /// `to_jsonb` reads a text column alike.
    public func openTicketGroups() throws -> [OpenTicketGroup] {
        try read { connection in
            try connection.query("""
                SELECT coalesce(kind, '') AS kind, coalesce(esp32_name, '') AS esp32_name, count(*) AS n,
                       min(date) AS oldest, max(date) AS newest,
                       (array_agg(CASE WHEN jsonb_typeof(to_jsonb(detail)) = 'string' THEN to_jsonb(detail) #>> '{}' ELSE '' END
                                  ORDER BY date DESC))[1] AS detail
                FROM review_tickets WHERE status = 'open'
                GROUP BY 1, 2
                """).map { row in
                OpenTicketGroup(kind: row.string("kind") ?? "", esp32Name: row.string("esp32_name") ?? "", count: row.int("n") ?? 0,
                                oldestDate: row.string("oldest") ?? "", newestDate: row.string("newest") ?? "",
                                detail: row.string("detail") ?? "")
            }
        }
    }

    /// The alarms' query (`PostgresAlarmStorage.alarms(on:...)`), here under the deadline.
    public func activeAlarms(limit: Int) throws -> [AlarmRecord] {
        try read { connection in
            try PostgresAlarmStorage.alarms(on: connection, activeOnly: true, esp32Name: nil, from: nil, to: nil, limit: limit)
        }
    }

    public func recentAlarms(esp32Name: String, limit: Int) throws -> [AlarmRecord] {
        try read { connection in
            try PostgresAlarmStorage.alarms(on: connection, activeOnly: false, esp32Name: esp32Name, from: nil, to: nil, limit: limit)
        }
    }

    /// The aggregation's query (`PostgresAggregationStorage.tariffs`), here under the deadline.
    public func tariffs() throws -> [Tariff] {
        try read { connection in
            var tariffs: [Tariff] = []
            try forEachBatch(connection, """
                SELECT id, cost_per_kwh, currency, effective_from, classroom, notes, created_at FROM cost_versions
                ORDER BY effective_from, created_at, id
                """, [], batchSize: 1_000) { rows in
                tariffs += rows.compactMap { row -> Tariff? in
                    guard let id = row.string("id"), let price = row.double("cost_per_kwh"), let from = row.millis("effective_from") else { return nil }
                    return Tariff(id: id, costPerKwh: price, currency: row.string("currency") ?? "INR", effectiveFrom: from,
                                  classroom: row.string("classroom"), createdAt: row.millis("created_at") ?? 0, notes: row.string("notes"))
                }
            }
            return tariffs
        }
    }
}
