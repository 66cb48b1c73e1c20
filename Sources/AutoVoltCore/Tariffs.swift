/// Versioned tariffs (contract rule 8): the tariff in force for a classroom at an instant.
/// Versions are never edited or deleted; a correction is a new version.
public struct Tariff: Sendable, Hashable {
    public var id: String
    public var costPerKwh: Double
    public var currency: String
    /// The instant it takes effect (a bare date means local midnight of that date).
    public var effectiveFrom: EpochMillis
    /// nil: every classroom without a tariff of its own.
    public var classroom: String?
    public var createdAt: EpochMillis
    public var notes: String?

    public init(id: String, costPerKwh: Double, currency: String, effectiveFrom: EpochMillis, classroom: String?,
                createdAt: EpochMillis, notes: String? = nil) {
        self.id = id
        self.costPerKwh = costPerKwh
        self.currency = currency
        self.effectiveFrom = effectiveFrom
        self.classroom = classroom
        self.createdAt = createdAt
        self.notes = notes
    }
}

public struct TariffBook: Sendable {
    /// Per scope (classroom, or nil for global): versions by effective time; among versions with
    /// the same effective time the one created last wins.
    private let byScope: [String?: [Tariff]]

    public init(_ versions: [Tariff]) {
        var scopes: [String?: [Tariff]] = [:]
        for v in versions { scopes[v.classroom, default: []].append(v) }
        byScope = scopes.mapValues { list in
            list.sorted { ($0.effectiveFrom, $0.createdAt, $0.id) < ($1.effectiveFrom, $1.createdAt, $1.id) }
        }
    }

    /// A classroom's own tariff in force beats the global one.
    public func tariff(classroom: String, at instant: EpochMillis) -> Tariff? {
        Self.latest(byScope[classroom], at: instant) ?? Self.latest(byScope[nil], at: instant)
    }

    static func latest(_ list: [Tariff]?, at instant: EpochMillis) -> Tariff? {
        guard let list else { return nil }
        var low = 0, high = list.count
        while low < high {
            let mid = (low + high) / 2
            if list[mid].effectiveFrom <= instant { low = mid + 1 } else { high = mid }
        }
        return low > 0 ? list[low - 1] : nil
    }

    /// Instants in (start, end) where the tariff for `classroom` may change.
    func changes(classroom: String, in start: EpochMillis, _ end: EpochMillis) -> [EpochMillis] {
        let times = ((byScope[classroom] ?? []) + (byScope[nil] ?? [])).map(\.effectiveFrom).filter { $0 > start && $0 < end }
        return Array(Set(times)).sorted()
    }

    public struct Price: Sendable, Equatable {
        /// nil when some of the energy has no tariff.
        public var cost: Double?
        public var currency: String?
        public var versionIDs: [String]
        public var unpricedWh: Double
    }

    /// Prices `energyWh` used evenly over [start, end): a tariff change inside the interval splits
    /// it in proportion to time. `cost = energy_wh / 1000 * cost_per_kwh`.
    public func price(energyWh: Double, classroom: String, start: EpochMillis, end: EpochMillis) -> Price {
        var cost = 0.0
        var unpriced = 0.0
        var currency: String?
        var ids: [String] = []
        var cuts = [start] + changes(classroom: classroom, in: start, end) + [end]
        if end <= start { cuts = [start, start] }
        let duration = Double(max(end - start, 1))
        for (from, to) in zip(cuts, cuts.dropFirst()) {
            let share = end > start ? energyWh * Double(to - from) / duration : energyWh
            guard let tariff = tariff(classroom: classroom, at: from) else {
                unpriced += share
                continue
            }
            cost += share / 1000 * tariff.costPerKwh
            currency = currency ?? tariff.currency
            if !ids.contains(tariff.id) { ids.append(tariff.id) }
        }
        return Price(cost: unpriced > 0 ? nil : cost, currency: currency, versionIDs: ids, unpricedWh: unpriced)
    }
}
