import AutoVoltCore
import AutoVoltMongo
import Foundation
import Hummingbird
import Logging
import Prometheus

/// `GET /health` and `GET /metrics` (contract section 7).
///
/// Health never queues behind the analytics queries: it has an executor (one thread) of its
/// own for its few counts, which are cached and refreshed in the background, and it waits at
/// most `HealthReporter.waitBudget` for a refresh. `/metrics` never touches the database.
enum HTTPServer {
    static func application(host: String, port: Int, engine: IngestEngine, executor: MongoExecutor,
                            queries: QueryRunner, healthExecutor: MongoExecutor,
                            registry: PrometheusCollectorRegistry?, logger: Logger) -> some ApplicationProtocol {
        let router = Router()
        router.add(middleware: RequestBoundsMiddleware())
        let health = HealthReporter(engine: engine, executor: healthExecutor)
        // The AutoVolt deployment guide monitors `/api/power-analytics/health`: the same document.
        for path in ["/health", "\(PowerAnalyticsAPI.prefix)/health"] {
            router.get(.init(path)) { _, _ -> Response in
                let report = await health.report()
                return Response(status: report.httpStatus, headers: [.contentType: "application/json"],
                                body: .init(byteBuffer: ByteBuffer(bytes: report.json)))
            }
        }
        PowerAnalyticsAPI.register(on: router, runner: queries, config: engine.config, logger: logger)
        AccountingAPI.register(on: router, executor: executor, runner: queries, config: engine.config, logger: logger)
        HTTPIngestAPI.register(on: router, engine: engine, logger: logger)
        DashboardRoutes.register(on: router, engine: engine, runner: queries, logger: logger)
        AlarmsAPI.register(on: router, engine: engine, executor: executor, runner: queries)
        StatementsAPI.register(on: router, engine: engine, executor: executor, runner: queries, logger: logger)
        router.get("/metrics") { _, _ -> Response in
            let text = registry?.emitToString() ?? ""
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                            body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        return Application(router: router, server: .http1Compatible,
                           configuration: .init(address: .hostname(host, port: port), serverName: "autovolt-worker"), logger: logger)
    }
}

/// Builds the health document. Its database figures (counts, last reconciliation) are cached
/// for `freshFor`; a stale cache is refreshed in the background on the health executor, and a
/// request waits at most `waitBudget` for it, else answers with the previous figures (or nulls
/// before the first): health answers quickly even when the database is slow.
actor HealthReporter {
    static let freshFor: Duration = .seconds(5)
    static let waitBudget: Duration = .milliseconds(100)
    /// maxTimeMS of each count: a slow database ends the refresh instead of pinning the thread.
    static let countTimeMS = 2000

    struct Figures: Sendable {
        let counts: [String: Int]
        let lastRun: LastRun?
    }

    let engine: IngestEngine
    let executor: MongoExecutor
    private var cached: (at: ContinuousClock.Instant, figures: Figures)?
    private var refreshing: Task<Figures?, Never>?

    init(engine: IngestEngine, executor: MongoExecutor) {
        self.engine = engine
        self.executor = executor
    }

    private func databaseFigures() async -> Figures? {
        if let cached, cached.at.duration(to: .now) < Self.freshFor { return cached.figures }
        let refresh: Task<Figures?, Never>
        if let refreshing {
            refresh = refreshing
        } else {
            let executor = self.executor
            refresh = Task { [weak self] in
                let figures = await Self.load(executor)
                await self?.finished(figures)
                return figures
            }
            refreshing = refresh
        }
        let first = FirstOffer<Figures?>()
        Task { first.offer(await refresh.value) }
        let timer = Task {
            try? await Task.sleep(for: Self.waitBudget)
            first.offer(nil)
        }
        let fresh = await first.wait()
        timer.cancel()
        return fresh ?? cached?.figures
    }

    private func finished(_ figures: Figures?) {
        if let figures { cached = (.now, figures) }
        refreshing = nil
    }

    private static func load(_ executor: MongoExecutor) async -> Figures? {
        let hourAgo = SystemClock.nowMillis() - 3_600_000
        let ms = countTimeMS
        return try? await executor.run { client throws(MongoError) -> Figures in
            let counts = [
                "total_events": try client.countDocuments(Collections.telemetryEvents, filter: [:], maxTimeMS: ms),
                "unprocessed_events": try client.countDocuments(Collections.telemetryEvents, filter: ["processed": false], maxTimeMS: ms),
                "events_last_hour": try client.countDocuments(Collections.telemetryEvents, filter: ["received_at": ["$gte": .millis(hourAgo)]], maxTimeMS: ms),
                "online_devices": try client.countDocuments(Collections.deviceStatus, filter: ["online": true], maxTimeMS: ms),
            ]
            let lastRun = try MongoClient.withDeadline(ContinuousClock.now + .milliseconds(ms)) { () throws(MongoError) -> LastRun? in
                try Reconciler.lastReconciliation(client).map { LastRun(at: $0.at, runID: $0.runID) }
            }
            return Figures(counts: counts, lastRun: lastRun)
        }
    }

    func report() async -> (httpStatus: HTTPResponse.Status, json: Data) {
        let status = engine.status
        let ledger = engine.ledgerCounters
        let figures = status.mongoReachable ? await databaseFigures() : nil
        let lastRun = figures?.lastRun
        let counts = figures?.counts
        func iso(_ millis: EpochMillis?) -> Any { millis.map { ISO8601.format($0) } ?? NSNull() }
        func count(_ key: String) -> Any { counts?[key] ?? NSNull() }
        let overall: String
        if engine.fatal != nil || status.journalFull {
            overall = "unhealthy"
        } else if status.mqttConnected && status.mongoReachable
                    && (status.drainStalledForMillis ?? 0) <= IngestEngine.drainStallThreshold {
            overall = "healthy"
        } else {
            overall = "degraded"
        }
        let body: [String: Any] = [
            "status": overall,
            "timestamp": ISO8601.format(SystemClock.nowMillis()),
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
        return (overall == "unhealthy" ? .serviceUnavailable : .ok, json)
    }

}

struct LastRun: Sendable {
    let at: EpochMillis
    let runID: String
}
