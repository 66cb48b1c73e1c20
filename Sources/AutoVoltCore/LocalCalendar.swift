import Foundation

/// Local days in one IANA time zone: which local date an instant belongs to, and where the
/// next local midnight is. Days are not assumed to be 24 hours (daylight saving).
///
/// Caches the current day, so walking forward through time costs a range check per instant and
/// Foundation is only asked at day changes. Not thread-safe: one per derivation.
public struct LocalCalendar {
    public let timeZone: TimeZone
    private let calendar: Calendar
    private var cachedStart: EpochMillis = .max
    private var cachedEnd: EpochMillis = .min
    private var cachedDate = CivilDate(year: 1970, month: 1, day: 1)

    public init(timeZone: TimeZone) {
        self.timeZone = timeZone
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = timeZone
        self.calendar = calendar
    }

    /// The local day that contains `instant`: its date and [start, end) in epoch milliseconds.
    public mutating func day(containing instant: EpochMillis) -> (date: CivilDate, start: EpochMillis, end: EpochMillis) {
        if instant >= cachedStart && instant < cachedEnd { return (cachedDate, cachedStart, cachedEnd) }
        let date = Date(timeIntervalSince1970: Double(instant) / 1000)
        let parts = calendar.dateComponents([.year, .month, .day], from: date)
        let civil = CivilDate(year: parts.year ?? 1970, month: parts.month ?? 1, day: parts.day ?? 1)
        let start = startOfDay(civil)
        let next = CivilDate(daysSinceEpoch: civil.daysSinceEpoch + 1)
        let end = startOfDay(next)
        cachedStart = start
        cachedEnd = max(end, start + 1)
        cachedDate = civil
        return (civil, cachedStart, cachedEnd)
    }

    public mutating func date(of instant: EpochMillis) -> CivilDate { day(containing: instant).date }

    /// The first instant of a local date (a midnight that does not exist starts the day at the
    /// first time that does).
    public func startOfDay(_ civil: CivilDate) -> EpochMillis {
        var components = DateComponents()
        components.year = civil.year
        components.month = civil.month
        components.day = civil.day
        components.hour = 12
        guard let noon = calendar.date(from: components) else {
            return Int64(civil.daysSinceEpoch) * 86_400_000 - Int64(timeZone.secondsFromGMT()) * 1000
        }
        let start = calendar.startOfDay(for: noon)
        return Int64((start.timeIntervalSince1970 * 1000).rounded())
    }
}
