import AutoVoltCore
import AutoVoltMongo
import Foundation

/// `ReconciliationStorage` on MongoDB: `reconciliation_reports`, `review_tickets` and
/// `scheduler_runs`, and the reconciliation's reads of `telemetry_events`,
/// `device_consumption_ledgers`, `daily_aggregates`, `device_status` and `ledger_dirty_days`.
/// Throws `MongoError`.
public final class MongoReconciliationStorage: ReconciliationStorage {
    let client: MongoClient
    let writeConcern: WriteConcern

    public init(client: MongoClient, writeConcern: WriteConcern) {
        self.client = client
        self.writeConcern = writeConcern
    }

    static let runsCollection = "scheduler_runs"

    static func millis(_ date: Date) -> EpochMillis { MongoLedgerStorage.millis(date) }

    // MARK: What is still on its way

    public func hasUnprocessedEvents(before: EpochMillis) throws -> Bool {
        try client.findOne(Collections.telemetryEvents, filter: ["processed": false, "device_ts": ["$lt": .millis(before)]],
                           projection: ["_id": 1]) != nil
    }

    public func hasDirtyDays(upTo date: CivilDate) throws -> Bool {
        try client.findOne(LedgerStore.dirtyDaysCollection, filter: ["date": ["$lte": .string(date.description)]], projection: ["_id": 1]) != nil
    }

    // MARK: The day's figures

    public func ledgerFigures(of date: CivilDate) throws -> [String: LedgerDayFigures] {
        var ledger: [String: LedgerDayFigures] = [:]
        let live: BSONDocument = ["date": .string(date.description), "superseded_by": ["$exists": false]]
        var billable = live
        billable["billable"] = true
        try client.aggregateBatches(Collections.ledgers, pipeline: [
            ["$match": .document(billable)], ["$group": ["_id": "$esp32_name", "wh": ["$sum": "$delta_wh"]]],
        ]) { (groups) throws(MongoError) in
            for group in groups {
                guard let name = group["_id"]?.stringValue else { continue }
                ledger[name, default: LedgerDayFigures()].billableWh = group["wh"]?.doubleValue ?? 0
            }
        }
        var flagged = live
        flagged["quality.reasons"] = ["$in": .array(LedgerDayFigures.flaggedReasons.map { .string($0) })]
        try client.forEachBatch(Collections.ledgers, filter: flagged,
                                projection: ["esp32_name": 1, "quality": 1, "part": 1]) { (docs) throws(MongoError) in
            for doc in docs {
                // A midnight-split interval counts once, by its first part.
                guard let name = doc["esp32_name"]?.stringValue, (doc["part"]?.int64Value ?? 0) == 0 else { continue }
                let reasons = doc["quality"]?.documentValue?["reasons"]?.arrayValue?.compactMap { $0.stringValue } ?? []
                var entry = ledger[name] ?? LedgerDayFigures()
                if reasons.contains("counter_reset") { entry.resets += 1 }
                if reasons.contains("glitch_skipped") { entry.glitches += 1 }
                if reasons.contains("implausible_power") { entry.implausible += 1 }
                if reasons.contains("long_gap") { entry.longGaps += 1 }
                ledger[name] = entry
            }
        }
        return ledger
    }

    public func dayAggregates(of date: CivilDate) throws -> DayAggregates {
        var result = DayAggregates()
        // One document per device of the day: bounded by the campus.
        try client.forEachBatch(Collections.dailyAggregates, filter: ["date": .string(date.description)],
                                projection: ["esp32_name": 1, "energy_wh": 1, "cost": 1, "overlap_ms": 1, "computed_at": 1]) { (docs) throws(MongoError) in
            for doc in docs {
                let computedAt = doc["computed_at"]?.dateValue.map(Self.millis)
                if let name = doc["esp32_name"]?.stringValue {
                    let cost: Double? = doc["cost"].flatMap { $0 == .null ? nil : ($0.doubleValue ?? 0) }
                    result.byDevice[name] = DayAggregate(energyWh: doc["energy_wh"]?.doubleValue ?? 0, cost: cost,
                                                         overlapMillis: doc["overlap_ms"]?.int64Value, computedAt: computedAt)
                }
                if let at = computedAt { result.newestComputedAt = max(result.newestComputedAt ?? at, at) }
            }
        }
        return result
    }

    public func unprocessedEventCounts(from: EpochMillis, to: EpochMillis) throws -> [String: Int] {
        var unprocessed: [String: Int] = [:]
        try client.aggregateBatches(Collections.telemetryEvents, pipeline: [
            ["$match": ["processed": false, "device_ts": ["$gte": .millis(from), "$lt": .millis(to)]]],
            ["$group": ["_id": "$esp32_name", "n": ["$sum": 1]]],
        ]) { (groups) throws(MongoError) in
            for group in groups { if let name = group["_id"]?.stringValue { unprocessed[name] = group["n"]?.intValue ?? 0 } }
        }
        return unprocessed
    }

    /// One indexed probe (esp32_name, device_ts) per device.
    public func devicesWithoutEvents(_ names: [String], from: EpochMillis, to: EpochMillis) throws -> Set<String> {
        var silent = Set<String>()
        let range: BSON = ["$gte": .millis(from), "$lt": .millis(to)]
        for name in names {
            let any = try client.findOne(Collections.telemetryEvents, filter: ["esp32_name": .string(name), "device_ts": range],
                                         projection: ["_id": 1])
            if any == nil { silent.insert(name) }
        }
        return silent
    }

    public func presence() throws -> [String: DevicePresence] {
        var statuses: [String: DevicePresence] = [:]
        try client.forEachBatch(Collections.deviceStatus, filter: [:],
                                projection: ["esp32_name": 1, "online": 1, "last_heartbeat_at": 1]) { (docs) throws(MongoError) in
            for doc in docs {
                guard let name = doc["esp32_name"]?.stringValue else { continue }
                statuses[name] = DevicePresence(online: doc["online"]?.boolValue,
                                                lastHeartbeatAt: doc["last_heartbeat_at"]?.dateValue.map(Self.millis))
            }
        }
        return statuses
    }

    // MARK: Review tickets

    public func judgeTickets(date: CivilDate, kinds: [String], runID: String, now: EpochMillis,
                             _ decide: ([TicketKey: StoredTicket]) -> [TicketChange]) throws -> Int {
        let day = date.description
        var existing: [TicketKey: (id: BSON, open: Bool)] = [:]
        // One document per device and kind of the day at most: bounded by the campus.
        try client.forEachBatch(Collections.reviewTickets, filter: ["date": .string(day), "kind": ["$in": .array(kinds.map { .string($0) })]],
                                projection: ["esp32_name": 1, "kind": 1, "status": 1]) { (docs) throws(MongoError) in
            for doc in docs {
                guard let id = doc["_id"], let name = doc["esp32_name"]?.stringValue, let kind = doc["kind"]?.stringValue else { continue }
                existing[TicketKey(esp32Name: name, kind: kind)] = (id, doc["status"]?.stringValue == "open")
            }
        }
        let changes = decide(existing.mapValues { StoredTicket(isOpen: $0.open) })
        var operations: [WriteModel] = []
        for change in changes {
            switch change {
            case let .keep(key, detail, reopen):
                guard let ticket = existing[key] else { continue }
                var set: BSONDocument = ["detail": .string(detail), "last_run_id": .string(runID)]
                var update: BSONDocument = [:]
                if reopen {
                    set["status"] = "open"
                    set["reopened_at"] = .millis(now)
                    update["$unset"] = ["resolved_at": "", "resolved_run_id": ""]
                }
                update["$set"] = .document(set)
                operations.append(.updateOne(filter: ["_id": ticket.id], update: update, upsert: false))
            case let .open(key, detail):
                // Keyed like the unique index: a run racing this one (another worker's, or the
                // ledger's implausible_power ticket) meets the same document.
                operations.append(.updateOne(
                    filter: ["esp32_name": .string(key.esp32Name), "date": .string(day), "kind": .string(key.kind)],
                    update: ["$setOnInsert": ["esp32_name": .string(key.esp32Name), "date": .string(day), "kind": .string(key.kind),
                                              "detail": .string(detail), "status": "open", "created_at": .millis(now),
                                              "run_id": .string(runID)],
                             "$set": ["last_run_id": .string(runID)]],
                    upsert: true))
            case let .resolve(key):
                guard let ticket = existing[key] else { continue }
                operations.append(.updateOne(filter: ["_id": ticket.id, "status": "open"],
                                             update: ["$set": ["status": "resolved", "resolved_at": .millis(now), "resolved_run_id": .string(runID)]],
                                             upsert: false))
            }
        }
        guard !operations.isEmpty else { return 0 }
        let result = try client.bulkWrite(Collections.reviewTickets, operations: operations, ordered: false, writeConcern: writeConcern)
        try result.writeErrors.throwUnlessDuplicateKeys()
        return result.upsertedCount
    }

    // MARK: Reports

    public func insertReport(_ record: ReconciliationReportRecord) throws -> Bool {
        let report = record.report
        var document: BSONDocument = [
            "_id": .string(report.runID), "run_id": .string(report.runID), "date": .string(report.date), "started_at": .millis(record.startedAt),
            "finished_at": .millis(record.finishedAt), "status": .string(report.status), "devices_checked": .int64(Int64(report.devicesChecked)),
            "anomalies": .array(report.anomalies.map(Self.document)), "missing_heartbeats": .array(report.missingHeartbeats.map { .string($0) }),
            "aggregate_mismatches": .array(report.aggregateMismatches.map(Self.document)), "tickets_opened": .int64(Int64(report.ticketsOpened)),
            "tickets_resolved": .int64(Int64(report.ticketsResolved)), "tickets_still_open": .int64(Int64(report.ticketsStillOpen)),
            "data_complete": .bool(report.dataComplete),
        ]
        if let pending = report.incompleteData { document["incomplete_data"] = .string(pending) }
        if let at = record.aggregatesComputedAt { document["aggregates_computed_at"] = .millis(at) }
        if record.judgedAgain { document["judged_again"] = true }
        // A report already stored under this run_id is a write error of the result, not a throw.
        return try client.insertMany([document], into: Collections.reconciliationReports, ordered: true, writeConcern: writeConcern)
            .insertedCount == 1
    }

    static func document(_ f: Reconciler.Finding) -> BSON {
        ["esp32_name": .string(f.esp32Name), "kind": .string(f.kind), "detail": .string(f.detail)]
    }

    public func lastReconciliation() throws -> (at: EpochMillis, runID: String)? {
        try Self.lastReconciliation(client)
    }

    /// Typed for the callers that hold a `MongoClient` (/health).
    static func lastReconciliation(_ client: MongoClient) throws(MongoError) -> (at: EpochMillis, runID: String)? {
        guard let doc = try client.findOne(Collections.reconciliationReports, filter: [:], sort: ["finished_at": -1],
                                           projection: ["finished_at": 1, "run_id": 1]),
              let at = doc["finished_at"]?.dateValue, let id = doc["run_id"]?.stringValue else { return nil }
        return (millis(at), id)
    }

    static func window(_ from: CivilDate, _ before: CivilDate) -> BSON {
        ["$gte": .string(from.description), "$lt": .string(before.description)]
    }

    public func lastJudgements(from: CivilDate, before: CivilDate) throws -> [CivilDate: DayJudgement] {
        var judged: [CivilDate: DayJudgement] = [:]
        try client.aggregateBatches(Collections.reconciliationReports, pipeline: [
            ["$match": ["date": Self.window(from, before)]], ["$sort": ["date": 1, "started_at": 1]],
            // A missing field made null, so a last judgement that saw no aggregate says none
            // (MongoDB's $last does; mongomock's would skip to an earlier report's).
            ["$group": ["_id": "$date", "at": ["$last": "$started_at"], "saw": ["$last": ["$ifNull": ["$aggregates_computed_at", .null]]]]],
        ]) { (groups) throws(MongoError) in
            for group in groups {
                guard let day = group["_id"]?.stringValue.flatMap(CivilDate.init), let at = group["at"]?.dateValue else { continue }
                judged[day] = DayJudgement(startedAt: Self.millis(at), aggregatesComputedAt: group["saw"]?.dateValue.map(Self.millis))
            }
        }
        return judged
    }

    public func newestAggregates(from: CivilDate, before: CivilDate) throws -> [CivilDate: EpochMillis] {
        var changedAt: [CivilDate: EpochMillis] = [:]
        try client.aggregateBatches(Collections.dailyAggregates, pipeline: [
            ["$match": ["date": Self.window(from, before)]], ["$group": ["_id": "$date", "at": ["$max": "$computed_at"]]],
        ]) { (groups) throws(MongoError) in
            for group in groups {
                if let day = group["_id"]?.stringValue.flatMap(CivilDate.init), let at = group["at"]?.dateValue { changedAt[day] = Self.millis(at) }
            }
        }
        return changedAt
    }

    // MARK: The scheduler

    public func firstReceivedAt() throws -> EpochMillis? {
        try client.findOne(Collections.telemetryEvents, filter: [:], sort: ["received_at": 1],
                           projection: ["received_at": 1])?["received_at"]?.dateValue.map(Self.millis)
    }

    public func doneRuns(_ ids: [String]) throws -> Set<String> {
        guard !ids.isEmpty else { return [] }
        return Set(try client.find(Self.runsCollection, filter: ["_id": ["$in": .array(ids.map { .string($0) })], "status": "done"],
                                   projection: ["_id": 1], limit: ids.count).compactMap { $0["_id"]?.stringValue })
    }

    /// An update of the run's document, upserted: when another holds it (or the condition fails)
    /// the filter matches nothing and the insert meets the `_id`: a duplicate key, not ours.
    public func acquireRun(_ lease: RunLease, condition: RunCondition) throws -> Bool {
        let extra: BSONDocument
        switch condition {
        case .notDone:
            extra = ["status": ["$ne": "done"]]
        case let .lastStartedAtOrBefore(at):
            extra = ["$or": [["started_at": ["$exists": false]], ["started_at": ["$lte": .millis(at)]]]]
        }
        let filter: BSONDocument = ["_id": .string(lease.id), "$and": [
            ["$or": [["lease_until": ["$exists": false]], ["lease_until": ["$lt": .millis(lease.startedAt)]]]], .document(extra),
        ]]
        let update: BSONDocument = ["$set": [
            "kind": .string(lease.kind), "date": .string(lease.date.description), "status": "running", "owner": .string(lease.owner),
            "started_at": .millis(lease.startedAt), "lease_until": .millis(lease.leaseUntil),
        ]]
        return try upsertLease(filter: filter, update: update)
    }

    private func upsertLease(filter: BSONDocument, update: BSONDocument) throws(MongoError) -> Bool {
        do {
            let result = try client.updateOne(Self.runsCollection, filter: filter, update: update, upsert: true, writeConcern: writeConcern)
            return result.matchedCount == 1 || result.upsertedID != nil
        } catch let error where error.isDuplicateKey {
            return false
        }
    }

    public func finishRun(id: String, owner: String, finishedAt: EpochMillis, runID: String?) throws {
        var set: BSONDocument = ["status": "done", "finished_at": .millis(finishedAt)]
        if let runID { set["run_id"] = .string(runID) }
        _ = try client.updateOne(Self.runsCollection, filter: ["_id": .string(id), "owner": .string(owner)],
                                 update: ["$set": .document(set), "$unset": ["lease_until": ""]], upsert: false, writeConcern: writeConcern)
    }

    public func failRun(id: String, owner: String, error: String?) throws {
        var set: BSONDocument = ["status": "failed"]
        if let error { set["error"] = .string(error) }
        _ = try client.updateOne(Self.runsCollection, filter: ["_id": .string(id), "owner": .string(owner)],
                                 update: ["$set": .document(set), "$unset": ["lease_until": ""]], upsert: false, writeConcern: writeConcern)
    }
}
