/// Turns one MQTT message into a validated, normalised reading or a `Rejection` (contract
/// section 3). Pure: no I/O, no clock of its own (the receive time is an input).
public struct MessageDecoder: Sendable {
    public static let maxPayloadBytes = 16 * 1024
    public static let maxSwitches = 32

    public var clockPolicy: ClockPolicy

    public init(clockPolicy: ClockPolicy = ClockPolicy()) {
        self.clockPolicy = clockPolicy
    }

    public func decode(topic: String, payload: some Collection<UInt8>, receivedAt: EpochMillis) -> Result<DecodedMessage, Rejection> {
        let parsedTopic: DeviceTopic
        switch DeviceTopic.parse(topic) {
        case .success(let t): parsedTopic = t
        case .failure(let r): return .failure(r)
        }
        guard payload.count <= Self.maxPayloadBytes else {
            return .failure(Rejection(.payloadTooLarge, "payload is \(payload.count) bytes, the limit is \(Self.maxPayloadBytes)"))
        }
        let result: Result<DecodedMessage, Rejection>? = payload.withContiguousStorageIfAvailable { buffer in
            decode(topic: parsedTopic, buffer: buffer, receivedAt: receivedAt)
        }
        return result ?? Array(payload).withUnsafeBufferPointer { decode(topic: parsedTopic, buffer: $0, receivedAt: receivedAt) }
    }

    func decode(topic: DeviceTopic, buffer: UnsafeBufferPointer<UInt8>, receivedAt: EpochMillis) -> Result<DecodedMessage, Rejection> {
        guard String(validating: buffer, as: UTF8.self) != nil else {
            return .failure(Rejection(.invalidUTF8, "payload is not valid UTF-8"))
        }
        if topic.kind == .status, let bare = Self.bareStatus(buffer) {
            return .success(.status(StatusReport(esp32Name: topic.esp32Name, state: bare, time: receivedAt,
                                                 clock: .receiver, receivedAt: receivedAt, heap: nil)))
        }
        let value: JSONValue
        switch JSONValue.parse(buffer: buffer) {
        case .success(let v): value = v
        case .failure(let e):
            if topic.kind == .status {
                // Status may be bare text, so unparseable text is a bad status, not bad JSON.
                let text = String(decoding: UnsafeBufferPointer(rebasing: buffer.prefix(64)), as: UTF8.self)
                return .failure(Rejection(.invalidStatus, "status must be online, offline or JSON with \"status\", got \"\(text)\""))
            }
            return .failure(Rejection(.invalidJSON, "payload is not JSON: \(e)"))
        }
        do throws(Rejection) {
            switch topic.kind {
            case .telemetry: return .success(.telemetry(try telemetry(value, topic: topic, receivedAt: receivedAt)))
            case .status: return .success(.status(try status(value, topic: topic, receivedAt: receivedAt)))
            case .heartbeat: return .success(.heartbeat(try heartbeat(value, topic: topic, receivedAt: receivedAt)))
            }
        } catch {
            return .failure(error)
        }
    }

    // MARK: Telemetry

    private static let knownTelemetryKeys: Set<String> = [
        "esp32_name", "timestamp", "energy_wh_total", "switch_state", "power_w", "boot_id", "seq",
        "sequence_no", "uptime_s", "fw_version",
    ]

    func telemetry(_ value: JSONValue, topic: DeviceTopic, receivedAt: EpochMillis) throws(Rejection) -> TelemetryReading {
        guard let object = value.objectValue else { throw Rejection(.wrongShape, "telemetry must be a JSON object") }
        try checkName(object, topic: topic)

        guard let energyValue = object["energy_wh_total"], energyValue != .null else {
            throw Rejection(.missingEnergy, "energy_wh_total is missing")
        }
        guard let energy = energyValue.numberValue else {
            throw Rejection(.invalidEnergy, "energy_wh_total must be a number, got \(energyValue.jsonText)")
        }
        guard energy.value.isFinite else { throw Rejection(.invalidEnergy, "energy_wh_total is \(energy.literal)") }
        guard energy.value >= 0 else { throw Rejection(.invalidEnergy, "energy_wh_total is negative (\(energy.literal))") }

        guard let switchState = object["switch_state"] else {
            throw Rejection(.invalidSwitchState, "switch_state is missing")
        }
        try Self.validateSwitchState(switchState)

        let time = try timestamp(object["timestamp"], receivedAt: receivedAt)
        let powerW = try optionalNumber(object, "power_w")
        if let powerW, !(powerW >= 0) { throw Rejection(.wrongShape, "power_w must be a non-negative number") }
        var seq = try optionalInteger(object, "seq")
        if seq == nil { seq = try optionalInteger(object, "sequence_no") }
        let uptime = try optionalNumber(object, "uptime_s")
        let bootID = try optionalIdentifier(object, "boot_id")
        let fwVersion = try optionalString(object, "fw_version")

        var extra = JSONObject()
        var payloadClassroom: String?
        for member in object where !Self.knownTelemetryKeys.contains(member.key) {
            if member.key == "classroom", case .string(let c) = member.value { payloadClassroom = c }
            extra.members.append(member)
        }

        return TelemetryReading(
            esp32Name: topic.esp32Name, deviceTime: time.decision.time, receivedAt: receivedAt,
            clock: time.decision.clock, clockNote: time.decision.note, timestampAsSent: time.asSent,
            energyWhTotal: energy.value, switchState: switchState, powerW: powerW, bootID: bootID, seq: seq,
            uptimeS: uptime, fwVersion: fwVersion, payloadClassroom: payloadClassroom, extra: extra,
            eventHash: EventHash.compute(esp32Name: topic.esp32Name, timestampAsSent: time.asSent,
                                         energyWhTotal: energy.value))
    }

    static func validateSwitchState(_ value: JSONValue) throws(Rejection) {
        switch value {
        case .array(let items):
            guard items.count <= maxSwitches else {
                throw Rejection(.invalidSwitchState, "switch_state has \(items.count) entries, at most \(maxSwitches) allowed")
            }
            for (index, item) in items.enumerated() where !isSwitchValue(item) {
                throw Rejection(.invalidSwitchState, "switch_state[\(index)] must be 0 or 1, got \(item.jsonText)")
            }
        case .object(let switches):
            guard switches.count <= maxSwitches else {
                throw Rejection(.invalidSwitchState, "switch_state has \(switches.count) entries, at most \(maxSwitches) allowed")
            }
            var names: Set<String> = []
            for member in switches {
                guard isValidSwitchName(member.key) else {
                    throw Rejection(.invalidSwitchState, "switch_state name \(member.key.debugDescription.prefix(80)) must match [A-Za-z0-9_-]{1,64}")
                }
                guard names.insert(member.key).inserted else {
                    throw Rejection(.invalidSwitchState, "switch_state names \(member.key) twice")
                }
                guard isSwitchValue(member.value) else {
                    throw Rejection(.invalidSwitchState, "switch_state.\(member.key) must be true, false, 0 or 1, got \(member.value.jsonText)")
                }
            }
        default:
            throw Rejection(.invalidSwitchState, "switch_state must be an array of 0/1 or an object of switch name to boolean, got \(value.jsonText.prefix(64))")
        }
    }

    /// Switch names in the object form: letters, digits, `_` and `-`, 1 to 64 of them (the
    /// firmware guide's `relay_16`). They are stored as keys, so this keeps out everything a
    /// database might refuse or read as an operator or a path (`$`, `.`, NUL).
    public static func isValidSwitchName(_ name: String) -> Bool {
        let bytes = name.utf8
        guard (1...64).contains(bytes.count) else { return false }
        return bytes.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "-"): true
            default: false
            }
        }
    }

    static func isSwitchValue(_ value: JSONValue) -> Bool {
        switch value {
        case .bool: true
        case .number(let n): n.value == 0 || n.value == 1
        default: false
        }
    }

    // MARK: Status and heartbeat

    static func bareStatus(_ buffer: UnsafeBufferPointer<UInt8>) -> PresenceState? {
        var start = 0
        var end = buffer.count
        while start < end, buffer[start] == 0x20 || buffer[start] == 0x0A || buffer[start] == 0x0D || buffer[start] == 0x09 { start += 1 }
        while end > start, buffer[end - 1] == 0x20 || buffer[end - 1] == 0x0A || buffer[end - 1] == 0x0D || buffer[end - 1] == 0x09 { end -= 1 }
        guard end - start <= 7 else { return nil }
        let word = String(decoding: UnsafeBufferPointer(rebasing: buffer[start..<end]), as: UTF8.self).lowercased()
        return PresenceState(rawValue: word)
    }

    func status(_ value: JSONValue, topic: DeviceTopic, receivedAt: EpochMillis) throws(Rejection) -> StatusReport {
        if case .string(let s) = value {
            guard let state = PresenceState(rawValue: s.lowercased()) else {
                throw Rejection(.invalidStatus, "status must be online or offline, got \"\(s.prefix(64))\"")
            }
            return StatusReport(esp32Name: topic.esp32Name, state: state, time: receivedAt, clock: .receiver,
                                receivedAt: receivedAt, heap: nil)
        }
        guard let object = value.objectValue else {
            throw Rejection(.invalidStatus, "status must be online, offline or a JSON object with \"status\"")
        }
        try checkName(object, topic: topic)
        guard let raw = object["status"]?.stringValue, let state = PresenceState(rawValue: raw.lowercased()) else {
            throw Rejection(.invalidStatus, "status must be \"online\" or \"offline\", got \(object["status"]?.jsonText ?? "nothing")")
        }
        let time = try timestamp(object["timestamp"], receivedAt: receivedAt)
        return StatusReport(esp32Name: topic.esp32Name, state: state, time: time.decision.time, clock: time.decision.clock,
                            receivedAt: receivedAt, heap: try optionalNumber(object, "heap"))
    }

    func heartbeat(_ value: JSONValue, topic: DeviceTopic, receivedAt: EpochMillis) throws(Rejection) -> HeartbeatReport {
        guard let object = value.objectValue else { throw Rejection(.wrongShape, "heartbeat must be a JSON object") }
        try checkName(object, topic: topic)
        let time = try timestamp(object["timestamp"], receivedAt: receivedAt)
        var uptime = try optionalNumber(object, "uptime_s")
        if uptime == nil, let millis = try optionalNumber(object, "uptime") { uptime = millis / 1000 }
        var freeHeap = try optionalNumber(object, "free_heap")
        if freeHeap == nil { freeHeap = try optionalNumber(object, "heap") }
        return HeartbeatReport(
            esp32Name: topic.esp32Name, time: time.decision.time, clock: time.decision.clock, receivedAt: receivedAt,
            uptimeS: uptime, rssi: try optionalNumber(object, "rssi"),
            freeHeap: freeHeap,
            bootID: try optionalIdentifier(object, "boot_id"), fwVersion: try optionalString(object, "fw_version"))
    }

    // MARK: Fields

    func checkName(_ object: JSONObject, topic: DeviceTopic) throws(Rejection) {
        guard let name = object["esp32_name"], name != .null else { return }
        guard case .string(let s) = name else { throw Rejection(.wrongShape, "esp32_name must be a string") }
        guard s == topic.esp32Name else {
            throw Rejection(.deviceNameMismatch, "payload esp32_name \"\(s.prefix(64))\" differs from topic device \"\(topic.esp32Name)\"")
        }
    }

    struct ResolvedTime {
        let decision: ClockPolicy.Decision
        let asSent: String?
    }

    /// A bad or implausible timestamp never rejects a reading: the energy counter is what matters,
    /// so the receive time stands in and the event says so.
    func timestamp(_ value: JSONValue?, receivedAt: EpochMillis) throws(Rejection) -> ResolvedTime {
        switch value {
        case nil, .null?:
            return ResolvedTime(decision: clockPolicy.resolve(raw: nil, receivedAt: receivedAt), asSent: nil)
        case .number(let n)?:
            return ResolvedTime(decision: clockPolicy.resolve(raw: n.value, receivedAt: receivedAt), asSent: n.literal)
        case .string(let s)?:
            if let number = Double(s) {
                return ResolvedTime(decision: clockPolicy.resolve(raw: number, receivedAt: receivedAt), asSent: s)
            }
            if let millis = ISO8601.parseMillis(s) {
                return ResolvedTime(decision: clockPolicy.resolve(raw: Double(millis), receivedAt: receivedAt), asSent: s)
            }
            return ResolvedTime(decision: .init(time: receivedAt, clock: .receiver, note: "timestamp is not a time"), asSent: s)
        case let other?:
            let text = other.jsonText
            return ResolvedTime(decision: .init(time: receivedAt, clock: .receiver, note: "timestamp is not a time"), asSent: text)
        }
    }

    func optionalNumber(_ object: JSONObject, _ key: String) throws(Rejection) -> Double? {
        switch object[key] {
        case nil, .null?: return nil
        case .number(let n)? where n.value.isFinite: return n.value
        case let other?: throw Rejection(.wrongShape, "\(key) must be a finite number, got \(other.jsonText.prefix(64))")
        }
    }

    func optionalInteger(_ object: JSONObject, _ key: String) throws(Rejection) -> Int64? {
        switch object[key] {
        case nil, .null?: return nil
        case .number(let n)?:
            guard let i = n.int64Value else { throw Rejection(.wrongShape, "\(key) must be an integer, got \(n.literal)") }
            return i
        case let other?: throw Rejection(.wrongShape, "\(key) must be an integer, got \(other.jsonText.prefix(64))")
        }
    }

    func optionalString(_ object: JSONObject, _ key: String) throws(Rejection) -> String? {
        switch object[key] {
        case nil, .null?: return nil
        case .string(let s)?: return s
        case let other?: throw Rejection(.wrongShape, "\(key) must be a string, got \(other.jsonText.prefix(64))")
        }
    }

    /// `boot_id` may be a string or an integer; it is kept as text.
    func optionalIdentifier(_ object: JSONObject, _ key: String) throws(Rejection) -> String? {
        switch object[key] {
        case nil, .null?: return nil
        case .string(let s)?: return s
        case .number(let n)? where n.isIntegerLiteral: return n.literal
        case let other?: throw Rejection(.wrongShape, "\(key) must be a string or an integer, got \(other.jsonText.prefix(64))")
        }
    }
}
