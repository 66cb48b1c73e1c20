import Foundation

/// The pure parts of the read queries (contract sections 6 and 7): reporting periods, local time
/// buckets, spreading interval energy over buckets, sharing an interval's energy among the
/// switches that were on, and period-over-period changes. No I/O.
public enum Breakdown {
    // MARK: Periods

    /// A local calendar month, `YYYY-MM`.
    public struct Month: Sendable, Hashable, Comparable, CustomStringConvertible {
        public let year: Int
        public let month: Int

        public init(year: Int, month: Int) {
            self.year = year
            self.month = month
        }

        /// Parses `YYYY-MM` (exactly: four-digit year, two-digit month).
        public init?(_ text: String) {
            let parts = text.split(separator: "-", omittingEmptySubsequences: false)
            guard parts.count == 2, parts[0].count == 4, parts[1].count == 2,
                  text.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || $0 == UInt8(ascii: "-") }),
                  let y = Int(parts[0]), let m = Int(parts[1]), y >= 0, (1...12).contains(m) else { return nil }
            self.init(year: y, month: m)
        }

        public init(_ date: CivilDate) { self.init(year: date.year, month: date.month) }

        public var previous: Month { month == 1 ? Month(year: year - 1, month: 12) : Month(year: year, month: month - 1) }
        public var next: Month { month == 12 ? Month(year: year + 1, month: 1) : Month(year: year, month: month + 1) }
        public var firstDay: CivilDate { CivilDate(year: year, month: month, day: 1) }
        public var lastDay: CivilDate { CivilDate(year: year, month: month, day: CivilDate.daysInMonth(year: year, month: month)) }
        public var dayCount: Int { CivilDate.daysInMonth(year: year, month: month) }

        public var description: String { String(firstDay.description.prefix(7)) }

        public static func < (a: Month, b: Month) -> Bool { (a.year, a.month) < (b.year, b.month) }
    }

    /// What a summary covers: one local day (`YYYY-MM-DD`) or one local month (`YYYY-MM`).
    public enum Period: Sendable, Hashable, CustomStringConvertible {
        case day(CivilDate)
        case month(Month)

        public init?(_ text: String) {
            let digitsAndDashes = text.utf8.allSatisfy { ($0 >= 48 && $0 <= 57) || $0 == UInt8(ascii: "-") }
            if digitsAndDashes, let date = CivilDate(text) {
                self = .day(date)
            } else if let month = Month(text) {
                self = .month(month)
            } else {
                return nil
            }
        }

        public var firstDay: CivilDate {
            switch self {
            case .day(let d): d
            case .month(let m): m.firstDay
            }
        }

        public var lastDay: CivilDate {
            switch self {
            case .day(let d): d
            case .month(let m): m.lastDay
            }
        }

        public var dayCount: Int { lastDay.daysSinceEpoch - firstDay.daysSinceEpoch + 1 }
        public var kind: String { if case .day = self { "day" } else { "month" } }

        public var description: String {
            switch self {
            case .day(let d): d.description
            case .month(let m): m.description
            }
        }

        /// Days of the period that have begun by `today` (at least one, at most all): the
        /// denominator of a period's mean coverage, so days without data count as uncovered
        /// and days still to come do not count at all. `latestData` (the last date with data)
        /// extends it, so data dated in the future is never divided by zero days.
        public func elapsedDays(today: CivilDate, latestData: CivilDate? = nil) -> Int {
            var last = today
            if let latestData, latestData > last { last = latestData }
            if last > lastDay { last = lastDay }
            return max(1, last.daysSinceEpoch - firstDay.daysSinceEpoch + 1)
        }
    }

    // MARK: Time buckets

    public enum BucketSize: String, Sendable, CaseIterable {
        case hour, day
    }

    /// A local hour or local day inside a requested range.
    public struct Bucket: Sendable, Equatable {
        /// The local hour or date it stands for: `2026-11-01T10:00+05:30` or `2026-11-01`.
        public var label: String
        /// The part of the bucket inside the requested range, [start, end).
        public var start: EpochMillis
        public var end: EpochMillis

        public init(label: String, start: EpochMillis, end: EpochMillis) {
            self.label = label
            self.start = start
            self.end = end
        }
    }

    /// The local hours or days that cover [start, end), in order and contiguous. The first and
    /// last are clipped to the range; labels name the whole local hour or day. Hours follow the
    /// zone's wall clock, so a daylight-saving day has 23 or 25 of them (a repeated hour is told
    /// apart by its offset).
    public static func buckets(from start: EpochMillis, to end: EpochMillis, size: BucketSize,
                               calendar: inout LocalCalendar) -> [Bucket] {
        guard end > start else { return [] }
        var out: [Bucket] = []
        var cursor = start
        switch size {
        case .day:
            while cursor < end {
                let day = calendar.day(containing: cursor)
                out.append(Bucket(label: day.date.description, start: cursor, end: min(day.end, end)))
                cursor = day.end
            }
        case .hour:
            let zone = calendar.timeZone
            var hourStart = floorToLocalHour(start, zone: zone)
            while hourStart < end {
                var next = floorToLocalHour(hourStart + 3_600_000, zone: zone)
                if next <= hourStart { next = hourStart + 3_600_000 }
                out.append(Bucket(label: localMinuteLabel(hourStart, zone: zone), start: max(hourStart, start), end: min(next, end)))
                hourStart = next
            }
        }
        return out
    }

    static func offsetMillis(_ instant: EpochMillis, zone: TimeZone) -> EpochMillis {
        EpochMillis(zone.secondsFromGMT(for: Date(timeIntervalSince1970: Double(instant.floorDiv(1000))))) * 1000
    }

    /// The last instant at or before `instant` whose local wall time is a whole hour.
    static func floorToLocalHour(_ instant: EpochMillis, zone: TimeZone) -> EpochMillis {
        let offset = offsetMillis(instant, zone: zone)
        let local = instant + offset
        return local.floorDiv(3_600_000) * 3_600_000 - offset
    }

    /// `2026-11-01T10:00+05:30`: the local wall time of `instant` to the minute, with its offset.
    public static func localMinuteLabel(_ instant: EpochMillis, zone: TimeZone) -> String {
        let offset = offsetMillis(instant, zone: zone)
        let localSeconds = (instant + offset).floorDiv(1000)
        let days = Int(localSeconds.floorDiv(86_400))
        let secondOfDay = Int(localSeconds) - days * 86_400
        let date = CivilDate(daysSinceEpoch: days)
        let offsetMinutes = Int(offset / 60_000)
        let sign = offsetMinutes < 0 ? "-" : "+"
        return "\(date)T\(pad2(secondOfDay / 3600)):\(pad2(secondOfDay % 3600 / 60))\(sign)\(pad2(abs(offsetMinutes) / 60)):\(pad2(abs(offsetMinutes) % 60))"
    }

    static func pad2(_ v: Int) -> String { v < 10 ? "0\(v)" : "\(v)" }

    /// Energy used evenly over [start, end).
    public struct Interval: Sendable, Equatable {
        public var start: EpochMillis
        public var end: EpochMillis
        public var energyWh: Double

        public init(start: EpochMillis, end: EpochMillis, energyWh: Double) {
            self.start = start
            self.end = end
            self.energyWh = energyWh
        }
    }

    /// Each interval's energy shared among the buckets in proportion to the time it spends in
    /// each; the part outside the buckets is left out. An interval of no duration counts in the
    /// bucket that holds its instant. `buckets` must be contiguous and in order (as `buckets(...)`
    /// makes them). Returns Wh per bucket.
    public static func spread(_ intervals: [Interval], over buckets: [Bucket]) -> [Double] {
        var totals = [Double](repeating: 0, count: buckets.count)
        guard let first = buckets.first, let last = buckets.last else { return totals }
        for interval in intervals {
            if interval.end <= interval.start {
                guard interval.start >= first.start, interval.start < last.end else { continue }
                totals[firstBucket(endingAfter: interval.start, in: buckets)] += interval.energyWh
                continue
            }
            guard interval.end > first.start, interval.start < last.end else { continue }
            let duration = Double(interval.end - interval.start)
            var index = firstBucket(endingAfter: interval.start, in: buckets)
            while index < buckets.count, buckets[index].start < interval.end {
                let overlap = min(buckets[index].end, interval.end) - max(buckets[index].start, interval.start)
                if overlap > 0 { totals[index] += interval.energyWh * Double(overlap) / duration }
                index += 1
            }
        }
        return totals
    }

    /// The index of the first bucket whose end lies after `instant` (binary search).
    static func firstBucket(endingAfter instant: EpochMillis, in buckets: [Bucket]) -> Int {
        var low = 0, high = buckets.count
        while low < high {
            let mid = (low + high) / 2
            if buckets[mid].end <= instant { low = mid + 1 } else { high = mid }
        }
        return low
    }

    // MARK: Switch shares

    /// A reading's `switch_state`: the array form (position = switch index) or the object form
    /// (switch name to on/off).
    public enum SwitchState: Sendable, Equatable {
        case positions([Bool])
        case named([String: Bool])
    }

    /// How the energy of one interval divides among a device's registered switches: the switches
    /// on at the interval's start reading share it in proportion to their `rated_w`. Returns one
    /// share per switch of `switches` (in Wh, summing to `energyWh`), or nil when the energy cannot
    /// be attributed: no state, nothing on, a switch that is on has no `rated_w`, or the state says
    /// a switch is on that the registry does not describe (its draw is unknown, so any split
    /// among the others would be a guess).
    public static func switchShares(energyWh: Double, state: SwitchState?, switches: [DeviceInfo.Switch]) -> [Double]? {
        guard let state, let on = switchesOn(state, switches: switches), !on.isEmpty else { return nil }
        var totalRated = 0.0
        for index in on {
            guard let rated = switches[index].ratedW else { return nil }
            totalRated += rated
        }
        guard totalRated > 0 else { return nil }
        var shares = [Double](repeating: 0, count: switches.count)
        for index in on { shares[index] = energyWh * (switches[index].ratedW ?? 0) / totalRated }
        return shares
    }

    /// Indices of the registered switches that are on; nil when a switch the registry does not
    /// describe is on.
    public static func switchesOn(_ state: SwitchState, switches: [DeviceInfo.Switch]) -> [Int]? {
        switch state {
        case .positions(let values):
            guard !values.indices.contains(where: { values[$0] && $0 >= switches.count }) else { return nil }
            return values.indices.filter { values[$0] }
        case .named(let values):
            let known = Set(switches.map(\.name))
            guard !values.contains(where: { $0.value && !known.contains($0.key) }) else { return nil }
            return switches.indices.filter { values[switches[$0].name] == true }
        }
    }

    /// Per-switch totals of one device over many intervals.
    public struct SwitchTotals: Sendable, Equatable {
        public let switches: [DeviceInfo.Switch]
        /// Wh per switch, aligned with `switches`.
        public private(set) var energyWh: [Double]
        /// Milliseconds each switch was on (at the start readings of the intervals added).
        public private(set) var onMillis: [Int64]
        public private(set) var unattributedWh = 0.0
        public private(set) var totalWh = 0.0

        public init(switches: [DeviceInfo.Switch]) {
            self.switches = switches
            energyWh = [Double](repeating: 0, count: switches.count)
            onMillis = [Int64](repeating: 0, count: switches.count)
        }

        public mutating func add(energyWh energy: Double, durationMillis: Int64, state: SwitchState?) {
            totalWh += energy
            if let state, let on = Breakdown.switchesOn(state, switches: switches) {
                for index in on { onMillis[index] += max(0, durationMillis) }
            }
            if let shares = Breakdown.switchShares(energyWh: energy, state: state, switches: switches) {
                for index in shares.indices { energyWh[index] += shares[index] }
            } else {
                unattributedWh += energy
            }
        }
    }

    // MARK: A device-day from the ledger

    /// A device-day's figures from its live ledger entries, for a day not aggregated yet (the
    /// device-breakdown fallback): energy of the billable entries, the fraction of the local day
    /// [dayStart, dayEnd) the entries cover, and the entries by confidence (an entry without a
    /// readable confidence counts as low). The cost stays unknown: pricing is the aggregation's.
    public struct LedgerDay: Sendable, Equatable {
        public var energyWh = 0.0
        public var coveredMillis: Int64 = 0
        public var high = 0
        public var medium = 0
        public var low = 0
        public var entries = 0

        public init() {}

        public mutating func add(start: EpochMillis, end: EpochMillis, energyWh energy: Double, billable: Bool,
                                 confidence: Confidence?, dayStart: EpochMillis, dayEnd: EpochMillis) {
            entries += 1
            coveredMillis += max(0, min(end, dayEnd) - max(start, dayStart))
            switch confidence {
            case .high?: high += 1
            case .medium?: medium += 1
            case .low?, nil: low += 1
            }
            if billable { energyWh += energy }
        }

        /// Covered fraction of the day, at most 1.
        public func coverage(dayStart: EpochMillis, dayEnd: EpochMillis) -> Double {
            min(1, Double(coveredMillis) / Double(max(1, dayEnd - dayStart)))
        }
    }

    // MARK: Changes

    /// `current - previous`, and that as a percentage of `previous` (nil when `previous` is 0);
    /// both nil when either side is unknown.
    public static func change(current: Double?, previous: Double?) -> (absolute: Double?, percent: Double?) {
        guard let current, let previous else { return (nil, nil) }
        let absolute = current - previous
        return (absolute, previous == 0 ? nil : absolute / previous * 100)
    }

    /// `value` rounded to `places` decimals (for reports: no `0.30000000000000004`).
    public static func rounded(_ value: Double, _ places: Int) -> Double {
        guard value.isFinite else { return value }
        let scale = pow(10.0, Double(places))
        let r = (value * scale).rounded() / scale
        return r == 0 ? 0 : r  // no -0
    }
}
