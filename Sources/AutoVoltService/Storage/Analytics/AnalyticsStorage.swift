import AutoVoltCore

/// The reads behind the analytics queries (`AnalyticsQueries`: summary, timeline,
/// device-breakdown, monthly) and the dashboard (`DashboardData`, `DevicePageData`). Synchronous
/// and blocking: call from a dedicated thread (the HTTP executor's, the CLI's). Errors are the
/// backend's own (`MongoError`, `PostgresError`).
///
/// The logic (what a summary, a bucket, a switch share or a comparison is, rounding, the JSON)
/// stays in `AnalyticsQueries` and `DashboardData`; a storage answers with sums the database
/// computes where it can (per classroom, per date, per hour), and reads what grows with the
/// data in batches. Two implementations: `MongoAnalyticsStorage` and `PostgresAnalyticsStorage`,
/// held to the same answers by AnalyticsStorageConformanceTests.
public protocol AnalyticsStorage: Sendable {
    // MARK: daily_aggregates

    /// Sums of the daily aggregates dated `from` through `to` (of `classroom` when given), in
    /// total and per classroom (an aggregate without one under `DeviceInfo.unassignedClassroom`).
    /// `AggregateTotals.days` and `coverage` are filled, and the total's `latestDate`.
    func dailyTotals(from: CivilDate, to: CivilDate, classroom: String?) throws -> GroupedTotals

    /// Per date, the element-wise sum of the `hourly_wh` of the aggregates that can answer for
    /// their device-day, and which devices those are: an aggregate with `hourly_wh` of exactly
    /// `hoursPerDate[date]` numbers, whose device-day the ledger has not changed since
    /// (`ledger_dirty_days`). Only the dates of `hoursPerDate`; a date no aggregate answers for
    /// is absent.
    func hourlySums(hoursPerDate: [String: Int], classroom: String?) throws -> [String: HourlySums]

    /// The daily aggregates of one date (of `classroom` when given), one per device, with their
    /// `hourly_wh` when `withHourly`. Grows with the devices, not with the readings.
    func dailyAggregates(date: CivilDate, classroom: String?, withHourly: Bool) throws -> [DailyAggregateRow]

    /// The element-wise sum of the `hourly_wh` of every daily aggregate of `date` (a number that
    /// is not one counts 0).
    func hourlyTotal(date: CivilDate) throws -> [Double]

    // MARK: monthly_aggregates

    /// Sums of the monthly aggregates of each of `months` ("YYYY-MM"), of `classroom` when given,
    /// in total and per classroom. A month without aggregates is absent.
    func monthlyTotals(months: [String], classroom: String?) throws -> [String: GroupedTotals]

    // MARK: device_consumption_ledgers (live entries: not superseded)

    /// The `delta_wh` of the live billable entries of each of `dates` (of `classroom`), summed per date.
    func liveBillableEnergy(dates: [String], classroom: String?) throws -> [String: Double]

    /// The live billable entries `query` selects, as intervals, handed to `body` a batch at a time.
    func forEachLiveBillableInterval(_ query: LiveIntervalQuery, _ body: ([Breakdown.Interval]) -> Void) throws

    /// Devices with live entries (billable or not) on `date`, of `classroom` when given.
    func devicesWithLiveEntries(date: CivilDate, classroom: String?) throws -> Set<String>

    /// The live entries (billable or not) of these devices on `date`, of `classroom` when given,
    /// handed to `body` a batch at a time.
    func forEachLiveEntry(date: CivilDate, classroom: String?, devices: [String], _ body: ([LedgerEntryRow]) -> Void) throws

    /// The entries (live or superseded) of one device on `date`, by start time, at most `limit`.
    func ledgerEntries(esp32Name: String, date: CivilDate, limit: Int) throws -> [DevicePageData.Entry]

    // MARK: telemetry_events

    /// `switch_state` of the events with these hashes, found among the events of `devices` with
    /// `from <= device_ts < to` and, for hashes not found there, by hash alone. A hash whose
    /// event is missing or whose state is not a switch state is absent.
    func switchStates(hashes: Set<String>, devices: [String], from: EpochMillis, to: EpochMillis) throws -> [String: Breakdown.SwitchState]

    /// The device's latest events by device time, at most `limit`.
    func recentReadings(esp32Name: String, limit: Int) throws -> [DevicePageData.Reading]

    // MARK: device_status, rejected_messages, review_tickets, alarms, cost_versions

    /// Every device's presence (one per board).
    func deviceStatuses() throws -> [DeviceStatusRow]

    /// One device's presence.
    func deviceStatus(esp32Name: String) throws -> DeviceStatusRow?

    /// The device's latest rejected messages, at most `limit`.
    func recentRejects(esp32Name: String, limit: Int) throws -> [DevicePageData.Reject]

    /// Open review tickets grouped by kind and board (one row per pair, however many days).
    func openTicketGroups() throws -> [OpenTicketGroup]

    /// Active alarms, the latest first, at most `limit`.
    func activeAlarms(limit: Int) throws -> [AlarmRecord]

    /// The device's alarms, the latest raised first, at most `limit`.
    func recentAlarms(esp32Name: String, limit: Int) throws -> [AlarmRecord]

    /// Every tariff version, by effective time then creation time.
    func tariffs() throws -> [Tariff]
}

// MARK: - Values at the boundary

/// Sums over a set of aggregates.
public struct AggregateTotals: Sendable, Equatable {
    public var energyWh = 0.0
    /// The sum of the known costs.
    public var cost = 0.0
    /// Some aggregate has energy (or unpriced energy) and no cost.
    public var costUnknown = false
    /// The currencies of the aggregates that say one.
    public var currencies: Set<String> = []
    /// Distinct devices.
    public var devices = 0
    /// Daily only: distinct dates.
    public var days = 0
    /// Daily only: the sum of the coverages, each clamped to [0, 1].
    public var coverage = 0.0
    /// Daily only: the latest date ("YYYY-MM-DD").
    public var latestDate: String?

    public init(energyWh: Double = 0, cost: Double = 0, costUnknown: Bool = false, currencies: Set<String> = [], devices: Int = 0,
                days: Int = 0, coverage: Double = 0, latestDate: String? = nil) {
        self.energyWh = energyWh
        self.cost = cost
        self.costUnknown = costUnknown
        self.currencies = currencies
        self.devices = devices
        self.days = days
        self.coverage = coverage
        self.latestDate = latestDate
    }
}

/// Totals of a scope and of each of its classrooms.
public struct GroupedTotals: Sendable, Equatable {
    public var total: AggregateTotals
    public var byClassroom: [String: AggregateTotals]

    public init(total: AggregateTotals = AggregateTotals(), byClassroom: [String: AggregateTotals] = [:]) {
        self.total = total
        self.byClassroom = byClassroom
    }
}

/// The hourly energy of one date from the aggregates that can answer for it.
public struct HourlySums: Sendable, Equatable {
    /// The devices whose aggregates were summed.
    public var devices: Set<String>
    /// Wh per local hour of the date.
    public var hourlyWh: [Double]

    public init(devices: Set<String>, hourlyWh: [Double]) {
        self.devices = devices
        self.hourlyWh = hourlyWh
    }
}

/// One daily aggregate as the queries read it (fields absent from a document are nil).
public struct DailyAggregateRow: Sendable, Equatable {
    public var esp32Name: String
    public var classroom: String?
    public var energyWh: Double?
    public var cost: Double?
    public var currency: String?
    public var coverage: Double?
    public var confidence: ConfidenceCounts
    public var entries: Int?
    public var complete: Bool?
    public var unpricedWh: Double?
    /// Only when asked for.
    public var hourlyWh: [Double]?

    public init(esp32Name: String, classroom: String?, energyWh: Double?, cost: Double?, currency: String?, coverage: Double?,
                confidence: ConfidenceCounts, entries: Int?, complete: Bool?, unpricedWh: Double?, hourlyWh: [Double]?) {
        self.esp32Name = esp32Name
        self.classroom = classroom
        self.energyWh = energyWh
        self.cost = cost
        self.currency = currency
        self.coverage = coverage
        self.confidence = confidence
        self.entries = entries
        self.complete = complete
        self.unpricedWh = unpricedWh
        self.hourlyWh = hourlyWh
    }
}

/// Which live billable entries to read as intervals: those of `dates` with
/// `start_ts < startBefore` and `end_ts >= endFrom`, of `classroom` when given, except those
/// of `excludingDevices`.
public struct LiveIntervalQuery: Sendable, Equatable {
    public enum Dates: Sendable, Equatable {
        /// These local dates ("YYYY-MM-DD").
        case list([String])
        /// Every date from the first through the second, inclusive.
        case range(String, String)
    }

    public var dates: Dates
    public var startBefore: EpochMillis
    public var endFrom: EpochMillis
    public var classroom: String?
    public var excludingDevices: [String]

    public init(dates: Dates, startBefore: EpochMillis, endFrom: EpochMillis, classroom: String?, excludingDevices: [String] = []) {
        self.dates = dates
        self.startBefore = startBefore
        self.endFrom = endFrom
        self.classroom = classroom
        self.excludingDevices = excludingDevices
    }
}

/// One live ledger entry as device-breakdown reads it.
public struct LedgerEntryRow: Sendable, Equatable {
    public var esp32Name: String
    public var classroom: String?
    public var start: EpochMillis
    public var end: EpochMillis
    public var energyWh: Double
    public var billable: Bool
    public var confidence: Confidence?
    /// The hash of the interval's start reading (the first of `source_events`).
    public var startEvent: String?

    public init(esp32Name: String, classroom: String?, start: EpochMillis, end: EpochMillis, energyWh: Double, billable: Bool,
                confidence: Confidence?, startEvent: String?) {
        self.esp32Name = esp32Name
        self.classroom = classroom
        self.start = start
        self.end = end
        self.energyWh = energyWh
        self.billable = billable
        self.confidence = confidence
        self.startEvent = startEvent
    }
}

/// A board's presence, as `device_status` holds it.
public struct DeviceStatusRow: Sendable, Equatable {
    public var esp32Name: String
    public var classroom: String?
    public var online: Bool?
    public var lastSeenAt: EpochMillis?
    public var lastTelemetryAt: EpochMillis?
    public var sessions: Int

    public init(esp32Name: String, classroom: String?, online: Bool?, lastSeenAt: EpochMillis?, lastTelemetryAt: EpochMillis?, sessions: Int) {
        self.esp32Name = esp32Name
        self.classroom = classroom
        self.online = online
        self.lastSeenAt = lastSeenAt
        self.lastTelemetryAt = lastTelemetryAt
        self.sessions = sessions
    }

    public var presence: DashboardData.Presence {
        DashboardData.Presence(online: online, lastSeenAt: lastSeenAt, lastTelemetryAt: lastTelemetryAt, sessions: sessions)
    }
}

/// The open review tickets of one kind and board.
public struct OpenTicketGroup: Sendable, Equatable {
    public var kind: String
    public var esp32Name: String
    public var count: Int
    public var oldestDate: String
    public var newestDate: String
    /// The detail of the newest ticket when it is text ("" otherwise).
    public var detail: String

    public init(kind: String, esp32Name: String, count: Int, oldestDate: String, newestDate: String, detail: String) {
        self.kind = kind
        self.esp32Name = esp32Name
        self.count = count
        self.oldestDate = oldestDate
        self.newestDate = newestDate
        self.detail = detail
    }
}

extension WorkerDatabase {
    /// The analytics reads of this database. `deadline` bounds every statement on PostgreSQL
    /// (`statement_timeout`); on MongoDB the caller's `MongoClient.withDeadline` does (`maxTimeMS`).
    public func analyticsStorage(deadline: ContinuousClock.Instant? = nil) -> any AnalyticsStorage {
        switch self {
        case .mongodb(let client): MongoAnalyticsStorage(client: client)
        case .postgresql(let pool): PostgresAnalyticsStorage(pool: pool, deadline: deadline)
        }
    }
}
