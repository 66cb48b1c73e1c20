import Foundation

/// Monthly statements (issue 12): the fixed point a bill rests on. Pure: built from the daily
/// aggregates of a month, compared, and written as CSV here; stored and exported elsewhere.
///
/// Figures are counted in integers so that a statement's totals are exactly the sum of its lines
/// and of the aggregates it rests on, in any order: energy in milliwatt-hours, money in 1/10,000
/// of the currency (what the aggregates store, `FixedPoint`).
public enum FixedPoint {
    public static let energyScale: Int64 = 1_000
    public static let moneyScale: Int64 = 10_000

    /// Wh as milliwatt-hours.
    public static func energy(_ wh: Double) -> Int64 { units(wh, scale: energyScale) }
    /// A money amount as 1/10,000 of the currency.
    public static func money(_ amount: Double) -> Int64 { units(amount, scale: moneyScale) }

    /// No real device-day comes near 10^9 (Wh or currency); a stored value beyond it, or not a
    /// number, must not trap the worker: it is clamped (NaN counts as 0), and the sum of the
    /// largest statement a document can hold of such values still fits an Int64.
    static let limit = 1e9

    static func units(_ value: Double, scale: Int64) -> Int64 {
        guard value.isFinite else { return value.isNaN ? 0 : (value > 0 ? Int64(limit) * scale : -Int64(limit) * scale) }
        return Int64((min(max(value, -limit), limit) * Double(scale)).rounded())
    }

    /// `units / scale` as decimal text with `decimals` places (at most the scale's), rounding
    /// half away from zero; exact, with a dot, whatever the locale.
    public static func text(_ units: Int64, scale: Int64, decimals: Int) -> String {
        var scaleDigits = 0, s = scale
        while s > 1 { s /= 10; scaleDigits += 1 }
        let drop = max(0, scaleDigits - decimals)
        var divisor: Int64 = 1
        for _ in 0..<drop { divisor *= 10 }
        let magnitude = units.magnitude
        let rounded = (magnitude + UInt64(divisor) / 2) / UInt64(divisor)
        let kept = UInt64(scale / divisor)
        let whole = rounded / kept, fraction = rounded % kept
        let places = scaleDigits - drop
        var out = (units < 0 && rounded > 0 ? "-" : "") + String(whole)
        if places > 0 {
            let digits = String(fraction)
            out += "." + String(repeating: "0", count: places - digits.count) + digits
        }
        return out
    }

    public static func wh(_ units: Int64) -> String { text(units, scale: energyScale, decimals: 3) }
    public static func kwh(_ units: Int64) -> String { text(units, scale: energyScale * 1000, decimals: 3) }
    public static func moneyText(_ units: Int64, decimals: Int = 4) -> String { text(units, scale: moneyScale, decimals: decimals) }

    /// Rounds `parts` to whole units so that they add up to `total` exactly: each is rounded,
    /// and what rounding lost or gained goes to the largest part.
    public static func apportion(total: Int64, parts: [Double], scale: Int64) -> [Int64] {
        var units = parts.map { Self.units($0, scale: scale) }
        guard let largest = parts.indices.max(by: { abs(parts[$0]) < abs(parts[$1]) }) else { return [] }
        units[largest] += total - units.reduce(0, +)
        return units
    }
}

/// What a statement covers.
public enum StatementScope: Sendable, Hashable, CustomStringConvertible {
    case campus
    case classroom(String)
    /// Classrooms named together in the registry (`[[group]]`), for example a department.
    case group(String)

    public var kind: String {
        switch self {
        case .campus: "campus"
        case .classroom: "classroom"
        case .group: "group"
        }
    }

    public var name: String? {
        switch self {
        case .campus: nil
        case .classroom(let name), .group(let name): name
        }
    }

    public init?(kind: String, name: String?) {
        switch (kind, name) {
        case ("campus", _): self = .campus
        case ("classroom", let name?): self = .classroom(name)
        case ("group", let name?): self = .group(name)
        default: return nil
        }
    }

    /// "Campus", "Classroom CSE-301", "Group CSE".
    public var description: String {
        switch self {
        case .campus: "Campus"
        case .classroom(let name): "Classroom \(name)"
        case .group(let name): "Group \(name)"
        }
    }
}

public enum StatementStatus: String, Sendable, Codable { case draft, frozen }

/// A statement's export formats.
public enum StatementFormat: String, Sendable, CaseIterable {
    case csv, pdf, xlsx

    public var contentType: String {
        switch self {
        case .csv: "text/csv; charset=utf-8"
        case .pdf: "application/pdf"
        case .xlsx: "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
        }
    }
}

/// One daily aggregate as a statement reads it.
public struct StatementDay: Sendable, Equatable {
    public var aggregateID: String
    public var version: Int64
    public var date: CivilDate
    public var esp32Name: String
    public var classroom: String
    public var energyWh: Double
    /// nil: some of the day's energy had no tariff.
    public var cost: Double?
    public var currency: String?
    public var unpricedWh: Double
    public var coverage: Double
    public var confidence: [Confidence: Int]
    public var segments: [CostSegment]

    public init(aggregateID: String, version: Int64, date: CivilDate, esp32Name: String, classroom: String, energyWh: Double,
                cost: Double?, currency: String?, unpricedWh: Double = 0, coverage: Double, confidence: [Confidence: Int] = [:],
                segments: [CostSegment]) {
        self.aggregateID = aggregateID
        self.version = version
        self.date = date
        self.esp32Name = esp32Name
        self.classroom = classroom
        self.energyWh = energyWh
        self.cost = cost
        self.currency = currency
        self.unpricedWh = unpricedWh
        self.coverage = coverage
        self.confidence = confidence
        self.segments = segments
    }
}

public struct Statement: Sendable, Equatable {
    /// Energy priced by one tariff version over a stretch of the month.
    public struct Segment: Sendable, Equatable {
        public var costVersionID: String
        /// nil for an aggregate computed before segments were stored, priced by several versions.
        public var costPerKwh: Double?
        public var from: CivilDate
        public var to: CivilDate
        public var energy: Int64
        public var cost: Int64

        public init(costVersionID: String, costPerKwh: Double?, from: CivilDate, to: CivilDate, energy: Int64, cost: Int64) {
            self.costVersionID = costVersionID
            self.costPerKwh = costPerKwh
            self.from = from
            self.to = to
            self.energy = energy
            self.cost = cost
        }
    }

    public struct Line: Sendable, Equatable {
        public var esp32Name: String
        public var classroom: String
        public var energy: Int64
        /// nil when some energy had no tariff.
        public var cost: Int64?
        public var unpriced: Int64
        public var days: Int
        /// Mean share of the month's days covered by readings.
        public var coverage: Double
        public var confidence: [Confidence: Int]
        public var segments: [Segment]

        public init(esp32Name: String, classroom: String, energy: Int64, cost: Int64?, unpriced: Int64, days: Int, coverage: Double, confidence: [Confidence: Int], segments: [Segment]) {
            self.esp32Name = esp32Name
            self.classroom = classroom
            self.energy = energy
            self.cost = cost
            self.unpriced = unpriced
            self.days = days
            self.coverage = coverage
            self.confidence = confidence
            self.segments = segments
        }
    }

    public struct DayTotal: Sendable, Equatable {
        public var date: CivilDate
        public var energy: Int64
        public var cost: Int64?
        public var devices: Int

        public init(date: CivilDate, energy: Int64, cost: Int64?, devices: Int) {
            self.date = date
            self.energy = energy
            self.cost = cost
            self.devices = devices
        }
    }

    /// A daily aggregate the statement rests on, with the figures it read.
    public struct Source: Sendable, Equatable {
        public var aggregateID: String
        public var version: Int64
        public var date: CivilDate
        public var esp32Name: String
        public var energy: Int64
        public var cost: Int64?
        public var costVersionIDs: [String]

        public init(aggregateID: String, version: Int64, date: CivilDate, esp32Name: String, energy: Int64, cost: Int64?, costVersionIDs: [String]) {
            self.aggregateID = aggregateID
            self.version = version
            self.date = date
            self.esp32Name = esp32Name
            self.energy = energy
            self.cost = cost
            self.costVersionIDs = costVersionIDs
        }
    }

    public struct Ticket: Sendable, Equatable {
        public var id: String
        public var esp32Name: String
        public var date: String
        public var kind: String
        public var detail: String

        public init(id: String, esp32Name: String, date: String, kind: String, detail: String) {
            self.id = id
            self.esp32Name = esp32Name
            self.date = date
            self.kind = kind
            self.detail = detail
        }
    }

    public struct Coverage: Sendable, Equatable {
        public var daysInMonth: Int
        /// Device-days with an aggregate.
        public var deviceDays: Int
        /// Mean over the lines, and the lowest line.
        public var mean: Double
        public var lowest: Double
        public var confidence: [Confidence: Int]

        public init(daysInMonth: Int, deviceDays: Int, mean: Double, lowest: Double, confidence: [Confidence: Int]) {
            self.daysInMonth = daysInMonth
            self.deviceDays = deviceDays
            self.mean = mean
            self.lowest = lowest
            self.confidence = confidence
        }
    }

    public struct Export: Sendable, Equatable {
        public var format: StatementFormat
        public var sha256: String
        public var bytes: Int

        public init(format: StatementFormat, sha256: String, bytes: Int) {
            self.format = format
            self.sha256 = sha256
            self.bytes = bytes
        }
    }

    public var id: String
    public var month: String
    public var scope: StatementScope
    /// The classrooms the scope stood for when generated (a group's members; empty for the campus).
    public var classrooms: [String]
    public var version: Int
    public var status: StatementStatus
    public var currency: String?
    public var timeZone: String
    public var createdAt: EpochMillis
    public var frozenAt: EpochMillis?
    public var frozenBy: String?
    public var lines: [Line]
    public var days: [DayTotal]
    public var segments: [Segment]
    public var energy: Int64
    public var cost: Int64?
    public var unpriced: Int64
    public var coverage: Coverage
    public var tickets: [Ticket]
    public var sources: [Source]
    public var exports: [Export]

    public init(id: String, month: String, scope: StatementScope, classrooms: [String], version: Int, status: StatementStatus, currency: String?, timeZone: String, createdAt: EpochMillis, frozenAt: EpochMillis?, frozenBy: String?, lines: [Line], days: [DayTotal], segments: [Segment], energy: Int64, cost: Int64?, unpriced: Int64, coverage: Coverage, tickets: [Ticket], sources: [Source], exports: [Export]) {
        self.id = id
        self.month = month
        self.scope = scope
        self.classrooms = classrooms
        self.version = version
        self.status = status
        self.currency = currency
        self.timeZone = timeZone
        self.createdAt = createdAt
        self.frozenAt = frozenAt
        self.frozenBy = frozenBy
        self.lines = lines
        self.days = days
        self.segments = segments
        self.energy = energy
        self.cost = cost
        self.unpriced = unpriced
        self.coverage = coverage
        self.tickets = tickets
        self.sources = sources
        self.exports = exports
    }

    /// `2026-11.campus.v1`, `2026-11.classroom.CSE-301.v2`: readable, and unique per (month, scope, version).
    public static func id(month: String, scope: StatementScope, version: Int) -> String {
        ([month, scope.kind] + (scope.name.map { [$0] } ?? []) + ["v\(version)"]).joined(separator: ".")
    }

    /// `YYYY-MM` with a real month, or nil.
    public static func parseMonth(_ text: String) -> (year: Int, month: Int)? {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard parts.count == 2, parts[0].count == 4, parts[1].count == 2, parts.allSatisfy({ $0.allSatisfy(\.isASCIIDigit) }),
              let y = Int(parts[0]), let m = Int(parts[1]),
              (1...12).contains(m), y >= 1970 else { return nil }
        return (y, m)
    }

    /// The local dates of a month, first and last.
    public static func dates(ofMonth text: String) -> (first: CivilDate, last: CivilDate)? {
        guard let (y, m) = parseMonth(text) else { return nil }
        return (CivilDate(year: y, month: m, day: 1), CivilDate(year: y, month: m, day: CivilDate.daysInMonth(year: y, month: m)))
    }

    /// The month before the one `date` lies in.
    public static func previousMonth(of date: CivilDate) -> String {
        let (y, m) = date.month == 1 ? (date.year - 1, 12) : (date.year, date.month - 1)
        return CivilDate(year: y, month: m, day: 1).description.prefix(7).description
    }
}

/// Folds a month's daily aggregates, in any order and in batches, into a statement. Holds one
/// accumulator per device and the list of sources, never the aggregates themselves.
public struct StatementBuilder: Sendable {
    public let month: String
    public let daysInMonth: Int
    private var lines: [String: Statement.Line] = [:]
    private var dayTotals: [CivilDate: (energy: Int64, cost: Int64?, devices: Int)] = [:]
    private var coverageSums: [String: Double] = [:]
    private var latestDate: [String: CivilDate] = [:]
    private var sources: [Statement.Source] = []
    private var currencies: [String] = []
    /// Rates of tariff versions, for aggregates stored before `cost_segments` existed.
    private let rates: [String: Double]

    public init(month: String, rates: [String: Double] = [:]) {
        self.month = month
        daysInMonth = Statement.dates(ofMonth: month).map { $0.last.day } ?? 31
        self.rates = rates
    }

    public mutating func add(_ day: StatementDay) {
        let energy = FixedPoint.energy(day.energyWh)
        let cost = day.cost.map(FixedPoint.money)
        let unpriced = FixedPoint.energy(day.unpricedWh)
        let unknownCost = cost == nil && energy != 0
        var line = lines[day.esp32Name] ?? Statement.Line(esp32Name: day.esp32Name, classroom: day.classroom, energy: 0, cost: 0,
                                                          unpriced: 0, days: 0, coverage: 0, confidence: [:], segments: [])
        line.energy += energy
        line.cost = unknownCost ? nil : line.cost.map { $0 + (cost ?? 0) }
        line.unpriced += unpriced
        line.days += 1
        if latestDate[day.esp32Name].map({ day.date > $0 }) ?? true {
            latestDate[day.esp32Name] = day.date
            line.classroom = day.classroom  // the classroom of its latest day, as the monthly aggregate does
        }
        for (level, count) in day.confidence { line.confidence[level, default: 0] += count }
        for segment in Self.segments(of: day, energy: energy, unpriced: unpriced, cost: cost, rates: rates) {
            Self.merge(segment, into: &line.segments)
        }
        lines[day.esp32Name] = line
        coverageSums[day.esp32Name, default: 0] += day.coverage
        var total = dayTotals[day.date] ?? (0, 0, 0)
        total.energy += energy
        total.cost = unknownCost ? nil : total.cost.map { $0 + (cost ?? 0) }
        total.devices += 1
        dayTotals[day.date] = total
        if let currency = day.currency, !currencies.contains(currency) { currencies.append(currency) }
        sources.append(.init(aggregateID: day.aggregateID, version: day.version, date: day.date, esp32Name: day.esp32Name,
                             energy: energy, cost: cost, costVersionIDs: day.segments.map(\.costVersionID)))
    }

    /// A day's priced energy per tariff version, in units that add up to the day's figures.
    static func segments(of day: StatementDay, energy: Int64, unpriced: Int64, cost: Int64?, rates: [String: Double]) -> [Statement.Segment] {
        guard !day.segments.isEmpty else { return [] }
        let energies = FixedPoint.apportion(total: energy - unpriced, parts: day.segments.map(\.energyWh), scale: FixedPoint.energyScale)
        let costs = cost.map { FixedPoint.apportion(total: $0, parts: day.segments.map(\.cost), scale: FixedPoint.moneyScale) }
            ?? day.segments.map { FixedPoint.money($0.cost) }
        return day.segments.indices.map { i in
            let s = day.segments[i]
            return Statement.Segment(costVersionID: s.costVersionID, costPerKwh: s.costPerKwh.isNaN ? rates[s.costVersionID] : s.costPerKwh,
                                     from: day.date, to: day.date, energy: energies[i], cost: costs[i])
        }
    }

    static func merge(_ segment: Statement.Segment, into list: inout [Statement.Segment]) {
        if let i = list.firstIndex(where: { $0.costVersionID == segment.costVersionID && $0.costPerKwh == segment.costPerKwh }) {
            list[i].energy += segment.energy
            list[i].cost += segment.cost
            list[i].from = min(list[i].from, segment.from)
            list[i].to = max(list[i].to, segment.to)
        } else {
            list.append(segment)
        }
    }

    /// The statement, lines ordered by classroom then device, days by date.
    public func finish(id: String, scope: StatementScope, classrooms: [String], version: Int, timeZone: String,
                       createdAt: EpochMillis, tickets: [Statement.Ticket]) -> Statement {
        var ordered = lines.values.sorted { ($0.classroom, $0.esp32Name) < ($1.classroom, $1.esp32Name) }
        for i in ordered.indices {
            ordered[i].coverage = (coverageSums[ordered[i].esp32Name] ?? 0) / Double(max(daysInMonth, 1))
            ordered[i].segments.sort { ($0.from, $0.costVersionID) < ($1.from, $1.costVersionID) }
        }
        var segments: [Statement.Segment] = []
        for line in ordered { for segment in line.segments { Self.merge(segment, into: &segments) } }
        segments.sort { ($0.from, $0.costVersionID) < ($1.from, $1.costVersionID) }
        var confidence: [Confidence: Int] = [:]
        for line in ordered { for (level, count) in line.confidence { confidence[level, default: 0] += count } }
        let energy = ordered.reduce(0) { $0 + $1.energy }
        let cost = ordered.reduce(Int64?.some(0)) { sum, line in sum.flatMap { s in line.cost.map { s + $0 } } }
        let coverages = ordered.map(\.coverage)
        return Statement(
            id: id, month: month, scope: scope, classrooms: classrooms, version: version, status: .draft,
            currency: currencies.first, timeZone: timeZone, createdAt: createdAt, frozenAt: nil, frozenBy: nil,
            lines: ordered,
            days: dayTotals.map { Statement.DayTotal(date: $0.key, energy: $0.value.energy, cost: $0.value.cost, devices: $0.value.devices) }
                .sorted { $0.date < $1.date },
            segments: segments, energy: energy, cost: cost, unpriced: ordered.reduce(0) { $0 + $1.unpriced },
            coverage: .init(daysInMonth: daysInMonth, deviceDays: sources.count,
                            mean: coverages.isEmpty ? 0 : coverages.reduce(0, +) / Double(coverages.count),
                            lowest: coverages.min() ?? 0, confidence: confidence),
            tickets: tickets,
            sources: sources.sorted { ($0.date, $0.esp32Name) < ($1.date, $1.esp32Name) },
            exports: [])
    }
}

/// What changed between a statement and another version, or the current figures: per device,
/// with the reason when it can be told.
public struct StatementDiff: Sendable, Equatable {
    public enum Reason: String, Sendable, Codable {
        /// Readings of the month that arrived after the older statement was made.
        case lateReadings = "late_readings"
        /// Another tariff version priced the same energy.
        case tariffChange = "tariff_change"
        /// The figures moved with no new readings: a rebuild of the ledger or a recalculation.
        case rebuild
        case addedToScope = "added_to_scope"
        case removedFromScope = "removed_from_scope"
    }

    public struct Change: Sendable, Equatable {
        public var esp32Name: String
        public var classroom: String
        public var oldEnergy: Int64?
        public var newEnergy: Int64?
        public var oldCost: Int64?
        public var newCost: Int64?
        public var dates: [CivilDate]
        public var reasons: [Reason]
        public var lateReadings: Int
        public var oldCostVersionIDs: [String]
        public var newCostVersionIDs: [String]
    }

    public var from: String
    public var to: String
    public var oldEnergy: Int64
    public var newEnergy: Int64
    public var oldCost: Int64?
    public var newCost: Int64?
    public var changes: [Change]

    /// `lateReadings`: per device, readings of the month received after `old` was created.
    public static func compare(_ old: Statement, _ new: Statement, lateReadings: [String: Int]) -> StatementDiff {
        let oldLines = Dictionary(old.lines.map { ($0.esp32Name, $0) }, uniquingKeysWith: { a, _ in a })
        let newLines = Dictionary(new.lines.map { ($0.esp32Name, $0) }, uniquingKeysWith: { a, _ in a })
        func byDay(_ s: Statement) -> [String: [CivilDate: Statement.Source]] {
            var out: [String: [CivilDate: Statement.Source]] = [:]
            for source in s.sources { out[source.esp32Name, default: [:]][source.date] = source }
            return out
        }
        let oldDays = byDay(old), newDays = byDay(new)
        var changes: [Change] = []
        for name in Set(oldLines.keys).union(newLines.keys).sorted() {
            let a = oldLines[name], b = newLines[name]
            guard a?.energy != b?.energy || a?.cost != b?.cost else { continue }
            let before = oldDays[name] ?? [:], after = newDays[name] ?? [:]
            let dates = Set(before.keys).union(after.keys).filter { date in
                before[date]?.energy != after[date]?.energy || before[date]?.cost != after[date]?.cost
                    || before[date]?.costVersionIDs != after[date]?.costVersionIDs
            }.sorted()
            let oldIDs = Self.versionIDs(a), newIDs = Self.versionIDs(b)
            var reasons: [Reason] = []
            let late = lateReadings[name] ?? 0
            if a == nil { reasons.append(.addedToScope) }
            if b == nil { reasons.append(.removedFromScope) }
            if let a, let b {
                if a.energy != b.energy { reasons.append(late > 0 ? .lateReadings : .rebuild) }
                if oldIDs != newIDs || (a.energy == b.energy && a.cost != b.cost) { reasons.append(.tariffChange) }
            }
            changes.append(Change(esp32Name: name, classroom: b?.classroom ?? a?.classroom ?? "", oldEnergy: a?.energy, newEnergy: b?.energy,
                                  oldCost: a?.cost, newCost: b?.cost, dates: dates, reasons: reasons, lateReadings: late,
                                  oldCostVersionIDs: oldIDs, newCostVersionIDs: newIDs))
        }
        return StatementDiff(from: old.id, to: new.id, oldEnergy: old.energy, newEnergy: new.energy, oldCost: old.cost, newCost: new.cost,
                             changes: changes)
    }

    static func versionIDs(_ line: Statement.Line?) -> [String] {
        Array(Set(line?.segments.map(\.costVersionID) ?? [])).sorted()
    }
}

/// The statement as CSV (RFC 4180): one header row, a row per device line, then the total row;
/// CRLF line ends, dot decimals, fields quoted only when they must be.
public enum StatementCSV {
    public static let header = ["statement_id", "month", "scope", "version", "status", "row", "esp32_name", "classroom",
                                "energy_wh", "energy_kwh", "cost", "currency", "unpriced_wh", "days", "coverage", "tariffs"]

    public static func render(_ s: Statement) -> [UInt8] {
        let scope = s.scope.name.map { "\(s.scope.kind):\($0)" } ?? s.scope.kind
        func row(_ kind: String, _ name: String, _ classroom: String, _ energy: Int64, _ cost: Int64?, _ unpriced: Int64,
                 _ days: Int, _ coverage: Double, _ segments: [Statement.Segment]) -> [String] {
            [s.id, s.month, scope, String(s.version), s.status.rawValue, kind, name, classroom,
             FixedPoint.wh(energy), FixedPoint.kwh(energy), cost.map { FixedPoint.moneyText($0) } ?? "", s.currency ?? "",
             FixedPoint.wh(unpriced), String(days), String(format: "%.4f", locale: Locale(identifier: "en_US_POSIX"), coverage),
             segments.map(tariffText).joined(separator: "; ")]
        }
        var rows = [header]
        for line in s.lines {
            rows.append(row("line", line.esp32Name, line.classroom, line.energy, line.cost, line.unpriced, line.days, line.coverage, line.segments))
        }
        rows.append(row("total", "", "", s.energy, s.cost, s.unpriced, s.coverage.deviceDays, s.coverage.mean, s.segments))
        var out = ""
        for fields in rows { out += fields.map(field).joined(separator: ",") + "\r\n" }
        return Array(out.utf8)
    }

    /// `v7@7.5 2026-11-01..2026-11-15 (123.456 Wh)`.
    public static func tariffText(_ segment: Statement.Segment) -> String {
        let rate = segment.costPerKwh.map { "\($0)" } ?? "?"
        return "\(segment.costVersionID)@\(rate) \(segment.from)..\(segment.to) (\(FixedPoint.wh(segment.energy)) Wh)"
    }

    static func field(_ text: String) -> String {
        guard text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\r" || $0 == "\n" }) else { return text }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
