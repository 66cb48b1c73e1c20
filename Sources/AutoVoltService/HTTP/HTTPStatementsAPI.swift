import AutoVoltCore
import AutoVoltMongo
import Foundation
import HTTPTypes
import Hummingbird
import Logging

/// `/api/power-analytics/statements`: list, show, export (GET); generate and freeze (POST, with
/// the API token). The same store as `autovolt-worker statements`; its errors keep their
/// meaning: 400 for a bad month, 404 for an unknown scope or id, 409 for a frozen statement.
enum StatementsAPI {
    struct GenerateRequest: Decodable {
        var month: String
        var classroom: String?
        var group: String?
    }

    /// The SHA-256 of the bytes sent: for a frozen statement, the one recorded when it was frozen.
    static let sha256Header = HTTPField.Name("X-Content-SHA256")!

    struct FreezeRequest: Decodable {
        var by: String?
    }

    static func register(on router: Router<BasicRequestContext>, engine: Worker, writes: DatabaseWrites, runner: QueryRunner,
                         logger: Logger) {
        let base = "\(PowerAnalyticsAPI.prefix)/statements"
        let config = engine.config

        /// Runs a store call on the query path (GETs: admission and deadline) or the write path
        /// (POSTs), over whichever backend the worker runs on; the store is the one the CLI uses.
        @Sendable func answer<T: Sendable>(write: Bool, _ body: @escaping @Sendable (StatementStore) throws(StatementError) -> T,
                                           _ respond: @Sendable (T) -> Response) async -> Response {
            let registry = engine.registryInForce
            let work = { @Sendable (database: WorkerDatabase, concern: WriteConcern) -> Result<T, StatementError> in
                let store = StatementStore(storage: database.statementStorage(writeConcern: concern), registry: registry,
                                           timeZone: config.timeZone, logger: logger)
                do throws(StatementError) { return .success(try body(store)) } catch { return .failure(error) }
            }
            let outcome: Result<T, StatementError>
            if write {
                do {
                    outcome = try await writes.run(work)
                } catch {
                    return AccountingAPI.problem(.serviceUnavailable, "database unavailable: \(error)")
                }
            } else {
                let answer = await runner.stored { database in work(database, .acknowledged) }
                guard case .value(let result) = answer else { return runner.refusal(answer) }
                outcome = result
            }
            switch outcome {
            case .success(let value): return respond(value)
            case .failure(let error): return AccountingAPI.problem(.init(code: error.httpStatus), error.description)
            }
        }

        router.get(.init(base)) { request, _ -> Response in
            let month = request.uri.queryParameters["month"].map(String.init)
            if let month, Statement.parseMonth(month) == nil { return AccountingAPI.problem(.badRequest, "month \"\(month)\" is not YYYY-MM") }
            return await answer(write: false, { store throws(StatementError) in try store.list(month: month) }) {
                AccountingAPI.json(.ok, ["statements": $0])
            }
        }

        router.get("\(base)/:id") { _, context -> Response in
            let id = context.parameters.get("id") ?? ""
            return await answer(write: false, { store throws(StatementError) in try store.show(id) }) {
                AccountingAPI.json(.ok, StatementJSON($0, timeZone: config.timeZone))
            }
        }

        router.get("\(base)/:id/:file") { _, context -> Response in
            let id = context.parameters.get("id") ?? ""
            let file = context.parameters.get("file") ?? ""
            guard file.hasPrefix("export."), let format = StatementFormat(rawValue: String(file.dropFirst("export.".count))) else {
                return AccountingAPI.problem(.notFound, "no \(file): exports are export.csv, export.pdf and export.xlsx")
            }
            return await answer(write: false, { store throws(StatementError) in try store.export(id, format: format) }) { statement, bytes in
                Response(status: .ok, headers: [
                    .contentType: format.contentType,
                    .contentDisposition: "attachment; filename=\"\(statement.id).\(format.rawValue)\"",
                    sha256Header: EventHash.sha256Hex(bytes: bytes),
                ], body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
            }
        }

        router.post("\(base)/generate") { request, _ -> Response in
            if let refusal = AccountingAPI.authorize(request, config) { return refusal }
            let body: GenerateRequest
            do {
                body = try JSONDecoder().decode(GenerateRequest.self, from: try await AccountingAPI.data(of: request))
            } catch {
                return AccountingAPI.problem(.badRequest, "body must be JSON with month (YYYY-MM) and optional classroom or group: \(error)")
            }
            guard Statement.parseMonth(body.month) != nil else { return AccountingAPI.problem(.badRequest, "month \"\(body.month)\" is not YYYY-MM") }
            guard body.classroom == nil || body.group == nil else { return AccountingAPI.problem(.badRequest, "give classroom or group, not both") }
            return await answer(write: true, { store throws(StatementError) in
                let made = try store.generate(month: body.month, scope: try store.scope(classroom: body.classroom, group: body.group),
                                              now: engine.clock.now())
                return store.summary(made)
            }) { AccountingAPI.json(.created, $0) }
        }

        router.post("\(base)/:id/freeze") { request, context -> Response in
            if let refusal = AccountingAPI.authorize(request, config) { return refusal }
            let id = context.parameters.get("id") ?? ""
            let body: FreezeRequest
            do {
                let data = try await AccountingAPI.data(of: request)
                body = data.isEmpty ? FreezeRequest() : try JSONDecoder().decode(FreezeRequest.self, from: data)
            } catch {
                return AccountingAPI.problem(.badRequest, "body must be empty or JSON with by (who freezes it): \(error)")
            }
            let by = body.by.flatMap { $0.isEmpty ? nil : $0 } ?? "api"
            return await answer(write: true, { store throws(StatementError) in
                store.summary(try store.freeze(id, by: by, now: engine.clock.now()))
            }) { AccountingAPI.json(.ok, $0) }
        }
    }
}
