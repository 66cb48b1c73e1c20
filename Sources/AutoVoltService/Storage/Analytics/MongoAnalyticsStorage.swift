import AutoVoltCore
import AutoVoltMongo
import Foundation

/// `AnalyticsStorage` on MongoDB: the queries' and the dashboard's reads as they were (same
/// filters, projections, pipelines and batch sizes). Throws `MongoError`. Every read carries the
/// time left of the calling thread's `MongoClient.withDeadline` as `maxTimeMS`.
public final class MongoAnalyticsStorage: AnalyticsStorage {
    public let client: MongoClient

    public init(client: MongoClient) {
        self.client = client
    }

    // MARK: Filters

    static let liveEntry: BSONDocument = ["$exists": false]

    static func scoped(_ filter: BSONDocument, _ classroom: String?) -> BSONDocument {
        var filter = filter
        if let classroom { filter["classroom"] = .string(classroom) }
        return filter
    }

    static func date(_ millis: EpochMillis) -> Date { Date(timeIntervalSince1970: Double(millis) / 1000) }

    /// The storage's untyped throws as `MongoError`, for the `client:` entry points that keep
    /// `throws(MongoError)` for their callers. A MongoDB storage throws only `MongoError`; the
    /// one other error the logic throws is a parameter the dashboard built itself
    /// (`AnalyticsParameterError`), an invalid argument as it always was.
    static func typed<T>(_ body: () throws -> T) throws(MongoError) -> T {
        do {
            return try body()
        } catch let error as MongoError {
            throw error
        } catch let error as AnalyticsParameterError {
            throw MongoError(kind: .invalidArgument, code: 0, domain: 0, message: error.message)
        } catch {
            throw MongoError(kind: .protocolError, code: 0, domain: 0, message: "\(error)")
        }
    }

    // MARK: daily_aggregates

    public func dailyTotals(from first: CivilDate, to last: CivilDate, classroom: String?) throws -> GroupedTotals {
        let dateFilter: BSON = first == last ? .string(first.description)
            : ["$gte": .string(first.description), "$lte": .string(last.description)]
        struct Group {
            var totals = AggregateTotals()
            var devices = Set<String>()
            var dates = Set<String>()
        }
        func add(_ doc: BSONDocument, to group: inout Group) {
            group.totals.add(energyWh: doc["energy_wh"]?.doubleValue ?? 0, cost: doc["cost"]?.doubleValue,
                             unpricedWh: doc["unpriced_wh"]?.doubleValue ?? 0, currency: doc["currency"]?.stringValue)
            if let name = doc["esp32_name"]?.stringValue { group.devices.insert(name) }
            if let date = doc["date"]?.stringValue { group.dates.insert(date) }
            group.totals.coverage += min(1, max(0, doc["coverage"]?.doubleValue ?? 0))
        }
        var total = Group()
        var byClassroom: [String: Group] = [:]
        var latest: CivilDate?
        // One device-day per document: read in batches, so a campus month is never one array.
        try client.forEachBatch(Collections.dailyAggregates, filter: Self.scoped(["date": dateFilter], classroom),
                                projection: ["date": 1, "esp32_name": 1, "classroom": 1, "energy_wh": 1, "cost": 1,
                                             "currency": 1, "coverage": 1, "unpriced_wh": 1], batchSize: 2000) { (docs) throws(MongoError) in
            for doc in docs {
                if let date = doc["date"]?.stringValue.flatMap(CivilDate.init), latest.map({ date > $0 }) ?? true { latest = date }
                add(doc, to: &total)
                add(doc, to: &byClassroom[doc["classroom"]?.stringValue ?? DeviceInfo.unassignedClassroom, default: Group()])
            }
        }
        func totals(_ group: Group) -> AggregateTotals {
            var totals = group.totals
            totals.devices = group.devices.count
            totals.days = group.dates.count
            return totals
        }
        // The latest date is the scope's (a classroom's own is not needed).
        var scope = totals(total)
        scope.latestDate = latest?.description
        return GroupedTotals(total: scope, byClassroom: byClassroom.mapValues(totals))
    }

    public func hourlySums(hoursPerDate: [String: Int], classroom: String?) throws -> [String: HourlySums] {
        let dates = hoursPerDate.keys.sorted()
        guard let first = dates.first, let last = dates.last else { return [:] }
        let dateRange: BSON = ["$gte": .string(first), "$lte": .string(last)]
        var dirty = Set<String>()
        try client.forEachBatch(LedgerStore.dirtyDaysCollection, filter: ["date": dateRange],
                                projection: ["esp32_name": 1, "date": 1]) { (docs) throws(MongoError) in
            for doc in docs {
                if let name = doc["esp32_name"]?.stringValue, let day = doc["date"]?.stringValue { dirty.insert("\(name)|\(day)") }
            }
        }
        var sums: [String: HourlySums] = [:]
        try client.forEachBatch(Collections.dailyAggregates, filter: Self.scoped(["date": dateRange, "hourly_wh": ["$exists": true]], classroom),
                                projection: ["esp32_name": 1, "date": 1, "hourly_wh": 1], batchSize: 500) { (docs) throws(MongoError) in
            for doc in docs {
                guard let name = doc["esp32_name"]?.stringValue, let day = doc["date"]?.stringValue,
                      !dirty.contains("\(name)|\(day)"), let count = hoursPerDate[day],
                      let values = doc["hourly_wh"]?.arrayValue, values.count == count else { continue }
                let hourly = values.map { $0.doubleValue ?? .nan }
                guard !hourly.contains(where: \.isNaN) else { continue }
                var sum = sums[day] ?? HourlySums(devices: [], hourlyWh: [Double](repeating: 0, count: count))
                sum.devices.insert(name)
                for i in hourly.indices where hourly[i] != 0 { sum.hourlyWh[i] += hourly[i] }
                sums[day] = sum
            }
        }
        return sums
    }

    public func dailyAggregates(date: CivilDate, classroom: String?, withHourly: Bool) throws -> [DailyAggregateRow] {
        let projection: BSONDocument = withHourly
            ? ["esp32_name": 1, "classroom": 1, "energy_wh": 1, "cost": 1, "currency": 1, "coverage": 1, "confidence": 1,
               "entries": 1, "complete": 1, "unpriced_wh": 1, "hourly_wh": 1]
            : ["hourly_wh": 0]
        var rows: [DailyAggregateRow] = []
        try client.forEachBatch(Collections.dailyAggregates, filter: Self.scoped(["date": .string(date.description)], classroom),
                                projection: projection, batchSize: 500) { (docs) throws(MongoError) in
            for doc in docs {
                if var row = Self.dailyRow(doc) {
                    if withHourly { row.hourlyWh = doc["hourly_wh"]?.arrayValue?.map { $0.doubleValue ?? 0 } }
                    rows.append(row)
                }
            }
        }
        return rows
    }

    /// A daily aggregate document as the queries read it (nil without `esp32_name`).
    static func dailyRow(_ doc: BSONDocument) -> DailyAggregateRow? {
        guard let name = doc["esp32_name"]?.stringValue else { return nil }
        return dailyFields(doc, name: name)
    }

    static func dailyFields(_ doc: BSONDocument, name: String) -> DailyAggregateRow {
        let counts = doc["confidence"]?.documentValue
        return DailyAggregateRow(
            esp32Name: name, classroom: doc["classroom"]?.stringValue, energyWh: doc["energy_wh"]?.doubleValue,
            cost: doc["cost"]?.doubleValue, currency: doc["currency"]?.stringValue, coverage: doc["coverage"]?.doubleValue,
            confidence: ConfidenceCounts(high: counts?["high"]?.intValue ?? 0, medium: counts?["medium"]?.intValue ?? 0,
                                         low: counts?["low"]?.intValue ?? 0),
            entries: doc["entries"]?.intValue, complete: doc["complete"]?.boolValue, unpricedWh: doc["unpriced_wh"]?.doubleValue,
            hourlyWh: nil)
    }

    public func hourlyTotal(date: CivilDate) throws -> [Double] {
        var sums: [Double] = []
        try client.forEachBatch(Collections.dailyAggregates, filter: ["date": .string(date.description)],
                                projection: ["hourly_wh": 1], batchSize: 500) { (docs) throws(MongoError) in
            for doc in docs {
                let values = doc["hourly_wh"]?.arrayValue ?? []
                if sums.count < values.count { sums += [Double](repeating: 0, count: values.count - sums.count) }
                for (hour, value) in values.enumerated() { sums[hour] += value.doubleValue ?? 0 }
            }
        }
        return sums
    }

    // MARK: monthly_aggregates

    public func monthlyTotals(months: [String], classroom: String?) throws -> [String: GroupedTotals] {
        struct Side {
            var totals = AggregateTotals()
            var devices = Set<String>()
            mutating func add(_ doc: BSONDocument, _ name: String) {
                totals.add(energyWh: doc["energy_wh"]?.doubleValue ?? 0, cost: doc["cost"]?.doubleValue,
                           unpricedWh: doc["unpriced_wh"]?.doubleValue ?? 0, currency: doc["currency"]?.stringValue)
                devices.insert(name)
            }
            var result: AggregateTotals {
                var t = totals
                t.devices = devices.count
                return t
            }
        }
        var sides: [String: (total: Side, byClassroom: [String: Side])] = [:]
        try client.forEachBatch(Collections.monthlyAggregates,
                                filter: Self.scoped(["month": ["$in": .array(months.map { .string($0) })]], classroom),
                                projection: ["month": 1, "esp32_name": 1, "classroom": 1, "energy_wh": 1, "cost": 1,
                                             "currency": 1, "unpriced_wh": 1], batchSize: 2000) { (docs) throws(MongoError) in
            for doc in docs {
                let month = doc["month"]?.stringValue ?? ""
                let room = doc["classroom"]?.stringValue ?? DeviceInfo.unassignedClassroom
                let name = doc["esp32_name"]?.stringValue ?? ""
                sides[month, default: (Side(), [:])].byClassroom[room, default: Side()].add(doc, name)
                sides[month, default: (Side(), [:])].total.add(doc, name)
            }
        }
        return sides.mapValues { GroupedTotals(total: $0.total.result, byClassroom: $0.byClassroom.mapValues(\.result)) }
    }

    // MARK: device_consumption_ledgers

    public func liveBillableEnergy(dates: [String], classroom: String?) throws -> [String: Double] {
        guard !dates.isEmpty else { return [:] }
        let match = Self.scoped(["date": ["$in": .array(dates.map { .string($0) })],
                                 "superseded_by": .document(Self.liveEntry), "billable": true], classroom)
        var energy: [String: Double] = [:]
        try client.aggregateBatches(Collections.ledgers, pipeline: [
            ["$match": .document(match)],
            ["$group": ["_id": "$date", "energy_wh": ["$sum": "$delta_wh"]]],
        ]) { (groups) throws(MongoError) in
            for group in groups {
                if let date = group["_id"]?.stringValue { energy[date, default: 0] += group["energy_wh"]?.doubleValue ?? 0 }
            }
        }
        return energy
    }

    public func forEachLiveBillableInterval(_ query: LiveIntervalQuery, _ body: ([Breakdown.Interval]) -> Void) throws {
        var filter: BSONDocument = [:]
        switch query.dates {
        case .list(let dates) where dates.count == 1: filter["date"] = .string(dates[0])
        case .list(let dates): filter["date"] = ["$in": .array(dates.map { .string($0) })]
        case .range(let first, let last): filter["date"] = ["$gte": .string(first), "$lte": .string(last)]
        }
        filter["superseded_by"] = .document(Self.liveEntry)
        filter["billable"] = true
        filter["start_ts"] = ["$lt": .datetime(Self.date(query.startBefore))]
        filter["end_ts"] = ["$gte": .datetime(Self.date(query.endFrom))]
        if !query.excludingDevices.isEmpty {
            filter["esp32_name"] = ["$nin": .array(query.excludingDevices.sorted().map { .string($0) })]
        }
        try client.forEachBatch(Collections.ledgers, filter: Self.scoped(filter, query.classroom),
                                projection: ["start_ts": 1, "end_ts": 1, "delta_wh": 1], batchSize: 2000) { (docs) throws(MongoError) in
            body(docs.compactMap { doc -> Breakdown.Interval? in
                guard let start = AnalyticsQueries.millis(doc["start_ts"]), let end = AnalyticsQueries.millis(doc["end_ts"]),
                      let energy = doc["delta_wh"]?.doubleValue else { return nil }
                return Breakdown.Interval(start: start, end: end, energyWh: energy)
            })
        }
    }

    public func devicesWithLiveEntries(date: CivilDate, classroom: String?) throws -> Set<String> {
        var names = Set<String>()
        try client.aggregateBatches(Collections.ledgers, pipeline: [
            ["$match": .document(Self.scoped(["date": .string(date.description), "superseded_by": .document(Self.liveEntry)], classroom))],
            ["$group": ["_id": "$esp32_name"]],
        ]) { (docs) throws(MongoError) in
            for doc in docs { if let name = doc["_id"]?.stringValue { names.insert(name) } }
        }
        return names
    }

    public func forEachLiveEntry(date: CivilDate, classroom: String?, devices: [String], _ body: ([LedgerEntryRow]) -> Void) throws {
        guard !devices.isEmpty else { return }
        try client.forEachBatch(
            Collections.ledgers,
            filter: Self.scoped(["date": .string(date.description), "superseded_by": .document(Self.liveEntry),
                                 "esp32_name": ["$in": .array(devices.map { .string($0) })]], classroom),
            projection: ["esp32_name": 1, "classroom": 1, "start_ts": 1, "end_ts": 1, "delta_wh": 1, "billable": 1,
                         "quality.confidence": 1, "source_events": 1], batchSize: 2000) { (docs) throws(MongoError) in
            body(docs.compactMap { doc -> LedgerEntryRow? in
                guard let name = doc["esp32_name"]?.stringValue, let start = AnalyticsQueries.millis(doc["start_ts"]),
                      let end = AnalyticsQueries.millis(doc["end_ts"]) else { return nil }
                return LedgerEntryRow(
                    esp32Name: name, classroom: doc["classroom"]?.stringValue, start: start, end: end,
                    energyWh: doc["delta_wh"]?.doubleValue ?? 0, billable: doc["billable"]?.boolValue ?? false,
                    confidence: doc["quality"]?.documentValue?["confidence"]?.stringValue.flatMap(Confidence.init(rawValue:)),
                    startEvent: doc["source_events"]?.arrayValue?.first?.stringValue)
            })
        }
    }

    /// Sorted by `_id` after `start_ts`: a superseded entry and the one that replaced it often
    /// start together, and the page lists them in the same order on every backend.
    public func ledgerEntries(esp32Name: String, date: CivilDate, limit: Int) throws -> [DevicePageData.Entry] {
        try client.find(Collections.ledgers, filter: ["esp32_name": .string(esp32Name), "date": .string(date.description)],
                        sort: ["start_ts": 1, "_id": 1], limit: limit).map { doc in
            let quality = doc["quality"]?.documentValue
            let reasons = quality?["reasons"]?.arrayValue?.compactMap(\.stringValue) ?? []
            return DevicePageData.Entry(
                start: AnalyticsQueries.millis(doc["start_ts"]) ?? 0, end: AnalyticsQueries.millis(doc["end_ts"]) ?? 0,
                deltaWh: doc["delta_wh"]?.doubleValue ?? 0,
                confidence: quality?["confidence"]?.stringValue ?? doc["confidence"]?.stringValue ?? "",
                reasons: reasons, billable: doc["billable"]?.boolValue ?? true)
        }
    }

    // MARK: telemetry_events

    /// Reads the devices' events of the window first, by the `esp32_name, device_ts` index;
    /// hashes not found there (an interval that began long before) are looked up by `event_hash`.
    public func switchStates(hashes: Set<String>, devices: [String], from: EpochMillis, to: EpochMillis) throws -> [String: Breakdown.SwitchState] {
        guard !hashes.isEmpty else { return [:] }
        var states: [String: Breakdown.SwitchState] = [:]
        var found = Set<String>()
        func take(_ docs: [BSONDocument]) {
            for doc in docs {
                guard let hash = doc["event_hash"]?.stringValue, hashes.contains(hash) else { continue }
                found.insert(hash)
                if let state = Self.switchState(doc["switch_state"]) { states[hash] = state }
            }
        }
        try client.forEachBatch(Collections.telemetryEvents,
                                filter: ["esp32_name": ["$in": .array(devices.sorted().map { .string($0) })],
                                         "device_ts": ["$gte": .datetime(Self.date(from)), "$lt": .datetime(Self.date(to))]],
                                projection: ["event_hash": 1, "switch_state": 1], batchSize: 2000) { (docs) throws(MongoError) in take(docs) }
        let missing = hashes.subtracting(found).sorted()
        var index = 0
        while index < missing.count {
            let chunk = missing[index..<min(index + 500, missing.count)]
            take(try client.find(Collections.telemetryEvents, filter: ["event_hash": ["$in": .array(chunk.map { .string($0) })]],
                                 projection: ["event_hash": 1, "switch_state": 1], limit: chunk.count))
            index += 500
        }
        return states
    }

    /// `switch_state` as stored (array of 0/1 or booleans, or an object of name to boolean or
    /// 0/1); nil for anything else.
    static func switchState(_ value: BSON?) -> Breakdown.SwitchState? {
        func onOff(_ v: BSON) -> Bool? { v.boolValue ?? v.doubleValue.map { $0 != 0 } }
        switch value {
        case .array(let items)?:
            var out: [Bool] = []
            for item in items {
                guard let on = onOff(item) else { return nil }
                out.append(on)
            }
            return .positions(out)
        case .document(let doc)?:
            var out: [String: Bool] = [:]
            for (key, item) in doc {
                guard let on = onOff(item) else { return nil }
                out[key] = on
            }
            return .named(out)
        default:
            return nil
        }
    }

    public func recentReadings(esp32Name: String, limit: Int) throws -> [DevicePageData.Reading] {
        try client.find(Collections.telemetryEvents, filter: ["esp32_name": .string(esp32Name)], sort: ["device_ts": -1],
                        projection: ["device_ts": 1, "received_at": 1, "energy_wh_total": 1, "power_w": 1, "clock": 1],
                        limit: limit).map { doc in
            DevicePageData.Reading(deviceTime: AnalyticsQueries.millis(doc["device_ts"]) ?? 0,
                                   receivedAt: AnalyticsQueries.millis(doc["received_at"]) ?? 0,
                                   energyWh: doc["energy_wh_total"]?.doubleValue ?? 0, powerW: doc["power_w"]?.doubleValue,
                                   clock: doc["clock"]?.stringValue ?? "")
        }
    }

    // MARK: device_status, rejected_messages, review_tickets, alarms, cost_versions

    static func statusRow(_ doc: BSONDocument) -> DeviceStatusRow? {
        guard let name = doc["_id"]?.stringValue else { return nil }
        return DeviceStatusRow(esp32Name: name, classroom: doc["classroom"]?.stringValue, online: doc["online"]?.boolValue,
                               lastSeenAt: AnalyticsQueries.millis(doc["last_seen_at"]),
                               lastTelemetryAt: AnalyticsQueries.millis(doc["last_telemetry_at"]),
                               sessions: Int(doc["sessions"]?.int64Value ?? 0))
    }

    public func deviceStatuses() throws -> [DeviceStatusRow] {
        var rows: [DeviceStatusRow] = []
        try client.forEachBatch(Collections.deviceStatus, filter: [:],
                                projection: ["online": 1, "last_seen_at": 1, "last_telemetry_at": 1, "sessions": 1, "classroom": 1]) { (docs) throws(MongoError) in
            rows += docs.compactMap(Self.statusRow)
        }
        return rows
    }

    public func deviceStatus(esp32Name: String) throws -> DeviceStatusRow? {
        try client.findOne(Collections.deviceStatus, filter: ["_id": .string(esp32Name)]).flatMap(Self.statusRow)
    }

    public func recentRejects(esp32Name: String, limit: Int) throws -> [DevicePageData.Reject] {
        try client.find(Collections.rejectedMessages, filter: ["esp32_name": .string(esp32Name)], sort: ["received_at": -1],
                        projection: ["received_at": 1, "reason": 1, "detail": 1], limit: limit).map { doc in
            DevicePageData.Reject(receivedAt: AnalyticsQueries.millis(doc["received_at"]) ?? 0, reason: doc["reason"]?.stringValue ?? "",
                                  detail: doc["detail"]?.stringValue ?? "")
        }
    }

    /// Grouped by the database: one row per kind and board, however many days are open.
    public func openTicketGroups() throws -> [OpenTicketGroup] {
        var rows: [OpenTicketGroup] = []
        try client.aggregateBatches(Collections.reviewTickets, pipeline: [
            ["$match": ["status": "open"]], ["$sort": ["date": 1]],
            ["$group": ["_id": ["kind": "$kind", "esp32_name": "$esp32_name"], "n": ["$sum": 1], "oldest": ["$min": "$date"],
                        "newest": ["$max": "$date"], "detail": ["$last": "$detail"]]],
        ]) { (groups) throws(MongoError) in
            for group in groups {
                let key = group["_id"]?.documentValue
                rows.append(OpenTicketGroup(kind: key?["kind"]?.stringValue ?? "", esp32Name: key?["esp32_name"]?.stringValue ?? "",
                                            count: group["n"]?.intValue ?? 0, oldestDate: group["oldest"]?.stringValue ?? "",
                                            newestDate: group["newest"]?.stringValue ?? "", detail: group["detail"]?.stringValue ?? ""))
            }
        }
        return rows
    }

    public func activeAlarms(limit: Int) throws -> [AlarmRecord] {
        try MongoAlarmStorage(client: client, writeConcern: .acknowledged).alarms(activeOnly: true, from: nil, to: nil, limit: limit)
    }

    /// Ties broken by id, as `MongoAlarmStorage.alarms` and PostgreSQL order them.
    public func recentAlarms(esp32Name: String, limit: Int) throws -> [AlarmRecord] {
        try client.find(AlarmStore.alarms, filter: ["esp32_name": .string(esp32Name)], sort: ["raised_at": -1, "_id": 1], limit: limit)
            .map(AlarmRecord.init)
    }

    public func tariffs() throws -> [Tariff] {
        try MongoAggregationStorage(client: client, writeConcern: .acknowledged).tariffs()
    }
}

extension AnalyticsQueries.DeviceDayFigures {
    /// The figures of a daily aggregate document.
    public init(_ doc: BSONDocument) {
        self.init(MongoAnalyticsStorage.dailyFields(doc, name: doc["esp32_name"]?.stringValue ?? ""))
    }
}
