import AutoVoltCore
import AutoVoltMongo
import Foundation
import Logging

/// `autovolt-worker requeue --reason store_refused [--since DATE]`: feeds the messages the
/// database refused for good through the pipeline again, once the operator fixed the cause (a
/// validator, a size limit). A message now stored, or rejected for another reason, leaves
/// `store_refused`; one still refused stays as it is. Duplicates collapse as always, so running
/// it twice, or after a crash half-way, changes nothing more.
///
/// Blocking; run from a plain thread (the CLI's main thread is fine).
public enum Requeue {
    public struct Summary: Sendable, Equatable {
        public var examined = 0
        public var stored = 0
        public var duplicates = 0
        public var stillRefused = 0
        public var rejectedOtherwise = 0
        public var other = 0
    }

    /// Over the database of `config` (`AUTOVOLT_DATABASE_URL`: PostgreSQL or MongoDB).
    public static func run(config: WorkerConfig, since: EpochMillis?, pageSize: Int = 200, logger: Logger) throws -> Summary {
        let (database, writeConcern) = try WorkerDatabase.openForCommand(config)
        defer { database.close() }
        return try run(storage: database.ingestStorage(writeConcern: writeConcern), decoder: MessageDecoder(clockPolicy: config.clockPolicy),
                       registry: config.devices, since: since, pageSize: pageSize, logger: logger)
    }

    /// Messages are read in pages of `pageSize` by id, so memory stays bounded however many
    /// wait. Each is fed through an `IngestProcessor` over the same storage, then removed.
    public static func run(storage: any IngestStorage, decoder: MessageDecoder, registry: DeviceRegistry, since: EpochMillis?,
                           pageSize: Int = 200, logger: Logger) throws -> Summary {
        let processor = IngestProcessor(storage: storage, decoder: decoder, registry: registry, logger: logger)
        var summary = Summary()
        var after: String?
        while true {
            let page = try storage.storeRefusedRejections(since: since, after: after, limit: pageSize)
            guard let last = page.last?.id else { break }
            after = last
            for stored in page {
                guard let id = stored.id, let message = message(from: stored) else {
                    logger.warning("requeue: skipped a rejected message without topic, payload or received_at",
                                   metadata: ["id": "\(stored.id ?? "-")"])
                    continue
                }
                summary.examined += 1
                let outcome = try processor.ingest([message])
                if outcome.rejected[.storeRefused, default: 0] > 0 {
                    summary.stillRefused += 1
                    continue
                }
                if outcome.inserted > 0 {
                    summary.stored += 1
                } else if outcome.duplicates > 0 {
                    summary.duplicates += 1
                } else if outcome.rejectedTotal > 0 {
                    summary.rejectedOtherwise += 1
                } else {
                    summary.other += 1   // a status or heartbeat, now applied
                }
                try storage.deleteRejection(id: id)
            }
            if page.count < pageSize { break }
        }
        return summary
    }

    /// The message as it was received. The whole payload is kept for `store_refused` (as text,
    /// or as hex when even the text was refused).
    static func message(from stored: StoredRejection) -> InboundMessage? {
        guard let topic = stored.topic, let received = stored.receivedAt else { return nil }
        let payload: [UInt8]
        if let hex = stored.payloadHex {
            guard let bytes = bytes(hex: hex) else { return nil }
            payload = bytes
        } else if let text = stored.payload {
            payload = Array(text.utf8)
        } else {
            return nil
        }
        return InboundMessage(topic: topic, payload: payload, receivedAt: received)
    }

    static func bytes(hex: String) -> [UInt8]? {
        let digits = Array(hex.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(digits.count / 2)
        var index = 0
        while index < digits.count {
            guard let high = nibble(digits[index]), let low = nibble(digits[index + 1]) else { return nil }
            out.append(high << 4 | low)
            index += 2
        }
        return out
    }

    private static func nibble(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
        default: nil
        }
    }
}
