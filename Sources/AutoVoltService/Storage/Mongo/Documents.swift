import AutoVoltCore
import AutoVoltMongo
import Crypto
import Foundation

/// Collection names (contract section 4).
public enum Collections {
    public static let telemetryEvents = "telemetry_events"
    public static let ledgers = "device_consumption_ledgers"
    public static let dailyAggregates = "daily_aggregates"
    public static let monthlyAggregates = "monthly_aggregates"
    public static let costVersions = "cost_versions"
    public static let deviceStatus = "device_status"
    public static let rejectedMessages = "rejected_messages"
    public static let reconciliationReports = "reconciliation_reports"
    public static let reviewTickets = "review_tickets"
}

extension BSON {
    /// A BSON date from epoch milliseconds (the encoder rounds to the microsecond before it
    /// truncates, so whole milliseconds survive the trip through `Date`).
    static func millis(_ value: EpochMillis) -> BSON {
        .datetime(Date(timeIntervalSince1970: Double(value) / 1000))
    }

    /// JSON as received, as BSON: integer literals that fit stay integers, others are doubles.
    init(json: JSONValue) {
        switch json {
        case .null: self = .null
        case .bool(let b): self = .bool(b)
        case .number(let n):
            if n.isIntegerLiteral, let i = n.int64Value { self = .int64(i) } else { self = .double(n.value) }
        case .string(let s): self = .string(s)
        case .array(let a): self = .array(a.map(BSON.init(json:)))
        case .object(let o): self = .document(BSONDocument(o.members.map { ($0.key, BSON(json: $0.value)) }))
        }
    }
}

enum Documents {
    /// `_id` of a telemetry event. With a trusted device clock it is the reading's identity
    /// (device and device time), so a second, different reading for the same instant collides and
    /// is recognised as a conflict; with a receiver clock there is no such identity and the event
    /// hash is used. `event_hash` has its own unique index either way.
    static func eventID(_ reading: TelemetryReading) -> String {
        reading.clock == .device ? "\(reading.esp32Name)@\(reading.deviceTime)" : "h:\(reading.eventHash)"
    }

    static func telemetryEvent(_ r: TelemetryReading, classroom: String) -> BSONDocument {
        var doc: BSONDocument = [
            "_id": .string(eventID(r)),
            "event_hash": .string(r.eventHash),
            "esp32_name": .string(r.esp32Name),
            "classroom": .string(classroom),
            "device_ts": .millis(r.deviceTime),
            "received_at": .millis(r.receivedAt),
            "energy_wh_total": .double(r.energyWhTotal),
            "switch_state": BSON(json: r.switchState),
            "clock": .string(r.clock.rawValue),
            "timestamp_sent": r.timestampAsSent.map { .string($0) } ?? .null,
            "processed": .bool(false),
        ]
        if let note = r.clockNote { doc["clock_note"] = .string(note) }
        if let v = r.powerW { doc["power_w"] = .double(v) }
        if let v = r.bootID { doc["boot_id"] = .string(v) }
        if let v = r.seq { doc["seq"] = .int64(v) }
        if let v = r.uptimeS { doc["uptime_s"] = .double(v) }
        if let v = r.fwVersion { doc["fw_version"] = .string(v) }
        // Unknown keys are untrusted: stored in a form every MongoDB accepts (StoredKeys).
        doc["extra"] = .document(BSONDocument(StoredKeys.storable(r.extra).members.map { ($0.key, BSON(json: $0.value)) }))
        return doc
    }

    static let maxStoredPayload = 4096

    /// A rejected message (`RejectedMessageRecord`, which derives its `_id` from the journal
    /// record) as a document.
    static func rejectedMessage(topic: String, payload: [UInt8], receivedAt: EpochMillis, rejection: Rejection,
                                esp32Name: String?) -> BSONDocument {
        MongoIngestStorage.document(RejectedMessageRecord(topic: topic, payload: payload, receivedAt: receivedAt,
                                                          rejection: rejection, esp32Name: esp32Name))
    }

    /// At most `limit` bytes of text (4 KiB). Invalid UTF-8 is kept as escaped text (`\xFF`) so the bytes the
    /// device really sent can be read back.
    static func payloadText(_ payload: [UInt8], limit: Int = maxStoredPayload) -> String {
        let prefix = payload.prefix(limit)
        if let text = String(validating: prefix, as: UTF8.self) { return text }
        // Cut inside a multi-byte character at the 4 KiB boundary is not "invalid UTF-8".
        if payload.count > limit, String(validating: payload, as: UTF8.self) != nil {
            return String(decoding: prefix, as: UTF8.self)
        }
        var out = ""
        var index = prefix.startIndex
        while index < prefix.endIndex, out.utf8.count < limit {
            let byte = prefix[index]
            let length = byte < 0x80 ? 1 : byte >> 5 == 0x6 ? 2 : byte >> 4 == 0xE ? 3 : byte >> 3 == 0x1E ? 4 : 0
            if length > 0, index + length <= prefix.endIndex,
               let scalarText = String(validating: prefix[index..<(index + length)], as: UTF8.self) {
                out += scalarText == "\\" ? "\\\\" : scalarText
                index += length
            } else {
                out += String(format: "\\x%02X", byte)
                index += 1
            }
        }
        return out
    }
}
