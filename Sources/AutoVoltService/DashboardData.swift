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
        static func load(client: MongoClient, classroom: (String) -> String) throws(MongoError) -> OpenTickets {
            var rows: [(kind: String, board: BoardTickets)] = []
            try client.aggregateBatches(Collections.reviewTickets, pipeline: [
                ["$match": ["status": "open"]], ["$sort": ["date": 1]],
                ["$group": ["_id": ["kind": "$kind", "esp32_name": "$esp32_name"], "n": ["$sum": 1], "oldest": ["$min": "$date"],
                            "newest": ["$max": "$date"], "detail": ["$last": "$detail"]]],
            ]) { (groups) throws(MongoError) in
                for group in groups {
                    let key = group["_id"]?.documentValue
                    let name = key?["esp32_name"]?.stringValue ?? ""
                    rows.append((kind: key?["kind"]?.stringValue ?? "", board: BoardTickets(
                        esp32Name: name, classroom: classroom(name), count: group["n"]?.intValue ?? 0,
                        oldestDate: group["oldest"]?.stringValue ?? "", newestDate: group["newest"]?.stringValue ?? "",
                        detail: group["detail"]?.stringValue ?? "")))
                }
            }
            return grouped(rows)
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
    /// aggregates (and yesterday's, today), presence, and capped lists.
    public static func load(client: MongoClient, config: WorkerConfig, registry: DeviceRegistry, date: CivilDate,
                            now: EpochMillis) throws(MongoError) -> DashboardData {
        var calendar = LocalCalendar(timeZone: config.timeZone)
        let today = calendar.date(of: now)
        func parameters<P>(_ parse: () throws(AnalyticsParameterError) -> P) throws(MongoError) -> P {
            do { return try parse() } catch {
                throw MongoError(kind: .invalidArgument, code: 0, domain: 0, message: error.message)
            }
        }
        let dayText = date.description
        let monthText = String(dayText.prefix(7))
        let day = try AnalyticsQueries.summary(client: client, config: config,
                                               parameters: try parameters { () throws(AnalyticsParameterError) in try AnalyticsQueries.summaryParameters(classroom: nil, date: dayText) }, now: now)
        let month = try AnalyticsQueries.monthly(client: client, config: config,
                                                 parameters: try parameters { () throws(AnalyticsParameterError) in try AnalyticsQueries.monthlyParameters(classroom: nil, month: monthText) }).total.current
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
        try client.forEachBatch(Collections.dailyAggregates, filter: ["date": .string(dayText)],
                                projection: ["esp32_name": 1, "classroom": 1, "energy_wh": 1, "cost": 1, "currency": 1, "coverage": 1,
                                             "confidence": 1, "hourly_wh": 1], batchSize: 500) { batch in
            for doc in batch {
                guard let name = doc["esp32_name"]?.stringValue else { continue }
                let classroom = doc["classroom"]?.stringValue ?? registry.resolve(name).classroom
                devices.append(DeviceRow(esp32Name: name, classroom: classroom, figures: AnalyticsQueries.DeviceDayFigures(doc)))
                let values = doc["hourly_wh"]?.arrayValue?.map { $0.doubleValue ?? 0 } ?? []
                var sums = hourly[classroom] ?? []
                if sums.count < values.count { sums += [Double](repeating: 0, count: values.count - sums.count) }
                for (i, v) in values.enumerated() { sums[i] += v }
                hourly[classroom] = sums
            }
        }
        devices.sort { ($0.classroom, $0.esp32Name) < ($1.classroom, $1.esp32Name) }
        var yesterdaySoFar: Double?
        if date == today {
            let yesterday = CivilDate(daysSinceEpoch: date.daysSinceEpoch - 1)
            let yesterdayStart = calendar.startOfDay(yesterday)
            let sameTime = now - 86_400_000
            var wh = 0.0
            try client.forEachBatch(Collections.dailyAggregates, filter: ["date": .string(yesterday.description)],
                                    projection: ["hourly_wh": 1], batchSize: 500) { batch in
                for doc in batch {
                    for (hour, value) in (doc["hourly_wh"]?.arrayValue ?? []).enumerated() {
                        let start = yesterdayStart + EpochMillis(hour) * 3_600_000
                        let share = min(1, max(0, Double(sameTime - start) / 3_600_000))
                        wh += (value.doubleValue ?? 0) * share
                    }
                }
            }
            yesterdaySoFar = wh / 1000
        }
        var presence: [String: Presence] = [:]
        try client.forEachBatch(Collections.deviceStatus, filter: [:],
                                projection: ["online": 1, "last_seen_at": 1, "last_telemetry_at": 1, "sessions": 1, "classroom": 1]) { batch in
            for doc in batch {
                guard let name = doc["_id"]?.stringValue else { continue }
                presence[name] = Presence(online: doc["online"]?.boolValue, lastSeenAt: AnalyticsQueries.millis(doc["last_seen_at"]),
                                          lastTelemetryAt: AnalyticsQueries.millis(doc["last_telemetry_at"]),
                                          sessions: Int(doc["sessions"]?.int64Value ?? 0))
                if classroomOf[name] == nil, let classroom = doc["classroom"]?.stringValue { classroomOf[name] = classroom }
            }
        }
        let tickets = try OpenTickets.load(client: client) { classroomOf[$0] ?? registry.resolve($0).classroom }
        let alarms = try AlarmStore.reader(client).list(activeOnly: true, from: nil, to: nil, limit: listLimit)
        let store = AggregationStore(client: client, registry: registry, timeZone: config.timeZone, writeConcern: .acknowledged,
                                     logger: .init(label: "dashboard"))
        let tariffs = try store.listTariffs().suffix(listLimit).map { TariffDocument($0, timeZone: config.timeZone) }
        return DashboardData(date: date, isToday: date == today, generatedAt: now, timeZone: config.timeZone, day: day, month: month,
                             yesterdaySoFarKwh: yesterdaySoFar, hourly: hourly, devices: devices, presence: presence,
                             registered: registered, classroomOf: classroomOf, tickets: tickets, alarms: alarms, tariffs: Array(tariffs))
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

    public static func load(client: MongoClient, config: WorkerConfig, registry: DeviceRegistry, esp32Name: String,
                            date: CivilDate) throws(MongoError) -> DevicePageData {
        let name = BSON.string(esp32Name)
        let readings = try client.find(Collections.telemetryEvents, filter: ["esp32_name": name], sort: ["device_ts": -1],
                                       projection: ["device_ts": 1, "received_at": 1, "energy_wh_total": 1, "power_w": 1, "clock": 1],
                                       limit: readingLimit).map { doc in
            Reading(deviceTime: AnalyticsQueries.millis(doc["device_ts"]) ?? 0, receivedAt: AnalyticsQueries.millis(doc["received_at"]) ?? 0,
                    energyWh: doc["energy_wh_total"]?.doubleValue ?? 0, powerW: doc["power_w"]?.doubleValue, clock: doc["clock"]?.stringValue ?? "")
        }
        let ledger = try client.find(Collections.ledgers, filter: ["esp32_name": name, "date": .string(date.description)], sort: ["start_ts": 1],
                                     limit: entryLimit + 1)
        let entries = ledger.prefix(entryLimit).map { doc in
            let quality = doc["quality"]?.documentValue
            let reasons = quality?["reasons"]?.arrayValue?.compactMap(\.stringValue) ?? []
            return Entry(start: AnalyticsQueries.millis(doc["start_ts"]) ?? 0, end: AnalyticsQueries.millis(doc["end_ts"]) ?? 0,
                         deltaWh: doc["delta_wh"]?.doubleValue ?? 0,
                         confidence: quality?["confidence"]?.stringValue ?? doc["confidence"]?.stringValue ?? "",
                         reasons: reasons, billable: doc["billable"]?.boolValue ?? true)
        }
        let rejects = try client.find(Collections.rejectedMessages, filter: ["esp32_name": name], sort: ["received_at": -1],
                                      projection: ["received_at": 1, "reason": 1, "detail": 1], limit: readingLimit).map { doc in
            Reject(receivedAt: AnalyticsQueries.millis(doc["received_at"]) ?? 0, reason: doc["reason"]?.stringValue ?? "",
                   detail: doc["detail"]?.stringValue ?? "")
        }
        let alarms = try client.find(AlarmStore.alarms, filter: ["esp32_name": name], sort: ["raised_at": -1], limit: readingLimit)
            .map(AlarmRecord.init)
        let status = try client.findOne(Collections.deviceStatus, filter: ["_id": name])
        let presence = status.map { doc in
            DashboardData.Presence(online: doc["online"]?.boolValue, lastSeenAt: AnalyticsQueries.millis(doc["last_seen_at"]),
                                   lastTelemetryAt: AnalyticsQueries.millis(doc["last_telemetry_at"]), sessions: Int(doc["sessions"]?.int64Value ?? 0))
        }
        let classroom = registry.devices[esp32Name]?.classroom ?? status?["classroom"]?.stringValue ?? DeviceInfo.unassignedClassroom
        return DevicePageData(esp32Name: esp32Name, classroom: classroom, date: date, timeZone: config.timeZone, presence: presence,
                              readings: readings, entries: Array(entries), entriesTruncated: ledger.count > entryLimit,
                              rejects: rejects, alarms: alarms)
    }
}
