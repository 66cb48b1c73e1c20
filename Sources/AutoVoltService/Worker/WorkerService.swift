import AutoVoltMongo
import Foundation
import Logging
import Prometheus
import ServiceLifecycle
import Synchronization
import UnixSignals

/// The long-running worker: journal, MQTT, drain, ledger, aggregation, scheduler, HTTP and systemd
/// notifications as the services of one ServiceGroup (WorkerStages); stops gracefully on
/// SIGTERM/SIGINT in reverse order (pending acknowledgements flushed, then the journal drained
/// while MongoDB answers).
public enum WorkerService {
    /// Runs the worker until SIGTERM/SIGINT. Throws `ConfigError`/`Schema.Conflict` for problems
    /// only a person can fix.
    /// `faults`: what the integration tests inject (the CLI reads them from `AUTOVOLT_TEST_*`).
    public static func runUntilSignalled(config: WorkerConfig, faults: FaultInjection = FaultInjection(), logger: Logger,
                                         registry: PrometheusCollectorRegistry?) async throws {
        let engine = try await onThread { [config, logger] in
            let engine = try Worker(config: config, faults: faults, logger: logger)
            try engine.checkSchemaIfReachable()
            return engine
        }
        // What HTTP reads through, per backend. MongoDB: three executors, so that nothing HTTP
        // does waits behind something else: the write routes (recalculate, tariffs), the read
        // queries (as many threads as may run at once, behind an admission gate with a bounded
        // queue and a deadline), and /health's counts. PostgreSQL: the pool's connections.
        let source: QueryRunner.Source
        let writeExecutor: MongoExecutor?
        let health: @Sendable () async -> HealthReporter.Figures?
        let release: @Sendable () async -> Void
        switch engine.database {
        case .mongodb(let client):
            let executor = MongoExecutor(client: client, threads: 2)
            let queryExecutor = MongoExecutor(client: client, threads: config.httpQueryConcurrency)
            let healthExecutor = MongoExecutor(client: client, threads: 1)
            source = .mongodb(queryExecutor)
            writeExecutor = executor
            health = { await HealthReporter.load(healthExecutor) }
            release = {
                await executor.shutdown()
                await queryExecutor.shutdown()
                await healthExecutor.shutdown()
            }
        case .postgresql(let pool):
            source = .postgresql(pool)
            writeExecutor = nil
            health = { await HealthReporter.load(pool) }
            release = { pool.close() }
        }
        var http: (any Service)?
        if let (host, port) = config.httpAddress {
            let queries = QueryRunner(source: source,
                                      gate: AdmissionGate(maxConcurrent: config.httpQueryConcurrency, maxQueued: config.httpQueryQueue),
                                      timeout: .milliseconds(config.httpQueryTimeoutMillis))
            let app = HTTPServer.application(host: host, port: port, engine: engine, queries: queries, executor: writeExecutor,
                                             health: health, registry: registry, logger: logger)
            http = HTTPStage(app: app, address: "\(host):\(port)", logger: logger)
        }
        logger.info("autovolt-worker started", metadata: [
            "mqtt": "\(config.mqtt.host):\(config.mqtt.port)", "client_id": "\(config.mqtt.clientID)",
            "subscriptions": "\(config.mqtt.subscriptions.joined(separator: ","))", "database": "\(engine.database.name)",
            "backend": "\(engine.database.backendName)", "state_dir": "\(config.stateDirectory)",
            "devices": "\(config.devices.devices.count)",
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
            await release()
            throw error
        }
        await release()
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
