import AutoVoltCore
import AutoVoltMongo
import Foundation
import Synchronization
import Hummingbird
import Logging

/// `GET|POST /api/power-analytics/cost-versions` and `POST /api/power-analytics/recalculate`.
/// Writes need `Authorization: Bearer <token>` (AUTOVOLT_API_TOKEN_FILE); without a configured
/// token they are refused.
enum AccountingAPI {
    struct NewTariff: Decodable {
        var costPerKwh: Double
        var effectiveFrom: String
        var classroom: String?
        var currency: String?
        var notes: String?
        enum CodingKeys: String, CodingKey {
            case classroom, currency, notes, costPerKwh = "cost_per_kwh", effectiveFrom = "effective_from"
        }
    }

    struct RecalculateRequest: Decodable {
        var start: String
        var end: String
        var classroom: String?
        var esp32Name: String?
        enum CodingKeys: String, CodingKey { case start, end, classroom, esp32Name = "esp32_name" }
    }

    static func register(on router: Router<BasicRequestContext>, writes: DatabaseWrites, runner: QueryRunner, clock: any WorkerClock,
                         registry: @escaping @Sendable () -> DeviceRegistry, config: WorkerConfig, logger: Logger) {
        let base = "/api/power-analytics"

        router.get("\(base)/cost-versions") { _, _ -> Response in
            let outcome = await runner.analytics({ storage -> [TariffDocument] in
                try storage.tariffs().map { TariffDocument($0, timeZone: config.timeZone) }
            })
            guard case .value(let versions) = outcome else { return runner.refusal(outcome) }
            return json(.ok, versions)
        }

        router.post("\(base)/cost-versions") { request, _ -> Response in
            if let refusal = authorize(request, config) { return refusal }
            let body: NewTariff
            do {
                body = try JSONDecoder().decode(NewTariff.self, from: try await data(of: request))
            } catch {
                return problem(.badRequest, "body must be JSON with cost_per_kwh (number) and effective_from (YYYY-MM-DD or ISO 8601): \(error)")
            }
            guard body.costPerKwh.isFinite, body.costPerKwh >= 0 else { return problem(.badRequest, "cost_per_kwh must be a number >= 0") }
            let currency = (body.currency ?? "INR").uppercased()
            guard currency.count == 3, currency.allSatisfy(\.isLetter) else { return problem(.badRequest, "currency must be a 3-letter code") }
            let calendar = LocalCalendar(timeZone: config.timeZone)
            guard let instant = CivilDate(body.effectiveFrom).map({ calendar.startOfDay($0) }) ?? ISO8601.parseMillis(body.effectiveFrom) else {
                return problem(.badRequest, "effective_from \"\(body.effectiveFrom)\" is not YYYY-MM-DD or an ISO 8601 instant")
            }
            let inForce = registry()
            do {
                try AggregationStore.checkClassroom(body.classroom, in: inForce)
            } catch {
                return problem(.badRequest, "\(error)")
            }
            do {
                let result = try await writes.run { database, concern -> AggregationStore.TariffChange in
                    try store(database, concern, inForce, config, logger).addTariff(
                        costPerKwh: body.costPerKwh, currency: currency, effectiveFrom: instant, classroom: body.classroom,
                        notes: body.notes, now: clock.now())
                }
                return json(.created, result)
            } catch {
                return problem(.serviceUnavailable, "database unavailable: \(error)")
            }
        }

        router.post("\(base)/recalculate") { request, _ -> Response in
            if let refusal = authorize(request, config) { return refusal }
            let body: RecalculateRequest
            do {
                body = try JSONDecoder().decode(RecalculateRequest.self, from: try await data(of: request))
            } catch {
                return problem(.badRequest, "body must be JSON with start and end (YYYY-MM-DD) and optional classroom, esp32_name: \(error)")
            }
            guard let start = CivilDate(body.start) else { return problem(.badRequest, "start \"\(body.start)\" is not YYYY-MM-DD") }
            guard let end = CivilDate(body.end) else { return problem(.badRequest, "end \"\(body.end)\" is not YYYY-MM-DD") }
            guard start <= end else { return problem(.badRequest, "end is before start") }
            guard end.daysSinceEpoch - start.daysSinceEpoch <= 366 else { return problem(.badRequest, "at most 366 days at a time") }
            do {
                let report = try await writes.run { database, concern -> RecalculationReport in
                    try store(database, concern, registry(), config, logger).recalculate(
                        start: start, end: end, classroom: body.classroom, esp32Name: body.esp32Name, now: clock.now())
                }
                return json(.ok, report)
            } catch {
                return problem(.serviceUnavailable, "database unavailable: \(error)")
            }
        }
    }

    static func store(_ database: WorkerDatabase, _ concern: WriteConcern, _ registry: DeviceRegistry, _ config: WorkerConfig,
                      _ logger: Logger) -> AggregationStore {
        AggregationStore(storage: database.aggregationStorage(writeConcern: concern), registry: registry,
                         timeZone: config.timeZone, logger: logger)
    }

    static func authorize(_ request: Request, _ config: WorkerConfig) -> Response? {
        guard let token = config.apiToken else {
            return problem(.forbidden, "write endpoints are disabled: set AUTOVOLT_API_TOKEN_FILE")
        }
        // Constant time: how long the comparison takes says nothing about the token.
        guard constantTimeEquals(request.headers[.authorization] ?? "", "Bearer \(token)") else {
            return problem(.unauthorized, "missing or wrong bearer token")
        }
        return nil
    }

    /// A write's body. One whose JSON holds a NUL in a string or key is refused here: no
    /// store keeps a NUL in text, and PostgreSQL's refusal came back as a 503 (found by
    /// scripts/fuzz-api); a body that is not JSON is left to the route's own decoding.
    static func data(of request: Request) async throws -> Data {
        var buffer = try await request.body.collect(upTo: HTTPLimits.maxBodyBytes)
        let data = Data(buffer.readBytes(length: buffer.readableBytes) ?? [])
        if !data.isEmpty, let json = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]), holdsNUL(json) {
            throw BodyRefusal(message: "the body holds a NUL character")
        }
        return data
    }

    struct BodyRefusal: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }

    private static func holdsNUL(_ value: Any) -> Bool {
        switch value {
        case let text as String: return text.contains("\0")
        case let array as [Any]: return array.contains(where: holdsNUL)
        case let object as [String: Any]: return object.contains { $0.key.contains("\0") || holdsNUL($0.value) }
        default: return false
        }
    }

    static func json<T: Encodable>(_ status: HTTPResponse.Status, _ value: T) -> Response {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let data = (try? encoder.encode(value)) ?? Data("{}".utf8)
        return Response(status: status, headers: [.contentType: "application/json"], body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }

    static func problem(_ status: HTTPResponse.Status, _ message: String) -> Response {
        json(status, ["error": message])
    }
}

/// The HTTP routes that write (tariffs, recalculation): each call on a thread that may block,
/// over whichever backend the worker runs on; MongoDB's write concern resolved once.
struct DatabaseWrites: Sendable {
    let database: WorkerDatabase
    let executor: MongoExecutor?
    let setting: WorkerConfig.WriteConcernSetting
    let concern = WriteConcernBox()

    func run<T: Sendable>(_ body: @escaping @Sendable (WorkerDatabase, WriteConcern) throws -> T) async throws -> T {
        let (database, concern, setting) = (self.database, self.concern, self.setting)
        if let executor, case .mongodb = database {
            return try await executor.run { client throws(MongoError) -> T in
                let resolved = try concern.resolve(setting, client)
                do {
                    return try body(database, resolved)
                } catch let error as MongoError {
                    throw error
                } catch {
                    throw MongoError(kind: .protocolError, code: 0, domain: 0, message: "\(error)")
                }
            }
        }
        return try await onThread { try body(database, .acknowledged) }
    }
}

/// The resolved write concern, looked up once.
final class WriteConcernBox: Sendable {
    private let value = Mutex<WriteConcern?>(nil)

    func resolve(_ setting: WorkerConfig.WriteConcernSetting, _ client: MongoClient) throws(MongoError) -> WriteConcern {
        if let known = value.withLock({ $0 }) { return known }
        let resolved = try setting.resolve(for: client)
        value.withLock { $0 = resolved }
        return resolved
    }
}
