import AutoVoltCore

/// The data operations of the nightly reconciliation (`Reconciler`) and the scheduler
/// (`Scheduler`): the day's figures summed by the database, the review tickets of a day, the
/// reports, and the leased run records of `scheduler_runs`. One implementation per backend:
/// `MongoReconciliationStorage`, `PostgresReconciliationStorage`, held to the same contract by
/// ReconciliationStorageConformanceTests. Only domain values cross it.
///
/// What a finding is, which tickets open, stay, resolve or reopen, when a job is due and when a
/// day is judged again stay in the logic; implementations only read and write. Reads that grow
/// with the data (a campus day is ~1.4 M ledger entries and as many events) are sums per device
/// computed by the database; what comes back is bounded by the campus. Blocking: call from a
/// dedicated thread. Errors are the backend's own (`MongoError`, `PostgresError`), classified by
/// `StorageFailure`.
public protocol ReconciliationStorage: Sendable {
    // MARK: What is still on its way (pendingInDatabase)

    /// Whether any event with device time before `before` is not in the ledger yet (`processed` false).
    func hasUnprocessedEvents(before: EpochMillis) throws -> Bool
    /// Whether the ledger marked any device-day on or before `date` for re-aggregation
    /// (`ledger_dirty_days`).
    func hasDirtyDays(upTo date: CivilDate) throws -> Bool

    // MARK: The day's figures

    /// Per device, the live (not superseded) ledger entries of `date`: the billable energy, and
    /// how many intervals carry each flagged reason, an interval split at midnight counted once
    /// (by its first part). A device appears when it has a live billable entry or a flagged one.
    func ledgerFigures(of date: CivilDate) throws -> [String: LedgerDayFigures]
    /// The daily aggregates of `date`, per device, and the newest `computed_at` among them.
    func dayAggregates(of date: CivilDate) throws -> DayAggregates
    /// Per device, the unprocessed events with device time in [from, to).
    func unprocessedEventCounts(from: EpochMillis, to: EpochMillis) throws -> [String: Int]
    /// Which of `names` have no event with device time in [from, to).
    func devicesWithoutEvents(_ names: [String], from: EpochMillis, to: EpochMillis) throws -> Set<String>
    /// Every device's presence as `device_status` holds it (bounded by the campus).
    func presence() throws -> [String: DevicePresence]

    // MARK: Review tickets (`review_tickets`)

    /// Judges the tickets of `date` of `kinds`: reads them (one per device and kind at most),
    /// hands them to `decide`, and applies what it returns, stamping `runID` and `now`:
    /// - `.keep`: `detail` and `last_run_id` set; when `reopen`, `status` open again with
    ///   `reopened_at`, and `resolved_at`/`resolved_run_id` removed;
    /// - `.open`: a ticket inserted (`status` open, `created_at`, `run_id`) unless one of its key
    ///   exists by then (another worker's run, the ledger's implausible_power ticket), whose
    ///   `last_run_id` is set;
    /// - `.resolve`: an open ticket resolved (`resolved_at`, `resolved_run_id`); one no longer
    ///   open is left as it is.
    /// Returns how many tickets `.open` inserted. A backend with transactions does the whole day
    /// in one, judgements of one day one after the other.
    func judgeTickets(date: CivilDate, kinds: [String], runID: String, now: EpochMillis,
                      _ decide: ([TicketKey: StoredTicket]) -> [TicketChange]) throws -> Int

    // MARK: Reports (`reconciliation_reports`)

    /// Stores a run's report; a report of the same `run_id` stored already is kept as it is.
    /// Returns whether this one was stored.
    @discardableResult
    func insertReport(_ report: ReconciliationReportRecord) throws -> Bool
    /// The report that finished last: when, and its run.
    func lastReconciliation() throws -> (at: EpochMillis, runID: String)?
    /// The last judgement (latest `started_at`) of each date in [from, before), with the newest
    /// aggregate it saw.
    func lastJudgements(from: CivilDate, before: CivilDate) throws -> [CivilDate: DayJudgement]
    /// The newest `computed_at` of the daily aggregates of each date in [from, before).
    func newestAggregates(from: CivilDate, before: CivilDate) throws -> [CivilDate: EpochMillis]

    // MARK: The scheduler (`scheduler_runs`, and when the data begins)

    /// When the database received its first event (`received_at`); nil when it has none.
    func firstReceivedAt() throws -> EpochMillis?
    /// Which of these run ids are done.
    func doneRuns(_ ids: [String]) throws -> Set<String>
    /// Leases run `lease.id` to `lease.owner` (`status` running, `started_at`, `lease_until`,
    /// `kind`, `date`) when nobody holds it (no lease, or one expired before `lease.startedAt`)
    /// and `condition` holds; a run not recorded yet is created. True when this call took it:
    /// of two workers asking at once, one only.
    func acquireRun(_ lease: RunLease, condition: RunCondition) throws -> Bool
    /// `owner`'s run done: `status` done, `finished_at`, `run_id` when given, lease given back.
    /// Nothing when another owner holds it now.
    func finishRun(id: String, owner: String, finishedAt: EpochMillis, runID: String?) throws
    /// `owner`'s run failed: `status` failed, `error` when given, lease given back (tried again
    /// at a later tick). Nothing when another owner holds it now.
    func failRun(id: String, owner: String, error: String?) throws
}

/// A device's live ledger entries of one day, summed.
public struct LedgerDayFigures: Sendable, Equatable {
    public var billableWh: Double
    public var resets: Int
    public var glitches: Int
    public var implausible: Int
    public var longGaps: Int

    public init(billableWh: Double = 0, resets: Int = 0, glitches: Int = 0, implausible: Int = 0, longGaps: Int = 0) {
        self.billableWh = billableWh
        self.resets = resets
        self.glitches = glitches
        self.implausible = implausible
        self.longGaps = longGaps
    }

    /// The ledger reasons counted, as stored in `quality.reasons`.
    public static let flaggedReasons = ["counter_reset", "glitch_skipped", "implausible_power", "long_gap"]
}

/// A device's daily aggregate, the fields the reconciliation reads.
public struct DayAggregate: Sendable, Equatable {
    public var energyWh: Double
    /// nil: no tariff was in force (the aggregate's cost is null).
    public var cost: Double?
    public var overlapMillis: Int64?
    public var computedAt: EpochMillis?

    public init(energyWh: Double, cost: Double?, overlapMillis: Int64?, computedAt: EpochMillis?) {
        self.energyWh = energyWh
        self.cost = cost
        self.overlapMillis = overlapMillis
        self.computedAt = computedAt
    }
}

/// The daily aggregates of one date.
public struct DayAggregates: Sendable, Equatable {
    public var byDevice: [String: DayAggregate]
    /// The newest `computed_at` among them: a day is judged again when a newer one appears.
    public var newestComputedAt: EpochMillis?

    public init(byDevice: [String: DayAggregate] = [:], newestComputedAt: EpochMillis? = nil) {
        self.byDevice = byDevice
        self.newestComputedAt = newestComputedAt
    }
}

/// What `device_status` says of a board's presence.
public struct DevicePresence: Sendable, Equatable {
    /// nil until a status message said it.
    public var online: Bool?
    public var lastHeartbeatAt: EpochMillis?

    public init(online: Bool?, lastHeartbeatAt: EpochMillis?) {
        self.online = online
        self.lastHeartbeatAt = lastHeartbeatAt
    }
}

/// A ticket's key within its day (the unique key is esp32_name, date, kind).
public struct TicketKey: Sendable, Hashable, Comparable, CustomStringConvertible {
    public var esp32Name: String
    public var kind: String

    public init(esp32Name: String, kind: String) {
        self.esp32Name = esp32Name
        self.kind = kind
    }

    /// "esp32_name|kind": the order the changes are written in.
    public var description: String { "\(esp32Name)|\(kind)" }
    public static func < (a: TicketKey, b: TicketKey) -> Bool { a.description < b.description }
}

/// A stored ticket as the judgement sees it.
public struct StoredTicket: Sendable, Equatable {
    public var isOpen: Bool
    public init(isOpen: Bool) { self.isOpen = isOpen }
}

/// One change to the tickets of a day (see `ReconciliationStorage.judgeTickets`).
public enum TicketChange: Sendable, Equatable {
    /// A stored ticket found again; `reopen` when it had been resolved.
    case keep(TicketKey, detail: String, reopen: Bool)
    /// A new ticket.
    case open(TicketKey, detail: String)
    /// An open ticket whose finding no longer holds.
    case resolve(TicketKey)
}

/// A reconciliation report as stored (contract section 4, `reconciliation_reports`).
public struct ReconciliationReportRecord: Sendable {
    public var report: Reconciler.Report
    public var startedAt: EpochMillis
    public var finishedAt: EpochMillis
    /// The newest daily aggregate the judgement saw (nil: the day had none).
    public var aggregatesComputedAt: EpochMillis?
    /// A judgement made again because the day's data changed after it.
    public var judgedAgain: Bool

    public init(report: Reconciler.Report, startedAt: EpochMillis, finishedAt: EpochMillis, aggregatesComputedAt: EpochMillis?,
                judgedAgain: Bool) {
        self.report = report
        self.startedAt = startedAt
        self.finishedAt = finishedAt
        self.aggregatesComputedAt = aggregatesComputedAt
        self.judgedAgain = judgedAgain
    }
}

/// The last judgement of a day.
public struct DayJudgement: Sendable, Equatable {
    public var startedAt: EpochMillis
    /// The newest aggregate it saw (nil: none, or a report from before this was recorded).
    public var aggregatesComputedAt: EpochMillis?

    public init(startedAt: EpochMillis, aggregatesComputedAt: EpochMillis?) {
        self.startedAt = startedAt
        self.aggregatesComputedAt = aggregatesComputedAt
    }
}

/// A lease asked for on a run of `scheduler_runs`.
public struct RunLease: Sendable, Equatable {
    /// "day_close:2026-11-05", "reconcile_again:2026-11-05", ...
    public var id: String
    public var kind: String
    public var date: CivilDate
    public var owner: String
    /// Now: a lease that expired before it is free.
    public var startedAt: EpochMillis
    public var leaseUntil: EpochMillis

    public init(id: String, kind: String, date: CivilDate, owner: String, startedAt: EpochMillis, leaseUntil: EpochMillis) {
        self.id = id
        self.kind = kind
        self.date = date
        self.owner = owner
        self.startedAt = startedAt
        self.leaseUntil = leaseUntil
    }
}

/// What a free run must also satisfy to be leased.
public enum RunCondition: Sendable, Equatable {
    /// A nightly job: not done yet.
    case notDone
    /// A day judged again: never taken, or last taken at or before this instant.
    case lastStartedAtOrBefore(EpochMillis)
}
