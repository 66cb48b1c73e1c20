import AutoVoltCore
import Foundation

// The results of the read queries (Queries.swift) and their JSON, as the HTTP API sends it and
// the CLI's `--json` prints it (`AnalyticsQueries.json`).

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

extension AnalyticsQueries {
    // MARK: JSON

    /// The JSON of a result, as the HTTP API sends it and `--json` prints it.
    public static func json<T: Encodable>(_ value: T, pretty: Bool = false) -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        encoder.nonConformingFloatEncodingStrategy = .convertToString(positiveInfinity: "Infinity", negativeInfinity: "-Infinity", nan: "NaN")
        return (try? encoder.encode(value)) ?? Data(#"{"error":"the result could not be encoded"}"#.utf8)
    }
}
