import AutoVoltCore
import AutoVoltJournal
import AutoVoltMQTT
import Foundation
import Logging
import Synchronization

/// The source: messages from the broker (libmosquitto's thread) and from signed HTTP ingest go
/// into the journal, durable before they are acknowledged; the drain stage takes them from there.
///
///     broker --(MQTT thread: append + commit, then PUBACK)--> journal --(drain)--> database
// @unchecked: `messagesSeen` and `flushesSeen` (fault injection only) are touched by the MQTT
// thread alone; everything else is immutable or under a Mutex.
final class Intake: MQTTMessageHandler, @unchecked Sendable {
    let journal: Journal
    private let config: WorkerConfig
    private let registry: RegistryInForce
    private let metrics: WorkerMetrics
    private let clock: any WorkerClock
    private let faults: FaultInjection
    private let logger: Logger
    /// Signalled when messages are committed: the drain's wake-up.
    let committed: Wakeup
    private let mqtt = Mutex<MQTTSource?>(nil)
    /// Since when the broker connection has been up (set by MQTTSource's connection callback).
    private let mqttConnectedSince = Mutex<EpochMillis?>(nil)
    private let journalFullSaidAt = Mutex<EpochMillis?>(nil)
    private var messagesSeen = 0
    private var flushesSeen = 0

    init(journal: Journal, config: WorkerConfig, registry: RegistryInForce, metrics: WorkerMetrics, committed: Wakeup,
         clock: any WorkerClock, faults: FaultInjection, logger: Logger) {
        self.journal = journal
        self.config = config
        self.registry = registry
        self.metrics = metrics
        self.committed = committed
        self.clock = clock
        self.faults = faults
        self.logger = logger
    }

    /// The journal in AUTOVOLT_STATE_DIR; a directory that cannot hold one is a configuration
    /// error (exit 78), not an outage to retry.
    static func openJournal(_ config: WorkerConfig) throws -> Journal {
        do {
            return try Journal(directory: config.stateDirectory, sync: config.journalSync, maxBytes: config.journalMaxBytes)
        } catch {
            guard error.isUnusableLocation else { throw error }
            throw ConfigError("AUTOVOLT_STATE_DIR", error.message)
        }
    }

    // MARK: MQTT

    /// Connects to the broker; messages flow into the journal from libmosquitto's thread.
    func startMQTT() throws {
        let source = try MQTTSource(settings: config.mqtt, handler: self, logger: logger)
        source.onConnectionChange = { [metrics, clock, weak self] connected in
            metrics.mqttConnected.record(connected ? 1 : 0)
            // A (re)connection is when the broker starts handing over what it queued meanwhile.
            self?.mqttConnectedSince.withLock { $0 = connected ? clock.now() : nil }
        }
        mqtt.withLock { $0 = source }
        source.start()
    }

    /// Stops taking messages; pending PUBACKs are flushed. If the MQTT thread is held in
    /// `receive` (journal full or failing), it is not waited for: its message was never
    /// acknowledged, so the broker delivers it again after a restart.
    func stopMQTT() {
        mqtt.withLock { $0 }?.stop(timeout: 5)
    }

    struct BrokerStatus {
        var connected: Bool
        var connectedSince: EpochMillis?
        var lastMessageAt: EpochMillis?
        var lastError: String?
    }

    var broker: BrokerStatus {
        let source = mqtt.withLock { $0 }
        let connected = source?.isConnected ?? false
        return BrokerStatus(connected: connected, connectedSince: connected ? mqttConnectedSince.withLock { $0 } : nil,
                            lastMessageAt: source?.lastMessageAt, lastError: source?.lastError)
    }

    /// Stages the message in the journal; `flush` commits it before its PUBACK can be written
    /// (MQTTSource calls `flush` after each read of the socket, before any write).
    func receive(topic: String, payload: UnsafeRawBufferPointer, retained: Bool) {
        let receivedAt = clock.now()
        metrics.received(topic: topic)
        if let exitAt = faults.exitAtMessage {
            messagesSeen += 1
            if messagesSeen >= exitAt { _exit(86) }
        }
        journal.stage(topic: topic, payload: payload, receivedAt: receivedAt, retained: retained)
    }

    /// Makes the staged messages durable (one commit for the batch) before returning, and so
    /// before their PUBACKs. If the journal cannot take them (full, or a disk error) we wait
    /// here: the broker keeps the messages queued for our persistent session, and nothing
    /// unacknowledged is ever lost.
    func flush() {
        if journal.stagedCount == 0 { return }
        if let exitAt = faults.exitAtFlush {
            flushesSeen += 1
            if flushesSeen >= exitAt { _exit(87) }
        }
        var delay = 0.1
        while true {
            if journal.isFull {
                reportJournalFull()
            } else {
                do {
                    try journal.commitStaged()
                    committed.signal()
                    return
                } catch {
                    logger.error("cannot write to the journal; holding the messages unacknowledged", metadata: [
                        "staged": "\(journal.stagedCount)", "error": "\(error)",
                    ])
                }
            }
            Thread.sleep(forTimeInterval: delay)
            delay = min(delay * 2, 5)
        }
    }

    // MARK: HTTP ingest

    /// The same door as MQTT for gateways (`POST /api/power-analytics/telemetry`): the messages
    /// are committed to the journal in one transaction, and the drain decodes and stores them
    /// exactly as if they had come from the broker. Blocks on the journal's disk write: call it
    /// from a thread of its own, never from the cooperative pool.
    func ingestHTTP(_ messages: [(topic: String, payload: [UInt8])]) -> Worker.HTTPIngestOutcome {
        if journal.isFull {
            reportJournalFull()
            return .journalFull
        }
        do {
            try journal.appendBatch(messages, receivedAt: clock.now())
        } catch {
            logger.error("cannot write an HTTP ingest request to the journal", metadata: ["error": "\(error)"])
            return .failed("\(error)")
        }
        for message in messages { metrics.received(topic: message.topic) }
        committed.signal()
        return .committed
    }

    /// The secrets a signed HTTP ingest request of this device may be signed with: its own from
    /// the registry, and the shared one.
    func ingestSecrets(forDevice name: String?) -> [String] {
        var secrets: [String] = []
        if let name, let own = registry.registry.devices[name]?.hmacSecret { secrets.append(own) }
        if let shared = config.ingestSecret { secrets.append(shared) }
        return secrets
    }

    private func reportJournalFull() {
        let now = clock.now()
        let shouldLog: Bool = journalFullSaidAt.withLock {
            if let since = $0, now - since < 30_000 { return false }
            $0 = now
            return true
        }
        if shouldLog {
            logger.critical("JOURNAL FULL: not accepting messages until the database takes the backlog; the broker holds them meanwhile", metadata: [
                "journal_bytes": "\(journal.usedBytes)", "max_bytes": "\(journal.maxBytes)", "pending": "\(journal.pendingRecords)",
            ])
        }
    }

    // MARK: Readiness

    /// After (re)connecting, the broker hands over what it queued for this session at once, at
    /// tens of thousands of messages a second: it is taken as delivered after a lull of
    /// `brokerBacklogLull` in the messages, or after `brokerBacklogSettle` on a campus that never
    /// falls quiet.
    static let brokerBacklogSettle: EpochMillis = 30_000
    static let brokerBacklogLull: EpochMillis = 2_000

    /// What of this worker's intake is still on its way to the database: the journal's messages,
    /// and the broker's queue for this session while it is not connected or has just connected.
    /// A reconciliation waits for it (Scheduler), so a night's backlog is judged once it is in.
    func readiness() -> DataReadiness {
        let now = clock.now()
        var pending: [String] = []
        let journalPending = journal.pendingRecords
        if journalPending > 0 { pending.append("\(journalPending) messages in the journal not yet stored") }
        let broker = self.broker
        if let since = broker.connectedSince {
            let quietFor = now - max(since, broker.lastMessageAt ?? since)
            if now - since < Self.brokerBacklogSettle && quietFor < Self.brokerBacklogLull {
                pending.append("connected to the broker \((now - since) / 1000) s ago and its messages still arriving; what it queued for this session may not all be in")
            }
        } else {
            pending.append("not connected to the broker, which may hold queued messages")
        }
        return DataReadiness(pending: pending)
    }
}
