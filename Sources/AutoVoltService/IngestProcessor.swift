import AutoVoltCore
import AutoVoltMongo
import Foundation
import Logging
import Metrics

/// One message as it left the broker (or a replay file), with its receive time.
public struct InboundMessage: Sendable {
    public var topic: String
    public var payload: [UInt8]
    public var receivedAt: EpochMillis
    public var retained: Bool

    public init(topic: String, payload: [UInt8], receivedAt: EpochMillis, retained: Bool = false) {
        self.topic = topic
        self.payload = payload
        self.receivedAt = receivedAt
        self.retained = retained
    }
}

/// What one batch did.
public struct BatchOutcome: Sendable, Equatable {
    public var inserted = 0
    public var duplicates = 0
    public var rejected: [RejectReason: Int] = [:]
    public var storageErrors = 0
    public var statuses = 0
    public var heartbeats = 0
    public var ignoredRetainedStatuses = 0
    /// Presence updates (`device_status`) the database refused for good: the messages behind
    /// them are stored all the same (the status is derived data).
    public var presenceRefused = 0

    public init() {}

    public mutating func add(_ other: BatchOutcome) {
        inserted += other.inserted
        duplicates += other.duplicates
        for (k, v) in other.rejected { rejected[k, default: 0] += v }
        storageErrors += other.storageErrors
        statuses += other.statuses
        heartbeats += other.heartbeats
        ignoredRetainedStatuses += other.ignoredRetainedStatuses
        presenceRefused += other.presenceRefused
    }

    public var rejectedTotal: Int { rejected.values.reduce(0, +) }
}

/// Source -> transform -> sink for a batch of messages: decode and validate (pure core), then
/// store events, rejections and presence in MongoDB. Every write is idempotent, so a batch that
/// failed half-way (an outage, a crash) is simply processed again.
///
/// Blocking: call from a dedicated thread, never from Swift's cooperative pool.
public final class IngestProcessor: @unchecked Sendable {
    let client: MongoClient
    let decoder: MessageDecoder
    let registry: DeviceRegistry
    let writeConcern: WriteConcern
    let logger: Logger
    /// Told what each batch stored: the alarms are evaluated as readings arrive.
    var alarms: AlarmService?
    // Touched only from the processing thread.
    private var reportedUnregistered: Set<String> = []
    private var reportedClassroomMismatch: Set<String> = []

    public init(client: MongoClient, decoder: MessageDecoder, registry: DeviceRegistry, writeConcern: WriteConcern, logger: Logger) {
        self.client = client
        self.decoder = decoder
        self.registry = registry
        self.writeConcern = writeConcern
        self.logger = logger
    }

    /// Returns only when every message of the batch is stored somewhere: as an event, or as a
    /// rejected message (what the decoder refuses with its reason, what the database refuses for
    /// good as `store_refused` with the whole payload). Only then may the caller drop the batch
    /// from its journal. Throws otherwise, and the caller keeps the batch and retries: an outage,
    /// a write concern not satisfied, a command the deployment refuses (a write concern it
    /// rejects, an authentication failure), a per-document code not known to refuse a document,
    /// or a rejection that could not be recorded.
    /// One refused message never holds back the others: when a batch fails because of one
    /// document (`MongoError.refusesDocument`: said of one document, with a known code), its
    /// messages are stored one by one and only the refused ones are set aside. An error about
    /// the request as a whole is never taken for a refused document, nor is a refusal of the
    /// presence derived from stored messages (`device_status`, see `writePresence`): a message
    /// whose event is stored is never `store_refused`.
    public func process(_ messages: [InboundMessage]) throws(MongoError) -> BatchOutcome {
        do {
            return try processBatch(messages)
        } catch where error.refusesDocument {
            guard messages.count > 1 else { return try recordStoreRefused(messages[0], error) }
            logger.error("the database refused a document of this batch; storing its messages one by one", metadata: [
                "messages": "\(messages.count)", "error": "\(error)",
            ])
            var outcome = BatchOutcome()
            for message in messages { outcome.add(try process([message])) }
            return outcome
        }
    }

    private func recordStoreRefused(_ message: InboundMessage, _ error: MongoError) throws(MongoError) -> BatchOutcome {
        let name = (try? DeviceTopic.parse(message.topic).get())?.esp32Name
        let rejection = Self.storeRefusal(code: error.code, message: error.message)
        logger.error("message refused by the database; kept in rejected_messages as store_refused", metadata: [
            "topic": "\(message.topic)", "esp32_name": "\(name ?? "-")", "error": "\(error)",
        ])
        try recordRejections([Documents.rejectedMessage(topic: message.topic, payload: message.payload,
                                                         receivedAt: message.receivedAt, rejection: rejection, esp32Name: name)])
        var outcome = BatchOutcome()
        outcome.rejected[.storeRefused] = 1
        outcome.storageErrors = 1
        return outcome
    }

    static func storeRefusal(code: Int, message: String) -> Rejection {
        Rejection(.storeRefused, "database refused the message (code \(code)): \(message)")
    }

    private func processBatch(_ messages: [InboundMessage]) throws(MongoError) -> BatchOutcome {
        var outcome = BatchOutcome()
        var events: [(message: InboundMessage, reading: TelemetryReading, document: BSONDocument)] = []
        var rejects: [BSONDocument] = []
        var presence: [PresenceUpdate] = []
        var insertFailures: [Int] = []

        for message in messages {
            switch decoder.decode(topic: message.topic, payload: message.payload, receivedAt: message.receivedAt) {
            case .failure(let rejection):
                outcome.rejected[rejection.reason, default: 0] += 1
                let name = (try? DeviceTopic.parse(message.topic).get())?.esp32Name
                logger.warning("message rejected", metadata: [
                    "topic": "\(message.topic)", "esp32_name": "\(name ?? "-")", "reason": "\(rejection.reason.rawValue)",
                    "detail": "\(rejection.detail)",
                ])
                rejects.append(Documents.rejectedMessage(topic: message.topic, payload: message.payload,
                                                         receivedAt: message.receivedAt, rejection: rejection, esp32Name: name))
            case .success(.telemetry(let reading)):
                let device = resolve(reading.esp32Name)
                if let claimed = reading.payloadClassroom, claimed != device.classroom,
                   reportedClassroomMismatch.insert("\(reading.esp32Name)\u{0}\(claimed)").inserted {
                    logger.notice("payload classroom differs from the registry; the registry wins", metadata: [
                        "esp32_name": "\(reading.esp32Name)", "payload_classroom": "\(claimed)", "classroom": "\(device.classroom)",
                    ])
                }
                events.append((message, reading, Documents.telemetryEvent(reading, classroom: device.classroom)))
                presence.append(.telemetry(name: reading.esp32Name, classroom: device.classroom, at: message.receivedAt))
            case .success(.status(let status)):
                if message.retained {
                    // A retained status replayed on (re)subscribe is old news: it updates nothing.
                    outcome.ignoredRetainedStatuses += 1
                    continue
                }
                outcome.statuses += 1
                presence.append(.status(name: status.esp32Name, classroom: resolve(status.esp32Name).classroom,
                                        online: status.state == .online, at: message.receivedAt))
            case .success(.heartbeat(let heartbeat)):
                outcome.heartbeats += 1
                presence.append(.heartbeat(heartbeat, classroom: resolve(heartbeat.esp32Name).classroom))
            }
        }

        if !events.isEmpty {
            let result = try client.insertMany(events.map(\.document), into: Collections.telemetryEvents, ordered: false,
                                               writeConcern: writeConcern)
            outcome.inserted = result.insertedCount
            let failed = result.writeErrors
            insertFailures = failed.map(\.index)
            let duplicateIndexes = failed.filter(\.isDuplicateKey).map(\.index)
            if !duplicateIndexes.isEmpty {
                let candidates = duplicateIndexes.compactMap { events.indices.contains($0) ? events[$0] : nil }
                let ids = candidates.map { BSON.string(Documents.eventID($0.reading)) }
                let stored = try client.find(Collections.telemetryEvents, filter: ["_id": ["$in": .array(ids)]],
                                             projection: ["energy_wh_total": 1, "event_hash": 1], limit: ids.count)
                var storedEnergy: [String: Double] = [:]
                for doc in stored {
                    if let id = doc["_id"]?.stringValue, let energy = doc["energy_wh_total"]?.doubleValue { storedEnergy[id] = energy }
                }
                for candidate in candidates {
                    let id = Documents.eventID(candidate.reading)
                    if let existing = storedEnergy[id], existing != candidate.reading.energyWhTotal {
                        let rejection = Rejection(.conflict, "\(candidate.reading.esp32Name) already reported \(existing) Wh at \(ISO8601.format(candidate.reading.deviceTime)); this message says \(candidate.reading.energyWhTotal) Wh")
                        outcome.rejected[.conflict, default: 0] += 1
                        logger.warning("message rejected", metadata: [
                            "topic": "\(candidate.message.topic)", "esp32_name": "\(candidate.reading.esp32Name)",
                            "reason": "conflict", "detail": "\(rejection.detail)",
                        ])
                        rejects.append(Documents.rejectedMessage(topic: candidate.message.topic, payload: candidate.message.payload,
                                                                 receivedAt: candidate.message.receivedAt, rejection: rejection,
                                                                 esp32Name: candidate.reading.esp32Name))
                    } else {
                        outcome.duplicates += 1
                    }
                }
            }
            // Anything but a duplicate or a known refusal of a document is retried with the batch
            // (the writes that went through are duplicates then): a primary stepping down
            // mid-batch, and a code nobody knows, which is said loudly rather than taken for a
            // bad message: good telemetry must not end up set aside.
            if let retry = failed.first(where: { !$0.isDuplicateKey && !$0.refusesDocument }) {
                if retry.disposition != .transient, events.indices.contains(retry.index) {
                    logger.error("the database refused an event with a code not known to refuse a document; the batch stays in the journal and is retried", metadata: [
                        "esp32_name": "\(events[retry.index].reading.esp32Name)", "code": "\(retry.code)", "error": "\(retry.message)",
                        "documents_failed": "\(failed.filter { !$0.isDuplicateKey }.count)",
                    ])
                }
                throw retry.asMongoError
            }
            // Anything else the server refused per document must not stall the pipeline: keep the
            // whole message, with the server's words, where a person sees it and can requeue it.
            for error in failed where error.refusesDocument {
                // A refusal that names no event of the request cannot say which message to set
                // aside: keep the batch rather than guess.
                guard events.indices.contains(error.index) else {
                    throw error.asMongoError.aboutTheRequest("a write error names no event of the batch (index \(error.index))")
                }
                let message = events[error.index].message
                outcome.storageErrors += 1
                outcome.rejected[.storeRefused, default: 0] += 1
                logger.error("event refused by the database; kept in rejected_messages as store_refused", metadata: [
                    "topic": "\(message.topic)", "esp32_name": "\(events[error.index].reading.esp32Name)",
                    "code": "\(error.code)", "error": "\(error.message)",
                ])
                rejects.append(Documents.rejectedMessage(
                    topic: message.topic, payload: message.payload, receivedAt: message.receivedAt,
                    rejection: Self.storeRefusal(code: error.code, message: error.message),
                    esp32Name: events[error.index].reading.esp32Name))
            }
        }

        try recordRejections(rejects)
        // Every message is stored by now (an event or a rejection): what follows is derived from
        // them, and never sets a message aside (`writePresence`).
        outcome.presenceRefused = try writePresence(presence)
        if let alarms {
            let refused = Set(insertFailures)
            let stored = events.indices.filter { !refused.contains($0) }.map { events[$0].reading }
            let rejected = rejects.compactMap { doc -> (String, EpochMillis)? in
                guard let name = doc["esp32_name"]?.stringValue, let at = AnalyticsQueries.millis(doc["received_at"]) else { return nil }
                return (name, at)
            }
            alarms.observe(readings: stored, rejects: rejected)
        }
        return outcome
    }

    /// Inserts rejection documents; a duplicate is the same rejection recorded by an earlier,
    /// interrupted attempt. A rejection the database refuses for good is recorded as a minimal
    /// document (the payload as hex). Whatever cannot be recorded throws, as an error about the
    /// request: the message must stay in the journal, never only in a log line.
    private func recordRejections(_ rejects: [BSONDocument]) throws(MongoError) {
        guard !rejects.isEmpty else { return }
        let result: InsertManyResult
        do {
            result = try client.insertMany(rejects, into: Collections.rejectedMessages, ordered: false, writeConcern: writeConcern)
        } catch where error.refusesDocument {
            // One rejection could not even be sent (e.g. encoded): record them one by one.
            guard rejects.count == 1 else {
                for reject in rejects { try recordRejections([reject]) }
                return
            }
            try recordMinimalRejection(rejects[0], code: error.code, message: error.message)
            return
        }
        if let retry = result.writeErrors.first(where: { !$0.isDuplicateKey && !$0.refusesDocument }) {
            throw retry.asMongoError.aboutTheRequest("recording a rejected message")
        }
        for error in result.writeErrors where error.refusesDocument {
            guard rejects.indices.contains(error.index) else {
                throw error.asMongoError.aboutTheRequest("recording a rejected message (a write error names no document of the request)")
            }
            try recordMinimalRejection(rejects[error.index], code: error.code, message: error.message)
        }
    }

    /// The rejection without its payload text (the payload as hex): what a validator or a size
    /// limit refused is not in it. If even this is refused, the batch stays in the journal.
    private func recordMinimalRejection(_ original: BSONDocument, code: Int, message: String) throws(MongoError) {
        var minimal: BSONDocument = [:]
        for key in ["_id", "topic", "reason", "received_at", "esp32_name", "payload_bytes"] {
            if let value = original[key] { minimal[key] = value }
        }
        let payload = original["payload"]?.stringValue ?? ""
        minimal["payload"] = .string("")
        minimal["payload_hex"] = .string(payload.utf8.map { Self.hex($0) }.joined())
        minimal["detail"] = .string("\(original["detail"]?.stringValue ?? "") (the rejection itself was refused, code \(code): \(message))")
        do {
            _ = try client.insertMany([minimal], into: Collections.rejectedMessages, ordered: false, writeConcern: writeConcern)
                .writeErrors.throwUnlessDuplicateKeys()
        } catch {
            logger.critical("cannot record a rejected message in rejected_messages; its batch stays in the journal and is retried", metadata: [
                "topic": "\(original["topic"]?.stringValue ?? "-")", "error": "\(error)",
            ])
            throw error.aboutTheRequest("recording a rejected message")
        }
    }

    private static func hex(_ byte: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 0xF)]])
    }

    private func resolve(_ name: String) -> DeviceInfo {
        if let device = registry.device(name) { return device }
        if reportedUnregistered.insert(name).inserted {
            logger.notice("device is not in the registry; ingesting it as \"unassigned\"", metadata: ["esp32_name": "\(name)"])
        }
        return .unregistered(name)
    }

    // MARK: Presence

    enum PresenceUpdate {
        case telemetry(name: String, classroom: String, at: EpochMillis)
        case heartbeat(HeartbeatReport, classroom: String)
        case status(name: String, classroom: String, online: Bool, at: EpochMillis)
    }

    /// Telemetry and heartbeats are folded per device into one upsert each (a bulk write);
    /// status changes go one by one, in arrival order, because `sessions` counts transitions.
    ///
    /// `device_status` is derived from messages that are stored by now (as events or
    /// rejections), so a device whose presence update the database refuses for good (a
    /// validator, a size limit: `MongoError.refusesDocument`) must not send those messages to
    /// `store_refused`, nor hold the batch in the journal: the refusal is said at error level
    /// with the device and the code, counted (`autovolt_device_status_refused_total`), and that
    /// device's presence stays as it was; the batch goes on. Returns how many updates were
    /// refused. What it throws (an outage, a write concern not satisfied, a code not known to
    /// refuse a document) keeps the batch, and is never a refused document.
    func writePresence(_ updates: [PresenceUpdate]) throws(MongoError) -> Int {
        guard !updates.isEmpty else { return 0 }
        var order: [String] = []
        var folded: [String: (set: BSONDocument, max: BSONDocument)] = [:]
        var statuses: [(name: String, classroom: String, online: Bool, at: EpochMillis)] = []
        func fold(_ name: String, _ set: BSONDocument, _ max: BSONDocument) {
            if folded[name] == nil { order.append(name); folded[name] = ([:], [:]) }
            for (k, v) in set { folded[name]?.set[k] = v }
            for (k, v) in max {
                if let old = folded[name]?.max[k]?.dateValue, let new = v.dateValue, old >= new { continue }
                folded[name]?.max[k] = v
            }
        }
        for update in updates {
            switch update {
            case .telemetry(let name, let classroom, let at):
                fold(name, ["classroom": .string(classroom)], ["last_seen_at": .millis(at), "last_telemetry_at": .millis(at)])
            case .heartbeat(let h, let classroom):
                var set: BSONDocument = ["classroom": .string(classroom)]
                if let v = h.uptimeS { set["uptime_s"] = .double(v) }
                if let v = h.rssi { set["rssi"] = .double(v) }
                if let v = h.freeHeap { set["free_heap"] = .double(v) }
                if let v = h.bootID { set["boot_id"] = .string(v) }
                if let v = h.fwVersion { set["fw_version"] = .string(v) }
                fold(h.esp32Name, set, ["last_seen_at": .millis(h.receivedAt), "last_heartbeat_at": .millis(h.receivedAt)])
            case .status(let name, let classroom, let online, let at):
                statuses.append((name, classroom, online, at))
            }
        }
        var refused = 0
        if !order.isEmpty {
            let operations: [(name: String, model: WriteModel)] = order.compactMap { name in
                guard let f = folded[name] else { return nil }
                // Only status messages say online/offline; until one arrives it is unknown (null).
                let onInsert = Self.withNullTimes(["esp32_name": .string(name), "online": .null, "sessions": .int64(0)], except: f.max)
                return (name, .updateOne(
                    filter: ["_id": .string(name)],
                    update: ["$set": .document(f.set), "$max": .document(f.max), "$setOnInsert": .document(onInsert)],
                    upsert: true))
            }
            refused += try upsertPresence(operations)
        }
        for status in statuses {
            do {
                try writeStatus(name: status.name, classroom: status.classroom, online: status.online, at: status.at)
            } catch where error.refusesDocument {
                presenceRefused(status.name, error)
                refused += 1
            }
        }
        return refused
    }

    /// The folded upserts as one bulk write; the refused ones are said and counted (their number
    /// is returned), the others stay written.
    private func upsertPresence(_ operations: [(name: String, model: WriteModel)]) throws(MongoError) -> Int {
        let result: BulkWriteResult
        do {
            result = try client.bulkWrite(Collections.deviceStatus, operations: operations.map(\.model), ordered: false,
                                          writeConcern: writeConcern)
        } catch where error.refusesDocument {
            // An update that could not even be sent (encoded) is not named: one by one.
            guard operations.count > 1 else {
                presenceRefused(operations[0].name, error)
                return 1
            }
            var refused = 0
            for operation in operations { refused += try upsertPresence([operation]) }
            return refused
        }
        // Anything but a duplicate or a known refusal (a stepped-down primary, a code nobody
        // knows) is retried with the batch: the upserts are idempotent.
        if let retry = result.writeErrors.first(where: { !$0.isDuplicateKey && !$0.refusesDocument }) {
            throw retry.asMongoError.aboutTheRequest("writing device_status")
        }
        var refused = 0
        for failure in result.writeErrors where failure.refusesDocument {
            guard operations.indices.contains(failure.index) else {
                throw failure.asMongoError.aboutTheRequest("a device_status write error names no update of the request (index \(failure.index))")
            }
            presenceRefused(operations[failure.index].name, failure.asMongoError)
            refused += 1
        }
        // Two workers raced to create the same device document: apply ours again as an update.
        for failure in result.writeErrors where failure.isDuplicateKey {
            guard operations.indices.contains(failure.index),
                  case .updateOne(let filter, let update, _) = operations[failure.index].model else { continue }
            do {
                _ = try client.updateOne(Collections.deviceStatus, filter: filter, update: update, upsert: false, writeConcern: writeConcern)
            } catch where error.refusesDocument {
                presenceRefused(operations[failure.index].name, error)
                refused += 1
            }
        }
        return refused
    }

    /// A presence update refused for good: loud, counted, and not the messages' fault.
    private func presenceRefused(_ name: String, _ error: MongoError) {
        logger.error("device_status refused the presence update of a device; its messages are stored, its status is left as it was (derived data); the batch goes on", metadata: [
            "esp32_name": "\(name)", "code": "\(error.code)", "error": "\(error.message)",
        ])
        Counter(label: "autovolt_device_status_refused_total", dimensions: [("code", "\(error.code)")]).increment()
    }

    /// Every contract field of `device_status` exists from the start: times not yet seen are null
    /// (`$max` later replaces a null, which sorts before every date).
    static func withNullTimes(_ base: BSONDocument, except present: BSONDocument) -> BSONDocument {
        var document = base
        for field in ["last_seen_at", "last_status_at", "last_heartbeat_at", "last_telemetry_at"] where present[field] == nil {
            document[field] = .null
        }
        return document
    }

    func writeStatus(name: String, classroom: String, online: Bool, at: EpochMillis) throws(MongoError) {
        let times: BSONDocument = ["last_seen_at": .millis(at), "last_status_at": .millis(at)]
        if online {
            // Count a session only on a transition from offline (or unknown) to online.
            do {
                _ = try client.updateOne(
                    Collections.deviceStatus,
                    filter: ["_id": .string(name), "online": ["$ne": true]],
                    update: [
                        "$set": ["online": true, "classroom": .string(classroom), "esp32_name": .string(name)],
                        "$max": .document(times),
                        "$inc": ["sessions": .int64(1)],
                        "$setOnInsert": .document(Self.withNullTimes([:], except: times)),
                    ],
                    upsert: true, writeConcern: writeConcern)
            } catch let error where error.isDuplicateKey {
                // Already online: the upsert tried to create a second document for the device.
                _ = try client.updateOne(
                    Collections.deviceStatus, filter: ["_id": .string(name)],
                    update: ["$set": ["classroom": .string(classroom)], "$max": .document(times)],
                    upsert: false, writeConcern: writeConcern)
            }
        } else {
            _ = try client.updateOne(
                Collections.deviceStatus, filter: ["_id": .string(name)],
                update: [
                    "$set": ["online": false, "classroom": .string(classroom)],
                    "$max": .document(times),
                    "$setOnInsert": .document(Self.withNullTimes(["esp32_name": .string(name), "sessions": .int64(0)], except: times)),
                ],
                upsert: true, writeConcern: writeConcern)
        }
    }
}
