import Foundation

/// Daily and monthly figures from live ledger entries (contract rules 7 and 8). Pure.
public struct DailyFigures: Sendable, Equatable {
    public var date: CivilDate
    public var esp32Name: String
    public var classroom: String
    public var energyWh: Double
    /// nil when there is energy without a tariff.
    public var cost: Double?
    public var currency: String?
    public var costVersionIDs: [String]
    /// Fraction of the local day covered by ledger intervals (billable or not).
    public var coverage: Double
    public var confidence: [Confidence: Int]
    public var entries: Int
    public var unpricedWh: Double
    /// Time covered by more than one live entry. Live entries never overlap (ledger rules), so
    /// anything above zero is a defect the reconciliation reports.
    public var overlapMillis: Int64
    /// Billable Wh per local hour of the day (23, 24 or 25 of them: `Aggregator.localHours`),
    /// each entry split pro rata by time at hour boundaries; sums to `energyWh`.
    public var hourlyWh: [Double]
    /// The priced energy per tariff version, in the order first used: what a statement shows as
    /// tariff segments. Sums to `energyWh - unpricedWh` and to `cost`.
    public var costSegments: [CostSegment]

    public init(date: CivilDate, esp32Name: String, classroom: String, energyWh: Double, cost: Double?, currency: String?,
                costVersionIDs: [String], coverage: Double, confidence: [Confidence: Int], entries: Int, unpricedWh: Double,
                overlapMillis: Int64 = 0, hourlyWh: [Double] = [], costSegments: [CostSegment] = []) {
        self.date = date
        self.esp32Name = esp32Name
        self.classroom = classroom
        self.energyWh = energyWh
        self.cost = cost
        self.currency = currency
        self.costVersionIDs = costVersionIDs
        self.coverage = coverage
        self.confidence = confidence
        self.entries = entries
        self.unpricedWh = unpricedWh
        self.overlapMillis = overlapMillis
        self.hourlyWh = hourlyWh
        self.costSegments = costSegments
    }
}

/// Energy priced by one tariff version within a day (or, summed, a statement's line).
public struct CostSegment: Sendable, Equatable {
    public var costVersionID: String
    public var costPerKwh: Double
    public var energyWh: Double
    public var cost: Double

    public init(costVersionID: String, costPerKwh: Double, energyWh: Double, cost: Double) {
        self.costVersionID = costVersionID
        self.costPerKwh = costPerKwh
        self.energyWh = energyWh
        self.cost = cost
    }
}

public struct AggregateEntry: Sendable, Equatable {
    public var start: EpochMillis
    public var end: EpochMillis
    public var deltaWh: Double
    public var billable: Bool
    public var confidence: Confidence

    public init(start: EpochMillis, end: EpochMillis, deltaWh: Double, billable: Bool, confidence: Confidence) {
        self.start = start
        self.end = end
        self.deltaWh = deltaWh
        self.billable = billable
        self.confidence = confidence
    }
}

/// The running sums of one device-day's figures: everything `Aggregator.daily` adds up, kept
/// (as `encoded`, with the daily aggregate) so that entries appended after the last one folded
/// are added without reading the others again. A day of n entries updated after each ledger
/// step otherwise costs n²/2 entry reads. Folding a day's entries in two parts gives the same
/// figures, to the bit, as folding them at once (AggregationFoldTests): the same additions in
/// the same order.
public struct DayFold: Sendable, Equatable {
    /// The tariff book it was priced with (`TariffBook.fingerprint`) and the classroom: under
    /// another book or classroom the sums are not valid and the day is folded again from all
    /// its entries.
    public var bookFingerprint: UInt64
    public var classroom: String
    public var dayStart: EpochMillis
    public var dayEnd: EpochMillis
    /// (start, end) of the last entry folded; nil before the first.
    public var last: EntryPosition?
    public var entries = 0
    var energy = 0.0
    var cost = 0.0
    var unpriced = 0.0
    var covered: Int64 = 0
    /// The overlap scan's state: the furthest end so far, and the time covered twice.
    var reach = Int64.min
    var overlap: Int64 = 0
    var counts = [0, 0, 0] // Confidence.allCases order
    /// Tariff segments (indices into the classroom's `ClassroomTariffs`) in the order first used.
    var usedOrder: [Int] = []
    var segmentWh: [Double]
    var hourly: [Double]
    /// Hour boundaries of the day (not stored: derived from the day and the zone).
    var hours: [EpochMillis]

    public struct EntryPosition: Sendable, Equatable, Hashable {
        public var start: EpochMillis
        public var end: EpochMillis
        public init(start: EpochMillis, end: EpochMillis) {
            self.start = start
            self.end = end
        }
    }

    public init(date: CivilDate, classroom: String, tariffs: TariffBook, book: ClassroomTariffs, calendar: inout LocalCalendar) {
        bookFingerprint = tariffs.fingerprint
        self.classroom = classroom
        dayStart = calendar.startOfDay(date)
        dayEnd = calendar.startOfDay(CivilDate(daysSinceEpoch: date.daysSinceEpoch + 1))
        hours = Aggregator.localHours(dayStart: dayStart, dayEnd: dayEnd, calendar: &calendar)
        segmentWh = [Double](repeating: 0, count: book.tariffs.count)
        hourly = [Double](repeating: 0, count: max(0, hours.count - 1))
    }

    /// Whether this fold can take the entries of `date` priced by `tariffs` (same book, same day
    /// bounds, a classroom already fixed by a first entry); `book` is `tariffs` for its classroom.
    public func continues(date: CivilDate, tariffs: TariffBook, book: ClassroomTariffs, calendar: inout LocalCalendar) -> Bool {
        last != nil && entries > 0 && bookFingerprint == tariffs.fingerprint && dayStart == calendar.startOfDay(date)
            && dayEnd == calendar.startOfDay(CivilDate(daysSinceEpoch: date.daysSinceEpoch + 1))
            && segmentWh.count == book.tariffs.count
    }

    /// Adds entries that come after every entry folded so far, in time order. Returns false when
    /// one starts before the one before it: the sums are still added, the overlap is not exact.
    @discardableResult
    public mutating func add(_ newEntries: [AggregateEntry], book: ClassroomTariffs) -> Bool {
        var ordered = true
        var hourCursor = 0
        for entry in newEntries {
            if let last, entry.start < last.start { ordered = false }
            last = EntryPosition(start: entry.start, end: entry.end)
            entries += 1
            covered += max(0, min(entry.end, dayEnd) - max(entry.start, dayStart))
            counts[entry.confidence.rank] += 1
            let start = max(entry.start, dayStart), end = min(entry.end, dayEnd)
            if end > start {
                if start < reach { overlap += min(reach, end) - start }
                reach = max(reach, end)
            }
            guard entry.billable else { continue }
            energy += entry.deltaWh
            Aggregator.spreadOverHours(entry, hours: hours, into: &hourly, cursor: &hourCursor)
            book.forEachPiece(energyWh: entry.deltaWh, start: entry.start, end: entry.end) { segment, share in
                let rate = book.rates[segment]
                if rate.isNaN {
                    unpriced += share
                    return
                }
                cost += share / 1000 * rate
                segmentWh[segment] += share
                if !usedOrder.contains(segment) { usedOrder.append(segment) }
            }
        }
        return ordered
    }

    /// The day's figures from the sums.
    public func figures(date: CivilDate, esp32Name: String, book: ClassroomTariffs) -> DailyFigures {
        var ids: [String] = []
        var costSegments: [CostSegment] = []
        for segment in usedOrder {
            guard segment < book.tariffs.count, let tariff = book.tariffs[segment] else { continue }
            if let index = ids.firstIndex(of: tariff.id) {
                // The same version in force in two segments (a global change under a classroom tariff).
                costSegments[index].energyWh += segmentWh[segment]
                costSegments[index].cost += segmentWh[segment] / 1000 * tariff.costPerKwh
            } else {
                ids.append(tariff.id)
                costSegments.append(CostSegment(costVersionID: tariff.id, costPerKwh: tariff.costPerKwh, energyWh: segmentWh[segment],
                                                cost: segmentWh[segment] / 1000 * tariff.costPerKwh))
            }
        }
        let currency = usedOrder.first.flatMap { $0 < book.tariffs.count ? book.tariffs[$0]?.currency : nil }
        var confidence: [Confidence: Int] = [:]
        for (i, level) in Confidence.allCases.enumerated() where counts[i] > 0 { confidence[level] = counts[i] }
        let dayLength = Double(max(dayEnd - dayStart, 1))
        return DailyFigures(
            date: date, esp32Name: esp32Name, classroom: classroom, energyWh: energy,
            cost: unpriced > 1e-9 ? nil : cost, currency: currency, costVersionIDs: ids,
            coverage: min(1, Double(max(0, covered - overlap)) / dayLength), confidence: confidence, entries: entries,
            unpricedWh: unpriced, overlapMillis: overlap, hourlyWh: hourly, costSegments: costSegments)
    }

    // MARK: Stored form

    /// The stored form: exact (every Double as its bit pattern), versioned, one line of text.
    public var encoded: String {
        func bits(_ value: Double) -> String { String(value.bitPattern, radix: 16) }
        func list(_ values: [Double]) -> String { values.map(bits).joined(separator: ",") }
        let fields: [String] = [
            "f1", String(bookFingerprint, radix: 16), "\(dayStart)", "\(dayEnd)",
            last.map { "\($0.start)" } ?? "", last.map { "\($0.end)" } ?? "",
            "\(entries)", bits(energy), bits(cost), bits(unpriced), "\(covered)", "\(reach)", "\(overlap)",
            counts.map(String.init).joined(separator: ","), usedOrder.map(String.init).joined(separator: ","),
            list(segmentWh), list(hourly), classroom,
        ]
        return fields.joined(separator: ";")
    }

    /// Reads `encoded`; nil for anything else (an older format, a damaged value): the day is
    /// then folded again from all its entries.
    public init?(encoded text: String, calendar: inout LocalCalendar) {
        // The classroom is last and may hold the separator.
        let parts = text.split(separator: ";", maxSplits: 17, omittingEmptySubsequences: false).map(String.init)
        guard parts.count == 18, parts[0] == "f1", let fingerprint = UInt64(parts[1], radix: 16),
              let dayStart = Int64(parts[2]), let dayEnd = Int64(parts[3]), let entries = Int(parts[6]),
              let covered = Int64(parts[10]), let reach = Int64(parts[11]), let overlap = Int64(parts[12]) else { return nil }
        func double(_ text: String) -> Double? { UInt64(text, radix: 16).map(Double.init(bitPattern:)) }
        func values<T>(_ text: String, _ parse: (String) -> T?) -> [T]? {
            var values: [T] = []
            for part in text.split(separator: ",") {
                guard let value = parse(String(part)) else { return nil }
                values.append(value)
            }
            return values
        }
        func doubles(_ text: String) -> [Double]? { values(text, double) }
        func ints(_ text: String) -> [Int]? { values(text) { Int($0) } }
        guard let energy = double(parts[7]), let cost = double(parts[8]), let unpriced = double(parts[9]),
              let counts = ints(parts[13]), counts.count == 3, let usedOrder = ints(parts[14]),
              let segmentWh = doubles(parts[15]), let hourly = doubles(parts[16]),
              usedOrder.allSatisfy({ $0 >= 0 && $0 < segmentWh.count }) else { return nil }
        if parts[4].isEmpty != parts[5].isEmpty { return nil }
        if !parts[4].isEmpty {
            guard let start = Int64(parts[4]), let end = Int64(parts[5]) else { return nil }
            last = EntryPosition(start: start, end: end)
        }
        hours = Aggregator.localHours(dayStart: dayStart, dayEnd: dayEnd, calendar: &calendar)
        guard hourly.count == max(0, hours.count - 1) else { return nil }
        bookFingerprint = fingerprint
        classroom = parts[17]
        self.dayStart = dayStart
        self.dayEnd = dayEnd
        self.entries = entries
        self.energy = energy
        self.cost = cost
        self.unpriced = unpriced
        self.covered = covered
        self.reach = reach
        self.overlap = overlap
        self.counts = counts
        self.usedOrder = usedOrder
        self.segmentWh = segmentWh
        self.hourly = hourly
    }
}

public enum Aggregator {
    /// Figures of one device for one local day from its live entries of that day: a `DayFold`
    /// of all of them (entries in time order, as the ledger stores them).
    public static func daily(date: CivilDate, esp32Name: String, classroom: String, entries: [AggregateEntry],
                             tariffs: TariffBook, calendar: inout LocalCalendar) -> DailyFigures {
        let book = tariffs.segments(classroom: classroom)
        var fold = DayFold(date: date, classroom: classroom, tariffs: tariffs, book: book, calendar: &calendar)
        if !fold.add(entries, book: book) {
            // Not in time order (tests hand entries so): the sums do not care, the overlap does.
            fold.overlap = overlapMillis(entries, dayStart: fold.dayStart, dayEnd: fold.dayEnd)
        }
        return fold.figures(date: date, esp32Name: esp32Name, book: book)
    }

    /// The local hours of the day [dayStart, dayEnd) as instants where each begins, plus
    /// `dayEnd` last: 24 hours, or 23 / 25 on a daylight-saving day (the same wall-clock hours
    /// as the hourly timeline's buckets). A day that is not a whole number of hours long (a
    /// zone that shifted by 30 minutes) has a shorter first or last hour.
    public static func localHours(dayStart: EpochMillis, dayEnd: EpochMillis, calendar: inout LocalCalendar) -> [EpochMillis] {
        var bounds = Breakdown.buckets(from: dayStart, to: dayEnd, size: .hour, calendar: &calendar).map(\.start)
        bounds.append(dayEnd)
        return bounds
    }

    /// Adds an entry's energy to the hours it spans, in proportion to the time it spends in each
    /// (the same rule as the split at midnight); the part outside the day, which a ledger entry
    /// does not have, is shared over the part inside so that the hours always sum to the day.
    /// An entry of no duration (or none inside the day) counts in the hour of its start, clamped
    /// to the day. `cursor` remembers the last hour found: entries come ordered, so the search
    /// mostly starts where it is.
    static func spreadOverHours(_ entry: AggregateEntry, hours: [EpochMillis], into hourly: inout [Double], cursor: inout Int) {
        let count = hourly.count
        guard count > 0, let dayStart = hours.first, let dayEnd = hours.last else { return }
        let start = max(entry.start, dayStart), end = min(entry.end, dayEnd)
        func hourIndex(_ instant: EpochMillis) -> Int {
            if cursor < count, hours[cursor] <= instant, instant < hours[cursor + 1] { return cursor }
            var low = 0, high = count - 1
            while low < high {
                let mid = (low + high + 1) / 2
                if hours[mid] <= instant { low = mid } else { high = mid - 1 }
            }
            return low
        }
        guard end > start else {
            cursor = hourIndex(min(max(entry.start, dayStart), dayEnd - 1))
            hourly[cursor] += entry.deltaWh
            return
        }
        let duration = Double(end - start)
        var index = hourIndex(start)
        var remaining = entry.deltaWh
        while index < count, hours[index] < end {
            let pieceEnd = min(hours[index + 1], end)
            if pieceEnd >= end {
                hourly[index] += remaining // the last piece takes the rest: the pieces sum exactly
                break
            }
            let piece = entry.deltaWh * Double(pieceEnd - max(hours[index], start)) / duration
            hourly[index] += piece
            remaining -= piece
            index += 1
        }
        cursor = min(index, count - 1)
    }

    /// Milliseconds of the day covered by more than one entry (counted once per extra entry).
    /// Sorts only when the entries do not come ordered by start.
    static func overlapMillis(_ entries: [AggregateEntry], dayStart: EpochMillis, dayEnd: EpochMillis) -> Int64 {
        func scan<C: Collection>(_ ordered: C) -> Int64 where C.Element == AggregateEntry {
            var overlap: Int64 = 0
            var reach = Int64.min
            for entry in ordered {
                let start = max(entry.start, dayStart), end = min(entry.end, dayEnd)
                guard end > start else { continue }
                if start < reach { overlap += min(reach, end) - start }
                reach = max(reach, end)
            }
            return overlap
        }
        var ordered = true
        for i in entries.indices.dropFirst() where entries[i].start < entries[i - 1].start {
            ordered = false
            break
        }
        return ordered ? scan(entries) : scan(entries.sorted { $0.start < $1.start })
    }

    public struct MonthlyFigures: Sendable, Equatable {
        public var month: String
        public var energyWh: Double
        public var cost: Double?
        public var currency: String?
        public var days: Int
    }

    /// A month is the sum of its days; its cost is unknown if any day's is.
    public static func monthly(month: String, days: [DailyFigures]) -> MonthlyFigures {
        let energy = days.map(\.energyWh).reduce(0, +)
        let unknown = days.contains { $0.cost == nil && $0.energyWh > 0 }
        let cost = days.compactMap(\.cost).reduce(0, +)
        return MonthlyFigures(month: month, energyWh: energy, cost: unknown ? nil : cost,
                              currency: days.compactMap(\.currency).first, days: days.count)
    }

    /// "YYYY-MM" of a local date.
    public static func monthKey(_ date: CivilDate) -> String { String(date.description.prefix(7)) }
}
