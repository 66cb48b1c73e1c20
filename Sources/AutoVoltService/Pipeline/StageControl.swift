import AutoVoltCore
import Foundation
import ServiceLifecycle
import Synchronization

/// What every blocking stage loop shares: a stop request, a wake-up, the watchdog's beat, and
/// the watchdog test's stall. One per stage, owned by it.
final class StageControl: Sendable {
    let stage: StageMonitor.Stage
    let wakeup = Wakeup()
    private let monitor: StageMonitor
    private let clock: any WorkerClock
    private let stalls: Bool
    private let stopping = Mutex(false)
    /// Passes a stop request on to a loop that keeps its own (AlarmService).
    private let onStop: (@Sendable () -> Void)?

    init(_ stage: StageMonitor.Stage, monitor: StageMonitor, clock: any WorkerClock, faults: FaultInjection,
         onStop: (@Sendable () -> Void)? = nil) {
        self.stage = stage
        self.monitor = monitor
        self.clock = clock
        self.onStop = onStop
        stalls = faults.stalledStage == stage
    }

    var isStopping: Bool { stopping.withLock { $0 } }

    func requestStop() {
        stopping.withLock { $0 = true }
        wakeup.signal()
        onStop?()
    }

    /// The loop came round (the systemd watchdog follows it); a stalled stage (test) holds here.
    func beat() {
        while stalls && !isStopping { Thread.sleep(forTimeInterval: 0.1) }
        monitor.beat(stage, now: clock.now())
    }

    /// Waits up to `seconds` or until woken (a signal or a stop request).
    func wait(seconds: Double) { wakeup.wait(seconds: seconds) }

    /// A backoff: only a stop request ends it early (new work does not shorten a retry's wait).
    func sleep(seconds: Double) {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline, !isStopping {
            Thread.sleep(forTimeInterval: min(0.1, max(0, deadline.timeIntervalSinceNow)))
        }
    }
}

/// A stage whose loop blocks (libmongoc, libpq, SQLite): it runs on a thread of its own, never
/// on the cooperative pool.
protocol BlockingStage: AnyObject, Sendable {
    var control: StageControl { get }
    /// Runs until `control.requestStop()`.
    func runLoop()
    /// Something the stage met that it cannot wait out (a foreign database): it ends the worker.
    var fatal: (any Error)? { get }
}

extension BlockingStage {
    var fatal: (any Error)? { nil }
}

/// One blocking stage on a thread of its own, as a Service. On graceful shutdown the loop is
/// asked to stop and awaited for at most `stopTimeout`: a loop stuck inside a C call is left
/// behind, its work is safe in the journal or the database. A stage's fatal error ends the group.
struct ThreadStage: Service {
    let stage: any BlockingStage
    let stopTimeout: Duration

    func run() async throws {
        let done = Completion()
        let thread = Thread { [stage] in
            stage.runLoop()
            done.finish()
        }
        thread.name = "autovolt-\(stage.control.stage.rawValue)"
        thread.start()
        let timeout = stopTimeout
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                await done.wait()
            } onGracefulShutdown: { [stage] in
                stage.control.requestStop()
                done.finish(after: timeout)
            }
        } onCancel: { [stage] in
            stage.control.requestStop()
            done.finish(after: timeout)
        }
        if let fatal = stage.fatal { throw fatal }
    }
}

/// The alarms stage: AlarmService's loop (fed by the drain, it stores raises and clears and checks
/// presence); without AUTOVOLT_ALARMS rules or service it only goes round for the watchdog.
final class AlarmStage: BlockingStage {
    let control: StageControl
    private let alarms: AlarmService?
    private let link: DatabaseLink

    init(control: StageControl, alarms: AlarmService?, link: DatabaseLink) {
        self.control = control
        self.alarms = alarms
        self.link = link
    }

    func runLoop() {
        guard let alarms else {
            while !control.isStopping {
                control.beat()
                control.wait(seconds: 1)
            }
            return
        }
        alarms.run(schemaReady: { link.schemaReady }, writeConcern: { try link.writeConcern }, beat: { control.beat() })
    }
}
