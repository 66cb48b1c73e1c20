import AutoVoltCore
import AutoVoltJournal
import AutoVoltMQTT
import AutoVoltMongo
import Foundation
import Logging
import Synchronization

/// The worker's wiring: one database, one journal and one registry per process, and the stages
/// that own their work, each a Service of one ServiceGroup (WorkerStages):
///
///     source     Intake         broker / HTTP ingest -> journal (durable before the PUBACK)
///     transform  DrainStage     journal -> decoded, validated -> events | rejections
///     transform  LedgerStage    events -> ledger entries (and marks of the days changed)
///     transform  AggregationStage  marked days -> today's daily and monthly aggregates
///     sink       SchedulerStage day closes, reconciliation, statements, retention
///                AlarmStage     raises and clears (fed by the drain)
///
/// HTTP reads what it shows from here (`status`) and writes through the same door (`ingestHTTP`).
public final class Worker: Sendable {
    public struct Status: Sendable {
        public var mqttConnected: Bool
        public var mqttLastMessageAt: EpochMillis?
        public var mqttLastError: String?
        public var mongoReachable: Bool
        public var mongoLastError: String?
        public var mongoLastSuccessAt: EpochMillis?
        public var journalPending: Int
        public var journalBytes: Int64
        public var journalMaxBytes: Int64
        public var journalFull: Bool
        public var journalPath: String
        public var totals: BatchOutcome
        public var drainLoopAt: EpochMillis
        /// How long the journal has held messages without the drain storing any (nil: it is
        /// empty or moving). Over `drainStallThreshold` the worker reports itself degraded.
        public var drainStalledForMillis: EpochMillis?
        /// The write concern of the worker's writes, once resolved (after the first contact).
        public var writeConcern: WriteConcern?
        /// Since when writes are applied but fail their write concern (nil: they do not). The
        /// worker is degraded meanwhile: nothing leaves the journal.
        public var writeConcernFailingSince: EpochMillis?
        /// The last write concern failure, and when it happened (kept after recovery).
        public var writeConcernLastFailure: String?
        public var writeConcernLastFailureAt: EpochMillis?
        /// Set when the server is a replica set member the URI does not name.
        public var replicaSetAdvice: MongoClient.ReplicaSetAdvice?
    }

    /// A drain that has not stored a batch for this long while messages wait is stalled.
    public static let drainStallThreshold: EpochMillis = 30_000

    public enum HTTPIngestOutcome: Sendable, Equatable {
        case committed
        /// The journal is at AUTOVOLT_JOURNAL_MAX_BYTES: nothing was written.
        case journalFull
        case failed(String)
    }

    let config: WorkerConfig
    let logger: Logger
    let metrics = WorkerMetrics()
    let clock: any WorkerClock
    /// The database chosen by AUTOVOLT_DATABASE_URL: each stage takes its storage from it.
    let database: WorkerDatabase
    /// When each stage last went round its loop (the systemd watchdog follows it).
    public let stages: StageMonitor
    /// Alarm evaluation (AUTOVOLT_ALARMS): fed by the drain, stored by the alarms stage.
    let alarms: AlarmService?
    private let link: DatabaseLink
    private let registry: RegistryInForce
    private let intake: Intake
    private let drain: DrainStage
    private let ledger: LedgerStage
    private let aggregation: AggregationStage
    private let scheduler: SchedulerStage
    private let alarmStage: AlarmStage
    private let shutdownBegun = Mutex(false)

    public init(config: WorkerConfig, faults: FaultInjection = FaultInjection(), clock: any WorkerClock = SystemClock(),
                logger: Logger) throws {
        self.config = config
        self.logger = logger
        self.clock = clock
        let journal = try Intake.openJournal(config)
        // The drain, aggregation and scheduler hold one connection each at most, the ledger one per lane,
        // /health one, and the analytics reads as many as may run at once.
        let database = try WorkerDatabase.open(config, poolSize: 4 + LedgerStage.lanes + config.httpQueryConcurrency)
        self.database = database
        let monitor = StageMonitor(now: clock.now(), silenceOverride: faults.stageSilenceMillis)
        stages = monitor
        let registry = RegistryInForce(config.devices)
        self.registry = registry
        let link = DatabaseLink(database: database, config: config, metrics: metrics, clock: clock, faults: faults, logger: logger)
        self.link = link
        let alarms = AlarmService(config: config, storage: { database.alarmStorage(writeConcern: $0) }, logger: logger,
                                  startedAt: clock.now())
        self.alarms = alarms
        func control(_ stage: StageMonitor.Stage, onStop: (@Sendable () -> Void)? = nil) -> StageControl {
            StageControl(stage, monitor: monitor, clock: clock, faults: faults, onStop: onStop)
        }
        let ledgerControl = control(.ledger)
        let aggregationControl = control(.aggregation)
        let drainControl = control(.drain)
        let intake = Intake(journal: journal, config: config, registry: registry, metrics: metrics, committed: drainControl.wakeup,
                        clock: clock, faults: faults, logger: logger)
        self.intake = intake
        drain = DrainStage(control: drainControl, intake: intake, link: link, registry: registry, config: config, metrics: metrics,
                           alarms: alarms, inserted: ledgerControl.wakeup, clock: clock, logger: logger)
        ledger = LedgerStage(control: ledgerControl, link: link, registry: registry, config: config, metrics: metrics, clock: clock,
                             changed: aggregationControl.wakeup, logger: logger)
        aggregation = AggregationStage(control: aggregationControl, link: link, registry: registry, config: config, clock: clock,
                                       logger: logger)
        scheduler = SchedulerStage(control: control(.scheduler), link: link, registry: registry, config: config, clock: clock,
                                   intakeReadiness: { [intake] in intake.readiness() }, logger: logger)
        alarmStage = AlarmStage(control: control(.alarms, onStop: { alarms.requestStop() }), alarms: alarms, link: link)
        let pending = journal.pendingRecords
        if pending > 0 {
            logger.notice("journal holds messages from before the last stop; storing them first", metadata: ["pending": "\(pending)"])
        }
    }

    /// The stages that block, each on a thread of its own, with how long a stop may take.
    var blockingStages: [(stage: any BlockingStage, stopTimeout: Duration)] {
        [(drain, .seconds(16)), (ledger, .seconds(10)), (aggregation, .seconds(10)), (scheduler, .seconds(5)), (alarmStage, .seconds(5))]
    }

    /// Checks the database once, up front: a database that belongs to another program stops the
    /// worker (exit 78) before it consumes anything. An unreachable database is not an error here.
    public func checkSchemaIfReachable() throws { try link.checkSchemaIfReachable() }

    // MARK: MQTT and HTTP ingest

    public func startMQTT() throws { try intake.startMQTT() }
    public func stopMQTT() { intake.stopMQTT() }

    /// See `Intake.ingestHTTP`: blocks on the journal's disk write.
    public func ingestHTTP(_ messages: [(topic: String, payload: [UInt8])]) -> HTTPIngestOutcome { intake.ingestHTTP(messages) }
    public func ingestSecrets(forDevice name: String?) -> [String] { intake.ingestSecrets(forDevice: name) }

    // MARK: SIGHUP

    /// Reads `AUTOVOLT_DEVICES` again (SIGHUP, `systemctl reload`); a file that does not parse
    /// keeps the registry in force. The drain and the ledger take the new one at once.
    @discardableResult
    public func reloadRegistry() -> Bool {
        guard let loaded = registry.reload(from: config.devicesPath, logger: logger) else { return false }
        alarms?.reload(registry: loaded, rulesPath: nil)
        drain.control.wakeup.signal()
        ledger.control.wakeup.signal()
        aggregation.control.wakeup.signal()
        return true
    }

    /// Reads `AUTOVOLT_ALARMS` again (SIGHUP, after the registry); a bad file keeps the rules in force.
    public func reloadAlarmRules() {
        alarms?.reload(registry: registry.registry, rulesPath: config.alarmsPath)
    }

    /// The device registry in force (the dashboard's registered boards per classroom).
    public var registryInForce: DeviceRegistry { registry.registry }

    // MARK: Shutdown and health

    /// Graceful shutdown has begun: long-lived responses (the alarm stream) end.
    public var isShuttingDown: Bool { shutdownBegun.withLock { $0 } }
    public func beginShutdown() { shutdownBegun.withLock { $0 = true } }

    /// Set when the drain hit something it cannot wait out (a foreign database).
    public var fatal: (any Error)? { drain.fatal }

    public var ledgerCounters: LedgerStore.Counters? { ledger.counters }
    public var ledgerIsProcessing: Bool { ledger.isProcessing }

    public var status: Status {
        let health = link.health
        let broker = intake.broker
        let journal = intake.journal
        let bytes = journal.usedBytes
        let pending = journal.pendingRecords
        let sinceProgress = clock.now() - drain.progressAt
        return Status(
            mqttConnected: broker.connected, mqttLastMessageAt: broker.lastMessageAt, mqttLastError: broker.lastError,
            mongoReachable: health.reachable, mongoLastError: health.lastError, mongoLastSuccessAt: health.lastSuccessAt,
            journalPending: pending, journalBytes: bytes, journalMaxBytes: journal.maxBytes,
            journalFull: bytes >= journal.maxBytes, journalPath: journal.path, totals: drain.totals, drainLoopAt: stages.lastBeat(.drain),
            drainStalledForMillis: pending > 0 && sinceProgress > 0 ? sinceProgress : nil,
            writeConcern: health.writeConcern, writeConcernFailingSince: health.writeConcernFailingSince,
            writeConcernLastFailure: health.writeConcernLastFailure?.error, writeConcernLastFailureAt: health.writeConcernLastFailure?.at,
            replicaSetAdvice: health.replicaSetAdvice)
    }
}
