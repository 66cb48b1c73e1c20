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

    /// How many batches of one round are stepped at once. The batches hold disjoint devices
    /// (as two workers' leases do), and a step spends much of its time waiting for the
    /// database: a second lane derives while the first waits, which takes the tail off a burst
    /// of boards that report in step. Each lane borrows a connection of its own.
    static let lanes = 2

    /// Steps a round's batches in lanes; whether any device progressed.
    private func stepInLanes(_ batches: [[String]], ledger: LedgerStore) throws -> Bool {
        let control = control, clock = clock
        return try Self.runInLanes(batches, lanes: Self.lanes, stopping: { control.isStopping }) { batch in
            control.beat()
            let results = try ledger.step(batch, now: clock.now())
            return results.values.contains { if case .done = $0 { true } else { false } }
        }
    }

    /// Runs `step` over `batches` on this thread and, when there are several, on up to
    /// `lanes - 1` threads more (GCD's, never the cooperative pool: a step blocks on the
    /// database); each lane takes the next batch not taken, so each batch runs once. After an
    /// error no lane takes another batch, and the first error is thrown once every lane has
    /// stopped. Returns whether any step returned true. Writes acknowledged on a helper's thread
    /// are added to this thread's tallies (`MongoClient.countingAcknowledgedWrites` counts per
    /// thread).
    static func runInLanes<Batch: Sendable>(_ batches: [Batch], lanes: Int, stopping: @escaping @Sendable () -> Bool,
                                            step: @escaping @Sendable (Batch) throws -> Bool) throws -> Bool {
        let shared = LaneRound()
        @Sendable func lane() {
            while true {
                let index: Int? = shared.round.withLock { round in
                    guard round.error == nil, round.next < batches.count else { return nil }
                    round.next += 1
                    return round.next - 1
                }
                guard let index, !stopping() else { return }
                do {
                    if try step(batches[index]) { shared.round.withLock { $0.progressed = true } }
                } catch {
                    shared.round.withLock { if $0.error == nil { $0.error = error } }
                    return
                }
            }
        }
        let tallies = (0..<max(min(lanes, batches.count) - 1, 0)).map { _ in MongoClient.AcknowledgedWrites() }
        let group = DispatchGroup()
        for tally in tallies {
            DispatchQueue.global().async(group: group) {
                MongoClient.countingAcknowledgedWrites(in: tally) { lane() }
            }
        }
        lane()
        group.wait()
        MongoClient.noteAcknowledgedWrites(tallies.reduce(0) { $0 + $1.count })
        let (progressed, error) = shared.round.withLock { ($0.progressed, $0.error) }
        if let error { throw error }
        return progressed
    }

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
            do {
                progressed = try stepInLanes(batches, ledger: ledger)
            } catch {
                // Batches stepped before the error may have changed days: wake the aggregation anyway.
                changed.signal()
                throw error
            }
            metrics.recordLedger(ledger.snapshot)
            // Every device held by other workers: let them finish.
            return progressed ? 0 : 0.5
        }
    }
}

/// What the lanes of one round share: the next batch to take, and what the steps said.
private final class LaneRound: Sendable {
    struct State {
        var next = 0
        var progressed = false
        var error: (any Error)?
    }
    let round = Mutex(State())
}
