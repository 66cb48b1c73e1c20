import AutoVoltMongo
import AutoVoltTestSupport
import Foundation
#if canImport(Glibc)
import Glibc
#endif
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// Issue 9, section 3: health that always answers, bounded analytics, and the HTTP tests of
/// section 7 (health shape and its 503, Prometheus text, a taken port).
@Suite("integration: health, metrics and HTTP limits", .serialized)
struct HTTPHealthTests {
    struct Answer: Sendable {
        let status: Int
        let headers: [String: String]
        let body: Data
        var json: [String: Any] { (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] ?? [:] }
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    /// Its own URLSession per use, with enough connections: a shared one would queue the health
    /// probes behind the load on the client side.
    static func session(connections: Int = 64) -> URLSession {
        let configuration = URLSessionConfiguration.ephemeral
        configuration.httpMaximumConnectionsPerHost = connections
        configuration.timeoutIntervalForRequest = 120
        return URLSession(configuration: configuration)
    }

    static func call(_ session: URLSession, _ port: Int, _ path: String, method: String = "GET",
                     headers: [String: String] = [:], body: Data? = nil) async throws -> Answer {
        var request = URLRequest(url: try #require(URL(string: "http://127.0.0.1:\(port)\(path)")))
        request.httpMethod = method
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        request.httpBody = body
        let (data, response) = try await session.data(for: request)
        let http = response as? HTTPURLResponse
        var fields: [String: String] = [:]
        for (name, value) in http?.allHeaderFields ?? [:] {
            if let name = name as? String, let value = value as? String { fields[name.lowercased()] = value }
        }
        return Answer(status: http?.statusCode ?? 0, headers: fields, body: data)
    }

    /// GETs sent together (resumed in one loop, from one thread) with each answer's time taken
    /// in URLSession's callback: a test process whose cooperative threads are held by other
    /// suites' blocking waits can neither spread the requests out nor make an answer look late.
    static func burst(_ session: URLSession, _ url: URL, count: Int) async -> Completions {
        let completions = Completions()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let group = DispatchGroup()
            let tasks = (0..<count).map { _ in
                group.enter()
                let begin = ContinuousClock.now
                return session.dataTask(with: url) { data, response, _ in
                    let elapsed = ContinuousClock.now - begin
                    let http = response as? HTTPURLResponse
                    let json = data.flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
                    completions.add(http?.statusCode ?? 0, Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18,
                                    http?.value(forHTTPHeaderField: "Retry-After"), (json?["error"] as? String) ?? "")
                    group.leave()
                }
            }
            for task in tasks { task.resume() }
            group.notify(queue: .global()) { continuation.resume() }
        }
        return completions
    }

    /// A GET on the calling thread (URLSession's threads do the work); (status, milliseconds).
    static func blockingGet(_ session: URLSession, _ url: URL) -> (Int, Double) {
        // @unchecked: written by URLSession's callback before `done.signal()`, read after `done.wait()`.
        final class Box: @unchecked Sendable { var status = 0 }
        let box = Box()
        let done = DispatchSemaphore(value: 0)
        let begin = ContinuousClock.now
        session.dataTask(with: url) { _, response, _ in
            box.status = (response as? HTTPURLResponse)?.statusCode ?? 0
            done.signal()
        }.resume()
        done.wait()
        let elapsed = ContinuousClock.now - begin
        return (box.status, Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15)
    }

    static func waitForHTTP(_ session: URLSession, _ port: Int, path: String = "/health", timeout: Double = 30) async -> Bool {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let answer = try? await call(session, port, path), answer.status != 0 { return true }
            try? await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    // @unchecked: `answers` is read and written only under `lock`.
    final class Completions: @unchecked Sendable {
        private let lock = NSLock()
        private var answers: [(status: Int, seconds: Double, retryAfter: String?, error: String)] = []
        func add(_ status: Int, _ seconds: Double, _ retryAfter: String?, _ error: String) {
            lock.withLock { answers.append((status, seconds, retryAfter, error)) }
        }
        var count: Int { lock.withLock { answers.count } }
        var all: [(status: Int, seconds: Double, retryAfter: String?, error: String)] { lock.withLock { answers } }
    }

    // MARK: Health under load

    @Test func healthAnswersWhileEveryAnalyticsThreadIsBusyAndRequestsQueue() async throws {
        // Every find on the ledger takes 2 s on the server (outside its store lock): a timeline
        // request holds an analytics thread for that long, so no timeline request can answer
        // before 2 s. Health must answer, repeatedly, before the first of them does: an ordering
        // the test can see, not a latency budget (that is measured, printed, and not asserted:
        // the machines are shared and noisy).
        let delayMS = 2000
        let rig = try Rig(mongoArguments: ["--delay", "device_consumption_ledgers:\(delayMS)"])
        let port = freeTCPPort()
        try rig.startWorker(extra: ["AUTOVOLT_HTTP_ADDR": "127.0.0.1:\(port)", "AUTOVOLT_HTTP_QUERY_TIMEOUT": "60s"])
        let probe = Self.session(connections: 2)
        #expect(await Self.waitForHTTP(probe, port, path: "/metrics"))
        // A connection open (through /metrics, which leaves the health figures uncached: the
        // first probe under load must fetch them from the database).
        #expect(try await Self.call(probe, port, "/metrics").status == 200)

        // The load and the probes run on URLSession's and a thread of their own, not as Swift
        // tasks: other suites' blocking waits can starve the test process's cooperative pool.
        let load = Self.session()
        let completions = Completions()
        let started = ContinuousClock.now
        let requests = 8  // twice the analytics threads: four run, four wait in the queue
        let timeline = try #require(URL(string: "http://127.0.0.1:\(port)/api/power-analytics/timeline?start=2026-11-05&end=2026-11-06"))
        for _ in 0..<requests {
            let begin = ContinuousClock.now
            load.dataTask(with: timeline) { data, response, _ in
                let elapsed = ContinuousClock.now - begin
                completions.add((response as? HTTPURLResponse)?.statusCode ?? 0,
                                Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18,
                                nil, String(decoding: data ?? Data(), as: UTF8.self))
            }.resume()
        }
        // Probe /health until every timeline request has answered; a probe counts as "under
        // load" when no timeline request had answered by the time the probe did.
        let health = try #require(URL(string: "http://127.0.0.1:\(port)/health"))
        let probes: [(ms: Double, status: Int, underLoad: Bool)] = await withCheckedContinuation { continuation in
            Thread.detachNewThread {
                var probes: [(ms: Double, status: Int, underLoad: Bool)] = []
                while completions.count < requests, ContinuousClock.now - started < .seconds(120) {
                    let (status, ms) = Self.blockingGet(probe, health)
                    probes.append((ms, status, completions.count == 0))
                    Thread.sleep(forTimeInterval: 0.02)  // pacing between probes, not a wait for a state
                }
                continuation.resume(returning: probes)
            }
        }
        #expect(probes.allSatisfy { $0.status == 200 }, "\(probes)")
        let underLoad = probes.filter(\.underLoad).map(\.ms)
        while completions.count < requests, ContinuousClock.now - started < .seconds(150) {
            try await Task.sleep(for: .milliseconds(50))
        }
        let total = ContinuousClock.now - started

        let answers = completions.all
        #expect(answers.count == requests)
        #expect(answers.allSatisfy { $0.status == 200 }, "\(answers.map(\.status)) \(answers.first?.error ?? "")")
        // The requests really queued: eight 2-second queries on 4 analytics threads take >= 4 s.
        #expect(total >= .milliseconds(delayMS * requests / 4 - 500), "\(total)")
        let sorted = underLoad.sorted()
        let median = sorted.isEmpty ? .infinity : sorted[sorted.count / 2]
        print("health under load: \(sorted.count) probes before the first timeline answer, median "
              + "\(String(format: "%.1f", median)) ms, max \(String(format: "%.1f", sorted.last ?? .infinity)) ms; "
              + "\(requests) timeline requests took \(total)")
        // Queued behind the analytics, a probe could not answer before the first timeline
        // request (>= 4 s): three that did show health has a path of its own.
        #expect(sorted.count >= 3, "health probes answered before any timeline request: \(sorted)")
    }

    // MARK: Saturation, deadline, bounds, token

    @Test func saturatedOrLateQueriesAre503WithRetryAfterAndOversizedRequestsAreRefused() async throws {
        // A query that takes 9 s against a 1.5 s deadline: far apart, so a loaded CI machine
        // cannot blur which side of the deadline an answer came from.
        let rig = try Rig(mongoArguments: ["--delay", "device_consumption_ledgers:9000"])
        let port = freeTCPPort()
        let token = "token-\(UUID().uuidString)"
        let tokenFile = FileManager.default.temporaryDirectory.appendingPathComponent("token-\(UUID().uuidString)")
        try token.write(to: tokenFile, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: tokenFile) }
        try rig.startWorker(extra: [
            "AUTOVOLT_HTTP_ADDR": "127.0.0.1:\(port)", "AUTOVOLT_API_TOKEN_FILE": tokenFile.path,
            "AUTOVOLT_HTTP_QUERY_CONCURRENCY": "1", "AUTOVOLT_HTTP_QUERY_QUEUE": "2", "AUTOVOLT_HTTP_QUERY_TIMEOUT": "1500ms",
        ])
        let session = Self.session()
        #expect(await Self.waitForHTTP(session, port))

        // One runs (the server stops it at its maxTimeMS), two wait and time out in the queue,
        // the other three are refused at once.
        let timeline = try #require(URL(string: "http://127.0.0.1:\(port)/api/power-analytics/timeline?start=2026-11-05&end=2026-11-06"))
        let answers = await Self.burst(session, timeline, count: 6).all
        #expect(answers.allSatisfy { $0.status == 503 && $0.retryAfter == "1" }, "\(answers)")
        let refused = answers.filter { $0.error.contains("too many queries") }
        let late = answers.filter { $0.error.contains("did not finish within") }
        #expect(refused.count >= 3 && late.count >= 1 && refused.count + late.count == 6, "\(answers)")
        // The deadline holds: nobody waited for the 9 s query (an answer that had waited for it
        // would take at least that long; anything shorter, on however loaded a machine, did not).
        #expect(answers.allSatisfy { $0.seconds < 9 }, "\(answers)")

        // Once the load is gone, queries answer again.
        let fine = try await Self.call(session, port, "/api/power-analytics/summary?date=2026-11-05")
        #expect(fine.status == 200, "\(fine.text)")

        // Bounds: query parameters, request target, body.
        let long = String(repeating: "x", count: 300)
        let tooLong = try await Self.call(session, port, "/api/power-analytics/summary?date=2026-11-05&classroom=\(long)")
        #expect(tooLong.status == 400 && (tooLong.json["error"] as? String)?.contains("classroom") == true, "\(tooLong.text)")
        let many = (0..<20).map { "p\($0)=1" }.joined(separator: "&")
        #expect(try await Self.call(session, port, "/api/power-analytics/summary?\(many)").status == 400)
        let target = String(repeating: "a", count: 5000)
        #expect(try await Self.call(session, port, "/health?\(target)").status == 414)
        let big = Data(repeating: UInt8(ascii: " "), count: 70 * 1024)
        let bigPost = try await Self.call(session, port, "/api/power-analytics/cost-versions", method: "POST",
                                          headers: ["Authorization": "Bearer \(token)", "Content-Type": "application/json"], body: big)
        #expect(bigPost.status == 413, "\(bigPost.text)")
        // The token: wrong ones (also a prefix, and the right one with a suffix) are 401.
        for wrong in ["", String(token.dropLast()), token + "x", "wrong"] {
            let answer = try await Self.call(session, port, "/api/power-analytics/recalculate", method: "POST",
                                             headers: ["Authorization": "Bearer \(wrong)"], body: Data(#"{"start":"2026-11-01","end":"2026-11-01"}"#.utf8))
            #expect(answer.status == 401, "\(wrong): \(answer.text)")
        }
    }

    // MARK: /health shape and its 503

    @Test func healthHasTheContractShape() async throws {
        let rig = try Rig()
        let port = freeTCPPort()
        try rig.startWorker(extra: ["AUTOVOLT_HTTP_ADDR": "127.0.0.1:\(port)"])
        let session = Self.session(connections: 2)
        #expect(await Self.waitForHTTP(session, port))
        try rig.publisher().publish([reading("lab-101", 1), reading("lab-101", 2)])
        #expect(rig.waitForCount("telemetry_events", 2))
        // The counts are cached for 5 s: wait until they show the two events.
        var document: [String: Any] = [:]
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            let answer = try await Self.call(session, port, "/health")
            #expect(answer.status == 200 && answer.headers["content-type"] == "application/json")
            document = answer.json
            if (document["telemetry"] as? [String: Any])?["total_events"] as? Int == 2 { break }
            try await Task.sleep(for: .milliseconds(200))
        }
        #expect(["healthy", "degraded"].contains(document["status"] as? String ?? ""), "\(document)")
        #expect((document["timestamp"] as? String).flatMap { ISO8601DateFormatter.withFractions.date(from: $0) } != nil, "\(document)")
        let telemetry = try #require(document["telemetry"] as? [String: Any])
        #expect(telemetry["total_events"] as? Int == 2)
        for key in ["unprocessed_events", "events_last_hour", "online_devices"] {
            #expect(telemetry[key] is Int, "telemetry.\(key): \(telemetry)")
        }
        let ledger = try #require(document["ledger"] as? [String: Any])
        for key in ["events_processed", "entries_created", "resets_detected", "errors"] {
            #expect(ledger[key] is Int, "ledger.\(key): \(ledger)")
        }
        #expect(ledger["is_processing"] is Bool)
        let aggregation = try #require(document["aggregation"] as? [String: Any])
        #expect(aggregation.keys.contains("last_run") && aggregation.keys.contains("last_run_id"))
        let mqtt = try #require(document["mqtt"] as? [String: Any])
        #expect(mqtt["connected"] as? Bool == true)
        let mongodb = try #require(document["mongodb"] as? [String: Any])
        #expect(mongodb["reachable"] as? Bool == true)
        let journal = try #require(document["journal"] as? [String: Any])
        #expect(journal["full"] as? Bool == false && journal["pending_records"] is Int && journal["max_bytes"] is Int)
        // The AutoVolt deployment guide's monitoring path answers the same document.
        let guide = try await Self.call(session, port, "/api/power-analytics/health")
        #expect(guide.status == 200 && Set(guide.json.keys) == Set(document.keys), "\(guide.json)")
        #expect(["healthy", "degraded"].contains(guide.json["status"] as? String ?? ""))
        #expect((guide.json["telemetry"] as? [String: Any])?["total_events"] as? Int == 2)
    }

    @Test func healthIs503WhenTheJournalIsFull() async throws {
        // The database is away from the start (nothing listens on its port): everything stays
        // in the 1 MiB journal until it is full.
        let rig = try Rig()
        let port = freeTCPPort()
        let worker = WorkerProcess(environment: rig.environment.merging([
            "AUTOVOLT_HTTP_ADDR": "127.0.0.1:\(port)",
            "AUTOVOLT_MONGODB_URI": "mongodb://127.0.0.1:\(freeTCPPort())/autovolt_gone?serverSelectionTimeoutMS=300&connectTimeoutMS=300",
            "AUTOVOLT_JOURNAL_MAX_BYTES": "1MiB",
        ]) { $1 })
        try worker.start()
        rig.workers.append(worker)
        #expect(worker.waitUntilSubscribed(), "\(worker.log)")
        let session = Self.session(connections: 2)
        #expect(await Self.waitForHTTP(session, port))
        // ~12 KiB per message, 400 of them: several MiB. The publisher stops getting acks once
        // the journal is full, so it runs on a thread of its own and is not waited for.
        let publisher = try rig.publisher()
        let padding = String(repeating: "p", count: 12 * 1024)
        let messages: [(topic: String, payload: String)] = (0..<400).map { i in
            ("autovolt/lab-101/telemetry",
             #"{"esp32_name":"lab-101","timestamp":\#(baseTime + i),"energy_wh_total":\#(1000 + i),"switch_state":[1,0],"note":"\#(padding)"}"#)
        }
        Thread.detachNewThread { try? publisher.publish(messages, timeout: 30) }
        var last = Answer(status: 0, headers: [:], body: Data())
        let deadline = Date().addingTimeInterval(60)
        while Date() < deadline {
            last = try await Self.call(session, port, "/health")
            if last.status == 503 { break }
            try await Task.sleep(for: .milliseconds(100))
        }
        #expect(last.status == 503, "\(last.text)\n\(worker.log.suffix(2000))")
        #expect(last.json["status"] as? String == "unhealthy")
        #expect((last.json["journal"] as? [String: Any])?["full"] as? Bool == true)
        #expect((last.json["mongodb"] as? [String: Any])?["reachable"] as? Bool == false)
        // /metrics still answers (it never touches the database).
        #expect(try await Self.call(session, port, "/metrics").status == 200)
    }

    // MARK: /metrics

    @Test func metricsIsPrometheusTextFormat() async throws {
        let rig = try Rig()
        let port = freeTCPPort()
        try rig.startWorker(extra: ["AUTOVOLT_HTTP_ADDR": "127.0.0.1:\(port)"])
        let session = Self.session(connections: 2)
        #expect(await Self.waitForHTTP(session, port))
        try rig.publisher().publish([reading("lab-101", 1), ("autovolt/lab-101/telemetry", "not json")])
        #expect(rig.waitForCount("telemetry_events", 1) && rig.waitForCount("rejected_messages", 1))
        // The counters move just after the batch is stored: wait for the reject to show.
        func rejectCounted(_ text: String) -> Bool {
            PrometheusText.samples(text).contains { $0.name == "autovolt_messages_rejected_total" && $0.labels["reason"] == "invalid_json" && $0.value >= 1 }
        }
        var answer = try await Self.call(session, port, "/metrics")
        let deadline = ContinuousClock.now + .seconds(20)
        while !rejectCounted(answer.text), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
            answer = try await Self.call(session, port, "/metrics")
        }
        #expect(answer.status == 200)
        #expect(answer.headers["content-type"]?.hasPrefix("text/plain") == true)
        let problems = PrometheusText.problems(answer.text)
        #expect(problems.isEmpty, "\(problems)\n\(answer.text)")
        let samples = PrometheusText.samples(answer.text)
        let names = Set(samples.map(\.name))
        for name in ["autovolt_messages_received_total", "autovolt_events_inserted_total", "autovolt_journal_pending_records",
                     "autovolt_mqtt_connected", "autovolt_mongodb_reachable"] {
            #expect(names.contains(name), "\(name) missing: \(names.sorted())")
        }
        #expect(rejectCounted(answer.text), "\(answer.text)")
    }

    // MARK: A taken port

    @Test func aTakenHTTPPortStopsTheWorkerWithOneLine() throws {
        let rig = try Rig()
        let listener = try TCPListener()
        defer { listener.close() }
        let result = try WorkerProcess.runToCompletion(["run"], environment: rig.environment.merging([
            "AUTOVOLT_HTTP_ADDR": "127.0.0.1:\(listener.port)", "AUTOVOLT_LOG_LEVEL": "critical",
        ]) { $1 }, timeout: 60)
        #expect(result.status != 0, "\(result.stderr)")
        print("taken port: exit \(result.status), stderr: \(result.stderr)")
        let lines = result.stderr.split(separator: "\n").filter { !$0.isEmpty }
        let named = lines.filter { $0.contains("127.0.0.1:\(listener.port)") }
        #expect(!named.isEmpty, "\(result.stderr)")
        // The last line names the address and the reason.
        let last = String(lines.last ?? "")
        #expect(last.contains("HTTP") && last.contains("127.0.0.1:\(listener.port)") && last.lowercased().contains("in use"), "\(result.stderr)")
    }
}

extension ISO8601DateFormatter {
    nonisolated(unsafe) static let withFractions: ISO8601DateFormatter = {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter
    }()
}

struct ListenerError: Error {}

/// A listening TCP socket on a free loopback port (to take a port away from the worker).
final class TCPListener {
    let fd: Int32
    let port: Int

    init() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw ListenerError() }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = 0
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard bound == 0, listen(fd, 8) == 0 else { Glibc.close(fd); throw ListenerError() }
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        self.fd = fd
        port = Int(UInt16(bigEndian: address.sin_port))
    }

    func close() { Glibc.close(fd) }
}

/// A line-by-line reader of the Prometheus text exposition format (0.0.4).
enum PrometheusText {
    struct Sample { let name: String; let labels: [String: String]; let value: Double }

    nonisolated(unsafe) static let metricName = #/^[a-zA-Z_:][a-zA-Z0-9_:]*$/#
    nonisolated(unsafe) static let labelName = #/^[a-zA-Z_][a-zA-Z0-9_]*$/#
    static let types: Set<String> = ["counter", "gauge", "histogram", "summary", "untyped"]

    /// Every line that is not a valid HELP, TYPE, comment or sample line, and every sample
    /// without a TYPE before it.
    static func problems(_ text: String) -> [String] {
        var problems: [String] = []
        var typed: [String: String] = [:]
        if !text.isEmpty && !text.hasSuffix("\n") { problems.append("no newline at the end") }
        for line in text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) where !line.isEmpty {
            if line.hasPrefix("#") {
                let parts = line.split(separator: " ", maxSplits: 3, omittingEmptySubsequences: true).map(String.init)
                guard parts.count >= 2, parts[0] == "#" else { continue }  // a plain comment
                if parts[1] == "HELP" || parts[1] == "TYPE" {
                    guard parts.count >= 3, parts[2].wholeMatch(of: metricName) != nil else { problems.append("bad name: \(line)"); continue }
                    if parts[1] == "TYPE" {
                        guard parts.count == 4, types.contains(parts[3]) else { problems.append("bad type: \(line)"); continue }
                        if typed[parts[2]] != nil { problems.append("TYPE twice: \(line)") }
                        typed[parts[2]] = parts[3]
                    }
                }
                continue
            }
            guard let sample = parse(line) else { problems.append("bad sample: \(line)"); continue }
            let family = [sample.name] + ["_bucket", "_sum", "_count", "_total"].compactMap {
                sample.name.hasSuffix($0) ? String(sample.name.dropLast($0.count)) : nil
            }
            if !family.contains(where: { typed[$0] != nil }) { problems.append("sample without TYPE: \(line)") }
        }
        return problems
    }

    static func samples(_ text: String) -> [Sample] {
        text.split(separator: "\n").map(String.init).filter { !$0.hasPrefix("#") }.compactMap(parse)
    }

    /// `name{label="value",...} value [timestamp]`
    static func parse(_ line: String) -> Sample? {
        var rest = Substring(line)
        let name = rest.prefix { $0 != "{" && $0 != " " }
        guard String(name).wholeMatch(of: metricName) != nil else { return nil }
        rest = rest.dropFirst(name.count)
        var labels: [String: String] = [:]
        if rest.first == "{" {
            rest = rest.dropFirst()
            while rest.first != "}" {
                let label = rest.prefix { $0 != "=" }
                guard String(label).wholeMatch(of: labelName) != nil else { return nil }
                rest = rest.dropFirst(label.count)
                guard rest.hasPrefix("=\"") else { return nil }
                rest = rest.dropFirst(2)
                var value = ""
                while let c = rest.first, c != "\"" {
                    rest = rest.dropFirst()
                    if c == "\\" {
                        guard let escaped = rest.first, ["\\", "\"", "n"].contains(escaped) else { return nil }
                        value.append(escaped == "n" ? "\n" : escaped)
                        rest = rest.dropFirst()
                    } else {
                        value.append(c)
                    }
                }
                guard rest.first == "\"" else { return nil }
                rest = rest.dropFirst()
                labels[String(label)] = value
                if rest.first == "," { rest = rest.dropFirst() } else if rest.first != "}" { return nil }
            }
            rest = rest.dropFirst()
        }
        let fields = rest.split(separator: " ")
        guard (1...2).contains(fields.count), rest.first == " " else { return nil }
        let valueText = String(fields[0])
        let value: Double
        switch valueText {
        case "+Inf": value = .infinity
        case "-Inf": value = -.infinity
        case "NaN": value = .nan
        default:
            guard let v = Double(valueText) else { return nil }
            value = v
        }
        if fields.count == 2 && Int64(fields[1]) == nil { return nil }
        return Sample(name: String(name), labels: labels, value: value)
    }
}
