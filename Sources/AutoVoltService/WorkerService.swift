import AutoVoltMongo
import Foundation
import Logging
import Prometheus
import ServiceLifecycle
import Synchronization
import UnixSignals

/// The long-running worker: journal, MQTT, drain, ledger, scheduler, HTTP and systemd
/// notifications as the services of one ServiceGroup (WorkerStages); stops gracefully on
/// SIGTERM/SIGINT in reverse order (pending acknowledgements flushed, then the journal drained
/// while MongoDB answers).
public enum WorkerService {
    /// Runs the worker until SIGTERM/SIGINT. Throws `ConfigError`/`Schema.Conflict` for problems
    /// only a person can fix.
    public static func runUntilSignalled(config: WorkerConfig, logger: Logger, registry: PrometheusCollectorRegistry?) async throws {
        let engine = try await onThread { [config, logger] in
            let engine = try IngestEngine(config: config, logger: logger)
            try engine.checkSchemaIfReachable()
            return engine
        }
        let executor = MongoExecutor(client: engine.client, threads: 2)
        var http: (any Service)?
        if let (host, port) = config.httpAddress {
            let app = HTTPServer.application(host: host, port: port, engine: engine, executor: executor,
                                             registry: registry, logger: logger)
            http = HTTPStage(app: app, address: "\(host):\(port)", logger: logger)
        }
        logger.info("autovolt-worker started", metadata: [
            "mqtt": "\(config.mqtt.host):\(config.mqtt.port)", "client_id": "\(config.mqtt.clientID)",
            "subscriptions": "\(config.mqtt.subscriptions.joined(separator: ","))", "database": "\(engine.client.databaseName)",
            "state_dir": "\(config.stateDirectory)", "devices": "\(config.devices.devices.count)",
        ])
        let services = WorkerStages.services(engine: engine, http: http, notifier: SystemdNotifier(), logger: logger)
        let group = ServiceGroup(configuration: .init(
            services: services.map {
                .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup)
            },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger))
        do {
            try await group.run()
        } catch {
            await executor.shutdown()
            throw error
        }
        await executor.shutdown()
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
