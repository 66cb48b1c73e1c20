import AutoVoltCore
import Testing

@Suite("capture lines for replay")
struct CaptureLineTests {
    func parse(_ bytes: [UInt8]) -> Result<CaptureLine?, CaptureLineError> { CaptureLine.parse(bytes, now: now) }
    func parse(_ text: String) -> Result<CaptureLine?, CaptureLineError> { parse(Array(text.utf8)) }

    @Test func topicAndPayloadWithoutTimeUseNow() throws {
        let line = try #require(try parse(#"autovolt/lab-101/telemetry {"energy_wh_total":1, "x":2}"#).get())
        #expect(line == CaptureLine(topic: "autovolt/lab-101/telemetry", payload: Array(#"{"energy_wh_total":1, "x":2}"#.utf8), receivedAt: now))
    }

    @Test func timeInUnixSecondsMillisecondsOrISO8601() throws {
        #expect(try parse("1795456431.25 autovolt/a/status online").get()?.receivedAt == 1_795_456_431_250)
        #expect(try parse("1795456431250 autovolt/a/status online").get()?.receivedAt == 1_795_456_431_250)
        #expect(try parse("2026-11-01T10:00:00+0530 autovolt/a/status online").get()?.receivedAt
                == ISO8601.parseMillis("2026-11-01T10:00:00+05:30"))
    }

    @Test func blankCommentAndCarriageReturn() throws {
        #expect(try parse("").get() == nil)
        #expect(try parse("  \t").get() == nil)
        #expect(try parse("# a comment").get() == nil)
        #expect(try parse("autovolt/a/status online\r").get()?.payload == Array("online".utf8))
        #expect(try parse("autovolt/a/status").get() == CaptureLine(topic: "autovolt/a/status", payload: [], receivedAt: now))
    }

    @Test func linesInNeitherFormFail() {
        #expect(throws: CaptureLineError.self) { try parse("hello world").get() }
        #expect(throws: CaptureLineError.self) { try parse("1795456431 ").get() }
        #expect(throws: CaptureLineError.self) { try parse("-5 autovolt/a/status online").get() }
        #expect(throws: CaptureLineError.self) { try parse("inf autovolt/a/status online").get() }
    }

    @Test func payloadBytesAreKeptExactlyAsCaptured() throws {
        let bytes = Array("autovolt/a/telemetry {\"x\":\"".utf8) + [0xFF, 0x20, 0xC3] + Array("\"}".utf8)
        let line = try #require(try parse(bytes).get())
        #expect(line.payload == Array(bytes[21...]))
    }

    /// Regression: the payload was found by searching the whole line for the topic's bytes, so a
    /// topic that also occurs inside the time ("1795456431 1 x": topic "1") cut the payload from
    /// inside the time ("795456431 1 x").
    @Test func aTopicThatAlsoOccursInTheTimeKeepsItsPayload() throws {
        let line = try #require(try parse("1795456431 1 x").get())
        #expect(line.topic == "1")
        #expect(line.payload == Array("x".utf8))
    }
}
