import AutoVoltCore
import AutoVoltMongo
import Foundation

// The read queries of the contract (section 7 paths, section 1 CLI commands): `summary`,
// `timeline`, `device-breakdown` and `monthly`. The CLI and the HTTP API parse their parameters
// with the same functions (QueryParameters.swift, which declares AnalyticsQueries) and print the
// same JSON (the result types and `AnalyticsQueries.json`, QueryResults.swift).

// MARK: - Queries

extension AnalyticsQueries {
    // MARK: Helpers

    static let liveEntry: BSONDocument = ["$exists": false]

    static func scoped(_ filter: BSONDocument, _ classroom: String?) -> BSONDocument {
        var filter = filter
        if let classroom { filter["classroom"] = .string(classroom) }
        return filter
    }

    static func millis(_ value: BSON?) -> EpochMillis? {
        value?.dateValue.map { EpochMillis(($0.timeIntervalSince1970 * 1000).rounded()) }
    }


    static func wh(_ v: Double) -> Double { Breakdown.rounded(v, 3) }
    static func kwh(_ v: Double) -> Double { Breakdown.rounded(v / 1000, 6) }
    static func money(_ v: Double?) -> Double? { v.map { Breakdown.rounded($0, 4) } }
    static func fraction(_ v: Double) -> Double { Breakdown.rounded(v, 4) }

    /// Energy and cost summed over aggregate documents. The cost is unknown when a part with
    /// energy has none, or when the parts are in different currencies.
    struct CostSum {
        var energyWh = 0.0
        var cost = 0.0
        var costUnknown = false
        var currencies = Set<String>()

        mutating func add(_ doc: BSONDocument) {
            let energy = doc["energy_wh"]?.doubleValue ?? 0
            energyWh += energy
            if let c = doc["cost"]?.doubleValue {
                cost += c
            } else if energy > 0 || (doc["unpriced_wh"]?.doubleValue ?? 0) > 0 {
                costUnknown = true
            }
            if let currency = doc["currency"]?.stringValue { currencies.insert(currency) }
        }

        var costValue: Double? { costUnknown || currencies.count > 1 ? nil : cost }
        var currency: String? { currencies.count == 1 ? currencies.first : nil }
    }

    // MARK: summary

    /// Energy, cost and coverage of a day or a month, from `daily_aggregates` (a month is the sum
    /// of its days). Classroom totals are sums over the classroom's devices.
    public static func summary(client: MongoClient, config: WorkerConfig, parameters p: SummaryParameters,
                               now: EpochMillis? = nil) throws(MongoError) -> SummaryResult {
        let first = p.period.firstDay, last = p.period.lastDay
        let dateFilter: BSON = first == last ? .string(first.description)
            : ["$gte": .string(first.description), "$lte": .string(last.description)]
        var calendar = LocalCalendar(timeZone: config.timeZone)
        let today = calendar.date(of: now ?? SystemClock.nowMillis())

        struct Group {
            var sum = CostSum()
            var devices = Set<String>()
            var dates = Set<String>()
            var coverage = 0.0
        }
        func add(_ doc: BSONDocument, to group: inout Group) {
            group.sum.add(doc)
            if let name = doc["esp32_name"]?.stringValue { group.devices.insert(name) }
            if let date = doc["date"]?.stringValue { group.dates.insert(date) }
            group.coverage += min(1, max(0, doc["coverage"]?.doubleValue ?? 0))
        }
        var total = Group()
        var byClassroom: [String: Group] = [:]
        var latest: CivilDate?
        // One device-day per document: read in batches, so a campus month is never one array.
        try client.forEachBatch(Collections.dailyAggregates, filter: scoped(["date": dateFilter], p.classroom),
                                projection: ["date": 1, "esp32_name": 1, "classroom": 1, "energy_wh": 1, "cost": 1,
                                             "currency": 1, "coverage": 1, "unpriced_wh": 1], batchSize: 2000) { (docs) throws(MongoError) in
            for doc in docs {
                if let date = doc["date"]?.stringValue.flatMap(CivilDate.init), latest.map({ date > $0 }) ?? true { latest = date }
                add(doc, to: &total)
                add(doc, to: &byClassroom[doc["classroom"]?.stringValue ?? DeviceInfo.unassignedClassroom, default: Group()])
            }
        }
        let elapsed = p.period.elapsedDays(today: today, latestData: latest)
        func meanCoverage(_ group: Group) -> Double {
            group.devices.isEmpty ? 0 : fraction(min(1, group.coverage / Double(group.devices.count * elapsed)))
        }
        let classrooms: [ClassroomSummary]? = p.classroom != nil ? nil : byClassroom.keys.sorted().map { name in
            let g = byClassroom[name]!
            return ClassroomSummary(classroom: name, kwh: kwh(g.sum.energyWh), energyWh: wh(g.sum.energyWh),
                                    cost: money(g.sum.costValue), currency: g.sum.currency, devices: g.devices.count,
                                    coverage: meanCoverage(g), days: g.dates.count)
        }
        return SummaryResult(scope: p.classroom ?? "campus", period: p.period.description, periodType: p.period.kind,
                             startDate: first.description, endDate: last.description, kwh: kwh(total.sum.energyWh),
                             energyWh: wh(total.sum.energyWh), cost: money(total.sum.costValue), currency: total.sum.currency,
                             devices: total.devices.count, coverage: meanCoverage(total), days: total.dates.count,
                             daysElapsed: elapsed, byClassroom: classrooms)
    }

    // MARK: timeline

    /// Billable energy of the live ledger entries in local hour or day buckets over [start, end),
    /// each entry's energy spread over the buckets in proportion to time. Whole local days are
    /// summed by the database (an entry never crosses local midnight, so a day is the sum of its
    /// date's entries); only the partial days at the ends, and hourly buckets, read entries.
    public static func timeline(client: MongoClient, config: WorkerConfig, parameters p: TimelineParameters) throws(MongoError) -> TimelineResult {
        var calendar = LocalCalendar(timeZone: config.timeZone)
        let buckets = Breakdown.buckets(from: p.start, to: p.end, size: p.bucket, calendar: &calendar)
        var totals = [Double](repeating: 0, count: buckets.count)
        var wholeDays: [String: Int] = [:]
        var partialDays: [String] = []
        if p.bucket == .day {
            for (index, bucket) in buckets.enumerated() {
                let day = calendar.day(containing: bucket.start)
                if bucket.start == day.start && bucket.end == day.end {
                    wholeDays[bucket.label] = index
                } else {
                    partialDays.append(bucket.label)
                }
            }
        }
        if !wholeDays.isEmpty {
            let match = scoped(["date": ["$in": .array(wholeDays.keys.sorted().map { .string($0) })],
                                "superseded_by": .document(liveEntry), "billable": true], p.classroom)
            try client.aggregateBatches(Collections.ledgers, pipeline: [
                ["$match": .document(match)],
                ["$group": ["_id": "$date", "energy_wh": ["$sum": "$delta_wh"]]],
            ]) { (groups) throws(MongoError) in
                for group in groups {
                    if let date = group["_id"]?.stringValue, let index = wholeDays[date] {
                        totals[index] += group["energy_wh"]?.doubleValue ?? 0
                    }
                }
            }
        }
        if p.bucket == .hour {
            try hourlyTotals(client: client, parameters: p, buckets: buckets, calendar: &calendar, into: &totals)
        } else if !partialDays.isEmpty {
            let filter = scoped(["date": ["$in": .array(partialDays.map { .string($0) })], "superseded_by": .document(liveEntry),
                                 "billable": true, "start_ts": ["$lt": .datetime(date(p.end))],
                                 "end_ts": ["$gte": .datetime(date(p.start))]], p.classroom)
            try spreadEntries(client: client, filter: filter, buckets: buckets, into: &totals) { _ in true }
        }
        let total = totals.reduce(0, +)
        return TimelineResult(
            scope: p.classroom ?? "campus", start: ISO8601.format(p.start), end: ISO8601.format(p.end),
            timeZone: config.timeZone.identifier, bucket: p.bucket.rawValue, kwh: kwh(total), energyWh: wh(total),
            buckets: zip(buckets, totals).map { bucket, energy in
                TimelineBucket(label: bucket.label, start: ISO8601.format(bucket.start), end: ISO8601.format(bucket.end),
                               energyWh: wh(energy), kwh: kwh(energy))
            })
    }

    static func date(_ millis: EpochMillis) -> Date { Date(timeIntervalSince1970: Double(millis) / 1000) }

    /// Live billable ledger entries matching `filter`, read in batches and spread over `buckets`;
    /// only the buckets `counts` accepts are added to `totals`. Memory: one batch.
    static func spreadEntries(client: MongoClient, filter: BSONDocument, buckets: [Breakdown.Bucket], into totals: inout [Double],
                              counts: (Int) -> Bool) throws(MongoError) {
        try client.forEachBatch(Collections.ledgers, filter: filter, projection: ["start_ts": 1, "end_ts": 1, "delta_wh": 1],
                                batchSize: 2000) { (docs) throws(MongoError) in
            let intervals = docs.compactMap { doc -> Breakdown.Interval? in
                guard let start = millis(doc["start_ts"]), let end = millis(doc["end_ts"]),
                      let energy = doc["delta_wh"]?.doubleValue else { return nil }
                return Breakdown.Interval(start: start, end: end, energyWh: energy)
            }
            for (index, energy) in Breakdown.spread(intervals, over: buckets).enumerated() where energy != 0 && counts(index) {
                totals[index] += energy
            }
        }
    }

    /// Hourly buckets from the daily aggregates' `hourly_wh` (one number per local hour, the
    /// entries split by time at hour boundaries exactly as `Breakdown.spread` splits them), so a
    /// campus month is one small document per device-day instead of millions of entries. The
    /// ledger is still read, in batches, where an aggregate cannot answer: device-days without an
    /// aggregate with `hourly_wh` (not aggregated yet, or aggregated before `hourly_wh` existed),
    /// device-days the ledger changed since (`ledger_dirty_days`), and the clipped hours at the
    /// ends of a range that does not start or end on a whole local hour.
    static func hourlyTotals(client: MongoClient, parameters p: TimelineParameters, buckets: [Breakdown.Bucket],
                             calendar: inout LocalCalendar, into totals: inout [Double]) throws(MongoError) {
        guard !buckets.isEmpty else { return }
        let firstDate = calendar.date(of: p.start), lastDate = calendar.date(of: p.end - 1)
        let dates = (firstDate.daysSinceEpoch...max(firstDate.daysSinceEpoch, lastDate.daysSinceEpoch)).map(CivilDate.init(daysSinceEpoch:))
        // The local hours of each date, and which buckets are such whole hours.
        var hoursOf: [String: [EpochMillis]] = [:]
        var hourEnd: [EpochMillis: EpochMillis] = [:]
        for day in dates {
            let start = calendar.startOfDay(day), end = calendar.startOfDay(CivilDate(daysSinceEpoch: day.daysSinceEpoch + 1))
            let hours = Aggregator.localHours(dayStart: start, dayEnd: end, calendar: &calendar)
            hoursOf[day.description] = hours
            for i in hours.indices.dropLast() { hourEnd[hours[i]] = hours[i + 1] }
        }
        var wholeBucket: [EpochMillis: Int] = [:]
        var clipped: [Int] = []
        for (index, bucket) in buckets.enumerated() {
            if hourEnd[bucket.start] == bucket.end { wholeBucket[bucket.start] = index } else { clipped.append(index) }
        }
        let dateRange: BSON = ["$gte": .string(firstDate.description), "$lte": .string(lastDate.description)]
        var dirty = Set<String>()
        try client.forEachBatch(LedgerStore.dirtyDaysCollection, filter: ["date": dateRange],
                                projection: ["esp32_name": 1, "date": 1]) { (docs) throws(MongoError) in
            for doc in docs {
                if let name = doc["esp32_name"]?.stringValue, let day = doc["date"]?.stringValue { dirty.insert("\(name)|\(day)") }
            }
        }
        // Whole hours from the aggregates that can answer for their device-day.
        var covered: [String: Set<String>] = [:]
        try client.forEachBatch(Collections.dailyAggregates, filter: scoped(["date": dateRange, "hourly_wh": ["$exists": true]], p.classroom),
                                projection: ["esp32_name": 1, "date": 1, "hourly_wh": 1], batchSize: 500) { (docs) throws(MongoError) in
            for doc in docs {
                guard let name = doc["esp32_name"]?.stringValue, let day = doc["date"]?.stringValue,
                      !dirty.contains("\(name)|\(day)"), let hours = hoursOf[day],
                      let values = doc["hourly_wh"]?.arrayValue, values.count == hours.count - 1 else { continue }
                let hourly = values.map { $0.doubleValue ?? .nan }
                guard !hourly.contains(where: \.isNaN) else { continue }
                covered[day, default: []].insert(name)
                for i in hourly.indices where hourly[i] != 0 {
                    if let index = wholeBucket[hours[i]] { totals[index] += hourly[i] }
                }
            }
        }
        let live: BSONDocument = ["superseded_by": .document(liveEntry), "billable": true,
                                  "start_ts": ["$lt": .datetime(date(p.end))], "end_ts": ["$gte": .datetime(date(p.start))]]
        let clippedSet = Set(clipped)
        // Whole hours of the device-days no aggregate answered for, from the ledger.
        for day in dates {
            var filter = live
            filter["date"] = .string(day.description)
            if let names = covered[day.description], !names.isEmpty {
                filter["esp32_name"] = ["$nin": .array(names.sorted().map { .string($0) })]
            }
            try spreadEntries(client: client, filter: scoped(filter, p.classroom), buckets: buckets, into: &totals) { !clippedSet.contains($0) }
        }
        // Clipped hours at the ends, from the ledger of every device.
        for index in clipped {
            let bucket = buckets[index]
            var filter: BSONDocument = ["superseded_by": .document(liveEntry), "billable": true,
                                        "start_ts": ["$lt": .datetime(date(bucket.end))], "end_ts": ["$gte": .datetime(date(bucket.start))]]
            filter["date"] = ["$gte": .string(calendar.date(of: bucket.start).description),
                              "$lte": .string(calendar.date(of: bucket.end - 1).description)]
            try spreadEntries(client: client, filter: scoped(filter, p.classroom), buckets: buckets, into: &totals) { $0 == index }
        }
    }

    // MARK: device-breakdown

    /// A device-day's figures as its daily aggregate holds them, rounded as the API answers them
    /// (device-breakdown's rows, and the dashboard's device table).
    public struct DeviceDayFigures: Sendable, Equatable {
        public var kwh: Double
        public var energyWh: Double
        public var cost: Double?
        public var currency: String?
        public var coverage: Double
        public var confidence: ConfidenceCounts

        public init(_ doc: BSONDocument) {
            let energy = doc["energy_wh"]?.doubleValue ?? 0
            let counts = doc["confidence"]?.documentValue
            kwh = AnalyticsQueries.kwh(energy)
            energyWh = AnalyticsQueries.wh(energy)
            cost = AnalyticsQueries.money(doc["cost"]?.doubleValue)
            currency = doc["currency"]?.stringValue
            coverage = AnalyticsQueries.fraction(doc["coverage"]?.doubleValue ?? 0)
            confidence = ConfidenceCounts(high: counts?["high"]?.intValue ?? 0, medium: counts?["medium"]?.intValue ?? 0,
                                          low: counts?["low"]?.intValue ?? 0)
        }
    }

    /// Devices whose day of entries device-breakdown holds at once.
    static let devicesPerRead = 20

    /// Per device of a local day: energy, cost, coverage and confidence (from its daily aggregate,
    /// or from the ledger when there is none yet), and its energy per switch: each live billable
    /// ledger interval's energy is shared among the switches on at its start reading in
    /// proportion to their `rated_w` (`Breakdown.switchShares`); what cannot be attributed is
    /// `unattributed`.
    public static func deviceBreakdown(client: MongoClient, config: WorkerConfig,
                                       parameters p: DeviceBreakdownParameters) throws(MongoError) -> DeviceBreakdownResult {
        let dateText = p.date.description
        let calendar = LocalCalendar(timeZone: config.timeZone)
        let dayStart = calendar.startOfDay(p.date)
        let dayEnd = calendar.startOfDay(CivilDate(daysSinceEpoch: p.date.daysSinceEpoch + 1))
        // One aggregate per device of the day, and the names of the devices with entries that day
        // (grouped by the database): both grow with the devices, not with the readings.
        var aggregateByDevice: [String: BSONDocument] = [:]
        try client.forEachBatch(Collections.dailyAggregates, filter: scoped(["date": .string(dateText)], p.classroom),
                                projection: ["hourly_wh": 0], batchSize: 500) { (docs) throws(MongoError) in
            for doc in docs { if let name = doc["esp32_name"]?.stringValue { aggregateByDevice[name] = doc } }
        }
        var names = Set(aggregateByDevice.keys)
        try client.aggregateBatches(Collections.ledgers, pipeline: [
            ["$match": .document(scoped(["date": .string(dateText), "superseded_by": .document(liveEntry)], p.classroom))],
            ["$group": ["_id": "$esp32_name"]],
        ]) { (docs) throws(MongoError) in
            for doc in docs { if let name = doc["_id"]?.stringValue { names.insert(name) } }
        }

        struct Entry {
            var start: EpochMillis
            var end: EpochMillis
            var energyWh: Double
            var billable: Bool
            var confidence: Confidence?
            var startEvent: String?
        }
        var total = CostSum()
        var devices: [DeviceDayBreakdown] = []
        // The entries (and their start readings' switch states) of a few devices at a time: a
        // device-day is at most a few thousand entries, so memory stays at `devicesPerRead` of them.
        let sortedNames = names.sorted()
        for first in stride(from: 0, to: sortedNames.count, by: Self.devicesPerRead) {
            let chunk = Array(sortedNames[first..<min(first + Self.devicesPerRead, sortedNames.count)])
            var byDevice: [String: (classroom: String, entries: [Entry])] = [:]
            try client.forEachBatch(
                Collections.ledgers,
                filter: scoped(["date": .string(dateText), "superseded_by": .document(liveEntry),
                                "esp32_name": ["$in": .array(chunk.map { .string($0) })]], p.classroom),
                projection: ["esp32_name": 1, "classroom": 1, "start_ts": 1, "end_ts": 1, "delta_wh": 1, "billable": 1,
                             "quality.confidence": 1, "source_events": 1], batchSize: 2000) { (docs) throws(MongoError) in
                for doc in docs {
                    guard let name = doc["esp32_name"]?.stringValue, let start = millis(doc["start_ts"]),
                          let end = millis(doc["end_ts"]) else { continue }
                    let entry = Entry(start: start, end: end, energyWh: doc["delta_wh"]?.doubleValue ?? 0,
                                      billable: doc["billable"]?.boolValue ?? false,
                                      confidence: doc["quality"]?.documentValue?["confidence"]?.stringValue.flatMap(Confidence.init(rawValue:)),
                                      startEvent: doc["source_events"]?.arrayValue?.first?.stringValue)
                    byDevice[name, default: (doc["classroom"]?.stringValue ?? DeviceInfo.unassignedClassroom, [])].entries.append(entry)
                }
            }

            // The switch state of each interval's start reading.
            let wanted = Set(byDevice.values.flatMap { $0.entries.filter { $0.billable && $0.energyWh > 0 }.compactMap(\.startEvent) })
            let states = try switchStates(client: client, hashes: wanted, devices: Array(byDevice.keys),
                                          from: dayStart - 3 * 3_600_000, to: dayEnd)

            for name in chunk {
                let ledger = byDevice[name]?.entries ?? []
                let info = config.devices.resolve(name)
                var switchTotals = Breakdown.SwitchTotals(switches: info.switches)
                for entry in ledger where entry.billable {
                    switchTotals.add(energyWh: entry.energyWh, durationMillis: entry.end - entry.start,
                                     state: entry.startEvent.flatMap { states[$0] })
                }
                let ledgerWh = switchTotals.totalWh
                func share(_ energy: Double) -> Double { ledgerWh > 0 ? fraction(energy / ledgerWh) : 0 }
                let switches = info.switches.indices.map { i in
                    SwitchBreakdown(name: info.switches[i].name, ratedW: info.switches[i].ratedW,
                                    energyWh: wh(switchTotals.energyWh[i]), kwh: kwh(switchTotals.energyWh[i]),
                                    share: share(switchTotals.energyWh[i]),
                                    onHours: Breakdown.rounded(Double(switchTotals.onMillis[i]) / 3_600_000, 3))
                }
                let unattributed = Unattributed(energyWh: wh(switchTotals.unattributedWh), kwh: kwh(switchTotals.unattributedWh),
                                                share: share(switchTotals.unattributedWh))
                var row: DeviceDayBreakdown
                if let doc = aggregateByDevice[name] {
                    total.add(doc)
                    let f = DeviceDayFigures(doc)
                    row = DeviceDayBreakdown(
                        esp32Name: name, classroom: doc["classroom"]?.stringValue ?? byDevice[name]?.classroom ?? info.classroom,
                        source: "aggregate", kwh: f.kwh, energyWh: f.energyWh, cost: f.cost,
                        currency: f.currency, coverage: f.coverage, confidence: f.confidence,
                        entries: doc["entries"]?.intValue ?? ledger.count, complete: doc["complete"]?.boolValue,
                        ledgerWh: wh(ledgerWh), switches: switches, unattributed: unattributed)
                } else {
                    // Not aggregated yet: the same figures from the ledger (Breakdown.LedgerDay), with the cost unknown.
                    var day = Breakdown.LedgerDay()
                    for entry in ledger {
                        day.add(start: entry.start, end: entry.end, energyWh: entry.energyWh, billable: entry.billable,
                                confidence: entry.confidence, dayStart: dayStart, dayEnd: dayEnd)
                    }
                    total.add(["energy_wh": .double(day.energyWh), "cost": .null])
                    row = DeviceDayBreakdown(
                        esp32Name: name, classroom: byDevice[name]?.classroom ?? info.classroom, source: "ledger",
                        kwh: kwh(day.energyWh), energyWh: wh(day.energyWh), cost: nil, currency: nil,
                        coverage: fraction(day.coverage(dayStart: dayStart, dayEnd: dayEnd)),
                        confidence: ConfidenceCounts(high: day.high, medium: day.medium, low: day.low),
                        entries: day.entries, complete: nil, ledgerWh: wh(ledgerWh), switches: switches, unattributed: unattributed)
                }
                devices.append(row)
            }
        }
        devices.sort { ($0.classroom, $0.esp32Name) < ($1.classroom, $1.esp32Name) }
        return DeviceBreakdownResult(date: dateText, scope: p.classroom ?? "campus", kwh: kwh(total.energyWh),
                                     energyWh: wh(total.energyWh), cost: money(total.costValue), currency: total.currency,
                                     devices: devices)
    }

    /// `switch_state` of the events with these hashes. Reads the devices' events of the day (and
    /// a little before) by the `esp32_name, device_ts` index first; hashes not found there (an
    /// interval that began long before) are looked up by `event_hash`.
    static func switchStates(client: MongoClient, hashes: Set<String>, devices: [String], from: EpochMillis,
                             to: EpochMillis) throws(MongoError) -> [String: Breakdown.SwitchState] {
        guard !hashes.isEmpty else { return [:] }
        var states: [String: Breakdown.SwitchState] = [:]
        var found = Set<String>()
        func take(_ docs: [BSONDocument]) {
            for doc in docs {
                guard let hash = doc["event_hash"]?.stringValue, hashes.contains(hash) else { continue }
                found.insert(hash)
                if let state = switchState(doc["switch_state"]) { states[hash] = state }
            }
        }
        try client.forEachBatch(Collections.telemetryEvents,
                                filter: ["esp32_name": ["$in": .array(devices.sorted().map { .string($0) })],
                                         "device_ts": ["$gte": .datetime(Date(timeIntervalSince1970: Double(from) / 1000)),
                                                       "$lt": .datetime(Date(timeIntervalSince1970: Double(to) / 1000))]],
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

    // MARK: monthly

    /// Month over month per classroom, from `monthly_aggregates`: this month's and the previous
    /// month's energy and cost, and the change.
    public static func monthly(client: MongoClient, config: WorkerConfig, parameters p: MonthlyParameters) throws(MongoError) -> MonthlyResult {
        let current = p.month.description, previous = p.month.previous.description
        struct Side {
            var sum = CostSum()
            var devices = Set<String>()
        }
        var sides: [String: (current: Side, previous: Side)] = [:]
        var total = (current: Side(), previous: Side())
        func take(_ doc: BSONDocument) {
            let classroom = doc["classroom"]?.stringValue ?? DeviceInfo.unassignedClassroom
            let name = doc["esp32_name"]?.stringValue ?? ""
            let isCurrent = doc["month"]?.stringValue == current
            func add(_ side: inout Side) {
                side.sum.add(doc)
                side.devices.insert(name)
            }
            if isCurrent {
                add(&sides[classroom, default: (Side(), Side())].current)
                add(&total.current)
            } else {
                add(&sides[classroom, default: (Side(), Side())].previous)
                add(&total.previous)
            }
        }
        try client.forEachBatch(Collections.monthlyAggregates,
                                filter: scoped(["month": ["$in": [.string(current), .string(previous)]]], p.classroom),
                                projection: ["month": 1, "esp32_name": 1, "classroom": 1, "energy_wh": 1, "cost": 1,
                                             "currency": 1, "unpriced_wh": 1], batchSize: 2000) { (docs) throws(MongoError) in
            for doc in docs { take(doc) }
        }
        func figures(_ side: Side) -> MonthFigures {
            MonthFigures(kwh: kwh(side.sum.energyWh), energyWh: wh(side.sum.energyWh), cost: money(side.sum.costValue),
                         currency: side.sum.currency, devices: side.devices.count)
        }
        func compare(_ name: String, _ pair: (current: Side, previous: Side)) -> MonthComparison {
            let energy = Breakdown.change(current: pair.current.sum.energyWh, previous: pair.previous.sum.energyWh)
            let sameCurrency = pair.current.sum.currency == pair.previous.sum.currency || pair.current.sum.currency == nil
                || pair.previous.sum.currency == nil
            let cost: (absolute: Double?, percent: Double?) = sameCurrency ? Breakdown.change(current: pair.current.sum.costValue, previous: pair.previous.sum.costValue)
                : (nil, nil)
            let energyChange = energy.absolute ?? 0
            return MonthComparison(
                classroom: name, current: figures(pair.current), previous: figures(pair.previous),
                change: MonthChange(kwh: kwh(energyChange), energyWh: wh(energyChange),
                                    energyPercent: energy.percent.map { Breakdown.rounded($0, 2) },
                                    cost: money(cost.absolute), costPercent: cost.percent.map { Breakdown.rounded($0, 2) }))
        }
        let scope = p.classroom ?? "campus"
        return MonthlyResult(month: current, previousMonth: previous, scope: scope, total: compare(scope, total),
                             classrooms: sides.keys.sorted().map { compare($0, sides[$0]!) })
    }
}
