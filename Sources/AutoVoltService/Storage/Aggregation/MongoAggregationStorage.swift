import AutoVoltCore
import AutoVoltMongo
import Foundation

/// `AggregationStorage` on MongoDB: the documents of contract section 4 (`cost_versions`,
/// `daily_aggregates`, `monthly_aggregates`, `aggregate_history`) and the ledger's
/// `device_consumption_ledgers` and `ledger_dirty_days`. Throws `MongoError`.
public final class MongoAggregationStorage: AggregationStorage {
    let client: MongoClient
    let writeConcern: WriteConcern

    public init(client: MongoClient, writeConcern: WriteConcern) {
        self.client = client
        self.writeConcern = writeConcern
    }

    // MARK: Tariffs

    public func tariffs() throws -> [Tariff] {
        var tariffs: [Tariff] = []
        try client.forEachBatch(Collections.costVersions, filter: [:], sort: ["effective_from": 1, "created_at": 1]) { batch in
            tariffs += batch.compactMap(Self.tariff)
        }
        return tariffs
    }

    public func insertTariff(_ tariff: Tariff) throws {
        _ = try client.insertMany([Self.document(tariff)], into: Collections.costVersions, ordered: true, writeConcern: writeConcern)
    }

    // MARK: What to recompute

    public func aggregatedDays(from date: CivilDate, classroom: String?, after: DeviceDay?, limit: Int) throws -> [DeviceDay] {
        var filter: BSONDocument = ["date": ["$gte": .string(date.description)]]
        if let classroom { filter["classroom"] = .string(classroom) }
        // A daily aggregate's _id is "date|esp32_name": pages in _id order are in date order.
        if let after { filter["_id"] = ["$gt": .string(AggregateFigures.id(key: after.date.description, esp32Name: after.esp32Name))] }
        let docs = try client.find(Collections.dailyAggregates, filter: filter, sort: ["_id": 1], projection: ["date": 1, "esp32_name": 1],
                                   limit: limit)
        return docs.compactMap { doc -> DeviceDay? in
            guard let name = doc["esp32_name"]?.stringValue, let date = doc["date"]?.stringValue.flatMap(CivilDate.init) else { return nil }
            return DeviceDay(esp32Name: name, date: date)
        }
    }

    public func devicesToRecompute(on date: CivilDate, classroom: String?, esp32Name: String?) throws -> Set<String> {
        var filter: BSONDocument = ["date": .string(date.description), "superseded_by": ["$exists": false]]
        if let classroom { filter["classroom"] = .string(classroom) }
        if let esp32Name { filter["esp32_name"] = .string(esp32Name) }
        var names = Set<String>()
        try client.aggregateBatches(Collections.ledgers, pipeline: [["$match": .document(filter)], ["$group": ["_id": "$esp32_name"]]]) { batch in
            for doc in batch { if let name = doc["_id"]?.stringValue { names.insert(name) } }
        }
        var aggregateFilter: BSONDocument = ["date": .string(date.description)]
        if let classroom { aggregateFilter["classroom"] = .string(classroom) }
        if let esp32Name { aggregateFilter["esp32_name"] = .string(esp32Name) }
        try client.forEachBatch(Collections.dailyAggregates, filter: aggregateFilter, projection: ["esp32_name": 1]) { batch in
            for doc in batch { if let name = doc["esp32_name"]?.stringValue { names.insert(name) } }
        }
        return names
    }

    public func dirtyDays(limit: Int, now: EpochMillis) throws -> [DirtyDay] {
        // The days a ledger step is writing (few: a held mark lives for one step) are left out.
        let held = Set(try client.find(LedgerStore.dirtyDaysCollection, filter: ["hold_until": ["$gt": .millis(now)]],
                                       projection: ["esp32_name": 1, "date": 1], limit: 100_000)
            .compactMap { doc -> String? in
                guard let name = doc["esp32_name"]?.stringValue, let date = doc["date"]?.stringValue else { return nil }
                return "\(name)|\(date)"
            })
        let docs = try client.find(LedgerStore.dirtyDaysCollection, filter: [:], sort: ["dirty_at": 1, "_id": 1], limit: limit)
        return docs.compactMap { doc -> DirtyDay? in
            guard let id = doc["_id"]?.stringValue else { return nil }
            var day: DeviceDay?
            if let name = doc["esp32_name"]?.stringValue, let date = doc["date"]?.stringValue {
                if held.contains("\(name)|\(date)") { return nil }
                day = CivilDate(date).map { DeviceDay(esp32Name: name, date: $0) }
            }
            return DirtyDay(id: id, day: day, changedFrom: doc["changed_from"]?.dateValue.map(LedgerStore.millis))
        }
    }

    public func clearDirtyDays(_ days: [DirtyDay]) throws {
        guard !days.isEmpty else { return }
        try client.bulkWrite(LedgerStore.dirtyDaysCollection, operations: days.map { .deleteOne(["_id": .string($0.id)]) }, ordered: false,
                             writeConcern: writeConcern).writeErrors.throwUnlessDuplicateKeys()
    }

    // MARK: Inputs

    public func liveEntries(of days: [DeviceDay], after: [DeviceDay: DayFold.EntryPosition]) throws -> [DeviceDay: DayEntries] {
        guard !days.isEmpty else { return [:] }
        let clauses: [BSON] = days.map { day in
            var clause: BSONDocument = ["esp32_name": .string(day.esp32Name), "date": .string(day.date.description)]
            if let position = after[day] { clause["start_ts"] = ["$gte": .millis(position.start)] }
            return .document(clause)
        }
        var byDay: [DeviceDay: DayEntries] = [:]
        // The classroom of each day's first entry in (start, end) order.
        var firstClassroom: [DeviceDay: (start: EpochMillis, end: EpochMillis, classroom: String)] = [:]
        try client.forEachBatch(Collections.ledgers, filter: ["$or": .array(clauses), "superseded_by": ["$exists": false]],
                                projection: ["esp32_name": 1, "date": 1, "start_ts": 1, "end_ts": 1, "delta_wh": 1, "billable": 1,
                                             "quality": 1, "classroom": 1]) { batch in
            for doc in batch {
                guard let name = doc["esp32_name"]?.stringValue, let date = doc["date"]?.stringValue.flatMap(CivilDate.init),
                      let start = doc["start_ts"]?.dateValue, let end = doc["end_ts"]?.dateValue, let delta = doc["delta_wh"]?.doubleValue else { continue }
                let key = DeviceDay(esp32Name: name, date: date)
                let entry = AggregateEntry(start: LedgerStore.millis(start), end: LedgerStore.millis(end), deltaWh: delta,
                                           billable: doc["billable"]?.boolValue ?? false,
                                           confidence: doc["quality"]?.documentValue?["confidence"]?.stringValue.flatMap(Confidence.init) ?? .low)
                if let position = after[key], (entry.start, entry.end) <= (position.start, position.end) { continue }
                byDay[key, default: DayEntries(classroom: nil, entries: [])].entries.append(entry)
                if let classroom = doc["classroom"]?.stringValue,
                   firstClassroom[key].map({ (entry.start, entry.end) < ($0.start, $0.end) }) ?? true {
                    firstClassroom[key] = (entry.start, entry.end, classroom)
                }
            }
        }
        // In (start, end) order, as on PostgreSQL: the day's sums are added in the same order on
        // both backends, and the classroom is the first entry's.
        for key in Array(byDay.keys) {
            byDay[key]?.entries.sort { ($0.start, $0.end) < ($1.start, $1.end) }
            byDay[key]?.classroom = firstClassroom[key]?.classroom
        }
        return byDay
    }

    public func dailyFigures(month: String, esp32Names: [String]) throws -> [String: [DailyFigures]] {
        guard !esp32Names.isEmpty else { return [:] }
        let days = try client.find(Collections.dailyAggregates, filter: [
            "esp32_name": LedgerStore.oneOf(esp32Names), "date": ["$gte": .string("\(month)-01"), "$lte": .string("\(month)-31")],
        ], sort: ["date": 1], limit: esp32Names.count * 31)
        var byDevice: [String: [DailyFigures]] = [:]
        for doc in days {
            guard let name = doc["esp32_name"]?.stringValue else { continue }
            byDevice[name, default: []].append(DailyFigures(
                date: doc["date"]?.stringValue.flatMap(CivilDate.init) ?? CivilDate(year: 1970, month: 1, day: 1),
                esp32Name: name, classroom: doc["classroom"]?.stringValue ?? "", energyWh: doc["energy_wh"]?.doubleValue ?? 0,
                cost: doc["cost"]?.doubleValue, currency: doc["currency"]?.stringValue, costVersionIDs: [],
                coverage: doc["coverage"]?.doubleValue ?? 0, confidence: [:], entries: 0, unpricedWh: 0))
        }
        return byDevice
    }

    // MARK: Versioned aggregates

    public func aggregates(_ kind: AggregateKind, ids: [String]) throws -> [String: StoredAggregate] {
        guard !ids.isEmpty else { return [:] }
        var existing: [String: StoredAggregate] = [:]
        for doc in try client.find(kind.collection, filter: ["_id": ["$in": .array(ids.map { .string($0) })]], limit: ids.count) {
            if let id = doc["_id"]?.stringValue { existing[id] = Self.stored(doc, kind: kind) }
        }
        return existing
    }

    /// The history copies first (upserts keyed by aggregate and version, so the first copy of a
    /// version wins and a retry is harmless), then the conditional writes in one bulk. A bulk
    /// result does not say which of its writes matched, so when some did not, each write's
    /// `write_id` is looked for: on the aggregate, or on its history copy when another worker has
    /// replaced it since.
    public func writeAggregates(_ kind: AggregateKind, _ writes: [AggregateWrite], now: EpochMillis, writeID: String) throws -> Set<String> {
        guard !writes.isEmpty else { return [] }
        let history: [WriteModel] = writes.compactMap { write in
            guard let old = write.replacing, write.keepsHistory else { return nil }
            let historyID = AggregateHistory.id(kind: kind, aggregateID: write.figures.id, version: old.version)
            return .updateOne(filter: ["_id": .string(historyID)],
                              update: ["$setOnInsert": .document(Self.historyCopy(old, kind: kind, now: now))], upsert: true)
        }
        try client.bulkWrite(AggregateHistory.collection, operations: history, ordered: false, writeConcern: writeConcern)
            .writeErrors.throwUnlessDuplicateKeys()
        let updates: [WriteModel] = writes.map { write in
            .updateOne(filter: Self.unchangedSinceRead(write.figures.id, write.replacing),
                       update: ["$set": .document(Self.newFigures(write.figures, version: write.version, now: now, writeID: writeID))],
                       upsert: write.replacing == nil)
        }
        let result = try client.bulkWrite(kind.collection, operations: updates, ordered: false, writeConcern: writeConcern)
        let lost = Set(result.writeErrors.filter(\.isDuplicateKey).map(\.index))
        try result.writeErrors.throwUnlessDuplicateKeys()
        let ids = writes.map(\.figures.id)
        if lost.isEmpty && result.matchedCount + result.upsertedCount == writes.count { return Set(ids) }
        // One write: its result says it did not apply.
        if writes.count == 1 { return [] }
        // Someone else wrote some of them meanwhile: find which of ours applied.
        var applied = Set<String>()
        for doc in try client.find(kind.collection, filter: ["_id": ["$in": .array(ids.map { .string($0) })], "write_id": .string(writeID)],
                                   projection: ["_id": 1], limit: ids.count) {
            if let id = doc["_id"]?.stringValue { applied.insert(id) }
        }
        let replacedIDs = writes.filter { !applied.contains($0.figures.id) }.map { write -> BSON in
            .string(AggregateHistory.id(kind: kind, aggregateID: write.figures.id, version: write.version))
        }
        if !replacedIDs.isEmpty {
            for doc in try client.find(AggregateHistory.collection, filter: ["_id": ["$in": .array(replacedIDs)], "write_id": .string(writeID)],
                                       projection: ["aggregate_id": 1], limit: replacedIDs.count) {
                if let id = doc["aggregate_id"]?.stringValue { applied.insert(id) }
            }
        }
        return applied
    }

    /// The condition of a versioned write: the document is still as it was read (same version,
    /// or still absent).
    static func unchangedSinceRead(_ id: String, _ read: StoredAggregate?) -> BSONDocument {
        guard let read else { return ["_id": .string(id), "version": ["$exists": false]] }
        return ["_id": .string(id), "version": .int64(read.version)]
    }

    static func newFigures(_ figures: AggregateFigures, version: Int64, now: EpochMillis, writeID: String) -> BSONDocument {
        var set = fields(figures)
        set["version"] = .int64(version)
        set["computed_at"] = .millis(now)
        set["write_id"] = .string(writeID)
        return set
    }

    /// The replaced document as kept in `aggregate_history`.
    static func historyCopy(_ old: StoredAggregate, kind: AggregateKind, now: EpochMillis) -> BSONDocument {
        let id = old.figures.id
        var copy: BSONDocument = ["_id": .string(AggregateHistory.id(kind: kind, aggregateID: id, version: old.version))]
        for (key, value) in fields(old.figures) { copy[key] = value }
        copy["version"] = .int64(old.version)
        if let computedAt = old.computedAt { copy["computed_at"] = .millis(computedAt) }
        if let writeID = old.writeID { copy["write_id"] = .string(writeID) }
        copy["aggregate_id"] = .string(id)
        copy["collection"] = .string(kind.collection)
        copy["replaced_at"] = .millis(now)
        return copy
    }

    // MARK: Documents

    /// An aggregate's fields, without `_id` and the version fields.
    static func fields(_ f: AggregateFigures) -> BSONDocument {
        var doc: BSONDocument = [f.kind == .daily ? "date" : "month": .string(f.key)]
        doc["esp32_name"] = .string(f.esp32Name)
        doc["classroom"] = .string(f.classroom)
        doc["energy_wh"] = .double(f.energyWh)
        doc["cost"] = f.cost.map { .double($0) } ?? .null
        doc["currency"] = f.currency.map { .string($0) } ?? .null
        if let day = f.day {
            doc["cost_version_ids"] = .array(day.costVersionIDs.map { .string($0) })
            doc["coverage"] = .double(day.coverage)
            doc["confidence"] = .document(BSONDocument(Confidence.allCases.map { ($0.rawValue, .int64(Int64(day.confidence[$0] ?? 0))) }))
            doc["entries"] = .int64(Int64(day.entries))
            doc["unpriced_wh"] = .double(day.unpricedWh)
            doc["overlap_ms"] = .int64(day.overlapMillis)
            doc["hourly_wh"] = .array(day.hourlyWh.map { .double($0) })
            doc["cost_segments"] = .array(day.costSegments.map { segment in
                .document([
                    "cost_version_id": .string(segment.costVersionID), "cost_per_kwh": .double(segment.costPerKwh),
                    "energy_wh": .double(segment.energyWh), "cost": .double(segment.cost),
                ])
            })
            doc["complete"] = .bool(day.complete)
            doc["fold_state"] = day.fold.map { .string($0) } ?? .null
        }
        if let days = f.days { doc["days"] = .int64(Int64(days)) }
        return doc
    }

    static func stored(_ doc: BSONDocument, kind: AggregateKind) -> StoredAggregate {
        var figures = AggregateFigures(
            kind: kind, key: doc[kind == .daily ? "date" : "month"]?.stringValue ?? "", esp32Name: doc["esp32_name"]?.stringValue ?? "",
            classroom: doc["classroom"]?.stringValue ?? "", energyWh: doc["energy_wh"]?.doubleValue ?? 0,
            cost: doc["cost"]?.doubleValue, currency: doc["currency"]?.stringValue)
        switch kind {
        case .daily:
            var confidence: [Confidence: Int] = [:]
            for level in Confidence.allCases {
                confidence[level] = doc["confidence"]?.documentValue?[level.rawValue]?.intValue ?? 0
            }
            figures.day = DayDetail(
                costVersionIDs: doc["cost_version_ids"]?.arrayValue?.compactMap(\.stringValue) ?? [],
                coverage: doc["coverage"]?.doubleValue ?? 0, confidence: confidence, entries: doc["entries"]?.intValue ?? 0,
                unpricedWh: doc["unpriced_wh"]?.doubleValue ?? 0, overlapMillis: doc["overlap_ms"]?.int64Value ?? 0,
                hourlyWh: doc["hourly_wh"]?.arrayValue?.compactMap(\.doubleValue) ?? [],
                costSegments: (doc["cost_segments"]?.arrayValue ?? []).compactMap { value -> CostSegment? in
                    guard let s = value.documentValue, let id = s["cost_version_id"]?.stringValue else { return nil }
                    return CostSegment(costVersionID: id, costPerKwh: s["cost_per_kwh"]?.doubleValue ?? 0,
                                       energyWh: s["energy_wh"]?.doubleValue ?? 0, cost: s["cost"]?.doubleValue ?? 0)
                },
                complete: doc["complete"]?.boolValue == true, fold: doc["fold_state"]?.stringValue)
        case .monthly:
            figures.days = doc["days"]?.intValue
        }
        return StoredAggregate(figures: figures, version: doc["version"]?.int64Value ?? 0,
                               computedAt: doc["computed_at"]?.dateValue.map(LedgerStore.millis), writeID: doc["write_id"]?.stringValue)
    }

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
