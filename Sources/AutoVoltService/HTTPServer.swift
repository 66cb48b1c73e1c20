import AutoVoltCore
import AutoVoltMongo
import Foundation
import Hummingbird
import Logging
import Prometheus

/// `GET /health` and `GET /metrics` (contract section 7).
enum HTTPServer {
    static func application(host: String, port: Int, engine: IngestEngine, executor: MongoExecutor,
                            registry: PrometheusCollectorRegistry?, logger: Logger) -> some ApplicationProtocol {
        let router = Router()
        let health = HealthReporter(engine: engine, executor: executor)
        router.get("/health") { _, _ -> Response in
            let report = await health.report()
            return Response(status: report.httpStatus, headers: [.contentType: "application/json"],
                            body: .init(byteBuffer: ByteBuffer(bytes: report.json)))
        }
        PowerAnalyticsAPI.register(on: router, executor: executor, config: engine.config, logger: logger)
        AccountingAPI.register(on: router, executor: executor, config: engine.config, logger: logger)
        router.get("/metrics") { _, _ -> Response in
            let text = registry?.emitToString() ?? ""
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                            body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        return Application(router: router, configuration: .init(address: .hostname(host, port: port), serverName: "autovolt-worker"),
                           logger: logger)
    }
}

/// Builds the health document; database counts are cached briefly so a busy dashboard does not
/// turn into a load on MongoDB.
actor HealthReporter {
    let engine: IngestEngine
    let executor: MongoExecutor
    private var cachedCounts: (at: Date, counts: [String: Int])?

    init(engine: IngestEngine, executor: MongoExecutor) {
        self.engine = engine
        self.executor = executor
    }

    func report() async -> (httpStatus: HTTPResponse.Status, json: Data) {
        let status = engine.status
        let ledger = engine.ledgerCounters
        let lastRun = status.mongoReachable ? await lastReconciliation() : nil
        let counts = status.mongoReachable ? await databaseCounts() : nil
        func iso(_ millis: EpochMillis?) -> Any { millis.map { ISO8601.format($0) } ?? NSNull() }
        func count(_ key: String) -> Any { counts?[key] ?? NSNull() }
        let overall: String
        if engine.fatal != nil || status.journalFull {
            overall = "error"
        } else if status.mqttConnected && status.mongoReachable
                    && (status.drainStalledForMillis ?? 0) <= IngestEngine.drainStallThreshold {
            overall = "ok"
        } else {
            overall = "degraded"
        }
        let body: [String: Any] = [
            "status": overall,
            "timestamp": ISO8601.format(IngestEngine.nowMillis()),
            "telemetry": [
                "total_events": count("total_events"),
                "unprocessed_events": count("unprocessed_events"),
                "events_last_hour": count("events_last_hour"),
                "online_devices": count("online_devices"),
            ],
            "ledger": [
                "events_processed": ledger?.eventsProcessed ?? 0,
                "entries_created": ledger?.entriesCreated ?? 0,
                "entries_superseded": ledger?.entriesSuperseded ?? 0,
                "resets_detected": ledger?.resetsDetected ?? 0,
                "errors": ledger?.errors ?? 0,
                "is_processing": engine.ledgerIsProcessing,
                "lag_seconds": Double(ledger?.lastLagMillis ?? 0) / 1000,
            ],
            "aggregation": ["last_run": iso(lastRun?.at), "last_run_id": lastRun?.runID ?? NSNull()],
            "mqtt": [
                "connected": status.mqttConnected,
                "last_message_at": iso(status.mqttLastMessageAt),
                "last_error": status.mqttLastError ?? NSNull(),
            ],
            "mongodb": [
                "reachable": status.mongoReachable,
                "last_error": status.mongoLastError ?? NSNull(),
                "last_success_at": iso(status.mongoLastSuccessAt),
            ],
            "journal": [
                "pending_records": status.journalPending,
                "drain_stalled_seconds": status.drainStalledForMillis.map { Double($0) / 1000 } ?? NSNull(),
                "bytes": status.journalBytes,
                "max_bytes": status.journalMaxBytes,
                "full": status.journalFull,
                "path": status.journalPath,
            ],
            "ingest": [
                "events_inserted": status.totals.inserted,
                "duplicates": status.totals.duplicates,
                "rejected": status.totals.rejectedTotal,
                "store_refused": status.totals.rejected[.storeRefused] ?? 0,
            ],
        ]
        let json = (try? JSONSerialization.data(withJSONObject: body, options: [.sortedKeys])) ?? Data("{}".utf8)
        return (overall == "error" ? .serviceUnavailable : .ok, json)
    }

    private var cachedLastRun: (at: Date, value: (at: EpochMillis, runID: String)?)?

    private func lastReconciliation() async -> (at: EpochMillis, runID: String)? {
        if let cached = cachedLastRun, Date().timeIntervalSince(cached.at) < 5 { return cached.value }
        let found = try? await executor.run { client throws(MongoError) -> LastRun? in
            try Reconciler.lastReconciliation(client).map { LastRun(at: $0.at, runID: $0.runID) }
        }
        let value = found.flatMap { $0 }.map { ($0.at, $0.runID) }
        cachedLastRun = (Date(), value)
        return value
    }

    private func databaseCounts() async -> [String: Int]? {
        if let cached = cachedCounts, Date().timeIntervalSince(cached.at) < 5 { return cached.counts }
        let hourAgo = IngestEngine.nowMillis() - 3_600_000
        let counts = try? await executor.run { client throws(MongoError) -> [String: Int] in
            [
                "total_events": try client.countDocuments(Collections.telemetryEvents, filter: [:]),
                "unprocessed_events": try client.countDocuments(Collections.telemetryEvents, filter: ["processed": false]),
                "events_last_hour": try client.countDocuments(Collections.telemetryEvents, filter: ["received_at": ["$gte": .millis(hourAgo)]]),
                "online_devices": try client.countDocuments(Collections.deviceStatus, filter: ["online": true]),
            ]
        }
        if let counts { cachedCounts = (Date(), counts) }
        return counts
    }
}

struct LastRun: Sendable {
    let at: EpochMillis
    let runID: String
}
