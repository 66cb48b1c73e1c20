import AutoVoltCore
import AutoVoltMongo
import Foundation

/// The ledger's data in MongoDB: `ledger_state` (leases as conditional upserts), entries
/// inserted unordered with duplicate keys as outcomes, every write with the worker's write
/// concern (docs/ledger.md). What `LedgerStore` did before issue 21, moved here unchanged.
public final class MongoLedgerStorage: LedgerStorage {
    public let client: MongoClient
    public let writeConcern: WriteConcern

    public init(client: MongoClient, writeConcern: WriteConcern) {
        self.client = client
        self.writeConcern = writeConcern
    }

    static let stateCollection = "ledger_state"
    static let dirtyDaysCollection = "ledger_dirty_days"

    static func oneOf(_ names: [String]) -> BSON { ["$in": .array(names.map { .string($0) })] }
    static func millis(_ date: Date) -> EpochMillis { Int64((date.timeIntervalSince1970 * 1000).rounded()) }

    // MARK: Finding work

    public func unprocessedEventDevices(limit: Int) throws -> [String] {
        try client.find(Collections.telemetryEvents, filter: ["processed": false], sort: ["received_at": 1],
                        projection: ["esp32_name": 1], limit: limit)
            .compactMap { $0["esp32_name"]?.stringValue }
    }

    public func devicesWithDipDue(now: EpochMillis, limit: Int) throws -> [String] {
        try client.find(Self.stateCollection, filter: ["pending_dip_until": ["$lte": .millis(now)]], projection: ["_id": 1], limit: limit)
            .compactMap { $0["_id"]?.stringValue }
    }

    public func eventDeviceNames() throws -> [String] {
        var found: [String] = []
        try client.aggregateBatches(Collections.telemetryEvents, pipeline: [["$group": ["_id": "$esp32_name"]]]) { batch in
            found += batch.compactMap { $0["_id"]?.stringValue }
        }
        return found
    }

    // MARK: Leases

    /// One conditional upsert per device (in one bulk write) that succeeds only when nobody
    /// else holds an unexpired lease; a duplicate key is an upsert that collided with another
    /// worker's state document: held. Then one read of the states now held.
    public func acquireLeases(_ names: [String], owner: String, now: EpochMillis, until: EpochMillis) throws -> [LedgerLease] {
        guard !names.isEmpty else { return [] }
        let operations: [WriteModel] = names.map { name in
            .updateOne(filter: ["_id": .string(name), "$or": [
                ["lease_until": ["$exists": false]], ["lease_until": ["$lt": .millis(now)]], ["lease_owner": .string(owner)],
            ]], update: [
                "$set": ["lease_owner": .string(owner), "lease_until": .millis(until)],
                "$inc": ["version": .int64(1)],
            ], upsert: true)
        }
        let result = try client.bulkWrite(Self.stateCollection, operations: operations, ordered: false, writeConcern: writeConcern)
        try result.writeErrors.throwUnlessDuplicateKeys()
        let refused = Set(result.writeErrors.map(\.index))
        let acquired = names.indices.filter { !refused.contains($0) }.map { names[$0] }
        guard !acquired.isEmpty else { return [] }
        let states = try client.find(Self.stateCollection, filter: ["_id": Self.oneOf(acquired), "lease_owner": .string(owner)],
                                     projection: ["version": 1, "tail_version": 1, "tail_start": 1, "tail_end": 1], limit: acquired.count)
        let leased = states.compactMap { $0["_id"]?.stringValue }
        if !leased.isEmpty {
            _ = try client.updateMany(Self.dirtyDaysCollection, filter: ["esp32_name": Self.oneOf(leased), "hold_until": ["$ne": .null]],
                                      update: ["$set": ["hold_until": .null]], writeConcern: writeConcern)
        }
        return states.compactMap { doc in
            guard let name = doc["_id"]?.stringValue, let version = doc["version"]?.int64Value else { return nil }
            return LedgerLease(name: name, version: version, tailVersion: doc["tail_version"]?.int64Value,
                               tailStart: doc["tail_start"]?.dateValue.map(Self.millis), tailEnd: doc["tail_end"]?.dateValue.map(Self.millis))
        }
    }

    public func renewLease(_ name: String, owner: String, until: EpochMillis) throws -> Bool {
        let result = try client.updateOne(Self.stateCollection, filter: ["_id": .string(name), "lease_owner": .string(owner)],
                                          update: ["$set": ["lease_until": .millis(until)]], upsert: false, writeConcern: writeConcern)
        return result.matchedCount == 1
    }

    public func releaseLeases(_ releases: [LedgerRelease], owner: String, derivedAt: EpochMillis) throws {
        guard !releases.isEmpty else { return }
        let derived = BSON.millis(derivedAt)
        let operations: [WriteModel] = releases.map { release in
            var set: BSONDocument = ["last_derived_at": derived]
            var unset: BSONDocument = ["lease_owner": "", "lease_until": ""]
            if let until = release.pendingDipUntil { set["pending_dip_until"] = .millis(until) } else { unset["pending_dip_until"] = "" }
            if let tail = release.tail {
                set["tail_version"] = .int64(release.version)
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
            return .updateOne(filter: ["_id": .string(release.name), "lease_owner": .string(owner)],
                              update: ["$set": .document(set), "$unset": .document(unset)], upsert: false)
        }
        try client.bulkWrite(Self.stateCollection, operations: operations, ordered: false, writeConcern: writeConcern).writeErrors.throwUnlessDuplicateKeys()
    }

    public func pendingDipUntil(_ name: String) throws -> EpochMillis? {
        try client.findOne(Self.stateCollection, filter: ["_id": .string(name)], projection: ["pending_dip_until": 1])?["pending_dip_until"]?
            .dateValue.map(Self.millis)
    }

    // MARK: Events

    static func ref(_ doc: BSONDocument) -> LedgerEventRef? {
        guard let id = doc["_id"]?.stringValue else { return nil }
        return LedgerEventRef(id: id, receivedAt: doc["received_at"]?.dateValue.map(Self.millis))
    }

    public func unprocessedEvents(of names: [String], limit: Int) throws -> [LedgerNewEvent] {
        try client.find(Collections.telemetryEvents, filter: ["esp32_name": Self.oneOf(names), "processed": false],
                        projection: ["esp32_name": 1, "device_ts": 1, "received_at": 1], limit: limit)
            .compactMap { doc in
                guard let ref = Self.ref(doc), let name = doc["esp32_name"]?.stringValue else { return nil }
                return LedgerNewEvent(ref: ref, esp32Name: name, deviceTs: doc["device_ts"]?.dateValue.map(Self.millis))
            }
    }

    public func earliestEvent(of name: String, unprocessedOnly: Bool) throws -> LedgerEventTimes? {
        var filter: BSONDocument = ["esp32_name": .string(name)]
        if unprocessedOnly { filter["processed"] = false }
        guard let doc = try client.findOne(Collections.telemetryEvents, filter: filter, sort: ["device_ts": 1],
                                           projection: ["device_ts": 1, "received_at": 1]) else { return nil }
        return LedgerEventTimes(deviceTs: doc["device_ts"]?.dateValue.map(Self.millis), receivedAt: doc["received_at"]?.dateValue.map(Self.millis))
    }

    static let readingProjection: BSONDocument = ["esp32_name": 1, "event_hash": 1, "device_ts": 1, "energy_wh_total": 1, "boot_id": 1,
                                                  "seq": 1, "clock": 1, "power_w": 1, "uptime_s": 1, "timestamp_sent": 1,
                                                  "processed": 1, "received_at": 1]

    public func events(_ devices: [LedgerDeviceStart], limit: Int) throws -> [LedgerStoredEvent] {
        guard !devices.isEmpty else { return [] }
        let filter: BSONDocument
        let sort: BSONDocument
        if devices.count == 1 {
            var one: BSONDocument = ["esp32_name": .string(devices[0].name)]
            if let from = devices[0].from { one["device_ts"] = ["$gte": .millis(from)] }
            filter = one
            sort = ["device_ts": 1, "_id": 1]
        } else {
            filter = ["$or": .array(devices.map { device in
                var clause: BSONDocument = ["esp32_name": .string(device.name)]
                if let from = device.from { clause["device_ts"] = ["$gte": .millis(from)] }
                return .document(clause)
            })]
            sort = ["esp32_name": 1, "device_ts": 1, "_id": 1]
        }
        return try client.find(Collections.telemetryEvents, filter: filter, sort: sort, projection: Self.readingProjection, limit: limit)
            .compactMap(Self.storedEvent)
    }

    static func storedEvent(_ event: BSONDocument) -> LedgerStoredEvent? {
        guard let ref = ref(event), let name = event["esp32_name"]?.stringValue else { return nil }
        let time = event["device_ts"]?.dateValue.map(Self.millis)
        var reading: LedgerReading?
        if let hash = event["event_hash"]?.stringValue, let time, let energy = event["energy_wh_total"]?.doubleValue {
            reading = .stored(eventHash: hash, time: time, energyWh: energy, bootID: event["boot_id"]?.stringValue,
                              seq: event["seq"]?.int64Value, clock: event["clock"]?.stringValue, powerW: event["power_w"]?.doubleValue,
                              uptimeSeconds: event["uptime_s"]?.doubleValue, timestampSent: event["timestamp_sent"]?.stringValue)
        }
        return LedgerStoredEvent(ref: ref, esp32Name: name, deviceTs: time, processed: event["processed"]?.boolValue == true, reading: reading)
    }

    public func presentEventHashes(of name: String, among hashes: [String]) throws -> Set<String> {
        guard !hashes.isEmpty else { return [] }
        return Set(try client.find(Collections.telemetryEvents,
                                   filter: ["esp32_name": .string(name), "event_hash": ["$in": .array(hashes.map { .string($0) })]],
                                   projection: ["event_hash": 1], limit: hashes.count)
            .compactMap { $0["event_hash"]?.stringValue })
    }

    public func markProcessed(_ events: [LedgerEventRef]) throws {
        guard !events.isEmpty else { return }
        _ = try client.updateMany(Collections.telemetryEvents, filter: ["_id": ["$in": .array(events.map { .string($0.id) })]],
                                  update: ["$set": ["processed": true]], writeConcern: writeConcern)
    }

    // MARK: Entries

    public func liveEntries(_ query: LedgerEntryQuery) throws -> [StoredLedgerEntry] {
        guard !query.devices.isEmpty else { return [] }
        var start: BSONDocument = [:]
        if let before = query.startBefore { start["$lt"] = .millis(before) }
        if let most = query.startAtMost { start["$lte"] = .millis(most) }
        var filter: BSONDocument
        if query.devices.count == 1 {
            let device = query.devices[0]
            filter = ["esp32_name": .string(device.name)]
            var own: BSONDocument = device.from.map { ["$gte": .millis($0)] } ?? [:]
            for (key, value) in start { own[key] = value }
            if !own.isEmpty { filter["start_ts"] = .document(own) }
        } else {
            filter = ["$or": .array(query.devices.map { device in
                var clause: BSONDocument = ["esp32_name": .string(device.name)]
                if let from = device.from { clause["start_ts"] = ["$gte": .millis(from)] }
                return .document(clause)
            })]
            if !start.isEmpty { filter["start_ts"] = .document(start) }
        }
        filter["superseded_by"] = ["$exists": false]
        var end: BSONDocument = [:]
        if let least = query.endAtLeast { end["$gte"] = .millis(least) }
        if let before = query.endBefore { end["$lt"] = .millis(before) }
        if let most = query.endAtMost { end["$lte"] = .millis(most) }
        if !end.isEmpty { filter["end_ts"] = .document(end) }
        if let events = query.sourceEvents { filter["source_events"] = .array(events.map { .string($0) }) }
        let sort: BSONDocument? = switch query.order {
        case .startAscending: ["start_ts": 1]
        case .startDescending: ["start_ts": -1]
        case .endAscending: ["end_ts": 1]
        case .endDescending: ["end_ts": -1]
        case nil: nil
        }
        let projection: BSONDocument = ["esp32_name": 1, "start_ts": 1, "end_ts": 1, "date": 1, "source_events": 1]
        func stored(_ doc: BSONDocument) -> StoredLedgerEntry? {
            guard let id = doc["_id"]?.stringValue, let name = doc["esp32_name"]?.stringValue,
                  let start = doc["start_ts"]?.dateValue, let end = doc["end_ts"]?.dateValue else { return nil }
            return StoredLedgerEntry(id: id, esp32Name: name, start: Self.millis(start), end: Self.millis(end), dateText: doc["date"]?.stringValue ?? "",
                                     sourceEvents: doc["source_events"]?.arrayValue?.compactMap(\.stringValue) ?? [])
        }
        if let limit = query.limit {
            return try client.find(Collections.ledgers, filter: filter, sort: sort, projection: projection, limit: limit).compactMap(stored)
        }
        var entries: [StoredLedgerEntry] = []
        try client.forEachBatch(Collections.ledgers, filter: filter, sort: sort, projection: projection) { batch in
            entries += batch.compactMap(stored)
        }
        return entries
    }

    public func parts(ofEntry id: String) throws -> Int? {
        try client.findOne(Collections.ledgers, filter: ["_id": .string(id)], projection: ["parts": 1])?["parts"]?.int64Value.map { Int($0) }
    }

    public func insertEntries(_ entries: [LedgerEntry], createdAt: EpochMillis) throws -> [String] {
        guard !entries.isEmpty else { return [] }
        let created = BSON.millis(createdAt)
        let insert = try client.insertMany(entries.map { Self.document($0, createdAt: created) }, into: Collections.ledgers,
                                           ordered: false, writeConcern: writeConcern)
        try insert.writeErrors.throwUnlessDuplicateKeys()
        return insert.writeErrors.filter(\.isDuplicateKey).compactMap { error in
            entries.indices.contains(error.index) ? entries[error.index].id : nil
        }
    }

    public func reviveEntries(_ ids: [String]) throws {
        guard !ids.isEmpty else { return }
        _ = try client.updateMany(Collections.ledgers, filter: ["_id": ["$in": .array(ids.map { .string($0) })]],
                                  update: ["$unset": ["superseded_by": "", "superseded_at": ""]], writeConcern: writeConcern)
    }

    public func supersede(_ supersessions: [LedgerChange.Supersession], at: EpochMillis) throws {
        guard !supersessions.isEmpty else { return }
        let operations: [WriteModel] = supersessions.map { item in
            .updateOne(filter: ["_id": .string(item.entry.id), "superseded_by": ["$exists": false]],
                       update: ["$set": ["superseded_by": .string(item.replacement), "superseded_at": .millis(at)]], upsert: false)
        }
        try client.bulkWrite(Collections.ledgers, operations: operations, ordered: false, writeConcern: writeConcern).writeErrors.throwUnlessDuplicateKeys()
    }

    public func markDirtyDays(_ days: [LedgerDirtyDay], at: EpochMillis, holdUntil: EpochMillis?, replacing: [String]) throws {
        guard !days.isEmpty || !replacing.isEmpty else { return }
        // One document per mark (changed_from: the epoch when not known); the replaced marks go
        // only once the new ones are in (a mark stored already, by a retry, is left as it is).
        let marks: [WriteModel] = days.map { day in
            .insertOne([
                "_id": .string(day.markID), "esp32_name": .string(day.esp32Name), "date": .string(day.date), "classroom": .string(day.classroom),
                "dirty_at": .millis(at), "changed_from": .millis(day.changedFrom ?? 0), "hold_until": holdUntil.map { .millis($0) } ?? .null,
            ])
        }
        if !marks.isEmpty {
            try client.bulkWrite(Self.dirtyDaysCollection, operations: marks, ordered: false, writeConcern: writeConcern).writeErrors.throwUnlessDuplicateKeys()
        }
        if !replacing.isEmpty {
            try client.bulkWrite(Self.dirtyDaysCollection, operations: replacing.map { .deleteOne(["_id": .string($0)]) }, ordered: false,
                                 writeConcern: writeConcern).writeErrors.throwUnlessDuplicateKeys()
        }
    }

    public func openReviewTickets(_ tickets: [LedgerReviewTicket]) throws {
        guard !tickets.isEmpty else { return }
        let operations: [WriteModel] = tickets.map { ticket in
            .updateOne(
                filter: ["esp32_name": .string(ticket.esp32Name), "date": .string(ticket.date), "kind": .string(ticket.kind)],
                update: ["$setOnInsert": [
                    "esp32_name": .string(ticket.esp32Name), "date": .string(ticket.date), "kind": .string(ticket.kind),
                    "detail": .string(ticket.detail), "status": .string(ticket.status), "created_at": .millis(ticket.createdAt),
                    "run_id": .string(ticket.runID),
                ]],
                upsert: true)
        }
        try client.bulkWrite(Collections.reviewTickets, operations: operations, ordered: false, writeConcern: writeConcern).writeErrors.throwUnlessDuplicateKeys()
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
}
