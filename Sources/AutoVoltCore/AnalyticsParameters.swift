import Foundation

// The parameters of the read queries (AutoVoltService's Queries.swift): the CLI and the HTTP API
// parse them with the same functions here. Part of the pure core, so the fuzz package (Fuzz/, which
// links AutoVoltCore) fuzzes these very parsers.

/// A bad query parameter: HTTP 400 `{"error": message}`, CLI exit 64 with the message.
public struct AnalyticsParameterError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

// Declared here, with the limits the parsers check; AutoVoltService's QueryResults.swift (json) and
// Queries.swift (the queries) extend it.
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

        public init(classroom: String?, start: EpochMillis, end: EpochMillis, bucket: Breakdown.BucketSize) {
            self.classroom = classroom
            self.start = start
            self.end = end
            self.bucket = bucket
        }
    }

    public struct DeviceBreakdownParameters: Sendable, Equatable {
        public var classroom: String?
        public var date: CivilDate
    }

    public struct MonthlyParameters: Sendable, Equatable {
        public var classroom: String?
        public var month: Breakdown.Month
    }

    public static func given(_ text: String?) -> String? {
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

    public static func bound(_ text: String?, name: String, isEnd: Bool,
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
}
