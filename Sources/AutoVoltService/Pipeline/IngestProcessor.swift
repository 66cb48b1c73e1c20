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
/// store events, rejections and presence through an `IngestStorage` (MongoDB or PostgreSQL).
/// Every write is idempotent, so a batch that failed half-way (an outage, a crash) is simply
/// processed again. Errors are classified once, here, by `storageDisposition(of:)`.
///
/// Blocking: call from a dedicated thread, never from Swift's cooperative pool.
public final class IngestProcessor: @unchecked Sendable {
    let storage: any IngestStorage
    let decoder: MessageDecoder
    let registry: DeviceRegistry
    let logger: Logger
    /// Told what each batch stored: the alarms are evaluated as readings arrive.
    var alarms: AlarmService?
    // Touched only from the processing thread.
    private var reportedUnregistered: Set<String> = []
    private var reportedClassroomMismatch: Set<String> = []

    public init(storage: any IngestStorage, decoder: MessageDecoder, registry: DeviceRegistry, logger: Logger) {
        self.storage = storage
        self.decoder = decoder
        self.registry = registry
        self.logger = logger
    }

    /// Over MongoDB (`MongoIngestStorage`).
    public init(client: MongoClient, decoder: MessageDecoder, registry: DeviceRegistry, writeConcern: WriteConcern, logger: Logger) {
        self.storage = MongoIngestStorage(client: client, writeConcern: writeConcern)
        self.decoder = decoder
        self.registry = registry
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
    /// document (`StorageDisposition.refusedDocument`: said of one document or row, with a known
    /// code), its messages are stored one by one and only the refused ones are set aside. An
    /// error about the request as a whole is never taken for a refused document, nor is a
    /// refusal of the presence derived from stored messages (`device_status`, see
    /// `writePresence`): a message whose event is stored is never `store_refused`.
    public func ingest(_ messages: [InboundMessage]) throws -> BatchOutcome {
        do {
            return try processBatch(messages)
        } catch where storageDisposition(of: error) == .refusedDocument {
            guard messages.count > 1 else { return try recordStoreRefused(messages[0], error) }
            logger.error("the database refused a document of this batch; storing its messages one by one", metadata: [
                "messages": "\(messages.count)", "error": "\(error)",
            ])
            var outcome = BatchOutcome()
            for message in messages { outcome.add(try ingest([message])) }
            return outcome
        }
    }

    private func recordStoreRefused(_ message: InboundMessage, _ error: any Error) throws -> BatchOutcome {
        let name = (try? DeviceTopic.parse(message.topic).get())?.esp32Name
        let rejection = Self.storeRefusal(error)
        logger.error("message refused by the database; kept in rejected_messages as store_refused", metadata: [
            "topic": "\(message.topic)", "esp32_name": "\(name ?? "-")", "error": "\(error)",
        ])
        try recordRejections([RejectedMessageRecord(topic: message.topic, payload: message.payload,
                                                    receivedAt: message.receivedAt, rejection: rejection, esp32Name: name)])
        var outcome = BatchOutcome()
        outcome.rejected[.storeRefused] = 1
        outcome.storageErrors = 1
        return outcome
    }

    static func storeRefusal(_ error: any Error) -> Rejection {
        Rejection(.storeRefused, "database refused the message (code \(code(of: error))): \(message(of: error))")
    }

    static func code(of error: any Error) -> String { (error as? any StorageFailure)?.storageCode ?? "-" }
    static func message(of error: any Error) -> String { (error as? any StorageFailure)?.storageMessage ?? "\(error)" }

    private func processBatch(_ messages: [InboundMessage]) throws -> BatchOutcome {
        var outcome = BatchOutcome()
        var events: [(message: InboundMessage, event: IngestEvent)] = []
        var rejects: [RejectedMessageRecord] = []
        var presence: [PresenceMessage] = []
        var stored: [TelemetryReading] = []

        for message in messages {
            switch decoder.decode(topic: message.topic, payload: message.payload, receivedAt: message.receivedAt) {
            case .failure(let rejection):
                outcome.rejected[rejection.reason, default: 0] += 1
                let name = (try? DeviceTopic.parse(message.topic).get())?.esp32Name
                logger.warning("message rejected", metadata: [
                    "topic": "\(message.topic)", "esp32_name": "\(name ?? "-")", "reason": "\(rejection.reason.rawValue)",
                    "detail": "\(rejection.detail)",
                ])
                rejects.append(RejectedMessageRecord(topic: message.topic, payload: message.payload,
                                                     receivedAt: message.receivedAt, rejection: rejection, esp32Name: name))
            case .success(.telemetry(let reading)):
                let device = resolve(reading.esp32Name)
                if let claimed = reading.payloadClassroom, claimed != device.classroom,
                   reportedClassroomMismatch.insert("\(reading.esp32Name)\u{0}\(claimed)").inserted {
                    logger.notice("payload classroom differs from the registry; the registry wins", metadata: [
                        "esp32_name": "\(reading.esp32Name)", "payload_classroom": "\(claimed)", "classroom": "\(device.classroom)",
                    ])
                }
                events.append((message, IngestEvent(reading: reading, classroom: device.classroom)))
                presence.append(.telemetry(name: reading.esp32Name, classroom: device.classroom, at: message.receivedAt))
            case .success(.status(let status)):
                if message.retained {
                    // A retained status replayed on (re)subscribe is old news: it updates nothing.
                    outcome.ignoredRetainedStatuses += 1
                    continue
                }
                outcome.statuses += 1
                presence.append(.status(StatusChange(esp32Name: status.esp32Name, classroom: resolve(status.esp32Name).classroom,
                                                     online: status.state == .online, at: message.receivedAt)))
            case .success(.heartbeat(let heartbeat)):
                outcome.heartbeats += 1
                presence.append(.heartbeat(heartbeat, classroom: resolve(heartbeat.esp32Name).classroom))
            }
        }

        if !events.isEmpty {
            let results = try storage.insertEvents(events.map(\.event))
            guard results.count == events.count else {
                throw IngestStorageContractError(message: "\(results.count) results for \(events.count) events")
            }
            var failed: [(index: Int, error: any Error)] = []
            for (index, result) in results.enumerated() {
                let candidate = events[index]
                let reading = candidate.event.reading
                switch result {
                case .inserted:
                    outcome.inserted += 1
                    stored.append(reading)
                case .alreadyStored(let existing):
                    if let existing, existing != reading.energyWhTotal {
                        let rejection = Rejection(.conflict, "\(reading.esp32Name) already reported \(existing) Wh at \(ISO8601.format(reading.deviceTime)); this message says \(reading.energyWhTotal) Wh")
                        outcome.rejected[.conflict, default: 0] += 1
                        logger.warning("message rejected", metadata: [
                            "topic": "\(candidate.message.topic)", "esp32_name": "\(reading.esp32Name)",
                            "reason": "conflict", "detail": "\(rejection.detail)",
                        ])
                        rejects.append(RejectedMessageRecord(topic: candidate.message.topic, payload: candidate.message.payload,
                                                             receivedAt: candidate.message.receivedAt, rejection: rejection,
                                                             esp32Name: reading.esp32Name))
                    } else {
                        outcome.duplicates += 1
                    }
                case .failed(let error):
                    failed.append((index, error))
                }
            }
            // Anything but a known refusal of a document is retried with the batch (the writes
            // that went through are duplicates then): a primary stepping down mid-batch, and a
            // code nobody knows, which is said loudly rather than taken for a bad message: good
            // telemetry must not end up set aside.
            if let retry = failed.first(where: { storageDisposition(of: $0.error) != .refusedDocument }) {
                if storageDisposition(of: retry.error) != .transient {
                    logger.error("the database refused an event with a code not known to refuse a document; the batch stays in the journal and is retried", metadata: [
                        "esp32_name": "\(events[retry.index].event.reading.esp32Name)", "code": "\(Self.code(of: retry.error))",
                        "error": "\(Self.message(of: retry.error))", "documents_failed": "\(failed.count)",
                    ])
                }
                throw retry.error
            }
            // Anything else the server refused per document must not stall the pipeline: keep the
            // whole message, with the server's words, where a person sees it and can requeue it.
            for (index, error) in failed {
                let message = events[index].message
                let name = events[index].event.reading.esp32Name
                outcome.storageErrors += 1
                outcome.rejected[.storeRefused, default: 0] += 1
                logger.error("event refused by the database; kept in rejected_messages as store_refused", metadata: [
                    "topic": "\(message.topic)", "esp32_name": "\(name)",
                    "code": "\(Self.code(of: error))", "error": "\(Self.message(of: error))",
                ])
                rejects.append(RejectedMessageRecord(topic: message.topic, payload: message.payload, receivedAt: message.receivedAt,
                                                     rejection: Self.storeRefusal(error), esp32Name: name))
            }
        }

        try recordRejections(rejects)
        // Every message is stored by now (an event or a rejection): what follows is derived from
        // them, and never sets a message aside (`writePresence`).
        outcome.presenceRefused = try writePresence(presence)
        if let alarms {
            let rejected = rejects.compactMap { record -> (String, EpochMillis)? in
                guard let name = record.esp32Name else { return nil }
                return (name, record.receivedAt)
            }
            alarms.observe(readings: stored, rejects: rejected)
        }
        return outcome
    }

    /// Records rejections; a duplicate is the same rejection recorded by an earlier,
    /// interrupted attempt. A rejection the database refuses for good is recorded in its
    /// minimal form (the payload as hex). Whatever cannot be recorded throws, as an error about
    /// the request: the message must stay in the journal, never only in a log line.
    private func recordRejections(_ rejects: [RejectedMessageRecord]) throws {
        guard !rejects.isEmpty else { return }
        let results: [(any Error)?]
        do {
            results = try storage.recordRejections(rejects)
        } catch where storageDisposition(of: error) == .refusedDocument {
            // One rejection could not even be sent (e.g. encoded): record them one by one.
            guard rejects.count == 1 else {
                for reject in rejects { try recordRejections([reject]) }
                return
            }
            try recordMinimalRejection(rejects[0], error)
            return
        }
        guard results.count == rejects.count else {
            throw IngestStorageContractError(message: "\(results.count) results for \(rejects.count) rejections")
        }
        let failures = results.enumerated().compactMap { item in item.element.map { (index: item.offset, error: $0) } }
        if let retry = failures.first(where: { storageDisposition(of: $0.error) != .refusedDocument }) {
            throw aboutTheRequest(retry.error, "recording a rejected message")
        }
        for failure in failures {
            try recordMinimalRejection(rejects[failure.index], failure.error)
        }
    }

    /// The rejection without its payload text (the payload as hex): what a validator or a size
    /// limit refused is not in it. If even this is refused, the batch stays in the journal.
    private func recordMinimalRejection(_ original: RejectedMessageRecord, _ refusal: any Error) throws {
        let minimal = original.minimal(refusal: Self.code(of: refusal), Self.message(of: refusal))
        do {
            let results = try storage.recordRejections([minimal])
            if let error = results.first ?? nil { throw error }
        } catch {
            logger.critical("cannot record a rejected message in rejected_messages; its batch stays in the journal and is retried", metadata: [
                "topic": "\(original.topic)", "error": "\(error)",
            ])
            throw aboutTheRequest(error, "recording a rejected message")
        }
    }

    private func resolve(_ name: String) -> DeviceInfo {
        if let device = registry.device(name) { return device }
        if reportedUnregistered.insert(name).inserted {
            logger.notice("device is not in the registry; ingesting it as \"unassigned\"", metadata: ["esp32_name": "\(name)"])
        }
        return .unregistered(name)
    }

    // MARK: Presence

    enum PresenceMessage {
        case telemetry(name: String, classroom: String, at: EpochMillis)
        case heartbeat(HeartbeatReport, classroom: String)
        case status(StatusChange)
    }

    /// Telemetry and heartbeats are folded per device into one update each (one request);
    /// status changes go one by one, in arrival order, because `sessions` counts transitions.
    ///
    /// `device_status` is derived from messages that are stored by now (as events or
    /// rejections), so a device whose presence update the database refuses for good (a
    /// validator, a size limit: `StorageDisposition.refusedDocument`) must not send those
    /// messages to `store_refused`, nor hold the batch in the journal: the refusal is said at
    /// error level with the device and the code, counted
    /// (`autovolt_device_status_refused_total`), and that device's presence stays as it was; the
    /// batch goes on. Returns how many updates were refused. What it throws (an outage, a write
    /// concern not satisfied, a code not known to refuse a document) keeps the batch, and is
    /// never a refused document.
    func writePresence(_ messages: [PresenceMessage]) throws -> Int {
        guard !messages.isEmpty else { return 0 }
        let (updates, statuses) = Self.fold(messages)
        var refused = 0
        if !updates.isEmpty {
            let results: [(any Error)?]
            do {
                results = try storage.upsertPresence(updates)
            } catch where storageDisposition(of: error) == .refusedDocument {
                // Refused as a request of one update: that device's presence stays as it was.
                guard updates.count == 1 else { throw aboutTheRequest(error, "writing device_status") }
                results = [error]
            }
            guard results.count == updates.count else {
                throw IngestStorageContractError(message: "\(results.count) results for \(updates.count) presence updates")
            }
            for (index, error) in results.enumerated() {
                guard let error else { continue }
                guard storageDisposition(of: error) == .refusedDocument else { throw aboutTheRequest(error, "writing device_status") }
                presenceRefused(updates[index].esp32Name, error)
                refused += 1
            }
        }
        for status in statuses {
            do {
                try storage.writeStatus(status)
            } catch where storageDisposition(of: error) == .refusedDocument {
                presenceRefused(status.esp32Name, error)
                refused += 1
            }
        }
        return refused
    }

    /// One update per device (in order of first appearance) from its telemetry and heartbeats:
    /// the last value said of a field wins, times keep the latest; status changes in order.
    static func fold(_ messages: [PresenceMessage]) -> (updates: [PresenceUpdate], statuses: [StatusChange]) {
        var order: [String] = []
        var folded: [String: PresenceUpdate] = [:]
        var statuses: [StatusChange] = []
        func latest(_ a: EpochMillis?, _ b: EpochMillis) -> EpochMillis { a.map { max($0, b) } ?? b }
        for message in messages {
            switch message {
            case .telemetry(let name, let classroom, let at):
                if folded[name] == nil { order.append(name) }
                var update = folded[name] ?? PresenceUpdate(esp32Name: name, classroom: classroom)
                update.classroom = classroom
                update.lastSeenAt = latest(update.lastSeenAt, at)
                update.lastTelemetryAt = latest(update.lastTelemetryAt, at)
                folded[name] = update
            case .heartbeat(let h, let classroom):
                let name = h.esp32Name
                if folded[name] == nil { order.append(name) }
                var update = folded[name] ?? PresenceUpdate(esp32Name: name, classroom: classroom)
                update.classroom = classroom
                if let v = h.uptimeS { update.uptimeS = v }
                if let v = h.rssi { update.rssi = v }
                if let v = h.freeHeap { update.freeHeap = v }
                if let v = h.bootID { update.bootID = v }
                if let v = h.fwVersion { update.fwVersion = v }
                update.lastSeenAt = latest(update.lastSeenAt, h.receivedAt)
                update.lastHeartbeatAt = latest(update.lastHeartbeatAt, h.receivedAt)
                folded[name] = update
            case .status(let change):
                statuses.append(change)
            }
        }
        return (order.compactMap { folded[$0] }, statuses)
    }

    /// A presence update refused for good: loud, counted, and not the messages' fault.
    private func presenceRefused(_ name: String, _ error: any Error) {
        let code = Self.code(of: error)
        logger.error("device_status refused the presence update of a device; its messages are stored, its status is left as it was (derived data); the batch goes on", metadata: [
            "esp32_name": "\(name)", "code": "\(code)", "error": "\(Self.message(of: error))",
        ])
        Counter(label: "autovolt_device_status_refused_total", dimensions: [("code", code)]).increment()
    }
}
