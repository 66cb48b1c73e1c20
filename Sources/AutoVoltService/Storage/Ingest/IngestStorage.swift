import AutoVoltCore
import AutoVoltMongo
import Crypto
import Foundation

/// What the drain stores and `requeue` reads (issue 21): `telemetry_events`, `rejected_messages`
/// and `device_status`. Only data operations; what they mean (duplicates, conflicts,
/// `store_refused`, the journal's guarantee) is `IngestProcessor`'s, written once for both
/// backends.
///
/// Blocking, synchronous: call from a dedicated thread. Errors are the backend's own
/// (`MongoError`, `PostgresError`), thrown untyped; the caller classifies them with
/// `storageDisposition(of:)`. A thrown error is about the request as a whole (an outage, a
/// refused command), unless it is a refusal of the one item a one-item request held. An error
/// the database said of one item of a larger request is returned in that item's place, and the
/// other items are stored.
public protocol IngestStorage: Sendable {
    /// Inserts the events that are not stored yet. One result per event, in order: an event
    /// whose `id` or `event_hash` is stored already (by an earlier attempt, another worker, or an
    /// earlier event of the same call) is `alreadyStored`, with the counter value of the stored
    /// event of the same `id` when there is one (a different value is a conflict).
    func insertEvents(_ events: [IngestEvent]) throws -> [EventWriteResult]

    /// Records rejections, idempotently by `id` (an `id` stored already is a success). One
    /// result per record, in order: nil when it is stored, or the error said of that record.
    func recordRejections(_ records: [RejectedMessageRecord]) throws -> [(any Error)?]

    /// Presence from telemetry and heartbeats, one update per device: creates the device's
    /// status when it has none (`online` unknown, `sessions` 0, times not given null), sets
    /// `classroom` and the heartbeat fields given, and moves the times given forward only.
    /// One result per update, in order: nil when applied, or the error said of that update.
    func upsertPresence(_ updates: [PresenceUpdate]) throws -> [(any Error)?]

    /// A status message, applied in arrival order: `online` counts a session on a transition
    /// from offline or unknown only; `last_seen_at` and `last_status_at` move forward only.
    func writeStatus(_ change: StatusChange) throws

    /// A page of `store_refused` rejections received at or after `since`, with an id greater
    /// than `after`, in id order (bytewise), at most `limit`.
    func storeRefusedRejections(since: EpochMillis?, after: String?, limit: Int) throws -> [StoredRejection]

    /// Removes one rejection (requeue, once its message is stored or rejected otherwise).
    func deleteRejection(id: String) throws
}

/// One accepted reading for `telemetry_events`, with the registry's classroom.
public struct IngestEvent: Sendable, Equatable {
    public var reading: TelemetryReading
    public var classroom: String

    public init(reading: TelemetryReading, classroom: String) {
        self.reading = reading
        self.classroom = classroom
    }

    /// The event's `_id` / `id` (`Documents.eventID`).
    public var id: String { Documents.eventID(reading) }
}

/// What became of one event of `insertEvents`.
public enum EventWriteResult: Sendable {
    case inserted
    /// Its `id` or `event_hash` is stored already; `storedEnergyWhTotal` is the counter of the
    /// stored event of the same `id` (nil when only the hash matched, or it was not found).
    case alreadyStored(storedEnergyWhTotal: Double?)
    /// What the database said of this one event (classified by the caller).
    case failed(any Error)
}

/// A document of `rejected_messages`.
public struct RejectedMessageRecord: Sendable, Equatable {
    public var id: String
    public var topic: String
    /// The payload as text (at most 4 KiB, whole for `store_refused`); empty in the minimal form.
    public var payload: String
    /// Only in the minimal form (the rejection with its text was refused): the whole payload
    /// text as hex.
    public var payloadHex: String?
    public var payloadBytes: Int64
    public var reason: String
    public var detail: String
    public var receivedAt: EpochMillis
    public var esp32Name: String?

    public init(id: String, topic: String, payload: String, payloadHex: String? = nil, payloadBytes: Int64, reason: String,
                detail: String, receivedAt: EpochMillis, esp32Name: String?) {
        self.id = id
        self.topic = topic
        self.payload = payload
        self.payloadHex = payloadHex
        self.payloadBytes = payloadBytes
        self.reason = reason
        self.detail = detail
        self.receivedAt = receivedAt
        self.esp32Name = esp32Name
    }

    /// A rejected message. The id is derived from the journal record (topic, bytes, receive
    /// time), so replaying the journal after a crash never records the same rejection twice.
    /// A message the database refused keeps its whole payload: it was valid data, and `requeue`
    /// stores it again from exactly these bytes.
    public init(topic: String, payload: [UInt8], receivedAt: EpochMillis, rejection: Rejection, esp32Name: String?) {
        let whole = rejection.reason == .storeRefused
        var hasher = SHA256()
        hasher.update(data: Array(topic.utf8))
        hasher.update(data: [0])
        hasher.update(data: payload)
        hasher.update(data: Array(String(receivedAt).utf8))
        var id = hasher.finalize().map { String(format: "%02x", $0) }.joined()
        // A refused message has an id of its own: when `requeue` finds it rejected for another
        // reason (a conflict), that rejection is recorded beside it before it is removed.
        if whole { id += ":store_refused" }
        self.init(id: "r:\(id)", topic: topic,
                  payload: Documents.payloadText(payload, limit: whole ? payload.count : Documents.maxStoredPayload),
                  payloadBytes: Int64(payload.count), reason: rejection.reason.rawValue, detail: rejection.detail,
                  receivedAt: receivedAt, esp32Name: esp32Name)
    }

    /// The rejection without its payload text (the payload as hex): what a validator, a size
    /// limit or a character the database cannot hold refused is not in it.
    public func minimal(refusal code: String, _ message: String) -> RejectedMessageRecord {
        var record = self
        record.payload = ""
        record.payloadHex = payload.utf8.map { Self.hex($0) }.joined()
        record.detail = "\(detail) (the rejection itself was refused, code \(code): \(message))"
        return record
    }

    private static func hex(_ byte: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return String([digits[Int(byte >> 4)], digits[Int(byte & 0xF)]])
    }
}

/// A `rejected_messages` document as `requeue` reads it back: fields another program (or an
/// older worker) may have left out are optional, and such a document is skipped.
public struct StoredRejection: Sendable, Equatable {
    /// nil when the stored id is not text (paging stops there).
    public var id: String?
    public var topic: String?
    public var payload: String?
    public var payloadHex: String?
    public var receivedAt: EpochMillis?

    public init(id: String?, topic: String?, payload: String?, payloadHex: String?, receivedAt: EpochMillis?) {
        self.id = id
        self.topic = topic
        self.payload = payload
        self.payloadHex = payloadHex
        self.receivedAt = receivedAt
    }
}

/// The presence of one device from a batch's telemetry and heartbeats, folded.
public struct PresenceUpdate: Sendable, Equatable {
    public var esp32Name: String
    public var classroom: String
    // Said by a heartbeat (the batch's last one that said it); nil: left as stored.
    public var uptimeS: Double?
    public var rssi: Double?
    public var freeHeap: Double?
    public var bootID: String?
    public var fwVersion: String?
    // Moved forward only; nil: not said by this batch.
    public var lastSeenAt: EpochMillis?
    public var lastTelemetryAt: EpochMillis?
    public var lastHeartbeatAt: EpochMillis?

    public init(esp32Name: String, classroom: String) {
        self.esp32Name = esp32Name
        self.classroom = classroom
    }
}

/// A status message (the device's Last Will or its announcement), not retained.
public struct StatusChange: Sendable, Equatable {
    public var esp32Name: String
    public var classroom: String
    public var online: Bool
    public var at: EpochMillis

    public init(esp32Name: String, classroom: String, online: Bool, at: EpochMillis) {
        self.esp32Name = esp32Name
        self.classroom = classroom
        self.online = online
        self.at = at
    }
}

/// A failure an ingest storage made about a whole request out of an error said of one item:
/// the rejection of a message could not be recorded, so the message must stay in the journal,
/// never be set aside. A refusal becomes persistent; anything else keeps its disposition.
public struct IngestRequestFailure: StorageFailure, Sendable {
    public let context: String
    public let underlying: any Error

    public var storageDisposition: StorageDisposition {
        let inner = AutoVoltService.storageDisposition(of: underlying)
        return inner == .refusedDocument ? .persistent : inner
    }
    public var storageCode: String { (underlying as? any StorageFailure)?.storageCode ?? "-" }
    public var storageMessage: String {
        "\(context): \((underlying as? any StorageFailure)?.storageMessage ?? "\(underlying)")"
    }
    public var description: String { "\(context): \(underlying)" }
}

/// An ingest storage broke its own contract (a result per item, in order): a bug, never grounds
/// to drop anything (persistent).
public struct IngestStorageContractError: StorageFailure, Sendable {
    public let message: String
    public var storageDisposition: StorageDisposition { .persistent }
    public var storageCode: String { "-" }
    public var storageMessage: String { message }
    public var description: String { "ingest storage: \(message)" }
}

/// `error`, made about the request as a whole with `context` (see `MongoError.aboutTheRequest`;
/// a MongoDB error stays a `MongoError`, so what the drain says of it is unchanged).
func aboutTheRequest(_ error: any Error, _ context: String) -> any Error {
    if let error = error as? MongoError { return error.aboutTheRequest(context) }
    return IngestRequestFailure(context: context, underlying: error)
}
