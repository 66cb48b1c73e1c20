import AutoVoltCore
import AutoVoltMongo
import Foundation
import Logging
import Synchronization

/// The process's link to its database, shared by the stages that write: whether the schema is
/// checked, whether the server answers, the write concern of MongoDB writes (resolved once, at
/// the first contact) and whether writes meet it. One place says each of these once, however
/// many stages meet it.
final class DatabaseLink: Sendable {
    let database: WorkerDatabase
    private let config: WorkerConfig
    private let logger: Logger
    private let metrics: WorkerMetrics
    private let clock: any WorkerClock
    /// How often the error about an unsatisfiable write concern is repeated while it lasts.
    private let unsatisfiableRepeatMillis: EpochMillis

    private struct State {
        var schemaReady = false
        var reachable = false
        var lastError: String?
        var lastSuccessAt: EpochMillis?
        var writeConcernInForce: WriteConcern?
        /// The stages whose last write failed its write concern, and since when any has.
        var writeConcernFailing: Set<StageMonitor.Stage> = []
        var writeConcernFailingSince: EpochMillis?
        var writeConcernLastFailure: (at: EpochMillis, error: String)?
        var replicaSetAdvice: MongoClient.ReplicaSetAdvice?
        /// When the unsatisfiable write concern error was last said (nil: not during this failure).
        var unsatisfiableSaidAt: EpochMillis?
    }
    private let state = Mutex(State())
    /// One stage resolves the write concern (and warns about a replica set the URI does not
    /// name) while the others wait for its answer: said once, not once per stage.
    private let writeConcernResolution = Mutex(())

    init(database: WorkerDatabase, config: WorkerConfig, metrics: WorkerMetrics, clock: any WorkerClock, faults: FaultInjection,
         logger: Logger) {
        self.database = database
        self.config = config
        self.metrics = metrics
        self.clock = clock
        self.logger = logger
        unsatisfiableRepeatMillis = faults.writeConcernRepeatMillis ?? 60_000
    }

    // MARK: Schema

    var schemaReady: Bool { state.withLock { $0.schemaReady } }

    /// Checks (and on PostgreSQL migrates) the schema unless already done. A database that
    /// belongs to another program throws `Schema.Conflict` or `PostgresSchema.Refusal`.
    func ensureSchema() throws {
        guard !schemaReady else { return }
        try database.ensureSchema()
        state.withLock { $0.schemaReady = true }
        logger.info("\(database.backendName) schema ready", metadata: ["database": "\(database.name)"])
    }

    /// Checks the database once, up front: a database that belongs to another program stops the
    /// worker (exit 78) before it consumes anything. An unreachable database is not an error here.
    func checkSchemaIfReachable() throws {
        do {
            try database.ensureSchema()
            state.withLock { $0.schemaReady = true }
            setReachable(true, error: nil)
        } catch let conflict as Schema.Conflict {
            throw conflict
        } catch let refusal as PostgresSchema.Refusal {
            throw refusal
        } catch {
            logger.warning("\(database.backendName) not reachable at start-up; journaling until it is", metadata: ["error": "\(error)"])
            setReachable(false, error: "\(error)")
        }
    }

    // MARK: Reachability

    struct Health: Sendable {
        var reachable: Bool
        var lastError: String?
        var lastSuccessAt: EpochMillis?
        var writeConcern: WriteConcern?
        var writeConcernFailingSince: EpochMillis?
        var writeConcernLastFailure: (at: EpochMillis, error: String)?
        var replicaSetAdvice: MongoClient.ReplicaSetAdvice?
    }

    var health: Health {
        state.withLock {
            Health(reachable: $0.reachable, lastError: $0.lastError, lastSuccessAt: $0.lastSuccessAt, writeConcern: $0.writeConcernInForce,
                   writeConcernFailingSince: $0.writeConcernFailingSince, writeConcernLastFailure: $0.writeConcernLastFailure,
                   replicaSetAdvice: $0.replicaSetAdvice)
        }
    }

    /// `error`, when given, becomes `last_error` (also for a reachable server whose writes fail
    /// their write concern); reachable without an error is a success.
    func setReachable(_ reachable: Bool, error: String?) {
        let now = clock.now()
        let changed: Bool = state.withLock {
            let was = $0.reachable
            $0.reachable = reachable
            if let error { $0.lastError = error } else if reachable { $0.lastSuccessAt = now }
            return was != reachable
        }
        metrics.mongoReachable.record(reachable ? 1 : 0)
        if changed && reachable { logger.info("\(database.backendName) reachable", metadata: ["database": "\(database.name)"]) }
    }

    // MARK: Write concern

    /// The write concern of the worker's MongoDB writes, resolved at the first contact and kept;
    /// PostgreSQL has none (a committed transaction is durable), so its storages ignore it.
    var writeConcern: WriteConcern {
        get throws {
            guard let client = database.mongo else { return .acknowledged }
            return try writeConcernResolution.withLock { _ throws -> WriteConcern in
                if let known = state.withLock({ $0.writeConcernInForce }) { return known }
                return try resolveWriteConcern(client)
            }
        }
    }

    /// The write concern from the server's `hello`, and the check that a replica set member is
    /// reached through a URI that names the set.
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
        state.withLock {
            $0.writeConcernInForce = concern
            $0.replicaSetAdvice = advice
        }
        return concern
    }

    /// What a failed write of the drain or the ledger is, for what is said and shown: the one
    /// decision point, from the storage's classification. Every case keeps what failed (the
    /// journal keeps its batch, the ledger its step) and is retried with backoff.
    enum WriteFailure {
        /// Applied, but not acknowledged by the write concern in time (no majority): it passes
        /// when the replica set is whole again. One warning, /health degraded.
        case writeConcernNotMet(MongoError)
        /// The write concern in force cannot be satisfied by this deployment (79, 100): it never
        /// passes by itself. An error naming AUTOVOLT_MONGODB_WRITE_CONCERN, repeated every
        /// `unsatisfiableRepeatMillis`, /health degraded.
        case writeConcernUnsatisfiable(MongoError)
        /// An outage, a stepped-down primary, a deadlock: waited out, a warning per retry.
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

    /// Says and records a failed write of `stage` (`retryIn`: the backoff before the retry; nil
    /// when stopping, which records the write concern's state and says nothing about a retry).
    /// `pending`: the journal's backlog, said with the drain's failures.
    func noteWriteFailure(_ failure: WriteFailure, _ error: any Error, _ stage: StageMonitor.Stage, retryIn: Double?, pending: Int?) {
        switch failure {
        case .writeConcernNotMet(let error): noteWriteConcernFailure(error, stage, unsatisfiable: false, pending: pending)
        case .writeConcernUnsatisfiable(let error): noteWriteConcernFailure(error, stage, unsatisfiable: true, pending: pending)
        case .transient, .persistent: break
        }
        guard let retryIn else { return }
        var metadata: Logger.Metadata = ["error": "\(error)", "retry_in_s": "\(String(format: "%.1f", retryIn))"]
        if let pending { metadata["pending"] = "\(pending)" }
        let step = stage == .drain ? "" : "ledger step: "
        let backend = database.backendName
        switch failure {
        case .writeConcernNotMet:
            logger.debug("\(step)write concern not satisfied; retrying", metadata: metadata)
        case .writeConcernUnsatisfiable:
            logger.debug("\(step)write concern cannot be satisfied; retrying", metadata: metadata)
        case .transient:
            logger.warning(stage == .drain ? "cannot store to \(backend); retrying" : "ledger step failed; retrying", metadata: metadata)
        case .persistent:
            logger.error(stage == .drain
                ? "\(backend) refuses the batch for a reason that does not pass by itself; the journal keeps it; retrying"
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
    private func noteWriteConcernFailure(_ error: MongoError, _ stage: StageMonitor.Stage, unsatisfiable: Bool, pending: Int?) {
        let now = clock.now()
        let repeatMillis = unsatisfiableRepeatMillis
        let (began, concern, say): (Bool, WriteConcern?, Bool) = state.withLock {
            let began = $0.writeConcernFailing.isEmpty
            $0.writeConcernFailing.insert(stage)
            if began { $0.writeConcernFailingSince = now }
            $0.writeConcernLastFailure = (now, unsatisfiable ? "\(error); \(Self.unsatisfiableAdvice)" : "\(error)")
            var say = false
            if unsatisfiable, $0.unsatisfiableSaidAt.map({ now - $0 >= repeatMillis }) ?? true {
                $0.unsatisfiableSaidAt = now
                say = true
            }
            return (began, $0.writeConcernInForce, say)
        }
        var metadata: Logger.Metadata = [
            "write_concern": "\(concern.map { "\($0)" } ?? "-")", "error": "\(error)", "stage": "\(stage.rawValue)",
        ]
        if let pending { metadata["pending"] = "\(pending)" }
        if unsatisfiable {
            guard say else { return }
            logger.error("MongoDB cannot satisfy the write concern in force (code \(error.code)); nothing leaves the journal until an operator acts, /health says degraded: \(Self.unsatisfiableAdvice)", metadata: metadata.merging([
                "repeated_every_s": "\(repeatMillis / 1000)",
            ]) { $1 })
            return
        }
        guard began else { return }
        logger.warning("MongoDB applies the writes but does not acknowledge them with the write concern in force (is a majority of the replica set up?); nothing leaves the journal until it does, and the writes are retried; /health says degraded meanwhile", metadata: metadata)
    }

    /// A write of `stage` was acknowledged with the write concern in force (call it only then:
    /// `MongoClient.countingAcknowledgedWrites`; a loop that wrote nothing proves nothing).
    /// The last stage whose writes failed it ends the failure, with one notice.
    func noteWriteConcernSatisfied(_ stage: StageMonitor.Stage) {
        let now = clock.now()
        let ended: EpochMillis? = state.withLock {
            guard $0.writeConcernFailing.remove(stage) != nil, $0.writeConcernFailing.isEmpty, let since = $0.writeConcernFailingSince else { return nil }
            $0.writeConcernFailingSince = nil
            $0.unsatisfiableSaidAt = nil
            return since
        }
        guard let since = ended else { return }
        logger.notice("MongoDB acknowledges the writes with the write concern in force again", metadata: [
            "failed_for_s": "\(String(format: "%.1f", Double(now - since) / 1000))",
        ])
    }
}

extension DatabaseLink {
    /// The loop of a stage that derives and writes (ledger, aggregation) until it is asked to stop:
    /// it waits for the schema, runs `round` counting the writes acknowledged with the write concern
    /// (only those may end a write concern failure: an idle loop, at night, writes nothing and
    /// proves nothing), then waits the seconds `round` returns (0: goes again at once; a wake-up
    /// ends the wait early). What these stages write is derived, so a refusal is a fault of ours
    /// or of the database, never of one device: it is retried with backoff (skipping a round would
    /// lose energy), loudly when it will not pass by itself.
    func runDerivingLoop(_ control: StageControl, stage: StageMonitor.Stage, round: () throws -> Double) {
        var backoff = 0.2
        while !control.isStopping {
            control.beat()
            guard schemaReady else {
                control.wait(seconds: 0.5)
                continue
            }
            let acknowledged = MongoClient.AcknowledgedWrites()
            do {
                let wait = try MongoClient.countingAcknowledgedWrites(in: acknowledged) { () throws -> Double in try round() }
                if acknowledged.count > 0 { noteWriteConcernSatisfied(stage) }
                backoff = 0.2
                if wait > 0 { control.wait(seconds: wait) }
            } catch {
                noteWriteFailure(WriteFailure(error), error, stage, retryIn: backoff, pending: nil)
                control.sleep(seconds: backoff)
                backoff = min(backoff * 2, 15)
            }
        }
    }
}
