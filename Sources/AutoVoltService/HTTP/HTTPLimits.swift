import AutoVoltMongo
import AutoVoltPostgres
import Foundation
import Synchronization
import Hummingbird

/// Bounds of the HTTP interface: request sizes, query parameters, and admission of the
/// database-backed read queries (contract section 7; README "Operating").
enum HTTPLimits {
    /// Request bodies (the POST routes): larger is 413.
    static let maxBodyBytes = 64 * 1024
    /// The whole request target (path and query): longer is 414.
    static let maxTargetBytes = 4096
    /// Query parameters per request, and the length of each value: more or longer is 400.
    static let maxQueryParameters = 16
    static let maxQueryValueBytes = 256
    /// What a 503 of a saturated or timed-out query tells the client to wait, in seconds.
    static let retryAfterSeconds = 1
}

/// Refuses over-long request targets, too many or too long query parameters and bodies
/// announced larger than `HTTPLimits.maxBodyBytes`, before any route runs. (Bodies without a
/// Content-Length are still cut at the limit when collected.)
struct RequestBoundsMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.uri.string.utf8.count > HTTPLimits.maxTargetBytes {
            return PowerAnalyticsAPI.errorResponse(.uriTooLong, "request target longer than \(HTTPLimits.maxTargetBytes) bytes")
        }
        let parameters = request.uri.queryParameters
        if parameters.count > HTTPLimits.maxQueryParameters {
            return PowerAnalyticsAPI.errorResponse(.badRequest, "more than \(HTTPLimits.maxQueryParameters) query parameters")
        }
        for (name, value) in parameters where value.utf8.count > HTTPLimits.maxQueryValueBytes || name.utf8.count > 64 {
            return PowerAnalyticsAPI.errorResponse(
                .badRequest, "query parameter \(String(name.prefix(64)).debugDescription) is longer than \(HTTPLimits.maxQueryValueBytes) bytes")
        }
        // No store keeps a NUL in text (PostgreSQL refuses it, 22021): a parameter or path that
        // holds one is the client's error, said as such, not a 500 (found by scripts/fuzz-api).
        if request.uri.path.contains("%00") || request.uri.path.contains("\0") {
            return PowerAnalyticsAPI.errorResponse(.badRequest, "the path holds a NUL character")
        }
        for (name, value) in parameters where name.contains("\0") || value.contains("\0") {
            return PowerAnalyticsAPI.errorResponse(.badRequest, "query parameter \(String(name.prefix(64)).debugDescription) holds a NUL character")
        }
        let maxBody = request.uri.path == HTTPIngestAPI.path ? HTTPIngestAPI.maxBodyBytes : HTTPLimits.maxBodyBytes
        if let length = request.headers[.contentLength], let n = Int(length), n > maxBody {
            return PowerAnalyticsAPI.errorResponse(.contentTooLarge, "request body larger than \(maxBody) bytes")
        }
        return try await next(request, context)
    }
}

/// 405 with `Allow` for a method a known path does not take (Hummingbird answers 404, as for a
/// path that does not exist); the known paths and their methods are the OpenAPI document's,
/// which a test holds equal to the router's. HEAD goes where GET does.
struct AllowedMethodsMiddleware<Context: RequestContext>: RouterMiddleware {
    /// Path segments (nil: a capture) and the methods of each documented path.
    let paths: [(segments: [String?], methods: Set<String>)]

    init(openAPI json: String) {
        let document = (try? JSONSerialization.jsonObject(with: Data(json.utf8))) as? [String: Any]
        let items = document?["paths"] as? [String: Any] ?? [:]
        paths = items.map { path, item in
            let segments = path.split(separator: "/").map { part -> String? in part.hasPrefix("{") ? nil : String(part) }
            var methods = Set((item as? [String: Any] ?? [:]).keys.map { $0.uppercased() })
            if methods.contains("GET") { methods.insert("HEAD") }
            return (segments, methods)
        }
    }

    func handle(_ request: Request, context: Context,
                next: (Request, Context) async throws -> Response) async throws -> Response {
        let segments = request.uri.path.split(separator: "/")
        let matching = paths.filter { entry in
            entry.segments.count == segments.count && zip(entry.segments, segments).allSatisfy { $0 == nil || $0 == String($1) }
        }
        // The most literal match wins, as in the router: statements/generate is not statements/{id}.
        let fewestCaptures = matching.map { $0.segments.filter { $0 == nil }.count }.min()
        let known = matching.filter { $0.segments.filter { $0 == nil }.count == fewestCaptures }
        let allowed = known.reduce(into: Set<String>()) { $0.formUnion($1.methods) }
        if !known.isEmpty && !allowed.contains(request.method.rawValue) {
            var response = PowerAnalyticsAPI.errorResponse(.methodNotAllowed, "\(request.method.rawValue) is not allowed here")
            response.headers[.allow] = allowed.sorted().joined(separator: ", ")
            return response
        }
        return try await next(request, context)
    }
}

/// Admission for the database-backed queries: at most `maxConcurrent` run at once, at most
/// `maxQueued` wait (first come, first served) until their deadline; beyond that a request is
/// refused at once. Holding a slot until the MongoDB call really ends (also after its HTTP
/// answer timed out) keeps a slow database from collecting ever more blocked calls.
// @unchecked: every mutable field is read and written only under `lock`.
final class AdmissionGate: @unchecked Sendable {
    enum Outcome: Sendable { case admitted, saturated, timedOut }

    let maxConcurrent: Int
    let maxQueued: Int
    private let lock = NSLock()
    private var running = 0
    private var nextID: UInt64 = 0
    private var waiters: [(id: UInt64, continuation: CheckedContinuation<Bool?, Never>)] = []

    init(maxConcurrent: Int, maxQueued: Int) {
        self.maxConcurrent = max(1, maxConcurrent)
        self.maxQueued = max(0, maxQueued)
    }

    /// Waits for a slot until `deadline`. `.admitted` must be followed by one `release()`.
    func acquire(deadline: ContinuousClock.Instant) async -> Outcome {
        let id: UInt64 = lock.withLock { nextID += 1; return nextID }
        let admitted: Bool? = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool?, Never>) in
                lock.lock()
                if running < maxConcurrent {
                    running += 1
                    lock.unlock()
                    continuation.resume(returning: true)
                } else if waiters.count >= maxQueued {
                    lock.unlock()
                    continuation.resume(returning: nil)
                } else {
                    waiters.append((id, continuation))
                    lock.unlock()
                    Task { [self] in
                        try? await Task.sleep(until: deadline, clock: .continuous)
                        expire(id)
                    }
                }
            }
        } onCancel: {
            expire(id)
        }
        switch admitted {
        case true?: return .admitted
        case false?: return .timedOut
        case nil: return .saturated
        }
    }

    /// Hands the slot to the longest waiter, or frees it.
    func release() {
        lock.lock()
        if waiters.isEmpty {
            running -= 1
            lock.unlock()
        } else {
            let next = waiters.removeFirst()
            lock.unlock()
            next.continuation.resume(returning: true)
        }
    }

    /// (running, queued), for tests and logs.
    var load: (running: Int, queued: Int) { lock.withLock { (running, waiters.count) } }

    private func expire(_ id: UInt64) {
        lock.lock()
        guard let index = waiters.firstIndex(where: { $0.id == id }) else { lock.unlock(); return }
        let waiter = waiters.remove(at: index)
        lock.unlock()
        waiter.continuation.resume(returning: false)
    }
}

/// The first of several offered values; later offers are dropped.
final class FirstOffer<T: Sendable>: Sendable {
    private struct State {
        var value: T?
        var done = false
        var continuation: CheckedContinuation<T, Never>?
    }
    private let state = Mutex(State())

    func offer(_ offered: T) {
        // The continuation is resumed outside the lock.
        let waiting: CheckedContinuation<T, Never>?? = state.withLock { state in
            guard !state.done else { return nil }
            state.done = true
            guard let continuation = state.continuation else {
                state.value = offered
                return .some(nil)
            }
            state.continuation = nil
            return .some(continuation)
        }
        if case let continuation?? = waiting { continuation.resume(returning: offered) }
    }

    func wait() async -> T {
        await withCheckedContinuation { continuation in
            let ready: T? = state.withLock { state in
                if let value = state.value { return value }
                state.continuation = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}

/// Runs database-backed HTTP work within the admission gate and a per-request deadline.
struct QueryRunner: Sendable {
    enum Outcome<T: Sendable>: Sendable {
        case value(T)
        case failed(any Error)
        /// No slot free and the wait queue full.
        case saturated
        /// The deadline passed (waiting for a slot, on the server: maxTimeMS, or waiting for the answer).
        case timedOut
    }

    /// Where the analytics reads run: MongoDB's executor, or PostgreSQL's pool (each read on a
    /// thread of its own, never the cooperative pool; the gate bounds how many at once).
    enum Source: Sendable {
        case mongodb(MongoExecutor)
        case postgresql(PostgresPool)
    }

    let source: Source
    let gate: AdmissionGate
    let timeout: Duration

    init(executor: MongoExecutor, gate: AdmissionGate, timeout: Duration) {
        self.init(source: .mongodb(executor), gate: gate, timeout: timeout)
    }

    init(source: Source, gate: AdmissionGate, timeout: Duration) {
        self.source = source
        self.gate = gate
        self.timeout = timeout
    }

    struct NotOnThisBackend: Error, CustomStringConvertible {
        var description: String { "not available on the PostgreSQL backend yet" }
    }

    /// An analytics read (queries, dashboard) over whichever backend the worker runs on, with
    /// the same admission gate and deadline as `run`.
    func analytics<T: Sendable>(_ body: @escaping @Sendable (any AnalyticsStorage) throws -> T) async -> Outcome<T> {
        switch source {
        case .mongodb:
            return await run { client throws(MongoError) -> T in
                do {
                    return try body(MongoAnalyticsStorage(client: client))
                } catch let error as MongoError {
                    throw error
                } catch {
                    throw MongoError(kind: .invalidArgument, code: 0, domain: 0, message: "\(error)")
                }
            }
        case .postgresql(let pool):
            return await admitted { deadline in
                try await onThread { try body(PostgresAnalyticsStorage(pool: pool, deadline: deadline)) }
            }
        }
    }

    /// A read through another stage's storage (alarms, statements: `WorkerDatabase` hands it
    /// out) over whichever backend, with the same admission gate and deadline: on MongoDB each
    /// read carries the time left as `maxTimeMS`; on PostgreSQL the answer does not wait past it.
    func stored<T: Sendable>(_ body: @escaping @Sendable (WorkerDatabase) throws -> T) async -> Outcome<T> {
        switch source {
        case .mongodb:
            return await run { client throws(MongoError) -> T in
                do {
                    return try body(.mongodb(client))
                } catch let error as MongoError {
                    throw error
                } catch {
                    throw MongoError(kind: .invalidArgument, code: 0, domain: 0, message: "\(error)")
                }
            }
        case .postgresql(let pool):
            return await admitted { _ in try await onThread { try body(.postgresql(pool)) } }
        }
    }

    /// `body` runs on the executor's thread under `MongoClient.withDeadline`, so each read it
    /// makes carries the time left as `maxTimeMS`. The answer does not wait past the deadline
    /// (plus a little for the server's own timeout to arrive first), even when the database hangs.
    func run<T: Sendable>(_ body: @escaping @Sendable (MongoClient) throws(MongoError) -> T) async -> Outcome<T> {
        guard case .mongodb(let executor) = source else { return .failed(NotOnThisBackend()) }
        return await admitted { deadline in
            try await executor.run { client throws(MongoError) -> T in
                try MongoClient.withDeadline(deadline) { () throws(MongoError) -> T in try body(client) }
            }
        }
    }

    /// Admission, then `work` with its deadline; the answer, or `.timedOut` 250 ms past the
    /// deadline whatever the work is doing.
    private func admitted<T: Sendable>(_ work: @escaping @Sendable (ContinuousClock.Instant) async throws -> T) async -> Outcome<T> {
        let deadline = ContinuousClock.now + timeout
        switch await gate.acquire(deadline: deadline) {
        case .saturated: return .saturated
        case .timedOut: return .timedOut
        case .admitted: break
        }
        let first = FirstOffer<Outcome<T>>()
        let gate = self.gate
        Task {
            let outcome: Outcome<T>
            do {
                outcome = .value(try await work(deadline))
            } catch let error as MongoError where error.isTimeLimitExceeded {
                outcome = .timedOut
            } catch where PostgresAnalyticsStorage.isDeadlineExceeded(error) {
                outcome = .timedOut
            } catch {
                outcome = .failed(error)
            }
            gate.release()
            first.offer(outcome)
        }
        let timer = Task {
            try? await Task.sleep(until: deadline + .milliseconds(250), clock: .continuous)
            first.offer(.timedOut)
        }
        let outcome = await first.wait()
        timer.cancel()
        return outcome
    }

    /// What a JSON route answers for a query that gave no value: a 503, with `Retry-After` when
    /// retrying soon can help. (A value is no refusal: a 500, never expected.)
    func refusal<T: Sendable>(_ outcome: Outcome<T>) -> Response {
        switch outcome {
        case .saturated: return Self.unavailable("too many queries in progress; retry later")
        case .timedOut: return Self.unavailable("query did not finish within \(timeout); retry later")
        case .failed(let error): return AccountingAPI.problem(.serviceUnavailable, "database unavailable: \(error)")
        case .value: return AccountingAPI.problem(.internalServerError, "a query's answer was taken for a refusal")
        }
    }

    /// The 503 of a saturated or timed-out query, with `Retry-After`.
    static func unavailable(_ message: String) -> Response {
        var response = PowerAnalyticsAPI.errorResponse(.serviceUnavailable, message)
        response.headers[.retryAfter] = "\(HTTPLimits.retryAfterSeconds)"
        return response
    }
}
