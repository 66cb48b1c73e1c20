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

public enum Aggregator {
    /// Figures of one device for one local day from its live entries of that day.
    public static func daily(date: CivilDate, esp32Name: String, classroom: String, entries: [AggregateEntry],
                             tariffs: TariffBook, calendar: inout LocalCalendar) -> DailyFigures {
        let dayStart = calendar.startOfDay(date)
        let dayEnd = calendar.startOfDay(CivilDate(daysSinceEpoch: date.daysSinceEpoch + 1))
        // Hot loop (a campus day is 1.4 M entries): tariffs as indexed segments, counts in arrays.
        let book = tariffs.segments(classroom: classroom)
        var energy = 0.0
        var cost = 0.0
        var unpriced = 0.0
        var used = [Bool](repeating: false, count: book.tariffs.count)
        var usedOrder: [Int] = []
        var segmentWh = [Double](repeating: 0, count: book.tariffs.count)
        var covered: Int64 = 0
        var counts = [0, 0, 0] // Confidence.allCases order
        let hours = localHours(dayStart: dayStart, dayEnd: dayEnd, calendar: &calendar)
        var hourly = [Double](repeating: 0, count: max(0, hours.count - 1))
        var hourCursor = 0
        for entry in entries {
            covered += max(0, min(entry.end, dayEnd) - max(entry.start, dayStart))
            counts[entry.confidence.rank] += 1
            guard entry.billable else { continue }
            energy += entry.deltaWh
            spreadOverHours(entry, hours: hours, into: &hourly, cursor: &hourCursor)
            book.forEachPiece(energyWh: entry.deltaWh, start: entry.start, end: entry.end) { segment, share in
                let rate = book.rates[segment]
                if rate.isNaN {
                    unpriced += share
                    return
                }
                cost += share / 1000 * rate
                segmentWh[segment] += share
                if !used[segment] {
                    used[segment] = true
                    usedOrder.append(segment)
                }
            }
        }
        var ids: [String] = []
        var costSegments: [CostSegment] = []
        for segment in usedOrder {
            guard let tariff = book.tariffs[segment] else { continue }
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
        let currency = usedOrder.first.flatMap { book.tariffs[$0]?.currency }
        var confidence: [Confidence: Int] = [:]
        for (i, level) in Confidence.allCases.enumerated() where counts[i] > 0 { confidence[level] = counts[i] }
        let overlap = overlapMillis(entries, dayStart: dayStart, dayEnd: dayEnd)
        let dayLength = Double(max(dayEnd - dayStart, 1))
        return DailyFigures(
            date: date, esp32Name: esp32Name, classroom: classroom, energyWh: energy,
            cost: unpriced > 1e-9 ? nil : cost, currency: currency, costVersionIDs: ids,
            coverage: min(1, Double(max(0, covered - overlap)) / dayLength), confidence: confidence, entries: entries.count,
            unpricedWh: unpriced, overlapMillis: overlap, hourlyWh: hourly, costSegments: costSegments)
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
