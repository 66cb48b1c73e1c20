import AutoVoltCore
import AutoVoltMongo
import Foundation

/// A statement as stored in MongoDB's `statements`, and back (used by `MongoStatementStorage`;
/// PostgreSQL's rows hold the same fields, see `PostgresStatementStorage`). Figures are stored as
/// the decimal numbers people read (`energy_wh`, `cost`) and read back into the integer units
/// they were counted in, which round-trips exactly.
enum StatementDocuments {
    static func wh(_ units: Int64) -> BSON { .double(Double(units) / Double(FixedPoint.energyScale)) }
    static func money(_ units: Int64?) -> BSON { units.map { .double(Double($0) / Double(FixedPoint.moneyScale)) } ?? .null }
    static func energyUnits(_ value: BSON?) -> Int64 { value?.doubleValue.map(FixedPoint.energy) ?? 0 }
    static func moneyUnits(_ value: BSON?) -> Int64? { value?.doubleValue.map(FixedPoint.money) }

    static func confidence(_ counts: [Confidence: Int]) -> BSON {
        .document(BSONDocument(Confidence.allCases.map { ($0.rawValue, .int64(Int64(counts[$0] ?? 0))) }))
    }

    static func confidence(_ value: BSON?) -> [Confidence: Int] {
        var out: [Confidence: Int] = [:]
        for level in Confidence.allCases { if let n = value?.documentValue?[level.rawValue]?.intValue, n > 0 { out[level] = n } }
        return out
    }

    static func segment(_ s: Statement.Segment) -> BSON {
        [
            "cost_version_id": .string(s.costVersionID), "cost_per_kwh": s.costPerKwh.map { .double($0) } ?? .null,
            "from": .string(s.from.description), "to": .string(s.to.description), "energy_wh": wh(s.energy), "cost": money(s.cost),
        ]
    }

    static func segment(_ doc: BSONDocument) -> Statement.Segment? {
        guard let id = doc["cost_version_id"]?.stringValue, let from = doc["from"]?.stringValue.flatMap(CivilDate.init),
              let to = doc["to"]?.stringValue.flatMap(CivilDate.init) else { return nil }
        return .init(costVersionID: id, costPerKwh: doc["cost_per_kwh"]?.doubleValue, from: from, to: to,
                     energy: energyUnits(doc["energy_wh"]), cost: moneyUnits(doc["cost"]) ?? 0)
    }

    /// Device-days per `statement_sources` document: about 250 bytes each, so well under 1 MB.
    static let sourcesPerChunk = 2000

    static func sourceChunkCount(_ count: Int) -> Int { (count + sourcesPerChunk - 1) / sourcesPerChunk }

    static func sourceDocument(_ source: Statement.Source) -> BSON {
        [
            "id": .string(source.aggregateID), "version": .int64(source.version), "date": .string(source.date.description),
            "esp32_name": .string(source.esp32Name), "energy_wh": wh(source.energy), "cost": money(source.cost),
            "cost_version_ids": .array(source.costVersionIDs.map { .string($0) }),
        ]
    }

    /// The statement's sources in `statement_sources` documents, under the token its document
    /// names: a draft generated again writes a new token, and a replaced token is never named again.
    static func sourceChunks(_ s: Statement, token: String) -> [BSONDocument] {
        stride(from: 0, to: s.sources.count, by: sourcesPerChunk).enumerated().map { index, start in
            [
                "_id": .string("\(s.id)|\(token)|\(index)"), "statement_id": .string(s.id), "token": .string(token), "chunk": .int64(Int64(index)),
                "aggregates": .array(s.sources[start..<min(start + sourcesPerChunk, s.sources.count)].map(sourceDocument)),
            ]
        }
    }

    /// The statement as stored; its sources go to `sourceChunks(s, token:)`.
    static func document(_ s: Statement, sourcesToken: String) -> BSONDocument {
        [
            "_id": .string(s.id),
            "month": .string(s.month),
            "scope": ["kind": .string(s.scope.kind), "name": s.scope.name.map { .string($0) } ?? .null],
            "scope_key": .string(scopeKey(s.scope)),
            "classrooms": .array(s.classrooms.map { .string($0) }),
            "version": .int64(Int64(s.version)),
            "status": .string(s.status.rawValue),
            "currency": s.currency.map { .string($0) } ?? .null,
            "time_zone": .string(s.timeZone),
            "created_at": .millis(s.createdAt),
            "frozen_at": s.frozenAt.map { .millis($0) } ?? .null,
            "frozen_by": s.frozenBy.map { .string($0) } ?? .null,
            "energy_wh": wh(s.energy),
            "cost": money(s.cost),
            "unpriced_wh": wh(s.unpriced),
            "lines": .array(s.lines.map { line in
                [
                    "esp32_name": .string(line.esp32Name), "classroom": .string(line.classroom), "energy_wh": wh(line.energy),
                    "cost": money(line.cost), "unpriced_wh": wh(line.unpriced), "days": .int64(Int64(line.days)),
                    "coverage": .double(line.coverage), "confidence": confidence(line.confidence),
                    "segments": .array(line.segments.map(segment)),
                ]
            }),
            "segments": .array(s.segments.map(segment)),
            "days": .array(s.days.map { day in
                ["date": .string(day.date.description), "energy_wh": wh(day.energy), "cost": money(day.cost), "devices": .int64(Int64(day.devices))]
            }),
            "coverage": [
                "days_in_month": .int64(Int64(s.coverage.daysInMonth)), "device_days": .int64(Int64(s.coverage.deviceDays)),
                "mean": .double(s.coverage.mean), "lowest": .double(s.coverage.lowest), "confidence": confidence(s.coverage.confidence),
            ],
            "review_tickets": .array(s.tickets.map { t in
                ["id": .string(t.id), "esp32_name": .string(t.esp32Name), "date": .string(t.date), "kind": .string(t.kind), "detail": .string(t.detail)]
            }),
            // The device-days it rests on are kept beside it (`statement_sources`): one per device
            // and day, they pass MongoDB's 16 MB document limit near 2,000 boards.
            "sources": ["collection": .string(StatementStore.sourcesCollection), "token": .string(sourcesToken),
                        "count": .int64(Int64(s.sources.count)), "chunks": .int64(Int64(sourceChunkCount(s.sources.count)))],
            "exports": exports(s.exports),
        ]
    }

    static func exports(_ list: [Statement.Export]) -> BSON {
        .document(BSONDocument(list.map { ($0.format.rawValue, ["sha256": .string($0.sha256), "bytes": .int64(Int64($0.bytes))]) }))
    }

    /// "campus", "classroom:CSE-301", "group:CSE": one field to find a scope's versions by.
    static func scopeKey(_ scope: StatementScope) -> String { scope.name.map { "\(scope.kind):\($0)" } ?? scope.kind }

    static func statement(_ doc: BSONDocument) -> Statement? {
        guard let id = doc["_id"]?.stringValue, let month = doc["month"]?.stringValue,
              let scopeDoc = doc["scope"]?.documentValue, let kind = scopeDoc["kind"]?.stringValue,
              let scope = StatementScope(kind: kind, name: scopeDoc["name"]?.stringValue),
              let version = doc["version"]?.intValue, let status = doc["status"]?.stringValue.flatMap(StatementStatus.init),
              let created = AnalyticsQueries.millis(doc["created_at"]) else { return nil }
        func docs(_ key: String) -> [BSONDocument] { doc[key]?.arrayValue?.compactMap(\.documentValue) ?? [] }
        let lines: [Statement.Line] = docs("lines").map(line)
        let days: [Statement.DayTotal] = docs("days").compactMap { day in
            guard let date = day["date"]?.stringValue.flatMap(CivilDate.init) else { return nil }
            return Statement.DayTotal(date: date, energy: energyUnits(day["energy_wh"]), cost: moneyUnits(day["cost"]),
                                      devices: day["devices"]?.intValue ?? 0)
        }
        let c = doc["coverage"]?.documentValue
        let coverage = Statement.Coverage(daysInMonth: c?["days_in_month"]?.intValue ?? 0, deviceDays: c?["device_days"]?.intValue ?? 0,
                                          mean: c?["mean"]?.doubleValue ?? 0, lowest: c?["lowest"]?.doubleValue ?? 0,
                                          confidence: confidence(c?["confidence"]))
        let tickets: [Statement.Ticket] = docs("review_tickets").map { t in
            Statement.Ticket(id: t["id"]?.stringValue ?? "", esp32Name: t["esp32_name"]?.stringValue ?? "", date: t["date"]?.stringValue ?? "",
                             kind: t["kind"]?.stringValue ?? "", detail: t["detail"]?.stringValue ?? "")
        }
        // Statements stored before the sources moved beside them hold them inline; the others'
        // are read by the store (`StatementStore.sources`).
        let sources: [Statement.Source] = docs("aggregates").compactMap(source)
        var exports: [Statement.Export] = []
        for format in StatementFormat.allCases {
            guard let e = doc["exports"]?.documentValue?[format.rawValue]?.documentValue, let sha = e["sha256"]?.stringValue else { continue }
            exports.append(Statement.Export(format: format, sha256: sha, bytes: e["bytes"]?.intValue ?? 0))
        }
        let classrooms: [String] = doc["classrooms"]?.arrayValue?.compactMap(\.stringValue) ?? []
        return Statement(
            id: id, month: month, scope: scope, classrooms: classrooms,
            version: version, status: status, currency: doc["currency"]?.stringValue, timeZone: doc["time_zone"]?.stringValue ?? "UTC",
            createdAt: created, frozenAt: AnalyticsQueries.millis(doc["frozen_at"]), frozenBy: doc["frozen_by"]?.stringValue,
            lines: lines, days: days, segments: docs("segments").compactMap(segment),
            energy: energyUnits(doc["energy_wh"]), cost: moneyUnits(doc["cost"]), unpriced: energyUnits(doc["unpriced_wh"]),
            coverage: coverage, tickets: tickets, sources: sources, exports: exports)
    }

    static func line(_ line: BSONDocument) -> Statement.Line {
        let segments: [Statement.Segment] = line["segments"]?.arrayValue?.compactMap(\.documentValue).compactMap(segment) ?? []
        return Statement.Line(esp32Name: line["esp32_name"]?.stringValue ?? "", classroom: line["classroom"]?.stringValue ?? "",
                              energy: energyUnits(line["energy_wh"]), cost: moneyUnits(line["cost"]), unpriced: energyUnits(line["unpriced_wh"]),
                              days: line["days"]?.intValue ?? 0, coverage: line["coverage"]?.doubleValue ?? 0,
                              confidence: confidence(line["confidence"]), segments: segments)
    }

    static func source(_ a: BSONDocument) -> Statement.Source? {
        guard let date = a["date"]?.stringValue.flatMap(CivilDate.init) else { return nil }
        let ids: [String] = a["cost_version_ids"]?.arrayValue?.compactMap(\.stringValue) ?? []
        return Statement.Source(aggregateID: a["id"]?.stringValue ?? "", version: a["version"]?.int64Value ?? 0, date: date,
                                esp32Name: a["esp32_name"]?.stringValue ?? "", energy: energyUnits(a["energy_wh"]),
                                cost: moneyUnits(a["cost"]), costVersionIDs: ids)
    }

    /// A daily aggregate as a statement reads it. Aggregates computed before `cost_segments`
    /// existed count as one segment of their versions (its rate looked up when there is one).
    static func day(_ doc: BSONDocument) -> StatementDay? {
        guard let id = doc["_id"]?.stringValue, let date = doc["date"]?.stringValue.flatMap(CivilDate.init),
              let name = doc["esp32_name"]?.stringValue else { return nil }
        let energy = doc["energy_wh"]?.doubleValue ?? 0, unpriced = doc["unpriced_wh"]?.doubleValue ?? 0
        let cost = doc["cost"]?.doubleValue
        var segments: [CostSegment] = doc["cost_segments"]?.arrayValue?.compactMap(\.documentValue).compactMap { s in
            guard let version = s["cost_version_id"]?.stringValue else { return nil }
            return CostSegment(costVersionID: version, costPerKwh: s["cost_per_kwh"]?.doubleValue ?? .nan,
                               energyWh: s["energy_wh"]?.doubleValue ?? 0, cost: s["cost"]?.doubleValue ?? 0)
        } ?? []
        if doc["cost_segments"] == nil, energy - unpriced > 0 {
            let ids = doc["cost_version_ids"]?.arrayValue?.compactMap(\.stringValue) ?? []
            if !ids.isEmpty {
                segments = [CostSegment(costVersionID: ids.joined(separator: "+"), costPerKwh: .nan, energyWh: energy - unpriced, cost: cost ?? 0)]
            }
        }
        return StatementDay(aggregateID: id, version: doc["version"]?.int64Value ?? 0, date: date, esp32Name: name,
                            classroom: doc["classroom"]?.stringValue ?? DeviceInfo.unassignedClassroom, energyWh: energy, cost: cost,
                            currency: doc["currency"]?.stringValue, unpricedWh: unpriced, coverage: doc["coverage"]?.doubleValue ?? 0,
                            confidence: confidence(doc["confidence"]), segments: segments)
    }

    static let dayProjection: BSONDocument = [
        "date": 1, "esp32_name": 1, "classroom": 1, "energy_wh": 1, "cost": 1, "currency": 1, "unpriced_wh": 1, "coverage": 1,
        "confidence": 1, "cost_segments": 1, "cost_version_ids": 1, "version": 1,
    ]
}
