import AutoVoltCore
import AutoVoltMongo
import AutoVoltPostgres
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
    /// Every route runs on either backend: reads on `queries`, writes (tariffs, recalculation,
    /// alarm acks, statement generate and freeze) through `DatabaseWrites`. `executor`: MongoDB's
    /// for those writes (its write concern resolved once); nil on PostgreSQL.
    static func application(host: String, port: Int, engine: Worker, queries: QueryRunner, executor: MongoExecutor?,
                            health loadFigures: @escaping @Sendable () async -> HealthReporter.Figures?,
                            registry: PrometheusCollectorRegistry?, logger: Logger) -> some ApplicationProtocol {
        let router = router(engine: engine, queries: queries, executor: executor, health: loadFigures, registry: registry, logger: logger)
        return Application(router: router, server: .http1Compatible,
                           configuration: .init(address: .hostname(host, port: port), serverName: "autovolt-worker"), logger: logger)
    }

    /// Every route of the server (`router.routes` lists them: the OpenAPI test compares them
    /// with `OpenAPIDocument`).
    static func router(engine: Worker, queries: QueryRunner, executor: MongoExecutor?,
                       health loadFigures: @escaping @Sendable () async -> HealthReporter.Figures?,
                       registry: PrometheusCollectorRegistry?, logger: Logger) -> Router<BasicRequestContext> {
        let router = Router()
        router.add(middleware: RequestBoundsMiddleware())
        router.add(middleware: AllowedMethodsMiddleware(openAPI: OpenAPIDocument.json))
        let health = HealthReporter(engine: engine, load: loadFigures)
        // The AutoVolt deployment guide monitors `/api/power-analytics/health`: the same document.
        for path in ["/health", "\(PowerAnalyticsAPI.prefix)/health"] {
            router.get(.init(path)) { _, _ -> Response in
                let report = await health.report()
                return Response(status: report.httpStatus, headers: [.contentType: "application/json"],
                                body: .init(byteBuffer: ByteBuffer(bytes: report.json)))
            }
        }
        HTTPIngestAPI.register(on: router, engine: engine, logger: logger)
        PowerAnalyticsAPI.register(on: router, runner: queries, config: engine.config, logger: logger)
        DashboardRoutes.register(on: router, engine: engine, runner: queries, logger: logger)
        let writes = DatabaseWrites(database: engine.database, executor: executor, setting: engine.config.writeConcern)
        AccountingAPI.register(on: router, writes: writes, runner: queries, clock: engine.clock, registry: { engine.registryInForce },
                               config: engine.config, logger: logger)
        AlarmsAPI.register(on: router, engine: engine, writes: writes, runner: queries)
        StatementsAPI.register(on: router, engine: engine, writes: writes, runner: queries, logger: logger)
        router.get("/metrics") { _, _ -> Response in
            let text = registry?.emitToString() ?? ""
            return Response(status: .ok, headers: [.contentType: "text/plain; version=0.0.4"],
                            body: .init(byteBuffer: ByteBuffer(string: text)))
        }
        router.get("\(PowerAnalyticsAPI.prefix)/openapi.json") { _, _ -> Response in
            Response(status: .ok, headers: [.contentType: "application/json"],
                     body: .init(byteBuffer: ByteBuffer(string: OpenAPIDocument.json)))
        }
        return router
    }
}

/// Builds the health document. Its database figures (counts, last reconciliation) are cached
/// for `freshFor`; a stale cache is refreshed in the background on the health executor, and a
/// request waits at most `waitBudget` for it, else answers with the previous figures (or nulls
/// before the first): health answers quickly even when the database is slow.
///
/// No figure scans a collection: `total_events` is the collection's metadata count
/// (`estimatedDocumentCount`), `unprocessed_events` reads the index `processed_received_at` (PostgreSQL: the small queue `telemetry_unprocessed`),
/// `events_last_hour` the index `received_at_ttl` (Schema.swift), `online_devices` the small
/// `device_status` (a document per board). Each figure fails on its own: it is null, with its
/// error in `telemetry.errors`, and the others stay.
actor HealthReporter {
    static let freshFor: Duration = .seconds(5)
    static let waitBudget: Duration = .milliseconds(100)
    /// maxTimeMS of each count: a slow database ends the refresh instead of pinning the thread.
    static let countTimeMS = 2000

    struct Figures: Sendable {
        let counts: [String: Int]
        /// Figure name to the error that left it null.
        let errors: [String: String]
        let lastRun: LastRun?
    }

    /// The four `telemetry` figures, in the order they are read.
    static let countNames = ["total_events", "unprocessed_events", "events_last_hour", "online_devices"]

    let engine: Worker
    let load: @Sendable () async -> Figures?
    private var cached: (at: ContinuousClock.Instant, figures: Figures)?
    private var refreshing: Task<Figures?, Never>?

    init(engine: Worker, load: @escaping @Sendable () async -> Figures?) {
        self.engine = engine
        self.load = load
    }

    private func databaseFigures() async -> Figures? {
        if let cached, cached.at.duration(to: .now) < Self.freshFor { return cached.figures }
        let refresh: Task<Figures?, Never>
        if let refreshing {
            refresh = refreshing
        } else {
            let load = self.load
            refresh = Task { [weak self] in
                let figures = await load()
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

    static func load(_ executor: MongoExecutor) async -> Figures? {
        let hourAgo = SystemClock.nowMillis() - 3_600_000
        let ms = countTimeMS
        return try? await executor.run { client throws(MongoError) -> Figures in
            var counts: [String: Int] = [:]
            var errors: [String: String] = [:]
            func figure(_ name: String, _ read: () throws(MongoError) -> Int) {
                do { counts[name] = try read() } catch { errors[name] = "\(error)" }
            }
            figure("total_events") { () throws(MongoError) -> Int in
                try client.estimatedDocumentCount(Collections.telemetryEvents, maxTimeMS: ms)
            }
            figure("unprocessed_events") { () throws(MongoError) -> Int in
                try client.countDocuments(Collections.telemetryEvents, filter: ["processed": false], maxTimeMS: ms)
            }
            figure("events_last_hour") { () throws(MongoError) -> Int in
                try client.countDocuments(Collections.telemetryEvents, filter: ["received_at": ["$gte": .millis(hourAgo)]], maxTimeMS: ms)
            }
            figure("online_devices") { () throws(MongoError) -> Int in
                try client.countDocuments(Collections.deviceStatus, filter: ["online": true], maxTimeMS: ms)
            }
            var lastRun: LastRun?
            do {
                lastRun = try MongoClient.withDeadline(ContinuousClock.now + .milliseconds(ms)) { () throws(MongoError) -> LastRun? in
                    try Reconciler.lastReconciliation(client).map { LastRun(at: $0.at, runID: $0.runID) }
                }
            } catch {
                errors["last_run"] = "\(error)"
            }
            return Figures(counts: counts, errors: errors, lastRun: lastRun)
        }
    }

    /// The same figures from PostgreSQL, each under a statement timeout of `countTimeMS`.
    /// `total_events` is the planner's estimate once the table is past a million rows (it is
    /// kept by autovacuum; counting would scan), an exact count below.
    static func load(_ pool: PostgresPool) async -> Figures? {
        let hourAgo = SystemClock.nowMillis() - 3_600_000
        let ms = countTimeMS
        return try? await onThread { () throws -> Figures in
            var (counts, errors) = try pool.withConnection { connection in
                var counts: [String: Int] = [:]
                var errors: [String: String] = [:]
                func figure(_ name: String, _ sql: String, _ params: [any PostgresBindable] = []) {
                    do {
                        let value = try connection.transaction {
                            try connection.execute("SET LOCAL statement_timeout = \(ms)")
                            return try connection.query(sql, params).first?.int("n")
                        }
                        counts[name] = value ?? 0
                    } catch {
                        errors[name] = "\(error)"
                    }
                }
                figure("total_events", """
                    SELECT CASE WHEN e.estimate > 1000000 THEN e.estimate ELSE (SELECT count(*) FROM telemetry_events) END AS n
                    FROM (SELECT coalesce(sum(greatest(c.reltuples, 0)), 0)::bigint AS estimate FROM pg_inherits i
                          JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'telemetry_events'::regclass) e
                    """)
                figure("unprocessed_events", "SELECT count(*) AS n FROM telemetry_unprocessed")
                figure("events_last_hour", "SELECT count(*) AS n FROM telemetry_events WHERE received_at >= $1::timestamptz",
                       [PostgresTimestamp(millis: hourAgo)])
                figure("online_devices", "SELECT count(*) AS n FROM device_status WHERE online")
                return (counts, errors)
            }
            var lastRun: LastRun?
            do {
                lastRun = try PostgresReconciliationStorage(pool: pool).lastReconciliation().map { LastRun(at: $0.at, runID: $0.runID) }
            } catch {
                errors["last_run"] = "\(error)"
            }
            return Figures(counts: counts, errors: errors, lastRun: lastRun)
        }
    }

    func report() async -> (httpStatus: HTTPResponse.Status, json: Data) {
        let status = engine.status
        let ledger = engine.ledgerCounters
        let figures = status.mongoReachable ? await databaseFigures() : nil
        let lastRun = figures?.lastRun
        var lastRunError: Any = NSNull()
        if let error = figures?.errors["last_run"] { lastRunError = error }
        let counts = figures?.counts
        func iso(_ millis: EpochMillis?) -> Any { millis.map { ISO8601.format($0) } ?? NSNull() }
        func count(_ key: String) -> Any { counts?[key] ?? NSNull() }
        let overall: String
        if engine.fatal != nil || status.journalFull {
            overall = "unhealthy"
        } else if status.mqttConnected && status.mongoReachable && status.writeConcernFailingSince == nil
                    && (status.drainStalledForMillis ?? 0) <= Worker.drainStallThreshold {
            overall = "healthy"
        } else {
            overall = "degraded"
        }
        let body: [String: Any] = [
            "status": overall,
            "timestamp": ISO8601.format(engine.clock.now()),
            "telemetry": [
                "total_events": count("total_events"),
                "unprocessed_events": count("unprocessed_events"),
                "events_last_hour": count("events_last_hour"),
                "online_devices": count("online_devices"),
                // Why a figure is null: its own error (the others are read all the same).
                "errors": (figures?.errors ?? [:]).filter { Self.countNames.contains($0.key) },
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
            "aggregation": ["last_run": iso(lastRun?.at), "last_run_id": lastRun?.runID ?? NSNull(), "error": lastRunError],
            "mqtt": [
                "connected": status.mqttConnected,
                "last_message_at": iso(status.mqttLastMessageAt),
                "last_error": status.mqttLastError ?? NSNull(),
            ],
            "mongodb": [
                "reachable": status.mongoReachable,
                "last_error": status.mongoLastError ?? NSNull(),
                "last_success_at": iso(status.mongoLastSuccessAt),
                "write_concern": Self.writeConcern(status, iso),
                "replica_set": status.replicaSetAdvice.map { advice -> [String: Any] in
                    ["name": advice.setName, "named_in_uri": false, "uri_to_use": advice.suggestedURI,
                     "warning": "the URI does not name replica set \(advice.setName): the worker talks to one server directly and will not follow a failover"]
                } ?? NSNull(),
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

    /// `mongodb.write_concern`: the concern in force (as sent), whether writes fail it now and
    /// since when, and the last failure.
    static func writeConcern(_ status: Worker.Status, _ iso: (EpochMillis?) -> Any) -> [String: Any] {
        var inForce: Any = NSNull()
        if let concern = status.writeConcern, let document = try? concern.document {
            var fields: [String: Any] = [:]
            for (key, value) in document {
                if let text = value.stringValue { fields[key] = text }
                else if let flag = value.boolValue { fields[key] = flag }
                else if let number = value.intValue { fields[key] = number }
            }
            inForce = fields
        }
        return [
            "in_force": inForce,
            "failing": status.writeConcernFailingSince != nil,
            "failing_since": iso(status.writeConcernFailingSince),
            "last_failure": status.writeConcernLastFailure ?? NSNull(),
            "last_failure_at": iso(status.writeConcernLastFailureAt),
        ]
    }

}

struct LastRun: Sendable {
    let at: EpochMillis
    let runID: String
}
