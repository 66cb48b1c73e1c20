import AutoVoltCore
import AutoVoltPostgres
import Foundation

extension PostgresTables {
    /// Monthly statements (contract section 8; docs/statements.md), the documents' fields as
    /// columns, nested ones (scope, lines, segments, days, coverage, review_tickets, sources,
    /// exports) as jsonb with the documents' field names. `statements.id` is the MongoDB `_id`
    /// ("2026-11.campus.v1"); `statement_sources.id` is "ID|token|chunk", `statement_exports.id`
    /// "ID|format|sha256". Ids, months and scope keys are in byte order, as MongoDB sorts them.
    ///
    /// A frozen statement never changes: besides the store's conditional writes, a trigger
    /// refuses any UPDATE or DELETE of a frozen row, any change to a kept export's bytes, and
    /// deleting the sources a frozen statement names.
    static let statements = """
    CREATE TABLE statements (
        id text COLLATE "C" PRIMARY KEY,
        month text COLLATE "C" NOT NULL,
        scope jsonb NOT NULL,
        scope_key text COLLATE "C" NOT NULL,
        classrooms jsonb NOT NULL,
        version integer NOT NULL CHECK (version >= 1),
        status text NOT NULL CHECK (status IN ('draft', 'frozen')),
        currency text,
        time_zone text NOT NULL,
        created_at timestamptz NOT NULL,
        frozen_at timestamptz,
        frozen_by text,
        energy_wh double precision NOT NULL,
        cost double precision,
        unpriced_wh double precision NOT NULL,
        lines jsonb NOT NULL,
        segments jsonb NOT NULL,
        days jsonb NOT NULL,
        coverage jsonb NOT NULL,
        review_tickets jsonb NOT NULL,
        sources jsonb,
        exports jsonb NOT NULL DEFAULT '{}'::jsonb,
        draft_token text,
        UNIQUE (month, scope_key, version)
    );
    CREATE INDEX statements_month_scope_key_status ON statements (month, scope_key, status, version);
    CREATE TABLE statement_sources (
        id text COLLATE "C" PRIMARY KEY,
        statement_id text COLLATE "C" NOT NULL,
        token text NOT NULL,
        chunk integer NOT NULL,
        aggregates jsonb NOT NULL,
        UNIQUE (statement_id, token, chunk)
    );
    CREATE TABLE statement_exports (
        id text COLLATE "C" PRIMARY KEY,
        statement_id text COLLATE "C" NOT NULL,
        format text NOT NULL,
        sha256 text NOT NULL,
        bytes bigint NOT NULL,
        data bytea NOT NULL
    );
    CREATE INDEX statement_exports_statement_id ON statement_exports (statement_id);
    CREATE FUNCTION statements_frozen_never_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF OLD.status = 'frozen' THEN
            RAISE EXCEPTION 'statement % is frozen: it never changes', OLD.id USING ERRCODE = 'P0001';
        END IF;
        IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER statements_frozen_never_change BEFORE UPDATE OR DELETE ON statements
        FOR EACH ROW EXECUTE FUNCTION statements_frozen_never_change();
    CREATE FUNCTION statement_sources_of_frozen_kept() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF EXISTS (SELECT 1 FROM statements s WHERE s.id = OLD.statement_id AND s.status = 'frozen'
                   AND s.sources->>'token' = OLD.token) THEN
            RAISE EXCEPTION 'the sources of frozen statement % are kept', OLD.statement_id USING ERRCODE = 'P0001';
        END IF;
        IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER statement_sources_of_frozen_kept BEFORE UPDATE OR DELETE ON statement_sources
        FOR EACH ROW EXECUTE FUNCTION statement_sources_of_frozen_kept();
    CREATE FUNCTION statement_exports_never_change() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        RAISE EXCEPTION 'a kept export (%) never changes', OLD.id USING ERRCODE = 'P0001';
    END $$;
    CREATE TRIGGER statement_exports_never_change BEFORE UPDATE ON statement_exports
        FOR EACH ROW EXECUTE FUNCTION statement_exports_never_change();
    """
}

/// `StatementStorage` on PostgreSQL. Throws `PostgresError` (and `DecodingError` for a jsonb
/// column that is not what this worker writes).
///
/// - A draft is written in one transaction: the statement by `INSERT ... ON CONFLICT (id) DO
///   UPDATE ... WHERE status = 'draft' RETURNING`, which holds the row until commit (a racing
///   generate or freeze of the same id waits, then sees this draft), its sources, and the
///   deletion of every other token's sources of the id, which only the draft it replaced (or a
///   generate that failed half-way on MongoDB) can have. No row back: the id is frozen, and
///   nothing is written.
/// - Freezing is one `UPDATE ... WHERE status = 'draft' AND draft_token IS NOT DISTINCT FROM`:
///   of two freezes, the second waits for the first's row and then matches nothing.
/// - The month's daily aggregates come through a cursor in id order; late readings are one
///   `GROUP BY esp32_name` over the (esp32_name, device_ts) index.
public final class PostgresStatementStorage: StatementStorage {
    public let pool: PostgresPool

    public init(pool: PostgresPool) {
        self.pool = pool
    }

    // MARK: The figures

    public func tariffRates() throws -> [String: Double] {
        try pool.withConnection { connection in
            var rates: [String: Double] = [:]
            try connection.forEachBatch("SELECT id, cost_per_kwh FROM cost_versions", [], batchSize: 1_000) { rows in
                for row in rows { if let id = row.string("id"), let rate = row.double("cost_per_kwh") { rates[id] = rate } }
            }
            return rates
        }
    }

    public func forEachDailyAggregate(from first: CivilDate, to last: CivilDate, classrooms: [String]?,
                                      _ body: ([StatementDay]) -> Void) throws {
        var params: [any PostgresBindable] = [first.description, last.description]
        var condition = ""
        if let classrooms {
            params.append(PostgresTextArray(classrooms))
            condition = " AND classroom = ANY($3::text[])"
        }
        try pool.withConnection { connection in
            try connection.forEachBatch("""
                SELECT id, date, esp32_name, classroom, energy_wh, cost, currency, unpriced_wh, coverage, confidence, cost_segments,
                       cost_version_ids, version
                FROM daily_aggregates WHERE date >= $1 AND date <= $2\(condition) ORDER BY id
                """, params, batchSize: 1_000) { rows in
                body(try rows.compactMap(Self.day))
            }
        }
    }

    public func openTickets(from first: CivilDate, to last: CivilDate, esp32Names: [String]?, limit: Int) throws -> [Statement.Ticket] {
        var params: [any PostgresBindable] = [first.description, last.description, limit]
        var condition = ""
        if let esp32Names {
            params.append(PostgresTextArray(esp32Names))
            condition = " AND esp32_name = ANY($4::text[])"
        }
        return try pool.withConnection { connection in
            try connection.query("""
                SELECT id::text AS id, esp32_name, date, kind, detail #>> '{}' AS detail FROM review_tickets
                WHERE status = 'open' AND date >= $1 AND date <= $2\(condition)
                ORDER BY date, esp32_name COLLATE "C", kind COLLATE "C" LIMIT $3
                """, params)
        }.map { row in
            Statement.Ticket(id: row.string("id") ?? "", esp32Name: row.string("esp32_name") ?? "", date: row.string("date") ?? "",
                             kind: row.string("kind") ?? "", detail: row.string("detail") ?? "")
        }
    }

    public func lateReadingCounts(esp32Names: [String], deviceFrom: EpochMillis, deviceBefore: EpochMillis,
                                  receivedAfter: EpochMillis, receivedUntil: EpochMillis?) throws -> [String: Int] {
        guard !esp32Names.isEmpty else { return [:] }
        let rows = try pool.withConnection { connection in
            try connection.query("""
                SELECT esp32_name, count(*) AS n FROM telemetry_events
                WHERE esp32_name = ANY($1::text[]) AND device_ts >= $2::timestamptz AND device_ts < $3::timestamptz
                  AND received_at > $4::timestamptz AND ($5::timestamptz IS NULL OR received_at <= $5::timestamptz)
                GROUP BY esp32_name
                """, [PostgresTextArray(esp32Names), PostgresTimestamp(millis: deviceFrom), PostgresTimestamp(millis: deviceBefore),
                      PostgresTimestamp(millis: receivedAfter), receivedUntil.map { PostgresTimestamp(millis: $0) }])
        }
        var counts: [String: Int] = [:]
        for row in rows { if let name = row.string("esp32_name") { counts[name] = row.int("n") ?? 0 } }
        return counts
    }

    // MARK: Statements

    public func lastFrozenVersion(month: String, scopeKey: String) throws -> Int {
        try pool.withConnection { connection in
            try connection.query("""
                SELECT coalesce(max(version), 0) AS v FROM statements WHERE month = $1 AND scope_key = $2 AND status = 'frozen'
                """, [month, scopeKey]).first?.int("v") ?? 0
        }
    }

    /// The advisory lock class of a draft's save ("stmt"; two-key locks, apart from the one-key space).
    static let draftLockClass: Int32 = 0x7374_6D74

    public func saveDraft(_ statement: Statement, token: String) throws -> DraftSave {
        let s = statement
        let reference = SourcesJSON(collection: StatementStore.sourcesCollection, token: token, count: s.sources.count,
                                    chunks: StatementDocuments.sourceChunkCount(s.sources.count))
        let params: [any PostgresBindable] = [
            s.id, s.month, PostgresJSON(try Self.json(ScopeJSON(s.scope))), StatementDocuments.scopeKey(s.scope),
            PostgresJSON(try Self.json(s.classrooms)), s.version, s.status.rawValue, s.currency, s.timeZone,
            PostgresTimestamp(millis: s.createdAt), s.frozenAt.map { PostgresTimestamp(millis: $0) }, s.frozenBy,
            Self.wh(s.energy), Self.money(s.cost), Self.wh(s.unpriced),
            PostgresJSON(try Self.json(s.lines.map(LineJSON.init))), PostgresJSON(try Self.json(s.segments.map(SegmentJSON.init))),
            PostgresJSON(try Self.json(s.days.map(DayJSON.init))), PostgresJSON(try Self.json(CoverageJSON(s.coverage))),
            PostgresJSON(try Self.json(s.tickets.map(TicketJSON.init))), PostgresJSON(try Self.json(reference)),
            PostgresJSON(try Self.json(Self.exports(s.exports))), token,
        ]
        var chunks: [(id: String, index: Int, json: String)] = []
        for (index, start) in stride(from: 0, to: s.sources.count, by: StatementDocuments.sourcesPerChunk).enumerated() {
            let slice = s.sources[start..<min(start + StatementDocuments.sourcesPerChunk, s.sources.count)]
            chunks.append(("\(s.id)|\(token)|\(index)", index, try Self.json(slice.map(SourceJSON.init))))
        }
        return try pool.withConnection { connection in
            try connection.transaction {
                // Two saves of one id wait for each other here: ON CONFLICT (id) settles a race on
                // the id only, and the second insert could meet the first on the other unique key
                // (month, scope_key, version) first, a 23505 (twoGeneratesRacing..., now and then).
                try connection.execute("SELECT pg_advisory_xact_lock($1::int4, hashtext($2))", [Int(Self.draftLockClass), s.id])
                // Then the statement: its row is held until commit, so a generate or freeze of
                // the same id waits and then sees this draft.
                let written = try connection.query("""
                    INSERT INTO statements AS s (id, month, scope, scope_key, classrooms, version, status, currency, time_zone, created_at,
                        frozen_at, frozen_by, energy_wh, cost, unpriced_wh, lines, segments, days, coverage, review_tickets, sources, exports,
                        draft_token)
                    VALUES ($1, $2, $3::jsonb, $4, $5::jsonb, $6::integer, $7, $8, $9, $10::timestamptz, $11::timestamptz, $12,
                            $13::float8, $14::float8, $15::float8, $16::jsonb, $17::jsonb, $18::jsonb, $19::jsonb, $20::jsonb, $21::jsonb,
                            $22::jsonb, $23)
                    ON CONFLICT (id) DO UPDATE SET month = EXCLUDED.month, scope = EXCLUDED.scope, scope_key = EXCLUDED.scope_key,
                        classrooms = EXCLUDED.classrooms, version = EXCLUDED.version, status = EXCLUDED.status, currency = EXCLUDED.currency,
                        time_zone = EXCLUDED.time_zone, created_at = EXCLUDED.created_at, frozen_at = EXCLUDED.frozen_at,
                        frozen_by = EXCLUDED.frozen_by, energy_wh = EXCLUDED.energy_wh, cost = EXCLUDED.cost,
                        unpriced_wh = EXCLUDED.unpriced_wh, lines = EXCLUDED.lines, segments = EXCLUDED.segments, days = EXCLUDED.days,
                        coverage = EXCLUDED.coverage, review_tickets = EXCLUDED.review_tickets, sources = EXCLUDED.sources,
                        exports = EXCLUDED.exports, draft_token = EXCLUDED.draft_token
                    WHERE s.status = 'draft'
                    RETURNING id
                    """, params)
                // The id is a frozen statement's (frozen meanwhile): nothing written.
                guard !written.isEmpty else { return DraftSave.versionFrozen }
                for chunk in chunks {
                    try connection.execute("""
                        INSERT INTO statement_sources (id, statement_id, token, chunk, aggregates) VALUES ($1, $2, $3, $4::integer, $5::jsonb)
                        ON CONFLICT (id) DO NOTHING
                        """, [chunk.id, s.id, token, chunk.index, PostgresJSON(chunk.json)])
                }
                // What the replaced draft named: named by nothing any more.
                try connection.execute("DELETE FROM statement_sources WHERE statement_id = $1 AND token <> $2", [s.id, token])
                return DraftSave.saved
            }
        }
    }

    static let statementColumns = """
        id, month, scope, classrooms, version, status, currency, time_zone, created_at, frozen_at, frozen_by, energy_wh, cost,
        unpriced_wh, coverage, exports
        """

    public func statement(id: String) throws -> StoredStatement? {
        let row = try pool.withConnection { connection in
            try connection.query("""
                SELECT \(Self.statementColumns), lines, segments, days, review_tickets, sources, draft_token FROM statements WHERE id = $1
                """, [id]).first
        }
        guard let row, var statement = try Self.statement(row) else { return nil }
        statement.lines = try Self.decode([LineJSON].self, row.json("lines")).map(\.line)
        statement.segments = try Self.decode([SegmentJSON].self, row.json("segments")).compactMap(\.segment)
        statement.days = try Self.decode([DayJSON].self, row.json("days")).compactMap(\.day)
        statement.tickets = try Self.decode([TicketJSON].self, row.json("review_tickets")).map(\.ticket)
        var reference: SourcesReference?
        if let text = row.json("sources"), let named = try Self.decodeIfPresent(SourcesJSON.self, text) {
            reference = SourcesReference(token: named.token, count: named.count, chunks: named.chunks)
        }
        return StoredStatement(statement: statement, sources: reference, draftToken: row.string("draft_token"))
    }

    public func sources(statementID: String, token: String) throws -> StoredSources {
        try pool.withConnection { connection in
            var found = StoredSources(chunks: 0, sources: [])
            try connection.forEachBatch("""
                SELECT aggregates FROM statement_sources WHERE statement_id = $1 AND token = $2 ORDER BY chunk
                """, [statementID, token], batchSize: 8) { rows in
                for row in rows {
                    found.chunks += 1
                    found.sources += try Self.decode([SourceJSON].self, row.json("aggregates")).compactMap(\.source)
                }
            }
            return found
        }
    }

    public func statements(month: String?, limit: Int) throws -> [Statement] {
        var params: [any PostgresBindable] = [limit]
        var condition = ""
        if let month {
            params.append(month)
            condition = "WHERE month = $2"
        }
        let rows = try pool.withConnection { connection in
            try connection.query("""
                SELECT \(Self.statementColumns) FROM statements \(condition) ORDER BY month DESC, scope_key, version DESC LIMIT $1
                """, params)
        }
        return try rows.compactMap(Self.statement)
    }

    public func freeze(id: String, draftToken: String?, frozenAt: EpochMillis, by: String, exports: [Statement.Export]) throws -> Bool {
        let exportsJSON = try Self.json(Self.exports(exports))
        return try pool.withConnection { connection in
            try connection.execute("""
                UPDATE statements SET status = 'frozen', frozen_at = $2::timestamptz, frozen_by = $3, exports = $4::jsonb, draft_token = NULL
                WHERE id = $1 AND status = 'draft' AND draft_token IS NOT DISTINCT FROM $5
                """, [id, PostgresTimestamp(millis: frozenAt), by, PostgresJSON(exportsJSON), draftToken]) == 1
        }
    }

    // MARK: Exports

    public func keepExport(statementID: String, format: StatementFormat, sha256: String, bytes: [UInt8]) throws {
        try pool.withConnection { connection in
            try connection.execute("""
                INSERT INTO statement_exports (id, statement_id, format, sha256, bytes, data)
                VALUES ($1, $2, $3, $4, $5::bigint, decode($6, 'hex'))
                ON CONFLICT (id) DO NOTHING
                """, [StatementStore.exportID(statementID, format, sha256), statementID, format.rawValue, sha256, bytes.count,
                      Self.hex(bytes)])
        }
    }

    public func keptExport(statementID: String, format: StatementFormat, sha256: String) throws -> KeptExport? {
        let row = try pool.withConnection { connection in
            try connection.query("SELECT encode(data, 'hex') AS data FROM statement_exports WHERE id = $1",
                                 [StatementStore.exportID(statementID, format, sha256)]).first
        }
        guard let row else { return nil }
        return KeptExport(data: row.string("data").flatMap(Self.bytes(hex:)))
    }

    // MARK: Rows and JSON

    static func wh(_ units: Int64) -> Double { Double(units) / Double(FixedPoint.energyScale) }
    static func money(_ units: Int64?) -> Double? { units.map { Double($0) / Double(FixedPoint.moneyScale) } }

    /// A figure that is not a number (never written by the worker) reads as text rather than
    /// failing the whole statement, as on MongoDB, where a double holds it.
    static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return encoder
    }

    static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.nonConformingFloatDecodingStrategy = .convertFromString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return decoder
    }

    static func json<T: Encodable>(_ value: T) throws -> String {
        String(decoding: try encoder().encode(value), as: UTF8.self)
    }

    static func decode<T: Decodable>(_ type: [T].Type, _ text: String?) throws -> [T] {
        guard let text else { return [] }
        return try decoder().decode(type, from: Data(text.utf8))
    }

    static func decodeIfPresent<T: Decodable>(_ type: T.Type, _ text: String?) throws -> T? {
        guard let text, text != "null" else { return nil }
        return try decoder().decode(type, from: Data(text.utf8))
    }

    static func exports(_ list: [Statement.Export]) -> [String: ExportJSON] {
        Dictionary(list.map { ($0.format.rawValue, ExportJSON(sha256: $0.sha256, bytes: $0.bytes)) }) { $1 }
    }

    /// The statement of a row, without lines, days, segments, tickets and sources (the list's
    /// columns); nil for a row that is not one (as MongoDB's reader skips such a document).
    static func statement(_ row: PostgresRow) throws -> Statement? {
        guard let id = row.string("id"), let month = row.string("month"),
              let scopeJSON = try decodeIfPresent(ScopeJSON.self, row.json("scope")),
              let scope = StatementScope(kind: scopeJSON.kind, name: scopeJSON.name),
              let version = row.int("version"), let status = row.string("status").flatMap(StatementStatus.init),
              let created = row.millis("created_at") else { return nil }
        let coverage = try decodeIfPresent(CoverageJSON.self, row.json("coverage"))
        let exported = try decodeIfPresent([String: ExportJSON].self, row.json("exports")) ?? [:]
        var exports: [Statement.Export] = []
        for format in StatementFormat.allCases {
            guard let e = exported[format.rawValue] else { continue }
            exports.append(Statement.Export(format: format, sha256: e.sha256, bytes: e.bytes))
        }
        return Statement(
            id: id, month: month, scope: scope, classrooms: try decodeIfPresent([String].self, row.json("classrooms")) ?? [],
            version: version, status: status, currency: row.string("currency"), timeZone: row.string("time_zone") ?? "UTC",
            createdAt: created, frozenAt: row.millis("frozen_at"), frozenBy: row.string("frozen_by"),
            lines: [], days: [], segments: [],
            energy: FixedPoint.energy(row.double("energy_wh") ?? 0), cost: row.double("cost").map(FixedPoint.money),
            unpriced: FixedPoint.energy(row.double("unpriced_wh") ?? 0),
            coverage: coverage?.coverage ?? Statement.Coverage(daysInMonth: 0, deviceDays: 0, mean: 0, lowest: 0, confidence: [:]),
            tickets: [], sources: [], exports: exports)
    }

    /// A daily aggregate as a statement reads it (`StatementDocuments.day`, from a row).
    static func day(_ row: PostgresRow) throws -> StatementDay? {
        guard let id = row.string("id"), let date = row.string("date").flatMap(CivilDate.init), let name = row.string("esp32_name") else { return nil }
        let energy = row.double("energy_wh") ?? 0, unpriced = row.double("unpriced_wh") ?? 0
        let cost = row.double("cost")
        let stored = try decodeIfPresent([AggregateSegmentJSON].self, row.json("cost_segments"))
        var segments: [CostSegment] = stored?.compactMap { s in
            guard let version = s.costVersionID else { return nil }
            return CostSegment(costVersionID: version, costPerKwh: s.costPerKwh ?? .nan, energyWh: s.energyWh ?? 0, cost: s.cost ?? 0)
        } ?? []
        // An aggregate from before cost_segments counts as one segment of its versions.
        if stored == nil, energy - unpriced > 0 {
            let ids = try decodeIfPresent([String].self, row.json("cost_version_ids")) ?? []
            if !ids.isEmpty {
                segments = [CostSegment(costVersionID: ids.joined(separator: "+"), costPerKwh: .nan, energyWh: energy - unpriced, cost: cost ?? 0)]
            }
        }
        return StatementDay(aggregateID: id, version: row.int64("version") ?? 0, date: date, esp32Name: name,
                            classroom: row.string("classroom") ?? DeviceInfo.unassignedClassroom, energyWh: energy, cost: cost,
                            currency: row.string("currency"), unpricedWh: unpriced, coverage: row.double("coverage") ?? 0,
                            confidence: confidence(try decodeIfPresent([String: Int].self, row.json("confidence"))), segments: segments)
    }

    /// Counts above zero, as the MongoDB reader keeps them.
    static func confidence(_ counts: [String: Int]?) -> [Confidence: Int] {
        var out: [Confidence: Int] = [:]
        for level in Confidence.allCases { if let n = counts?[level.rawValue], n > 0 { out[level] = n } }
        return out
    }

    static func confidenceJSON(_ counts: [Confidence: Int]) -> [String: Int] {
        Dictionary(uniqueKeysWithValues: Confidence.allCases.map { ($0.rawValue, counts[$0] ?? 0) })
    }

    static let hexDigits = Array("0123456789abcdef".utf8)

    static func hex(_ bytes: [UInt8]) -> String {
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            out.append(hexDigits[Int(byte >> 4)])
            out.append(hexDigits[Int(byte & 0x0F)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func bytes(hex text: String) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case 48...57: c - 48
            case 97...102: c - 87
            case 65...70: c - 55
            default: nil
            }
        }
        var out = [UInt8]()
        out.reserveCapacity(digits.count / 2)
        var i = 0
        while i < digits.count {
            guard let high = value(digits[i]), let low = value(digits[i + 1]) else { return nil }
            out.append(high << 4 | low)
            i += 2
        }
        return out
    }
}

// MARK: The jsonb columns, with the MongoDB documents' field names (nulls written, as there)

extension PostgresStatementStorage {
    struct ScopeJSON: Codable {
        var kind: String
        var name: String?

        init(_ scope: StatementScope) {
            kind = scope.kind
            name = scope.name
        }

        enum CodingKeys: String, CodingKey { case kind, name }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(kind, forKey: .kind)
            try c.encode(name, forKey: .name)
        }
    }

    struct SegmentJSON: Codable {
        var costVersionID: String?
        var costPerKwh: Double?
        var from: String?
        var to: String?
        var energyWh: Double?
        var cost: Double?

        enum CodingKeys: String, CodingKey {
            case from, to, cost
            case costVersionID = "cost_version_id", costPerKwh = "cost_per_kwh", energyWh = "energy_wh"
        }

        init(_ s: Statement.Segment) {
            costVersionID = s.costVersionID
            costPerKwh = s.costPerKwh
            from = s.from.description
            to = s.to.description
            energyWh = PostgresStatementStorage.wh(s.energy)
            cost = PostgresStatementStorage.money(s.cost)
        }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(costVersionID, forKey: .costVersionID)
            try c.encode(costPerKwh, forKey: .costPerKwh)
            try c.encode(from, forKey: .from)
            try c.encode(to, forKey: .to)
            try c.encode(energyWh, forKey: .energyWh)
            try c.encode(cost, forKey: .cost)
        }

        var segment: Statement.Segment? {
            guard let costVersionID, let from = from.flatMap(CivilDate.init), let to = to.flatMap(CivilDate.init) else { return nil }
            return Statement.Segment(costVersionID: costVersionID, costPerKwh: costPerKwh, from: from, to: to,
                                     energy: energyWh.map(FixedPoint.energy) ?? 0, cost: cost.map(FixedPoint.money) ?? 0)
        }
    }

    struct LineJSON: Codable {
        var esp32Name: String?
        var classroom: String?
        var energyWh: Double?
        var cost: Double?
        var unpricedWh: Double?
        var days: Int?
        var coverage: Double?
        var confidence: [String: Int]?
        var segments: [SegmentJSON]?

        enum CodingKeys: String, CodingKey {
            case classroom, cost, days, coverage, confidence, segments
            case esp32Name = "esp32_name", energyWh = "energy_wh", unpricedWh = "unpriced_wh"
        }

        init(_ line: Statement.Line) {
            esp32Name = line.esp32Name
            classroom = line.classroom
            energyWh = PostgresStatementStorage.wh(line.energy)
            cost = PostgresStatementStorage.money(line.cost)
            unpricedWh = PostgresStatementStorage.wh(line.unpriced)
            days = line.days
            coverage = line.coverage
            confidence = PostgresStatementStorage.confidenceJSON(line.confidence)
            segments = line.segments.map(SegmentJSON.init)
        }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(esp32Name, forKey: .esp32Name)
            try c.encode(classroom, forKey: .classroom)
            try c.encode(energyWh, forKey: .energyWh)
            try c.encode(cost, forKey: .cost)
            try c.encode(unpricedWh, forKey: .unpricedWh)
            try c.encode(days, forKey: .days)
            try c.encode(coverage, forKey: .coverage)
            try c.encode(confidence, forKey: .confidence)
            try c.encode(segments, forKey: .segments)
        }

        var line: Statement.Line {
            Statement.Line(esp32Name: esp32Name ?? "", classroom: classroom ?? "", energy: energyWh.map(FixedPoint.energy) ?? 0,
                           cost: cost.map(FixedPoint.money), unpriced: unpricedWh.map(FixedPoint.energy) ?? 0, days: days ?? 0,
                           coverage: coverage ?? 0, confidence: PostgresStatementStorage.confidence(confidence),
                           segments: (segments ?? []).compactMap(\.segment))
        }
    }

    struct DayJSON: Codable {
        var date: String?
        var energyWh: Double?
        var cost: Double?
        var devices: Int?

        enum CodingKeys: String, CodingKey {
            case date, cost, devices
            case energyWh = "energy_wh"
        }

        init(_ day: Statement.DayTotal) {
            date = day.date.description
            energyWh = PostgresStatementStorage.wh(day.energy)
            cost = PostgresStatementStorage.money(day.cost)
            devices = day.devices
        }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(date, forKey: .date)
            try c.encode(energyWh, forKey: .energyWh)
            try c.encode(cost, forKey: .cost)
            try c.encode(devices, forKey: .devices)
        }

        var day: Statement.DayTotal? {
            guard let date = date.flatMap(CivilDate.init) else { return nil }
            return Statement.DayTotal(date: date, energy: energyWh.map(FixedPoint.energy) ?? 0, cost: cost.map(FixedPoint.money),
                                      devices: devices ?? 0)
        }
    }

    struct CoverageJSON: Codable {
        var daysInMonth: Int?
        var deviceDays: Int?
        var mean: Double?
        var lowest: Double?
        var confidence: [String: Int]?

        enum CodingKeys: String, CodingKey {
            case mean, lowest, confidence
            case daysInMonth = "days_in_month", deviceDays = "device_days"
        }

        init(_ c: Statement.Coverage) {
            daysInMonth = c.daysInMonth
            deviceDays = c.deviceDays
            mean = c.mean
            lowest = c.lowest
            confidence = PostgresStatementStorage.confidenceJSON(c.confidence)
        }

        var coverage: Statement.Coverage {
            Statement.Coverage(daysInMonth: daysInMonth ?? 0, deviceDays: deviceDays ?? 0, mean: mean ?? 0, lowest: lowest ?? 0,
                               confidence: PostgresStatementStorage.confidence(confidence))
        }
    }

    struct TicketJSON: Codable {
        var id: String?
        var esp32Name: String?
        var date: String?
        var kind: String?
        var detail: String?

        enum CodingKeys: String, CodingKey {
            case id, date, kind, detail
            case esp32Name = "esp32_name"
        }

        init(_ t: Statement.Ticket) {
            id = t.id
            esp32Name = t.esp32Name
            date = t.date
            kind = t.kind
            detail = t.detail
        }

        var ticket: Statement.Ticket {
            Statement.Ticket(id: id ?? "", esp32Name: esp32Name ?? "", date: date ?? "", kind: kind ?? "", detail: detail ?? "")
        }
    }

    /// Where the statement's device-days are (`statement_sources`).
    struct SourcesJSON: Codable {
        var collection: String
        var token: String
        var count: Int
        var chunks: Int
    }

    struct ExportJSON: Codable {
        var sha256: String
        var bytes: Int
    }

    /// One device-day of a `statement_sources` chunk.
    struct SourceJSON: Codable {
        var id: String?
        var version: Int64?
        var date: String?
        var esp32Name: String?
        var energyWh: Double?
        var cost: Double?
        var costVersionIDs: [String]?

        enum CodingKeys: String, CodingKey {
            case id, version, date, cost
            case esp32Name = "esp32_name", energyWh = "energy_wh", costVersionIDs = "cost_version_ids"
        }

        init(_ s: Statement.Source) {
            id = s.aggregateID
            version = s.version
            date = s.date.description
            esp32Name = s.esp32Name
            energyWh = PostgresStatementStorage.wh(s.energy)
            cost = PostgresStatementStorage.money(s.cost)
            costVersionIDs = s.costVersionIDs
        }

        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(id, forKey: .id)
            try c.encode(version, forKey: .version)
            try c.encode(date, forKey: .date)
            try c.encode(esp32Name, forKey: .esp32Name)
            try c.encode(energyWh, forKey: .energyWh)
            try c.encode(cost, forKey: .cost)
            try c.encode(costVersionIDs, forKey: .costVersionIDs)
        }

        var source: Statement.Source? {
            guard let date = date.flatMap(CivilDate.init) else { return nil }
            return Statement.Source(aggregateID: id ?? "", version: version ?? 0, date: date, esp32Name: esp32Name ?? "",
                                    energy: energyWh.map(FixedPoint.energy) ?? 0, cost: cost.map(FixedPoint.money), costVersionIDs: costVersionIDs ?? [])
        }
    }

    /// An element of a daily aggregate's `cost_segments`.
    struct AggregateSegmentJSON: Decodable {
        var costVersionID: String?
        var costPerKwh: Double?
        var energyWh: Double?
        var cost: Double?

        enum CodingKeys: String, CodingKey {
            case cost
            case costVersionID = "cost_version_id", costPerKwh = "cost_per_kwh", energyWh = "energy_wh"
        }
    }
}
