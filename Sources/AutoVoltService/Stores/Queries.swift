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

    static func millis(_ value: BSON?) -> EpochMillis? {
        value?.dateValue.map { EpochMillis(($0.timeIntervalSince1970 * 1000).rounded()) }
    }

    static func wh(_ v: Double) -> Double { Breakdown.rounded(v, 3) }
    static func kwh(_ v: Double) -> Double { Breakdown.rounded(v / 1000, 6) }
    static func money(_ v: Double?) -> Double? { v.map { Breakdown.rounded($0, 4) } }
    static func fraction(_ v: Double) -> Double { Breakdown.rounded(v, 4) }

    // MARK: summary

    /// Energy, cost and coverage of a day or a month, from `daily_aggregates` (a month is the sum
    /// of its days). Classroom totals are sums over the classroom's devices.
    public static func summary(storage: any AnalyticsStorage, config: WorkerConfig, parameters p: SummaryParameters,
                               now: EpochMillis? = nil) throws -> SummaryResult {
        let first = p.period.firstDay, last = p.period.lastDay
        var calendar = LocalCalendar(timeZone: config.timeZone)
        let today = calendar.date(of: now ?? SystemClock.nowMillis())
        let grouped = try storage.dailyTotals(from: first, to: last, classroom: p.classroom)
        let elapsed = p.period.elapsedDays(today: today, latestData: grouped.total.latestDate.flatMap(CivilDate.init))
        func meanCoverage(_ group: AggregateTotals) -> Double {
            group.devices == 0 ? 0 : fraction(min(1, group.coverage / Double(group.devices * elapsed)))
        }
        let classrooms: [ClassroomSummary]? = p.classroom != nil ? nil : grouped.byClassroom.sorted { $0.key < $1.key }.map { name, g in
            ClassroomSummary(classroom: name, kwh: kwh(g.energyWh), energyWh: wh(g.energyWh), cost: money(g.costValue),
                             currency: g.currency, devices: g.devices, coverage: meanCoverage(g), days: g.days)
        }
        let total = grouped.total
        return SummaryResult(scope: p.classroom ?? "campus", period: p.period.description, periodType: p.period.kind,
                             startDate: first.description, endDate: last.description, kwh: kwh(total.energyWh),
                             energyWh: wh(total.energyWh), cost: money(total.costValue), currency: total.currency,
                             devices: total.devices, coverage: meanCoverage(total), days: total.days,
                             daysElapsed: elapsed, byClassroom: classrooms)
    }

    /// On MongoDB.
    public static func summary(client: MongoClient, config: WorkerConfig, parameters p: SummaryParameters,
                               now: EpochMillis? = nil) throws(MongoError) -> SummaryResult {
        try MongoAnalyticsStorage.typed { try summary(storage: MongoAnalyticsStorage(client: client), config: config, parameters: p, now: now) }
    }

    // MARK: timeline

    /// Billable energy of the live ledger entries in local hour or day buckets over [start, end),
    /// each entry's energy spread over the buckets in proportion to time. Whole local days are
    /// summed by the database (an entry never crosses local midnight, so a day is the sum of its
    /// date's entries); only the partial days at the ends, and hourly buckets, read entries.
    public static func timeline(storage: any AnalyticsStorage, config: WorkerConfig, parameters p: TimelineParameters) throws -> TimelineResult {
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
            for (date, energy) in try storage.liveBillableEnergy(dates: wholeDays.keys.sorted(), classroom: p.classroom) {
                if let index = wholeDays[date] { totals[index] += energy }
            }
        }
        if p.bucket == .hour {
            try hourlyTotals(storage: storage, parameters: p, buckets: buckets, calendar: &calendar, into: &totals)
        } else if !partialDays.isEmpty {
            try spreadEntries(storage: storage, LiveIntervalQuery(dates: .list(partialDays), startBefore: p.end, endFrom: p.start,
                                                                  classroom: p.classroom),
                              buckets: buckets, into: &totals) { _ in true }
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

    /// On MongoDB.
    public static func timeline(client: MongoClient, config: WorkerConfig, parameters p: TimelineParameters) throws(MongoError) -> TimelineResult {
        try MongoAnalyticsStorage.typed { try timeline(storage: MongoAnalyticsStorage(client: client), config: config, parameters: p) }
    }

    /// The live billable entries `query` selects, read in batches and spread over `buckets`;
    /// only the buckets `counts` accepts are added to `totals`. Memory: one batch.
    static func spreadEntries(storage: any AnalyticsStorage, _ query: LiveIntervalQuery, buckets: [Breakdown.Bucket],
                              into totals: inout [Double], counts: (Int) -> Bool) throws {
        try storage.forEachLiveBillableInterval(query) { intervals in
            for (index, energy) in Breakdown.spread(intervals, over: buckets).enumerated() where energy != 0 && counts(index) {
                totals[index] += energy
            }
        }
    }

    /// Hourly buckets from the daily aggregates' `hourly_wh` (one number per local hour, the
    /// entries split by time at hour boundaries exactly as `Breakdown.spread` splits them), so a
    /// campus month is one small row per device-day, summed per hour by the database, instead of
    /// millions of entries. The ledger is still read, in batches, where an aggregate cannot
    /// answer: device-days without an aggregate with `hourly_wh` (not aggregated yet, or
    /// aggregated before `hourly_wh` existed), device-days the ledger changed since
    /// (`ledger_dirty_days`), and the clipped hours at the ends of a range that does not start or
    /// end on a whole local hour.
    static func hourlyTotals(storage: any AnalyticsStorage, parameters p: TimelineParameters, buckets: [Breakdown.Bucket],
                             calendar: inout LocalCalendar, into totals: inout [Double]) throws {
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
        // Whole hours from the aggregates that can answer for their device-day.
        let sums = try storage.hourlySums(hoursPerDate: hoursOf.mapValues { $0.count - 1 }, classroom: p.classroom)
        for (day, sum) in sums {
            guard let hours = hoursOf[day], sum.hourlyWh.count == hours.count - 1 else { continue }
            for i in sum.hourlyWh.indices where sum.hourlyWh[i] != 0 {
                if let index = wholeBucket[hours[i]] { totals[index] += sum.hourlyWh[i] }
            }
        }
        let clippedSet = Set(clipped)
        // Whole hours of the device-days no aggregate answered for, from the ledger.
        for day in dates {
            let answered = sums[day.description]?.devices.sorted() ?? []
            try spreadEntries(storage: storage, LiveIntervalQuery(dates: .list([day.description]), startBefore: p.end, endFrom: p.start,
                                                                  classroom: p.classroom, excludingDevices: answered),
                              buckets: buckets, into: &totals) { !clippedSet.contains($0) }
        }
        // Clipped hours at the ends, from the ledger of every device.
        for index in clipped {
            let bucket = buckets[index]
            let range = LiveIntervalQuery.Dates.range(calendar.date(of: bucket.start).description, calendar.date(of: bucket.end - 1).description)
            try spreadEntries(storage: storage, LiveIntervalQuery(dates: range, startBefore: bucket.end, endFrom: bucket.start,
                                                                  classroom: p.classroom),
                              buckets: buckets, into: &totals) { $0 == index }
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

        public init(_ row: DailyAggregateRow) {
            let energy = row.energyWh ?? 0
            kwh = AnalyticsQueries.kwh(energy)
            energyWh = AnalyticsQueries.wh(energy)
            cost = AnalyticsQueries.money(row.cost)
            currency = row.currency
            coverage = AnalyticsQueries.fraction(row.coverage ?? 0)
            confidence = row.confidence
        }
    }

    /// Devices whose day of entries device-breakdown holds at once.
    static let devicesPerRead = 20

    /// Per device of a local day: energy, cost, coverage and confidence (from its daily aggregate,
    /// or from the ledger when there is none yet), and its energy per switch: each live billable
    /// ledger interval's energy is shared among the switches on at its start reading in
    /// proportion to their `rated_w` (`Breakdown.switchShares`); what cannot be attributed is
    /// `unattributed`.
    public static func deviceBreakdown(storage: any AnalyticsStorage, config: WorkerConfig,
                                       parameters p: DeviceBreakdownParameters) throws -> DeviceBreakdownResult {
        let dateText = p.date.description
        let calendar = LocalCalendar(timeZone: config.timeZone)
        let dayStart = calendar.startOfDay(p.date)
        let dayEnd = calendar.startOfDay(CivilDate(daysSinceEpoch: p.date.daysSinceEpoch + 1))
        // One aggregate per device of the day, and the names of the devices with entries that day
        // (grouped by the database): both grow with the devices, not with the readings.
        var aggregateByDevice: [String: DailyAggregateRow] = [:]
        for row in try storage.dailyAggregates(date: p.date, classroom: p.classroom, withHourly: false) {
            aggregateByDevice[row.esp32Name] = row
        }
        let names = Set(aggregateByDevice.keys).union(try storage.devicesWithLiveEntries(date: p.date, classroom: p.classroom))

        struct Entry {
            var start: EpochMillis
            var end: EpochMillis
            var energyWh: Double
            var billable: Bool
            var confidence: Confidence?
            var startEvent: String?
        }
        var total = AggregateTotals()
        var devices: [DeviceDayBreakdown] = []
        // The entries (and their start readings' switch states) of a few devices at a time: a
        // device-day is at most a few thousand entries, so memory stays at `devicesPerRead` of them.
        let sortedNames = names.sorted()
        for first in stride(from: 0, to: sortedNames.count, by: Self.devicesPerRead) {
            let chunk = Array(sortedNames[first..<min(first + Self.devicesPerRead, sortedNames.count)])
            var byDevice: [String: (classroom: String, entries: [Entry])] = [:]
            try storage.forEachLiveEntry(date: p.date, classroom: p.classroom, devices: chunk) { rows in
                for row in rows {
                    let entry = Entry(start: row.start, end: row.end, energyWh: row.energyWh, billable: row.billable,
                                      confidence: row.confidence, startEvent: row.startEvent)
                    byDevice[row.esp32Name, default: (row.classroom ?? DeviceInfo.unassignedClassroom, [])].entries.append(entry)
                }
            }

            // The switch state of each interval's start reading.
            let wanted = Set(byDevice.values.flatMap { $0.entries.filter { $0.billable && $0.energyWh > 0 }.compactMap(\.startEvent) })
            let states = wanted.isEmpty ? [:] : try storage.switchStates(hashes: wanted, devices: Array(byDevice.keys),
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
                if let aggregate = aggregateByDevice[name] {
                    total.add(aggregate)
                    let f = DeviceDayFigures(aggregate)
                    row = DeviceDayBreakdown(
                        esp32Name: name, classroom: aggregate.classroom ?? byDevice[name]?.classroom ?? info.classroom,
                        source: "aggregate", kwh: f.kwh, energyWh: f.energyWh, cost: f.cost,
                        currency: f.currency, coverage: f.coverage, confidence: f.confidence,
                        entries: aggregate.entries ?? ledger.count, complete: aggregate.complete,
                        ledgerWh: wh(ledgerWh), switches: switches, unattributed: unattributed)
                } else {
                    // Not aggregated yet: the same figures from the ledger (Breakdown.LedgerDay), with the cost unknown.
                    var day = Breakdown.LedgerDay()
                    for entry in ledger {
                        day.add(start: entry.start, end: entry.end, energyWh: entry.energyWh, billable: entry.billable,
                                confidence: entry.confidence, dayStart: dayStart, dayEnd: dayEnd)
                    }
                    total.add(energyWh: day.energyWh, cost: nil, unpricedWh: 0, currency: nil)
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

    /// On MongoDB.
    public static func deviceBreakdown(client: MongoClient, config: WorkerConfig,
                                       parameters p: DeviceBreakdownParameters) throws(MongoError) -> DeviceBreakdownResult {
        try MongoAnalyticsStorage.typed { try deviceBreakdown(storage: MongoAnalyticsStorage(client: client), config: config, parameters: p) }
    }

    // MARK: monthly

    /// Month over month per classroom, from `monthly_aggregates`: this month's and the previous
    /// month's energy and cost, and the change.
    public static func monthly(storage: any AnalyticsStorage, config: WorkerConfig, parameters p: MonthlyParameters) throws -> MonthlyResult {
        let current = p.month.description, previous = p.month.previous.description
        let grouped = try storage.monthlyTotals(months: [current, previous], classroom: p.classroom)
        let now = grouped[current] ?? GroupedTotals(), before = grouped[previous] ?? GroupedTotals()
        func figures(_ side: AggregateTotals) -> MonthFigures {
            MonthFigures(kwh: kwh(side.energyWh), energyWh: wh(side.energyWh), cost: money(side.costValue),
                         currency: side.currency, devices: side.devices)
        }
        func compare(_ name: String, _ current: AggregateTotals, _ previous: AggregateTotals) -> MonthComparison {
            let energy = Breakdown.change(current: current.energyWh, previous: previous.energyWh)
            let sameCurrency = current.currency == previous.currency || current.currency == nil || previous.currency == nil
            let cost: (absolute: Double?, percent: Double?) = sameCurrency ? Breakdown.change(current: current.costValue, previous: previous.costValue)
                : (nil, nil)
            let energyChange = energy.absolute ?? 0
            return MonthComparison(
                classroom: name, current: figures(current), previous: figures(previous),
                change: MonthChange(kwh: kwh(energyChange), energyWh: wh(energyChange),
                                    energyPercent: energy.percent.map { Breakdown.rounded($0, 2) },
                                    cost: money(cost.absolute), costPercent: cost.percent.map { Breakdown.rounded($0, 2) }))
        }
        let scope = p.classroom ?? "campus"
        let classrooms = Set(now.byClassroom.keys).union(before.byClassroom.keys).sorted()
        return MonthlyResult(month: current, previousMonth: previous, scope: scope, total: compare(scope, now.total, before.total),
                             classrooms: classrooms.map {
                                 compare($0, now.byClassroom[$0] ?? AggregateTotals(), before.byClassroom[$0] ?? AggregateTotals())
                             })
    }

    /// On MongoDB.
    public static func monthly(client: MongoClient, config: WorkerConfig, parameters p: MonthlyParameters) throws(MongoError) -> MonthlyResult {
        try MongoAnalyticsStorage.typed { try monthly(storage: MongoAnalyticsStorage(client: client), config: config, parameters: p) }
    }
}

extension AggregateTotals {
    /// Adds one aggregate's figures. Its cost is unknown when it has energy (or unpriced energy)
    /// and no cost.
    mutating func add(energyWh energy: Double, cost: Double?, unpricedWh: Double, currency: String?) {
        energyWh += energy
        if let cost {
            self.cost += cost
        } else if energy > 0 || unpricedWh > 0 {
            costUnknown = true
        }
        if let currency { currencies.insert(currency) }
    }

    mutating func add(_ row: DailyAggregateRow) {
        add(energyWh: row.energyWh ?? 0, cost: row.cost, unpricedWh: row.unpricedWh ?? 0, currency: row.currency)
    }

    /// The summed cost; unknown when a part with energy has none, or when the parts are in
    /// different currencies.
    var costValue: Double? { costUnknown || currencies.count > 1 ? nil : cost }
    var currency: String? { currencies.count == 1 ? currencies.first : nil }
}
