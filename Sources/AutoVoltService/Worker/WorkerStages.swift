import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

/// The worker as one ServiceGroup. Services start together and stop in reverse order:
///
///     drain, ledger, aggregation, scheduler, alarms, mqtt, http, registry reload, systemd supervisor
///
/// so on SIGTERM the supervisor says STOPPING, HTTP closes, MQTT stops taking messages (pending
/// PUBACKs flushed), the scheduler and the ledger finish their step, and the drain stores what
/// the journal holds, last.
enum WorkerStages {
    static func services(engine: Worker, http: (any Service)?, notifier: SystemdNotifier, logger: Logger) -> [any Service] {
        var services: [any Service] = engine.blockingStages.map { ThreadStage(stage: $0.stage, stopTimeout: $0.stopTimeout) }
        services.append(MQTTStage(engine: engine))
        if let http { services.append(http) }
        services.append(RegistryReloadStage(engine: engine, logger: logger))
        services.append(SupervisorStage(engine: engine, notifier: notifier, logger: logger))
        return services
    }
}

/// The broker connection: messages flow into the journal from libmosquitto's own thread.
struct MQTTStage: Service {
    let engine: Worker

    func run() async throws {
        try await onThread { [engine] in try engine.startMQTT() }
        try? await gracefulShutdown()
        await onThread { [engine] in engine.stopMQTT() }
    }
}

/// SIGHUP (`systemctl reload`): the device registry and the alarm rules are read again.
struct RegistryReloadStage: Service {
    let engine: Worker
    let logger: Logger

    func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            logger.info("SIGHUP: reloading the device registry")
            await onThread { [engine] in
                _ = engine.reloadRegistry()
                engine.reloadAlarmRules()
            }
        }
    }
}

/// systemd: READY=1 once running, WATCHDOG=1 only while every stage goes round its loop
/// (StageMonitor), STOPPING=1 when shutdown begins (this service is the first to stop).
struct SupervisorStage: Service {
    let engine: Worker
    let notifier: SystemdNotifier
    let logger: Logger

    func run() async throws {
        notifier.ready(status: "ingesting")
        if let interval = notifier.watchdogInterval {
            while !Task.isShuttingDownGracefully && !Task.isCancelled {
                let stalled = engine.stages.stalled(now: engine.clock.now())
                if stalled.isEmpty {
                    notifier.watchdog()
                } else {
                    for (stage, silent) in stalled {
                        logger.error("\(stage.rawValue) stage stalled; withholding the systemd watchdog ping",
                                     metadata: ["stage": "\(stage.rawValue)", "stalled_ms": "\(silent)"])
                    }
                }
                try? await cancelWhenGracefulShutdown { try await Task.sleep(for: interval) }
            }
        } else {
            try? await gracefulShutdown()
        }
        engine.beginShutdown()
        notifier.stopping()
        logger.info("stopping: flushing acknowledgements and draining the journal")
    }
}

/// The HTTP server; a failure to serve (the port is taken) ends the worker with a clear message.
struct HTTPStage<App: ApplicationProtocol>: Service {
    let app: App
    let address: String
    let logger: Logger

    func run() async throws {
        do {
            try await app.run()
        } catch {
            logger.critical("HTTP server on \(address) failed: \(error)")
            throw WorkerFailure(message: "HTTP server on \(address) failed: \(error)")
        }
    }
}

/// A thread's end, awaited from async code; `finish(after:)` gives up waiting after a timeout.
final class Completion: Sendable {
    private let state = Mutex<(finished: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func finish() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            guard !state.finished else { return [] }
            state.finished = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    func finish(after timeout: Duration) {
        let seconds = Double(timeout.components.seconds) + Double(timeout.components.attoseconds) / 1e18
        DispatchQueue.global().asyncAfter(deadline: .now() + seconds) { self.finish() }
    }

    func wait() async {
        await withCheckedContinuation { continuation in
            let resumeNow = state.withLock { state -> Bool in
                if state.finished { return true }
                state.waiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
    }
}
