import AutoVoltCore
import AutoVoltMongo
import Foundation
import Logging

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
/// Blocking: call from a dedicated thread (or through MongoExecutor).
public final class AggregationStore: @unchecked Sendable {
    static let historyCollection = "aggregate_history"

    let client: MongoClient
    // Replaced by the owning thread when the registry is reloaded (SIGHUP).
    var registry: DeviceRegistry
    let timeZone: TimeZone
    let writeConcern: WriteConcern
    let logger: Logger
    /// Tests only: runs between reading the stored versions and writing, to stage a race.
    var beforeVersionedWrite: (() -> Void)?
    /// Minutes after local midnight from which a day counts as complete (its close job).
    let closeDelayMillis: Int64 = 5 * 60_000

    public init(client: MongoClient, registry: DeviceRegistry, timeZone: TimeZone, writeConcern: WriteConcern, logger: Logger) {
        self.client = client
        self.registry = registry
        self.timeZone = timeZone
        self.writeConcern = writeConcern
        self.logger = logger
    }

    // MARK: Tariffs

    /// Every tariff version: pricing needs the whole book (a few documents per tariff change).
    public func listTariffs() throws(MongoError) -> [Tariff] {
        var tariffs: [Tariff] = []
        try client.forEachBatch(Collections.costVersions, filter: [:], sort: ["effective_from": 1, "created_at": 1]) { batch in
            tariffs += batch.compactMap(Self.tariff)
        }
        return tariffs
    }

    public func tariffBook() throws(MongoError) -> TariffBook { TariffBook(try listTariffs()) }

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

    /// Adds a version (never edits one) and recalculates every day and month it reaches, a page
    /// of days at a time in date order (each month once, when its last page is done).
    public func addTariff(costPerKwh: Double, currency: String, effectiveFrom: EpochMillis, classroom: String?, notes: String?,
                          now: EpochMillis) throws(MongoError) -> TariffChange {
        let id = "tv-\(ISO8601.format(now).filter(\.isNumber).prefix(17))-\(UUID().uuidString.prefix(6).lowercased())"
        let tariff = Tariff(id: id, costPerKwh: costPerKwh, currency: currency, effectiveFrom: effectiveFrom,
                            classroom: classroom, createdAt: now, notes: notes)
        _ = try client.insertMany([Self.document(tariff)], into: Collections.costVersions, ordered: true, writeConcern: writeConcern)
        var calendar = LocalCalendar(timeZone: timeZone)
        let firstDate = calendar.date(of: effectiveFrom)
        var filter: BSONDocument = ["date": ["$gte": .string(firstDate.description)]]
        if let classroom { filter["classroom"] = .string(classroom) }
        var run = Recalculation(tariffs: try tariffBook())
        // A daily aggregate's _id is "date|esp32_name": pages in _id order are in date order.
        var after: String?
        while true {
            var page = filter
            if let after { page["_id"] = ["$gt": .string(after)] }
            let docs = try client.find(Collections.dailyAggregates, filter: page, sort: ["_id": 1], projection: ["date": 1, "esp32_name": 1],
                                       limit: Self.pageSize)
            try run.days(docs.compactMap { doc -> (String, CivilDate)? in
                guard let name = doc["esp32_name"]?.stringValue, let date = doc["date"]?.stringValue.flatMap(CivilDate.init) else { return nil }
                return (name, date)
            }, store: self, now: now)
            guard docs.count == Self.pageSize, let last = docs.last?["_id"]?.stringValue else { break }
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
                            now: EpochMillis) throws(MongoError) -> RecalculationReport {
        var run = Recalculation(tariffs: try tariffBook())
        guard start <= end else { return run.report }
        for day in start.daysSinceEpoch...end.daysSinceEpoch {
            let date = CivilDate(daysSinceEpoch: day)
            var filter: BSONDocument = ["date": .string(date.description), "superseded_by": ["$exists": false]]
            if let classroom { filter["classroom"] = .string(classroom) }
            if let esp32Name { filter["esp32_name"] = .string(esp32Name) }
            var names = Set<String>()
            try client.aggregateBatches(Collections.ledgers, pipeline: [["$match": .document(filter)], ["$group": ["_id": "$esp32_name"]]]) { batch in
                for doc in batch { if let name = doc["_id"]?.stringValue { names.insert(name) } }
            }
            // Days that have an aggregate but no entries any more must go to zero too.
            var aggregateFilter: BSONDocument = ["date": .string(date.description)]
            if let classroom { aggregateFilter["classroom"] = .string(classroom) }
            if let esp32Name { aggregateFilter["esp32_name"] = .string(esp32Name) }
            try client.forEachBatch(Collections.dailyAggregates, filter: aggregateFilter, projection: ["esp32_name": 1]) { batch in
                for doc in batch { if let name = doc["esp32_name"]?.stringValue { names.insert(name) } }
            }
            try run.days(names.sorted().map { ($0, date) }, store: self, now: now)
        }
        try run.finish(store: self, now: now)
        return run.report
    }

    /// Days the ledger changed (`ledger_dirty_days`), oldest mark first; each is removed once
    /// recomputed unless it was marked again meanwhile.
    public func processDirtyDays(now: EpochMillis, limit: Int = 500) throws(MongoError) -> Int {
        let dirty = try client.find(LedgerStore.dirtyDaysCollection, filter: [:], sort: ["dirty_at": 1], limit: limit)
        guard !dirty.isEmpty else { return 0 }
        let pairs = dirty.compactMap { doc -> (String, CivilDate)? in
            guard let name = doc["esp32_name"]?.stringValue, let date = doc["date"]?.stringValue.flatMap(CivilDate.init) else { return nil }
            return (name, date)
        }
        var run = Recalculation(tariffs: try tariffBook(), history: .closedPeriodsOnly)
        try run.days(pairs, store: self, now: now)
        try run.finish(store: self, now: now)
        // Each mark goes unless the ledger marked the day again meanwhile.
        let done: [WriteModel] = dirty.compactMap { doc -> WriteModel? in
            guard let id = doc["_id"], let at = doc["dirty_at"] else { return nil }
            return .deleteOne(["_id": id, "dirty_at": at])
        }
        try client.bulkWrite(LedgerStore.dirtyDaysCollection, operations: done, ordered: false, writeConcern: writeConcern).writeErrors.throwUnlessDuplicateKeys()
        return dirty.count
    }

    /// The day close: every device with entries or an aggregate that day is recomputed, now
    /// `complete`.
    public func closeDay(_ date: CivilDate, now: EpochMillis) throws(MongoError) -> RecalculationReport {
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
        let tariffs: TariffBook
        var history: History = .always
        var report = RecalculationReport()
        /// Months whose days changed and that are not recomputed yet: month -> device names.
        var pendingMonths: [String: Set<String>] = [:]

        mutating func days(_ pairs: [(String, CivilDate)], store: AggregationStore, now: EpochMillis) throws(MongoError) {
            for start in stride(from: 0, to: pairs.count, by: AggregationStore.dayBatchSize) {
                let batch = Array(pairs[start..<min(start + AggregationStore.dayBatchSize, pairs.count)])
                report.add(try store.recomputeDays(batch, tariffs: tariffs, now: now, history: history))
            }
            for (name, date) in pairs { pendingMonths[Aggregator.monthKey(date), default: []].insert(name) }
            // Days arrive in date order: the months before the last day's have all their days.
            if let last = pairs.map(\.1).max() {
                let current = Aggregator.monthKey(last)
                for month in pendingMonths.keys.sorted() where month < current { try flush(month, store: store, now: now) }
            }
        }

        mutating func finish(store: AggregationStore, now: EpochMillis) throws(MongoError) {
            for month in pendingMonths.keys.sorted() { try flush(month, store: store, now: now) }
        }

        private mutating func flush(_ month: String, store: AggregationStore, now: EpochMillis) throws(MongoError) {
            let names = (pendingMonths.removeValue(forKey: month) ?? []).sorted()
            for start in stride(from: 0, to: names.count, by: AggregationStore.monthBatchSize) {
                report.add(try store.recomputeMonths(month, names: Array(names[start..<min(start + AggregationStore.monthBatchSize, names.count)]),
                                                     now: now, history: history))
            }
        }
    }

    static let dayBatchSize = 50
    static let monthBatchSize = 200

    fileprivate func recomputeDays(_ pairs: [(String, CivilDate)], tariffs: TariffBook, now: EpochMillis,
                               history: History) throws(MongoError) -> [AggregateChange] {
        var seen = Set<String>()
        let pairs = pairs.filter { seen.insert("\($0.0)|\($0.1)").inserted }
        guard !pairs.isEmpty else { return [] }
        let clauses: [BSON] = pairs.map { ["esp32_name": .string($0.0), "date": .string($0.1.description)] }
        // A day's figures need all its entries (2,880 a day per device at most): the batch of
        // days bounds them. Kept as the small AggregateEntry, not as documents.
        var byDay: [String: (entries: [AggregateEntry], classroom: String?)] = [:]
        try client.forEachBatch(Collections.ledgers, filter: ["$or": .array(clauses), "superseded_by": ["$exists": false]],
                                projection: ["esp32_name": 1, "date": 1, "start_ts": 1, "end_ts": 1, "delta_wh": 1, "billable": 1,
                                             "quality": 1, "classroom": 1]) { batch in
            for doc in batch {
                guard let name = doc["esp32_name"]?.stringValue, let date = doc["date"]?.stringValue,
                      let start = doc["start_ts"]?.dateValue, let end = doc["end_ts"]?.dateValue, let delta = doc["delta_wh"]?.doubleValue else { continue }
                let confidence = doc["quality"]?.documentValue?["confidence"]?.stringValue.flatMap(Confidence.init) ?? .low
                let key = "\(name)|\(date)"
                byDay[key, default: ([], nil)].entries.append(AggregateEntry(start: LedgerStore.millis(start), end: LedgerStore.millis(end), deltaWh: delta,
                                                                            billable: doc["billable"]?.boolValue ?? false, confidence: confidence))
                if byDay[key]?.classroom == nil { byDay[key]?.classroom = doc["classroom"]?.stringValue }
            }
        }
        var calendar = LocalCalendar(timeZone: timeZone)
        let items = pairs.map { name, date in
            let day = byDay["\(name)|\(date)"]
            let entries = day?.entries ?? []
            let classroom = day?.classroom ?? registry.resolve(name).classroom
            let figures = Aggregator.daily(date: date, esp32Name: name, classroom: classroom, entries: entries, tariffs: tariffs, calendar: &calendar)
            let dayEnd = calendar.startOfDay(CivilDate(daysSinceEpoch: date.daysSinceEpoch + 1))
            let fields: BSONDocument = [
                "date": .string(date.description),
                "esp32_name": .string(name),
                "classroom": .string(classroom),
                "energy_wh": .double(figures.energyWh),
                "cost": figures.cost.map { .double(Self.roundMoney($0)) } ?? .null,
                "currency": figures.currency.map { .string($0) } ?? .null,
                "cost_version_ids": .array(figures.costVersionIDs.map { .string($0) }),
                "coverage": .double(figures.coverage),
                "confidence": .document(BSONDocument(Confidence.allCases.map { ($0.rawValue, .int64(Int64(figures.confidence[$0] ?? 0))) })),
                "entries": .int64(Int64(figures.entries)),
                "unpriced_wh": .double(figures.unpricedWh),
                "overlap_ms": .int64(figures.overlapMillis),
                "hourly_wh": .array(figures.hourlyWh.map { .double($0) }),
                "cost_segments": Self.costSegments(figures),
                "complete": .bool(now >= dayEnd + closeDelayMillis),
            ]
            return Figures(id: "\(date)|\(name)", key: date.description, name: name, classroom: classroom, fields: fields)
        }
        return try store(Collections.dailyAggregates, kind: "daily", items, now: now, history: history)
    }

    fileprivate func recomputeMonths(_ month: String, names: [String], now: EpochMillis, history: History) throws(MongoError) -> [AggregateChange] {
        let days = try client.find(Collections.dailyAggregates, filter: [
            "esp32_name": LedgerStore.oneOf(names), "date": ["$gte": .string("\(month)-01"), "$lte": .string("\(month)-31")],
        ], sort: ["date": 1], limit: names.count * 31)
        var byDevice: [String: [BSONDocument]] = [:]
        for doc in days { if let name = doc["esp32_name"]?.stringValue { byDevice[name, default: []].append(doc) } }
        let items = names.map { name in
            let days = byDevice[name] ?? []
            let figures = days.map { doc in
                DailyFigures(date: doc["date"]?.stringValue.flatMap(CivilDate.init) ?? CivilDate(year: 1970, month: 1, day: 1),
                             esp32Name: name, classroom: doc["classroom"]?.stringValue ?? "", energyWh: doc["energy_wh"]?.doubleValue ?? 0,
                             cost: doc["cost"]?.doubleValue, currency: doc["currency"]?.stringValue, costVersionIDs: [],
                             coverage: doc["coverage"]?.doubleValue ?? 0, confidence: [:], entries: 0, unpricedWh: 0)
            }
            let total = Aggregator.monthly(month: month, days: figures)
            let classroom = days.last?["classroom"]?.stringValue ?? registry.resolve(name).classroom
            let fields: BSONDocument = [
                "month": .string(month),
                "esp32_name": .string(name),
                "classroom": .string(classroom),
                "energy_wh": .double(total.energyWh),
                "cost": total.cost.map { .double(Self.roundMoney($0)) } ?? .null,
                "currency": total.currency.map { .string($0) } ?? .null,
                "days": .int64(Int64(total.days)),
            ]
            return Figures(id: "\(month)|\(name)", key: month, name: name, classroom: classroom, fields: fields)
        }
        return try store(Collections.monthlyAggregates, kind: "monthly", items, now: now, history: history)
    }

    /// Newly computed figures of one aggregate document.
    struct Figures {
        var id: String
        var key: String
        var name: String
        var classroom: String
        var fields: BSONDocument
    }

    /// Writes the recomputed figures: the old document goes to `aggregate_history`, the new one
    /// gets `version + 1`. Each write is conditional on the version read, so two workers
    /// recomputing at once cannot lose an update: when any write of the batch did not apply,
    /// those aggregates are read again and written one by one.
    private func store(_ collection: String, kind: String, _ items: [Figures], now: EpochMillis,
                       history keep: History) throws(MongoError) -> [AggregateChange] {
        guard !items.isEmpty else { return [] }
        var existing: [String: BSONDocument] = [:]
        for doc in try client.find(collection, filter: ["_id": ["$in": .array(items.map { .string($0.id) })]], limit: items.count) {
            if let id = doc["_id"]?.stringValue { existing[id] = doc }
        }
        beforeVersionedWrite?()
        let keepsHistory = historyRule(kind: kind, now: now, keep)
        // Marks this call's writes, so that after a lost race it can tell which of them applied
        // (stored now, or already replaced and in the history) from those to redo.
        let writeID = UUID().uuidString
        let history: [WriteModel] = items.compactMap { item in
            guard let old = existing[item.id], keepsHistory(old) else { return nil }
            let historyID = Self.historyID(kind: kind, id: item.id, version: old["version"]?.int64Value ?? 0)
            return .updateOne(filter: ["_id": .string(historyID)],
                              update: ["$setOnInsert": .document(Self.historyCopy(old, kind: kind, id: item.id, collection: collection, now: now))], upsert: true)
        }
        try client.bulkWrite(Self.historyCollection, operations: history, ordered: false, writeConcern: writeConcern).writeErrors.throwUnlessDuplicateKeys()
        let updates: [WriteModel] = items.map { item in
            let version = existing[item.id]?["version"]?.int64Value ?? 0
            return .updateOne(filter: Self.unchangedSinceRead(item.id, existing[item.id]), update: ["$set": .document(Self.newFigures(item, version: version + 1, now: now, writeID: writeID))],
                              upsert: existing[item.id] == nil)
        }
        let result = try client.bulkWrite(collection, operations: updates, ordered: false, writeConcern: writeConcern)
        let lost = Set(result.writeErrors.filter(\.isDuplicateKey).map(\.index))
        try result.writeErrors.throwUnlessDuplicateKeys()
        if lost.isEmpty && result.matchedCount + result.upsertedCount == items.count {
            return items.map { Self.change($0, kind: kind, old: existing[$0.id]) }
        }
        // Someone else wrote some of them meanwhile: find which of ours applied, redo the rest.
        var applied = Set<String>()
        for doc in try client.find(collection, filter: ["_id": ["$in": .array(items.map { .string($0.id) })], "write_id": .string(writeID)],
                                   projection: ["_id": 1], limit: items.count) {
            if let id = doc["_id"]?.stringValue { applied.insert(id) }
        }
        let replacedIDs = items.filter { !applied.contains($0.id) }.map { item -> BSON in
            .string(Self.historyID(kind: kind, id: item.id, version: (existing[item.id]?["version"]?.int64Value ?? 0) + 1))
        }
        if !replacedIDs.isEmpty {
            for doc in try client.find(Self.historyCollection, filter: ["_id": ["$in": .array(replacedIDs)], "write_id": .string(writeID)],
                                       projection: ["aggregate_id": 1], limit: replacedIDs.count) {
                if let id = doc["aggregate_id"]?.stringValue { applied.insert(id) }
            }
        }
        var changes: [AggregateChange] = []
        for item in items {
            if applied.contains(item.id) {
                changes.append(Self.change(item, kind: kind, old: existing[item.id]))
            } else {
                changes.append(try storeOne(collection, kind: kind, item, now: now, writeID: writeID, history: keep))
            }
        }
        return changes
    }

    /// One aggregate, read and written until the write applies (see `store`).
    private func storeOne(_ collection: String, kind: String, _ item: Figures, now: EpochMillis, writeID: String,
                          history keep: History) throws(MongoError) -> AggregateChange {
        let keepsHistory = historyRule(kind: kind, now: now, keep)
        for _ in 0..<5 {
            let existing = try client.findOne(collection, filter: ["_id": .string(item.id)])
            let version = existing?["version"]?.int64Value ?? 0
            if let existing, keepsHistory(existing) {
                let historyID = Self.historyID(kind: kind, id: item.id, version: version)
                _ = try client.updateOne(Self.historyCollection, filter: ["_id": .string(historyID)],
                                         update: ["$setOnInsert": .document(Self.historyCopy(existing, kind: kind, id: item.id, collection: collection, now: now))],
                                         upsert: true, writeConcern: writeConcern)
            }
            do {
                let result = try client.updateOne(collection, filter: Self.unchangedSinceRead(item.id, existing),
                                                  update: ["$set": .document(Self.newFigures(item, version: version + 1, now: now, writeID: writeID))],
                                                  upsert: existing == nil, writeConcern: writeConcern)
                if result.matchedCount == 0 && result.upsertedID == nil { continue } // someone else wrote: read again
            } catch let error where error.isDuplicateKey {
                continue
            }
            return Self.change(item, kind: kind, old: existing)
        }
        throw MongoError(kind: .server(code: 112), code: 112, domain: 0, message: "aggregate \(item.id) kept changing under us")
    }

    /// Whether a replaced version goes to the history (see `History`); decided once per write.
    private func historyRule(kind: String, now: EpochMillis, _ keep: History) -> (BSONDocument) -> Bool {
        switch keep {
        case .always:
            return { _ in true }
        case .closedPeriodsOnly where kind == "daily":
            return { $0["complete"]?.boolValue == true }
        case .closedPeriodsOnly:
            var calendar = LocalCalendar(timeZone: timeZone)
            let currentMonth = Aggregator.monthKey(calendar.date(of: now))
            return { ($0["month"]?.stringValue ?? "") < currentMonth }
        }
    }

    /// The condition of a versioned write: the document is still as it was read (same version,
    /// or still absent).
    static func unchangedSinceRead(_ id: String, _ read: BSONDocument?) -> BSONDocument {
        guard let read else { return ["_id": .string(id), "version": ["$exists": false]] }
        return ["_id": .string(id), "version": .int64(read["version"]?.int64Value ?? 0)]
    }

    static func newFigures(_ item: Figures, version: Int64, now: EpochMillis, writeID: String) -> BSONDocument {
        var set = item.fields
        set["version"] = .int64(version)
        set["computed_at"] = .millis(now)
        set["write_id"] = .string(writeID)
        return set
    }

    /// The replaced document as kept in `aggregate_history`.
    static func historyCopy(_ old: BSONDocument, kind: String, id: String, collection: String, now: EpochMillis) -> BSONDocument {
        var copy = old
        copy["_id"] = .string(historyID(kind: kind, id: id, version: old["version"]?.int64Value ?? 0))
        copy["aggregate_id"] = .string(id)
        copy["collection"] = .string(collection)
        copy["replaced_at"] = .millis(now)
        return copy
    }

    /// The money figures a bill shows: what "changed" means in a recalculation's report.
    static let billedFields = ["energy_wh", "cost", "currency", "cost_version_ids"]

    static func change(_ item: Figures, kind: String, old: BSONDocument?) -> AggregateChange {
        AggregateChange(kind: kind, key: item.key, esp32Name: item.name, classroom: item.classroom,
                        oldEnergyWh: old?["energy_wh"]?.doubleValue, newEnergyWh: item.fields["energy_wh"]?.doubleValue ?? 0,
                        oldCost: old?["cost"]?.doubleValue, newCost: item.fields["cost"]?.doubleValue,
                        version: (old?["version"]?.int64Value ?? 0) + 1,
                        figuresChanged: old == nil || !billedFields.allSatisfy { field in
                            item.fields[field].map { same(old?[field], $0) } ?? (old?[field] == nil)
                        })
    }

    static func historyID(kind: String, id: String, version: Int64) -> String { "\(kind)|\(id)|v\(version)" }

    static func same(_ a: BSON?, _ b: BSON) -> Bool {
        guard let a else { return false }
        if let x = a.doubleValue, let y = b.doubleValue { return abs(x - y) <= 1e-9 * max(1, abs(x), abs(y)) }
        return a == b
    }

    /// Money is stored to 1/10,000 of the currency unit (sums of many small intervals otherwise
    /// carry floating-point dust into the bill).
    static func roundMoney(_ value: Double) -> Double { Double(FixedPoint.money(value)) / Double(FixedPoint.moneyScale) }

    /// The day's energy and cost per tariff version; the costs, rounded like `cost`, add up to it exactly.
    static func costSegments(_ figures: DailyFigures) -> BSON {
        let parts = figures.costSegments.map(\.cost)
        let costs = figures.cost.map { FixedPoint.apportion(total: FixedPoint.money($0), parts: parts, scale: FixedPoint.moneyScale) }
            ?? parts.map(FixedPoint.money)
        return .array(zip(figures.costSegments, costs).map { segment, cost in
            .document([
                "cost_version_id": .string(segment.costVersionID), "cost_per_kwh": .double(segment.costPerKwh),
                "energy_wh": .double(segment.energyWh), "cost": .double(Double(cost) / Double(FixedPoint.moneyScale)),
            ])
        })
    }

    // MARK: Documents

    static func document(_ t: Tariff) -> BSONDocument {
        [
            "_id": .string(t.id), "cost_per_kwh": .double(t.costPerKwh), "currency": .string(t.currency),
            "effective_from": .millis(t.effectiveFrom), "classroom": t.classroom.map { .string($0) } ?? .null,
            "notes": t.notes.map { .string($0) } ?? .null, "created_at": .millis(t.createdAt),
        ]
    }

    static func tariff(_ doc: BSONDocument) -> Tariff? {
        guard let id = doc["_id"]?.stringValue ?? doc["_id"]?.objectIDValue, let price = doc["cost_per_kwh"]?.doubleValue,
              let from = doc["effective_from"]?.dateValue else { return nil }
        return Tariff(id: id, costPerKwh: price, currency: doc["currency"]?.stringValue ?? "INR", effectiveFrom: LedgerStore.millis(from),
                      classroom: doc["classroom"]?.stringValue, createdAt: doc["created_at"]?.dateValue.map(LedgerStore.millis) ?? 0,
                      notes: doc["notes"]?.stringValue)
    }
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
