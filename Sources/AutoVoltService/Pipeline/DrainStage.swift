import AutoVoltCore
import AutoVoltJournal
import AutoVoltMongo
import Foundation
import Logging
import Synchronization

/// Transform and sink of ingestion: takes the journal's messages in batches, decodes and
/// validates them, stores each once as an event or a rejection (IngestProcessor), then removes
/// them from the journal. A batch that cannot be stored stays in the journal and is retried
/// with backoff; on stop, what the journal holds is stored first while the database answers.
// @unchecked: the processor is touched by the stage's own thread alone; the rest is under Mutexes.
final class DrainStage: BlockingStage, @unchecked Sendable {
    let control: StageControl
    private let intake: Intake
    private let link: DatabaseLink
    private let registry: RegistryInForce
    private let config: WorkerConfig
    private let metrics: WorkerMetrics
    private let clock: any WorkerClock
    private let logger: Logger
    private let alarms: AlarmService?
    /// Woken when a batch inserted events: the ledger's work.
    private let inserted: Wakeup

    private struct Progress {
        var totals = BatchOutcome()
        /// Last time the journal was empty or a batch left it.
        var progressAt: EpochMillis
        var fatal: (any Error)?
    }
    private let progress: Mutex<Progress>

    init(control: StageControl, intake: Intake, link: DatabaseLink, registry: RegistryInForce, config: WorkerConfig,
         metrics: WorkerMetrics, alarms: AlarmService?, inserted: Wakeup, clock: any WorkerClock, logger: Logger) {
        self.control = control
        self.intake = intake
        self.link = link
        self.registry = registry
        self.config = config
        self.metrics = metrics
        self.alarms = alarms
        self.inserted = inserted
        self.clock = clock
        self.logger = logger
        progress = Mutex(Progress(progressAt: clock.now()))
    }

    var totals: BatchOutcome { progress.withLock { $0.totals } }
    var progressAt: EpochMillis { progress.withLock { $0.progressAt } }
    /// Set when the loop hit something it cannot wait out (a foreign database).
    var fatal: (any Error)? { progress.withLock { $0.fatal } }

    private var journal: Journal { intake.journal }

    func runLoop() {
        drain()
        let left = journal.pendingRecords
        if left > 0 {
            logger.notice("stopped with messages still in the journal; they are stored at the next start", metadata: ["pending": "\(left)"])
        }
    }

    private func drain() {
        let decoder = MessageDecoder(clockPolicy: config.clockPolicy)
        var processor: IngestProcessor?
        var processorGeneration = -1
        var backoff = 0.2
        defer { updateJournalGauges() }
        while true {
            control.beat()
            let stopping = control.isStopping
            do {
                try link.ensureSchema()
                let active: IngestProcessor
                let (registry, generation) = self.registry.snapshot
                if let processor, processorGeneration == generation {
                    active = processor
                } else {
                    active = IngestProcessor(storage: link.database.ingestStorage(writeConcern: try link.writeConcern), decoder: decoder,
                                             registry: registry, logger: logger)
                    active.alarms = alarms
                    processor = active
                    processorGeneration = generation
                }
                let records = try journal.read(limit: config.batchSize)
                updateJournalGauges()
                if records.isEmpty {
                    let now = clock.now()
                    progress.withLock { $0.progressAt = now }
                    if stopping { return }
                    control.wait(seconds: 1)
                    continue
                }
                let messages = records.map {
                    InboundMessage(topic: $0.topic, payload: $0.payload, receivedAt: $0.receivedAt, retained: $0.retained)
                }
                // Only a write acknowledged with its write concern says the concern is met again
                // (a batch of retained statuses writes nothing).
                let acknowledged = MongoClient.AcknowledgedWrites()
                let outcome = try MongoClient.countingAcknowledgedWrites(in: acknowledged) { () throws -> BatchOutcome in
                    try active.ingest(messages)
                }
                if let last = records.last { try journal.remove(through: last.id) }
                let now = clock.now()
                for record in records {
                    metrics.ingestLatency.recordMilliseconds(max(0, now - record.receivedAt))
                }
                metrics.record(outcome)
                progress.withLock {
                    $0.totals.add(outcome)
                    $0.progressAt = now
                }
                if outcome.inserted > 0 { inserted.signal() }
                link.setReachable(true, error: nil)
                if acknowledged.count > 0 { link.noteWriteConcernSatisfied(.drain) }
                backoff = 0.2
            } catch let conflict as Schema.Conflict {
                logger.critical("\(conflict)")
                progress.withLock { $0.fatal = conflict }
                return
            } catch let refusal as PostgresSchema.Refusal {
                logger.critical("\(refusal)")
                progress.withLock { $0.fatal = refusal }
                return
            } catch {
                // A refused document never reaches here (IngestProcessor sets it aside); what does
                // keeps its batch in the journal (see `DatabaseLink.WriteFailure`).
                let failure = DatabaseLink.WriteFailure(error)
                // A write concern failure is an answer: the server is there, the writes are not
                // acknowledged as asked.
                link.setReachable(failure.serverAnswered, error: "\(error)")
                metrics.storeErrors.increment()
                if stopping {
                    link.noteWriteFailure(failure, error, .drain, retryIn: nil, pending: journal.pendingRecords)
                    logger.warning("\(link.database.backendName) unavailable during shutdown; the journal keeps the rest", metadata: ["error": "\(error)"])
                    return
                }
                link.noteWriteFailure(failure, error, .drain, retryIn: backoff, pending: journal.pendingRecords)
                control.sleep(seconds: backoff * Double.random(in: 0.8...1.2))
                backoff = min(backoff * 2, 15)
            }
        }
    }

    private func updateJournalGauges() {
        metrics.journalPending.record(journal.pendingRecords)
        metrics.journalBytes.record(Int(journal.usedBytes))
    }
}
