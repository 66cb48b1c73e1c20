import AutoVoltCore
import AutoVoltMongo
import Foundation
import Hummingbird
import Logging

/// `/api/power-analytics/...` (contract section 7).
///
/// Read queries: `GET summary?classroom=&date=`, `GET timeline?classroom=&start=&end=&bucket=`,
/// `GET device-breakdown?date=&classroom=`, `GET monthly?month=&classroom=`. They answer the same
/// JSON as the CLI's `--json` (`AnalyticsQueries`); a bad parameter is 400 `{"error": ...}`, a
/// database failure 503 `{"error": ...}`. MongoDB work runs on the executor's threads, never on
/// the cooperative pool, within `QueryRunner`'s admission limit and deadline.
enum PowerAnalyticsAPI {
    static let prefix = "/api/power-analytics"

    static func register(on router: Router<BasicRequestContext>, runner: QueryRunner, config: WorkerConfig, logger: Logger) {
        router.get("\(prefix)/summary") { request, _ -> Response in
            let q = request.uri.queryParameters
            return await answer(runner: runner, logger: logger, route: "summary") { () throws(AnalyticsParameterError) in
                try AnalyticsQueries.summaryParameters(classroom: q["classroom"].map(String.init), date: q["date"].map(String.init))
            } query: { storage, parameters in
                try AnalyticsQueries.summary(storage: storage, config: config, parameters: parameters)
            }
        }
        router.get("\(prefix)/timeline") { request, _ -> Response in
            let q = request.uri.queryParameters
            return await answer(runner: runner, logger: logger, route: "timeline") { () throws(AnalyticsParameterError) in
                try AnalyticsQueries.timelineParameters(classroom: q["classroom"].map(String.init), start: q["start"].map(String.init),
                                                        end: q["end"].map(String.init), bucket: q["bucket"].map(String.init),
                                                        timeZone: config.timeZone)
            } query: { storage, parameters in
                try AnalyticsQueries.timeline(storage: storage, config: config, parameters: parameters)
            }
        }
        router.get("\(prefix)/device-breakdown") { request, _ -> Response in
            let q = request.uri.queryParameters
            return await answer(runner: runner, logger: logger, route: "device-breakdown") { () throws(AnalyticsParameterError) in
                try AnalyticsQueries.deviceBreakdownParameters(classroom: q["classroom"].map(String.init), date: q["date"].map(String.init))
            } query: { storage, parameters in
                try AnalyticsQueries.deviceBreakdown(storage: storage, config: config, parameters: parameters)
            }
        }
        router.get("\(prefix)/monthly") { request, _ -> Response in
            let q = request.uri.queryParameters
            return await answer(runner: runner, logger: logger, route: "monthly") { () throws(AnalyticsParameterError) in
                try AnalyticsQueries.monthlyParameters(classroom: q["classroom"].map(String.init), month: q["month"].map(String.init))
            } query: { storage, parameters in
                try AnalyticsQueries.monthly(storage: storage, config: config, parameters: parameters)
            }
        }

        // MARK: Write routes (lead): `GET|POST cost-versions`, `POST recalculate`
        // Register them here, under `\(prefix)/`, behind the AUTOVOLT_API_TOKEN_FILE bearer token.
        // `jsonResponse(status:body:)` and `errorResponse(_:_:)` below give the same JSON shapes.
    }

    /// Parses, runs the query through the runner (admission limit, deadline), and answers its
    /// JSON; 400 for bad parameters, 503 with `Retry-After` when saturated or past the deadline,
    /// 503 when the database fails.
    static func answer<Parameters: Sendable, Result: Encodable & Sendable>(
        runner: QueryRunner, logger: Logger, route: String,
        parse: () throws(AnalyticsParameterError) -> Parameters,
        query: @escaping @Sendable (any AnalyticsStorage, Parameters) throws -> Result
    ) async -> Response {
        let parameters: Parameters
        do {
            parameters = try parse()
        } catch {
            return errorResponse(.badRequest, error.message)
        }
        switch await runner.analytics({ storage in try query(storage, parameters) }) {
        case .value(let result):
            return jsonResponse(status: .ok, body: AnalyticsQueries.json(result))
        case .saturated:
            logger.warning("power-analytics query refused: too many queries", metadata: ["route": "\(route)"])
            return QueryRunner.unavailable("too many queries in progress; retry later")
        case .timedOut:
            logger.warning("power-analytics query timed out", metadata: ["route": "\(route)", "timeout": "\(runner.timeout)"])
            return QueryRunner.unavailable("query did not finish within \(runner.timeout); retry later")
        case .failed(let error as MongoError):
            logger.warning("power-analytics query failed", metadata: ["route": "\(route)", "error": "\(error)"])
            return errorResponse(.serviceUnavailable, "database unavailable: \(error)")
        case .failed(let error):
            logger.warning("power-analytics query failed", metadata: ["route": "\(route)", "error": "\(error)"])
            return errorResponse(.internalServerError, "\(error)")
        }
    }

    struct ErrorBody: Encodable { let error: String }

    static func errorResponse(_ status: HTTPResponse.Status, _ message: String) -> Response {
        jsonResponse(status: status, body: AnalyticsQueries.json(ErrorBody(error: message)))
    }

    static func jsonResponse(status: HTTPResponse.Status, body: Data) -> Response {
        Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}
