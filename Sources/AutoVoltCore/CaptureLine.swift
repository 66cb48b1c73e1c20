/// One line of a `mosquitto_sub` capture, as `autovolt-worker replay` reads it: `TOPIC PAYLOAD`
/// (`mosquitto_sub -v`) or `TIME TOPIC PAYLOAD` (`-F '%I %t %p'` or `'%U %t %p'`). TIME is
/// ISO 8601 or unix seconds (fractions allowed) and stands for the receive time; without it the
/// receive time is `now`. Pure: the caller splits the input at newlines.
public struct CaptureLine: Sendable, Equatable {
    public var topic: String
    /// The payload's bytes exactly as captured (invalid UTF-8 included), without a trailing CR.
    public var payload: [UInt8]
    public var receivedAt: EpochMillis

    public init(topic: String, payload: [UInt8], receivedAt: EpochMillis) {
        self.topic = topic
        self.payload = payload
        self.receivedAt = receivedAt
    }

    /// `.success(nil)` for a blank line or a `#` comment; `.failure` with a sentence for a line
    /// in neither form.
    public static func parse(_ bytes: some Collection<UInt8>, now: EpochMillis) -> Result<CaptureLine?, CaptureLineError> {
        var line = Array(bytes)[...]
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        let text = String(decoding: line, as: UTF8.self)
        if text.allSatisfy(\.isWhitespace) || line.first == UInt8(ascii: "#") { return .success(nil) }
        // Split at the first space byte. ASCII bytes survive UTF-8 repair, so this is the split
        // of the decoded text too, and the payload keeps its bytes.
        func split(_ s: ArraySlice<UInt8>) -> (ArraySlice<UInt8>, ArraySlice<UInt8>) {
            guard let space = s.firstIndex(of: UInt8(ascii: " ")) else { return (s, s[s.endIndex...]) }
            return (s[..<space], s[(space + 1)...])
        }
        var (first, rest) = split(line)
        var receivedAt = now
        let firstText = String(decoding: first, as: UTF8.self)
        if !firstText.hasPrefix(DeviceTopic.prefix + "/") {
            if let seconds = Double(firstText), seconds.isFinite, seconds > 0, seconds < 1e15 {
                receivedAt = seconds > ClockPolicy.millisecondsThreshold ? Int64(seconds) : Int64((seconds * 1000).rounded())
            } else if let millis = ISO8601.parseMillis(firstText) {
                receivedAt = millis
            } else {
                return .failure(CaptureLineError("expected TOPIC PAYLOAD or TIME TOPIC PAYLOAD, got \"\(text.prefix(60))\""))
            }
            (first, rest) = split(rest)
            guard !first.isEmpty else { return .failure(CaptureLineError("no topic after the time")) }
        }
        return .success(CaptureLine(topic: String(decoding: first, as: UTF8.self), payload: Array(rest), receivedAt: receivedAt))
    }
}

public struct CaptureLineError: Error, Sendable, Equatable, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}
