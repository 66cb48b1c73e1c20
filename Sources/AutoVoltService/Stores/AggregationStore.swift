import AutoVoltCore
import AutoVoltMongo
import Foundation
import Logging
import Synchronization

/// One recalculated aggregate document: what it said before and what it says now.
public struct AggregateChange: Sendable, Encodable, Equatable {
    public var kind: String // "daily" or "monthly"
    public var key: String // date or month
    public var esp32Name: String
    public var classroom: String
    public var oldEnergyWh: Double?
    public var newEnergyWh: Double
    public var oldCost: Double?
    public var newCost: Double?
    public var version: Int64
    /// Whether a billed figure (energy, cost, currency, tariff ids) differs from before; a
    /// recalculation bumps the version either way.
    public var figuresChanged: Bool

    enum CodingKeys: String, CodingKey {
        case kind, key, classroom, version
        case esp32Name = "esp32_name", oldEnergyWh = "old_energy_wh", newEnergyWh = "new_energy_wh"
        case oldCost = "old_cost", newCost = "new_cost"
    }
}

/// What `recalculate` answers (CLI `--json` and HTTP): how many aggregates were recalculated,
/// each with a new version, how many of them changed figures, and those changes, listed up to
/// `listedChanges` (a tariff change can reach every aggregate of years: the counts are whole,
/// the list is for reading, and memory stays the same however many there are).
public struct RecalculationReport: Sendable, Encodable {
    public static let listedChanges = 1_000
    public var recalculated = 0
    public var changedCount = 0
    public var changed: [AggregateChange] = []

    enum CodingKeys: String, CodingKey {
        case recalculated, changed
        case changedCount = "changed_count"
    }

    public init() {}

    public init(_ recalculated: [AggregateChange]) { add(recalculated) }

    mutating func add(_ changes: [AggregateChange]) {
        recalculated += changes.count
        for change in changes where change.figuresChanged {
            changedCount += 1
            if changed.count < Self.listedChanges { changed.append(change) }
        }
    }
}

/// Keeps `daily_aggregates` and `monthly_aggregates` equal to the sums of live billable ledger
/// entries, priced by the tariff in force when the energy was used (contract rules 7 and 8).
/// Every recomputation of a document bumps its `version` (contract section 4: "incremented on
/// every recalculation") and keeps the previous figures in `aggregate_history` (except the
/// intermediate figures of a day or month still in progress, see `History`); figures that did
/// not change stay the same, so recalculating twice gives the same figures.
///
/// One piece of logic for every backend: the data operations are an `AggregationStorage`
/// (MongoDB or PostgreSQL).
///
/// Blocking: call from a dedicated thread (or through MongoExecutor).
// @unchecked: `beforeVersionedWrite` is a test hook set before the store is used; the registry,
// which the ledger thread replaces on SIGHUP while the scheduler's reads it, is under a Mutex.
public final class AggregationStore: @unchecked Sendable {
    static let historyCollection = AggregateHistory.collection

    let storage: any AggregationStorage
    private let currentRegistry: Mutex<DeviceRegistry>
    /// Replaced when the registry is reloaded (SIGHUP), from any thread.
    var registry: DeviceRegistry {
        get { currentRegistry.withLock { $0 } }
        set { currentRegistry.withLock { $0 = newValue } }
    }
    let timeZone: TimeZone
    let logger: Logger
    /// Days computed by folding only their new entries into the stored sums, and days read whole.
    public struct FoldCounters: Sendable, Equatable {
        public var folded = 0
        public var readWhole = 0
    }
    private let foldCounters = Mutex(FoldCounters())
    public var folds: FoldCounters { foldCounters.withLock { $0 } }
    /// Tests only: runs between reading the stored versions and writing, to stage a race.
    var beforeVersionedWrite: (() -> Void)?
    /// Minutes after local midnight from which a day counts as complete (its close job).
    let closeDelayMillis: Int64 = 5 * 60_000

    public init(storage: any AggregationStorage, registry: DeviceRegistry, timeZone: TimeZone, logger: Logger) {
        self.storage = storage
        self.currentRegistry = Mutex(registry)
        self.timeZone = timeZone
        self.logger = logger
    }

    /// On MongoDB.
    public convenience init(client: MongoClient, registry: DeviceRegistry, timeZone: TimeZone, writeConcern: WriteConcern, logger: Logger) {
        self.init(storage: MongoAggregationStorage(client: client, writeConcern: writeConcern), registry: registry, timeZone: timeZone,
                  logger: logger)
    }

    // MARK: Tariffs

    /// Every tariff version: pricing needs the whole book (a few documents per tariff change).
    public func listTariffs() throws -> [Tariff] {
        try storage.tariffs()
    }

    public func tariffBook() throws -> TariffBook { TariffBook(try listTariffs()) }

    public struct TariffChange: Sendable, Encodable {
        public var tariff: TariffDocument
        /// How many aggregates were recalculated (each got a new version).
        public var recalculated: Int
        /// How many of them changed figures, and those changes (up to `RecalculationReport.listedChanges`).
        public var changedCount: Int
        public var changes: [AggregateChange]

        enum CodingKeys: String, CodingKey {
            case tariff, recalculated, changes
            case changedCount = "changed_count"
        }
    }

    /// A tariff for a classroom the registry does not know: it would price nothing, and its name
    /// would be shown on every page that lists tariffs.
    public struct UnknownClassroom: Error, Sendable, CustomStringConvertible {
        public let classroom: String
        public let known: [String]
        public var description: String {
            "classroom \"\(classroom)\" is not in the device registry; known classrooms: \(known.isEmpty ? "none" : known.joined(separator: ", "))"
        }
    }

    /// Refuses a classroom no board of `registry` is in (nil: every classroom, always allowed).
    public static func checkClassroom(_ classroom: String?, in registry: DeviceRegistry) throws(UnknownClassroom) {
        guard let classroom else { return }
        let known = Set(registry.devices.values.map(\.classroom))
        guard known.contains(classroom) else { throw UnknownClassroom(classroom: classroom, known: known.sorted()) }
    }

    /// Adds a version (never edits one) and recalculates every day and month it reaches, a page
    /// of days at a time in date order (each month once, when its last page is done). A classroom
    /// the registry does not know is refused (`UnknownClassroom`) before anything is stored.
    public func addTariff(costPerKwh: Double, currency: String, effectiveFrom: EpochMillis, classroom: String?, notes: String?,
                          now: EpochMillis) throws -> TariffChange {
        try Self.checkClassroom(classroom, in: registry)
        let id = "tv-\(ISO8601.format(now).filter(\.isNumber).prefix(17))-\(UUID().uuidString.prefix(6).lowercased())"
        let tariff = Tariff(id: id, costPerKwh: costPerKwh, currency: currency, effectiveFrom: effectiveFrom,
                            classroom: classroom, createdAt: now, notes: notes)
        try storage.insertTariff(tariff)
        var calendar = LocalCalendar(timeZone: timeZone)
        let firstDate = calendar.date(of: effectiveFrom)
        var run = Recalculation()
        var after: DeviceDay?
        while true {
            let days = try storage.aggregatedDays(from: firstDate, classroom: classroom, after: after, limit: Self.pageSize)
            try run.days(days.map { ($0.esp32Name, $0.date) }, store: self, now: now)
            guard days.count == Self.pageSize, let last = days.last else { break }
            after = last
        }
        try run.finish(store: self, now: now)
        let report = run.report
        logger.notice("tariff added", metadata: [
            "id": "\(id)", "cost_per_kwh": "\(costPerKwh)", "currency": "\(currency)", "effective_from": "\(ISO8601.format(effectiveFrom))",
            "classroom": "\(classroom ?? "all")", "aggregates_recalculated": "\(report.recalculated)", "aggregates_changed": "\(report.changedCount)",
        ])
        for change in report.changed where change.oldCost != change.newCost {
            logger.notice("cost recalculated", metadata: [
                "esp32_name": "\(change.esp32Name)", "\(change.kind)": "\(change.key)",
                "old_cost": "\(change.oldCost.map { "\($0)" } ?? "null")", "new_cost": "\(change.newCost.map { "\($0)" } ?? "null")",
            ])
        }
        return TariffChange(tariff: TariffDocument(tariff, timeZone: timeZone), recalculated: report.recalculated,
                            changedCount: report.changedCount, changes: report.changed)
    }

    static let pageSize = 1_000

    // MARK: Recalculation

    /// Rebuilds the aggregates of the local dates `start...end` (inclusive) from the ledger, a
    /// date at a time (the devices of one date, found by the database), each month once.
    public func recalculate(start: CivilDate, end: CivilDate, classroom: String?, esp32Name: String?,
                            now: EpochMillis) throws -> RecalculationReport {
        var run = Recalculation()
        guard start <= end else { return run.report }
        for day in start.daysSinceEpoch...end.daysSinceEpoch {
            let date = CivilDate(daysSinceEpoch: day)
            let names = try storage.devicesToRecompute(on: date, classroom: classroom, esp32Name: esp32Name)
            try run.days(names.sorted().map { ($0, date) }, store: self, now: now)
        }
        try run.finish(store: self, now: now)
        return run.report
    }

    /// Days the ledger changed (`ledger_dirty_days`), oldest mark first; the marks read are
    /// removed once their days are recomputed (a mark made meanwhile stays for the next round).
    public func processDirtyDays(now: EpochMillis, limit: Int = 500) throws -> Int {
        let dirty = try storage.dirtyDays(limit: limit, now: now)
        guard !dirty.isEmpty else { return 0 }
        var run = Recalculation(history: .closedPeriodsOnly)
        for mark in dirty {
            if let day = mark.day, let from = mark.changedFrom { run.changedFrom[day] = min(run.changedFrom[day] ?? .max, from) }
        }
        try run.days(dirty.compactMap { $0.day.map { ($0.esp32Name, $0.date) } }, store: self, now: now)
        try run.finish(store: self, now: now)
        try storage.clearDirtyDays(dirty)
        return dirty.count
    }

    /// The day close: every device with entries or an aggregate that day is recomputed, now
    /// `complete`.
    public func closeDay(_ date: CivilDate, now: EpochMillis) throws -> RecalculationReport {
        try recalculate(start: date, end: date, classroom: nil, esp32Name: nil, now: now)
    }

    /// Which replaced versions go to `aggregate_history`.
    enum History {
        /// Every one: recalculations, tariff changes and day closes, which can change a bill.
        case always
        /// Only those of closed days and past months: the live updates of today's figures (one
        /// per ledger step, thousands a day per device) explain no bill and would fill the disk.
        case closedPeriodsOnly
    }

    /// One recalculation: days handed in date order, each month recomputed once after its
    /// days (when the days move past it, or at the end), in batches: a batch of days or months
    /// costs the database the same few round trips as one. Holds one month's device names and
    /// the report, however many days it reaches.
    struct Recalculation {
        var history: History = .always
        /// Days the ledger marked with the earliest start it changed: a stored fold of entries all
        /// before it takes only the entries after them. Days not here are read whole.
        var changedFrom: [DeviceDay: EpochMillis] = [:]
        var report = RecalculationReport()
        /// Months whose days changed and that are not recomputed yet: month -> device names.
        var pendingMonths: [String: Set<String>] = [:]

        mutating func days(_ pairs: [(String, CivilDate)], store: AggregationStore, now: EpochMillis) throws {
            for start in stride(from: 0, to: pairs.count, by: AggregationStore.dayBatchSize) {
                let batch = Array(pairs[start..<min(start + AggregationStore.dayBatchSize, pairs.count)])
                report.add(try store.recomputeDays(batch, changedFrom: changedFrom, now: now, history: history))
            }
            for (name, date) in pairs { pendingMonths[Aggregator.monthKey(date), default: []].insert(name) }
            // Days arrive in date order: the months before the last day's have all their days.
            if let last = pairs.map(\.1).max() {
                let current = Aggregator.monthKey(last)
                for month in pendingMonths.keys.sorted() where month < current { try flush(month, store: store, now: now) }
            }
        }

        mutating func finish(store: AggregationStore, now: EpochMillis) throws {
            for month in pendingMonths.keys.sorted() { try flush(month, store: store, now: now) }
        }

        private mutating func flush(_ month: String, store: AggregationStore, now: EpochMillis) throws {
            let names = (pendingMonths.removeValue(forKey: month) ?? []).sorted()
            for start in stride(from: 0, to: names.count, by: AggregationStore.monthBatchSize) {
                report.add(try store.recomputeMonths(month, names: Array(names[start..<min(start + AggregationStore.monthBatchSize, names.count)]),
                                                     now: now, history: history))
            }
        }
    }

    static let dayBatchSize = 50
    static let monthBatchSize = 200

    /// Days are folded (`DayFold`): a day whose stored fold ends before the earliest entry the
    /// ledger changed since (`changedFrom`) takes only the entries after the fold's last one;
    /// any other day (no mark, no stored fold, another tariff book, a change at or before the
    /// fold's last entry) is folded again from all its entries. Both give the same figures.
    fileprivate func recomputeDays(_ pairs: [(String, CivilDate)], changedFrom: [DeviceDay: EpochMillis], now: EpochMillis,
                                   history: History) throws -> [AggregateChange] {
        var seen = Set<DeviceDay>()
        let days = pairs.map { DeviceDay(esp32Name: $0.0, date: $0.1) }.filter { seen.insert($0).inserted }
        return try storeRecomputed(.daily, days, id: Self.dailyID, now: now, history: history) { days, existing in
            // The book is read with the entries, after the versions (see `storeRecomputed`): a
            // tariff added meanwhile is either in it or its recalculation bumped a version.
            let tariffs = TariffBook(try self.storage.tariffs())
            var calendar = LocalCalendar(timeZone: self.timeZone)
            var folds: [DeviceDay: (fold: DayFold, book: ClassroomTariffs)] = [:]
            for day in days {
                guard let from = changedFrom[day], let text = existing[Self.dailyID(day)]?.figures.day?.fold,
                      let fold = DayFold(encoded: text, calendar: &calendar), let last = fold.last, last.start < from else { continue }
                let book = tariffs.segments(classroom: fold.classroom)
                if fold.continues(date: day.date, tariffs: tariffs, book: book, calendar: &calendar) { folds[day] = (fold, book) }
            }
            // A day's figures need all its entries (2,880 a day per device at most) unless it
            // folds: the batch of days bounds them.
            var byDay = try self.storage.liveEntries(of: days, after: folds.compactMapValues(\.fold.last))
            let registry = self.registry
            var results: [DeviceDay: (DailyFigures, DayFold?)] = [:]
            var unordered: [DeviceDay] = []
            for key in days {
                if let (stored, book) = folds[key] {
                    var fold = stored
                    if fold.add(byDay[key]?.entries ?? [], book: book) {
                        results[key] = (fold.figures(date: key.date, esp32Name: key.esp32Name, book: book), fold)
                        continue
                    }
                    unordered.append(key) // not after the fold after all: read the day whole
                    continue
                }
                results[key] = Self.foldWhole(key, byDay[key], tariffs: tariffs, registry: registry, calendar: &calendar)
            }
            if !unordered.isEmpty {
                self.logger.warning("aggregation: entries before a day's folded ones; reading the days whole",
                                    metadata: ["days": "\(unordered.map(Self.dailyID))"])
                byDay = try self.storage.liveEntries(of: unordered, after: [:])
                for key in unordered {
                    results[key] = Self.foldWhole(key, byDay[key], tariffs: tariffs, registry: registry, calendar: &calendar)
                }
            }
            self.foldCounters.withLock {
                $0.folded += folds.count - unordered.count
                $0.readWhole += days.count - folds.count + unordered.count
            }
            return days.compactMap { key in
                guard let (figures, fold) = results[key] else { return nil }
                let dayEnd = calendar.startOfDay(CivilDate(daysSinceEpoch: key.date.daysSinceEpoch + 1))
                var confidence: [Confidence: Int] = [:]
                for level in Confidence.allCases { confidence[level] = figures.confidence[level] ?? 0 }
                return AggregateFigures(
                    kind: .daily, key: key.date.description, esp32Name: key.esp32Name, classroom: figures.classroom,
                    energyWh: figures.energyWh, cost: figures.cost.map(Self.roundMoney), currency: figures.currency,
                    day: DayDetail(costVersionIDs: figures.costVersionIDs, coverage: figures.coverage, confidence: confidence,
                                   entries: figures.entries, unpricedWh: figures.unpricedWh, overlapMillis: figures.overlapMillis,
                                   hourlyWh: figures.hourlyWh, costSegments: Self.costSegments(figures),
                                   complete: now >= dayEnd + self.closeDelayMillis, fold: fold?.encoded))
            }
        }
    }

    static func dailyID(_ day: DeviceDay) -> String { AggregateFigures.id(key: day.date.description, esp32Name: day.esp32Name) }

    /// A day folded from all its live entries (in time order, as the storage gives them), with its
    /// fold to store (none for a day without entries: its classroom is the registry's, and the
    /// first entry to come may say another).
    static func foldWhole(_ key: DeviceDay, _ day: DayEntries?, tariffs: TariffBook, registry: DeviceRegistry,
                          calendar: inout LocalCalendar) -> (DailyFigures, DayFold?) {
        let entries = day?.entries ?? []
        let classroom = day?.classroom ?? registry.resolve(key.esp32Name).classroom
        let book = tariffs.segments(classroom: classroom)
        var fold = DayFold(date: key.date, classroom: classroom, tariffs: tariffs, book: book, calendar: &calendar)
        if entries.isEmpty || !fold.add(entries, book: book) {
            return (Aggregator.daily(date: key.date, esp32Name: key.esp32Name, classroom: classroom, entries: entries, tariffs: tariffs,
                                     calendar: &calendar), nil)
        }
        return (fold.figures(date: key.date, esp32Name: key.esp32Name, book: book), fold)
    }

    fileprivate func recomputeMonths(_ month: String, names: [String], now: EpochMillis, history: History) throws -> [AggregateChange] {
        try storeRecomputed(.monthly, names, id: { AggregateFigures.id(key: month, esp32Name: $0) }, now: now, history: history) { names, _ in
            let byDevice = try self.storage.dailyFigures(month: month, esp32Names: names)
            let registry = self.registry
            return names.map { name in
                let days = byDevice[name] ?? []
                let total = Aggregator.monthly(month: month, days: days)
                let classroom = days.last?.classroom ?? registry.resolve(name).classroom
                return AggregateFigures(kind: .monthly, key: month, esp32Name: name, classroom: classroom, energyWh: total.energyWh,
                                        cost: total.cost.map(Self.roundMoney), currency: total.currency, days: total.days)
            }
        }
    }

    /// Computes and writes aggregates with optimistic concurrency: the stored versions are read
    /// first, then the inputs (`compute`), and each write applies only if its aggregate is still
    /// the version read; the old version goes to `aggregate_history`, the new one gets
    /// `version + 1`. The aggregates whose write did not apply are computed again from fresh
    /// inputs and written again: whoever wrote meanwhile may have read newer entries or tariffs,
    /// and writing figures computed before their write would put stale figures on top (a day
    /// close overwrote the aggregation stage's newer figures this way, and nothing marked the
    /// day dirty again). Reading the versions before the inputs is what makes a write that
    /// applies the newest: any write based on later inputs bumps the version first.
    private func storeRecomputed<Key>(_ kind: AggregateKind, _ keys: [Key], id: (Key) -> String, now: EpochMillis, history keep: History,
                                      compute: ([Key], [String: StoredAggregate]) throws -> [AggregateFigures]) throws -> [AggregateChange] {
        let keepsHistory = historyRule(kind: kind, now: now, keep)
        var pending = keys
        var changes: [AggregateChange] = []
        for _ in 0..<Self.writeAttempts {
            guard !pending.isEmpty else { return changes }
            let existing = try storage.aggregates(kind, ids: pending.map(id))
            let items = try compute(pending, existing)
            beforeVersionedWrite?()
            let writes = items.map { item in
                AggregateWrite(figures: item, replacing: existing[item.id], keepsHistory: existing[item.id].map(keepsHistory) ?? false)
            }
            // Marks this attempt's writes, so that after a lost race the storage can tell which
            // of them applied (stored now, or already replaced and in the history).
            let applied = try storage.writeAggregates(kind, writes, now: now, writeID: UUID().uuidString)
            var lost: [Key] = []
            for (key, item) in zip(pending, items) {
                if applied.contains(item.id) {
                    changes.append(Self.change(item, old: existing[item.id]))
                } else {
                    lost.append(key)
                }
            }
            pending = lost
        }
        guard let first = pending.first else { return changes }
        throw AggregateWriteConflict(aggregateID: id(first))
    }

    /// How often an aggregate is computed and written before a conflict is an error: each lost
    /// race means another worker wrote it meanwhile, so a few are rare and many are a fault.
    static let writeAttempts = 6

    /// Whether a replaced version goes to the history (see `History`); decided once per write.
    private func historyRule(kind: AggregateKind, now: EpochMillis, _ keep: History) -> (StoredAggregate) -> Bool {
        switch keep {
        case .always:
            return { _ in true }
        case .closedPeriodsOnly where kind == .daily:
            return { $0.figures.day?.complete == true }
        case .closedPeriodsOnly:
            var calendar = LocalCalendar(timeZone: timeZone)
            let currentMonth = Aggregator.monthKey(calendar.date(of: now))
            return { $0.figures.key < currentMonth }
        }
    }

    static func change(_ item: AggregateFigures, old: StoredAggregate?) -> AggregateChange {
        AggregateChange(kind: item.kind.rawValue, key: item.key, esp32Name: item.esp32Name, classroom: item.classroom,
                        oldEnergyWh: old?.figures.energyWh, newEnergyWh: item.energyWh,
                        oldCost: old?.figures.cost, newCost: item.cost,
                        version: (old?.version ?? 0) + 1,
                        figuresChanged: old.map { !sameBilledFigures($0.figures, item) } ?? true)
    }

    /// The money figures a bill shows (energy, cost, currency, tariff versions): what "changed"
    /// means in a recalculation's report.
    static func sameBilledFigures(_ a: AggregateFigures, _ b: AggregateFigures) -> Bool {
        func same(_ x: Double?, _ y: Double?) -> Bool {
            guard let x, let y else { return x == nil && y == nil }
            return abs(x - y) <= 1e-9 * max(1, abs(x), abs(y))
        }
        return same(a.energyWh, b.energyWh) && same(a.cost, b.cost) && a.currency == b.currency
            && a.day?.costVersionIDs == b.day?.costVersionIDs
    }

    static func historyID(kind: AggregateKind, id: String, version: Int64) -> String {
        AggregateHistory.id(kind: kind, aggregateID: id, version: version)
    }

    /// Money is stored to 1/10,000 of the currency unit (sums of many small intervals otherwise
    /// carry floating-point dust into the bill).
    static func roundMoney(_ value: Double) -> Double { Double(FixedPoint.money(value)) / Double(FixedPoint.moneyScale) }

    /// The day's energy and cost per tariff version; the costs, rounded like `cost`, add up to it exactly.
    static func costSegments(_ figures: DailyFigures) -> [CostSegment] {
        let parts = figures.costSegments.map(\.cost)
        let costs = figures.cost.map { FixedPoint.apportion(total: FixedPoint.money($0), parts: parts, scale: FixedPoint.moneyScale) }
            ?? parts.map(FixedPoint.money)
        return zip(figures.costSegments, costs).map { segment, cost in
            CostSegment(costVersionID: segment.costVersionID, costPerKwh: segment.costPerKwh, energyWh: segment.energyWh,
                        cost: Double(cost) / Double(FixedPoint.moneyScale))
        }
    }

    // MARK: Documents

    /// A tariff as its `cost_versions` document (tests store versions directly).
    static func document(_ t: Tariff) -> BSONDocument { MongoAggregationStorage.document(t) }

    static func tariff(_ doc: BSONDocument) -> Tariff? { MongoAggregationStorage.tariff(doc) }
}

/// A tariff version as the CLI and the HTTP API show it.
public struct TariffDocument: Sendable, Encodable {
    public var id: String
    public var costPerKwh: Double
    public var currency: String
    public var effectiveFrom: String
    public var classroom: String?
    public var notes: String?
    public var createdAt: String

    /// Instants in local time with their offset (`2026-11-01T00:00:00.000+05:30` for a tariff
    /// added as "2026-11-01" in Asia/Kolkata), so the date an operator typed is the date shown.
    public init(_ t: Tariff, timeZone: TimeZone) {
        func local(_ millis: EpochMillis) -> String {
            ISO8601.format(millis, in: timeZone)
        }
        id = t.id
        costPerKwh = t.costPerKwh
        currency = t.currency
        effectiveFrom = local(t.effectiveFrom)
        classroom = t.classroom
        notes = t.notes
        createdAt = local(t.createdAt)
    }

    enum CodingKeys: String, CodingKey {
        case id, currency, classroom, notes
        case costPerKwh = "cost_per_kwh", effectiveFrom = "effective_from", createdAt = "created_at"
    }

    // Encode nil as null so every document has the same keys.
    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(costPerKwh, forKey: .costPerKwh)
        try c.encode(currency, forKey: .currency)
        try c.encode(effectiveFrom, forKey: .effectiveFrom)
        try c.encode(classroom, forKey: .classroom)
        try c.encode(notes, forKey: .notes)
        try c.encode(createdAt, forKey: .createdAt)
    }
}
