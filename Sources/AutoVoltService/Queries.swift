import AutoVoltCore
import AutoVoltMongo
import Foundation

// The read queries of the contract (section 7 paths, section 1 CLI commands): `summary`,
// `timeline`, `device-breakdown` and `monthly`. The CLI and the HTTP API parse their parameters
// with the same functions here and print the same JSON (`AnalyticsQueries.json`).

/// A bad query parameter: HTTP 400 `{"error": message}`, CLI exit 64 with the message.
public struct AnalyticsParameterError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Encodes an optional as JSON `null` instead of leaving the key out.
@propertyWrapper
public struct NullEncoded<Value: Encodable & Sendable & Equatable>: Encodable, Sendable, Equatable {
    public var wrappedValue: Value?
    public init(wrappedValue: Value?) { self.wrappedValue = wrappedValue }
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        if let wrappedValue { try container.encode(wrappedValue) } else { try container.encodeNil() }
    }
}

// MARK: - Results (snake_case JSON)

public struct ConfidenceCounts: Encodable, Sendable, Equatable {
    public var high = 0
    public var medium = 0
    public var low = 0

    public init(high: Int = 0, medium: Int = 0, low: Int = 0) {
        self.high = high
        self.medium = medium
        self.low = low
    }
}

public struct SummaryResult: Encodable, Sendable, Equatable {
    /// The classroom, or `"campus"`.
    public var scope: String
    /// `YYYY-MM-DD` or `YYYY-MM`, as asked.
    public var period: String
    /// `day` or `month`.
    public var periodType: String
    public var startDate: String
    public var endDate: String
    public var kwh: Double
    public var energyWh: Double
    /// Null when some of the energy has no known cost (no tariff, or several currencies).
    @NullEncoded public var cost: Double?
    @NullEncoded public var currency: String?
    /// Devices with a daily aggregate in the period.
    public var devices: Int
    /// Mean daily coverage of those devices over the period's days so far (a day without an
    /// aggregate counts as uncovered).
    public var coverage: Double
    /// Days of the period that have aggregates.
    public var days: Int
    /// Days of the period that have begun (the denominator of `coverage`).
    public var daysElapsed: Int
    /// Per classroom; only for the campus.
    public var byClassroom: [ClassroomSummary]?

    enum CodingKeys: String, CodingKey {
        case scope, period, periodType = "period_type", startDate = "start_date", endDate = "end_date", kwh
        case energyWh = "energy_wh", cost, currency, devices, coverage, days, daysElapsed = "days_elapsed"
        case byClassroom = "by_classroom"
    }
}

public struct ClassroomSummary: Encodable, Sendable, Equatable {
    public var classroom: String
    public var kwh: Double
    public var energyWh: Double
    @NullEncoded public var cost: Double?
    @NullEncoded public var currency: String?
    public var devices: Int
    public var coverage: Double
    public var days: Int

    enum CodingKeys: String, CodingKey {
        case classroom, kwh, energyWh = "energy_wh", cost, currency, devices, coverage, days
    }
}

public struct TimelineResult: Encodable, Sendable, Equatable {
    public var scope: String
    /// The range, ISO 8601 UTC instants, [start, end).
    public var start: String
    public var end: String
    public var timeZone: String
    /// `hour` or `day`.
    public var bucket: String
    public var kwh: Double
    public var energyWh: Double
    public var buckets: [TimelineBucket]

    enum CodingKeys: String, CodingKey {
        case scope, start, end, timeZone = "time_zone", bucket, kwh, energyWh = "energy_wh", buckets
    }
}

public struct TimelineBucket: Encodable, Sendable, Equatable {
    /// The local hour (`2026-11-01T10:00+05:30`) or date (`2026-11-01`).
    public var label: String
    /// The part of the bucket inside the range, ISO 8601 UTC instants.
    public var start: String
    public var end: String
    public var energyWh: Double
    public var kwh: Double

    enum CodingKeys: String, CodingKey { case label, start, end, energyWh = "energy_wh", kwh }
}

public struct DeviceBreakdownResult: Encodable, Sendable, Equatable {
    public var date: String
    public var scope: String
    public var kwh: Double
    public var energyWh: Double
    @NullEncoded public var cost: Double?
    @NullEncoded public var currency: String?
    public var devices: [DeviceDayBreakdown]

    enum CodingKeys: String, CodingKey { case date, scope, kwh, energyWh = "energy_wh", cost, currency, devices }
}

public struct DeviceDayBreakdown: Encodable, Sendable, Equatable {
    public var esp32Name: String
    public var classroom: String
    /// `aggregate` (energy, cost, coverage and confidence from `daily_aggregates`) or `ledger`
    /// (no aggregate yet: figures from the live ledger entries, cost null).
    public var source: String
    public var kwh: Double
    public var energyWh: Double
    @NullEncoded public var cost: Double?
    @NullEncoded public var currency: String?
    public var coverage: Double
    public var confidence: ConfidenceCounts
    public var entries: Int
    @NullEncoded public var complete: Bool?
    /// Billable energy of the live ledger entries of the day: what the switch shares add up to.
    public var ledgerWh: Double
    public var switches: [SwitchBreakdown]
    public var unattributed: Unattributed

    enum CodingKeys: String, CodingKey {
        case esp32Name = "esp32_name", classroom, source, kwh, energyWh = "energy_wh", cost, currency, coverage
        case confidence, entries, complete, ledgerWh = "ledger_wh", switches, unattributed
    }
}

public struct SwitchBreakdown: Encodable, Sendable, Equatable {
    public var name: String
    @NullEncoded public var ratedW: Double?
    public var energyWh: Double
    public var kwh: Double
    /// Fraction of the device's ledger energy of the day.
    public var share: Double
    /// Hours it was on (by the start readings of the day's intervals).
    public var onHours: Double

    enum CodingKeys: String, CodingKey {
        case name, ratedW = "rated_w", energyWh = "energy_wh", kwh, share, onHours = "on_hours"
    }
}

public struct Unattributed: Encodable, Sendable, Equatable {
    public var energyWh: Double
    public var kwh: Double
    public var share: Double

    enum CodingKeys: String, CodingKey { case energyWh = "energy_wh", kwh, share }
}

public struct MonthlyResult: Encodable, Sendable, Equatable {
    public var month: String
    public var previousMonth: String
    public var scope: String
    public var total: MonthComparison
    public var classrooms: [MonthComparison]

    enum CodingKeys: String, CodingKey { case month, previousMonth = "previous_month", scope, total, classrooms }
}

public struct MonthComparison: Encodable, Sendable, Equatable {
    /// The classroom, or the scope for the total.
    public var classroom: String
    public var current: MonthFigures
    public var previous: MonthFigures
    public var change: MonthChange
}

public struct MonthFigures: Encodable, Sendable, Equatable {
    public var kwh: Double
    public var energyWh: Double
    @NullEncoded public var cost: Double?
    @NullEncoded public var currency: String?
    public var devices: Int

    enum CodingKeys: String, CodingKey { case kwh, energyWh = "energy_wh", cost, currency, devices }
}

public struct MonthChange: Encodable, Sendable, Equatable {
    public var kwh: Double
    public var energyWh: Double
    /// Null when the previous month's energy is 0.
    @NullEncoded public var energyPercent: Double?
    /// Null when either month's cost is unknown.
    @NullEncoded public var cost: Double?
    @NullEncoded public var costPercent: Double?

    enum CodingKeys: String, CodingKey {
        case kwh, energyWh = "energy_wh", energyPercent = "energy_percent", cost, costPercent = "cost_percent"
    }
}

// MARK: - Queries

public enum AnalyticsQueries {
    /// The longest timeline range, in days, and the longest with hourly buckets.
    public static let maxTimelineDays = 93
    public static let maxHourlyTimelineDays = 31
    /// Up to this range, in days, a timeline defaults to hourly buckets.
    public static let hourlyDefaultDays = 2

    // MARK: Parameters

    public struct SummaryParameters: Sendable, Equatable {
        public var classroom: String?
        public var period: Breakdown.Period
    }

    public struct TimelineParameters: Sendable, Equatable {
        public var classroom: String?
        public var start: EpochMillis
        public var end: EpochMillis
        public var bucket: Breakdown.BucketSize
    }

    public struct DeviceBreakdownParameters: Sendable, Equatable {
        public var classroom: String?
        public var date: CivilDate
    }

    public struct MonthlyParameters: Sendable, Equatable {
        public var classroom: String?
        public var month: Breakdown.Month
    }

    static func given(_ text: String?) -> String? {
        guard let trimmed = text?.trimmingCharacters(in: .whitespaces), !trimmed.isEmpty else { return nil }
        return trimmed
    }

    /// `date`: `YYYY-MM-DD` (a local day) or `YYYY-MM` (a local month); `classroom` empty or
    /// absent means the campus.
    public static func summaryParameters(classroom: String?, date: String?) throws(AnalyticsParameterError) -> SummaryParameters {
        guard let date = given(date) else {
            throw AnalyticsParameterError("date is required: YYYY-MM-DD (a day) or YYYY-MM (a month)")
        }
        guard let period = Breakdown.Period(date) else {
            throw AnalyticsParameterError("date \"\(date)\" is not YYYY-MM-DD (a day) or YYYY-MM (a month)")
        }
        return SummaryParameters(classroom: given(classroom), period: period)
    }

    /// `start` and `end`: ISO 8601 instants with an offset, or local dates `YYYY-MM-DD` (a start
    /// date means its local midnight, an end date the end of that day). `bucket`: `hour` or
    /// `day`; by default hours up to two days, days beyond.
    public static func timelineParameters(classroom: String?, start: String?, end: String?, bucket: String?,
                                          timeZone: TimeZone) throws(AnalyticsParameterError) -> TimelineParameters {
        var calendar = LocalCalendar(timeZone: timeZone)
        let from = try bound(start, name: "start", isEnd: false, calendar: &calendar)
        let to = try bound(end, name: "end", isEnd: true, calendar: &calendar)
        guard from.millis < to.millis else {
            // An end date means the end of that day: reaching back to the start is "after" too.
            let empty = from.millis == to.millis && !to.isDate
            throw AnalyticsParameterError(empty ? "start equals end: the range is empty" : "start is after end")
        }
        let day: EpochMillis = 86_400_000
        let slack: EpochMillis = 3_600_000  // a daylight-saving day is 25 hours
        let size: Breakdown.BucketSize
        if let text = given(bucket) {
            guard let parsed = Breakdown.BucketSize(rawValue: text.lowercased()) else {
                throw AnalyticsParameterError("bucket \"\(text)\" is not hour or day")
            }
            size = parsed
        } else {
            size = to.millis - from.millis <= EpochMillis(hourlyDefaultDays) * day + slack ? .hour : .day
        }
        let limit = size == .hour ? maxHourlyTimelineDays : maxTimelineDays
        if to.millis - from.millis > EpochMillis(limit) * day + slack {
            let days = Double(to.millis - from.millis) / Double(day)
            throw AnalyticsParameterError(
                "the range is \(String(format: "%.1f", days)) days; at most \(limit) are allowed\(size == .hour ? " with hourly buckets (use bucket=day)" : "")")
        }
        return TimelineParameters(classroom: given(classroom), start: from.millis, end: to.millis, bucket: size)
    }

    static func bound(_ text: String?, name: String, isEnd: Bool,
                      calendar: inout LocalCalendar) throws(AnalyticsParameterError) -> (millis: EpochMillis, isDate: Bool) {
        let example = "an ISO 8601 instant such as 2026-11-01T10:00:00+05:30, or a local date YYYY-MM-DD"
        guard let text = given(text) else { throw AnalyticsParameterError("\(name) is required: \(example)") }
        if text.utf8.count == 10, case .day(let date)? = Breakdown.Period(text) {
            return (calendar.startOfDay(isEnd ? CivilDate(daysSinceEpoch: date.daysSinceEpoch + 1) : date), true)
        }
        if let millis = ISO8601.parseMillis(text) { return (millis, false) }
        // 2026-11-01T10:00+05:30 (no seconds, as the timeline's labels are written).
        let bytes = Array(text.utf8)
        if bytes.count > 16, bytes[13] == UInt8(ascii: ":"), bytes[16] != UInt8(ascii: ":"),
           let millis = ISO8601.parseMillis(String(decoding: bytes[..<16] + Array(":00".utf8) + bytes[16...], as: UTF8.self)) {
            return (millis, false)
        }
        if bytes.count >= 16, bytes.count <= 19, bytes[10] == UInt8(ascii: "T") || bytes[10] == UInt8(ascii: " ") {
            throw AnalyticsParameterError("\(name) \"\(text)\" has no UTC offset: add Z or +05:30 style, or give a date YYYY-MM-DD")
        }
        throw AnalyticsParameterError("\(name) \"\(text)\" is not \(example)")
    }

    public static func deviceBreakdownParameters(classroom: String?, date: String?) throws(AnalyticsParameterError) -> DeviceBreakdownParameters {
        guard let text = given(date) else { throw AnalyticsParameterError("date is required: a local date YYYY-MM-DD") }
        guard text.utf8.count == 10, case .day(let day)? = Breakdown.Period(text) else {
            throw AnalyticsParameterError("date \"\(text)\" is not a date YYYY-MM-DD")
        }
        return DeviceBreakdownParameters(classroom: given(classroom), date: day)
    }

    public static func monthlyParameters(classroom: String?, month: String?) throws(AnalyticsParameterError) -> MonthlyParameters {
        guard let text = given(month) else { throw AnalyticsParameterError("month is required: YYYY-MM") }
        guard let parsed = Breakdown.Month(text) else { throw AnalyticsParameterError("month \"\(text)\" is not YYYY-MM") }
        return MonthlyParameters(classroom: given(classroom), month: parsed)
    }

    // MARK: JSON

    /// The JSON of a result, as the HTTP API sends it and `--json` prints it.
    public static func json<T: Encodable>(_ value: T, pretty: Bool = false) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return (try? encoder.encode(value)) ?? Data(#"{"error":"the result could not be encoded"}"#.utf8)
    }

    // MARK: Helpers

    static let liveEntry: BSONDocument = ["$exists": false]

    static func scoped(_ filter: BSONDocument, _ classroom: String?) -> BSONDocument {
        var filter = filter
        if let classroom { filter["classroom"] = .string(classroom) }
        return filter
    }

    static func millis(_ value: BSON?) -> EpochMillis? {
        value?.dateValue.map { EpochMillis(($0.timeIntervalSince1970 * 1000).rounded()) }
    }


    static func wh(_ v: Double) -> Double { Breakdown.rounded(v, 3) }
    static func kwh(_ v: Double) -> Double { Breakdown.rounded(v / 1000, 6) }
    static func money(_ v: Double?) -> Double? { v.map { Breakdown.rounded($0, 4) } }
    static func fraction(_ v: Double) -> Double { Breakdown.rounded(v, 4) }

    /// Energy and cost summed over aggregate documents. The cost is unknown when a part with
    /// energy has none, or when the parts are in different currencies.
    struct CostSum {
        var energyWh = 0.0
        var cost = 0.0
        var costUnknown = false
        var currencies = Set<String>()

        mutating func add(_ doc: BSONDocument) {
            let energy = doc["energy_wh"]?.doubleValue ?? 0
            energyWh += energy
            if let c = doc["cost"]?.doubleValue {
                cost += c
            } else if energy > 0 || (doc["unpriced_wh"]?.doubleValue ?? 0) > 0 {
                costUnknown = true
            }
            if let currency = doc["currency"]?.stringValue { currencies.insert(currency) }
        }

        var costValue: Double? { costUnknown || currencies.count > 1 ? nil : cost }
        var currency: String? { currencies.count == 1 ? currencies.first : nil }
    }

    // MARK: summary

    /// Energy, cost and coverage of a day or a month, from `daily_aggregates` (a month is the sum
    /// of its days). Classroom totals are sums over the classroom's devices.
    public static func summary(client: MongoClient, config: WorkerConfig, parameters p: SummaryParameters,
                               now: EpochMillis? = nil) throws(MongoError) -> SummaryResult {
        let first = p.period.firstDay, last = p.period.lastDay
        let dateFilter: BSON = first == last ? .string(first.description)
            : ["$gte": .string(first.description), "$lte": .string(last.description)]
        let docs = try client.find(Collections.dailyAggregates, filter: scoped(["date": dateFilter], p.classroom),
                                   projection: ["date": 1, "esp32_name": 1, "classroom": 1, "energy_wh": 1, "cost": 1,
                                                "currency": 1, "coverage": 1, "unpriced_wh": 1])
        var calendar = LocalCalendar(timeZone: config.timeZone)
        let today = calendar.date(of: now ?? SystemClock.nowMillis())
        let latest = docs.compactMap { $0["date"]?.stringValue.flatMap(CivilDate.init) }.max()
        let elapsed = p.period.elapsedDays(today: today, latestData: latest)

        struct Group {
            var sum = CostSum()
            var devices = Set<String>()
            var dates = Set<String>()
            var coverage = 0.0
        }
        func add(_ doc: BSONDocument, to group: inout Group) {
            group.sum.add(doc)
            if let name = doc["esp32_name"]?.stringValue { group.devices.insert(name) }
            if let date = doc["date"]?.stringValue { group.dates.insert(date) }
            group.coverage += min(1, max(0, doc["coverage"]?.doubleValue ?? 0))
        }
        func meanCoverage(_ group: Group) -> Double {
            group.devices.isEmpty ? 0 : fraction(min(1, group.coverage / Double(group.devices.count * elapsed)))
        }
        var total = Group()
        var byClassroom: [String: Group] = [:]
        for doc in docs {
            add(doc, to: &total)
            add(doc, to: &byClassroom[doc["classroom"]?.stringValue ?? DeviceInfo.unassignedClassroom, default: Group()])
        }
        let classrooms: [ClassroomSummary]? = p.classroom != nil ? nil : byClassroom.keys.sorted().map { name in
            let g = byClassroom[name]!
            return ClassroomSummary(classroom: name, kwh: kwh(g.sum.energyWh), energyWh: wh(g.sum.energyWh),
                                    cost: money(g.sum.costValue), currency: g.sum.currency, devices: g.devices.count,
                                    coverage: meanCoverage(g), days: g.dates.count)
        }
        return SummaryResult(scope: p.classroom ?? "campus", period: p.period.description, periodType: p.period.kind,
                             startDate: first.description, endDate: last.description, kwh: kwh(total.sum.energyWh),
                             energyWh: wh(total.sum.energyWh), cost: money(total.sum.costValue), currency: total.sum.currency,
                             devices: total.devices.count, coverage: meanCoverage(total), days: total.dates.count,
                             daysElapsed: elapsed, byClassroom: classrooms)
    }

    // MARK: timeline

    /// Billable energy of the live ledger entries in local hour or day buckets over [start, end),
    /// each entry's energy spread over the buckets in proportion to time. Whole local days are
    /// summed by the database (an entry never crosses local midnight, so a day is the sum of its
    /// date's entries); only the partial days at the ends, and hourly buckets, read entries.
    public static func timeline(client: MongoClient, config: WorkerConfig, parameters p: TimelineParameters) throws(MongoError) -> TimelineResult {
        var calendar = LocalCalendar(timeZone: config.timeZone)
        let buckets = Breakdown.buckets(from: p.start, to: p.end, size: p.bucket, calendar: &calendar)
        var totals = [Double](repeating: 0, count: buckets.count)
        var wholeDays: [String: Int] = [:]
        var partialDays: [String] = []
        if p.bucket == .day {
            for (index, bucket) in buckets.enumerated() {
                let day = calendar.day(containing: bucket.start)
                if bucket.start == day.start && bucket.end == day.end {
                    wholeDays[bucket.label] = index
                } else {
                    partialDays.append(bucket.label)
                }
            }
        }
        if !wholeDays.isEmpty {
            let match = scoped(["date": ["$in": .array(wholeDays.keys.sorted().map { .string($0) })],
                                "superseded_by": .document(liveEntry), "billable": true], p.classroom)
            let groups = try client.aggregate(Collections.ledgers, pipeline: [
                ["$match": .document(match)],
                ["$group": ["_id": "$date", "energy_wh": ["$sum": "$delta_wh"]]],
            ])
            for group in groups {
                if let date = group["_id"]?.stringValue, let index = wholeDays[date] {
                    totals[index] += group["energy_wh"]?.doubleValue ?? 0
                }
            }
        }
        if p.bucket == .hour {
            try hourlyTotals(client: client, parameters: p, buckets: buckets, calendar: &calendar, into: &totals)
        } else if !partialDays.isEmpty {
            let filter = scoped(["date": ["$in": .array(partialDays.map { .string($0) })], "superseded_by": .document(liveEntry),
                                 "billable": true, "start_ts": ["$lt": .datetime(date(p.end))],
                                 "end_ts": ["$gte": .datetime(date(p.start))]], p.classroom)
            try spreadEntries(client: client, filter: filter, buckets: buckets, into: &totals) { _ in true }
        }
        let total = totals.reduce(0, +)
        return TimelineResult(
            scope: p.classroom ?? "campus", start: ISO8601.format(p.start), end: ISO8601.format(p.end),
            timeZone: config.timeZone.identifier, bucket: p.bucket.rawValue, kwh: kwh(total), energyWh: wh(total),
            buckets: zip(buckets, totals).map { bucket, energy in
                TimelineBucket(label: bucket.label, start: ISO8601.format(bucket.start), end: ISO8601.format(bucket.end),
                               energyWh: wh(energy), kwh: kwh(energy))
            })
    }

    static func date(_ millis: EpochMillis) -> Date { Date(timeIntervalSince1970: Double(millis) / 1000) }

    /// Live billable ledger entries matching `filter`, read in batches and spread over `buckets`;
    /// only the buckets `counts` accepts are added to `totals`. Memory: one batch.
    static func spreadEntries(client: MongoClient, filter: BSONDocument, buckets: [Breakdown.Bucket], into totals: inout [Double],
                              counts: (Int) -> Bool) throws(MongoError) {
        try client.forEachBatch(Collections.ledgers, filter: filter, projection: ["start_ts": 1, "end_ts": 1, "delta_wh": 1],
                                batchSize: 2000) { (docs) throws(MongoError) in
            let intervals = docs.compactMap { doc -> Breakdown.Interval? in
                guard let start = millis(doc["start_ts"]), let end = millis(doc["end_ts"]),
                      let energy = doc["delta_wh"]?.doubleValue else { return nil }
                return Breakdown.Interval(start: start, end: end, energyWh: energy)
            }
            for (index, energy) in Breakdown.spread(intervals, over: buckets).enumerated() where energy != 0 && counts(index) {
                totals[index] += energy
            }
        }
    }

    /// Hourly buckets from the daily aggregates' `hourly_wh` (one number per local hour, the
    /// entries split by time at hour boundaries exactly as `Breakdown.spread` splits them), so a
    /// campus month is one small document per device-day instead of millions of entries. The
    /// ledger is still read, in batches, where an aggregate cannot answer: device-days without an
    /// aggregate with `hourly_wh` (not aggregated yet, or aggregated before `hourly_wh` existed),
    /// device-days the ledger changed since (`ledger_dirty_days`), and the clipped hours at the
    /// ends of a range that does not start or end on a whole local hour.
    static func hourlyTotals(client: MongoClient, parameters p: TimelineParameters, buckets: [Breakdown.Bucket],
                             calendar: inout LocalCalendar, into totals: inout [Double]) throws(MongoError) {
        guard !buckets.isEmpty else { return }
        let firstDate = calendar.date(of: p.start), lastDate = calendar.date(of: p.end - 1)
        let dates = (firstDate.daysSinceEpoch...max(firstDate.daysSinceEpoch, lastDate.daysSinceEpoch)).map(CivilDate.init(daysSinceEpoch:))
        // The local hours of each date, and which buckets are such whole hours.
        var hoursOf: [String: [EpochMillis]] = [:]
        var hourEnd: [EpochMillis: EpochMillis] = [:]
        for day in dates {
            let start = calendar.startOfDay(day), end = calendar.startOfDay(CivilDate(daysSinceEpoch: day.daysSinceEpoch + 1))
            let hours = Aggregator.localHours(dayStart: start, dayEnd: end, calendar: &calendar)
            hoursOf[day.description] = hours
            for i in hours.indices.dropLast() { hourEnd[hours[i]] = hours[i + 1] }
        }
        var wholeBucket: [EpochMillis: Int] = [:]
        var clipped: [Int] = []
        for (index, bucket) in buckets.enumerated() {
            if hourEnd[bucket.start] == bucket.end { wholeBucket[bucket.start] = index } else { clipped.append(index) }
        }
        let dateRange: BSON = ["$gte": .string(firstDate.description), "$lte": .string(lastDate.description)]
        var dirty = Set<String>()
        try client.forEachBatch(LedgerStore.dirtyDaysCollection, filter: ["date": dateRange],
                                projection: ["esp32_name": 1, "date": 1]) { (docs) throws(MongoError) in
            for doc in docs {
                if let name = doc["esp32_name"]?.stringValue, let day = doc["date"]?.stringValue { dirty.insert("\(name)|\(day)") }
            }
        }
        // Whole hours from the aggregates that can answer for their device-day.
        var covered: [String: Set<String>] = [:]
        try client.forEachBatch(Collections.dailyAggregates, filter: scoped(["date": dateRange, "hourly_wh": ["$exists": true]], p.classroom),
                                projection: ["esp32_name": 1, "date": 1, "hourly_wh": 1], batchSize: 500) { (docs) throws(MongoError) in
            for doc in docs {
                guard let name = doc["esp32_name"]?.stringValue, let day = doc["date"]?.stringValue,
                      !dirty.contains("\(name)|\(day)"), let hours = hoursOf[day],
                      let values = doc["hourly_wh"]?.arrayValue, values.count == hours.count - 1 else { continue }
                let hourly = values.map { $0.doubleValue ?? .nan }
                guard !hourly.contains(where: \.isNaN) else { continue }
                covered[day, default: []].insert(name)
                for i in hourly.indices where hourly[i] != 0 {
                    if let index = wholeBucket[hours[i]] { totals[index] += hourly[i] }
                }
            }
        }
        let live: BSONDocument = ["superseded_by": .document(liveEntry), "billable": true,
                                  "start_ts": ["$lt": .datetime(date(p.end))], "end_ts": ["$gte": .datetime(date(p.start))]]
        let clippedSet = Set(clipped)
        // Whole hours of the device-days no aggregate answered for, from the ledger.
        for day in dates {
            var filter = live
            filter["date"] = .string(day.description)
            if let names = covered[day.description], !names.isEmpty {
                filter["esp32_name"] = ["$nin": .array(names.sorted().map { .string($0) })]
            }
            try spreadEntries(client: client, filter: scoped(filter, p.classroom), buckets: buckets, into: &totals) { !clippedSet.contains($0) }
        }
        // Clipped hours at the ends, from the ledger of every device.
        for index in clipped {
            let bucket = buckets[index]
            var filter: BSONDocument = ["superseded_by": .document(liveEntry), "billable": true,
                                        "start_ts": ["$lt": .datetime(date(bucket.end))], "end_ts": ["$gte": .datetime(date(bucket.start))]]
            filter["date"] = ["$gte": .string(calendar.date(of: bucket.start).description),
                              "$lte": .string(calendar.date(of: bucket.end - 1).description)]
            try spreadEntries(client: client, filter: scoped(filter, p.classroom), buckets: buckets, into: &totals) { $0 == index }
        }
    }

    // MARK: device-breakdown

    /// Devices whose day of entries device-breakdown holds at once.
    static let devicesPerRead = 20

    /// Per device of a local day: energy, cost, coverage and confidence (from its daily aggregate,
    /// or from the ledger when there is none yet), and its energy per switch: each live billable
    /// ledger interval's energy is shared among the switches on at its start reading in
    /// proportion to their `rated_w` (`Breakdown.switchShares`); what cannot be attributed is
    /// `unattributed`.
    public static func deviceBreakdown(client: MongoClient, config: WorkerConfig,
                                       parameters p: DeviceBreakdownParameters) throws(MongoError) -> DeviceBreakdownResult {
        let dateText = p.date.description
        let calendar = LocalCalendar(timeZone: config.timeZone)
        let dayStart = calendar.startOfDay(p.date)
        let dayEnd = calendar.startOfDay(CivilDate(daysSinceEpoch: p.date.daysSinceEpoch + 1))
        // One aggregate per device of the day, and the names of the devices with entries that day
        // (grouped by the database): both grow with the devices, not with the readings.
        var aggregateByDevice: [String: BSONDocument] = [:]
        try client.forEachBatch(Collections.dailyAggregates, filter: scoped(["date": .string(dateText)], p.classroom),
                                projection: ["hourly_wh": 0], batchSize: 500) { (docs) throws(MongoError) in
            for doc in docs { if let name = doc["esp32_name"]?.stringValue { aggregateByDevice[name] = doc } }
        }
        var names = Set(aggregateByDevice.keys)
        try client.aggregateBatches(Collections.ledgers, pipeline: [
            ["$match": .document(scoped(["date": .string(dateText), "superseded_by": .document(liveEntry)], p.classroom))],
            ["$group": ["_id": "$esp32_name"]],
        ]) { (docs) throws(MongoError) in
            for doc in docs { if let name = doc["_id"]?.stringValue { names.insert(name) } }
        }

        struct Entry {
            var start: EpochMillis
            var end: EpochMillis
            var energyWh: Double
            var billable: Bool
            var confidence: Confidence?
            var startEvent: String?
        }
        var total = CostSum()
        var devices: [DeviceDayBreakdown] = []
        // The entries (and their start readings' switch states) of a few devices at a time: a
        // device-day is at most a few thousand entries, so memory stays at `devicesPerRead` of them.
        let sortedNames = names.sorted()
        for first in stride(from: 0, to: sortedNames.count, by: Self.devicesPerRead) {
            let chunk = Array(sortedNames[first..<min(first + Self.devicesPerRead, sortedNames.count)])
            var byDevice: [String: (classroom: String, entries: [Entry])] = [:]
            try client.forEachBatch(
                Collections.ledgers,
                filter: scoped(["date": .string(dateText), "superseded_by": .document(liveEntry),
                                "esp32_name": ["$in": .array(chunk.map { .string($0) })]], p.classroom),
                projection: ["esp32_name": 1, "classroom": 1, "start_ts": 1, "end_ts": 1, "delta_wh": 1, "billable": 1,
                             "quality.confidence": 1, "source_events": 1], batchSize: 2000) { (docs) throws(MongoError) in
                for doc in docs {
                    guard let name = doc["esp32_name"]?.stringValue, let start = millis(doc["start_ts"]),
                          let end = millis(doc["end_ts"]) else { continue }
                    let entry = Entry(start: start, end: end, energyWh: doc["delta_wh"]?.doubleValue ?? 0,
                                      billable: doc["billable"]?.boolValue ?? false,
                                      confidence: doc["quality"]?.documentValue?["confidence"]?.stringValue.flatMap(Confidence.init(rawValue:)),
                                      startEvent: doc["source_events"]?.arrayValue?.first?.stringValue)
                    byDevice[name, default: (doc["classroom"]?.stringValue ?? DeviceInfo.unassignedClassroom, [])].entries.append(entry)
                }
            }

            // The switch state of each interval's start reading.
            let wanted = Set(byDevice.values.flatMap { $0.entries.filter { $0.billable && $0.energyWh > 0 }.compactMap(\.startEvent) })
            let states = try switchStates(client: client, hashes: wanted, devices: Array(byDevice.keys),
                                          from: dayStart - 3 * 3_600_000, to: dayEnd)

            for name in chunk {
                let ledger = byDevice[name]?.entries ?? []
                let info = config.devices.resolve(name)
                var switchTotals = Breakdown.SwitchTotals(switches: info.switches)
                for entry in ledger where entry.billable {
                    switchTotals.add(energyWh: entry.energyWh, durationMillis: entry.end - entry.start,
                                     state: entry.startEvent.flatMap { states[$0] })
                }
                let ledgerWh = switchTotals.totalWh
                func share(_ energy: Double) -> Double { ledgerWh > 0 ? fraction(energy / ledgerWh) : 0 }
                let switches = info.switches.indices.map { i in
                    SwitchBreakdown(name: info.switches[i].name, ratedW: info.switches[i].ratedW,
                                    energyWh: wh(switchTotals.energyWh[i]), kwh: kwh(switchTotals.energyWh[i]),
                                    share: share(switchTotals.energyWh[i]),
                                    onHours: Breakdown.rounded(Double(switchTotals.onMillis[i]) / 3_600_000, 3))
                }
                let unattributed = Unattributed(energyWh: wh(switchTotals.unattributedWh), kwh: kwh(switchTotals.unattributedWh),
                                                share: share(switchTotals.unattributedWh))
                var row: DeviceDayBreakdown
                if let doc = aggregateByDevice[name] {
                    total.add(doc)
                    let energy = doc["energy_wh"]?.doubleValue ?? 0
                    let counts = doc["confidence"]?.documentValue
                    row = DeviceDayBreakdown(
                        esp32Name: name, classroom: doc["classroom"]?.stringValue ?? byDevice[name]?.classroom ?? info.classroom,
                        source: "aggregate", kwh: kwh(energy), energyWh: wh(energy), cost: money(doc["cost"]?.doubleValue),
                        currency: doc["currency"]?.stringValue, coverage: fraction(doc["coverage"]?.doubleValue ?? 0),
                        confidence: ConfidenceCounts(high: counts?["high"]?.intValue ?? 0, medium: counts?["medium"]?.intValue ?? 0,
                                                     low: counts?["low"]?.intValue ?? 0),
                        entries: doc["entries"]?.intValue ?? ledger.count, complete: doc["complete"]?.boolValue,
                        ledgerWh: wh(ledgerWh), switches: switches, unattributed: unattributed)
                } else {
                    // Not aggregated yet: the same figures from the ledger (Breakdown.LedgerDay), with the cost unknown.
                    var day = Breakdown.LedgerDay()
                    for entry in ledger {
                        day.add(start: entry.start, end: entry.end, energyWh: entry.energyWh, billable: entry.billable,
                                confidence: entry.confidence, dayStart: dayStart, dayEnd: dayEnd)
                    }
                    total.add(["energy_wh": .double(day.energyWh), "cost": .null])
                    row = DeviceDayBreakdown(
                        esp32Name: name, classroom: byDevice[name]?.classroom ?? info.classroom, source: "ledger",
                        kwh: kwh(day.energyWh), energyWh: wh(day.energyWh), cost: nil, currency: nil,
                        coverage: fraction(day.coverage(dayStart: dayStart, dayEnd: dayEnd)),
                        confidence: ConfidenceCounts(high: day.high, medium: day.medium, low: day.low),
                        entries: day.entries, complete: nil, ledgerWh: wh(ledgerWh), switches: switches, unattributed: unattributed)
                }
                devices.append(row)
            }
        }
        devices.sort { ($0.classroom, $0.esp32Name) < ($1.classroom, $1.esp32Name) }
        return DeviceBreakdownResult(date: dateText, scope: p.classroom ?? "campus", kwh: kwh(total.energyWh),
                                     energyWh: wh(total.energyWh), cost: money(total.costValue), currency: total.currency,
                                     devices: devices)
    }

    /// `switch_state` of the events with these hashes. Reads the devices' events of the day (and
    /// a little before) by the `esp32_name, device_ts` index first; hashes not found there (an
    /// interval that began long before) are looked up by `event_hash`.
    static func switchStates(client: MongoClient, hashes: Set<String>, devices: [String], from: EpochMillis,
                             to: EpochMillis) throws(MongoError) -> [String: Breakdown.SwitchState] {
        guard !hashes.isEmpty else { return [:] }
        var states: [String: Breakdown.SwitchState] = [:]
        var found = Set<String>()
        func take(_ docs: [BSONDocument]) {
            for doc in docs {
                guard let hash = doc["event_hash"]?.stringValue, hashes.contains(hash) else { continue }
                found.insert(hash)
                if let state = switchState(doc["switch_state"]) { states[hash] = state }
            }
        }
        try client.forEachBatch(Collections.telemetryEvents,
                                filter: ["esp32_name": ["$in": .array(devices.sorted().map { .string($0) })],
                                         "device_ts": ["$gte": .datetime(Date(timeIntervalSince1970: Double(from) / 1000)),
                                                       "$lt": .datetime(Date(timeIntervalSince1970: Double(to) / 1000))]],
                                projection: ["event_hash": 1, "switch_state": 1], batchSize: 2000) { (docs) throws(MongoError) in take(docs) }
        let missing = hashes.subtracting(found).sorted()
        var index = 0
        while index < missing.count {
            let chunk = missing[index..<min(index + 500, missing.count)]
            take(try client.find(Collections.telemetryEvents, filter: ["event_hash": ["$in": .array(chunk.map { .string($0) })]],
                                 projection: ["event_hash": 1, "switch_state": 1]))
            index += 500
        }
        return states
    }

    /// `switch_state` as stored (array of 0/1 or booleans, or an object of name to boolean or
    /// 0/1); nil for anything else.
    static func switchState(_ value: BSON?) -> Breakdown.SwitchState? {
        func onOff(_ v: BSON) -> Bool? { v.boolValue ?? v.doubleValue.map { $0 != 0 } }
        switch value {
        case .array(let items)?:
            var out: [Bool] = []
            for item in items {
                guard let on = onOff(item) else { return nil }
                out.append(on)
            }
            return .positions(out)
        case .document(let doc)?:
            var out: [String: Bool] = [:]
            for (key, item) in doc {
                guard let on = onOff(item) else { return nil }
                out[key] = on
            }
            return .named(out)
        default:
            return nil
        }
    }

    // MARK: monthly

    /// Month over month per classroom, from `monthly_aggregates`: this month's and the previous
    /// month's energy and cost, and the change.
    public static func monthly(client: MongoClient, config: WorkerConfig, parameters p: MonthlyParameters) throws(MongoError) -> MonthlyResult {
        let current = p.month.description, previous = p.month.previous.description
        let docs = try client.find(Collections.monthlyAggregates,
                                   filter: scoped(["month": ["$in": [.string(current), .string(previous)]]], p.classroom),
                                   projection: ["month": 1, "esp32_name": 1, "classroom": 1, "energy_wh": 1, "cost": 1,
                                                "currency": 1, "unpriced_wh": 1])
        struct Side {
            var sum = CostSum()
            var devices = Set<String>()
        }
        var sides: [String: (current: Side, previous: Side)] = [:]
        var total = (current: Side(), previous: Side())
        for doc in docs {
            let classroom = doc["classroom"]?.stringValue ?? DeviceInfo.unassignedClassroom
            let name = doc["esp32_name"]?.stringValue ?? ""
            let isCurrent = doc["month"]?.stringValue == current
            func add(_ side: inout Side) {
                side.sum.add(doc)
                side.devices.insert(name)
            }
            if isCurrent {
                add(&sides[classroom, default: (Side(), Side())].current)
                add(&total.current)
            } else {
                add(&sides[classroom, default: (Side(), Side())].previous)
                add(&total.previous)
            }
        }
        func figures(_ side: Side) -> MonthFigures {
            MonthFigures(kwh: kwh(side.sum.energyWh), energyWh: wh(side.sum.energyWh), cost: money(side.sum.costValue),
                         currency: side.sum.currency, devices: side.devices.count)
        }
        func compare(_ name: String, _ pair: (current: Side, previous: Side)) -> MonthComparison {
            let energy = Breakdown.change(current: pair.current.sum.energyWh, previous: pair.previous.sum.energyWh)
            let sameCurrency = pair.current.sum.currency == pair.previous.sum.currency || pair.current.sum.currency == nil
                || pair.previous.sum.currency == nil
            let cost: (absolute: Double?, percent: Double?) = sameCurrency ? Breakdown.change(current: pair.current.sum.costValue, previous: pair.previous.sum.costValue)
                : (nil, nil)
            let energyChange = energy.absolute ?? 0
            return MonthComparison(
                classroom: name, current: figures(pair.current), previous: figures(pair.previous),
                change: MonthChange(kwh: kwh(energyChange), energyWh: wh(energyChange),
                                    energyPercent: energy.percent.map { Breakdown.rounded($0, 2) },
                                    cost: money(cost.absolute), costPercent: cost.percent.map { Breakdown.rounded($0, 2) }))
        }
        let scope = p.classroom ?? "campus"
        return MonthlyResult(month: current, previousMonth: previous, scope: scope, total: compare(scope, total),
                             classrooms: sides.keys.sorted().map { compare($0, sides[$0]!) })
    }
}
