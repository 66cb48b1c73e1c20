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
    /// Instants where the tariff may change, per classroom with its own versions (its and the
    /// global ones), and for every other classroom; sorted, precomputed so pricing an entry
    /// allocates nothing.
    private let changeTimes: [String: [EpochMillis]]
    private let globalChangeTimes: [EpochMillis]

    public init(_ versions: [Tariff]) {
        var scopes: [String?: [Tariff]] = [:]
        for v in versions { scopes[v.classroom, default: []].append(v) }
        byScope = scopes.mapValues { list in
            list.sorted { ($0.effectiveFrom, $0.createdAt, $0.id) < ($1.effectiveFrom, $1.createdAt, $1.id) }
        }
        let global = Array(Set((scopes[nil] ?? []).map(\.effectiveFrom))).sorted()
        globalChangeTimes = global
        var perClassroom: [String: [EpochMillis]] = [:]
        for case let (classroom?, list) in scopes {
            perClassroom[classroom] = Array(Set(list.map(\.effectiveFrom) + global)).sorted()
        }
        changeTimes = perClassroom
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

    /// Calls `body` with each piece of [start, end) that has one tariff (nil: none in force) and
    /// the share of `energyWh` used in it, in proportion to time. No allocation when no tariff
    /// changes inside the interval (the common case).
    @inlinable
    public func forEachPiece(energyWh: Double, classroom: String, start: EpochMillis, end: EpochMillis,
                             _ body: (Tariff?, Double) -> Void) {
        let times = changeTimesFor(classroom)
        // First change strictly after start.
        var low = 0, high = times.count
        while low < high {
            let mid = (low + high) / 2
            if times[mid] <= start { low = mid + 1 } else { high = mid }
        }
        if low == times.count || times[low] >= end || end <= start {
            body(tariff(classroom: classroom, at: start), energyWh)
            return
        }
        let duration = Double(end - start)
        var from = start
        var index = low
        while from < end {
            let to = index < times.count ? min(times[index], end) : end
            body(tariff(classroom: classroom, at: from), energyWh * Double(to - from) / duration)
            from = to
            index += 1
        }
    }

    @usableFromInline
    func changeTimesFor(_ classroom: String) -> [EpochMillis] { changeTimes[classroom] ?? globalChangeTimes }

    /// One classroom's tariffs as segments of time, to price many entries without a dictionary
    /// lookup or a reference count each (`Aggregator.daily`).
    public func segments(classroom: String) -> ClassroomTariffs {
        let changes = changeTimesFor(classroom)
        // In force before the first change, then from each change on.
        let tariffs = [tariff(classroom: classroom, at: (changes.first ?? 0) - 1)] + changes.map { tariff(classroom: classroom, at: $0) }
        return ClassroomTariffs(changes: changes, tariffs: tariffs)
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
        forEachPiece(energyWh: energyWh, classroom: classroom, start: start, end: end) { tariff, share in
            guard let tariff else {
                unpriced += share
                return
            }
            cost += share / 1000 * tariff.costPerKwh
            currency = currency ?? tariff.currency
            if !ids.contains(tariff.id) { ids.append(tariff.id) }
        }
        return Price(cost: unpriced > 0 ? nil : cost, currency: currency, versionIDs: ids, unpricedWh: unpriced)
    }
}

/// A classroom's tariff over time: `tariffs[0]` is in force before `changes[0]`, `tariffs[i]`
/// from `changes[i - 1]` until `changes[i]`.
public struct ClassroomTariffs: Sendable {
    public let changes: [EpochMillis]
    public let tariffs: [Tariff?]
    /// `costPerKwh` per segment, NaN where no tariff is in force.
    public let rates: [Double]

    init(changes: [EpochMillis], tariffs: [Tariff?]) {
        self.changes = changes
        self.tariffs = tariffs
        rates = tariffs.map { $0?.costPerKwh ?? .nan }
    }

    /// The segment `instant` lies in: the number of changes at or before it.
    @inlinable
    public func segment(at instant: EpochMillis) -> Int {
        var low = 0, high = changes.count
        while low < high {
            let mid = (low + high) / 2
            if changes[mid] <= instant { low = mid + 1 } else { high = mid }
        }
        return low
    }
}
