import AutoVoltCore
import AutoVoltMongo
import AutoVoltTestSupport
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// `POST /api/power-analytics/telemetry` against a real worker: the same journal and decoder as
/// MQTT, bearer token or HMAC signatures (per board and shared), replays, and a full journal.
@Suite("integration: HTTP ingest", .serialized)
struct HTTPIngestTests {
    static let boardSecret = "lab-101-own-secret-0123456789"
    static let sharedSecret = "gateway-shared-secret-9876543210"

    struct Setup {
        let rig: Rig
        let port: Int
        let token: String
    }

    func start(extra: [String: String] = [:], killMongo: Bool = false) async throws -> Setup {
        let rig = try Rig()
        let dir = rig.stateDirectory.deletingLastPathComponent()
        let token = "ingest-token-\(UUID().uuidString)"
        let tokenFile = dir.appendingPathComponent("token-\(UUID().uuidString)")
        try token.write(to: tokenFile, atomically: true, encoding: .utf8)
        let secretFile = dir.appendingPathComponent("secret-\(UUID().uuidString)")
        try Self.sharedSecret.write(to: secretFile, atomically: true, encoding: .utf8)
        let registry = dir.appendingPathComponent("devices-\(UUID().uuidString).toml")
        try """
        [[device]]
        esp32_name = "lab-101"
        classroom = "CSE-301"
        hmac_secret = "\(Self.boardSecret)"

        [[device]]
        esp32_name = "lab-102"
        classroom = "CSE-302"
        """.write(to: registry, atomically: true, encoding: .utf8)
        if killMongo { rig.mongo.kill() }
        let port = freeTCPPort()
        try rig.startWorker(extra: ["AUTOVOLT_HTTP_ADDR": "127.0.0.1:\(port)", "AUTOVOLT_API_TOKEN_FILE": tokenFile.path,
                                    "AUTOVOLT_INGEST_SECRET_FILE": secretFile.path, "AUTOVOLT_DEVICES": registry.path].merging(extra) { $1 })
        #expect(await HTTPHealthTests.waitForHTTP(HTTPHealthTests.session(connections: 2), port))
        return Setup(rig: rig, port: port, token: token)
    }

    func post(_ port: Int, body: String, headers: [String: String] = [:]) async throws -> (status: Int, json: [String: Any], retryAfter: String?) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/api/power-analytics/telemetry")!)
        request.httpMethod = "POST"
        request.httpBody = Data(body.utf8)
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        for (name, value) in headers { request.setValue(value, forHTTPHeaderField: name) }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as? HTTPURLResponse
        return (http?.statusCode ?? 0, (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:],
                http?.value(forHTTPHeaderField: "Retry-After"))
    }

    func signed(_ body: String, secret: String, at seconds: Int64 = Int64(Date().timeIntervalSince1970)) -> [String: String] {
        ["X-AutoVolt-Timestamp": "\(seconds)",
         "X-AutoVolt-Signature": IngestSignature.sign(secret: secret, timestamp: "\(seconds)", body: Array(body.utf8))]
    }

    @Test func oneOrManyMessagesAreStoredOnceAndRefusedOnesAreListedAndKept() async throws {
        let s = try await start()
        let bearer = ["Authorization": "Bearer \(s.token)"]
        let one = reading("lab-101", 1).payload
        #expect(try await post(s.port, body: one).status == 401, "no credentials")
        #expect(try await post(s.port, body: one, headers: ["Authorization": "Bearer wrong"]).status == 401)

        let single = try await post(s.port, body: one, headers: bearer)
        #expect(single.status == 202 && single.json["accepted"] as? Int == 1, "\(single)")
        // An array: two good, a negative counter, one without esp32_name.
        let batch = "[\(reading("lab-101", 2).payload),\(reading("lab-102", 3).payload),"
            + #"{"esp32_name":"lab-102","timestamp":1796300000,"energy_wh_total":-4,"switch_state":[1]},"#
            + #"{"timestamp":1796300000,"energy_wh_total":5,"switch_state":[1]}]"#
        let mixed = try await post(s.port, body: batch, headers: bearer)
        #expect(mixed.status == 400 && mixed.json["accepted"] as? Int == 2, "\(mixed)")
        let refused = mixed.json["rejected"] as? [[String: Any]] ?? []
        #expect(refused.map { $0["index"] as? Int } == [2, 3])
        #expect(refused.map { $0["reason"] as? String } == ["invalid_energy", "invalid_device_name"])
        #expect(s.rig.waitForCount("telemetry_events", 3))
        // The refused ones are kept as for MQTT, with their reasons.
        #expect(s.rig.waitForCount("rejected_messages", 2))
        #expect(s.rig.count("rejected_messages", ["reason": "invalid_energy", "topic": "autovolt/lab-102/telemetry"]) == 1)
        // The same reading again is the same event (deduplicated by the drain, as over MQTT).
        #expect(try await post(s.port, body: one, headers: bearer).status == 202)
        let sentinel = try await post(s.port, body: reading("lab-102", 9).payload, headers: bearer)
        #expect(sentinel.status == 202)
        #expect(s.rig.waitForCount("telemetry_events", 1, filter: ["esp32_name": "lab-102", "energy_wh_total": 1009.0]))
        #expect(s.rig.count("telemetry_events") == 4)

        let tooMany = "[" + (0..<501).map { reading("lab-101", 100 + $0).payload }.joined(separator: ",") + "]"
        #expect(try await post(s.port, body: tooMany, headers: bearer).status == 413)
        #expect(try await post(s.port, body: "{not json", headers: bearer).status == 400)
    }

    @Test func signaturesAreCheckedPerBoardOrSharedAndAReplayIsRefused() async throws {
        let s = try await start()
        let body = reading("lab-101", 20).payload
        let headers = signed(body, secret: Self.boardSecret)
        #expect(try await post(s.port, body: body, headers: headers).status == 202, "the board's own secret")
        let replay = try await post(s.port, body: body, headers: headers)
        #expect(replay.status == 409, "\(replay)")
        // The board's secret signs only its own messages; the shared one signs any.
        let other = reading("lab-102", 21).payload
        #expect(try await post(s.port, body: other, headers: signed(other, secret: Self.boardSecret)).status == 401)
        #expect(try await post(s.port, body: other, headers: signed(other, secret: Self.sharedSecret)).status == 202)
        let both = "[\(reading("lab-101", 22).payload),\(reading("lab-102", 23).payload)]"
        #expect(try await post(s.port, body: both, headers: signed(both, secret: Self.boardSecret)).status == 401)
        #expect(try await post(s.port, body: both, headers: signed(both, secret: Self.sharedSecret)).status == 202)
        // Outside the 5-minute window, a changed body, no timestamp.
        let old = Int64(Date().timeIntervalSince1970) - 301
        let stale = reading("lab-101", 24).payload
        #expect(try await post(s.port, body: stale, headers: signed(stale, secret: Self.sharedSecret, at: old)).status == 401)
        var tampered = signed(stale, secret: Self.sharedSecret)
        #expect(try await post(s.port, body: reading("lab-101", 25).payload, headers: tampered).status == 401)
        tampered["X-AutoVolt-Timestamp"] = nil
        #expect(try await post(s.port, body: stale, headers: tampered).status == 401)
        #expect(s.rig.waitForCount("telemetry_events", 4))
        #expect(s.rig.count("rejected_messages") == 0)
    }

    @Test func aFullJournalAnswers503WithRetryAfterAndWritesNothing() async throws {
        let s = try await start(extra: ["AUTOVOLT_JOURNAL_MAX_BYTES": "1MiB"], killMongo: true)
        let bearer = ["Authorization": "Bearer \(s.token)"]
        let note = String(repeating: "n", count: 2000)
        func batch(_ from: Int) -> String {
            "[" + (from..<from + 300).map { i in
                String(reading("lab-10\(1 + i % 2)", i).payload.dropLast()) + #","note":"\#(note)"}"#
            }.joined(separator: ",") + "]"
        }
        var accepted = 0
        var full: (status: Int, json: [String: Any], retryAfter: String?)?
        for round in 0..<10 { // 600 KB a request: the 1 MiB journal is full after two
            let answer = try await post(s.port, body: batch(round * 300), headers: bearer)
            if answer.status == 202 { accepted += 300; continue }
            full = answer
            break
        }
        #expect(full?.status == 503 && full?.retryAfter != nil, "\(String(describing: full))")
        #expect(accepted >= 300)
        try s.rig.mongo.restart()
        #expect(s.rig.waitForCount("telemetry_events", accepted, timeout: 120))
        // Once the journal has room again the same door takes the request.
        var later = 0
        for _ in 0..<120 {
            later = try await post(s.port, body: reading("lab-102", 5_000).payload, headers: bearer).status
            if later == 202 { break }
            try await Task.sleep(nanoseconds: 250_000_000)
        }
        #expect(later == 202)
        #expect(s.rig.waitForCount("telemetry_events", accepted + 1, timeout: 60))
        #expect(s.rig.count("telemetry_events") == accepted + 1, "nothing of the refused request was written")
    }

    /// The deployment guide's `ab` speaks HTTP/1.0: without keep-alive the server must close the
    /// connection after the answer, with keep-alive it must say so and answer the next request
    /// on the same connection.
    @Test func http10ClientsGetTheirConnectionSemantics() async throws {
        let s = try await start()
        let closed = try rawExchange(s.port, ["GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n"], untilClosed: true)
        #expect(closed.responses == 1 && closed.closed, "\(closed.text.prefix(200))")
        let keepAlive = "GET /metrics HTTP/1.0\r\nHost: x\r\nConnection: Keep-Alive\r\n\r\n"
        let kept = try rawExchange(s.port, [keepAlive, keepAlive])
        #expect(kept.responses == 2 && !kept.closed && kept.text.lowercased().contains("connection: keep-alive"), "\(kept.text.prefix(200))")
        let http11 = try rawExchange(s.port, ["GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"])
        #expect(http11.responses == 2 && !http11.closed)
    }

    /// Sends each request on one connection once the answer to the previous one has come; with
    /// `untilClosed` then reads on until the server closes. Gives up after 5 s.
    func rawExchange(_ port: Int, _ requests: [String], untilClosed: Bool = false) throws -> (text: String, responses: Int, closed: Bool) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw RawSocketError.socket }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else { throw RawSocketError.connect }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let deadline = Date(timeIntervalSinceNow: 5)
        func responses() -> Int { String(decoding: received, as: UTF8.self).components(separatedBy: "HTTP/1.1 ").count - 1 }
        /// Reads until `done` or the server closes; true when it closed.
        func read(until done: () -> Bool) -> Bool {
            while Date() < deadline && !done() {
                var poller = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                guard poll(&poller, 1, 50) > 0 else { continue }
                let n = recv(fd, &buffer, buffer.count, 0)
                if n <= 0 { return true }
                received += buffer[0..<n]
            }
            return false
        }
        var closed = false
        for (i, request) in requests.enumerated() where !closed {
            _ = request.withCString { send(fd, $0, strlen($0), 0) }
            closed = read { responses() > i }
        }
        if untilClosed && !closed { closed = read { false } }
        return (String(decoding: received, as: UTF8.self), responses(), closed)
    }
}

enum RawSocketError: Error { case socket, connect }
