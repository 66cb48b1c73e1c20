import AutoVoltCore
import Foundation
import Logging

/// The worker's clockwork: closes days, runs the nightly reconciliation and re-judges the days
/// it changed, drafts the month's statements (Scheduler), and on PostgreSQL drops expired
/// partitions hourly. Checks every 30 s (5 s while a reconciliation waits for its day's data).
/// Owns its Scheduler and the AggregationStore its day closes write through.
// @unchecked: the scheduler and `retentionCheckedAt` are touched by the stage's own thread alone.
final class SchedulerStage: BlockingStage, @unchecked Sendable {
    let control: StageControl
    private let link: DatabaseLink
    private let registry: RegistryInForce
    private let config: WorkerConfig
    private let clock: any WorkerClock
    private let logger: Logger
    /// What of the worker's intake is still on its way (the reconciliation waits for it).
    private let intakeReadiness: @Sendable () -> DataReadiness
    private var retentionCheckedAt: EpochMillis?

    init(control: StageControl, link: DatabaseLink, registry: RegistryInForce, config: WorkerConfig, clock: any WorkerClock,
         intakeReadiness: @escaping @Sendable () -> DataReadiness, logger: Logger) {
        self.control = control
        self.link = link
        self.registry = registry
        self.config = config
        self.clock = clock
        self.intakeReadiness = intakeReadiness
        self.logger = logger
    }

    func runLoop() {
        let startedAt = clock.now()
        var scheduler: Scheduler?
        var appliedGeneration = 0
        while !control.isStopping {
            control.beat()
            guard link.schemaReady else {
                control.wait(seconds: 1)
                continue
            }
            do {
                let active: Scheduler
                let (registry, generation) = self.registry.snapshot
                if scheduler != nil, generation != appliedGeneration { scheduler = nil }
                if let scheduler {
                    active = scheduler
                } else {
                    appliedGeneration = generation
                    active = try makeScheduler(registry: registry, listeningSince: startedAt)
                    scheduler = active
                }
                try active.tick(now: clock.now())
                try active.rejudgeChangedDays(now: clock.now())
                try dropExpiredPartitionsHourly(now: clock.now())
            } catch {
                logger.warning("scheduler: job failed; retrying later", metadata: ["error": "\(error)"])
            }
            control.wait(seconds: scheduler?.isWaitingForData == true ? 5 : 30)
        }
    }

    private func makeScheduler(registry: DeviceRegistry, listeningSince: EpochMillis) throws -> Scheduler {
        let concern = try link.writeConcern
        let database = link.database
        let aggregation = AggregationStore(storage: database.aggregationStorage(writeConcern: concern), registry: registry,
                                           timeZone: config.timeZone, logger: logger)
        let statements = StatementStore(storage: database.statementStorage(writeConcern: concern), registry: registry,
                                        timeZone: config.timeZone, logger: logger)
        let storage = database.reconciliationStorage(writeConcern: concern)
        return Scheduler(storage: storage, schedule: Schedule(reconcileAt: config.reconcileAt, statementAt: config.statementAt),
                         timeZone: config.timeZone, owner: "worker:\(config.mqtt.clientID)", aggregation: aggregation,
                         reconciler: Reconciler(storage: storage, registry: registry, timeZone: config.timeZone, logger: logger),
                         statements: statements, logger: logger, listeningSince: listeningSince, intakeReadiness: intakeReadiness)
    }

    /// PostgreSQL's retention (contract section 9): whole monthly partitions of telemetry_events
    /// (730 days) and rejected_messages (30 days) are dropped, never a DELETE; MongoDB's TTL
    /// indexes do the same there by themselves.
    private func dropExpiredPartitionsHourly(now: EpochMillis) throws {
        guard case .postgresql(let pool) = link.database else { return }
        guard retentionCheckedAt.map({ now - $0 >= 3_600_000 }) ?? true else { return }
        retentionCheckedAt = now
        let dropped = try PostgresIngestStorage(pool: pool).dropExpiredPartitions(now: now)
        if !dropped.isEmpty {
            logger.notice("retention: dropped expired partitions", metadata: ["partitions": "\(dropped.joined(separator: ","))"])
        }
    }
}
