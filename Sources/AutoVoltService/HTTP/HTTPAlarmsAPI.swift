import AutoVoltCore
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import Synchronization

/// `GET /api/power-analytics/alarms?status=active|all&from=&to=&limit=`, `POST .../alarms/{id}/ack`
/// (bearer token; body `{"by": "name"}` optional) and `GET .../alarms/stream` (Server-Sent Events:
/// `raise`, `clear`, `ack`; each event's `id` is its number, and `Last-Event-ID` resumes after it).
enum AlarmsAPI {
    /// A constant, valid header name: the unwrap cannot fail.
    static let lastEventIDHeader = HTTPField.Name("Last-Event-ID")!

    /// Open streams at most (each polls the event log once a second on the read pool, never on
    /// the write executor the acks and tariffs need); past it a new one is told to come back.
    static let streamLimit = 64
    static let openStreams = Atomic<Int>(0)

    struct AckBody: Decodable { var by: String? }

    struct AckAnswer: Encodable {
        let acknowledged: Bool
        let alarm: AlarmRecord
    }

    /// Reads run on the query runner (admission, deadline), the ack on the write path; both over
    /// whichever backend the worker runs on, through the `AlarmStore` the CLI uses.
    static func register(on router: Router<BasicRequestContext>, engine: Worker, writes: DatabaseWrites, runner: QueryRunner) {
        let base = "\(PowerAnalyticsAPI.prefix)/alarms"
        let config = engine.config
        /// For reads: no write concern applies.
        @Sendable func reader(_ database: WorkerDatabase) -> AlarmStore {
            AlarmStore(storage: database.alarmStorage(writeConcern: .acknowledged))
        }

        router.get(.init(base)) { request, _ -> Response in
            let q = request.uri.queryParameters
            let status = q["status"].map(String.init) ?? "active"
            guard status == "active" || status == "all" else { return AccountingAPI.problem(.badRequest, "status must be active or all") }
            var calendar = LocalCalendar(timeZone: config.timeZone)
            let from: EpochMillis?
            let to: EpochMillis?
            let limit: Int
            do throws(AnalyticsParameterError) {
                from = try q["from"].map { text throws(AnalyticsParameterError) in
                    try AnalyticsQueries.bound(String(text), name: "from", isEnd: false, calendar: &calendar).millis
                }
                to = try q["to"].map { text throws(AnalyticsParameterError) in
                    try AnalyticsQueries.bound(String(text), name: "to", isEnd: true, calendar: &calendar).millis
                }
                guard let parsed = Int(q["limit"].map(String.init) ?? "500"), (1...5000).contains(parsed) else {
                    throw AnalyticsParameterError("limit must be a whole number from 1 to 5000")
                }
                limit = parsed
            } catch {
                return AccountingAPI.problem(.badRequest, error.message)
            }
            let outcome = await runner.stored { database in
                try reader(database).list(activeOnly: status == "active", from: from, to: to, limit: limit)
            }
            guard case .value(let alarms) = outcome else { return runner.refusal(outcome) }
            return AccountingAPI.json(.ok, AlarmList(status: status, alarms: alarms))
        }

        router.post("\(base)/:id/ack") { request, context -> Response in
            if let refusal = AccountingAPI.authorize(request, config) { return refusal }
            guard let id = context.parameters.get("id"), !id.isEmpty else { return AccountingAPI.problem(.badRequest, "alarm id missing") }
            var by = "api"
            let data: Data
            do {
                data = try await AccountingAPI.data(of: request)
            } catch {
                return AccountingAPI.problem(.badRequest, "\(error)")
            }
            if !data.isEmpty {
                guard let body = try? JSONDecoder().decode(AckBody.self, from: data) else {
                    return AccountingAPI.problem(.badRequest, "body must be empty or JSON {\"by\": \"who acknowledges\"}")
                }
                if let name = body.by?.trimmingCharacters(in: .whitespaces), !name.isEmpty { by = String(name.prefix(200)) }
            }
            let person = by
            do {
                let outcome = try await writes.run { database, concern in
                    try AlarmStore(storage: database.alarmStorage(writeConcern: concern)).acknowledge(id: id, by: person, at: engine.clock.now())
                }
                switch outcome {
                case .acknowledged(let record, let published):
                    engine.alarms?.announce(published)
                    return AccountingAPI.json(.ok, AckAnswer(acknowledged: true, alarm: record))
                case .already(let record):
                    return AccountingAPI.json(.ok, AckAnswer(acknowledged: false, alarm: record))
                case .notFound:
                    return AccountingAPI.problem(.notFound, "no alarm \(id)")
                }
            } catch {
                return AccountingAPI.problem(.serviceUnavailable, "database unavailable: \(error)")
            }
        }

        router.get("\(base)/stream") { request, _ -> Response in
            guard openStreams.add(1, ordering: .relaxed).newValue <= streamLimit else {
                openStreams.subtract(1, ordering: .relaxed)
                var refused = AccountingAPI.problem(.serviceUnavailable, "too many alarm streams open (\(streamLimit)); retry later")
                refused.headers[.retryAfter] = "10"
                return refused
            }
            var handedOver = false
            defer { if !handedOver { openStreams.subtract(1, ordering: .relaxed) } }
            let resume = request.headers[lastEventIDHeader].flatMap { Int64($0.trimmingCharacters(in: .whitespaces)) }
                ?? request.uri.queryParameters["last_event_id"].flatMap { Int64(String($0)) }
            let start: Int64
            if let resume {
                start = resume
            } else {
                // A read, on the read pool like the stream's polls.
                let outcome = await runner.stored { database in try reader(database).lastEventID() }
                guard case .value(let last) = outcome else { return runner.refusal(outcome) }
                start = last
            }
            handedOver = true
            let body = ResponseBody { writer in
                defer { openStreams.subtract(1, ordering: .relaxed) }
                var cursor = AlarmEventCursor(after: start)
                // Tells the browser how soon to reconnect, and opens the stream at once.
                try await writer.write(ByteBuffer(string: "retry: 3000\n: alarms after event \(start)\n\n"))
                var quietRounds = 0
                while !engine.isShuttingDown && !Task.isCancelled {
                    let after = cursor.lastID
                    var stored: [AlarmEvent] = []
                    if case .value(let events) = await runner.stored({ database in try reader(database).events(after: after, limit: 200) }) {
                        stored = events
                    }
                    let ready = cursor.take(stored, now: engine.clock.now())
                    if ready.isEmpty {
                        quietRounds += 1
                        if quietRounds >= 15 { // a comment every 15 s keeps proxies from closing the stream
                            try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                            quietRounds = 0
                        }
                    } else {
                        quietRounds = 0
                        var text = ""
                        for event in ready {
                            text += "id: \(event.id)\nevent: \(event.type)\ndata: \(String(decoding: AnalyticsQueries.json(event), as: UTF8.self))\n\n"
                        }
                        try await writer.write(ByteBuffer(string: text))
                    }
                    if ready.count < stored.count || stored.count < 200 { try await Task.sleep(for: .seconds(1)) }
                }
                try await writer.finish(nil)
            }
            return Response(status: .ok, headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"], body: body)
        }
    }
}
