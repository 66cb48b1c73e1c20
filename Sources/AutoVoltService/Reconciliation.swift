import AutoVoltCore
import AutoVoltMongo
import Foundation
import Synchronization
import Logging
import Metrics

/// The nightly check of one local date (contract section 4, `reconciliation_reports`): per
/// device, the ledger against the aggregate (exactly, rounding aside), events not in the ledger,
/// resets and glitches, implausible intervals, gaps over an hour, missing heartbeats, devices
/// silent all day, and energy without a tariff. Writes a report, opens one review ticket per
/// device, kind and day (a re-run opens none twice), and logs one line per finding.
public struct Reconciler: Sendable {
    public struct Finding: Sendable, Encodable, Equatable {
        public var esp32Name: String
        public var kind: String
        public var detail: String
        enum CodingKeys: String, CodingKey { case kind, detail, esp32Name = "esp32_name" }
    }

    public struct Report: Sendable, Encodable {
        public var runID: String
        public var date: String
        public var startedAt: String
        public var finishedAt: String
        public var status: String
        public var devicesChecked: Int
        public var anomalies: [Finding]
        public var missingHeartbeats: [String]
        public var aggregateMismatches: [Finding]
        public var ticketsOpened: Int

        enum CodingKeys: String, CodingKey {
            case date, status, anomalies
            case runID = "run_id", startedAt = "started_at", finishedAt = "finished_at", devicesChecked = "devices_checked"
            case missingHeartbeats = "missing_heartbeats", aggregateMismatches = "aggregate_mismatches", ticketsOpened = "tickets_opened"
        }
    }

    let client: MongoClient
    let registry: DeviceRegistry
    let timeZone: TimeZone
    let writeConcern: WriteConcern
    let logger: Logger
    /// No heartbeat for longer than this while online is a finding.
    var heartbeatSilenceMillis: Int64 = 10 * 60_000

    public init(client: MongoClient, registry: DeviceRegistry, timeZone: TimeZone, writeConcern: WriteConcern, logger: Logger) {
        self.client = client
        self.registry = registry
        self.timeZone = timeZone
        self.writeConcern = writeConcern
        self.logger = logger
    }

    public func run(date: CivilDate, now: EpochMillis) throws(MongoError) -> Report {
        let runID = "recon-\(date)-\(ISO8601.format(now).filter(\.isNumber).prefix(14))-\(UUID().uuidString.prefix(4).lowercased())"
        let calendar = LocalCalendar(timeZone: timeZone)
        let dayStart = calendar.startOfDay(date)
        let dayEnd = calendar.startOfDay(CivilDate(daysSinceEpoch: date.daysSinceEpoch + 1))
        let day = date.description

        // The day's figures per device, summed by the database: the day of a campus is ~1.4 M
        // ledger entries and as many events, and only a few of them are findings.
        struct DeviceDay { var billableWh = 0.0; var resets = 0; var glitches = 0; var implausible = 0; var longGaps = 0 }
        var ledger: [String: DeviceDay] = [:]
        let live: BSONDocument = ["date": .string(day), "superseded_by": ["$exists": false]]
        var billable = live
        billable["billable"] = true
        try client.aggregateBatches(Collections.ledgers, pipeline: [
            ["$match": .document(billable)], ["$group": ["_id": "$esp32_name", "wh": ["$sum": "$delta_wh"]]],
        ]) { (groups) throws(MongoError) in
            for group in groups {
                guard let name = group["_id"]?.stringValue else { continue }
                ledger[name, default: DeviceDay()].billableWh = group["wh"]?.doubleValue ?? 0
            }
        }
        var flagged = live
        flagged["quality.reasons"] = ["$in": ["counter_reset", "glitch_skipped", "implausible_power", "long_gap"]]
        try client.forEachBatch(Collections.ledgers, filter: flagged,
                                projection: ["esp32_name": 1, "quality": 1, "part": 1]) { (docs) throws(MongoError) in
            for doc in docs {
                // A midnight-split interval counts once, by its first part.
                guard let name = doc["esp32_name"]?.stringValue, (doc["part"]?.int64Value ?? 0) == 0 else { continue }
                let reasons = doc["quality"]?.documentValue?["reasons"]?.arrayValue?.compactMap { $0.stringValue } ?? []
                var entry = ledger[name] ?? DeviceDay()
                if reasons.contains("counter_reset") { entry.resets += 1 }
                if reasons.contains("glitch_skipped") { entry.glitches += 1 }
                if reasons.contains("implausible_power") { entry.implausible += 1 }
                if reasons.contains("long_gap") { entry.longGaps += 1 }
                ledger[name] = entry
            }
        }
        var aggregates: [String: BSONDocument] = [:]
        // One document per device of the day (as the dictionaries below): bounded by the campus.
        try client.forEachBatch(Collections.dailyAggregates, filter: ["date": .string(day)],
                                projection: ["esp32_name": 1, "energy_wh": 1, "cost": 1, "overlap_ms": 1]) { (docs) throws(MongoError) in
            for doc in docs { if let name = doc["esp32_name"]?.stringValue { aggregates[name] = doc } }
        }
        let dayRange: BSON = ["$gte": .millis(dayStart), "$lt": .millis(dayEnd)]
        var unprocessed: [String: Int] = [:]
        try client.aggregateBatches(Collections.telemetryEvents, pipeline: [
            ["$match": ["processed": false, "device_ts": dayRange]], ["$group": ["_id": "$esp32_name", "n": ["$sum": 1]]],
        ]) { (groups) throws(MongoError) in
            for group in groups { if let name = group["_id"]?.stringValue { unprocessed[name] = group["n"]?.intValue ?? 0 } }
        }
        // Silent all day: one indexed probe (esp32_name, device_ts) per registered device.
        var silent = Set<String>()
        for name in registry.devices.keys {
            let any = try client.findOne(Collections.telemetryEvents, filter: ["esp32_name": .string(name), "device_ts": dayRange],
                                         projection: ["_id": 1])
            if any == nil { silent.insert(name) }
        }
        var statuses: [String: BSONDocument] = [:]
        try client.forEachBatch(Collections.deviceStatus, filter: [:]) { (docs) throws(MongoError) in
            for doc in docs { if let name = doc["esp32_name"]?.stringValue { statuses[name] = doc } }
        }

        let devices = Set(registry.devices.keys).union(ledger.keys).union(aggregates.keys).union(unprocessed.keys).sorted()
        var findings: [Finding] = []
        var mismatches: [Finding] = []
        var missingHeartbeats: [String] = []
        for name in devices {
            let day = ledger[name] ?? DeviceDay()
            let aggregateWh = aggregates[name]?["energy_wh"]?.doubleValue ?? 0
            if abs(day.billableWh - aggregateWh) > 1e-6 * max(1, day.billableWh) {
                let finding = Finding(esp32Name: name, kind: "aggregate_mismatch",
                                      detail: "ledger \(Self.wh(day.billableWh)) Wh, daily aggregate \(Self.wh(aggregateWh)) Wh")
                findings.append(finding)
                mismatches.append(finding)
            }
            // Computed by the day's aggregation, which reads every live entry of the day anyway.
            if let overlap = aggregates[name]?["overlap_ms"]?.int64Value, overlap > 0 {
                findings.append(Finding(esp32Name: name, kind: "ledger_overlap",
                                        detail: "live ledger entries overlap for \(String(format: "%.1f", Double(overlap) / 1000)) s; run rebuild-ledger for the device"))
            }
            if let count = unprocessed[name], count > 0 {
                findings.append(Finding(esp32Name: name, kind: "unprocessed_events", detail: "\(count) events of the day are not in the ledger"))
            }
            if day.resets > 0 { findings.append(Finding(esp32Name: name, kind: "counter_reset", detail: "\(day.resets) counter reset(s)")) }
            if day.glitches > 0 { findings.append(Finding(esp32Name: name, kind: "glitch", detail: "\(day.glitches) glitch reading(s) skipped")) }
            if day.implausible > 0 {
                findings.append(Finding(esp32Name: name, kind: "implausible_power", detail: "\(day.implausible) interval(s) above max_power_w, not billed"))
            }
            if day.longGaps > 0 { findings.append(Finding(esp32Name: name, kind: "long_gap", detail: "\(day.longGaps) gap(s) longer than an hour")) }
            if silent.contains(name) {
                findings.append(Finding(esp32Name: name, kind: "silent_device", detail: "no telemetry all day"))
            }
            if let aggregate = aggregates[name], aggregate["cost"] == .null || aggregate["cost"] == nil,
               (aggregate["energy_wh"]?.doubleValue ?? 0) > 0 {
                findings.append(Finding(esp32Name: name, kind: "no_tariff",
                                        detail: "\(Self.wh(aggregateWh)) Wh with no tariff in force; add one with cost-versions add"))
            }
            if let status = statuses[name], status["online"]?.boolValue == true {
                let last = status["last_heartbeat_at"]?.dateValue.map(LedgerStore.millis)
                if last.map({ now - $0 > heartbeatSilenceMillis }) ?? true {
                    missingHeartbeats.append(name)
                    let detail = last.map { "online, but no heartbeat since \(ISO8601.format($0))" } ?? "online, but no heartbeat ever received"
                    findings.append(Finding(esp32Name: name, kind: "missing_heartbeat", detail: detail))
                }
            }
        }

        // Tickets: one per device, kind and day; a re-run finds them already there.
        var opened = 0
        if !findings.isEmpty {
            let operations: [WriteModel] = findings.map { f in
                .updateOne(filter: ["esp32_name": .string(f.esp32Name), "date": .string(day), "kind": .string(f.kind)],
                           update: ["$setOnInsert": ["esp32_name": .string(f.esp32Name), "date": .string(day), "kind": .string(f.kind),
                                                     "detail": .string(f.detail), "status": "open", "created_at": .millis(now),
                                                     "run_id": .string(runID)]],
                           upsert: true)
            }
            let result = try client.bulkWrite(Collections.reviewTickets, operations: operations, ordered: false, writeConcern: writeConcern)
            opened = result.upsertedCount
        }
        let finished = SystemClock.nowMillis()
        let report = Report(runID: runID, date: day, startedAt: ISO8601.format(now), finishedAt: ISO8601.format(max(finished, now)),
                            status: findings.isEmpty ? "ok" : "anomalies", devicesChecked: devices.count, anomalies: findings,
                            missingHeartbeats: missingHeartbeats, aggregateMismatches: mismatches, ticketsOpened: opened)
        let document: BSONDocument = [
            "_id": .string(runID), "run_id": .string(runID), "date": .string(day), "started_at": .millis(now),
            "finished_at": .millis(max(finished, now)), "status": .string(report.status), "devices_checked": .int64(Int64(devices.count)),
            "anomalies": .array(findings.map(Self.document)), "missing_heartbeats": .array(missingHeartbeats.map { .string($0) }),
            "aggregate_mismatches": .array(mismatches.map(Self.document)), "tickets_opened": .int64(Int64(opened)),
        ]
        _ = try client.insertMany([document], into: Collections.reconciliationReports, ordered: true, writeConcern: writeConcern)
        log(report)
        // The last run's findings by kind (0 for kinds it did not find).
        var byKind: [String: Int] = [:]
        for f in findings { byKind[f.kind, default: 0] += 1 }
        for kind in Self.kinds { Gauge(label: "autovolt_reconciliation_findings", dimensions: [("kind", kind)]).record(byKind[kind] ?? 0) }
        return report
    }

    func log(_ report: Report) {
        logger.notice("reconciliation \(report.date): \(report.devicesChecked) devices checked, \(report.anomalies.count) findings, \(report.ticketsOpened) new tickets",
                      metadata: ["run_id": "\(report.runID)", "status": "\(report.status)"])
        for finding in report.anomalies {
            logger.notice("reconciliation \(report.date) \(finding.kind): \(finding.detail)",
                          metadata: ["esp32_name": "\(finding.esp32Name)", "run_id": "\(report.runID)"])
        }
    }

    /// The report as a person reads it (CLI).
    public static func text(_ report: Report) -> String {
        var lines = ["reconciliation of \(report.date) (run \(report.runID)): \(report.status)",
                     "  devices checked: \(report.devicesChecked), findings: \(report.anomalies.count), new tickets: \(report.ticketsOpened)"]
        for f in report.anomalies { lines.append("  \(f.esp32Name.padding(toLength: 16, withPad: " ", startingAt: 0)) \(f.kind): \(f.detail)") }
        return lines.joined(separator: "\n")
    }

    static func document(_ f: Finding) -> BSON {
        ["esp32_name": .string(f.esp32Name), "kind": .string(f.kind), "detail": .string(f.detail)]
    }

    static let kinds = ["aggregate_mismatch", "ledger_overlap", "unprocessed_events", "counter_reset", "glitch", "implausible_power", "long_gap",
                        "silent_device", "no_tariff", "missing_heartbeat"]

    static func wh(_ v: Double) -> String { String(format: "%.3f", v) }

    /// The last finished reconciliation, nightly or by `reconcile`, for /health's `aggregation`.
    public static func lastReconciliation(_ client: MongoClient) throws(MongoError) -> (at: EpochMillis, runID: String)? {
        guard let doc = try client.findOne(Collections.reconciliationReports, filter: [:], sort: ["finished_at": -1],
                                           projection: ["finished_at": 1, "run_id": 1]),
              let at = doc["finished_at"]?.dateValue, let id = doc["run_id"]?.stringValue else { return nil }
        return (LedgerStore.millis(at), id)
    }
}


/// The in-process scheduler: closes yesterday shortly after local midnight and reconciles it at
/// `AUTOVOLT_RECONCILE_AT`. Runs are recorded in `scheduler_runs`, so a worker that was down
/// catches up on start, and a lease on the run document means two workers never run a job twice.
public final class Scheduler: Sendable {
    static let runsCollection = "scheduler_runs"

    let client: MongoClient
    let schedule: Schedule
    let timeZone: TimeZone
    let owner: String
    let aggregation: AggregationStore
    let reconciler: Reconciler
    /// Makes the month-end statement drafts (nil: not this scheduler's job, as in some tests).
    let statements: StatementStore?
    let writeConcern: WriteConcern
    let logger: Logger
    let leaseMillis: Int64 = 15 * 60_000
    /// When this worker started: a job that comes due after it always runs.
    let listeningSince: EpochMillis
    private let firstReceivedAt = Mutex<EpochMillis?>(nil)

    public init(client: MongoClient, schedule: Schedule, timeZone: TimeZone, owner: String, aggregation: AggregationStore,
                reconciler: Reconciler, statements: StatementStore? = nil, writeConcern: WriteConcern, logger: Logger,
                listeningSince: EpochMillis) {
        self.listeningSince = listeningSince
        self.statements = statements
        self.client = client
        self.schedule = schedule
        self.timeZone = timeZone
        self.owner = owner
        self.aggregation = aggregation
        self.reconciler = reconciler
        self.writeConcern = writeConcern
        self.logger = logger
    }

    /// Runs every job due at `now` that nobody has done or is doing; returns the ones it ran.
    @discardableResult
    public func tick(now: EpochMillis) throws(MongoError) -> [ScheduledJob] {
        var calendar = LocalCalendar(timeZone: timeZone)
        // A job that came due while this worker ran always runs (2 AM comes, the report is
        // written). Missed ones are caught up only back to the day of the first reading this
        // database received: a new installation would otherwise report a week of "silent"
        // devices it never listened to.
        let firstDate = try firstReceived().map { calendar.date(of: $0) }
        let candidates = schedule.due(now: now, calendar: &calendar, done: []).filter { job in
            job.dueAt >= listeningSince || firstDate.map { job.date >= $0 } ?? false
        }
        guard !candidates.isEmpty else { return [] }
        let done = Set(try client.find(Self.runsCollection, filter: ["_id": ["$in": .array(candidates.map { .string($0.id) })], "status": "done"],
                                       projection: ["_id": 1], limit: candidates.count).compactMap { $0["_id"]?.stringValue })
        var ran: [ScheduledJob] = []
        let candidateIDs = Set(candidates.map(\.id))
        for job in candidates where !done.contains(job.id) {
            // The month's drafts wait for its last day's close and reconciliation, wherever they
            // run (another worker may hold their lease): at a later tick, they are done.
            if job.kind == .statements {
                let last = CivilDate(daysSinceEpoch: job.date.daysSinceEpoch - 1)
                let before = ["\(ScheduledJob.Kind.dayClose.rawValue):\(last)", "\(ScheduledJob.Kind.reconcile.rawValue):\(last)"]
                let finished = done.union(ran.map(\.id))
                guard before.allSatisfy({ !candidateIDs.contains($0) || finished.contains($0) }) else { continue }
            }
            guard try acquire(job, now: now) else { continue }
            logger.info("scheduler: running \(job.id)")
            var runID: String?
            do {
                switch job.kind {
                case .dayClose:
                    let report = try aggregation.closeDay(job.date, now: now)
                    logger.info("day closed", metadata: ["date": "\(job.date)", "aggregates_recalculated": "\(report.recalculated)",
                                                         "aggregates_changed": "\(report.changedCount)"])
                case .reconcile:
                    runID = try reconciler.run(date: job.date, now: now).runID
                case .statements:
                    // A failure is this job's alone: it is marked failed (retried at the next
                    // tick) and the jobs after it still run.
                    guard makeStatementDrafts(for: job, now: now) else {
                        _ = try? client.updateOne(Self.runsCollection, filter: ["_id": .string(job.id), "owner": .string(owner)],
                                                  update: ["$set": ["status": "failed"], "$unset": ["lease_until": ""]],
                                                  upsert: false, writeConcern: writeConcern)
                        continue
                    }
                }
            } catch {
                _ = try? client.updateOne(Self.runsCollection, filter: ["_id": .string(job.id), "owner": .string(owner)],
                                          update: ["$set": ["status": "failed", "error": .string("\(error)")], "$unset": ["lease_until": ""]],
                                          upsert: false, writeConcern: writeConcern)
                throw error
            }
            var set: BSONDocument = ["status": "done", "finished_at": .millis(max(now, SystemClock.nowMillis()))]
            if let runID { set["run_id"] = .string(runID) }
            _ = try client.updateOne(Self.runsCollection, filter: ["_id": .string(job.id), "owner": .string(owner)],
                                     update: ["$set": .document(set), "$unset": ["lease_until": ""]], upsert: false, writeConcern: writeConcern)
            Counter(label: "autovolt_scheduler_runs_total", dimensions: [("job", job.kind.rawValue)]).increment()
            ran.append(job)
        }
        return ran
    }

    /// The drafts of the month before the job's date; false when a scope's failed (each failure
    /// is logged with its scope; the others are made).
    private func makeStatementDrafts(for job: ScheduledJob, now: EpochMillis) -> Bool {
        guard let statements else { return true }
        let month = Statement.previousMonth(of: job.date)
        let (made, failed) = statements.generateMonthEnd(month: month, now: now)
        logger.notice("statement drafts made", metadata: [
            "month": "\(month)", "drafts": "\(made.count)", "ids": "\(made.map(\.id).joined(separator: " "))",
        ])
        for (scope, error) in failed {
            logger.error("statement draft failed; retrying at the next tick", metadata: [
                "month": "\(month)", "scope": "\(StatementDocuments.scopeKey(scope))", "error": "\(error)",
            ])
        }
        return failed.isEmpty
    }

    /// When this database received its first reading; asked once, then remembered (the scheduler
    /// ticks every 30 s, and the answer only moves if events expire two years later).
    private func firstReceived() throws(MongoError) -> EpochMillis? {
        if let known = firstReceivedAt.withLock({ $0 }) { return known }
        guard let first = try client.findOne(Collections.telemetryEvents, filter: [:], sort: ["received_at": 1],
                                             projection: ["received_at": 1])?["received_at"]?.dateValue else { return nil }
        let millis = LedgerStore.millis(first)
        firstReceivedAt.withLock { $0 = millis }
        return millis
    }

    private func acquire(_ job: ScheduledJob, now: EpochMillis) throws(MongoError) -> Bool {
        let filter: BSONDocument = ["_id": .string(job.id), "status": ["$ne": "done"], "$or": [
            ["lease_until": ["$exists": false]], ["lease_until": ["$lt": .millis(now)]],
        ]]
        let update: BSONDocument = ["$set": [
            "kind": .string(job.kind.rawValue), "date": .string(job.date.description), "status": "running", "owner": .string(owner),
            "started_at": .millis(now), "lease_until": .millis(now + leaseMillis),
        ]]
        do {
            let result = try client.updateOne(Self.runsCollection, filter: filter, update: update, upsert: true, writeConcern: writeConcern)
            return result.matchedCount == 1 || result.upsertedID != nil
        } catch let error where error.isDuplicateKey {
            return false
        }
    }
}
