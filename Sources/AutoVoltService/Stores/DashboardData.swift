import AutoVoltCore
import AutoVoltMongo
import Foundation

/// Everything the dashboard shows, read with the API's own queries (`AnalyticsQueries`,
/// `AlarmStore`, the tariff list), so a card and the API never disagree. Bounded: the device
/// table is the day's breakdown (one row per device), lists are capped.
public struct DashboardData: Sendable {
    public struct Presence: Sendable, Equatable {
        public var online: Bool?
        public var lastSeenAt: EpochMillis?
        public var lastTelemetryAt: EpochMillis?
        public var sessions: Int
    }

    /// One board's open tickets of one kind.
    public struct BoardTickets: Sendable, Equatable {
        public var esp32Name: String
        public var classroom: String
        public var count: Int
        public var oldestDate: String
        public var newestDate: String
        /// The detail of its newest ticket.
        public var detail: String
    }

    /// The open tickets of one kind, by board, the oldest first.
    public struct TicketGroup: Sendable, Equatable {
        public var kind: String
        public var count: Int
        public var oldestDate: String
        /// At most `boardsPerKind` boards; `moreBoards` are not listed.
        public var boards: [BoardTickets]
        public var moreBoards: Int
    }

    /// Every open review ticket, counted; listed by kind, then board (bounded).
    public struct OpenTickets: Sendable, Equatable {
        public var total = 0
        public var byClassroom: [String: Int] = [:]
        public var groups: [TicketGroup] = []
        public init() {}

        static let boardsPerKind = 12

        /// Every open ticket, grouped by the database: one row per kind and board, however many
        /// days are open.
        static func load(storage: any AnalyticsStorage, classroom: (String) -> String) throws -> OpenTickets {
            grouped(try storage.openTicketGroups().map { row in
                (kind: row.kind, board: BoardTickets(esp32Name: row.esp32Name, classroom: classroom(row.esp32Name), count: row.count,
                                                     oldestDate: row.oldestDate, newestDate: row.newestDate, detail: row.detail))
            })
        }

        /// On MongoDB.
        static func load(client: MongoClient, classroom: (String) -> String) throws(MongoError) -> OpenTickets {
            try MongoAnalyticsStorage.typed { try load(storage: MongoAnalyticsStorage(client: client), classroom: classroom) }
        }

        /// Folds per (kind, board) counts, any order, into the groups shown.
        static func grouped(_ rows: [(kind: String, board: BoardTickets)]) -> OpenTickets {
            var result = OpenTickets()
            var byKind: [String: [BoardTickets]] = [:]
            for row in rows {
                result.total += row.board.count
                result.byClassroom[row.board.classroom, default: 0] += row.board.count
                byKind[row.kind, default: []].append(row.board)
            }
            result.groups = byKind.map { kind, boards in
                let sorted = boards.sorted { ($0.oldestDate, $0.esp32Name) < ($1.oldestDate, $1.esp32Name) }
                return TicketGroup(kind: kind, count: boards.reduce(0) { $0 + $1.count }, oldestDate: sorted.first?.oldestDate ?? "",
                                   boards: Array(sorted.prefix(boardsPerKind)), moreBoards: max(0, sorted.count - boardsPerKind))
            }.sorted { ($0.oldestDate, $0.kind) < ($1.oldestDate, $1.kind) }
            return result
        }
    }

    /// One device's day, from its daily aggregate (the figures device-breakdown answers).
    public struct DeviceRow: Sendable, Equatable {
        public var esp32Name: String
        public var classroom: String
        public var figures: AnalyticsQueries.DeviceDayFigures
    }

    public var date: CivilDate
    public var isToday: Bool
    public var generatedAt: EpochMillis
    public var timeZone: TimeZone
    public var day: SummaryResult
    /// The month of the date so far (the monthly query: one document per device, however late in the month).
    public var month: MonthFigures
    /// The previous day up to the same time of day (today only): its aggregates' hourly energy
    /// through the hours before this one, and this hour's share by the minute.
    public var yesterdaySoFarKwh: Double?
    /// Wh per local hour of the day per classroom: the aggregates' `hourly_wh`, summed.
    public var hourly: [String: [Double]]
    public var devices: [DeviceRow]
    public var presence: [String: Presence]
    /// Registered boards per classroom (the registry in force).
    public var registered: [String: Int]
    public var classroomOf: [String: String]
    public var tickets: OpenTickets
    public var alarms: [AlarmRecord]
    public var tariffs: [TariffDocument]

    public static let listLimit = 200

    /// Reads the dashboard of a local date (blocking: run it on the executor). The database work
    /// grows with the devices, never with the readings (nor the day of the month): the day's summary, the month's figures, one pass over the day's
    /// aggregates (and yesterday's hourly sums, today), presence, and capped lists.
    public static func load(storage: any AnalyticsStorage, config: WorkerConfig, registry: DeviceRegistry, date: CivilDate,
                            now: EpochMillis) throws -> DashboardData {
        var calendar = LocalCalendar(timeZone: config.timeZone)
        let today = calendar.date(of: now)
        let dayText = date.description
        let monthText = String(dayText.prefix(7))
        let day = try AnalyticsQueries.summary(storage: storage, config: config,
                                               parameters: try AnalyticsQueries.summaryParameters(classroom: nil, date: dayText), now: now)
        let month = try AnalyticsQueries.monthly(storage: storage, config: config,
                                                 parameters: try AnalyticsQueries.monthlyParameters(classroom: nil, month: monthText)).total.current
        var registered: [String: Int] = [:]
        var classroomOf: [String: String] = [:]
        var hourly: [String: [Double]] = [:]
        for device in registry.devices.values {
            registered[device.classroom, default: 0] += 1
            classroomOf[device.esp32Name] = device.classroom
            hourly[device.classroom] = hourly[device.classroom] ?? []
        }
        for classroom in day.byClassroom ?? [] where hourly[classroom.classroom] == nil { hourly[classroom.classroom] = [] }
        var devices: [DeviceRow] = []
        for row in try storage.dailyAggregates(date: date, classroom: nil, withHourly: true) {
            let classroom = row.classroom ?? registry.resolve(row.esp32Name).classroom
            devices.append(DeviceRow(esp32Name: row.esp32Name, classroom: classroom, figures: AnalyticsQueries.DeviceDayFigures(row)))
            let values = row.hourlyWh ?? []
            var sums = hourly[classroom] ?? []
            if sums.count < values.count { sums += [Double](repeating: 0, count: values.count - sums.count) }
            for (i, v) in values.enumerated() { sums[i] += v }
            hourly[classroom] = sums
        }
        devices.sort { ($0.classroom, $0.esp32Name) < ($1.classroom, $1.esp32Name) }
        var yesterdaySoFar: Double?
        if date == today {
            let yesterday = CivilDate(daysSinceEpoch: date.daysSinceEpoch - 1)
            let yesterdayStart = calendar.startOfDay(yesterday)
            let sameTime = now - 86_400_000
            var wh = 0.0
            for (hour, value) in try storage.hourlyTotal(date: yesterday).enumerated() {
                let start = yesterdayStart + EpochMillis(hour) * 3_600_000
                let share = min(1, max(0, Double(sameTime - start) / 3_600_000))
                wh += value * share
            }
            yesterdaySoFar = wh / 1000
        }
        var presence: [String: Presence] = [:]
        for status in try storage.deviceStatuses() {
            presence[status.esp32Name] = status.presence
            if classroomOf[status.esp32Name] == nil, let classroom = status.classroom { classroomOf[status.esp32Name] = classroom }
        }
        let tickets = try OpenTickets.load(storage: storage) { classroomOf[$0] ?? registry.resolve($0).classroom }
        let alarms = try storage.activeAlarms(limit: listLimit)
        let tariffs = try storage.tariffs().suffix(listLimit).map { TariffDocument($0, timeZone: config.timeZone) }
        return DashboardData(date: date, isToday: date == today, generatedAt: now, timeZone: config.timeZone, day: day, month: month,
                             yesterdaySoFarKwh: yesterdaySoFar, hourly: hourly, devices: devices, presence: presence,
                             registered: registered, classroomOf: classroomOf, tickets: tickets, alarms: alarms, tariffs: Array(tariffs))
    }

    /// On MongoDB.
    public static func load(client: MongoClient, config: WorkerConfig, registry: DeviceRegistry, date: CivilDate,
                            now: EpochMillis) throws(MongoError) -> DashboardData {
        try MongoAnalyticsStorage.typed {
            try load(storage: MongoAnalyticsStorage(client: client), config: config, registry: registry, date: date, now: now)
        }
    }
}

/// One device's page: its last readings, its ledger of the day, its rejects and alarms.
public struct DevicePageData: Sendable {
    public struct Reading: Sendable {
        public var deviceTime: EpochMillis
        public var receivedAt: EpochMillis
        public var energyWh: Double
        public var powerW: Double?
        public var clock: String
    }

    public struct Entry: Sendable {
        public var start: EpochMillis
        public var end: EpochMillis
        public var deltaWh: Double
        public var confidence: String
        public var reasons: [String]
        public var billable: Bool
    }

    public struct Reject: Sendable {
        public var receivedAt: EpochMillis
        public var reason: String
        public var detail: String
    }

    public var esp32Name: String
    public var classroom: String
    public var date: CivilDate
    public var timeZone: TimeZone
    public var presence: DashboardData.Presence?
    public var readings: [Reading]
    public var entries: [Entry]
    public var entriesTruncated: Bool
    public var rejects: [Reject]
    public var alarms: [AlarmRecord]

    static let readingLimit = 20
    static let entryLimit = 3000

    public static func load(storage: any AnalyticsStorage, config: WorkerConfig, registry: DeviceRegistry, esp32Name: String,
                            date: CivilDate) throws -> DevicePageData {
        let readings = try storage.recentReadings(esp32Name: esp32Name, limit: readingLimit)
        let ledger = try storage.ledgerEntries(esp32Name: esp32Name, date: date, limit: entryLimit + 1)
        let rejects = try storage.recentRejects(esp32Name: esp32Name, limit: readingLimit)
        let alarms = try storage.recentAlarms(esp32Name: esp32Name, limit: readingLimit)
        let status = try storage.deviceStatus(esp32Name: esp32Name)
        let classroom = registry.devices[esp32Name]?.classroom ?? status?.classroom ?? DeviceInfo.unassignedClassroom
        return DevicePageData(esp32Name: esp32Name, classroom: classroom, date: date, timeZone: config.timeZone, presence: status?.presence,
                              readings: readings, entries: Array(ledger.prefix(entryLimit)), entriesTruncated: ledger.count > entryLimit,
                              rejects: rejects, alarms: alarms)
    }

    /// On MongoDB.
    public static func load(client: MongoClient, config: WorkerConfig, registry: DeviceRegistry, esp32Name: String,
                            date: CivilDate) throws(MongoError) -> DevicePageData {
        try MongoAnalyticsStorage.typed {
            try load(storage: MongoAnalyticsStorage(client: client), config: config, registry: registry, esp32Name: esp32Name, date: date)
        }
    }
}
