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
/// The logic is the same for every backend; the data operations are `LedgerStorage`'s
/// (`MongoLedgerStorage`, `PostgresLedgerStorage`).
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

    static let stateCollection = MongoLedgerStorage.stateCollection
    static let dirtyDaysCollection = MongoLedgerStorage.dirtyDaysCollection

    public let storage: any LedgerStorage
    // Replaced by the owning thread when the registry is reloaded (SIGHUP).
    var registry: DeviceRegistry
    let timeZone: TimeZone
    let policy: LedgerPolicy
    let owner: String
    let logger: Logger
    let leaseMillis: Int64 = 30_000
    private let counters = Mutex(Counters())
    private let lastDipCheck = Mutex<EpochMillis?>(nil)
    static let dipCheckIntervalMillis: EpochMillis = 2_000

    /// `owner` names the lease holder. The worker uses its MQTT client id, which is fixed and
    /// unique per worker, so a worker restarted after a crash takes its own leases back at once.
    public init(storage: any LedgerStorage, registry: DeviceRegistry, timeZone: TimeZone, owner: String,
                policy: LedgerPolicy = LedgerPolicy(), logger: Logger) {
        self.storage = storage
        self.registry = registry
        self.timeZone = timeZone
        self.policy = policy
        self.logger = logger
        self.owner = owner
    }

    /// The store over MongoDB (`MongoLedgerStorage`).
    public convenience init(client: MongoClient, registry: DeviceRegistry, timeZone: TimeZone, writeConcern: WriteConcern,
                            owner: String, policy: LedgerPolicy = LedgerPolicy(), logger: Logger) {
        self.init(storage: MongoLedgerStorage(client: client, writeConcern: writeConcern), registry: registry, timeZone: timeZone,
                  owner: owner, policy: policy, logger: logger)
    }

    public var snapshot: Counters { counters.withLock { $0 } }

    // MARK: The names before issue 21

    /// `findWork`.
    public func workBatches(now: EpochMillis, limit: Int = 200, batchSize: Int = 100, batchEvents: Int = 5_000) throws -> [[String]] {
        try findWork(now: now, limit: limit, batchSize: batchSize, batchEvents: batchEvents)
    }

    /// `step`.
    @discardableResult
    public func advance(_ names: [String], now: EpochMillis) throws -> [String: StepResult] {
        try step(names, now: now)
    }

    // MARK: Finding work

    /// Devices with events not yet in the ledger, oldest first, and devices whose trailing dip
    /// has waited long enough to be settled, in batches for `step`: up to `batchSize` devices
    /// with about `batchEvents` events between them, and at most ten while there is a backlog
    /// (more than the 5,000 oldest unprocessed events looked at), so catching up a day is not
    /// one enormous step.
    public func findWork(now: EpochMillis, limit: Int = 1000, batchSize: Int = 500,
                         batchEvents: Int = 5_000) throws -> [[String]] {
        let window = 5000
        let pending = try storage.unprocessedEventDevices(limit: window)
        var seen = Set<String>()
        var names: [String] = []
        var events: [String: Int] = [:]
        for name in pending {
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
        let dips = lookForDips ? try storage.devicesWithDipDue(now: now, limit: limit) : []
        for name in dips where seen.insert(name).inserted { names.append(name) }
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
    public func advance(_ name: String, now: EpochMillis) throws -> StepResult {
        try step([name], now: now)[name] ?? .busy
    }

    /// Brings several devices' ledgers up to date in one batch: the same few round trips to the
    /// database whether it carries one device or a hundred (docs/ledger.md, "Live derivation").
    /// A device held by another worker is `.busy` and left to it.
    @discardableResult
    public func step(_ names: [String], now: EpochMillis) throws -> [String: StepResult] {
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
                        windowReadings: Int = 20_000) throws -> (inserted: Int, superseded: Int, expired: ExpiredHistory?) {
        var attempts = 0
        var held = try acquireLeases([name], now: now)
        while held.isEmpty {
            attempts += 1
            if attempts > 100 { throw LedgerLeaseError("device \(name) is held by another worker") }
            Thread.sleep(forTimeInterval: 0.1)
            held = try acquireLeases([name], now: SystemClock.nowMillis())
        }
        do {
            let expired = try expiredHistory(name, now: now)
            if let expired { logger.warning("\(expired.explanation(name, timeZone: timeZone))", metadata: ["esp32_name": "\(name)"]) }
            if let expired, expired.floor == nil || dates.map({ $0.upperBound <= expired.lostDay }) == true {
                // Nothing to derive: the device's state stays as it was (its dip deadline, if it
                // waits on one); the next live step asks the ledger for its tail.
                let dip = try storage.pendingDipUntil(name)
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
    func expiredHistory(_ name: String, now: EpochMillis, pageSize: Int = 1_000) throws -> ExpiredHistory? {
        let first = try storage.earliestEvent(of: name, unprocessedOnly: false)
        // nil: no bound (the device has no events left at all).
        var below: EpochMillis? = now - Self.eventLifetimeMillis + ClockPolicy().maxLeadMillis
        if let first {
            if let time = first.deviceTs, let bound = below { below = max(bound, time) }
        } else {
            below = nil
        }
        var lost: EpochMillis?
        while lost == nil {
            let page = try storage.liveEntries(.of(name, startBefore: below, order: .startDescending, limit: pageSize))
            guard let oldest = page.last else { break }
            let hashes = Set(page.flatMap(\.sourceEvents))
            let present = try storage.presentEventHashes(of: name, among: hashes.sorted())
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
        if let next = try storage.liveEntries(.of(name, endAtLeast: day.end, order: .endAscending, limit: 1)).first {
            let whole = try interval(of: next, device: name)
            expired.floor = whole.start >= day.end ? whole.start : whole.end
        }
        return expired
    }

    /// The whole interval (all its midnight parts) a live entry belongs to. Its parts lie on
    /// consecutive local days, `parts` of them, so the query is bounded to that many days (of at
    /// most 25 hours) either side of the entry.
    private func interval(of entry: StoredLedgerEntry, device name: String) throws -> LedgerWindow.Interval {
        let own = LedgerWindow.Interval(start: entry.start, end: entry.end)
        guard let parts = try storage.parts(ofEntry: entry.id), parts > 1 else { return own }
        let span = Int64(parts) * 25 * 3_600_000
        let siblings = try storage.liveEntries(.of(name, startAtMost: entry.start + span, sourceEvents: entry.sourceEvents,
                                                   from: entry.start - span))
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
                                 windowReadings: Int) throws -> WindowedOutcome {
        let device = registry.resolve(name)
        var outcome = WindowedOutcome()
        var from = start
        var size = max(2, windowReadings)
        while true {
            let windowNow = SystemClock.nowMillis()
            try renewLease(name, now: windowNow)
            let events = try storage.events([LedgerDeviceStart(name, from: from)], limit: size + 1)
            let isLast = events.count <= size
            let window = Array(events.prefix(size))
            let readings = Self.readings(of: window)
            var calendar = LocalCalendar(timeZone: timeZone)
            guard let result = LedgerRebuildWindow.derive(readings, isLast: isLast, device: device, calendar: &calendar,
                                                          policy: policy, now: windowNow) else {
                size *= 2 // nothing final yet in so few readings (a window of nothing but falls)
                continue
            }
            var stored = try storage.liveEntries(.of(name, startBefore: result.next, from: from))
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
            let done = window.filter { event in
                !event.processed && (result.next.map { next in event.deviceTs.map { $0 < next } ?? false } ?? true)
            }.map(\.ref)
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

    /// What a step leaves in the device's state document for the next one.
    typealias Tail = LedgerTail

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
        var newEvents: [LedgerEventRef] = []
        /// nil: derive from the device's first reading.
        var restart: EpochMillis?
    }

    /// Most events and readings one batched step reads; a backlog beyond them (a week offline,
    /// a broker replay) is derived a window at a time instead (`deriveInWindows`). Set by the
    /// owner before the store is shared (tests make them small to take the windowed path).
    /// `writeChunk`: most entries one insert or bulk write carries, so a whole window is never
    /// in one request.
    struct StepLimits {
        var events = 20_000
        var readings = 40_000
        var writeChunk = 2_000
    }
    var stepLimits = StepLimits()

    private func derive(_ held: [HeldState], now: EpochMillis) throws -> DeriveOutcome {
        let names = held.map(\.name)
        let unprocessed = try storage.unprocessedEvents(of: names, limit: stepLimits.events + 1)
        if unprocessed.count > stepLimits.events { return try deriveBacklog(held, now: now) }
        var newByDevice: [String: [LedgerNewEvent]] = [:]
        for event in unprocessed { newByDevice[event.esp32Name, default: []].append(event) }
        if let oldest = unprocessed.compactMap(\.ref.receivedAt).min() {
            counters.withLock { $0.lastLagMillis = max(0, now - oldest) }
        }

        var plans: [Plan] = []
        for state in held {
            var plan = Plan(state: state, device: registry.resolve(state.name))
            let events = newByDevice[state.name] ?? []
            plan.newEvents = events.map(\.ref)
            plan.restart = try restartPoint(state, earliestNew: events.compactMap(\.deviceTs).min())
            plans.append(plan)
        }

        // The readings from each restart point, and the live entries they may replace: one query each.
        let events = try storage.events(plans.map { LedgerDeviceStart($0.state.name, from: $0.restart) }, limit: stepLimits.readings + 1)
        if events.count > stepLimits.readings { return try deriveBacklog(held, now: now) }
        var eventsByDevice: [String: [LedgerStoredEvent]] = [:]
        for event in events { eventsByDevice[event.esp32Name, default: []].append(event) }
        var storedByDevice: [String: [StoredLedgerEntry]] = [:]
        for entry in try storage.liveEntries(LedgerEntryQuery(devices: plans.map { LedgerDeviceStart($0.state.name, from: $0.restart) })) {
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
            outcome.newEvents[name] = plan.newEvents.count
        }
        try write(changes, now: now)
        try markProcessed(plans.flatMap(\.newEvents))
        outcome.inserted = changes.reduce(0) { $0 + $1.1.inserting.count }
        outcome.superseded = changes.reduce(0) { $0 + $1.1.superseding.count }
        return outcome
    }

    /// Where a device's derivation starts again: the start of the interval before the first one
    /// the new readings touch (LedgerWindow). The common case, readings after everything derived
    /// so far, is answered by the tail the last step recorded; anything else (late data, an
    /// interrupted step) asks the ledger. nil: from the device's first reading.
    private func restartPoint(_ state: HeldState, earliestNew earliest: EpochMillis?) throws -> EpochMillis? {
        if let tail = state.trustedTail, earliest.map({ $0 > (tail.last?.end ?? .min) }) ?? true {
            return tail.last?.start
        } else if let earliest {
            let nearby = try storage.liveEntries(.of(state.name, endAtLeast: earliest, order: .startAscending, limit: 64))
            let before = try storage.liveEntries(.of(state.name, endBefore: earliest, order: .startDescending, limit: Self.entriesBefore))
            guard before.count == Self.entriesBefore else {
                return LedgerWindow.restartPoint(intervals: LedgerWindow.intervals(of: before + nearby), earliestNewReading: earliest)
            }
            // As many entries as were asked for: an interval of more midnight parts than that (days
            // offline) may start before them, and its start taken from its last parts would be a
            // midnight, dropping its first reading from the derivation (and superseding its parts
            // without a replacement). Ask for the whole intervals instead.
            guard let first = nearby.first else { return try interval(of: before[0], device: state.name).start }
            let touched = try interval(of: first, device: state.name)
            guard let previous = try storage.liveEntries(.of(state.name, endAtMost: touched.start, order: .endDescending, limit: 1)).first else {
                return nil
            }
            return try interval(of: previous, device: state.name).start
        } else {
            // Nothing new: only a pending dip may need settling.
            let last = try storage.liveEntries(.of(state.name, order: .startDescending, limit: Self.entriesBefore))
            guard last.count == Self.entriesBefore else { return LedgerWindow.intervals(of: last).last?.start }
            return try interval(of: last[0], device: state.name).start
        }
    }

    /// How long a step's mark made before its writes keeps the aggregation off its day: far longer
    /// than a step takes; a step cut short (a crash, an outage) has its days aggregated after it.
    static let markHoldMillis: EpochMillis = 5 * 60_000

    /// How many entries before the earliest new reading a step reads to find its restart point.
    static let entriesBefore = 8

    /// A step whose devices have more new events or readings than one read takes: each device
    /// from its restart point, a window at a time.
    private func deriveBacklog(_ held: [HeldState], now: EpochMillis) throws -> DeriveOutcome {
        var outcome = DeriveOutcome()
        for state in held {
            let first = try storage.earliestEvent(of: state.name, unprocessedOnly: true)
            if let received = first?.receivedAt {
                counters.withLock { $0.lastLagMillis = max($0.lastLagMillis, now - received) }
            }
            let restart = try restartPoint(state, earliestNew: first?.deviceTs)
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

    /// One device's stored events (in device-time order) as readings.
    static func readings(of events: [LedgerStoredEvent]) -> [LedgerReading] {
        var readings: [LedgerReading] = []
        readings.reserveCapacity(events.count)
        for event in events {
            guard let reading = event.reading else { continue }
            // Two readings at the same instant (only possible with receiver clocks): keep the first.
            if let last = readings.last, last.time == reading.time { continue }
            readings.append(reading)
        }
        return readings
    }

    /// Writes the planned changes: new entries, supersessions, dirty days (AggregationStore
    /// re-aggregates them) and tickets, in writes of up to `stepLimits.writeChunk` entries however
    /// many devices. Every write is idempotent, so a crash between two chunks leaves nothing a
    /// rerun would not fix.
    private func write(_ changes: [(device: DeviceInfo, change: LedgerChange)], now: EpochMillis) throws {
        let toInsert = changes.flatMap(\.change.inserting)
        let toSupersede = changes.flatMap(\.change.superseding)
        // The days changed, each from the earliest start it changes: marked (held) before anything
        // is written, so that no change is ever without a mark however the step ends (a retry
        // derives the same entries, sees no difference and would mark nothing), and marked again
        // (not held, replacing the first) once everything is written. The aggregation leaves a
        // day alone while it has a held mark, so it never folds half a step.
        var dirty: [String: LedgerDirtyDay] = [:]
        for (device, change) in changes {
            for (date, from) in change.changedFrom {
                var day = LedgerDirtyDay(esp32Name: device.esp32Name, date: date, classroom: device.classroom, changedFrom: from)
                if let earlier = dirty[day.id]?.changedFrom { day.changedFrom = min(earlier, from) }
                dirty[day.id] = day
            }
        }
        let held = dirty.sorted { $0.key < $1.key }.map(\.value)
        if !held.isEmpty { try storage.markDirtyDays(held, at: now, holdUntil: now + Self.markHoldMillis, replacing: []) }
        let chunkSize = max(1, stepLimits.writeChunk)
        for start in stride(from: 0, to: toInsert.count, by: chunkSize) {
            let chunk = Array(toInsert[start..<min(start + chunkSize, toInsert.count)])
            let duplicates = try storage.insertEntries(chunk, createdAt: now)
            // An entry derived again after it had been superseded (a race, or a rebuild) is live again.
            if !duplicates.isEmpty { try storage.reviveEntries(duplicates) }
        }
        if !toInsert.isEmpty { try openTickets(for: toInsert, now: now) }
        for start in stride(from: 0, to: toSupersede.count, by: chunkSize) {
            try storage.supersede(Array(toSupersede[start..<min(start + chunkSize, toSupersede.count)]), at: now)
        }
        if !held.isEmpty {
            let done = held.map { LedgerDirtyDay(esp32Name: $0.esp32Name, date: $0.date, classroom: $0.classroom, changedFrom: $0.changedFrom) }
            try storage.markDirtyDays(done, at: now, holdUntil: nil, replacing: held.map(\.markID))
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
    private func markProcessed(_ events: [LedgerEventRef]) throws {
        guard !events.isEmpty else { return }
        try storage.markProcessed(events)
        counters.withLock { $0.eventsProcessed += events.count }
    }

    /// One `implausible_power` ticket per device and day with an unbillable interval.
    private func openTickets(for entries: [LedgerEntry], now: EpochMillis) throws {
        let implausible = entries.filter { !$0.billable && $0.part == 0 }
        guard !implausible.isEmpty else { return }
        try storage.openReviewTickets(implausible.map { entry in
            let hours = Double(entry.end - entry.start) / 3_600_000
            // The interval's average power, written as text: a wild counter can make it astronomically large.
            let power = hours > 0 ? String(format: "%.0f", entry.deltaWh * Double(entry.parts) / hours) : "unbounded"
            return LedgerReviewTicket(
                esp32Name: entry.esp32Name, date: entry.date.description, kind: "implausible_power",
                detail: "\(entry.deltaWh) Wh between \(ISO8601.format(entry.start)) and \(ISO8601.format(entry.end)) implies about \(power) W, above the device's maximum; not billed",
                status: "open", createdAt: now, runID: "ledger")
        })
    }

    // MARK: Lease (optimistic concurrency on the device's state)

    /// A device this worker holds, and what its state said.
    struct HeldState {
        var name: String
        var version: Int64
        /// The tail the previous step recorded, if that step finished (its `tail_version` is the
        /// version it held; an interrupted step leaves an older one).
        var trustedTail: Tail?
    }

    /// Takes the devices for this worker (`LedgerStorage.acquireLeases`): only those nobody else
    /// holds an unexpired lease on, so two workers in one share group never derive the same
    /// device at once; a crashed holder's lease expires. Each success bumps `version`.
    private func acquireLeases(_ names: [String], now: EpochMillis) throws -> [HeldState] {
        guard !names.isEmpty else { return [] }
        var byName: [String: HeldState] = [:]
        for lease in try storage.acquireLeases(names, owner: owner, now: now, until: now + leaseMillis) {
            var state = HeldState(name: lease.name, version: lease.version)
            if let tailVersion = lease.tailVersion, tailVersion == lease.version - 1 {
                let start = lease.tailStart, end = lease.tailEnd
                state.trustedTail = Tail(last: start.flatMap { s in end.map { LedgerWindow.Interval(start: s, end: $0) } })
            }
            byName[lease.name] = state
        }
        var seen = Set<String>()
        return names.filter { seen.insert($0).inserted }.compactMap { byName[$0] }
    }

    /// Extends a held lease (a rebuild holds one for longer than `leaseMillis`). Throws when the
    /// lease was lost: it expired and another worker took the device, so this one must stop.
    private func renewLease(_ name: String, now: EpochMillis) throws {
        guard try storage.renewLease(name, owner: owner, until: now + leaseMillis) else {
            throw LedgerLeaseError("lost the lease on device \(name) (it expired and another worker holds it); run the rebuild again")
        }
    }

    /// Gives the devices back, recording each one's tail (the state update comes last: a crash
    /// before it leaves the tail unvouched for, and the next step asks the ledger instead).
    private func releaseLeases(_ held: [HeldState], tails: [String: Tail], pendingDips: [String: EpochMillis]) throws {
        guard !held.isEmpty else { return }
        try storage.releaseLeases(held.map { LedgerRelease(name: $0.name, version: $0.version, tail: tails[$0.name], pendingDipUntil: pendingDips[$0.name]) },
                                  owner: owner, derivedAt: SystemClock.nowMillis())
    }

    static func oneOf(_ names: [String]) -> BSON { MongoLedgerStorage.oneOf(names) }

    static func document(_ e: LedgerEntry, createdAt: BSON) -> BSONDocument { MongoLedgerStorage.document(e, createdAt: createdAt) }

    static func millis(_ date: Date) -> EpochMillis { MongoLedgerStorage.millis(date) }
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

    /// Over either backend's storage (`WorkerDatabase.ledgerStorage`).
    public static func run(storage: any LedgerStorage, config: WorkerConfig, device: String?, dates: ClosedRange<CivilDate>?,
                           windowReadings: Int = 20_000, logger: Logger) throws -> Summary {
        let store = LedgerStore(storage: storage, registry: config.devices, timeZone: config.timeZone,
                                owner: "rebuild:\(ProcessInfo.processInfo.processIdentifier)", policy: config.ledgerPolicy, logger: logger)
        // One name per device (the campus, not its history).
        let names = try device.map { [$0] } ?? storage.eventDeviceNames().sorted()
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
