import Foundation
import Synchronization
import AutoVoltCore
import Metrics

/// The worker's metrics (swift-metrics; exported in Prometheus format by the CLI's bootstrap).
final class WorkerMetrics: Sendable {
    private let received: [MessageKind: Counter]
    private let rejectedByReason: [RejectReason: Counter]
    let rejectedUnknownTopic = Counter(label: "autovolt_messages_rejected_total", dimensions: [("reason", "invalid_topic")])
    let inserted = Counter(label: "autovolt_events_inserted_total")
    let duplicates = Counter(label: "autovolt_events_duplicate_total")
    let journalPending = Gauge(label: "autovolt_journal_pending_records")
    let journalBytes = Gauge(label: "autovolt_journal_bytes")
    let ingestLatency = Metrics.Timer(label: "autovolt_ingest_latency_seconds")
    let mqttConnected = Gauge(label: "autovolt_mqtt_connected")
    let mongoReachable = Gauge(label: "autovolt_mongodb_reachable")
    let storeErrors = Counter(label: "autovolt_store_errors_total")

    private let ledgerEntries: [Confidence: Counter] = Dictionary(uniqueKeysWithValues: Confidence.allCases.map {
        ($0, Counter(label: "autovolt_ledger_entries_total", dimensions: [("confidence", $0.rawValue)]))
    })
    let resetsDetected = Counter(label: "autovolt_resets_detected_total")
    let ledgerLag = Gauge(label: "autovolt_ledger_lag_seconds")
    let ledgerEventsProcessed = Counter(label: "autovolt_ledger_events_processed_total")
    /// The ledger counters at the last `recordLedger`, to publish their growth.
    private let ledgerSeen = Mutex(LedgerStore.Counters())

    init() {
        received = Dictionary(uniqueKeysWithValues: MessageKind.allCases.map {
            ($0, Counter(label: "autovolt_messages_received_total", dimensions: [("kind", $0.rawValue)]))
        })
        rejectedByReason = Dictionary(uniqueKeysWithValues: RejectReason.allCases.map {
            ($0, Counter(label: "autovolt_messages_rejected_total", dimensions: [("reason", $0.rawValue)]))
        })
    }

    /// The kind is the topic's last level, found on the UTF-8 bytes (no split, no substring
    /// allocation: this runs for every message on the MQTT thread).
    func received(topic: String) {
        received[Self.kind(ofTopic: topic)]?.increment()
    }

    static func kind(ofTopic topic: String) -> MessageKind {
        var topic = topic
        return topic.withUTF8 { bytes -> MessageKind in
            var start = bytes.count
            while start > 0 && bytes[start - 1] != UInt8(ascii: "/") { start -= 1 }
            let last = UnsafeBufferPointer(rebasing: bytes[start...])
            func equals(_ word: StaticString) -> Bool {
                word.utf8CodeUnitCount == last.count && memcmp(word.utf8Start, last.baseAddress!, last.count) == 0
            }
            if equals("status") { return .status }
            if equals("heartbeat") { return .heartbeat }
            return .telemetry
        }
    }

    func record(_ outcome: BatchOutcome) {
        inserted.increment(by: outcome.inserted)
        duplicates.increment(by: outcome.duplicates)
        for (reason, count) in outcome.rejected { rejectedByReason[reason]?.increment(by: count) }
    }
}

import Foundation


extension WorkerMetrics {
    /// Publishes the ledger counters' growth since the last call.
    func recordLedger(_ counters: LedgerStore.Counters) {
        let previous = ledgerSeen.withLock { last in
            defer { last = counters }
            return last
        }
        resetsDetected.increment(by: max(0, counters.resetsDetected - previous.resetsDetected))
        ledgerEventsProcessed.increment(by: max(0, counters.eventsProcessed - previous.eventsProcessed))
        ledgerLag.record(Double(counters.lastLagMillis) / 1000)
        for (confidence, count) in counters.entriesByConfidence {
            ledgerEntries[confidence]?.increment(by: max(0, count - (previous.entriesByConfidence[confidence] ?? 0)))
        }
    }
}
