import AutoVoltCore
import AutoVoltMongo
import Foundation
import Logging
import Synchronization

/// Keeps `device_consumption_ledgers` equal to the pure derivation over each device's stored
/// events (docs/ledger.md).
///
/// One step for a device: take its lease, find its unprocessed events, re-derive from
/// `LedgerWindow`'s restart point, insert the entries that are new (content-addressed ids:
/// replaying a step writes nothing twice), mark the ones no longer derived as superseded, mark
/// the events processed, and release the lease. No multi-document transaction is needed: a crash
/// at any point leaves events unprocessed, and the next step re-derives the same result.
///
/// Blocking: call from a dedicated thread.
// @unchecked: the counters are behind Mutexes; `registry` and `stepLimits` are written only by
// the thread that owns the store, between steps (a reload), or before it is shared (tests).
public final class LedgerStore: @unchecked Sendable {
    public struct Counters: Sendable {
        public var eventsProcessed = 0
        public var entriesCreated = 0
        public var entriesSuperseded = 0
        public var resetsDetected = 0
        public var errors = 0
        public var lastLagMillis: Int64 = 0
        public var entriesByConfidence: [Confidence: Int] = [:]
    }

    static let stateCollection = "ledger_state"
    static let dirtyDaysCollection = "ledger_dirty_days"

    let client: MongoClient
    // Replaced by the owning thread when the registry is reloaded (SIGHUP).
    var registry: DeviceRegistry
    let timeZone: TimeZone
    let policy: LedgerPolicy
    let writeConcern: WriteConcern
    let owner: String
    let logger: Logger
    let leaseMillis: Int64 = 30_000
    private let counters = Mutex(Counters())
    private let lastDipCheck = Mutex<EpochMillis?>(nil)
    static let dipCheckIntervalMillis: EpochMillis = 2_000

    /// `owner` names the lease holder. The worker uses its MQTT client id, which is fixed and
    /// unique per worker, so a worker restarted after a crash takes its own leases back at once.
    public init(client: MongoClient, registry: DeviceRegistry, timeZone: TimeZone, writeConcern: WriteConcern,
                owner: String, policy: LedgerPolicy = LedgerPolicy(), logger: Logger) {
        self.client = client
        self.registry = registry
        self.timeZone = timeZone
        self.policy = policy
        self.writeConcern = writeConcern
        self.logger = logger
        self.owner = owner
    }

    public var snapshot: Counters { counters.withLock { $0 } }

    // MARK: Finding work

    /// Devices with events not yet in the ledger, oldest first, and devices whose trailing dip
    /// has waited long enough to be settled, in batches for `advance`: up to `batchSize` devices
    /// with about `batchEvents` events between them, and at most ten while there is a backlog
    /// (more than the 5,000 oldest unprocessed events looked at), so catching up a day is not
    /// one enormous step.
    public func workBatches(now: EpochMillis, limit: Int = 200, batchSize: Int = 100,
                            batchEvents: Int = 5_000) throws(MongoError) -> [[String]] {
        let window = 5000
        let pending = try client.find(Collections.telemetryEvents, filter: ["processed": false],
                                      sort: ["received_at": 1], projection: ["esp32_name": 1], limit: window)
        var seen = Set<String>()
        var names: [String] = []
        var events: [String: Int] = [:]
        for doc in pending {
            guard let name = doc["esp32_name"]?.stringValue else { continue }
            if seen.insert(name).inserted {
                if names.count >= limit { break }
                names.append(name)
            }
            events[name, default: 0] += 1
        }
        // Dips wait minutes to settle: looking every couple of seconds is plenty, and spares
        // the database a range query on every pass of a busy loop.
        let lookForDips = lastDipCheck.withLock { lastDipCheck in
            if let last = lastDipCheck, now >= last, now - last < Self.dipCheckIntervalMillis { return false }
            lastDipCheck = now
            return true
        }
        let dips = lookForDips ? try client.find(Self.stateCollection, filter: ["pending_dip_until": ["$lte": .millis(now)]],
                                                 projection: ["_id": 1], limit: limit) : []
        for doc in dips {
            if let name = doc["_id"]?.stringValue, seen.insert(name).inserted { names.append(name) }
        }
        // When the window is full there is a backlog, and a device's count in it says little
        // about its total (a day of 500 devices loaded at once shows ten events of each):
        // count each as at least a tenth of the budget, i.e. at most ten devices per batch.
        let backlog = pending.count >= window
        var batches: [[String]] = []
        var batch: [String] = []
        var batchCount = 0
        for name in names {
            let count = max(1, events[name] ?? 0, backlog ? batchEvents / 10 : 0)
            if !batch.isEmpty && (batch.count >= batchSize || batchCount + count > batchEvents) {
                batches.append(batch)
                batch = []
                batchCount = 0
            }
            batch.append(name)
            batchCount += count
        }
        if !batch.isEmpty { batches.append(batch) }
        return batches
    }

    // MARK: One step

    public enum StepResult: Equatable { case done(newEvents: Int), busy }

    /// Brings one device's ledger up to date with its stored events.
    @discardableResult
    public func advance(_ name: String, now: EpochMillis) throws(MongoError) -> StepResult {
        try advance([name], now: now)[name] ?? .busy
    }

    /// Brings several devices' ledgers up to date in one batch: the same few round trips to the
    /// database whether it carries one device or a hundred (docs/ledger.md, "Live derivation").
    /// A device held by another worker is `.busy` and left to it.
    @discardableResult
    public func advance(_ names: [String], now: EpochMillis) throws(MongoError) -> [String: StepResult] {
        var seen = Set<String>()
        let names = names.filter { seen.insert($0).inserted }
        var results = Dictionary(uniqueKeysWithValues: names.map { ($0, StepResult.busy) })
        let held = try acquireLeases(names, now: now)
        guard !held.isEmpty else { return results }
        do {
            let outcome = try derive(held, now: now)
            try releaseLeases(held, tails: outcome.tails, pendingDips: outcome.pendingDips)
            for state in held { results[state.name] = .done(newEvents: outcome.newEvents[state.name] ?? 0) }
            return results
        } catch {
            counters.withLock { $0.errors += 1 }
            try? releaseLeases(held, tails: [:], pendingDips: [:])
            throw error
        }
    }

    /// Re-derives a device from all its events (after a rule change, a registry change or a
    /// fix). With a date range, only entries of those local dates are replaced.
    ///
    /// Works a window of `windowReadings` readings at a time (`LedgerRebuildWindow`), so memory
    /// stays at one window for a device-year, and renews the device's lease before each window,
    /// so a long rebuild keeps it from the live workers. Each window's writes are final and its
    /// events marked processed only once they are, so an interrupted rebuild leaves a ledger that
    /// is rebuilt up to some time and as before after it; running it again finishes it.
    ///
    /// History whose events have expired (`expiredHistory`) is not derived again: the rebuild
    /// starts at its floor, and `expired` says what it left as it was.
    public func rebuild(_ name: String, dates: ClosedRange<CivilDate>?, now: EpochMillis,
                        windowReadings: Int = 20_000) throws(MongoError) -> (inserted: Int, superseded: Int, expired: ExpiredHistory?) {
        var attempts = 0
        var held = try acquireLeases([name], now: now)
        while held.isEmpty {
            attempts += 1
            if attempts > 100 {
                throw MongoError(kind: .server(code: 0), code: 0, domain: 0, message: "device \(name) is held by another worker")
            }
            Thread.sleep(forTimeInterval: 0.1)
            held = try acquireLeases([name], now: SystemClock.nowMillis())
        }
        do {
            let expired = try expiredHistory(name, now: now)
            if let expired { logger.warning("\(expired.explanation(name, timeZone: timeZone))", metadata: ["esp32_name": "\(name)"]) }
            if let expired, expired.floor == nil || dates.map({ $0.upperBound <= expired.lostDay }) == true {
                // Nothing to derive: the device's state stays as it was (its dip deadline, if it
                // waits on one); the next live step asks the ledger for its tail.
                let state = try client.findOne(Self.stateCollection, filter: ["_id": .string(name)], projection: ["pending_dip_until": 1])
                let dip = state?["pending_dip_until"]?.dateValue.map(Self.millis)
                try releaseLeases(held, tails: [:], pendingDips: dip.map { [name: $0] } ?? [:])
                return (0, 0, expired)
            }
            let outcome = try deriveInWindows(name, from: expired?.floor, dates: dates, windowReadings: windowReadings)
            try releaseLeases(held, tails: outcome.tail.map { [name: $0] } ?? [:], pendingDips: outcome.pendingDip.map { [name: $0] } ?? [:])
            return (outcome.inserted, outcome.superseded, expired)
        } catch {
            try? releaseLeases(held, tails: [:], pendingDips: [:])
            throw error
        }
    }

    /// Ledger history a rebuild cannot derive again: live entries whose readings are gone from
    /// `telemetry_events` (its TTL removes events 730 days after `received_at`; the ledger has
    /// none). Derived from the readings that are left, those days would read as days without
    /// readings (issue 20: 940 Wh -> 0, and the next day 960 -> 940 without the interval that
    /// crosses into it). A rebuild never changes a day that lost readings, nor the interval that
    /// crosses out of it: it starts at `floor`.
    public struct ExpiredHistory: Sendable, Equatable {
        /// The last local day with a reading that a live entry runs from or to and that is gone.
        public var lostDay: CivilDate
        /// The first reading the rebuild may start from: the end of the interval that crosses the
        /// midnight after `lostDay` (or the start of the first interval after it when none
        /// crosses). Every entry that starts before it is left as it is. nil: the ledger has no
        /// interval after the lost day, and there is nothing to rebuild.
        public var floor: EpochMillis?
        /// The midnight after `lostDay`.
        public var lostDayEnd: EpochMillis

        /// One line for the operator.
        public func explanation(_ name: String, timeZone: TimeZone) -> String {
            let kept = floor.map { floor in
                "before \(ISO8601.format(floor, in: timeZone)) (\(lostDay) and before" + (floor > lostDayEnd ? ", and the interval from \(lostDay) into the next day)" : ")")
            } ?? "(it has nothing after \(lostDay))"
            let days = LedgerStore.eventLifetimeMillis / 86_400_000
            return "rebuild-ledger: \(name): readings up to \(lostDay) have expired from telemetry_events (kept \(days) days); the ledger \(kept) is kept as it is, not derived again from what is left"
        }
    }

    /// How long `telemetry_events` keeps an event after its `received_at` (the TTL index).
    static let eventLifetimeMillis: EpochMillis = {
        let ttl = Schema.indexes[Collections.telemetryEvents]?.first { $0.keys["received_at"] != nil && $0.expireAfterSeconds != nil }
        return EpochMillis(ttl?.expireAfterSeconds ?? 730 * 86_400) * 1000
    }()

    /// Finds the history of `name` that has expired (`ExpiredHistory`), or nil when every live
    /// entry's readings are there.
    ///
    /// Only readings received more than the TTL before `now` can have expired, and a device time
    /// is never trusted more than `ClockPolicy`'s lead after its receive time; readings before the
    /// device's first stored one are gone too. So only live entries that start before the later
    /// of those two bounds are looked at, latest first, a page at a time, each page's source
    /// events looked up in one query; the first page with a missing reading holds the latest
    /// one. A device with nothing expired costs a query or two; one with expired history, the
    /// first page below the bound. (Events deleted by hand after the bound are not looked for.)
    func expiredHistory(_ name: String, now: EpochMillis, pageSize: Int = 1_000) throws(MongoError) -> ExpiredHistory? {
        let first = try client.findOne(Collections.telemetryEvents, filter: ["esp32_name": .string(name)], sort: ["device_ts": 1],
                                       projection: ["device_ts": 1])
        // nil: no bound (the device has no events left at all).
        var below: EpochMillis? = now - Self.eventLifetimeMillis + ClockPolicy().maxLeadMillis
        if let first {
            if let time = first["device_ts"]?.dateValue.map(Self.millis), let bound = below { below = max(bound, time) }
        } else {
            below = nil
        }
        var lost: EpochMillis?
        while lost == nil {
            let page = try liveEntries(of: name, extra: below.map { ["start_ts": ["$lt": .millis($0)]] } ?? [:], sort: ["start_ts": -1], limit: pageSize)
            guard let oldest = page.last else { break }
            let hashes = Set(page.flatMap(\.sourceEvents))
            let present = Set(try client.find(Collections.telemetryEvents,
                                              filter: ["esp32_name": .string(name), "event_hash": ["$in": .array(hashes.sorted().map { .string($0) })]],
                                              projection: ["event_hash": 1], limit: hashes.count)
                .compactMap { $0["event_hash"]?.stringValue })
            // Entries are latest first: the first one with a missing reading is of the latest
            // interval that has one (the midnight parts of an interval share its readings).
            if let entry = page.first(where: { $0.sourceEvents.count == 2 && $0.sourceEvents.contains { !present.contains($0) } }) {
                let whole = try interval(of: entry, device: name)
                // Its end reading gone: that is the later one; else its start reading.
                lost = present.contains(entry.sourceEvents[1]) ? whole.start : whole.end
            }
            below = oldest.start
        }
        guard let lost else { return nil }
        var calendar = LocalCalendar(timeZone: timeZone)
        let day = calendar.day(containing: lost)
        var expired = ExpiredHistory(lostDay: day.date, floor: nil, lostDayEnd: day.end)
        // The first interval that ends at or after that midnight: kept whole when it crosses it
        // (the rebuild starts at its end), else the rebuild starts at its start.
        // (Live entries do not overlap: the first to end at or after it is the first to start.)
        if let next = try liveEntries(of: name, extra: ["end_ts": ["$gte": .millis(day.end)]], sort: ["end_ts": 1], limit: 1).first {
            let whole = try interval(of: next, device: name)
            expired.floor = whole.start >= day.end ? whole.start : whole.end
        }
        return expired
    }

    /// The whole interval (all its midnight parts) a live entry belongs to. Its parts lie on
    /// consecutive local days, `parts` of them, so the query is bounded to that many days (of at
    /// most 25 hours) either side of the entry.
    private func interval(of entry: StoredLedgerEntry, device name: String) throws(MongoError) -> LedgerWindow.Interval {
        let own = LedgerWindow.Interval(start: entry.start, end: entry.end)
        let doc = try client.findOne(Collections.ledgers, filter: ["_id": .string(entry.id)], projection: ["parts": 1])
        guard let parts = doc?["parts"]?.int64Value, parts > 1 else { return own }
        let span = parts * 25 * 3_600_000
        let siblings = try liveEntries(of: name, extra: [
            "source_events": .array(entry.sourceEvents.map { .string($0) }),
            "start_ts": ["$gte": .millis(entry.start - span), "$lte": .millis(entry.start + span)],
        ])
        return LedgerWindow.intervals(of: siblings + [entry]).first ?? own
    }

    struct WindowedOutcome {
        var inserted = 0
        var superseded = 0
        var eventsProcessed = 0
        var tail: Tail?
        var pendingDip: EpochMillis?
    }

    /// Re-derives one held device from `start` (nil: its first reading) to its last reading, a
    /// window of readings at a time (`LedgerRebuildWindow`): a rebuild, or a live step with a
    /// backlog too large for one read. With `dates`, only entries of those dates are replaced.
    private func deriveInWindows(_ name: String, from start: EpochMillis?, dates: ClosedRange<CivilDate>?,
                                 windowReadings: Int) throws(MongoError) -> WindowedOutcome {
        let device = registry.resolve(name)
        var outcome = WindowedOutcome()
        var from = start
        var size = max(2, windowReadings)
        while true {
            let windowNow = SystemClock.nowMillis()
            try renewLease(name, now: windowNow)
            var filter: BSONDocument = ["esp32_name": .string(name)]
            if let from { filter["device_ts"] = ["$gte": .millis(from)] }
            var projection = Self.readingProjection
            projection["processed"] = 1
            let docs = try client.find(Collections.telemetryEvents, filter: filter, sort: ["device_ts": 1, "_id": 1],
                                       projection: projection, limit: size + 1)
            let isLast = docs.count <= size
            let window = Array(docs.prefix(size))
            let readings = Self.readings(of: window)
            var calendar = LocalCalendar(timeZone: timeZone)
            guard let result = LedgerRebuildWindow.derive(readings, isLast: isLast, device: device, calendar: &calendar,
                                                          policy: policy, now: windowNow) else {
                size *= 2 // nothing final yet in so few readings (a window of nothing but falls)
                continue
            }
            var stretch: BSONDocument = [:]
            if let from { stretch["$gte"] = .millis(from) }
            if let next = result.next { stretch["$lt"] = .millis(next) }
            var stored = try liveEntries(of: name, extra: stretch.isEmpty ? [:] : ["start_ts": .document(stretch)])
            var derived = result.entries
            if let dates {
                derived = derived.filter { dates.contains($0.date) }
                stored = stored.filter { CivilDate($0.dateText).map(dates.contains) ?? false }
            }
            let change = LedgerDiff.plan(stored: stored, derived: derived)
            try write([(device, change)], now: windowNow)
            outcome.inserted += change.inserting.count
            outcome.superseded += change.superseding.count
            // The events this window made final, and not yet marked: marked after their entries.
            let done = window.filter { doc in
                doc["processed"]?.boolValue != true
                    && (result.next.map { next in doc["device_ts"]?.dateValue.map(Self.millis).map { $0 < next } ?? false } ?? true)
            }.compactMap { $0["_id"] }
            try markProcessed(done)
            outcome.eventsProcessed += done.count
            guard let next = result.next else {
                if dates == nil && (!result.entries.isEmpty || from == nil) {
                    outcome.tail = Tail(last: LedgerWindow.intervals(of: result.entries).last)
                }
                outcome.pendingDip = LedgerDeriver.pendingDipUntil(readings, derived: result.entries, policy: policy)
                return outcome
            }
            from = next
            size = max(2, windowReadings)
        }
    }

    /// What a step leaves in the device's state document for the next one: its last live
    /// interval (nil when it has none yet).
    struct Tail {
        var last: LedgerWindow.Interval?
    }

    struct DeriveOutcome {
        var newEvents: [String: Int] = [:]
        var inserted = 0
        var superseded = 0
        /// Per device: the tail to record, or none when the step cannot vouch for it.
        var tails: [String: Tail] = [:]
        /// Per device: when its trailing dip settles, if it has one.
        var pendingDips: [String: EpochMillis] = [:]
    }

    /// One device of a batch: what it has that is new and where its derivation starts again.
    private struct Plan {
        var state: HeldState
        var device: DeviceInfo
        var newIDs: [BSON] = []
        /// nil: derive from the device's first reading.
        var restart: EpochMillis?
    }

    /// Most events and readings one batched step reads; a backlog beyond them (a week offline,
    /// a broker replay) is derived a window at a time instead (`deriveInWindows`). Set by the
    /// owner before the store is shared (tests make them small to take the windowed path).
    /// `writeChunk`: most documents one insert or bulk write carries, so the BSON of a whole
    /// window is never in memory at once.
    struct StepLimits {
        var events = 20_000
        var readings = 40_000
        var writeChunk = 2_000
    }
    var stepLimits = StepLimits()

    private func derive(_ held: [HeldState], now: EpochMillis) throws(MongoError) -> DeriveOutcome {
        let names = held.map(\.name)
        let unprocessed = try client.find(Collections.telemetryEvents,
                                          filter: ["esp32_name": Self.oneOf(names), "processed": false],
                                          projection: ["esp32_name": 1, "device_ts": 1, "received_at": 1], limit: stepLimits.events + 1)
        if unprocessed.count > stepLimits.events { return try deriveBacklog(held, now: now) }
        var newByDevice: [String: [BSONDocument]] = [:]
        for doc in unprocessed {
            if let name = doc["esp32_name"]?.stringValue { newByDevice[name, default: []].append(doc) }
        }
        if let oldest = unprocessed.compactMap({ $0["received_at"]?.dateValue.map(Self.millis) }).min() {
            counters.withLock { $0.lastLagMillis = max(0, now - oldest) }
        }

        var plans: [Plan] = []
        for state in held {
            var plan = Plan(state: state, device: registry.resolve(state.name))
            let docs = newByDevice[state.name] ?? []
            plan.newIDs = docs.compactMap { $0["_id"] }
            plan.restart = try restartPoint(state, earliestNew: docs.compactMap { $0["device_ts"]?.dateValue.map(Self.millis) }.min())
            plans.append(plan)
        }

        // The readings from each restart point, and the live entries they may replace: one query each.
        let events = try client.find(Collections.telemetryEvents,
                                     filter: ["$or": .array(plans.map { plan in
                                         var clause: BSONDocument = ["esp32_name": .string(plan.state.name)]
                                         if let restart = plan.restart { clause["device_ts"] = ["$gte": .millis(restart)] }
                                         return .document(clause)
                                     })],
                                     sort: ["esp32_name": 1, "device_ts": 1, "_id": 1],
                                     projection: Self.readingProjection, limit: stepLimits.readings + 1)
        if events.count > stepLimits.readings { return try deriveBacklog(held, now: now) }
        var eventsByDevice: [String: [BSONDocument]] = [:]
        for event in events {
            if let name = event["esp32_name"]?.stringValue { eventsByDevice[name, default: []].append(event) }
        }
        var storedByDevice: [String: [StoredLedgerEntry]] = [:]
        for entry in try liveEntries(plans.map { ($0.state.name, $0.restart) }, extra: [:], sort: nil, limit: nil) {
            storedByDevice[entry.esp32Name, default: []].append(entry)
        }

        var outcome = DeriveOutcome()
        var changes: [(DeviceInfo, LedgerChange)] = []
        for plan in plans {
            let name = plan.state.name
            let readings = Self.readings(of: eventsByDevice[name] ?? [])
            var calendar = LocalCalendar(timeZone: timeZone)
            let derived = LedgerDeriver.derive(readings, device: plan.device, calendar: &calendar, policy: policy, now: now)
            // The tail is known when the derivation reached the end of the device's ledger:
            // always, except when everything after the restart point went away (the live entries
            // before it are then not looked at).
            if !derived.isEmpty || plan.restart == nil {
                outcome.tails[name] = Tail(last: LedgerWindow.intervals(of: derived).last)
            }
            if let until = LedgerDeriver.pendingDipUntil(readings, derived: derived, policy: policy) {
                outcome.pendingDips[name] = until
            }
            changes.append((plan.device, LedgerDiff.plan(stored: storedByDevice[name] ?? [], derived: derived)))
            outcome.newEvents[name] = plan.newIDs.count
        }
        try write(changes, now: now)
        let newIDs = plans.flatMap(\.newIDs)
        try markProcessed(newIDs)
        outcome.inserted = changes.reduce(0) { $0 + $1.1.inserting.count }
        outcome.superseded = changes.reduce(0) { $0 + $1.1.superseding.count }
        return outcome
    }

    /// Where a device's derivation starts again: the start of the interval before the first one
    /// the new readings touch (LedgerWindow). The common case, readings after everything derived
    /// so far, is answered by the tail the last step recorded; anything else (late data, an
    /// interrupted step) asks the ledger. nil: from the device's first reading.
    private func restartPoint(_ state: HeldState, earliestNew earliest: EpochMillis?) throws(MongoError) -> EpochMillis? {
        if let tail = state.trustedTail, earliest.map({ $0 > (tail.last?.end ?? .min) }) ?? true {
            return tail.last?.start
        } else if let earliest {
            let nearby = try liveEntries(of: state.name, extra: ["end_ts": ["$gte": .millis(earliest)]], sort: ["start_ts": 1], limit: 64)
            let before = try liveEntries(of: state.name, extra: ["end_ts": ["$lt": .millis(earliest)]], sort: ["start_ts": -1], limit: Self.entriesBefore)
            guard before.count == Self.entriesBefore else {
                return LedgerWindow.restartPoint(intervals: LedgerWindow.intervals(of: before + nearby), earliestNewReading: earliest)
            }
            // As many entries as were asked for: an interval of more midnight parts than that (days
            // offline) may start before them, and its start taken from its last parts would be a
            // midnight, dropping its first reading from the derivation (and superseding its parts
            // without a replacement). Ask for the whole intervals instead.
            guard let first = nearby.first else { return try interval(of: before[0], device: state.name).start }
            let touched = try interval(of: first, device: state.name)
            guard let previous = try liveEntries(of: state.name, extra: ["end_ts": ["$lte": .millis(touched.start)]],
                                                 sort: ["end_ts": -1], limit: 1).first else { return nil }
            return try interval(of: previous, device: state.name).start
        } else {
            // Nothing new: only a pending dip may need settling.
            let last = try liveEntries(of: state.name, extra: [:], sort: ["start_ts": -1], limit: Self.entriesBefore)
            guard last.count == Self.entriesBefore else { return LedgerWindow.intervals(of: last).last?.start }
            return try interval(of: last[0], device: state.name).start
        }
    }

    /// How many entries before the earliest new reading a step reads to find its restart point.
    static let entriesBefore = 8

    /// A step whose devices have more new events or readings than one read takes: each device
    /// from its restart point, a window at a time.
    private func deriveBacklog(_ held: [HeldState], now: EpochMillis) throws(MongoError) -> DeriveOutcome {
        var outcome = DeriveOutcome()
        for state in held {
            let first = try client.findOne(Collections.telemetryEvents, filter: ["esp32_name": .string(state.name), "processed": false],
                                           sort: ["device_ts": 1], projection: ["device_ts": 1, "received_at": 1])
            if let received = first?["received_at"]?.dateValue.map(Self.millis) {
                counters.withLock { $0.lastLagMillis = max($0.lastLagMillis, now - received) }
            }
            let restart = try restartPoint(state, earliestNew: first?["device_ts"]?.dateValue.map(Self.millis))
            let windowed = try deriveInWindows(state.name, from: restart, dates: nil, windowReadings: stepLimits.events)
            if let tail = windowed.tail { outcome.tails[state.name] = tail }
            if let until = windowed.pendingDip { outcome.pendingDips[state.name] = until }
            outcome.newEvents[state.name] = windowed.eventsProcessed
            outcome.inserted += windowed.inserted
            outcome.superseded += windowed.superseded
        }
        logger.info("ledger: backlog derived in windows", metadata: [
            "devices": "\(held.count)", "events": "\(outcome.newEvents.values.reduce(0, +))", "inserted": "\(outcome.inserted)",
        ])
        return outcome
    }

    static let readingProjection: BSONDocument = ["esp32_name": 1, "event_hash": 1, "device_ts": 1, "energy_wh_total": 1, "boot_id": 1,
                                                  "seq": 1, "clock": 1, "power_w": 1, "uptime_s": 1, "timestamp_sent": 1]

    /// One device's stored events (in device-time order, `readingProjection`) as readings.
    static func readings(of events: [BSONDocument]) -> [LedgerReading] {
        var readings: [LedgerReading] = []
        readings.reserveCapacity(events.count)
        for event in events {
            guard let hash = event["event_hash"]?.stringValue, let time = event["device_ts"]?.dateValue.map(Self.millis),
                  let energy = event["energy_wh_total"]?.doubleValue else { continue }
            // Two readings at the same instant (only possible with receiver clocks): keep the first.
            if let last = readings.last, last.time == time { continue }
            readings.append(LedgerReading(
                eventHash: hash, time: time, energyWh: energy, bootID: event["boot_id"]?.stringValue,
                seq: event["seq"]?.int64Value, clock: event["clock"]?.stringValue == "receiver" ? .receiver : .device,
                powerW: event["power_w"]?.doubleValue,
                uptimeMillis: event["uptime_s"]?.doubleValue.map { Int64(($0 * 1000).rounded()) }
                    ?? LedgerReading.uptimeMillis(timestampAsSent: event["timestamp_sent"]?.stringValue)))
        }
        return readings
    }

    /// Writes the planned changes: new entries, supersessions, dirty days (AggregationStore
    /// re-aggregates them) and tickets, in bulk writes of up to `stepLimits.writeChunk` however many devices.
    /// Every write is idempotent, so a crash between two chunks leaves nothing a rerun would not fix.
    private func write(_ changes: [(device: DeviceInfo, change: LedgerChange)], now: EpochMillis) throws(MongoError) {
        let toInsert = changes.flatMap(\.change.inserting)
        let toSupersede = changes.flatMap(\.change.superseding)
        let nowDate = BSON.millis(now)
        for start in stride(from: 0, to: toInsert.count, by: stepLimits.writeChunk) {
            let chunk = toInsert[start..<min(start + stepLimits.writeChunk, toInsert.count)]
            let insert = try client.insertMany(chunk.map { Self.document($0, createdAt: nowDate) }, into: Collections.ledgers,
                                               ordered: false, writeConcern: writeConcern)
            try insert.writeErrors.throwUnlessDuplicateKeys()
            // An entry derived again after it had been superseded (a race, or a rebuild) is live again.
            let duplicates = insert.writeErrors.filter(\.isDuplicateKey).compactMap { error in
                chunk.indices.contains(start + error.index) ? chunk[start + error.index].id : nil
            }
            if !duplicates.isEmpty {
                _ = try client.updateMany(Collections.ledgers, filter: ["_id": ["$in": .array(duplicates.map { .string($0) })]],
                                          update: ["$unset": ["superseded_by": "", "superseded_at": ""]], writeConcern: writeConcern)
            }
        }
        if !toInsert.isEmpty { try openTickets(for: toInsert, now: now) }
        for start in stride(from: 0, to: toSupersede.count, by: stepLimits.writeChunk) {
            let operations: [WriteModel] = toSupersede[start..<min(start + stepLimits.writeChunk, toSupersede.count)].map { item in
                .updateOne(filter: ["_id": .string(item.entry.id), "superseded_by": ["$exists": false]],
                           update: ["$set": ["superseded_by": .string(item.replacement), "superseded_at": .millis(now)]], upsert: false)
            }
            try client.bulkWrite(Collections.ledgers, operations: operations, ordered: false, writeConcern: writeConcern).writeErrors.throwUnlessDuplicateKeys()
        }
        var dirty: [String: (name: String, date: String, classroom: String)] = [:]
        for (device, change) in changes {
            for date in change.dirtyDates { dirty["\(device.esp32Name)|\(date)"] = (device.esp32Name, date, device.classroom) }
        }
        if !dirty.isEmpty {
            let operations: [WriteModel] = dirty.sorted { $0.key < $1.key }.map { key, day in
                .updateOne(filter: ["_id": .string(key)],
                           update: ["$set": ["esp32_name": .string(day.name), "date": .string(day.date), "classroom": .string(day.classroom),
                                             "dirty_at": .millis(now)]],
                           upsert: true)
            }
            try client.bulkWrite(Self.dirtyDaysCollection, operations: operations, ordered: false, writeConcern: writeConcern).writeErrors.throwUnlessDuplicateKeys()
        }
        let resets = toInsert.filter { $0.isResetMarker && $0.part == 0 }.count
        counters.withLock { counters in
            counters.entriesCreated += toInsert.count
            counters.entriesSuperseded += toSupersede.count
            counters.resetsDetected += resets
            for entry in toInsert { counters.entriesByConfidence[entry.confidence, default: 0] += 1 }
        }
        for entry in toInsert where entry.part == 0 && (entry.isResetMarker || !entry.billable) {
            logger.notice("ledger: \(entry.reasons.map(\.rawValue).joined(separator: ","))", metadata: [
                "esp32_name": "\(entry.esp32Name)", "delta_wh": "\(entry.deltaWh)", "billable": "\(entry.billable)",
                "start": "\(ISO8601.format(entry.start))", "end": "\(ISO8601.format(entry.end))",
            ])
        }
    }

    /// Marks events as in the ledger (after their entries are written: a crash in between
    /// leaves them unprocessed, and the next step derives them again, writing nothing twice).
    private func markProcessed(_ ids: [BSON]) throws(MongoError) {
        guard !ids.isEmpty else { return }
        _ = try client.updateMany(Collections.telemetryEvents, filter: ["_id": ["$in": .array(ids)]],
                                  update: ["$set": ["processed": true]], writeConcern: writeConcern)
        counters.withLock { $0.eventsProcessed += ids.count }
    }

    private func openTickets(for entries: [LedgerEntry], now: EpochMillis) throws(MongoError) {
        let implausible = entries.filter { !$0.billable && $0.part == 0 }
        guard !implausible.isEmpty else { return }
        let operations: [WriteModel] = implausible.map { entry in
            let hours = Double(entry.end - entry.start) / 3_600_000
            // The interval's average power, written as text: a wild counter can make it astronomically large.
            let power = hours > 0 ? String(format: "%.0f", entry.deltaWh * Double(entry.parts) / hours) : "unbounded"
            return .updateOne(
                filter: ["esp32_name": .string(entry.esp32Name), "date": .string(entry.date.description), "kind": "implausible_power"],
                update: ["$setOnInsert": [
                    "esp32_name": .string(entry.esp32Name), "date": .string(entry.date.description), "kind": "implausible_power",
                    "detail": .string("\(entry.deltaWh) Wh between \(ISO8601.format(entry.start)) and \(ISO8601.format(entry.end)) implies about \(power) W, above the device's maximum; not billed"),
                    "status": "open", "created_at": .millis(now), "run_id": "ledger",
                ]],
                upsert: true)
        }
        try client.bulkWrite(Collections.reviewTickets, operations: operations, ordered: false, writeConcern: writeConcern).writeErrors.throwUnlessDuplicateKeys()
    }


    // MARK: Lease (optimistic concurrency on the device's state document)

    /// A device this worker holds, and what its state document said.
    struct HeldState {
        var name: String
        var version: Int64
        /// The tail the previous step recorded, if that step finished (its `tail_version` is the
        /// version it held; an interrupted step leaves an older one).
        var trustedTail: Tail?
    }

    /// Takes the devices for this worker: one conditional upsert each (in one bulk write) that
    /// succeeds only when nobody else holds an unexpired lease, so two workers in one share
    /// group never derive the same device at once; a crashed holder's lease expires. Each
    /// success bumps `version`, then one read returns the states of the devices now held.
    private func acquireLeases(_ names: [String], now: EpochMillis) throws(MongoError) -> [HeldState] {
        guard !names.isEmpty else { return [] }
        let operations: [WriteModel] = names.map { name in
            .updateOne(filter: ["_id": .string(name), "$or": [
                ["lease_until": ["$exists": false]], ["lease_until": ["$lt": .millis(now)]], ["lease_owner": .string(owner)],
            ]], update: [
                "$set": ["lease_owner": .string(owner), "lease_until": .millis(now + leaseMillis)],
                "$inc": ["version": .int64(1)],
            ], upsert: true)
        }
        let result = try client.bulkWrite(Self.stateCollection, operations: operations, ordered: false, writeConcern: writeConcern)
        try result.writeErrors.throwUnlessDuplicateKeys()
        // A duplicate key is an upsert that collided with another worker's state document: held.
        let refused = Set(result.writeErrors.map(\.index))
        let acquired = names.indices.filter { !refused.contains($0) }.map { names[$0] }
        guard !acquired.isEmpty else { return [] }
        let states = try client.find(Self.stateCollection, filter: ["_id": Self.oneOf(acquired), "lease_owner": .string(owner)],
                                     projection: ["version": 1, "tail_version": 1, "tail_start": 1, "tail_end": 1], limit: acquired.count)
        var byName: [String: HeldState] = [:]
        for doc in states {
            guard let name = doc["_id"]?.stringValue, let version = doc["version"]?.int64Value else { continue }
            var state = HeldState(name: name, version: version)
            if let tailVersion = doc["tail_version"]?.int64Value, tailVersion == version - 1 {
                let start = doc["tail_start"]?.dateValue.map(Self.millis), end = doc["tail_end"]?.dateValue.map(Self.millis)
                state.trustedTail = Tail(last: start.flatMap { s in end.map { LedgerWindow.Interval(start: s, end: $0) } })
            }
            byName[name] = state
        }
        return acquired.compactMap { byName[$0] }
    }

    /// Extends a held lease (a rebuild holds one for longer than `leaseMillis`). Throws when the
    /// lease was lost: it expired and another worker took the device, so this one must stop.
    private func renewLease(_ name: String, now: EpochMillis) throws(MongoError) {
        let result = try client.updateOne(Self.stateCollection, filter: ["_id": .string(name), "lease_owner": .string(owner)],
                                          update: ["$set": ["lease_until": .millis(now + leaseMillis)]], upsert: false,
                                          writeConcern: writeConcern)
        guard result.matchedCount == 1 else {
            throw MongoError(kind: .server(code: 0), code: 0, domain: 0,
                             message: "lost the lease on device \(name) (it expired and another worker holds it); run the rebuild again")
        }
    }

    /// Gives the devices back, recording each one's tail (the state update comes last: a crash
    /// before it leaves the tail unvouched for, and the next step asks the ledger instead).
    private func releaseLeases(_ held: [HeldState], tails: [String: Tail], pendingDips: [String: EpochMillis]) throws(MongoError) {
        guard !held.isEmpty else { return }
        let derivedAt = BSON.millis(SystemClock.nowMillis())
        let operations: [WriteModel] = held.map { state in
            var set: BSONDocument = ["last_derived_at": derivedAt]
            var unset: BSONDocument = ["lease_owner": "", "lease_until": ""]
            let tail = tails[state.name]
            if let until = pendingDips[state.name] { set["pending_dip_until"] = .millis(until) } else { unset["pending_dip_until"] = "" }
            if let tail {
                set["tail_version"] = .int64(state.version)
                if let last = tail.last {
                    set["tail_start"] = .millis(last.start)
                    set["tail_end"] = .millis(last.end)
                } else {
                    unset["tail_start"] = ""
                    unset["tail_end"] = ""
                }
            } else {
                unset["tail_version"] = ""
            }
            return .updateOne(filter: ["_id": .string(state.name), "lease_owner": .string(owner)],
                              update: ["$set": .document(set), "$unset": .document(unset)], upsert: false)
        }
        try client.bulkWrite(Self.stateCollection, operations: operations, ordered: false, writeConcern: writeConcern).writeErrors.throwUnlessDuplicateKeys()
    }

    static func oneOf(_ names: [String]) -> BSON { ["$in": .array(names.map { .string($0) })] }

    // MARK: Documents

    /// Live entries of one device, and `extra` conditions.
    private func liveEntries(of name: String, extra: BSONDocument, sort: BSONDocument? = nil, limit: Int? = nil) throws(MongoError) -> [StoredLedgerEntry] {
        try liveEntries([(name, nil)], extra: extra, sort: sort, limit: limit)
    }

    /// Live entries of the given devices (each from its own start time, when it has one), and
    /// `extra` conditions: one query however many devices.
    private func liveEntries(_ devices: [(name: String, from: EpochMillis?)], extra: BSONDocument, sort: BSONDocument?,
                             limit: Int?) throws(MongoError) -> [StoredLedgerEntry] {
        guard !devices.isEmpty else { return [] }
        let clauses: [BSON] = devices.map { device in
            var clause: BSONDocument = ["esp32_name": .string(device.name)]
            if let from = device.from { clause["start_ts"] = ["$gte": .millis(from)] }
            return .document(clause)
        }
        var query: BSONDocument = devices.count == 1 ? (clauses[0].documentValue ?? [:]) : ["$or": .array(clauses)]
        query["superseded_by"] = ["$exists": false]
        for (key, value) in extra { query[key] = value }
        let projection: BSONDocument = ["esp32_name": 1, "start_ts": 1, "end_ts": 1, "date": 1, "source_events": 1]
        func stored(_ doc: BSONDocument) -> StoredLedgerEntry? {
            guard let id = doc["_id"]?.stringValue, let name = doc["esp32_name"]?.stringValue,
                  let start = doc["start_ts"]?.dateValue, let end = doc["end_ts"]?.dateValue else { return nil }
            return StoredLedgerEntry(id: id, esp32Name: name, start: Self.millis(start), end: Self.millis(end), dateText: doc["date"]?.stringValue ?? "",
                                     sourceEvents: doc["source_events"]?.arrayValue?.compactMap(\.stringValue) ?? [])
        }
        if let limit {
            return try client.find(Collections.ledgers, filter: query, sort: sort, projection: projection, limit: limit).compactMap(stored)
        }
        // No limit: the stretch a step or a window re-derives, which its readings bound.
        var entries: [StoredLedgerEntry] = []
        try client.forEachBatch(Collections.ledgers, filter: query, sort: sort, projection: projection) { batch in
            entries += batch.compactMap(stored)
        }
        return entries
    }

    static func document(_ e: LedgerEntry, createdAt: BSON) -> BSONDocument {
        [
            "_id": .string(e.id),
            "esp32_name": .string(e.esp32Name),
            "classroom": .string(e.classroom),
            "start_ts": .millis(e.start),
            "end_ts": .millis(e.end),
            "date": .string(e.date.description),
            "delta_wh": .double(e.deltaWh),
            "is_reset_marker": .bool(e.isResetMarker),
            "billable": .bool(e.billable),
            "quality": ["confidence": .string(e.confidence.rawValue), "reasons": .array(e.reasons.map { .string($0.rawValue) })],
            "source_events": .array(e.sourceEvents.map { .string($0) }),
            "part": .int64(Int64(e.part)),
            "parts": .int64(Int64(e.parts)),
            "derivation_version": .int64(Int64(LedgerPolicy.derivationVersion)),
            "created_at": createdAt,
        ]
    }

    static func millis(_ date: Date) -> EpochMillis { Int64((date.timeIntervalSince1970 * 1000).rounded()) }
}

/// `autovolt-worker rebuild-ledger`: re-derives devices from their immutable events.
public enum LedgerRebuild {
    public struct Summary: Sendable {
        public var devices = 0
        public var inserted = 0
        public var superseded = 0
        /// Devices whose history before some day has expired and was left as it was.
        public var keptExpired = 0
    }

    public static func run(config: WorkerConfig, device: String?, dates: ClosedRange<CivilDate>?, windowReadings: Int = 20_000,
                           logger: Logger) throws -> Summary {
        let database = try Database.open(config)
        let client = database.client
        let store = LedgerStore(client: client, registry: config.devices, timeZone: config.timeZone,
                                writeConcern: database.writeConcern,
                                owner: "rebuild:\(ProcessInfo.processInfo.processIdentifier)", policy: config.ledgerPolicy, logger: logger)
        let names: [String]
        if let device {
            names = [device]
        } else {
            // One name per device (the campus, not its history).
            var found: [String] = []
            try client.aggregateBatches(Collections.telemetryEvents, pipeline: [["$group": ["_id": "$esp32_name"]]]) { batch in
                found += batch.compactMap { $0["_id"]?.stringValue }
            }
            names = found.sorted()
        }
        var summary = Summary()
        for name in names {
            let result = try store.rebuild(name, dates: dates, now: SystemClock.nowMillis(), windowReadings: windowReadings)
            summary.devices += 1
            summary.inserted += result.inserted
            summary.superseded += result.superseded
            if result.expired != nil { summary.keptExpired += 1 }
            if result.inserted + result.superseded > 0 {
                logger.notice("ledger rebuilt", metadata: ["esp32_name": "\(name)", "inserted": "\(result.inserted)",
                                                           "superseded": "\(result.superseded)"])
            }
        }
        return summary
    }
}
