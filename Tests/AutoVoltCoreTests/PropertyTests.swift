import AutoVoltCore
import PropertyBased
import Testing

@Suite("properties")
struct PropertyTests {
    /// Whatever bytes arrive, the decoder answers (accept or a named reason); it never traps.
    @Test func arbitraryBytesNeverCrashTheDecoder() async {
        await propertyCheck(count: 500, input: Gen<UInt8>.value(in: 0...255).array(of: 0...300)) { bytes in
            _ = decoder.decode(topic: "autovolt/fuzz/telemetry", payload: bytes, receivedAt: now)
            _ = decoder.decode(topic: "autovolt/fuzz/status", payload: bytes, receivedAt: now)
            _ = decoder.decode(topic: "autovolt/fuzz/heartbeat", payload: bytes, receivedAt: now)
        }
    }

    /// Mutations of a valid message (JSON-ish bytes cut or spliced) also never crash.
    @Test func mutatedPayloadsNeverCrash() async {
        let base = Array(#"{"esp32_name":"lab-101","timestamp":1795456400,"energy_wh_total":12345.5,"switch_state":{"relay_16":true},"x":"\u00e9\ud83d\ude00"}"#.utf8)
        await propertyCheck(count: 500, input: Gen.int(in: 0...(base.count - 1)), Gen<UInt8>.value(in: 0...255)) { index, byte in
            var mutated = base
            mutated[index] = byte
            _ = decoder.decode(topic: "autovolt/lab-101/telemetry", payload: mutated, receivedAt: now)
            _ = decoder.decode(topic: "autovolt/lab-101/telemetry", payload: Array(base[..<index]), receivedAt: now)
        }
    }

    /// A resolved time is either the device's (inside the trusted window) or the receive time.
    @Test func clockDecisionIsAlwaysInsideTheWindowOrTheReceiveTime() async {
        let policy = ClockPolicy()
        await propertyCheck(count: 1000, input: Gen.double(in: -1e13...1e13), Gen.int64(in: 1_600_000_000_000...1_900_000_000_000)) { raw, received in
            let decision = policy.resolve(raw: raw, receivedAt: received)
            switch decision.clock {
            case .receiver:
                #expect(decision.time == received)
            case .device:
                #expect(decision.time >= received - policy.maxLagMillis)
                #expect(decision.time <= received + policy.maxLeadMillis)
                #expect(decision.time >= ClockPolicy.epoch2020Millis)
            }
        }
    }

    /// Seconds and the same instant in milliseconds resolve alike.
    @Test func secondsAndMillisecondsAgree() async {
        let policy = ClockPolicy()
        await propertyCheck(count: 500, input: Gen.int64(in: 1_600_000_000...1_900_000_000)) { seconds in
            let received = seconds * 1000 + 1000
            let a = policy.resolve(raw: Double(seconds), receivedAt: received)
            let b = policy.resolve(raw: Double(seconds * 1000), receivedAt: received)
            #expect(a == b)
        }
    }

    /// The counter survives decoding exactly, and the hash depends on it.
    @Test func energyRoundTripsExactly() async {
        await propertyCheck(count: 500, input: Gen.double(in: 0...1e12)) { energy in
            let payload = #"{"energy_wh_total":\#(energy),"switch_state":[1]}"#
            guard case .success(.telemetry(let r)) = decode("autovolt/p/telemetry", payload) else {
                Issue.record("rejected \(payload)")
                return
            }
            #expect(r.energyWhTotal == energy)
            #expect(r.eventHash == EventHash.compute(esp32Name: "p", timestampAsSent: nil, energyWhTotal: energy))
        }
    }

    /// ISO 8601 formatting and parsing are inverse, across leap years and centuries.
    @Test func iso8601RoundTrip() async {
        await propertyCheck(count: 1000, input: Gen.int64(in: 0...4_102_444_800_000)) { millis in
            #expect(ISO8601.parseMillis(ISO8601.format(millis)) == millis)
            // With an offset it is the same instant.
            for offset in [19_800, -12_600, 3600, 0, 19_270] {
                #expect(ISO8601.parseMillis(ISO8601.format(millis, offsetSeconds: offset)) == millis)
            }
        }
    }

    @Test func civilDateRoundTrip() async {
        await propertyCheck(count: 1000, input: Gen.int(in: -800_000...800_000)) { days in
            #expect(CivilDate(daysSinceEpoch: days).daysSinceEpoch == days)
        }
    }
}

@Suite("JSON reader")
struct JSONTests {
    @Test func literalsAreKept() throws {
        let v = try JSONValue.parse(#"{"a":1.50,"b":-0,"c":1e3,"d":"x\u00e9\n","e":[true,false,null]}"#)
        let o = try #require(v.objectValue)
        #expect(o["a"]?.numberValue?.literal == "1.50")
        #expect(o["a"]?.numberValue?.value == 1.5)
        #expect(o["c"]?.numberValue?.isIntegerLiteral == false)
        #expect(o["d"]?.stringValue == "x\u{e9}\n")
        #expect(o.members.map(\.key) == ["a", "b", "c", "d", "e"])
    }

    @Test func surrogatePairs() throws {
        #expect(try JSONValue.parse(#""\ud83d\ude00""#).stringValue == "😀")
        #expect(throws: JSONParseError.self) { try JSONValue.parse(#""\ud83d""#) }
    }

    @Test(arguments: ["", "{", "[1,]", "01", "1.", "-", "tru", "\"a", "{\"a\" 1}", "[1] 2", "\"\u{01}\""])
    func malformed(text: String) {
        #expect(throws: JSONParseError.self) { try JSONValue.parse(text) }
    }

    @Test func deepNestingIsRefused() {
        let deep = String(repeating: "[", count: 100) + String(repeating: "]", count: 100)
        #expect(throws: JSONParseError.self) { try JSONValue.parse(deep) }
    }

    @Test func compactTextRoundTrips() throws {
        let text = #"{"a":[1,2.5,"x\"y"],"b":{"c":null,"d":true}}"#
        #expect(try JSONValue.parse(text).jsonText == text)
    }
}
