import AutoVoltCore
import AutoVoltMongo
import Foundation
import Logging

/// Transform: recomputes the aggregates of the device-days the ledger marked changed
/// (`ledger_dirty_days`), so today's figures follow the ledger during the day. A stage of its own,
/// woken by the ledger: a campus's aggregation work never holds back the next ledger step (when
/// both shared a loop, publish-to-ledger latency grew with the day's entries).
/// Owns its AggregationStore.
// @unchecked: the store is built and used by the stage's own thread alone.
final class AggregationStage: BlockingStage, @unchecked Sendable {
    let control: StageControl
    private let link: DatabaseLink
    private let registry: RegistryInForce
    private let config: WorkerConfig
    private let clock: any WorkerClock
    private let logger: Logger

    init(control: StageControl, link: DatabaseLink, registry: RegistryInForce, config: WorkerConfig, clock: any WorkerClock,
         logger: Logger) {
        self.control = control
        self.link = link
        self.registry = registry
        self.config = config
        self.clock = clock
        self.logger = logger
    }

    func runLoop() {
        var backoff = 0.2
        var store: AggregationStore?
        var appliedGeneration = 0
        while !control.isStopping {
            control.beat()
            guard link.schemaReady else {
                control.wait(seconds: 0.5)
                continue
            }
            let acknowledged = MongoClient.AcknowledgedWrites()
            do {
                let recomputed = try MongoClient.countingAcknowledgedWrites(in: acknowledged) { () throws -> Int in
                    let (registry, generation) = self.registry.snapshot
                    let aggregation: AggregationStore
                    if let store {
                        aggregation = store
                        if generation != appliedGeneration { aggregation.registry = registry }
                    } else {
                        aggregation = AggregationStore(storage: link.database.aggregationStorage(writeConcern: try link.writeConcern),
                                                       registry: registry, timeZone: config.timeZone, logger: logger)
                        store = aggregation
                    }
                    appliedGeneration = generation
                    return try aggregation.processDirtyDays(now: clock.now())
                }
                if acknowledged.count > 0 { link.noteWriteConcernSatisfied(.aggregation) }
                backoff = 0.2
                // Idle until the ledger changes a day (or a second passes: marks by other workers).
                if recomputed == 0 { control.wait(seconds: 1) }
            } catch {
                // Aggregates hold only what the worker derived: a refusal is retried, never skipped.
                link.noteWriteFailure(DatabaseLink.WriteFailure(error), error, .aggregation, retryIn: backoff, pending: nil)
                control.sleep(seconds: backoff)
                backoff = min(backoff * 2, 15)
            }
        }
    }
}
