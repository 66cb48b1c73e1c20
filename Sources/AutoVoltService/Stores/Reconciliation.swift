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
        /// Tickets of the day whose finding no longer holds, resolved by this run.
        public var ticketsResolved: Int
        /// Tickets of the day found again (open before, or resolved before and opened again).
        public var ticketsStillOpen: Int
        /// False when the day was judged while some of its data was still on its way in.
        public var dataComplete: Bool
        /// What was still pending when `dataComplete` is false.
        public var incompleteData: String?

        enum CodingKeys: String, CodingKey {
            case date, status, anomalies
            case ticketsResolved = "tickets_resolved", ticketsStillOpen = "tickets_still_open"
            case dataComplete = "data_complete", incompleteData = "incomplete_data"
            case runID = "run_id", startedAt = "started_at", finishedAt = "finished_at", devicesChecked = "devices_checked"
            case missingHeartbeats = "missing_heartbeats", aggregateMismatches = "aggregate_mismatches", ticketsOpened = "tickets_opened"
        }
    }

    let storage: any ReconciliationStorage
    let registry: DeviceRegistry
    let timeZone: TimeZone
    let logger: Logger
    /// No heartbeat for longer than this while online is a finding.
    var heartbeatSilenceMillis: Int64 = 10 * 60_000

    public init(storage: any ReconciliationStorage, registry: DeviceRegistry, timeZone: TimeZone, logger: Logger) {
        self.storage = storage
        self.registry = registry
        self.timeZone = timeZone
        self.logger = logger
    }

    /// On MongoDB.
    public init(client: MongoClient, registry: DeviceRegistry, timeZone: TimeZone, writeConcern: WriteConcern, logger: Logger) {
        self.init(storage: MongoReconciliationStorage(client: client, writeConcern: writeConcern), registry: registry, timeZone: timeZone,
                  logger: logger)
    }

    /// What of the day's data the database holds but the ledger and aggregation have not taken
    /// yet: events of the day or before still unprocessed, and days up to it whose aggregates wait
    /// to be computed again (judged before that, a ledger already changed would be compared with
    /// aggregates not yet: a false `aggregate_mismatch`). Few (MongoDB's index on processed leads, PostgreSQL's queue `telemetry_unprocessed`, and
    /// ledger_dirty_days' on date), unless a backlog is being worked off, which is what a
    /// judgement waits for.
    public func pendingInDatabase(_ date: CivilDate) throws -> [String] {
        let dayEnd = LocalCalendar(timeZone: timeZone).startOfDay(CivilDate(daysSinceEpoch: date.daysSinceEpoch + 1))
        var pending: [String] = []
        if try storage.hasUnprocessedEvents(before: dayEnd) {
            pending.append("events of \(date) or before not yet in the ledger")
        }
        if try storage.hasDirtyDays(upTo: date) {
            pending.append("aggregates of \(date) or before not yet computed again")
        }
        return pending
    }

    /// A first judgement of a day, or one made again because its data changed after it.
    public enum Judgement: Sendable {
        case first
        /// Judges what the late data can change: a finding about the moment of the run
        /// (`missing_heartbeat`) is left to the first judgement, and a board silent that day is
        /// not newly reported (it may be one registered since).
        case again
    }

    /// Judges `date` as the database holds it now. `judgedOn` says whether the data of the day
    /// had settled (the scheduler waits for that, within a bound); the report keeps it.
    public func run(date: CivilDate, now: EpochMillis, judgedOn: DataReadiness = .complete,
                    judgement: Judgement = .first) throws -> Report {
        let runID = "recon-\(date)-\(ISO8601.format(now).filter(\.isNumber).prefix(14))-\(UUID().uuidString.prefix(4).lowercased())"
        let calendar = LocalCalendar(timeZone: timeZone)
        let dayStart = calendar.startOfDay(date)
        let dayEnd = calendar.startOfDay(CivilDate(daysSinceEpoch: date.daysSinceEpoch + 1))
        let day = date.description

        // The day's figures per device, summed by the database: the day of a campus is ~1.4 M
        // ledger entries and as many events, and only a few of them are findings.
        let ledger = try storage.ledgerFigures(of: date)
        let dayAggregates = try storage.dayAggregates(of: date)
        let aggregates = dayAggregates.byDevice
        // The newest aggregate this judgement saw, by the aggregates' own clock: the day is
        // judged again when one newer appears (Scheduler.rejudgeChangedDays).
        let aggregatesComputedAt = dayAggregates.newestComputedAt
        let unprocessed = try storage.unprocessedEventCounts(from: dayStart, to: dayEnd)
        // Silent all day: one indexed probe (esp32_name, device_ts) per registered device.
        let silent = try storage.devicesWithoutEvents(Array(registry.devices.keys), from: dayStart, to: dayEnd)
        let statuses = try storage.presence()

        let devices = Set(registry.devices.keys).union(ledger.keys).union(aggregates.keys).union(unprocessed.keys).sorted()
        var findings: [Finding] = []
        var mismatches: [Finding] = []
        var missingHeartbeats: [String] = []
        for name in devices {
            let day = ledger[name] ?? LedgerDayFigures()
            let aggregateWh = aggregates[name]?.energyWh ?? 0
            if abs(day.billableWh - aggregateWh) > 1e-6 * max(1, day.billableWh) {
                let finding = Finding(esp32Name: name, kind: "aggregate_mismatch",
                                      detail: "ledger \(Self.wh(day.billableWh)) Wh, daily aggregate \(Self.wh(aggregateWh)) Wh")
                findings.append(finding)
                mismatches.append(finding)
            }
            // Computed by the day's aggregation, which reads every live entry of the day anyway.
            if let overlap = aggregates[name]?.overlapMillis, overlap > 0 {
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
            if let aggregate = aggregates[name], aggregate.cost == nil, aggregate.energyWh > 0 {
                findings.append(Finding(esp32Name: name, kind: "no_tariff",
                                        detail: "\(Self.wh(aggregateWh)) Wh with no tariff in force; add one with cost-versions add"))
            }
            if judgement == .first, let status = statuses[name], status.online == true {
                let last = status.lastHeartbeatAt
                if last.map({ now - $0 > heartbeatSilenceMillis }) ?? true {
                    missingHeartbeats.append(name)
                    let detail = last.map { "online, but no heartbeat since \(ISO8601.format($0))" } ?? "online, but no heartbeat ever received"
                    findings.append(Finding(esp32Name: name, kind: "missing_heartbeat", detail: detail))
                }
            }
        }

        let tickets = try judgeTickets(date: date, findings: findings, runID: runID, now: now, judgement: judgement)
        findings.removeAll { tickets.notReported.contains(TicketKey(esp32Name: $0.esp32Name, kind: $0.kind)) }
        let finished = SystemClock.nowMillis()
        let report = Report(runID: runID, date: day, startedAt: ISO8601.format(now), finishedAt: ISO8601.format(max(finished, now)),
                            status: findings.isEmpty ? "ok" : "anomalies", devicesChecked: devices.count, anomalies: findings,
                            missingHeartbeats: missingHeartbeats, aggregateMismatches: mismatches, ticketsOpened: tickets.opened,
                            ticketsResolved: tickets.resolved, ticketsStillOpen: tickets.stillOpen,
                            dataComplete: judgedOn.isComplete, incompleteData: judgedOn.isComplete ? nil : judgedOn.description)
        try storage.insertReport(ReconciliationReportRecord(report: report, startedAt: now, finishedAt: max(finished, now),
                                                            aggregatesComputedAt: aggregatesComputedAt, judgedAgain: judgement == .again))
        log(report)
        // The last run's findings by kind (0 for kinds it did not find).
        var byKind: [String: Int] = [:]
        for f in findings { byKind[f.kind, default: 0] += 1 }
        for kind in Self.kinds { Gauge(label: "autovolt_reconciliation_findings", dimensions: [("kind", kind)]).record(byKind[kind] ?? 0) }
        return report
    }

    func log(_ report: Report) {
        var metadata: Logger.Metadata = ["run_id": "\(report.runID)", "status": "\(report.status)"]
        if let pending = report.incompleteData { metadata["incomplete_data"] = "\(pending)" }
        logger.notice("reconciliation \(report.date): \(report.devicesChecked) devices checked, \(report.anomalies.count) findings, \(report.ticketsOpened) new tickets, \(report.ticketsResolved) resolved",
                      metadata: metadata)
        for finding in report.anomalies {
            logger.notice("reconciliation \(report.date) \(finding.kind): \(finding.detail)",
                          metadata: ["esp32_name": "\(finding.esp32Name)", "run_id": "\(report.runID)"])
        }
    }

    struct TicketOutcome {
        var opened = 0, resolved = 0, stillOpen = 0
        /// Findings a judgement made again does not report.
        var notReported: Set<TicketKey> = []
    }

    /// Kinds about the moment of the run, not the day's data: judged by the first judgement only.
    static let momentKinds: Set<String> = ["missing_heartbeat"]

    /// The day's tickets follow its findings: a finding with no ticket opens one, an open ticket
    /// whose finding no longer holds is resolved by this run, and one resolved earlier whose finding
    /// is back is open again. Only the kinds this check judges are touched (none other exist today,
    /// but a person's or another program's ticket is not ours to close).
    func judgeTickets(date: CivilDate, findings: [Finding], runID: String, now: EpochMillis,
                      judgement: Judgement = .first) throws -> TicketOutcome {
        let judged = judgement == .first ? Self.kinds : Self.kinds.filter { !Self.momentKinds.contains($0) }
        var found: [TicketKey: Finding] = [:]
        for f in findings {
            let key = TicketKey(esp32Name: f.esp32Name, kind: f.kind)
            found[key] = found[key] ?? f
        }
        var outcome = TicketOutcome()
        let opened = try storage.judgeTickets(date: date, kinds: judged, runID: runID, now: now) { existing in
            outcome = TicketOutcome()
            var changes: [TicketChange] = []
            for key in found.keys.sorted() {
                guard let f = found[key] else { continue }
                if let ticket = existing[key] {
                    outcome.stillOpen += 1
                    changes.append(.keep(key, detail: f.detail, reopen: !ticket.isOpen))
                } else if judgement == .again && f.kind == "silent_device" {
                    outcome.notReported.insert(key)
                } else {
                    outcome.opened += 1
                    changes.append(.open(key, detail: f.detail))
                }
            }
            for (key, ticket) in existing.sorted(by: { $0.key < $1.key }) where ticket.isOpen && found[key] == nil {
                outcome.resolved += 1
                changes.append(.resolve(key))
            }
            return changes
        }
        // Opened by this run: another (a second worker's run, the ledger's implausible_power)
        // may have got there first.
        outcome.opened = opened
        return outcome
    }

    /// The report as a person reads it (CLI).
    public static func text(_ report: Report) -> String {
        var lines = ["reconciliation of \(report.date) (run \(report.runID)): \(report.status)",
                     "  devices checked: \(report.devicesChecked), findings: \(report.anomalies.count), tickets: \(report.ticketsOpened) new, \(report.ticketsStillOpen) still open, \(report.ticketsResolved) resolved"]
        if let pending = report.incompleteData { lines.append("  judged on incomplete data: \(pending)") }
        for f in report.anomalies { lines.append("  \(f.esp32Name.padding(toLength: 16, withPad: " ", startingAt: 0)) \(f.kind): \(f.detail)") }
        return lines.joined(separator: "\n")
    }

    static let kinds = ["aggregate_mismatch", "ledger_overlap", "unprocessed_events", "counter_reset", "glitch", "implausible_power", "long_gap",
                        "silent_device", "no_tariff", "missing_heartbeat"]

    static func wh(_ v: Double) -> String { String(format: "%.3f", v) }

    /// The last finished reconciliation, nightly or by `reconcile`, for /health's `aggregation`.
    public static func lastReconciliation(_ client: MongoClient) throws(MongoError) -> (at: EpochMillis, runID: String)? {
        try MongoReconciliationStorage.lastReconciliation(client)
    }

    /// The same, on any backend.
    public static func lastReconciliation(_ storage: any ReconciliationStorage) throws -> (at: EpochMillis, runID: String)? {
        try storage.lastReconciliation()
    }
}


/// Whether the data of a day can be judged: nothing of it still on its way through the worker
/// (the journal, the broker's queue for this session, the ledger).
public struct DataReadiness: Sendable, Equatable, CustomStringConvertible {
    /// What is still pending, in words; empty when nothing is.
    public var pending: [String]
    public init(pending: [String]) { self.pending = pending }
    public var isComplete: Bool { pending.isEmpty }
    public static let complete = DataReadiness(pending: [])
    public var description: String { pending.isEmpty ? "complete" : pending.joined(separator: "; ") }
}

/// The in-process scheduler: closes yesterday shortly after local midnight and reconciles it at
/// `AUTOVOLT_RECONCILE_AT`. Runs are recorded in `scheduler_runs`, so a worker that was down
/// catches up on start, and a lease on the run document means two workers never run a job twice.
public final class Scheduler: Sendable {
    static let runsCollection = MongoReconciliationStorage.runsCollection

    let storage: any ReconciliationStorage
    let schedule: Schedule
    let timeZone: TimeZone
    let owner: String
    let aggregation: AggregationStore
    let reconciler: Reconciler
    /// Makes the month-end statement drafts (nil: not this scheduler's job, as in some tests).
    let statements: StatementStore?
    let logger: Logger
    let leaseMillis: Int64 = 15 * 60_000
    /// When this worker started: a job that comes due after it always runs.
    let listeningSince: EpochMillis
    private let firstReceivedAt = Mutex<EpochMillis?>(nil)
    /// What of the worker's own intake is still pending (the journal, the broker's queue); nil
    /// where there is no intake (tests, the CLI). The database's side is checked here.
    let intakeReadiness: (@Sendable () -> DataReadiness)?
    /// How long a reconciliation waits for its day's data before judging it as it is.
    let maxJudgementWait: EpochMillis
    /// Since when each reconciliation has been waiting for its data (this process's view).
    private let waitingSince = Mutex<[String: EpochMillis]>([:])
    /// When the days judged before were last checked for data that arrived after their judgement.
    private let changedDaysCheckedAt = Mutex<EpochMillis?>(nil)
    /// Days judged again when their data changed after the judgement: this many back.
    static let rejudgeDays = 31
    /// A day is judged again at most this often.
    static let rejudgeInterval: EpochMillis = 3_600_000
    /// How often the judged days are checked for changed data.
    static let changedDaysCheckInterval: EpochMillis = 5 * 60_000

    public init(storage: any ReconciliationStorage, schedule: Schedule, timeZone: TimeZone, owner: String, aggregation: AggregationStore,
                reconciler: Reconciler, statements: StatementStore? = nil, logger: Logger,
                listeningSince: EpochMillis, intakeReadiness: (@Sendable () -> DataReadiness)? = nil,
                maxJudgementWait: EpochMillis = 20 * 60_000) {
        self.listeningSince = listeningSince
        self.intakeReadiness = intakeReadiness
        self.maxJudgementWait = maxJudgementWait
        self.statements = statements
        self.storage = storage
        self.schedule = schedule
        self.timeZone = timeZone
        self.owner = owner
        self.aggregation = aggregation
        self.reconciler = reconciler
        self.logger = logger
    }

    /// On MongoDB.
    public convenience init(client: MongoClient, schedule: Schedule, timeZone: TimeZone, owner: String, aggregation: AggregationStore,
                            reconciler: Reconciler, statements: StatementStore? = nil, writeConcern: WriteConcern, logger: Logger,
                            listeningSince: EpochMillis, intakeReadiness: (@Sendable () -> DataReadiness)? = nil,
                            maxJudgementWait: EpochMillis = 20 * 60_000) {
        self.init(storage: MongoReconciliationStorage(client: client, writeConcern: writeConcern), schedule: schedule, timeZone: timeZone,
                  owner: owner, aggregation: aggregation, reconciler: reconciler, statements: statements, logger: logger,
                  listeningSince: listeningSince, intakeReadiness: intakeReadiness, maxJudgementWait: maxJudgementWait)
    }

    /// Runs every job due at `now` that nobody has done or is doing; returns the ones it ran.
    @discardableResult
    public func tick(now: EpochMillis) throws -> [ScheduledJob] {
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
        let done = try storage.doneRuns(candidates.map(\.id))
        // A reconciliation another worker ran while this one waited is no longer waited for.
        waitingSince.withLock { waiting in for id in done { waiting[id] = nil } }
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
            var judgedOn = DataReadiness.complete
            if job.kind == .reconcile {
                guard let readiness = try readiness(toJudge: job.date, jobID: job.id, now: now) else { continue }
                judgedOn = readiness
            }
            guard try acquire(id: job.id, kind: job.kind.rawValue, date: job.date, now: now, condition: .notDone) else { continue }
            logger.info("scheduler: running \(job.id)")
            var runID: String?
            do {
                switch job.kind {
                case .dayClose:
                    let report = try aggregation.closeDay(job.date, now: now)
                    logger.info("day closed", metadata: ["date": "\(job.date)", "aggregates_recalculated": "\(report.recalculated)",
                                                         "aggregates_changed": "\(report.changedCount)"])
                case .reconcile:
                    runID = try reconciler.run(date: job.date, now: now, judgedOn: judgedOn).runID
                case .statements:
                    // A failure is this job's alone: it is marked failed (retried at the next
                    // tick) and the jobs after it still run.
                    guard makeStatementDrafts(for: job, now: now) else {
                        try? storage.failRun(id: job.id, owner: owner, error: nil)
                        continue
                    }
                }
            } catch {
                try? storage.failRun(id: job.id, owner: owner, error: "\(error)")
                throw error
            }
            try storage.finishRun(id: job.id, owner: owner, finishedAt: max(now, SystemClock.nowMillis()), runID: runID)
            Counter(label: "autovolt_scheduler_runs_total", dimensions: [("job", job.kind.rawValue)]).increment()
            ran.append(job)
        }
        return ran
    }

    /// True while a reconciliation waits for its day's data (the caller ticks more often).
    public var isWaitingForData: Bool { waitingSince.withLock { !$0.isEmpty } }

    /// Whether the data of `date` can be judged now: nil to wait (the caller tries again at the
    /// next tick), else what it is judged on; after `maxJudgementWait` that is whatever has
    /// arrived, and the report says what had not.
    func readiness(toJudge date: CivilDate, jobID: String, now: EpochMillis) throws -> DataReadiness? {
        let readiness = DataReadiness(pending: (intakeReadiness?().pending ?? []) + (try reconciler.pendingInDatabase(date)))
        let since: EpochMillis = waitingSince.withLock { waiting in
            if readiness.isComplete { waiting[jobID] = nil; return now }
            if let since = waiting[jobID] { return since }
            waiting[jobID] = now
            return now
        }
        if readiness.isComplete { return readiness }
        if now - since < maxJudgementWait {
            if since == now {
                logger.notice("scheduler: \(jobID) waits for the day's data", metadata: [
                    "pending": "\(readiness)", "max_wait_s": "\(maxJudgementWait / 1000)",
                ])
            }
            return nil
        }
        waitingSince.withLock { $0[jobID] = nil }
        logger.warning("scheduler: \(jobID) judges the day on incomplete data after waiting \((now - since) / 1000) s",
                       metadata: ["pending": "\(readiness)"])
        return readiness
    }

    /// Judges again each recent day whose data changed after its last judgement (late readings,
    /// a board's offline queue, a backlog worked off after the run): its daily aggregates were
    /// computed since. At most once per `rejudgeInterval` per day, across workers (leased like
    /// the nightly jobs). Returns the days judged.
    @discardableResult
    public func rejudgeChangedDays(now: EpochMillis) throws -> [CivilDate] {
        let due: Bool = changedDaysCheckedAt.withLock { last in
            if let last, now - last < Self.changedDaysCheckInterval, now >= last { return false }
            last = now
            return true
        }
        guard due else { return [] }
        var calendar = LocalCalendar(timeZone: timeZone)
        let today = calendar.date(of: now)
        let from = CivilDate(daysSinceEpoch: today.daysSinceEpoch - Self.rejudgeDays)
        // The last judgement of each recent day (when, and the newest aggregate it saw), and
        // the newest aggregate of each now: one pass each over a month of reports and device-days.
        let judgedAt = try storage.lastJudgements(from: from, before: today)
        guard !judgedAt.isEmpty else { return [] }
        let changedAt = try storage.newestAggregates(from: from, before: today)
        var judged: [CivilDate] = []
        var candidates = Set<String>()
        for (date, last) in judgedAt.sorted(by: { $0.key < $1.key }) {
            // Newer than what the judgement saw, both by the aggregates' clock (a report without
            // it, from before this check existed: newer than the judgement).
            guard let changed = changedAt[date], changed > (last.aggregatesComputedAt ?? last.startedAt) else { continue }
            let id = "reconcile_again:\(date)"
            candidates.insert(id)
            guard now - last.startedAt >= Self.rejudgeInterval,
                  let judgedOn = try readiness(toJudge: date, jobID: id, now: now),
                  try acquire(id: id, kind: "reconcile_again", date: date, now: now,
                              condition: .lastStartedAtOrBefore(now - Self.rejudgeInterval)) else { continue }
            logger.info("scheduler: judging \(date) again: its data changed after its reconciliation",
                        metadata: ["reconciled_at": "\(ISO8601.format(last.startedAt))", "changed_at": "\(ISO8601.format(changed))"])
            let runID: String
            do {
                runID = try reconciler.run(date: date, now: now, judgedOn: judgedOn, judgement: .again).runID
            } catch {
                try? storage.failRun(id: id, owner: owner, error: "\(error)")
                throw error
            }
            try storage.finishRun(id: id, owner: owner, finishedAt: max(now, SystemClock.nowMillis()), runID: runID)
            Counter(label: "autovolt_scheduler_runs_total", dimensions: [("job", "reconcile_again")]).increment()
            judged.append(date)
        }
        // A day no longer waiting to be judged again is not waited for.
        waitingSince.withLock { waiting in
            for id in waiting.keys where id.hasPrefix("reconcile_again:") && !candidates.contains(id) { waiting[id] = nil }
        }
        return judged
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
    private func firstReceived() throws -> EpochMillis? {
        if let known = firstReceivedAt.withLock({ $0 }) { return known }
        guard let millis = try storage.firstReceivedAt() else { return nil }
        firstReceivedAt.withLock { $0 = millis }
        return millis
    }

    /// Leases a job's document in `scheduler_runs` when nobody holds it and `condition` holds:
    /// a nightly job not done yet, or a day judged again last taken at least `rejudgeInterval` ago
    /// (one document per day, so two workers never judge it again at once, nor more than hourly).
    private func acquire(id: String, kind: String, date: CivilDate, now: EpochMillis, condition: RunCondition) throws -> Bool {
        try storage.acquireRun(RunLease(id: id, kind: kind, date: date, owner: owner, startedAt: now, leaseUntil: now + leaseMillis),
                               condition: condition)
    }
}
