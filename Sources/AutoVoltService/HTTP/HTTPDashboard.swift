import AutoVoltCore
import AutoVoltMongo
import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// `GET /` (the dashboard, `?date=YYYY-MM-DD`, default today) and `GET /devices/{name}`.
/// The reads run on the query runner (admission limit, deadline) like the API's; the page says
/// how long the database and the rendering took in `Server-Timing`.
enum DashboardRoutes {
    /// Constant, valid header names: the unwraps cannot fail.
    static let serverTimingHeader = HTTPField.Name("Server-Timing")!
    static let securityPolicyHeader = HTTPField.Name("Content-Security-Policy")!
    /// Scripts run only if they are the page's own two (by their SHA-256), so an escaping slip
    /// that lets markup into the page cannot run code; styles stay inline.
    static let securityPolicy = "default-src 'none'; style-src 'unsafe-inline'; script-src \(scriptHashes.joined(separator: " ")); img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'"

    /// The CSP sources of the inline script as `HTML.script(live:)` writes it, with and without the live part.
    static let scriptHashes = [HTML.commonScript, HTML.commonScript + HTML.liveScript].map { script in
        "'sha256-\(Data(SHA256.hash(data: Data(script.utf8))).base64EncodedString())'"
    }

    static func register(on router: Router<BasicRequestContext>, engine: Worker, runner: QueryRunner, logger: Logger) {
        let config = engine.config
        router.get("/") { request, _ -> Response in
            guard let date = self.date(request, config, now: engine.clock.now()) else { return page(.badRequest, error: "date must be YYYY-MM-DD") }
            let registry = engine.registryInForce
            return await serve(runner: runner, logger: logger) { storage in
                try DashboardData.load(storage: storage, config: config, registry: registry, date: date, now: engine.clock.now())
            } render: { DashboardPage.render($0) }
        }
        router.get("/devices/:name") { request, context -> Response in
            guard let date = self.date(request, config, now: engine.clock.now()) else { return page(.badRequest, error: "date must be YYYY-MM-DD") }
            guard let name = context.parameters.get("name"), DeviceTopic.isValidDeviceName(name) else {
                return page(.badRequest, error: "not a device name")
            }
            let registry = engine.registryInForce
            return await serve(runner: runner, logger: logger) { storage in
                try DevicePageData.load(storage: storage, config: config, registry: registry, esp32Name: name, date: date)
            } render: { DashboardPage.renderDevice($0) }
        }
    }

    static func date(_ request: Request, _ config: WorkerConfig, now: EpochMillis) -> CivilDate? {
        guard let text = request.uri.queryParameters["date"].map(String.init), !text.isEmpty else {
            var calendar = LocalCalendar(timeZone: config.timeZone)
            return calendar.date(of: now)
        }
        return text.utf8.count == 10 ? CivilDate(text) : nil
    }

    static func serve<Data: Sendable>(runner: QueryRunner, logger: Logger, load: @escaping @Sendable (any AnalyticsStorage) throws -> Data,
                                      render: (Data) -> String) async -> Response {
        let began = ContinuousClock.now
        switch await runner.analytics(load) {
        case .value(let data):
            let loaded = ContinuousClock.now
            let html = render(data)
            let rendered = ContinuousClock.now
            func ms(_ d: Duration) -> String { String(format: "%.1f", Double(d.components.seconds) * 1000 + Double(d.components.attoseconds) / 1e15) }
            var response = page(.ok, html: html)
            response.headers[serverTimingHeader] = "db;dur=\(ms(loaded - began)), render;dur=\(ms(rendered - loaded))"
            return response
        case .saturated:
            return page(.serviceUnavailable, error: "too many queries in progress; retry in a moment")
        case .timedOut:
            return page(.serviceUnavailable, error: "the database did not answer within \(runner.timeout)")
        case .failed(let error):
            logger.warning("dashboard query failed", metadata: ["error": "\(error)"])
            return page(.serviceUnavailable, error: "database unavailable: \(error)")
        }
    }

    static func page(_ status: HTTPResponse.Status, html: String? = nil, error: String? = nil) -> Response {
        let body = html ?? "<!doctype html><meta charset=utf-8><title>AutoVolt</title><p>\(DashboardPage.esc(error ?? ""))</p><p><a href=\"/\">dashboard</a></p>"
        return Response(status: status, headers: [.contentType: "text/html; charset=utf-8", securityPolicyHeader: securityPolicy,
                                                  .cacheControl: "no-store"],
                        body: .init(byteBuffer: ByteBuffer(string: body)))
    }
}
