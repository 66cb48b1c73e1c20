import AutoVoltCore

/// The data operations of the aggregation stage (`AggregationStore`): the tariff book, the
/// device-days to recompute, their live ledger entries, and versioned writes of the aggregates
/// with their history. Synchronous and blocking: call from a dedicated thread. Errors are the
/// backend's own (`MongoError`, `PostgresError`), classified through `StorageFailure`.
///
/// The logic (pricing, sums, what a version and a change are) stays in `AggregationStore`;
/// implementations only store and read. Two of them: `MongoAggregationStorage` and
/// `PostgresAggregationStorage`, held to the same contract by AggregationStorageConformanceTests.
public protocol AggregationStorage: Sendable {
    // MARK: Tariffs (cost_versions)

    /// Every tariff version, by effective time then creation time: pricing needs the whole
    /// book (a few rows per tariff change).
    func tariffs() throws -> [Tariff]

    /// Adds a version; versions are never edited (an id already stored is left as it is).
    func insertTariff(_ tariff: Tariff) throws

    // MARK: What to recompute

    /// Device-days with a daily aggregate from `date` on (of `classroom` when given), in
    /// (date, esp32_name) order, after `after` when given, at most `limit`: pages of a
    /// retroactive tariff change.
    func aggregatedDays(from date: CivilDate, classroom: String?, after: DeviceDay?, limit: Int) throws -> [DeviceDay]

    /// Devices that have live ledger entries or a daily aggregate on `date`, narrowed to a
    /// classroom or a device when given: a day that lost all its entries must go to zero too.
    func devicesToRecompute(on date: CivilDate, classroom: String?, esp32Name: String?) throws -> Set<String>

    /// The ledger's marks of changed days (`ledger_dirty_days`), oldest first, at most `limit`,
    /// leaving out every mark of a day that has a mark held past `now` (a ledger step is writing
    /// it: its mark not held comes once it is done).
    func dirtyDays(limit: Int, now: EpochMillis) throws -> [DirtyDay]

    /// Removes these marks (by their own key): a mark made since they were read stays.
    func clearDirtyDays(_ days: [DirtyDay]) throws

    // MARK: Inputs

    /// Live (not superseded) ledger entries of each device-day asked for (a batch of a few dozen:
    /// at most 2,880 entries a device-day), in (start, end) order, with the classroom of the
    /// first. For a day in `after`, only the entries after that position in that order: what a
    /// stored `DayFold` has not folded yet.
    func liveEntries(of days: [DeviceDay], after: [DeviceDay: DayFold.EntryPosition]) throws -> [DeviceDay: DayEntries]

    /// The stored daily aggregates of `month` ("YYYY-MM") of these devices, each device's in date
    /// order: the figures a monthly aggregate sums (date, classroom, energy, cost, currency, coverage).
    func dailyFigures(month: String, esp32Names: [String]) throws -> [String: [DailyFigures]]

    // MARK: Versioned aggregates (daily_aggregates, monthly_aggregates, aggregate_history)

    /// The stored aggregates of these ids (`AggregateFigures.id`), as they are now.
    func aggregates(_ kind: AggregateKind, ids: [String]) throws -> [String: StoredAggregate]

    /// Writes each aggregate as the version after the one it replaces (1 when it replaces none),
    /// with `computed_at = now` and `write_id = writeID`, only if the stored aggregate is still the
    /// one read (same version, or still absent): optimistic concurrency, so two workers can never
    /// lose each other's update. A replaced version with `keepsHistory` is copied to
    /// `aggregate_history` (id `AggregateHistory.id`, first copy wins) before, or in the same
    /// transaction as, the write. Returns the ids whose write applied; the others were changed by
    /// someone else meanwhile (the caller reads them again). `writeID` is new for each batch
    /// the caller writes: a backend whose bulk result does not say which writes applied finds
    /// them by it (on the aggregate, or on its history copy if another worker replaced it since).
    func writeAggregates(_ kind: AggregateKind, _ writes: [AggregateWrite], now: EpochMillis, writeID: String) throws -> Set<String>
}

/// Which aggregate: `daily_aggregates` (key: local date) or `monthly_aggregates` (key: month).
public enum AggregateKind: String, Sendable, Hashable {
    case daily, monthly

    /// The collection or table.
    public var collection: String {
        switch self {
        case .daily: return "daily_aggregates"
        case .monthly: return "monthly_aggregates"
        }
    }
}

/// One device on one local date.
public struct DeviceDay: Sendable, Hashable {
    public var esp32Name: String
    public var date: CivilDate

    public init(esp32Name: String, date: CivilDate) {
        self.esp32Name = esp32Name
        self.date = date
    }
}

/// A mark of `ledger_dirty_days`: the ledger changed this device-day.
public struct DirtyDay: Sendable, Hashable {
    /// The mark's own key: the aggregation removes the marks it read, and only those.
    public var id: String
    /// nil for a mark that cannot be read (it is removed all the same).
    public var day: DeviceDay?
    /// The earliest start of an entry the marking step inserted or superseded on the day (nil or
    /// the epoch: not known). The day's entries before it are as they were before that step.
    public var changedFrom: EpochMillis?

    public init(id: String, day: DeviceDay?, changedFrom: EpochMillis? = nil) {
        self.id = id
        self.day = day
        self.changedFrom = changedFrom
    }
}

/// The live ledger entries of one device-day.
public struct DayEntries: Sendable, Equatable {
    /// The classroom of one of the entries (nil when none says one).
    public var classroom: String?
    public var entries: [AggregateEntry]

    public init(classroom: String?, entries: [AggregateEntry]) {
        self.classroom = classroom
        self.entries = entries
    }
}

/// The figures of one aggregate document or row, as written (money already rounded). Fields
/// of the other kind are nil.
public struct AggregateFigures: Sendable, Equatable {
    public var kind: AggregateKind
    /// The local date ("YYYY-MM-DD") of a daily aggregate, the month ("YYYY-MM") of a monthly one.
    public var key: String
    public var esp32Name: String
    public var classroom: String
    public var energyWh: Double
    public var cost: Double?
    public var currency: String?
    /// Daily only.
    public var day: DayDetail?
    /// Monthly only: the number of daily aggregates summed.
    public var days: Int?

    public init(kind: AggregateKind, key: String, esp32Name: String, classroom: String, energyWh: Double, cost: Double?,
                currency: String?, day: DayDetail? = nil, days: Int? = nil) {
        self.kind = kind
        self.key = key
        self.esp32Name = esp32Name
        self.classroom = classroom
        self.energyWh = energyWh
        self.cost = cost
        self.currency = currency
        self.day = day
        self.days = days
    }

    /// The document's `_id` / the row's `id`: "date|esp32_name" or "month|esp32_name".
    public var id: String { AggregateFigures.id(key: key, esp32Name: esp32Name) }

    public static func id(key: String, esp32Name: String) -> String { "\(key)|\(esp32Name)" }
}

/// What a daily aggregate holds beyond the billed figures.
public struct DayDetail: Sendable, Equatable {
    public var costVersionIDs: [String]
    public var coverage: Double
    /// Entries per confidence level (every level present, 0 when none).
    public var confidence: [Confidence: Int]
    public var entries: Int
    public var unpricedWh: Double
    public var overlapMillis: Int64
    public var hourlyWh: [Double]
    /// Energy and cost per tariff version (costs rounded, summing to the day's cost).
    public var costSegments: [CostSegment]
    /// Whether the day was closed when computed (its close job's time had come).
    public var complete: Bool
    /// The day's sums (`DayFold.encoded`, stored as `fold_state`): new entries fold into them.
    /// nil for a day without entries or written by an older version.
    public var fold: String?

    public init(costVersionIDs: [String], coverage: Double, confidence: [Confidence: Int], entries: Int, unpricedWh: Double,
                overlapMillis: Int64, hourlyWh: [Double], costSegments: [CostSegment], complete: Bool, fold: String? = nil) {
        self.fold = fold
        self.costVersionIDs = costVersionIDs
        self.coverage = coverage
        self.confidence = confidence
        self.entries = entries
        self.unpricedWh = unpricedWh
        self.overlapMillis = overlapMillis
        self.hourlyWh = hourlyWh
        self.costSegments = costSegments
        self.complete = complete
    }
}

/// An aggregate as stored: its figures and its version.
public struct StoredAggregate: Sendable, Equatable {
    public var figures: AggregateFigures
    public var version: Int64
    public var computedAt: EpochMillis?
    /// The `writeID` of the write that made this version.
    public var writeID: String?

    public init(figures: AggregateFigures, version: Int64, computedAt: EpochMillis?, writeID: String?) {
        self.figures = figures
        self.version = version
        self.computedAt = computedAt
        self.writeID = writeID
    }
}

/// One versioned write: new figures over the version read.
public struct AggregateWrite: Sendable, Equatable {
    public var figures: AggregateFigures
    /// The version read, which this write replaces; nil: none was stored (this is version 1).
    public var replacing: StoredAggregate?
    /// Whether the replaced version goes to `aggregate_history`.
    public var keepsHistory: Bool

    public init(figures: AggregateFigures, replacing: StoredAggregate?, keepsHistory: Bool) {
        self.figures = figures
        self.replacing = replacing
        self.keepsHistory = keepsHistory
    }

    /// The version this write makes.
    public var version: Int64 { (replacing?.version ?? 0) + 1 }
}

/// `aggregate_history`: replaced versions, one per (aggregate, version).
public enum AggregateHistory {
    public static let collection = "aggregate_history"

    /// "daily|2026-11-05|lab-101|v3"
    public static func id(kind: AggregateKind, aggregateID: String, version: Int64) -> String {
        "\(kind.rawValue)|\(aggregateID)|v\(version)"
    }
}

/// A versioned write that kept losing to other writers (five reads and writes in a row): it may
/// pass by itself, so the stage retries it.
public struct AggregateWriteConflict: StorageFailure, Sendable {
    public var aggregateID: String

    public init(aggregateID: String) { self.aggregateID = aggregateID }

    public var storageDisposition: StorageDisposition { .transient }
    public var storageCode: String { "aggregate_write_conflict" }
    public var storageMessage: String { "aggregate \(aggregateID) kept changing under us" }
    public var description: String { storageMessage }
}
