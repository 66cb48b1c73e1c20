/// Milliseconds since the Unix epoch, UTC. The core keeps time as plain integers so that it is
/// exact, cheap and independent of Foundation's Date.
public typealias EpochMillis = Int64

public enum MessageKind: String, Sendable, CaseIterable {
    case telemetry, status, heartbeat
}

/// Which clock a stored time came from.
public enum ClockSource: String, Sendable {
    /// The device's own timestamp, within the trusted window.
    case device
    /// The worker's receive time: the device sent none, or one outside the trusted window.
    case receiver
}

/// Why a message was rejected. The raw values are the stable codes stored in
/// `rejected_messages.reason` and documented in firmware-contract/README.md.
public enum RejectReason: String, Sendable, CaseIterable {
    case payloadTooLarge = "payload_too_large"
    case invalidUTF8 = "invalid_utf8"
    case invalidJSON = "invalid_json"
    case wrongShape = "wrong_shape"
    case invalidTopic = "invalid_topic"
    case invalidDeviceName = "invalid_device_name"
    case deviceNameMismatch = "device_name_mismatch"
    case missingEnergy = "missing_energy"
    case invalidEnergy = "invalid_energy"
    case invalidSwitchState = "invalid_switch_state"
    case invalidStatus = "invalid_status"
    /// Same device and device time as a stored reading, but another counter value.
    case conflict = "conflict"
    /// A valid message the database refused for good (not an outage): kept whole, with the
    /// server's code and message, until `autovolt-worker requeue` tries it again.
    case storeRefused = "store_refused"
}

public struct Rejection: Error, Sendable, Equatable, CustomStringConvertible {
    public let reason: RejectReason
    public let detail: String

    public init(_ reason: RejectReason, _ detail: String) {
        self.reason = reason
        self.detail = detail
    }

    public var description: String { "\(reason.rawValue): \(detail)" }
}

/// A validated, normalised telemetry reading: what becomes one `telemetry_events` document.
public struct TelemetryReading: Sendable, Equatable {
    public var esp32Name: String
    /// The time the reading stands for (device clock when trusted, else receive time).
    public var deviceTime: EpochMillis
    public var receivedAt: EpochMillis
    public var clock: ClockSource
    /// Why the device clock was not used, when `clock == .receiver`.
    public var clockNote: String?
    /// The timestamp exactly as the device sent it (nil when absent); part of `eventHash`.
    public var timestampAsSent: String?
    public var energyWhTotal: Double
    /// Stored as received: an array of 0/1 or an object of switch name to bool or 0/1.
    public var switchState: JSONValue
    public var powerW: Double?
    public var bootID: String?
    public var seq: Int64?
    public var uptimeS: Double?
    public var fwVersion: String?
    /// The payload's own `classroom`, if any (the registry wins; a difference is logged).
    public var payloadClassroom: String?
    /// Every other key, kept rather than dropped.
    public var extra: JSONObject
    public var eventHash: String
}

public enum PresenceState: String, Sendable {
    case online, offline
}

public struct StatusReport: Sendable, Equatable {
    public var esp32Name: String
    public var state: PresenceState
    public var time: EpochMillis
    public var clock: ClockSource
    public var receivedAt: EpochMillis
    public var heap: Double?
}

public struct HeartbeatReport: Sendable, Equatable {
    public var esp32Name: String
    public var time: EpochMillis
    public var clock: ClockSource
    public var receivedAt: EpochMillis
    public var uptimeS: Double?
    public var rssi: Double?
    public var freeHeap: Double?
    public var bootID: String?
    public var fwVersion: String?
}

public enum DecodedMessage: Sendable, Equatable {
    case telemetry(TelemetryReading)
    case status(StatusReport)
    case heartbeat(HeartbeatReport)

    public var esp32Name: String {
        switch self {
        case .telemetry(let t): t.esp32Name
        case .status(let s): s.esp32Name
        case .heartbeat(let h): h.esp32Name
        }
    }
}
