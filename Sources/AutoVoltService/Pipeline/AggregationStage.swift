import AutoVoltCore
import AutoVoltMongo
import Foundation
import Logging

/// Transform: recomputes the aggregates of the device-days the ledger marked changed
/// (`ledger_dirty_days`), so today's figures follow the ledger during the day. A stage of its own,
/// woken by the ledger: a campus's aggregation work never holds back the next ledger step (when
/// both shared a loop, publish-to-ledger latency grew with the day's entries).
/// Owns its AggregationStore.
final class AggregationStage: BlockingStage, Sendable {
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
        var store: AggregationStore?
        var appliedGeneration = 0
        link.runDerivingLoop(control, stage: .aggregation) { () throws -> Double in
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
            // Idle until the ledger changes a day (or a second passes: marks by other workers).
            return try aggregation.processDirtyDays(now: clock.now()) == 0 ? 1 : 0
        }
    }
}
