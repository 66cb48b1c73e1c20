import AutoVoltCore
import Foundation

/// A statement as the CLI's `--json` and the HTTP API show it: the stored document's fields,
/// times in local time with their offset, figures as decimal numbers.
public struct StatementJSON: Encodable, Sendable {
    let s: Statement
    let timeZone: TimeZone

    public init(_ statement: Statement, timeZone: TimeZone) {
        s = statement
        self.timeZone = timeZone
    }

    struct Key: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(_ s: String) { stringValue = s }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
    }

    static func wh(_ units: Int64) -> Double { Double(units) / Double(FixedPoint.energyScale) }
    static func money(_ units: Int64?) -> Double? { units.map { Double($0) / Double(FixedPoint.moneyScale) } }

    func local(_ millis: EpochMillis?) -> String? {
        millis.map { ISO8601.format($0, in: timeZone) }
    }

    struct SegmentJSON: Encodable {
        let segment: Statement.Segment
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(segment.costVersionID, forKey: Key("cost_version_id"))
            try c.encode(segment.costPerKwh, forKey: Key("cost_per_kwh"))
            try c.encode(segment.from.description, forKey: Key("from"))
            try c.encode(segment.to.description, forKey: Key("to"))
            try c.encode(StatementJSON.wh(segment.energy), forKey: Key("energy_wh"))
            try c.encode(StatementJSON.money(segment.cost), forKey: Key("cost"))
        }
    }

    static func confidence(_ counts: [Confidence: Int]) -> [String: Int] {
        Dictionary(uniqueKeysWithValues: Confidence.allCases.map { ($0.rawValue, counts[$0] ?? 0) })
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(s.id, forKey: Key("id"))
        try c.encode(s.month, forKey: Key("month"))
        try c.encode(["kind": s.scope.kind, "name": s.scope.name], forKey: Key("scope"))
        try c.encode(s.classrooms, forKey: Key("classrooms"))
        try c.encode(s.version, forKey: Key("version"))
        try c.encode(s.status.rawValue, forKey: Key("status"))
        try c.encode(s.currency, forKey: Key("currency"))
        try c.encode(s.timeZone, forKey: Key("time_zone"))
        try c.encode(local(s.createdAt), forKey: Key("created_at"))
        try c.encode(local(s.frozenAt), forKey: Key("frozen_at"))
        try c.encode(s.frozenBy, forKey: Key("frozen_by"))
        try c.encode(Self.wh(s.energy), forKey: Key("energy_wh"))
        try c.encode(Self.money(s.cost), forKey: Key("cost"))
        try c.encode(Self.wh(s.unpriced), forKey: Key("unpriced_wh"))
        try c.encode(s.segments.map(SegmentJSON.init), forKey: Key("segments"))
        try c.encode(s.lines.map(LineJSON.init), forKey: Key("lines"))
        try c.encode(s.days.map(DayJSON.init), forKey: Key("days"))
        try c.encode(CoverageJSON(coverage: s.coverage), forKey: Key("coverage"))
        try c.encode(s.tickets.map(TicketJSON.init), forKey: Key("review_tickets"))
        try c.encode(s.sources.map(SourceJSON.init), forKey: Key("aggregates"))
        try c.encode(Dictionary(uniqueKeysWithValues: s.exports.map { ($0.format.rawValue, ExportJSON(export: $0)) }), forKey: Key("exports"))
    }

    struct LineJSON: Encodable {
        let line: Statement.Line
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(line.esp32Name, forKey: Key("esp32_name"))
            try c.encode(line.classroom, forKey: Key("classroom"))
            try c.encode(StatementJSON.wh(line.energy), forKey: Key("energy_wh"))
            try c.encode(StatementJSON.money(line.cost), forKey: Key("cost"))
            try c.encode(StatementJSON.wh(line.unpriced), forKey: Key("unpriced_wh"))
            try c.encode(line.days, forKey: Key("days"))
            try c.encode(line.coverage, forKey: Key("coverage"))
            try c.encode(StatementJSON.confidence(line.confidence), forKey: Key("confidence"))
            try c.encode(line.segments.map(SegmentJSON.init), forKey: Key("segments"))
        }
    }

    struct DayJSON: Encodable {
        let day: Statement.DayTotal
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(day.date.description, forKey: Key("date"))
            try c.encode(StatementJSON.wh(day.energy), forKey: Key("energy_wh"))
            try c.encode(StatementJSON.money(day.cost), forKey: Key("cost"))
            try c.encode(day.devices, forKey: Key("devices"))
        }
    }

    struct CoverageJSON: Encodable {
        let coverage: Statement.Coverage
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(coverage.daysInMonth, forKey: Key("days_in_month"))
            try c.encode(coverage.deviceDays, forKey: Key("device_days"))
            try c.encode(coverage.mean, forKey: Key("mean"))
            try c.encode(coverage.lowest, forKey: Key("lowest"))
            try c.encode(StatementJSON.confidence(coverage.confidence), forKey: Key("confidence"))
        }
    }

    struct TicketJSON: Encodable {
        let ticket: Statement.Ticket
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(ticket.id, forKey: Key("id"))
            try c.encode(ticket.esp32Name, forKey: Key("esp32_name"))
            try c.encode(ticket.date, forKey: Key("date"))
            try c.encode(ticket.kind, forKey: Key("kind"))
            try c.encode(ticket.detail, forKey: Key("detail"))
        }
    }

    struct SourceJSON: Encodable {
        let source: Statement.Source
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(source.aggregateID, forKey: Key("id"))
            try c.encode(source.version, forKey: Key("version"))
            try c.encode(source.date.description, forKey: Key("date"))
            try c.encode(source.esp32Name, forKey: Key("esp32_name"))
            try c.encode(StatementJSON.wh(source.energy), forKey: Key("energy_wh"))
            try c.encode(StatementJSON.money(source.cost), forKey: Key("cost"))
            try c.encode(source.costVersionIDs, forKey: Key("cost_version_ids"))
        }
    }

    struct ExportJSON: Encodable {
        let export: Statement.Export
        func encode(to encoder: Encoder) throws {
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(export.sha256, forKey: Key("sha256"))
            try c.encode(export.bytes, forKey: Key("bytes"))
        }
    }
}

/// A diff as JSON: per device, old and new figures, the dates that moved and why.
public struct StatementDiffJSON: Encodable, Sendable {
    let diff: StatementDiff

    public init(_ diff: StatementDiff) { self.diff = diff }

    public func encode(to encoder: Encoder) throws {
        typealias Key = StatementJSON.Key
        var c = encoder.container(keyedBy: Key.self)
        try c.encode(diff.from, forKey: Key("from"))
        try c.encode(diff.to, forKey: Key("to"))
        try c.encode(StatementJSON.wh(diff.oldEnergy), forKey: Key("old_energy_wh"))
        try c.encode(StatementJSON.wh(diff.newEnergy), forKey: Key("new_energy_wh"))
        try c.encode(StatementJSON.money(diff.oldCost), forKey: Key("old_cost"))
        try c.encode(StatementJSON.money(diff.newCost), forKey: Key("new_cost"))
        try c.encode(diff.changes.map(ChangeJSON.init), forKey: Key("changes"))
    }

    struct ChangeJSON: Encodable {
        let change: StatementDiff.Change
        func encode(to encoder: Encoder) throws {
            typealias Key = StatementJSON.Key
            var c = encoder.container(keyedBy: Key.self)
            try c.encode(change.esp32Name, forKey: Key("esp32_name"))
            try c.encode(change.classroom, forKey: Key("classroom"))
            try c.encode(change.oldEnergy.map(StatementJSON.wh), forKey: Key("old_energy_wh"))
            try c.encode(change.newEnergy.map(StatementJSON.wh), forKey: Key("new_energy_wh"))
            try c.encode(StatementJSON.money(change.oldCost), forKey: Key("old_cost"))
            try c.encode(StatementJSON.money(change.newCost), forKey: Key("new_cost"))
            try c.encode(change.dates.map(\.description), forKey: Key("dates"))
            try c.encode(change.reasons.map(\.rawValue), forKey: Key("reasons"))
            try c.encode(change.lateReadings, forKey: Key("late_readings"))
            try c.encode(change.oldCostVersionIDs, forKey: Key("old_cost_version_ids"))
            try c.encode(change.newCostVersionIDs, forKey: Key("new_cost_version_ids"))
        }
    }
}
