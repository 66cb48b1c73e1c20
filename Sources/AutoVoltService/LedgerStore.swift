import AutoVoltCore
import AutoVoltMongo
import Foundation
import Logging

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
    let registry: DeviceRegistry
    let timeZone: TimeZone
    let policy: LedgerPolicy
    let writeConcern: WriteConcern
    let owner: String
    let logger: Logger
    let leaseMillis: Int64 = 30_000
    private let lock = NSLock()
    private var counters = Counters()

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

    public var snapshot: Counters { lock.withLock { counters } }

    // MARK: Finding work

    /// Devices with events not yet in the ledger, oldest first, and devices whose trailing dip
    /// has waited long enough to be settled.
    public func devicesNeedingWork(now: EpochMillis, limit: Int = 200) throws(MongoError) -> [String] {
        let pending = try client.find(Collections.telemetryEvents, filter: ["processed": false],
                                      sort: ["received_at": 1], projection: ["esp32_name": 1], limit: 5000)
        var seen = Set<String>()
        var names: [String] = []
        for doc in pending {
            if let name = doc["esp32_name"]?.stringValue, seen.insert(name).inserted { names.append(name) }
            if names.count >= limit { break }
        }
        let dips = try client.find(Self.stateCollection, filter: ["pending_dip_until": ["$lte": .millis(now)]],
                                   projection: ["_id": 1], limit: limit)
        for doc in dips {
            if let name = doc["_id"]?.stringValue, seen.insert(name).inserted { names.append(name) }
        }
        return names
    }

    // MARK: One step

    public enum StepResult: Equatable { case done(newEvents: Int), busy }

    /// Brings one device's ledger up to date with its stored events.
    @discardableResult
    public func advance(_ name: String, now: EpochMillis) throws(MongoError) -> StepResult {
        guard try acquireLease(name, now: now) else { return .busy }
        do {
            let result = try derive(name, now: now, rebuild: false, rebuildRange: nil)
            try releaseLease(name, pendingDipUntil: result.pendingDipUntil)
            return .done(newEvents: result.newEvents)
        } catch {
            lock.withLock { counters.errors += 1 }
            try? releaseLease(name, pendingDipUntil: nil)
            throw error
        }
    }

    /// Re-derives a device from all its events (after a rule change or a fix). With a date range,
    /// only entries of those local dates are replaced.
    public func rebuild(_ name: String, dates: ClosedRange<CivilDate>?, now: EpochMillis) throws(MongoError) -> (inserted: Int, superseded: Int) {
        var attempts = 0
        while try !acquireLease(name, now: now) {
            attempts += 1
            if attempts > 100 {
                throw MongoError(kind: .server(code: 0), code: 0, domain: 0, message: "device \(name) is held by another worker")
            }
            Thread.sleep(forTimeInterval: 0.1)
        }
        do {
            let result = try derive(name, now: now, rebuild: true, rebuildRange: dates)
            try releaseLease(name, pendingDipUntil: result.pendingDipUntil)
            return (result.inserted, result.superseded)
        } catch {
            try? releaseLease(name, pendingDipUntil: nil)
            throw error
        }
    }

    struct DeriveResult {
        var newEvents = 0
        var inserted = 0
        var superseded = 0
        var pendingDipUntil: EpochMillis?
    }

    private func derive(_ name: String, now: EpochMillis, rebuild: Bool, rebuildRange: ClosedRange<CivilDate>?) throws(MongoError) -> DeriveResult {
        let device = registry.resolve(name)
        let unprocessed = try client.find(Collections.telemetryEvents, filter: ["esp32_name": .string(name), "processed": false],
                                          projection: ["device_ts": 1, "received_at": 1])
        let newIDs = unprocessed.compactMap { $0["_id"] }
        let newTimes = unprocessed.compactMap { $0["device_ts"]?.dateValue.map(Self.millis) }

        // Where to start again: the whole history for a rebuild, else LedgerWindow's restart point.
        var restart: EpochMillis?
        if !rebuild {
            guard let earliest = newTimes.min() else {
                // Nothing new: only a pending dip may need settling.
                return try deriveWindow(name, device: device, restart: try lastIntervalStart(name), now: now, rebuildRange: nil, newIDs: [])
            }
            let nearby = try liveEntries(name, filter: ["end_ts": ["$gte": .millis(earliest)]], sort: ["start_ts": 1], limit: 64)
            let before = try liveEntries(name, filter: ["end_ts": ["$lt": .millis(earliest)]], sort: ["start_ts": -1], limit: 8)
            // nil when no live interval ends before the new readings: derive from the first reading.
            restart = LedgerWindow.restartPoint(intervals: LedgerWindow.intervals(of: before + nearby), earliestNewReading: earliest)
        }
        var result = try deriveWindow(name, device: device, restart: restart, now: now, rebuildRange: rebuildRange, newIDs: newIDs)
        result.newEvents = newIDs.count
        if let oldest = unprocessed.compactMap({ $0["received_at"]?.dateValue.map(Self.millis) }).min() {
            lock.withLock { counters.lastLagMillis = max(0, now - oldest) }
        }
        return result
    }

    private func lastIntervalStart(_ name: String) throws(MongoError) -> EpochMillis? {
        let last = try liveEntries(name, filter: [:], sort: ["start_ts": -1], limit: 8)
        let intervals = LedgerWindow.intervals(of: last)
        return intervals.last?.start
    }

    private func deriveWindow(_ name: String, device: DeviceInfo, restart: EpochMillis?, now: EpochMillis,
                              rebuildRange: ClosedRange<CivilDate>?, newIDs: [BSON]) throws(MongoError) -> DeriveResult {
        var eventFilter: BSONDocument = ["esp32_name": .string(name)]
        if let restart { eventFilter["device_ts"] = ["$gte": .millis(restart)] }
        let events = try client.find(Collections.telemetryEvents, filter: eventFilter, sort: ["device_ts": 1, "_id": 1],
                                     projection: ["event_hash": 1, "device_ts": 1, "energy_wh_total": 1, "boot_id": 1,
                                                  "seq": 1, "clock": 1, "power_w": 1])
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
                powerW: event["power_w"]?.doubleValue))
        }
        var calendar = LocalCalendar(timeZone: timeZone)
        var derived = LedgerDeriver.derive(readings, device: device, calendar: &calendar, policy: policy, now: now)
        var settledCalendar = LocalCalendar(timeZone: timeZone)
        let settled = LedgerDeriver.derive(readings, device: device, calendar: &settledCalendar, policy: policy, now: .max)
        let pendingDipUntil = settled.count != derived.count ? (readings.last?.time).map { $0 + policy.pendingDipTimeoutMillis } : nil

        var oldFilter: BSONDocument = [:]
        if let restart { oldFilter["start_ts"] = ["$gte": .millis(restart)] }
        var old = try liveEntries(name, filter: oldFilter, sort: nil, limit: nil)
        if let range = rebuildRange {
            derived = derived.filter { range.contains($0.date) }
            old = old.filter { CivilDate($0.dateText).map(range.contains) ?? false }
        }
        let oldIDs = Set(old.map(\.id))
        let newByID = Dictionary(derived.map { ($0.id, $0) }, uniquingKeysWith: { a, _ in a })
        let toInsert = derived.filter { !oldIDs.contains($0.id) }
        let toSupersede = old.filter { newByID[$0.id] == nil }

        var result = DeriveResult(pendingDipUntil: pendingDipUntil)
        if !toInsert.isEmpty {
            let nowDate = BSON.millis(now)
            let docs = toInsert.map { Self.document($0, createdAt: nowDate) }
            let insert = try client.insertMany(docs, into: Collections.ledgers, ordered: false, writeConcern: writeConcern)
            if let error = insert.writeErrors.first(where: { !$0.isDuplicateKey }) {
                throw MongoError(kind: .server(code: error.code), code: error.code, domain: 0, message: error.message)
            }
            // An entry derived again after it had been superseded (a race, or a rebuild) is live again.
            let duplicates = insert.writeErrors.filter(\.isDuplicateKey).compactMap { toInsert.indices.contains($0.index) ? toInsert[$0.index].id : nil }
            if !duplicates.isEmpty {
                _ = try client.updateMany(Collections.ledgers, filter: ["_id": ["$in": .array(duplicates.map { .string($0) })]],
                                          update: ["$unset": ["superseded_by": "", "superseded_at": ""]], writeConcern: writeConcern)
            }
            result.inserted = toInsert.count
            try openTickets(for: toInsert, now: now)
        }
        if !toSupersede.isEmpty {
            // Each replaced entry points at a new entry over the same time, when there is one.
            for entry in toSupersede {
                let replacement = derived.first { $0.start <= entry.start && $0.end > entry.start }?.id ?? "rederived"
                _ = try client.updateOne(Collections.ledgers, filter: ["_id": .string(entry.id), "superseded_by": ["$exists": false]],
                                         update: ["$set": ["superseded_by": .string(replacement), "superseded_at": .millis(now)]],
                                         upsert: false, writeConcern: writeConcern)
            }
            result.superseded = toSupersede.count
        }
        // Days whose totals changed: re-aggregated later (issue 5 reads this collection).
        let dirtyDates = Set(toInsert.map(\.date.description) + toSupersede.map(\.dateText))
        if !dirtyDates.isEmpty {
            let operations: [WriteModel] = dirtyDates.sorted().map { date in
                .updateOne(filter: ["_id": .string("\(name)|\(date)")],
                           update: ["$set": ["esp32_name": .string(name), "date": .string(date), "classroom": .string(device.classroom),
                                             "dirty_at": .millis(now)]],
                           upsert: true)
            }
            _ = try client.bulkWrite(Self.dirtyDaysCollection, operations: operations, ordered: false, writeConcern: writeConcern)
        }
        if !newIDs.isEmpty {
            _ = try client.updateMany(Collections.telemetryEvents, filter: ["_id": ["$in": .array(newIDs)]],
                                      update: ["$set": ["processed": true]], writeConcern: writeConcern)
        }
        let resets = toInsert.filter { $0.isResetMarker && $0.part == 0 }.count
        lock.withLock {
            counters.eventsProcessed += newIDs.count
            counters.entriesCreated += toInsert.count
            counters.entriesSuperseded += toSupersede.count
            counters.resetsDetected += resets
            for entry in toInsert { counters.entriesByConfidence[entry.confidence, default: 0] += 1 }
        }
        for entry in toInsert where entry.part == 0 && (entry.isResetMarker || !entry.billable) {
            logger.notice("ledger: \(entry.reasons.map(\.rawValue).joined(separator: ","))", metadata: [
                "esp32_name": "\(name)", "delta_wh": "\(entry.deltaWh)", "billable": "\(entry.billable)",
                "start": "\(ISO8601.format(entry.start))", "end": "\(ISO8601.format(entry.end))",
            ])
        }
        return result
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
        let result = try client.bulkWrite(Collections.reviewTickets, operations: operations, ordered: false, writeConcern: writeConcern)
        if let error = result.writeErrors.first(where: { !$0.isDuplicateKey }) {
            throw MongoError(kind: .server(code: error.code), code: error.code, domain: 0, message: error.message)
        }
    }

    // MARK: Lease (optimistic concurrency on the device's state document)

    /// Takes the device for this worker: a conditional update that succeeds only when nobody
    /// else holds an unexpired lease. Two workers in one share group never derive the same
    /// device at once; a crashed holder's lease expires.
    private func acquireLease(_ name: String, now: EpochMillis) throws(MongoError) -> Bool {
        let filter: BSONDocument = ["_id": .string(name), "$or": [
            ["lease_until": ["$exists": false]], ["lease_until": ["$lt": .millis(now)]], ["lease_owner": .string(owner)],
        ]]
        let update: BSONDocument = [
            "$set": ["lease_owner": .string(owner), "lease_until": .millis(now + leaseMillis)],
            "$inc": ["version": .int64(1)],
        ]
        do {
            let result = try client.updateOne(Self.stateCollection, filter: filter, update: update, upsert: true, writeConcern: writeConcern)
            return result.matchedCount == 1 || result.upsertedID != nil
        } catch let error where error.isDuplicateKey {
            return false // held by another worker: the upsert collided with its document
        }
    }

    private func releaseLease(_ name: String, pendingDipUntil: EpochMillis?) throws(MongoError) {
        var set: BSONDocument = ["last_derived_at": .millis(Self.nowMillis())]
        var unset: BSONDocument = ["lease_owner": "", "lease_until": ""]
        if let pendingDipUntil { set["pending_dip_until"] = .millis(pendingDipUntil) } else { unset["pending_dip_until"] = "" }
        _ = try client.updateOne(Self.stateCollection, filter: ["_id": .string(name), "lease_owner": .string(owner)],
                                 update: ["$set": .document(set), "$unset": .document(unset)], upsert: false, writeConcern: writeConcern)
    }

    // MARK: Documents

    struct LiveEntry {
        var id: String
        var start: EpochMillis
        var end: EpochMillis
        var dateText: String
        var sourceEvents: [String]
    }

    private func liveEntries(_ name: String, filter: BSONDocument, sort: BSONDocument?, limit: Int?) throws(MongoError) -> [LiveEntry] {
        var query: BSONDocument = ["esp32_name": .string(name), "superseded_by": ["$exists": false]]
        for (key, value) in filter { query[key] = value }
        return try client.find(Collections.ledgers, filter: query, sort: sort,
                               projection: ["start_ts": 1, "end_ts": 1, "date": 1, "source_events": 1], limit: limit)
            .compactMap { doc in
                guard let id = doc["_id"]?.stringValue, let start = doc["start_ts"]?.dateValue, let end = doc["end_ts"]?.dateValue else { return nil }
                return LiveEntry(id: id, start: Self.millis(start), end: Self.millis(end), dateText: doc["date"]?.stringValue ?? "",
                                 sourceEvents: doc["source_events"]?.arrayValue?.compactMap(\.stringValue) ?? [])
            }
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
    static func nowMillis() -> EpochMillis { millis(Date()) }
}

extension LedgerWindow {
    /// Intervals of stored entries (parts merged by their source events).
    static func intervals(of entries: [LedgerStore.LiveEntry]) -> [Interval] {
        var byPair: [String: Interval] = [:]
        for e in entries {
            let key = e.sourceEvents.joined(separator: ",")
            let existing = byPair[key]
            byPair[key] = Interval(start: min(existing?.start ?? e.start, e.start), end: max(existing?.end ?? e.end, e.end))
        }
        return byPair.values.sorted { $0.start < $1.start }
    }
}

/// `autovolt-worker rebuild-ledger`: re-derives devices from their immutable events.
public enum LedgerRebuild {
    public struct Summary: Sendable {
        public var devices = 0
        public var inserted = 0
        public var superseded = 0
    }

    public static func run(config: WorkerConfig, device: String?, dates: ClosedRange<CivilDate>?, logger: Logger) throws -> Summary {
        let database = try Database.open(config)
        let client = database.client
        let store = LedgerStore(client: client, registry: config.devices, timeZone: config.timeZone,
                                writeConcern: database.writeConcern,
                                owner: "rebuild:\(ProcessInfo.processInfo.processIdentifier)", policy: config.ledgerPolicy, logger: logger)
        let names: [String]
        if let device {
            names = [device]
        } else {
            let grouped = try client.aggregate(Collections.telemetryEvents, pipeline: [["$group": ["_id": "$esp32_name"]]])
            names = grouped.compactMap { $0["_id"]?.stringValue }.sorted()
        }
        var summary = Summary()
        for name in names {
            let result = try store.rebuild(name, dates: dates, now: LedgerStore.nowMillis())
            summary.devices += 1
            summary.inserted += result.inserted
            summary.superseded += result.superseded
            if result.inserted + result.superseded > 0 {
                logger.notice("ledger rebuilt", metadata: ["esp32_name": "\(name)", "inserted": "\(result.inserted)",
                                                           "superseded": "\(result.superseded)"])
            }
        }
        return summary
    }
}
