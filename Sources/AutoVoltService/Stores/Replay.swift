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

    /// One capture line (`CaptureLine.parse`): `TOPIC PAYLOAD` or `TIME TOPIC PAYLOAD`; blank
    /// lines and `#` comments are skipped.
    public static func parse(line: some Collection<UInt8>, number: Int, now: EpochMillis) -> Result<InboundMessage?, LineError> {
        switch CaptureLine.parse(line, now: now) {
        case .success(nil): return .success(nil)
        case .success(let parsed?): return .success(InboundMessage(topic: parsed.topic, payload: parsed.payload, receivedAt: parsed.receivedAt))
        case .failure(let error): return .failure(LineError(line: number, message: error.message))
        }
    }

    public struct Summary: Sendable {
        public var lines = 0
        public var messages = 0
        public var unparseable = 0
        public var outcome = BatchOutcome()
    }

    /// Blocking; run from a plain thread (the CLI's main thread is fine).
    public static func run(input: FileHandle, config: WorkerConfig, logger: Logger) throws -> Summary {
        let (database, concern) = try WorkerDatabase.openForCommand(config)
        let processor = IngestProcessor(storage: database.ingestStorage(writeConcern: concern),
                                        decoder: MessageDecoder(clockPolicy: config.clockPolicy),
                                        registry: config.devices, logger: logger)
        var summary = Summary()
        var batch: [InboundMessage] = []
        func flush() throws {
            guard !batch.isEmpty else { return }
            summary.outcome.add(try processor.ingest(batch))
            batch.removeAll(keepingCapacity: true)
        }
        var buffer = Data()
        var lineNumber = 0
        func handle(_ lineData: Data) throws {
            lineNumber += 1
            summary.lines += 1
            switch parse(line: lineData, number: lineNumber, now: SystemClock.nowMillis()) {
            case .success(nil): break
            case .success(let message?):
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
