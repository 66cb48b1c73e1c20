import AutoVoltCore
import AutoVoltPostgres
import Foundation

extension PostgresTables {
    /// Tariff versions, the daily and monthly aggregates and the versions they replaced (contract
    /// section 4, the documents' fields as columns). `id` is the MongoDB `_id`: "date|esp32_name",
    /// "month|esp32_name", and "kind|aggregate id|vN" for history; in byte order ("C"), so pages
    /// by id come in date order on both backends. `write_id` marks the write that made a version.
    static let aggregates = """
    CREATE TABLE cost_versions (
        id text PRIMARY KEY,
        cost_per_kwh double precision NOT NULL,
        currency text NOT NULL,
        effective_from timestamptz NOT NULL,
        classroom text,
        notes text,
        created_at timestamptz NOT NULL
    );
    CREATE INDEX cost_versions_effective_from_classroom ON cost_versions (effective_from, classroom);
    CREATE TABLE daily_aggregates (
        id text COLLATE "C" PRIMARY KEY,
        date text COLLATE "C" NOT NULL,
        esp32_name text NOT NULL,
        classroom text NOT NULL,
        energy_wh double precision NOT NULL,
        cost double precision,
        currency text,
        cost_version_ids jsonb NOT NULL,
        coverage double precision NOT NULL,
        confidence jsonb NOT NULL,
        entries integer NOT NULL,
        unpriced_wh double precision NOT NULL,
        overlap_ms bigint NOT NULL,
        hourly_wh jsonb NOT NULL,
        cost_segments jsonb NOT NULL,
        complete boolean NOT NULL,
        version bigint NOT NULL CHECK (version >= 1),
        computed_at timestamptz NOT NULL,
        write_id text,
        UNIQUE (date, esp32_name)
    );
    CREATE INDEX daily_aggregates_esp32_name_date ON daily_aggregates (esp32_name, date);
    CREATE TABLE monthly_aggregates (
        id text COLLATE "C" PRIMARY KEY,
        month text COLLATE "C" NOT NULL,
        esp32_name text NOT NULL,
        classroom text NOT NULL,
        energy_wh double precision NOT NULL,
        cost double precision,
        currency text,
        days integer NOT NULL,
        version bigint NOT NULL CHECK (version >= 1),
        computed_at timestamptz NOT NULL,
        write_id text,
        UNIQUE (month, esp32_name)
    );
    CREATE TABLE aggregate_history (
        id text COLLATE "C" PRIMARY KEY,
        aggregate_id text COLLATE "C" NOT NULL,
        collection text NOT NULL,
        replaced_at timestamptz NOT NULL,
        date text COLLATE "C",
        month text COLLATE "C",
        esp32_name text NOT NULL,
        classroom text NOT NULL,
        energy_wh double precision NOT NULL,
        cost double precision,
        currency text,
        cost_version_ids jsonb,
        coverage double precision,
        confidence jsonb,
        entries integer,
        unpriced_wh double precision,
        overlap_ms bigint,
        hourly_wh jsonb,
        cost_segments jsonb,
        complete boolean,
        days integer,
        version bigint NOT NULL,
        computed_at timestamptz,
        write_id text
    );
    CREATE INDEX aggregate_history_aggregate_id_version ON aggregate_history (aggregate_id, version);
    """
}

/// `AggregationStorage` on PostgreSQL. Throws `PostgresError`.
///
/// A versioned write is a transaction per batch: the rows still at the version read are locked
/// (`FOR UPDATE`, in id order, so two workers never deadlock), copied to `aggregate_history`
/// and updated; rows that were absent are inserted by one `INSERT ... ON CONFLICT DO NOTHING
/// RETURNING id`. What applied is what the statements return: no write marks to look for.
public final class PostgresAggregationStorage: AggregationStorage {
    public let pool: PostgresPool

    public init(pool: PostgresPool) {
        self.pool = pool
    }

    // MARK: Tariffs

    public func tariffs() throws -> [Tariff] {
        try pool.withConnection { connection in
            var tariffs: [Tariff] = []
            try connection.forEachBatch("""
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

    public func insertTariff(_ t: Tariff) throws {
        try pool.withConnection { connection in
            try connection.execute("""
                INSERT INTO cost_versions (id, cost_per_kwh, currency, effective_from, classroom, notes, created_at)
                VALUES ($1, $2, $3, $4::timestamptz, $5, $6, $7::timestamptz) ON CONFLICT (id) DO NOTHING
                """, [t.id, t.costPerKwh, t.currency, PostgresTimestamp(millis: t.effectiveFrom), t.classroom, t.notes,
                      PostgresTimestamp(millis: t.createdAt)])
        }
    }

    // MARK: What to recompute

    public func aggregatedDays(from date: CivilDate, classroom: String?, after: DeviceDay?, limit: Int) throws -> [DeviceDay] {
        var conditions = ["date >= $1"]
        var params: [any PostgresBindable] = [date.description, limit]
        if let classroom {
            params.append(classroom)
            conditions.append("classroom = $\(params.count)")
        }
        if let after {
            params.append(AggregateFigures.id(key: after.date.description, esp32Name: after.esp32Name))
            conditions.append("id > $\(params.count)")
        }
        return try pool.withConnection { connection in
            try connection.query("""
                SELECT esp32_name, date FROM daily_aggregates WHERE \(conditions.joined(separator: " AND ")) ORDER BY id LIMIT $2
                """, params).compactMap { row -> DeviceDay? in
                guard let name = row.string("esp32_name"), let date = row.string("date").flatMap(CivilDate.init) else { return nil }
                return DeviceDay(esp32Name: name, date: date)
            }
        }
    }

    public func devicesToRecompute(on date: CivilDate, classroom: String?, esp32Name: String?) throws -> Set<String> {
        var conditions = ["date = $1"]
        var params: [any PostgresBindable] = [date.description]
        if let classroom {
            params.append(classroom)
            conditions.append("classroom = $\(params.count)")
        }
        if let esp32Name {
            params.append(esp32Name)
            conditions.append("esp32_name = $\(params.count)")
        }
        let condition = conditions.joined(separator: " AND ")
        return try pool.withConnection { connection in
            var names = Set<String>()
            try connection.forEachBatch("""
                SELECT esp32_name FROM device_consumption_ledgers WHERE \(condition) AND superseded_by IS NULL
                UNION
                SELECT esp32_name FROM daily_aggregates WHERE \(condition)
                """, params, batchSize: 1_000) { rows in
                for row in rows { if let name = row.string("esp32_name") { names.insert(name) } }
            }
            return names
        }
    }

    public func dirtyDays(limit: Int, now: EpochMillis) throws -> [DirtyDay] {
        try pool.withConnection { connection in
            try connection.query("""
                SELECT d.id, d.esp32_name, d.date, d.changed_from FROM ledger_dirty_days d
                WHERE NOT EXISTS (SELECT 1 FROM ledger_dirty_days h
                                  WHERE h.esp32_name = d.esp32_name AND h.date = d.date AND h.hold_until > $2::timestamptz)
                ORDER BY d.dirty_at, d.id LIMIT $1
                """, [limit, PostgresTimestamp(millis: now)])
                .compactMap { row -> DirtyDay? in
                    guard let id = row.string("id") else { return nil }
                    var day: DeviceDay?
                    if let name = row.string("esp32_name"), let date = row.string("date").flatMap(CivilDate.init) {
                        day = DeviceDay(esp32Name: name, date: date)
                    }
                    return DirtyDay(id: id, day: day, changedFrom: row.millis("changed_from"))
                }
        }
    }

    public func clearDirtyDays(_ days: [DirtyDay]) throws {
        guard !days.isEmpty else { return }
        try pool.withConnection { connection in
            try connection.execute("DELETE FROM ledger_dirty_days WHERE id = ANY($1::text[])", [PostgresTextArray(days.map(\.id).sorted())])
        }
    }

    // MARK: Inputs

    public func liveEntries(of days: [DeviceDay], after: [DeviceDay: DayFold.EntryPosition]) throws -> [DeviceDay: DayEntries] {
        guard !days.isEmpty else { return [:] }
        // A day's position, or before any entry (0001-01-01): the index (esp32_name, date,
        // start_ts, end_ts) reads only what comes after it.
        let beforeAny: EpochMillis = -62_135_596_800_000
        let positions = days.map { after[$0] }
        return try pool.withConnection { connection in
            var byDay: [DeviceDay: DayEntries] = [:]
            // In time order: the day's sums come out the same on every run.
            try connection.forEachBatch("""
                SELECT l.esp32_name, l.date, l.classroom, l.start_ts, l.end_ts, l.delta_wh, l.billable, l.quality->>'confidence' AS confidence
                FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[]) AS k(esp32_name, date, after_start, after_end)
                JOIN device_consumption_ledgers l ON l.esp32_name = k.esp32_name AND l.date = k.date
                    AND l.start_ts >= 'epoch'::timestamptz + k.after_start * interval '1 millisecond'
                    AND (l.start_ts, l.end_ts) > ('epoch'::timestamptz + k.after_start * interval '1 millisecond',
                                                  'epoch'::timestamptz + k.after_end * interval '1 millisecond')
                WHERE l.superseded_by IS NULL
                ORDER BY l.esp32_name, l.date, l.start_ts, l.end_ts
                """, [PostgresTextArray(days.map(\.esp32Name)), PostgresTextArray(days.map(\.date.description)),
                      PostgresTextArray(positions.map { String($0?.start ?? beforeAny) }),
                      PostgresTextArray(positions.map { String($0?.end ?? beforeAny) })], batchSize: 5_000) { rows in
                for row in rows {
                    guard let name = row.string("esp32_name"), let date = row.string("date").flatMap(CivilDate.init),
                          let start = row.millis("start_ts"), let end = row.millis("end_ts"), let delta = row.double("delta_wh") else { continue }
                    let key = DeviceDay(esp32Name: name, date: date)
                    byDay[key, default: DayEntries(classroom: row.string("classroom"), entries: [])].entries.append(
                        AggregateEntry(start: start, end: end, deltaWh: delta, billable: row.bool("billable") ?? false,
                                       confidence: row.string("confidence").flatMap(Confidence.init) ?? .low))
                }
            }
            return byDay
        }
    }

    public func dailyFigures(month: String, esp32Names: [String]) throws -> [String: [DailyFigures]] {
        guard !esp32Names.isEmpty else { return [:] }
        return try pool.withConnection { connection in
            var byDevice: [String: [DailyFigures]] = [:]
            for row in try connection.query("""
                SELECT esp32_name, date, classroom, energy_wh, cost, currency, coverage FROM daily_aggregates
                WHERE esp32_name = ANY($1::text[]) AND date >= $2 AND date <= $3 ORDER BY date, esp32_name LIMIT $4
                """, [PostgresTextArray(esp32Names), "\(month)-01", "\(month)-31", esp32Names.count * 31]) {
                guard let name = row.string("esp32_name") else { continue }
                byDevice[name, default: []].append(DailyFigures(
                    date: row.string("date").flatMap(CivilDate.init) ?? CivilDate(year: 1970, month: 1, day: 1),
                    esp32Name: name, classroom: row.string("classroom") ?? "", energyWh: row.double("energy_wh") ?? 0,
                    cost: row.double("cost"), currency: row.string("currency"), costVersionIDs: [],
                    coverage: row.double("coverage") ?? 0, confidence: [:], entries: 0, unpricedWh: 0))
            }
            return byDevice
        }
    }

    // MARK: Versioned aggregates

    public func aggregates(_ kind: AggregateKind, ids: [String]) throws -> [String: StoredAggregate] {
        guard !ids.isEmpty else { return [:] }
        return try pool.withConnection { connection in
            var stored: [String: StoredAggregate] = [:]
            for row in try connection.query("SELECT * FROM \(kind.collection) WHERE id = ANY($1::text[])", [PostgresTextArray(ids)]) {
                if let id = row.string("id") { stored[id] = try Self.stored(row, kind: kind) }
            }
            return stored
        }
    }

    public func writeAggregates(_ kind: AggregateKind, _ writes: [AggregateWrite], now: EpochMillis, writeID: String) throws -> Set<String> {
        guard !writes.isEmpty else { return [] }
        let table = kind.collection
        let columns = Self.columns(kind)
        let recordset = "jsonb_to_recordset($1::jsonb) AS v(id text, \(Self.recordTypes(kind)))"
        let replacing = writes.filter { $0.replacing != nil }.sorted { $0.figures.id < $1.figures.id }
        let first = writes.filter { $0.replacing == nil }.sorted { $0.figures.id < $1.figures.id }
        return try pool.withConnection { connection in
            var applied = Set<String>()
            if !replacing.isEmpty {
                try connection.transaction {
                    let locked = Set(try connection.query("""
                        SELECT t.id FROM \(table) t
                        JOIN unnest($1::text[], $2::bigint[]) AS v(id, version) ON t.id = v.id AND t.version = v.version
                        ORDER BY t.id FOR UPDATE OF t
                        """, [PostgresTextArray(replacing.map(\.figures.id)),
                              PostgresTextArray(replacing.map { String($0.replacing?.version ?? 0) })]).compactMap { $0.string("id") })
                    let winning = replacing.filter { locked.contains($0.figures.id) }
                    guard !winning.isEmpty else { return }
                    let kept = winning.filter(\.keepsHistory).map(\.figures.id)
                    if !kept.isEmpty {
                        try connection.execute("""
                            INSERT INTO aggregate_history (id, aggregate_id, collection, replaced_at, \(columns), version, computed_at, write_id)
                            SELECT $2::text || '|' || t.id || '|v' || t.version, t.id, $3::text, $4::timestamptz, \(Self.prefixed(columns, "t")),
                                   t.version, t.computed_at, t.write_id
                            FROM \(table) t WHERE t.id = ANY($1::text[]) ORDER BY t.id
                            ON CONFLICT (id) DO NOTHING
                            """, [PostgresTextArray(kept), kind.rawValue, table, PostgresTimestamp(millis: now)])
                    }
                    let set = Self.columnNames(kind).map { "\($0) = v.\($0)" }.joined(separator: ", ")
                    let updated = try connection.query("""
                        UPDATE \(table) t SET \(set), version = t.version + 1, computed_at = $2::timestamptz, write_id = $3::text
                        FROM \(recordset) WHERE t.id = v.id RETURNING t.id
                        """, [PostgresJSON(try Self.json(winning.map(\.figures))), PostgresTimestamp(millis: now), writeID])
                    applied.formUnion(updated.compactMap { $0.string("id") })
                }
            }
            if !first.isEmpty {
                let inserted = try connection.query("""
                    INSERT INTO \(table) (id, \(columns), version, computed_at, write_id)
                    SELECT v.id, \(Self.prefixed(columns, "v")), 1, $2::timestamptz, $3::text FROM \(recordset) ORDER BY v.id
                    ON CONFLICT DO NOTHING RETURNING id
                    """, [PostgresJSON(try Self.json(first.map(\.figures))), PostgresTimestamp(millis: now), writeID])
                applied.formUnion(inserted.compactMap { $0.string("id") })
            }
            return applied
        }
    }

    // MARK: Rows

    static func columnNames(_ kind: AggregateKind) -> [String] {
        switch kind {
        case .daily:
            return ["date", "esp32_name", "classroom", "energy_wh", "cost", "currency", "cost_version_ids", "coverage", "confidence",
                    "entries", "unpriced_wh", "overlap_ms", "hourly_wh", "cost_segments", "complete", "fold_state"]
        case .monthly:
            return ["month", "esp32_name", "classroom", "energy_wh", "cost", "currency", "days"]
        }
    }

    static func columns(_ kind: AggregateKind) -> String { columnNames(kind).joined(separator: ", ") }

    static func prefixed(_ columns: String, _ alias: String) -> String {
        columns.split(separator: ",").map { "\(alias).\($0.trimmingCharacters(in: .whitespaces))" }.joined(separator: ", ")
    }

    /// The figures' columns as `jsonb_to_recordset` reads them.
    static func recordTypes(_ kind: AggregateKind) -> String {
        switch kind {
        case .daily:
            return """
                date text, esp32_name text, classroom text, energy_wh double precision, cost double precision, currency text, \
                cost_version_ids jsonb, coverage double precision, confidence jsonb, entries integer, unpriced_wh double precision, \
                overlap_ms bigint, hourly_wh jsonb, cost_segments jsonb, complete boolean, fold_state text
                """
        case .monthly:
            return "month text, esp32_name text, classroom text, energy_wh double precision, cost double precision, currency text, days integer"
        }
    }

    /// One aggregate as a JSON record (nil fields omitted: NULL).
    struct Record: Codable {
        var id: String
        var date: String?
        var month: String?
        var esp32Name: String
        var classroom: String
        var energyWh: Double
        var cost: Double?
        var currency: String?
        var costVersionIDs: [String]?
        var coverage: Double?
        var confidence: [String: Int]?
        var entries: Int?
        var unpricedWh: Double?
        var overlapMillis: Int64?
        var hourlyWh: [Double]?
        var costSegments: [Segment]?
        var complete: Bool?
        var foldState: String?
        var days: Int?

        enum CodingKeys: String, CodingKey {
            case id, date, month, classroom, cost, currency, coverage, confidence, entries, complete, days
            case esp32Name = "esp32_name", energyWh = "energy_wh", costVersionIDs = "cost_version_ids", unpricedWh = "unpriced_wh"
            case overlapMillis = "overlap_ms", hourlyWh = "hourly_wh", costSegments = "cost_segments", foldState = "fold_state"
        }
    }

    /// An element of `cost_segments` (the document's fields).
    struct Segment: Codable {
        var costVersionID: String
        var costPerKwh: Double
        var energyWh: Double
        var cost: Double

        enum CodingKeys: String, CodingKey {
            case cost
            case costVersionID = "cost_version_id", costPerKwh = "cost_per_kwh", energyWh = "energy_wh"
        }
    }

    static func json(_ figures: [AggregateFigures]) throws -> String {
        let records = figures.map { f in
            var record = Record(id: f.id, esp32Name: f.esp32Name, classroom: f.classroom, energyWh: f.energyWh, cost: f.cost, currency: f.currency)
            switch f.kind {
            case .daily: record.date = f.key
            case .monthly: record.month = f.key
            }
            if let day = f.day {
                record.costVersionIDs = day.costVersionIDs
                record.coverage = day.coverage
                record.confidence = Dictionary(uniqueKeysWithValues: Confidence.allCases.map { ($0.rawValue, day.confidence[$0] ?? 0) })
                record.entries = day.entries
                record.unpricedWh = day.unpricedWh
                record.overlapMillis = day.overlapMillis
                record.hourlyWh = day.hourlyWh
                record.costSegments = day.costSegments.map {
                    Segment(costVersionID: $0.costVersionID, costPerKwh: $0.costPerKwh, energyWh: $0.energyWh, cost: $0.cost)
                }
                record.complete = day.complete
                record.foldState = day.fold
            }
            record.days = f.days
            return record
        }
        return String(decoding: try JSONEncoder().encode(records), as: UTF8.self)
    }

    static func stored(_ row: PostgresRow, kind: AggregateKind) throws -> StoredAggregate {
        func decode<T: Decodable>(_ type: T.Type, _ column: String) throws -> T? {
            guard let text = row.json(column) else { return nil }
            return try JSONDecoder().decode(type, from: Data(text.utf8))
        }
        var figures = AggregateFigures(
            kind: kind, key: row.string(kind == .daily ? "date" : "month") ?? "", esp32Name: row.string("esp32_name") ?? "",
            classroom: row.string("classroom") ?? "", energyWh: row.double("energy_wh") ?? 0, cost: row.double("cost"),
            currency: row.string("currency"))
        switch kind {
        case .daily:
            let counts = try decode([String: Int].self, "confidence") ?? [:]
            var confidence: [Confidence: Int] = [:]
            for level in Confidence.allCases { confidence[level] = counts[level.rawValue] ?? 0 }
            figures.day = DayDetail(
                costVersionIDs: try decode([String].self, "cost_version_ids") ?? [], coverage: row.double("coverage") ?? 0,
                confidence: confidence, entries: row.int("entries") ?? 0, unpricedWh: row.double("unpriced_wh") ?? 0,
                overlapMillis: row.int64("overlap_ms") ?? 0, hourlyWh: try decode([Double].self, "hourly_wh") ?? [],
                costSegments: (try decode([Segment].self, "cost_segments") ?? []).map {
                    CostSegment(costVersionID: $0.costVersionID, costPerKwh: $0.costPerKwh, energyWh: $0.energyWh, cost: $0.cost)
                },
                complete: row.bool("complete") ?? false, fold: row.string("fold_state"))
        case .monthly:
            figures.days = row.int("days")
        }
        return StoredAggregate(figures: figures, version: row.int64("version") ?? 0, computedAt: row.millis("computed_at"),
                               writeID: row.string("write_id"))
    }
}
