import AutoVoltMongo
import Foundation
import Logging
import Prometheus
import ServiceLifecycle
import Synchronization
import UnixSignals

/// The long-running worker: journal, MQTT, drain, systemd notifications, HTTP; stops gracefully
/// on SIGTERM/SIGINT (pending acknowledgements flushed, the journal drained while MongoDB answers).
public final class WorkerService: Service, @unchecked Sendable {
    let config: WorkerConfig
    let logger: Logger
    let registry: PrometheusCollectorRegistry?

    public init(config: WorkerConfig, logger: Logger, registry: PrometheusCollectorRegistry?) {
        self.config = config
        self.logger = logger
        self.registry = registry
    }

    /// Runs the worker until SIGTERM/SIGINT. Throws `ConfigError`/`Schema.Conflict` for problems
    /// only a person can fix.
    public static func runUntilSignalled(config: WorkerConfig, logger: Logger, registry: PrometheusCollectorRegistry?) async throws {
        let worker = WorkerService(config: config, logger: logger, registry: registry)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: worker, successTerminationBehavior: .gracefullyShutdownGroup,
                             failureTerminationBehavior: .gracefullyShutdownGroup)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        try await group.run()
    }

    public func run() async throws {
        let notifier = SystemdNotifier()
        let engine = try await onThread { [config, logger] in
            let engine = try IngestEngine(config: config, logger: logger)
            try engine.checkSchemaIfReachable()
            try engine.start()
            return engine
        }
        let executor = MongoExecutor(client: engine.client, threads: 2)
        logger.info("autovolt-worker started", metadata: [
            "mqtt": "\(config.mqtt.host):\(config.mqtt.port)", "client_id": "\(config.mqtt.clientID)",
            "subscriptions": "\(config.mqtt.subscriptions.joined(separator: ","))", "database": "\(engine.client.databaseName)",
            "state_dir": "\(config.stateDirectory)", "devices": "\(config.devices.devices.count)",
        ])

        let httpFailure = FailureBox()
        try await withThrowingTaskGroup(of: Void.self) { group in
            if let (host, port) = config.httpAddress {
                let app = HTTPServer.application(host: host, port: port, engine: engine, executor: executor,
                                                 registry: registry, logger: logger)
                let logger = logger
                group.addTask {
                    do {
                        try await app.runService()
                    } catch {
                        // e.g. the port is taken: an operator must hear of it, not find it out later.
                        logger.critical("HTTP server on \(host):\(port) failed: \(error)")
                        httpFailure.set("HTTP server on \(host):\(port) failed: \(error)")
                    }
                }
            }
            // SIGHUP (`systemctl reload`): the device registry is read again.
            group.addTask { [logger] in
                for await _ in await UnixSignalsSequence(trapping: .sighup) {
                    logger.info("SIGHUP: reloading the device registry")
                    await onThread { _ = engine.reloadRegistry() }
                }
            }
            notifier.ready(status: "ingesting")
            // Watchdog pings only while every stage (drain, ledger, scheduler) is alive and looping.
            var lastPing = ContinuousClock.now
            while !Task.isShuttingDownGracefully, !Task.isCancelled, engine.fatal == nil, httpFailure.message == nil {
                try? await Task.sleep(for: .milliseconds(200))
                if let interval = notifier.watchdogInterval, ContinuousClock.now - lastPing >= interval {
                    let stalled = engine.stages.stalled(now: IngestEngine.nowMillis())
                    if stalled.isEmpty {
                        notifier.watchdog()
                        lastPing = .now
                    } else {
                        for (stage, silent) in stalled {
                            logger.error("\(stage.rawValue) stage stalled; withholding the systemd watchdog ping",
                                         metadata: ["stage": "\(stage.rawValue)", "stalled_ms": "\(silent)"])
                        }
                        lastPing = .now   // say it once per interval, not every 200 ms
                    }
                }
            }
            notifier.stopping()
            logger.info("stopping: flushing acknowledgements and draining the journal")
            await onThread { engine.stop() }
            group.cancelAll()
        }
        await executor.shutdown()
        if let fatal = engine.fatal { throw fatal }
        if let message = httpFailure.message { throw WorkerFailure(message: message) }
        logger.info("autovolt-worker stopped", metadata: ["journal_pending": "\(engine.status.journalPending)"])
    }
}

/// Runs blocking work (libmongoc, libmosquitto, SQLite) on a thread of its own, never on the
/// cooperative pool.
func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread.detachNewThread {
            continuation.resume(with: Result { try body() })
        }
    }
}

func onThread(_ body: @escaping @Sendable () -> Void) async {
    await withCheckedContinuation { continuation in
        Thread.detachNewThread {
            body()
            continuation.resume()
        }
    }
}

public struct WorkerFailure: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
}

final class FailureBox: Sendable {
    private let stored = Mutex<String?>(nil)
    func set(_ message: String) { stored.withLock { $0 = message } }
    var message: String? { stored.withLock { $0 } }
}
