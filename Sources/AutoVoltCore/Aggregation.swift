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

    public init(date: CivilDate, esp32Name: String, classroom: String, energyWh: Double, cost: Double?, currency: String?,
                costVersionIDs: [String], coverage: Double, confidence: [Confidence: Int], entries: Int, unpricedWh: Double) {
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
        var covered: Int64 = 0
        var counts = [0, 0, 0] // Confidence.allCases order
        for entry in entries {
            covered += max(0, min(entry.end, dayEnd) - max(entry.start, dayStart))
            counts[entry.confidence.rank] += 1
            guard entry.billable else { continue }
            energy += entry.deltaWh
            book.forEachPiece(energyWh: entry.deltaWh, start: entry.start, end: entry.end) { segment, share in
                let rate = book.rates[segment]
                if rate.isNaN {
                    unpriced += share
                    return
                }
                cost += share / 1000 * rate
                if !used[segment] {
                    used[segment] = true
                    usedOrder.append(segment)
                }
            }
        }
        var ids: [String] = []
        for segment in usedOrder {
            if let id = book.tariffs[segment]?.id, !ids.contains(id) { ids.append(id) }
        }
        let currency = usedOrder.first.flatMap { book.tariffs[$0]?.currency }
        var confidence: [Confidence: Int] = [:]
        for (i, level) in Confidence.allCases.enumerated() where counts[i] > 0 { confidence[level] = counts[i] }
        let dayLength = Double(max(dayEnd - dayStart, 1))
        return DailyFigures(
            date: date, esp32Name: esp32Name, classroom: classroom, energyWh: energy,
            cost: unpriced > 1e-9 ? nil : cost, currency: currency, costVersionIDs: ids,
            coverage: min(1, Double(covered) / dayLength), confidence: confidence, entries: entries.count, unpricedWh: unpriced)
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
