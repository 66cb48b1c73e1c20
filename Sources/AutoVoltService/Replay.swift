import AutoVoltCore
import AutoVoltMongo
import Foundation
import Logging

/// `autovolt-worker replay FILE`: captured `mosquitto_sub` lines through the same decode and
/// store pipeline as live traffic. Duplicates collapse through `event_hash` like any redelivery.
public enum Replay {
    public struct LineError: Error, CustomStringConvertible {
        public let line: Int
        public let message: String
        public var description: String { "line \(line): \(message)" }
    }

    /// Parses `TOPIC PAYLOAD` (`mosquitto_sub -v`) or `TIME TOPIC PAYLOAD` (`-F '%I %t %p'` or
    /// `'%U %t %p'`). TIME is ISO 8601 or unix seconds (fractions allowed) and stands for the
    /// receive time; without it the receive time is now. Blank lines and `#` comments are skipped.
    public static func parse(line text: Substring, number: Int, now: EpochMillis) -> Result<InboundMessage?, LineError> {
        var line = text
        if line.hasSuffix("\r") { line = line.dropLast() }
        if line.allSatisfy(\.isWhitespace) || line.hasPrefix("#") { return .success(nil) }
        func split(_ s: Substring) -> (Substring, Substring) {
            guard let space = s.firstIndex(of: " ") else { return (s, "") }
            return (s[..<space], s[s.index(after: space)...])
        }
        var (first, rest) = split(line)
        var receivedAt = now
        if !first.hasPrefix(DeviceTopic.prefix + "/") {
            if let seconds = Double(first), seconds.isFinite, seconds > 0, seconds < 1e15 {
                receivedAt = seconds > ClockPolicy.millisecondsThreshold ? Int64(seconds) : Int64((seconds * 1000).rounded())
            } else if let millis = ISO8601.parseMillis(String(first)) {
                receivedAt = millis
            } else {
                return .failure(LineError(line: number, message: "expected TOPIC PAYLOAD or TIME TOPIC PAYLOAD, got \"\(line.prefix(60))\""))
            }
            (first, rest) = split(rest)
            guard !first.isEmpty else { return .failure(LineError(line: number, message: "no topic after the time")) }
        }
        return .success(InboundMessage(topic: String(first), payload: Array(rest.utf8), receivedAt: receivedAt))
    }

    public struct Summary: Sendable {
        public var lines = 0
        public var messages = 0
        public var unparseable = 0
        public var outcome = BatchOutcome()
    }

    /// Blocking; run from a plain thread (the CLI's main thread is fine).
    public static func run(input: FileHandle, config: WorkerConfig, logger: Logger) throws -> Summary {
        let database = try Database.open(config)
        let client = database.client
        let concern = database.writeConcern
        let processor = IngestProcessor(client: client, decoder: MessageDecoder(clockPolicy: config.clockPolicy),
                                        registry: config.devices, writeConcern: concern, logger: logger)
        var summary = Summary()
        var batch: [InboundMessage] = []
        func flush() throws {
            guard !batch.isEmpty else { return }
            summary.outcome.add(try processor.process(batch))
            batch.removeAll(keepingCapacity: true)
        }
        var buffer = Data()
        var lineNumber = 0
        func handle(_ lineData: Data) throws {
            lineNumber += 1
            summary.lines += 1
            let text = String(decoding: lineData, as: UTF8.self)
            switch parse(line: Substring(text), number: lineNumber, now: IngestEngine.nowMillis()) {
            case .success(nil): break
            case .success(var message?):
                // Keep the payload's bytes exactly as captured (invalid UTF-8 included).
                if let topicEnd = lineData.firstRange(of: Data(message.topic.utf8)) {
                    var payload = lineData[topicEnd.upperBound...]
                    if payload.first == UInt8(ascii: " ") { payload = payload.dropFirst() }
                    if payload.last == UInt8(ascii: "\r") { payload = payload.dropLast() }
                    message.payload = Array(payload)
                }
                summary.messages += 1
                batch.append(message)
                if batch.count >= config.batchSize { try flush() }
            case .failure(let error):
                summary.unparseable += 1
                logger.warning("replay: skipped a line", metadata: ["line": "\(error.line)", "error": "\(error.message)"])
            }
        }
        while true {
            let chunk = input.readData(ofLength: 1 << 16)
            if chunk.isEmpty { break }
            buffer.append(chunk)
            while let newline = buffer.firstIndex(of: 0x0A) {
                try handle(buffer[buffer.startIndex..<newline])
                buffer = Data(buffer[(newline + 1)...])
            }
        }
        if !buffer.isEmpty { try handle(buffer) }
        try flush()
        return summary
    }
}
