import AutoVoltCore
import Foundation
import Testing

let now: EpochMillis = 1_795_456_431_000 // 2026-11-23T17:53:51Z
let decoder = MessageDecoder()

func decode(_ topic: String, _ payload: String, receivedAt: EpochMillis = now) -> Result<DecodedMessage, Rejection> {
    decoder.decode(topic: topic, payload: Array(payload.utf8), receivedAt: receivedAt)
}

func telemetry(_ payload: String, topic: String = "autovolt/lab-101/telemetry", receivedAt: EpochMillis = now) throws -> TelemetryReading {
    guard case .success(.telemetry(let reading)) = decode(topic, payload, receivedAt: receivedAt) else {
        Issue.record("expected accepted telemetry, got \(decode(topic, payload, receivedAt: receivedAt))")
        throw CancellationError()
    }
    return reading
}

func reason(_ topic: String, _ payload: String) -> RejectReason? {
    if case .failure(let r) = decode(topic, payload) { return r.reason }
    return nil
}

@Suite("telemetry decoding")
struct TelemetryDecodingTests {
    @Test func contractExampleIsAcceptedAndNormalised() throws {
        let r = try telemetry(#"{"esp32_name":"lab-101","timestamp":1795456400,"energy_wh_total":12345.5,"switch_state":[1,0,1,0]}"#)
        #expect(r.esp32Name == "lab-101")
        #expect(r.deviceTime == 1_795_456_400_000)
        #expect(r.clock == .device)
        #expect(r.energyWhTotal == 12345.5)
        #expect(r.switchState == .array([1, 0, 1, 0].map { .number(JSONNumber(value: Double($0), literal: String($0), isIntegerLiteral: true)) }))
        #expect(r.timestampAsSent == "1795456400")
        #expect(r.extra.count == 0)
    }

    @Test func objectSwitchStateFromTheFirmwareGuide() throws {
        let r = try telemetry(#"{"energy_wh_total":1,"switch_state":{"relay_16":true,"relay_17":false}}"#)
        #expect(r.switchState.objectValue?["relay_16"] == .bool(true))
    }

    @Test func optionalFieldsAndExtrasAreKept() throws {
        let r = try telemetry(#"{"energy_wh_total":10,"switch_state":[],"power_w":230.5,"boot_id":"b-1","sequence_no":7,"uptime_s":60,"fw_version":"1.2.3","mac":"AA:BB","classroom":"CSE-999","rssi":-61}"#)
        #expect(r.powerW == 230.5)
        #expect(r.bootID == "b-1")
        #expect(r.seq == 7)
        #expect(r.uptimeS == 60)
        #expect(r.fwVersion == "1.2.3")
        #expect(r.payloadClassroom == "CSE-999")
        #expect(r.extra.members.map(\.key) == ["mac", "classroom", "rssi"])
    }

    @Test func integerBootIDIsKeptAsText() throws {
        #expect(try telemetry(#"{"energy_wh_total":1,"switch_state":[],"boot_id":4711}"#).bootID == "4711")
    }

    @Test func nameMayBeLeftOutButMustMatchWhenPresent() throws {
        _ = try telemetry(#"{"energy_wh_total":1,"switch_state":[1]}"#)
        #expect(reason("autovolt/lab-101/telemetry", #"{"esp32_name":"lab-102","energy_wh_total":1,"switch_state":[1]}"#) == .deviceNameMismatch)
    }

    @Test(arguments: [
        (#"{"switch_state":[1]}"#, RejectReason.missingEnergy),
        (#"{"energy_wh_total":null,"switch_state":[1]}"#, .missingEnergy),
        (#"{"energy_wh_total":-0.5,"switch_state":[1]}"#, .invalidEnergy),
        (#"{"energy_wh_total":NaN,"switch_state":[1]}"#, .invalidEnergy),
        (#"{"energy_wh_total":Infinity,"switch_state":[1]}"#, .invalidEnergy),
        (#"{"energy_wh_total":-Infinity,"switch_state":[1]}"#, .invalidEnergy),
        (#"{"energy_wh_total":1e999,"switch_state":[1]}"#, .invalidEnergy),
        (#"{"energy_wh_total":"12","switch_state":[1]}"#, .invalidEnergy),
        (#"{"energy_wh_total":true,"switch_state":[1]}"#, .invalidEnergy),
        (#"{"energy_wh_total":1}"#, .invalidSwitchState),
        (#"{"energy_wh_total":1,"switch_state":"1010"}"#, .invalidSwitchState),
        (#"{"energy_wh_total":1,"switch_state":[1,2]}"#, .invalidSwitchState),
        (#"{"energy_wh_total":1,"switch_state":{"a":"on"}}"#, .invalidSwitchState),
        (#"{"energy_wh_total":1,"switch_state":null}"#, .invalidSwitchState),
        (#"[1,2,3]"#, .wrongShape),
        (#""hello""#, .wrongShape),
        (#"{"energy_wh_total":1,"switch_state":[1],"power_w":"12"}"#, .wrongShape),
        (#"{"energy_wh_total":1,"switch_state":[1],"seq":1.5}"#, .wrongShape),
        (#"{"energy_wh_total":1,"switch_state":[1],"uptime_s":true}"#, .wrongShape),
        (#"{"energy_wh_total":1,"switch_state":[1],"boot_id":{}}"#, .wrongShape),
        (#"{"energy_wh_total":1,"switch_state":[1],"esp32_name":5}"#, .wrongShape),
        (#"{"energy_wh_total":1,"switch_state":[1],}"#, .invalidJSON),
        (#"{'energy_wh_total':1}"#, .invalidJSON),
        (#"{"energy_wh_total":1,"energy_wh_total":2,"switch_state":[1]}"#, .invalidJSON),
        ("", .invalidJSON),
    ])
    func rejectReasons(payload: String, expected: RejectReason) {
        #expect(reason("autovolt/lab-101/telemetry", payload) == expected, "\(payload)")
    }

    @Test func switchStateLimitIs32Entries() {
        let ok = "[" + Array(repeating: "1", count: 32).joined(separator: ",") + "]"
        let tooMany = "[" + Array(repeating: "0", count: 33).joined(separator: ",") + "]"
        #expect(reason("autovolt/a/telemetry", #"{"energy_wh_total":1,"switch_state":\#(ok)}"#) == nil)
        #expect(reason("autovolt/a/telemetry", #"{"energy_wh_total":1,"switch_state":\#(tooMany)}"#) == .invalidSwitchState)
    }

    @Test func payloadLimitIs16KiB() {
        let base = #"{"energy_wh_total":1,"switch_state":[1],"pad":""#
        let fill = MessageDecoder.maxPayloadBytes - base.utf8.count - 2
        let exact = base + String(repeating: "x", count: fill) + "\"}"
        #expect(exact.utf8.count == MessageDecoder.maxPayloadBytes)
        #expect(reason("autovolt/a/telemetry", exact) == nil)
        #expect(reason("autovolt/a/telemetry", exact + " ") == .payloadTooLarge)
    }

    @Test func invalidUTF8IsNamed() {
        var bytes = Array(#"{"energy_wh_total":1,"switch_state":[1],"x":""#.utf8)
        bytes += [0xFF, 0xFE]
        bytes += Array(#""}"#.utf8)
        guard case .failure(let r) = decoder.decode(topic: "autovolt/a/telemetry", payload: bytes, receivedAt: now) else {
            Issue.record("accepted invalid UTF-8")
            return
        }
        #expect(r.reason == .invalidUTF8)
    }

    @Test(arguments: [
        ("autovolt/lab-101/telemetry/extra", RejectReason.invalidTopic),
        ("autovolt/lab-101/power", .invalidTopic),
        ("other/lab-101/telemetry", .invalidTopic),
        ("autovolt//telemetry", .invalidDeviceName),
        ("autovolt/lab 101/telemetry", .invalidDeviceName),
        ("autovolt/lab#101/telemetry", .invalidDeviceName),
        ("autovolt/\(String(repeating: "a", count: 65))/telemetry", .invalidDeviceName),
    ])
    func topicRules(topic: String, expected: RejectReason) {
        #expect(reason(topic, #"{"energy_wh_total":1,"switch_state":[1]}"#) == expected)
    }

    @Test func sixtyFourCharacterNameIsValid() {
        #expect(reason("autovolt/\(String(repeating: "a", count: 64))/telemetry", #"{"energy_wh_total":1,"switch_state":[1]}"#) == nil)
    }
}

@Suite("timestamps")
struct TimestampTests {
    @Test func secondsAndMillisecondsAreTheSameInstant() throws {
        let s = try telemetry(#"{"timestamp":1795456400,"energy_wh_total":1,"switch_state":[]}"#)
        let ms = try telemetry(#"{"timestamp":1795456400250,"energy_wh_total":1,"switch_state":[]}"#)
        #expect(s.deviceTime == 1_795_456_400_000)
        #expect(ms.deviceTime == 1_795_456_400_250)
        #expect(ms.clock == .device)
    }

    @Test func missingTimestampMeansReceiveTime() throws {
        let r = try telemetry(#"{"energy_wh_total":1,"switch_state":[]}"#)
        #expect(r.deviceTime == now)
        #expect(r.clock == .receiver)
        #expect(r.timestampAsSent == nil)
    }

    @Test func millisSinceBootIsCaughtByTheLagWindow() throws {
        // 20 days of millis() = 1,728,000,000: as epoch seconds that is 2024-10-04, plausible
        // but more than 7 days behind the receive time.
        let r = try telemetry(#"{"timestamp":1728000000,"energy_wh_total":1,"switch_state":[]}"#)
        #expect(r.clock == .receiver)
        #expect(r.deviceTime == now)
        #expect(r.timestampAsSent == "1728000000")
    }

    @Test func clockWindowEdges() {
        let policy = ClockPolicy()
        let lag = ClockPolicy.defaultMaxLagMillis
        #expect(policy.resolve(raw: Double(now - lag), receivedAt: now).clock == .device)
        #expect(policy.resolve(raw: Double(now - lag - 1000), receivedAt: now).clock == .receiver)
        #expect(policy.resolve(raw: Double(now + 300_000), receivedAt: now).clock == .device)
        #expect(policy.resolve(raw: Double(now + 301_000), receivedAt: now).clock == .receiver)
        #expect(policy.resolve(raw: 1_500_000_000, receivedAt: 1_500_000_100_000).clock == .receiver) // before 2020
        #expect(policy.resolve(raw: 0, receivedAt: now).clock == .receiver)
        #expect(policy.resolve(raw: -5, receivedAt: now).clock == .receiver)
    }

    @Test func configurableLag() {
        let policy = ClockPolicy(maxLagMillis: 3_600_000)
        #expect(policy.resolve(raw: Double(now - 3_000_000), receivedAt: now).clock == .device)
        #expect(policy.resolve(raw: Double(now - 4_000_000), receivedAt: now).clock == .receiver)
    }

    @Test func stringTimestampsAreReadNotRejected() throws {
        let numeric = try telemetry(#"{"timestamp":"1795456400","energy_wh_total":1,"switch_state":[]}"#)
        #expect(numeric.deviceTime == 1_795_456_400_000)
        let iso = try telemetry(#"{"timestamp":"2026-11-23T17:53:20Z","energy_wh_total":1,"switch_state":[]}"#)
        #expect(iso.deviceTime == 1_795_456_400_000)
        #expect(iso.clock == .device)
        let garbage = try telemetry(#"{"timestamp":"yesterday","energy_wh_total":1,"switch_state":[]}"#)
        #expect(garbage.clock == .receiver)
    }
}

@Suite("event hash")
struct EventHashTests {
    @Test func documentedFormat() {
        // printf 'lab-101\n1730822400\n12345.5' | sha256sum
        #expect(EventHash.compute(esp32Name: "lab-101", timestampAsSent: "1730822400", energyWhTotal: 12345.5)
            == "88187ec15cdb8b7d340c7621020f0948df382f4acfd9209021cc3319bf457cd6")
        let a = EventHash.compute(esp32Name: "lab-101", timestampAsSent: "1730822400", energyWhTotal: 12345.5)
        #expect(a.count == 64)
        #expect(a.allSatisfy { "0123456789abcdef".contains($0) })
    }

    @Test func sameMessageSameHashAndSeqIsNotPartOfIt() throws {
        let a = try telemetry(#"{"timestamp":1795456400,"energy_wh_total":100,"switch_state":[1],"seq":1}"#)
        let b = try telemetry(#"{"timestamp":1795456400,"energy_wh_total":100.0,"switch_state":[0],"seq":9}"#, receivedAt: now + 5000)
        #expect(a.eventHash == b.eventHash)
    }

    @Test func anyDifferenceInNameTimeOrEnergyChangesIt() throws {
        let base = try telemetry(#"{"timestamp":1795456400,"energy_wh_total":100,"switch_state":[]}"#).eventHash
        #expect(try telemetry(#"{"timestamp":1795456401,"energy_wh_total":100,"switch_state":[]}"#).eventHash != base)
        #expect(try telemetry(#"{"timestamp":1795456400,"energy_wh_total":100.5,"switch_state":[]}"#).eventHash != base)
        #expect(try telemetry(#"{"timestamp":1795456400,"energy_wh_total":100,"switch_state":[]}"#, topic: "autovolt/lab-102/telemetry").eventHash != base)
    }
}

@Suite("status and heartbeat")
struct PresenceDecodingTests {
    @Test(arguments: ["online", "offline", " online\n", "ONLINE", #""online""#, #"{"status":"offline","timestamp":1795456400,"heap":1234}"#])
    func statusForms(payload: String) {
        guard case .success(.status(let s)) = decode("autovolt/lab-101/status", payload) else {
            Issue.record("status \(payload) not accepted")
            return
        }
        #expect(s.esp32Name == "lab-101")
    }

    @Test(arguments: ["maybe", #"{"status":"sleeping"}"#, #"{"state":"online"}"#, "42", #"{"status":true}"#])
    func invalidStatus(payload: String) {
        #expect(reason("autovolt/lab-101/status", payload) == .invalidStatus)
    }

    @Test func statusNameMismatch() {
        #expect(reason("autovolt/lab-101/status", #"{"status":"online","esp32_name":"x"}"#) == .deviceNameMismatch)
    }

    @Test func heartbeatUptimeInMillisecondsAndHeapAlias() {
        guard case .success(.heartbeat(let h)) = decode("autovolt/lab-101/heartbeat", #"{"uptime":90500,"heap":20000,"rssi":-70,"boot_id":"x"}"#) else {
            Issue.record("heartbeat not accepted")
            return
        }
        #expect(h.uptimeS == 90.5)
        #expect(h.freeHeap == 20000)
        #expect(h.rssi == -70)
        #expect(h.bootID == "x")
    }

    @Test func heartbeatMayBeEmptyButMustBeAnObject() {
        #expect(reason("autovolt/lab-101/heartbeat", "{}") == nil)
        #expect(reason("autovolt/lab-101/heartbeat", "[]") == .wrongShape)
        #expect(reason("autovolt/lab-101/heartbeat", #"{"uptime_s":"long"}"#) == .wrongShape)
    }
}

@Suite("switch names and unknown keys")
struct SwitchNameTests {
    @Test func switchNamesFollowOneRule() throws {
        _ = try telemetry(#"{"energy_wh_total":5,"switch_state":{"relay_16":true,"Fan-2":0}}"#)
        for bad in [#""$where""#, #""a.b""#, #""\u0000""#, #""""#, #""lights front""#, "\"\(String(repeating: "x", count: 65))\""] {
            #expect(reason("autovolt/lab-101/telemetry", #"{"energy_wh_total":5,"switch_state":{"# + bad + #":true}}"#) == .invalidSwitchState, "\(bad)")
        }
    }

    @Test func unknownKeysOfAnyKindLeaveTheReadingValid() throws {
        let r = try telemetry(#"{"energy_wh_total":5,"switch_state":[1],"extra":{"\u0000":2,"$where":"x","a.b":1},"$top":1}"#)
        #expect(r.energyWhTotal == 5)
        #expect(r.extra.members.map(\.key) == ["extra", "$top"])
    }
}
