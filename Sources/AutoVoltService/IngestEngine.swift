import AutoVoltCore
import AutoVoltJournal
import AutoVoltMQTT
import AutoVoltMongo
import Foundation
import Logging
import Synchronization

/// Receives MQTT messages into the journal and drains the journal into MongoDB.
///
///     broker --(MQTT thread: append + commit, then PUBACK)--> journal --(drain thread)--> MongoDB
///
/// Both sides run on threads of their own: libmosquitto and libmongoc calls block, and must never
/// run on Swift's cooperative pool.
public final class IngestEngine: MQTTMessageHandler, @unchecked Sendable {
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

    let config: WorkerConfig
    let journal: Journal
    /// The database chosen by AUTOVOLT_DATABASE_URL: each stage takes its storage from it.
    let database: WorkerDatabase
    /// MongoDB's client, for what only that backend does so far (alarms, the scheduler's
    /// reconciliation and statements, the HTTP API's reads): nil on PostgreSQL.
    var client: MongoClient? { database.mongo }
    let logger: Logger
    let metrics = WorkerMetrics()
    private var mqtt: MQTTSource?
    private let wakeup = Wakeup()
    private let stateLock = NSLock()
    /// Stages asked to finish.
    private var stopping: Set<StageMonitor.Stage> = []
    private var mongoReachable = false
    private var mongoLastError: String?
    private var mongoLastSuccessAt: EpochMillis?
    private var writeConcernInForce: WriteConcern?
    /// The stages whose last write failed its write concern, and since when any has.
    private var writeConcernFailing: Set<StageMonitor.Stage> = []
    private var writeConcernFailingSince: EpochMillis?
    private var writeConcernLastFailure: (at: EpochMillis, error: String)?
    private var replicaSetAdvice: MongoClient.ReplicaSetAdvice?
    private var schemaIsReady = false
    /// Written by the drain thread once the schema is checked, read by the other stages.
    private var schemaReady: Bool {
        get { stateLock.withLock { schemaIsReady } }
        set { stateLock.withLock { schemaIsReady = newValue } }
    }
    private var totals = BatchOutcome()
    /// When each stage last went round its loop (the systemd watchdog follows it).
    public let stages = StageMonitor(
        now: SystemClock.nowMillis(),
        silenceOverride: ProcessInfo.processInfo.environment["AUTOVOLT_TEST_STAGE_SILENCE_MS"].flatMap(EpochMillis.init))
    /// Fault injection for the watchdog test only: this stage stops going round its loop.
    private let testStalledStage = ProcessInfo.processInfo.environment["AUTOVOLT_TEST_STALL_STAGE"].flatMap(StageMonitor.Stage.init(rawValue:))
    /// Last time the journal was empty or a batch left it.
    private var drainProgressAt: EpochMillis = SystemClock.nowMillis()
    private var fatalError: Error?
    private var journalFullSince: EpochMillis?
    private let ledgerWakeup = Wakeup()
    private var ledger: LedgerStore?
    private var ledgerBusy = false
    private var aggregates: AggregationStore?
    private let schedulerWakeup = Wakeup()
    let clock: WorkerClock = SystemClock()
    /// Fault injection for the delivery tests only (docs/delivery.md): the process exits inside
    /// the MQTT callback, before journaling, when this many messages have arrived.
    private let testExitAtMessage = ProcessInfo.processInfo.environment["AUTOVOLT_TEST_EXIT_AT_MESSAGE"].flatMap(Int.init)
    private var messagesSeen = 0
    /// The device registry in force: the one loaded at start, replaced by `reloadRegistry()`.
    /// Each stage compares `registryGeneration` with the one it last applied.
    private var registry: DeviceRegistry
    private var registryGeneration = 0
    /// Fault injection for the delivery tests only: the process exits in the MQTT thread's
    /// flush, before committing a batch, at the N-th non-empty flush.
    private let testExitAtFlush = ProcessInfo.processInfo.environment["AUTOVOLT_TEST_EXIT_AT_FLUSH"].flatMap(Int.init)
    private var flushesSeen = 0
    /// Alarm evaluation (AUTOVOLT_ALARMS): fed by the drain, stored by the alarms stage.
    let alarms: AlarmService?

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

    public init(config: WorkerConfig, logger: Logger) throws {
        self.config = config
        self.logger = logger
        registry = config.devices
        journal = try Self.openJournal(config)
        // The drain, ledger and scheduler hold one connection each at most, /health one, and the
        // analytics reads as many as may run at once.
        database = try WorkerDatabase.open(config, poolSize: 4 + config.httpQueryConcurrency)
        alarms = AlarmService(config: config, storage: { [database] in database.alarmStorage(writeConcern: $0) }, logger: logger,
                              startedAt: SystemClock.nowMillis())
        if database.mongo == nil {
            logger.warning("PostgreSQL backend: the alarm and statement HTTP routes are not on PostgreSQL yet (alarms and statements are: use autovolt-worker alarms and statements)")
        }
        let pending = journal.pendingRecords
        if pending > 0 {
            logger.notice("journal holds messages from before the last stop; storing them first", metadata: ["pending": "\(pending)"])
        }
    }

    /// Checks the database once, up front: a database that belongs to another program stops the
    /// worker (exit 78) before it consumes anything. An unreachable database is not an error here.
    public func checkSchemaIfReachable() throws {
        do {
            try database.ensureSchema()
            schemaReady = true
            setMongo(reachable: true, error: nil)
        } catch let conflict as Schema.Conflict {
            throw conflict
        } catch let refusal as PostgresSchema.Refusal {
            throw refusal
        } catch {
            logger.warning("\(database.backendName) not reachable at start-up; journaling until it is", metadata: ["error": "\(error)"])
            setMongo(reachable: false, error: "\(error)")
        }
    }

    // MARK: Stages (run by WorkerStages as services of one ServiceGroup)

    /// Runs one stage's loop on the calling thread until `requestStop(stage)`; blocking, so the
    /// caller gives it a thread of its own.
    public func runStage(_ stage: StageMonitor.Stage) {
        switch stage {
        case .drain:
            drainLoop()
            let left = journal.pendingRecords
            if left > 0 {
                logger.notice("stopped with messages still in the journal; they are stored at the next start", metadata: ["pending": "\(left)"])
            }
        case .ledger: ledgerLoop()
        case .scheduler: schedulerLoop()
        case .alarms:
            guard let alarms else { return idleUntilStopped(.alarms) }
            alarms.run(schemaReady: { schemaReady }, writeConcern: { try self.writeConcern },
                       beat: { stallIfTesting(.alarms); stages.beat(.alarms, now: SystemClock.nowMillis()) })
        }
    }

    /// Asks a stage to finish: the drain first stores what the journal holds while the database
    /// answers; the others stop at their next step.
    public func requestStop(_ stage: StageMonitor.Stage) {
        stateLock.withLock { _ = stopping.insert(stage) }
        switch stage {
        case .drain: wakeup.signal()
        case .ledger: ledgerWakeup.signal()
        case .scheduler: schedulerWakeup.signal()
        case .alarms: alarms?.requestStop()
        }
    }

    private func isStopping(_ stage: StageMonitor.Stage) -> Bool { stateLock.withLock { stopping.contains(stage) } }

    /// Connects to the broker; messages flow into the journal from libmosquitto's thread.
    public func startMQTT() throws {
        let source = try MQTTSource(settings: config.mqtt, handler: self, logger: logger)
        source.onConnectionChange = { [metrics, weak self] connected in
            metrics.mqttConnected.record(connected ? 1 : 0)
            // A (re)connection is when the broker starts handing over what it queued meanwhile.
            self?.mqttConnectedSince.withLock { $0 = connected ? SystemClock.nowMillis() : nil }
        }
        stateLock.withLock { mqtt = source }
        source.start()
    }

    /// Stops taking messages; pending PUBACKs are flushed. If the MQTT thread is held in
    /// `receive` (journal full or failing), it is not waited for: its message was never
    /// acknowledged, so the broker delivers it again after a restart.
    public func stopMQTT() {
        stateLock.withLock { mqtt }?.stop(timeout: 5)
    }

    /// Reads `AUTOVOLT_DEVICES` again (SIGHUP, `systemctl reload`). A file that does not parse is
    /// refused with one log line naming the problem, and the registry in force stays. New readings
    /// use the new registry; the history keeps the classrooms it was stored with until
    /// `rebuild-ledger` and `recalculate` apply the new one.
    @discardableResult
    public func reloadRegistry() -> Bool {
        let path = config.devicesPath
        let loaded: DeviceRegistry
        do {
            loaded = try DeviceRegistry.parse(toml: String(contentsOfFile: path, encoding: .utf8))
        } catch let error as DeviceRegistry.ParseError {
            logger.error("device registry not reloaded; keeping the one in force", metadata: ["path": "\(path)", "error": "\(error.message)"])
            return false
        } catch {
            logger.error("device registry not reloaded; keeping the one in force", metadata: ["path": "\(path)", "error": "\(error.localizedDescription)"])
            return false
        }
        stateLock.withLock {
            registry = loaded
            registryGeneration += 1
        }
        logger.notice("device registry reloaded", metadata: ["path": "\(path)", "devices": "\(loaded.devices.count)"])
        alarms?.reload(registry: loaded, rulesPath: nil)
        wakeup.signal()
        ledgerWakeup.signal()
        return true
    }

    /// Reads `AUTOVOLT_ALARMS` again (SIGHUP, after the registry); a bad file keeps the rules in force.
    public func reloadAlarmRules() {
        alarms?.reload(registry: currentRegistry.registry, rulesPath: config.alarmsPath)
    }

    /// The device registry in force (the dashboard's registered boards per classroom).
    public var registryInForce: DeviceRegistry { currentRegistry.registry }

    private var currentRegistry: (registry: DeviceRegistry, generation: Int) {
        stateLock.withLock { (registry, registryGeneration) }
    }

    private let shutdownBegun = Mutex(false)
    /// Graceful shutdown has begun: long-lived responses (the alarm stream) end.
    public var isShuttingDown: Bool { shutdownBegun.withLock { $0 } }
    public func beginShutdown() { shutdownBegun.withLock { $0 = true } }

    /// Set when the drain loop hit something it cannot wait out (a foreign database).
    public var fatal: Error? { stateLock.withLock { fatalError } }

    public var status: Status {
        let (reachable, lastError, lastSuccess, totals, progressAt) = stateLock.withLock {
            (mongoReachable, mongoLastError, mongoLastSuccessAt, self.totals, drainProgressAt)
        }
        let (concern, failingSince, lastFailure, advice) = stateLock.withLock {
            (writeConcernInForce, writeConcernFailingSince, writeConcernLastFailure, replicaSetAdvice)
        }
        let loopAt = stages.lastBeat(.drain)
        let source = stateLock.withLock { mqtt }
        let bytes = journal.usedBytes
        let pending = journal.pendingRecords
        let sinceProgress = SystemClock.nowMillis() - progressAt
        return Status(
            mqttConnected: source?.isConnected ?? false, mqttLastMessageAt: source?.lastMessageAt, mqttLastError: source?.lastError,
            mongoReachable: reachable, mongoLastError: lastError, mongoLastSuccessAt: lastSuccess,
            journalPending: pending, journalBytes: bytes, journalMaxBytes: journal.maxBytes,
            journalFull: bytes >= journal.maxBytes, journalPath: journal.path, totals: totals, drainLoopAt: loopAt,
            drainStalledForMillis: pending > 0 && sinceProgress > 0 ? sinceProgress : nil,
            writeConcern: concern, writeConcernFailingSince: failingSince,
            writeConcernLastFailure: lastFailure?.error, writeConcernLastFailureAt: lastFailure?.at,
            replicaSetAdvice: advice)
    }

    // MARK: HTTP ingest

    public enum HTTPIngestOutcome: Sendable, Equatable {
        case committed
        /// The journal is at AUTOVOLT_JOURNAL_MAX_BYTES: nothing was written.
        case journalFull
        case failed(String)
    }

    /// The same door as MQTT for gateways (`POST /api/power-analytics/telemetry`): the messages
    /// are committed to the journal in one transaction, and the drain decodes and stores them
    /// exactly as if they had come from the broker. Blocks on the journal's disk write: call it
    /// from a thread of its own, never from the cooperative pool.
    public func ingestHTTP(_ messages: [(topic: String, payload: [UInt8])]) -> HTTPIngestOutcome {
        if journal.isFull {
            reportJournalFull()
            return .journalFull
        }
        do {
            try journal.appendBatch(messages, receivedAt: SystemClock.nowMillis())
        } catch {
            logger.error("cannot write an HTTP ingest request to the journal", metadata: ["error": "\(error)"])
            return .failed("\(error)")
        }
        for message in messages { metrics.received(topic: message.topic) }
        wakeup.signal()
        return .committed
    }

    /// The secrets a signed HTTP ingest request of this device may be signed with: its own from
    /// the registry, and the shared one.
    public func ingestSecrets(forDevice name: String?) -> [String] {
        var secrets: [String] = []
        if let name, let own = currentRegistry.registry.devices[name]?.hmacSecret { secrets.append(own) }
        if let shared = config.ingestSecret { secrets.append(shared) }
        return secrets
    }

    // MARK: MQTT thread

    /// Stages the message in the journal; `flush` commits it before its PUBACK can be written
    /// (MQTTSource calls `flush` after each read of the socket, before any write).
    public func receive(topic: String, payload: UnsafeRawBufferPointer, retained: Bool) {
        let receivedAt = SystemClock.nowMillis()
        metrics.received(topic: topic)
        if let exitAt = testExitAtMessage {
            messagesSeen += 1
            if messagesSeen >= exitAt { _exit(86) }
        }
        journal.stage(topic: topic, payload: payload, receivedAt: receivedAt, retained: retained)
    }

    /// Makes the staged messages durable (one commit for the batch) before returning, and so
    /// before their PUBACKs. If the journal cannot take them (full, or a disk error) we wait
    /// here: the broker keeps the messages queued for our persistent session, and nothing
    /// unacknowledged is ever lost.
    public func flush() {
        if journal.stagedCount == 0 { return }
        if let exitAt = testExitAtFlush {
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
                    wakeup.signal()
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

    private func reportJournalFull() {
        let now = SystemClock.nowMillis()
        let shouldLog: Bool = stateLock.withLock {
            if let since = journalFullSince, now - since < 30_000 { return false }
            journalFullSince = now
            return true
        }
        if shouldLog {
            logger.critical("JOURNAL FULL: not accepting messages until MongoDB takes the backlog; the broker holds them meanwhile", metadata: [
                "journal_bytes": "\(journal.usedBytes)", "max_bytes": "\(journal.maxBytes)", "pending": "\(journal.pendingRecords)",
            ])
        }
    }

    // MARK: Drain thread

    private func drainLoop() {
        let decoder = MessageDecoder(clockPolicy: config.clockPolicy)
        var processor: IngestProcessor?
        var processorGeneration = -1
        var backoff = 0.2
        var draining = false
        while true {
            stallIfTesting(.drain)
            stages.beat(.drain, now: SystemClock.nowMillis())
            let stopping = isStopping(.drain)
            if stopping && !draining {
                draining = true
            }
            do {
                if !schemaReady {
                    try database.ensureSchema()
                    schemaReady = true
                    logger.info("\(database.backendName) schema ready", metadata: ["database": "\(database.name)"])
                }
                let active: IngestProcessor
                let (registry, generation) = currentRegistry
                if let processor, processorGeneration == generation {
                    active = processor
                } else {
                    let concern = try writeConcern
                    active = IngestProcessor(storage: database.ingestStorage(writeConcern: concern), decoder: decoder,
                                             registry: registry, logger: logger)
                    active.alarms = alarms
                    processor = active
                    processorGeneration = generation
                }
                let records = try journal.read(limit: config.batchSize)
                updateJournalGauges()
                if records.isEmpty {
                    stateLock.withLock { drainProgressAt = SystemClock.nowMillis() }
                    if stopping { break }
                    wakeup.wait(seconds: 1)
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
                let now = SystemClock.nowMillis()
                for record in records {
                    metrics.ingestLatency.recordMilliseconds(max(0, now - record.receivedAt))
                }
                metrics.record(outcome)
                stateLock.withLock {
                    totals.add(outcome)
                    drainProgressAt = now
                }
                if outcome.inserted > 0 { ledgerWakeup.signal() }
                setMongo(reachable: true, error: nil)
                if acknowledged.count > 0 { noteWriteConcernSatisfied(.drain) }
                backoff = 0.2
            } catch let conflict as Schema.Conflict {
                logger.critical("\(conflict)")
                stateLock.withLock { fatalError = conflict }
                break
            } catch let refusal as PostgresSchema.Refusal {
                logger.critical("\(refusal)")
                stateLock.withLock { fatalError = refusal }
                break
            } catch {
                // A refused document never reaches here (IngestProcessor sets it aside); what does
                // keeps its batch in the journal (see `WriteFailure`).
                let failure = WriteFailure(error)
                // A write concern failure is an answer: the server is there, the writes are not
                // acknowledged as asked.
                setMongo(reachable: failure.serverAnswered, error: "\(error)")
                metrics.storeErrors.increment()
                if stopping {
                    noteWriteFailure(failure, error, .drain, retryIn: nil)
                    logger.warning("\(database.backendName) unavailable during shutdown; the journal keeps the rest", metadata: ["error": "\(error)"])
                    break
                }
                noteWriteFailure(failure, error, .drain, retryIn: backoff)
                wakeupSleep(backoff * Double.random(in: 0.8...1.2), .drain)
                backoff = min(backoff * 2, 15)
            }
        }
        updateJournalGauges()
    }

    // MARK: Ledger thread

    /// Advances the ledger of every device with unprocessed events (or a dip waiting to settle).
    /// Separate from the drain so a slow derivation never holds back ingestion.
    private func ledgerLoop() {
        var backoff = 0.2
        var appliedGeneration = 0
        while !isStopping(.ledger) {
            stallIfTesting(.ledger)
            stages.beat(.ledger, now: SystemClock.nowMillis())
            guard schemaReady else {
                ledgerWakeup.wait(seconds: 0.5)
                continue
            }
            // What the loop wrote with the write concern acknowledged: only that may end a write
            // concern failure (an idle loop, at night, writes nothing and proves nothing).
            let acknowledged = MongoClient.AcknowledgedWrites()
            do {
                let (batches, progressed, recomputed) = try MongoClient.countingAcknowledgedWrites(in: acknowledged) {
                    () throws -> (batches: [[String]], progressed: Bool, recomputed: Int) in
                    let store: LedgerStore
                    let concern = try writeConcern
                    if let ledger {
                        store = ledger
                    } else {
                        store = LedgerStore(storage: database.ledgerStorage(writeConcern: concern), registry: currentRegistry.registry,
                                            timeZone: config.timeZone, owner: "worker:\(config.mqtt.clientID)",
                                            policy: config.ledgerPolicy, logger: logger)
                        stateLock.withLock { ledger = store }
                    }
                    let aggregation: AggregationStore
                    if let existing = stateLock.withLock({ aggregates }) {
                        aggregation = existing
                    } else {
                        aggregation = AggregationStore(storage: database.aggregationStorage(writeConcern: concern),
                                                       registry: currentRegistry.registry, timeZone: config.timeZone, logger: logger)
                        stateLock.withLock { aggregates = aggregation }
                    }
                    let (registry, generation) = currentRegistry
                    if generation != appliedGeneration {
                        store.registry = registry
                        aggregation.registry = registry
                        appliedGeneration = generation
                    }
                    let now = SystemClock.nowMillis()
                    // In batches: a batch costs the database the same few round trips as one device.
                    let batches = try store.findWork(now: now)
                    var progressed = false
                    if !batches.isEmpty {
                        stateLock.withLock { ledgerBusy = true }
                        defer { stateLock.withLock { ledgerBusy = false } }
                        for batch in batches {
                            if isStopping(.ledger) { break }
                            stages.beat(.ledger, now: SystemClock.nowMillis())
                            let results = try store.step(batch, now: SystemClock.nowMillis())
                            if results.values.contains(where: { if case .done = $0 { true } else { false } }) { progressed = true }
                        }
                        metrics.recordLedger(store.snapshot)
                    }
                    // Days whose ledger changed: today's figures move during the day.
                    let recomputed = try aggregation.processDirtyDays(now: SystemClock.nowMillis())
                    return (batches, progressed, recomputed)
                }
                if acknowledged.count > 0 { noteWriteConcernSatisfied(.ledger) }
                backoff = 0.2
                if batches.isEmpty && recomputed == 0 {
                    ledgerWakeup.wait(seconds: 1)
                } else if !batches.isEmpty && !progressed {
                    // Every device is held by other workers: let them finish.
                    ledgerWakeup.wait(seconds: 0.5)
                }
            } catch {
                // Ledger and aggregate writes hold only what the worker derived, so a refusal is a
                // fault of ours or of the database, never of one device: it is retried (skipping
                // a step would lose energy), loudly when it will not pass by itself.
                noteWriteFailure(WriteFailure(error), error, .ledger, retryIn: backoff)
                wakeupSleep(backoff, .ledger)
                backoff = min(backoff * 2, 15)
            }
        }
    }

    /// Closes days and runs the nightly reconciliation (see Scheduler); checks every 30 s.
    private func schedulerLoop() {
        let startedAt = clock.now()
        var scheduler: Scheduler?
        var appliedGeneration = 0
        while !isStopping(.scheduler) {
            stallIfTesting(.scheduler)
            stages.beat(.scheduler, now: SystemClock.nowMillis())
            guard schemaReady, let aggregation = stateLock.withLock({ aggregates }) else {
                schedulerWakeup.wait(seconds: 1)
                continue
            }
            do {
                let active: Scheduler
                let (registry, generation) = currentRegistry
                if scheduler != nil, generation != appliedGeneration { scheduler = nil }
                if let scheduler {
                    active = scheduler
                } else {
                    appliedGeneration = generation
                    let concern = try writeConcern
                    let statements = StatementStore(storage: database.statementStorage(writeConcern: concern), registry: registry,
                                                    timeZone: config.timeZone, logger: logger)
                    let storage = database.reconciliationStorage(writeConcern: concern)
                    active = Scheduler(storage: storage, schedule: Schedule(reconcileAt: config.reconcileAt, statementAt: config.statementAt),
                                       timeZone: config.timeZone, owner: "worker:\(config.mqtt.clientID)", aggregation: aggregation,
                                       reconciler: Reconciler(storage: storage, registry: registry, timeZone: config.timeZone, logger: logger),
                                       statements: statements, logger: logger, listeningSince: startedAt,
                                       intakeReadiness: { [unowned self] in intakeReadiness() })
                    scheduler = active
                }
                try active.tick(now: clock.now())
                try active.rejudgeChangedDays(now: clock.now())
                try dropExpiredPartitionsHourly(now: clock.now())
            } catch {
                logger.warning("scheduler: job failed; retrying later", metadata: ["error": "\(error)"])
            }
            // A reconciliation waiting for its day's data looks again soon.
            schedulerWakeup.wait(seconds: scheduler?.isWaitingForData == true ? 5 : 30)
        }
    }

    /// PostgreSQL's retention (contract section 9): whole monthly partitions of telemetry_events
    /// (730 days) and rejected_messages (30 days) are dropped, never a DELETE; MongoDB's TTL
    /// indexes do the same there by themselves.
    private func dropExpiredPartitionsHourly(now: EpochMillis) throws {
        guard case .postgresql(let pool) = database else { return }
        let due = retentionCheckedAt.withLock { last in
            guard last.map({ now - $0 >= 3_600_000 }) ?? true else { return false }
            last = now
            return true
        }
        guard due else { return }
        let dropped = try PostgresIngestStorage(pool: pool).dropExpiredPartitions(now: now)
        if !dropped.isEmpty {
            logger.notice("retention: dropped expired partitions", metadata: ["partitions": "\(dropped.joined(separator: ","))"])
        }
    }
    private let retentionCheckedAt = Mutex<EpochMillis?>(nil)

    /// After (re)connecting, the broker hands over what it queued for this session at once, at
    /// tens of thousands of messages a second: it is taken as delivered after a lull of
    /// `brokerBacklogLull` in the messages, or after `brokerBacklogSettle` on a campus that never
    /// falls quiet.
    static let brokerBacklogSettle: EpochMillis = 30_000
    static let brokerBacklogLull: EpochMillis = 2_000
    /// Since when the broker connection has been up (set by MQTTSource's connection callback).
    private let mqttConnectedSince = Mutex<EpochMillis?>(nil)

    /// What of this worker's intake is still on its way to the database: the journal's messages,
    /// and the broker's queue for this session while it is not connected or has just connected.
    /// A reconciliation waits for it (Scheduler), so a night's backlog is judged once it is in.
    func intakeReadiness() -> DataReadiness {
        let now = SystemClock.nowMillis()
        let status = self.status
        var pending: [String] = []
        if status.journalPending > 0 { pending.append("\(status.journalPending) messages in the journal not yet stored") }
        let since: EpochMillis? = status.mqttConnected ? mqttConnectedSince.withLock { $0 } : nil
        if let since {
            let quietFor = now - max(since, status.mqttLastMessageAt ?? since)
            if now - since < Self.brokerBacklogSettle && quietFor < Self.brokerBacklogLull {
                pending.append("connected to the broker \((now - since) / 1000) s ago and its messages still arriving; what it queued for this session may not all be in")
            }
        } else {
            pending.append("not connected to the broker, which may hold queued messages")
        }
        return DataReadiness(pending: pending)
    }

    public var ledgerCounters: LedgerStore.Counters? { stateLock.withLock { ledger?.snapshot } }
    public var ledgerIsProcessing: Bool { stateLock.withLock { ledgerBusy } }

    /// A stage this backend does not run yet: it goes round (for the watchdog) until stopped.
    private func idleUntilStopped(_ stage: StageMonitor.Stage) {
        while !isStopping(stage) {
            stages.beat(stage, now: SystemClock.nowMillis())
            wakeupSleep(1, stage)
        }
    }

    private func stallIfTesting(_ stage: StageMonitor.Stage) {
        guard stage == testStalledStage else { return }
        while !isStopping(stage) { Thread.sleep(forTimeInterval: 0.1) }
    }

    private func wakeupSleep(_ seconds: Double, _ stage: StageMonitor.Stage) {
        // Sleep in slices so a stop request is noticed promptly.
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline, !isStopping(stage) {
            Thread.sleep(forTimeInterval: min(0.1, max(0, deadline.timeIntervalSinceNow)))
        }
    }

    /// The write concern of the worker's MongoDB writes, resolved at the first contact and kept;
    /// PostgreSQL has none (a committed transaction is durable), so its storages ignore it.
    private var writeConcern: WriteConcern {
        get throws {
            guard let client else { return .acknowledged }
            // One stage resolves it (and warns about a replica set the URI does not name) while
            // the others wait for its answer: said once, not once per stage.
            return try writeConcernResolution.withLock { () throws -> WriteConcern in
                if let known = stateLock.withLock({ writeConcernInForce }) { return known }
                return try resolveWriteConcern(client)
            }
        }
    }
    private let writeConcernResolution = NSLock()

    /// The write concern from the server's `hello` (once, at the first contact), and the check
    /// that a replica set member is reached through a URI that names the set.
    private func resolveWriteConcern(_ client: MongoClient) throws(MongoError) -> WriteConcern {
        let hello = try client.hello()
        let concern = config.writeConcern.resolve(isReplicaSet: hello["setName"]?.stringValue != nil)
        logger.info("MongoDB write concern", metadata: ["write_concern": "\(concern)"])
        let advice = client.replicaSetAdvice(hello: hello)
        if let advice {
            logger.warning("MongoDB is a member of replica set \(advice.setName) but AUTOVOLT_MONGODB_URI does not name it: the worker talks to this one server directly and will not follow a failover to a new primary; set AUTOVOLT_MONGODB_URI=\(advice.suggestedURI)", metadata: [
                "replica_set": "\(advice.setName)", "uri_to_use": "\(advice.suggestedURI)",
                "writable_primary": "\(advice.isWritablePrimary)",
            ])
        }
        stateLock.withLock {
            writeConcernInForce = concern
            replicaSetAdvice = advice
        }
        return concern
    }

    /// What a failed write of the drain or the ledger is, for what is said and shown: the one
    /// decision point, from `MongoError`'s classification. Every case keeps what failed (the
    /// journal keeps its batch, the ledger its step) and is retried with backoff.
    enum WriteFailure {
        /// Applied, but not acknowledged by the write concern in time (no majority): it passes
        /// when the replica set is whole again. One warning, /health degraded.
        case writeConcernNotMet(MongoError)
        /// The write concern in force cannot be satisfied by this deployment (79, 100): it never
        /// passes by itself. An error naming AUTOVOLT_MONGODB_WRITE_CONCERN, repeated every
        /// `unsatisfiableRepeatMillis`, /health degraded.
        case writeConcernUnsatisfiable(MongoError)
        /// An outage, a stepped-down primary: waited out, a warning per retry.
        case transient
        /// Something only a person can fix (authentication, a command the deployment refuses, an
        /// unknown code): an error per retry.
        case persistent

        init(_ error: any Error) {
            guard let error = error as? MongoError else {
                // PostgreSQL has no write concern: its errors say themselves what they are. Any
                // other error (the journal's) is waited out.
                let disposition = (error as? any StorageFailure)?.storageDisposition ?? .transient
                self = disposition == .transient ? .transient : .persistent
                return
            }
            if error.isUnsatisfiableWriteConcern {
                self = .writeConcernUnsatisfiable(error)
                return
            }
            switch error.disposition {
            case .transient: self = error.isWriteConcernFailure ? .writeConcernNotMet(error) : .transient
            case .persistent, .refusedDocument, .duplicateKey: self = .persistent
            }
        }

        /// The server answered (the write concern is the problem, not the connection).
        var serverAnswered: Bool {
            switch self {
            case .writeConcernNotMet, .writeConcernUnsatisfiable: true
            case .transient, .persistent: false
            }
        }
    }

    /// How often the error about an unsatisfiable write concern is repeated while it lasts.
    private let unsatisfiableRepeatMillis: EpochMillis =
        ProcessInfo.processInfo.environment["AUTOVOLT_TEST_WRITE_CONCERN_REPEAT_MS"].flatMap(EpochMillis.init) ?? 60_000
    /// When that error was last said (nil: not during this failure).
    private var unsatisfiableSaidAt: EpochMillis?

    /// Says and records a failed write of `stage` (`retryIn`: the backoff before the retry; nil
    /// when stopping, which records the write concern's state and says nothing about a retry).
    private func noteWriteFailure(_ failure: WriteFailure, _ error: any Error, _ stage: StageMonitor.Stage, retryIn: Double?) {
        switch failure {
        case .writeConcernNotMet(let error): noteWriteConcernFailure(error, stage, unsatisfiable: false)
        case .writeConcernUnsatisfiable(let error): noteWriteConcernFailure(error, stage, unsatisfiable: true)
        case .transient, .persistent: break
        }
        guard let retryIn else { return }
        var metadata: Logger.Metadata = ["error": "\(error)", "retry_in_s": "\(String(format: "%.1f", retryIn))"]
        if stage == .drain { metadata["pending"] = "\(journal.pendingRecords)" }
        let step = stage == .drain ? "" : "ledger step: "
        switch failure {
        case .writeConcernNotMet:
            logger.debug("\(step)write concern not satisfied; retrying", metadata: metadata)
        case .writeConcernUnsatisfiable:
            logger.debug("\(step)write concern cannot be satisfied; retrying", metadata: metadata)
        case .transient:
            logger.warning(stage == .drain ? "cannot store to MongoDB; retrying" : "ledger step failed; retrying", metadata: metadata)
        case .persistent:
            logger.error(stage == .drain
                ? "MongoDB refuses the batch for a reason that does not pass by itself; the journal keeps it; retrying"
                : "ledger step refused by the database; retrying (this does not pass by itself)", metadata: metadata)
        }
    }

    /// What an operator does about an unsatisfiable write concern (in the log and in /health's
    /// `mongodb.write_concern.last_failure`).
    static let unsatisfiableAdvice = "the write concern in force cannot be satisfied by this MongoDB deployment: set AUTOVOLT_MONGODB_WRITE_CONCERN (auto, majority or 1) to one it can satisfy, or fix the deployment (its members, its journal), and restart the worker"

    /// A write of `stage` failed its write concern. Not met in time (no majority): the first
    /// such failure (while none is open) is one warning; the retries say nothing more until the
    /// writes are acknowledged again (`noteWriteConcernSatisfied`), which is one notice.
    /// Unsatisfiable: an error saying what to do, at once and then at most every
    /// `unsatisfiableRepeatMillis` while it lasts.
    private func noteWriteConcernFailure(_ error: MongoError, _ stage: StageMonitor.Stage, unsatisfiable: Bool) {
        let now = SystemClock.nowMillis()
        let (began, concern, say): (Bool, WriteConcern?, Bool) = stateLock.withLock {
            let began = writeConcernFailing.isEmpty
            writeConcernFailing.insert(stage)
            if began { writeConcernFailingSince = now }
            writeConcernLastFailure = (now, unsatisfiable ? "\(error); \(Self.unsatisfiableAdvice)" : "\(error)")
            var say = false
            if unsatisfiable, unsatisfiableSaidAt.map({ now - $0 >= unsatisfiableRepeatMillis }) ?? true {
                unsatisfiableSaidAt = now
                say = true
            }
            return (began, writeConcernInForce, say)
        }
        let metadata: Logger.Metadata = [
            "write_concern": "\(concern.map { "\($0)" } ?? "-")", "error": "\(error)", "stage": "\(stage.rawValue)",
            "pending": "\(journal.pendingRecords)",
        ]
        if unsatisfiable {
            guard say else { return }
            logger.error("MongoDB cannot satisfy the write concern in force (code \(error.code)); nothing leaves the journal until an operator acts, /health says degraded: \(Self.unsatisfiableAdvice)", metadata: metadata.merging([
                "repeated_every_s": "\(unsatisfiableRepeatMillis / 1000)",
            ]) { $1 })
            return
        }
        guard began else { return }
        logger.warning("MongoDB applies the writes but does not acknowledge them with the write concern in force (is a majority of the replica set up?); nothing leaves the journal until it does, and the writes are retried; /health says degraded meanwhile", metadata: metadata)
    }

    /// A write of `stage` was acknowledged with the write concern in force (call it only then:
    /// `MongoClient.countingAcknowledgedWrites`; a loop that wrote nothing proves nothing).
    /// The last stage whose writes failed it ends the failure, with one notice.
    private func noteWriteConcernSatisfied(_ stage: StageMonitor.Stage) {
        let now = SystemClock.nowMillis()
        let ended: EpochMillis? = stateLock.withLock {
            guard writeConcernFailing.remove(stage) != nil, writeConcernFailing.isEmpty, let since = writeConcernFailingSince else { return nil }
            writeConcernFailingSince = nil
            unsatisfiableSaidAt = nil
            return since
        }
        guard let since = ended else { return }
        logger.notice("MongoDB acknowledges the writes with the write concern in force again", metadata: [
            "failed_for_s": "\(String(format: "%.1f", Double(now - since) / 1000))",
        ])
    }

    private func updateJournalGauges() {
        metrics.journalPending.record(journal.pendingRecords)
        metrics.journalBytes.record(Int(journal.usedBytes))
    }

    /// `error`, when given, becomes `mongodb.last_error` (also for a reachable server whose
    /// writes fail their write concern); reachable without an error is a success.
    private func setMongo(reachable: Bool, error: String?) {
        let changed: Bool = stateLock.withLock {
            let was = mongoReachable
            mongoReachable = reachable
            if let error { mongoLastError = error } else if reachable { mongoLastSuccessAt = SystemClock.nowMillis() }
            return was != reachable
        }
        metrics.mongoReachable.record(reachable ? 1 : 0)
        if changed && reachable { logger.info("\(database.backendName) reachable", metadata: ["database": "\(database.name)"]) }
    }

}
