import AutoVoltCore
import AutoVoltMongo
import Foundation
import Logging
import Synchronization

/// Transform: advances the ledger of every device with unprocessed events (or a dip waiting to
/// settle), marking the days it changed and waking the AggregationStage. Separate from the drain
/// so a slow derivation never holds back ingestion. Owns its LedgerStore.
// @unchecked: the store is built and used by the stage's own thread (LedgerStore's counters
// are under its own lock for /health); `shown` is under a Mutex.
final class LedgerStage: BlockingStage, @unchecked Sendable {
    let control: StageControl
    private let link: DatabaseLink
    private let registry: RegistryInForce
    private let config: WorkerConfig
    private let metrics: WorkerMetrics
    private let clock: any WorkerClock
    /// Wakes the AggregationStage after a step that changed the ledger.
    private let changed: Wakeup
    private let logger: Logger

    private struct Shown {
        var ledger: LedgerStore?
        var busy = false
    }
    private let shown = Mutex(Shown())

    init(control: StageControl, link: DatabaseLink, registry: RegistryInForce, config: WorkerConfig, metrics: WorkerMetrics,
         clock: any WorkerClock, changed: Wakeup, logger: Logger) {
        self.control = control
        self.changed = changed
        self.link = link
        self.registry = registry
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.logger = logger
    }

    /// The ledger's counters (nil before its first step), for /health.
    var counters: LedgerStore.Counters? { shown.withLock { $0.ledger }?.snapshot }
    /// Whether a step is under way, for /health.
    var isProcessing: Bool { shown.withLock { $0.busy } }

    func runLoop() {
        var store: LedgerStore?
        var appliedGeneration = 0
        link.runDerivingLoop(control, stage: .ledger) { () throws -> Double in
            let (registry, generation) = self.registry.snapshot
            let ledger: LedgerStore
            if let store {
                ledger = store
                if generation != appliedGeneration { ledger.registry = registry }
            } else {
                ledger = LedgerStore(storage: link.database.ledgerStorage(writeConcern: try link.writeConcern), registry: registry,
                                     timeZone: config.timeZone, owner: "worker:\(config.mqtt.clientID)",
                                     policy: config.ledgerPolicy, logger: logger)
                store = ledger
                shown.withLock { $0.ledger = ledger }
            }
            appliedGeneration = generation
            // In batches: a batch costs the database the same few round trips as one device.
            let batches = try ledger.findWork(now: clock.now())
            guard !batches.isEmpty else { return 1 }
            var progressed = false
            shown.withLock { $0.busy = true }
            defer {
                shown.withLock { $0.busy = false }
                if progressed { changed.signal() }
            }
            for batch in batches {
                if control.isStopping { break }
                control.beat()
                let results = try ledger.step(batch, now: clock.now())
                if results.values.contains(where: { if case .done = $0 { true } else { false } }) { progressed = true }
            }
            metrics.recordLedger(ledger.snapshot)
            // Every device held by other workers: let them finish.
            return progressed ? 0 : 0.5
        }
    }
}
