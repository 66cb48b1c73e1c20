import AutoVoltMongo
import AutoVoltTestSupport
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// `curl -sN` on the alarm stream: everything it has received so far.
/// `@unchecked Sendable`: `received` is touched only under `lock`; `process` is set once in init.
final class StreamReader: @unchecked Sendable {
    private let process: Process
    private let lock = NSLock()
    private var received = ""

    init(_ url: String, lastEventID: Int? = nil) throws {
        var arguments = ["-sN", "--max-time", "120"]
        if let lastEventID { arguments += ["-H", "Last-Event-ID: \(lastEventID)"] }
        // Unmasked: the test runner blocks SIGTERM, and a child would inherit that and outlive stop().
        process = unmaskedProcess("/usr/bin/curl", arguments + [url])
        let pipe = Pipe()
        process.standardOutput = pipe
        // Not the test runner's stderr: swift test waits for every holder of its pipes to exit.
        process.standardError = FileHandle.nullDevice
        pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let data = handle.availableData
            guard let self, !data.isEmpty else { return }
            self.lock.withLock { self.received += String(decoding: data, as: UTF8.self) }
        }
        try process.run()
    }

    var text: String { lock.withLock { received } }
    /// (id, event type) of each event received.
    var events: [(id: Int, type: String)] {
        text.components(separatedBy: "\n\n").compactMap { block in
            let lines = block.components(separatedBy: "\n")
            guard let id = lines.first(where: { $0.hasPrefix("id: ") }).flatMap({ Int($0.dropFirst(4)) }),
                  let type = lines.first(where: { $0.hasPrefix("event: ") })?.dropFirst(7) else { return nil }
            return (id, String(type))
        }
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }
    deinit { stop() }
}

/// A webhook receiver: answers the first POST 500 (the worker must retry), then 200, and keeps
/// every body it was sent, one line each.
/// `@unchecked Sendable`: its properties are set once in init; `Process` is used from one test at a time.
final class WebhookReceiver: @unchecked Sendable {
    let port = freeTCPPort()
    let file = FileManager.default.temporaryDirectory.appendingPathComponent("webhook-\(UUID().uuidString).jsonl")
    private let process: Process

    init() throws {
        FileManager.default.createFile(atPath: file.path, contents: nil)
        process = unmaskedProcess("/usr/bin/python3", ["-c", """
            import http.server, sys
            state = {"n": 0}
            class H(http.server.BaseHTTPRequestHandler):
                def do_POST(self):
                    body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                    state["n"] += 1
                    ok = state["n"] > 1
                    if ok:
                        with open(sys.argv[2], "ab") as f: f.write(body + b"\\n")
                    self.send_response(200 if ok else 500); self.send_header("Content-Length", "0"); self.end_headers()
                def log_message(self, *a): pass
            http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
            """, "\(port)", file.path])
        // Not the test runner's output: swift test waits until every holder of its pipes exits.
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
    }

    func stop() {
        if process.isRunning {
            process.terminate()
            process.waitUntilExit()
        }
    }

    var bodies: [[String: Any]] {
        ((try? String(contentsOf: file, encoding: .utf8)) ?? "").split(separator: "\n").compactMap {
            (try? JSONSerialization.jsonObject(with: Data($0.utf8))) as? [String: Any]
        }
    }

    deinit { stop() }
}

@Suite("integration: alarms", .serialized)
struct AlarmIntegrationTests {
    static let rules = """
        [[rule]]
        name = "hot"
        kind = "over_power"
        threshold_w = 1000
        hysteresis_w = 100
        severity = "high"
        esp32_name = "lab-a1"

        [[rule]]
        name = "silent"
        kind = "offline"
        duration = "3s"
        esp32_name = "lab-a2"

        [[rule]]
        name = "noisy"
        kind = "rejects"
        count = 1
        window = "10m"
        esp32_name = "lab-a3"
        """

    func power(_ device: String, _ index: Int, _ watts: Double) -> (topic: String, payload: String) {
        ("autovolt/\(device)/telemetry",
         #"{"esp32_name":"\#(device)","timestamp":\#(baseTime + index * 30),"energy_wh_total":\#(1000 + index),"power_w":\#(watts),"switch_state":[1]}"#)
    }

    func files(_ rig: Rig) throws -> (rules: URL, token: String, tokenFile: URL) {
        let directory = rig.stateDirectory.deletingLastPathComponent()
        let rules = directory.appendingPathComponent("alarms-\(UUID().uuidString).toml")
        try Self.rules.write(to: rules, atomically: true, encoding: .utf8)
        let token = "token-\(UUID().uuidString)"
        let tokenFile = directory.appendingPathComponent("token-\(UUID().uuidString)")
        try token.write(to: tokenFile, atomically: true, encoding: .utf8)
        return (rules, token, tokenFile)
    }

    func call(_ port: Int, _ method: String, _ path: String, token: String? = nil, body: String? = nil) async throws -> (Int, String) {
        var request = URLRequest(url: try #require(URL(string: "http://127.0.0.1:\(port)\(path)")))
        request.httpMethod = method
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let body { request.httpBody = Data(body.utf8) }
        let (data, response) = try await URLSession.shared.data(for: request)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    func json(_ text: String) -> [String: Any] { (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:] }

    @Test func raiseClearAckThroughTheStreamTheAPITheCLITheGaugeAndTheWebhook() async throws {
        let rig = try Rig()
        let (rules, token, tokenFile) = try files(rig)
        let webhook = try WebhookReceiver()
        defer { webhook.stop() }
        let port = freeTCPPort()
        let worker = try rig.startWorker(extra: [
            "AUTOVOLT_HTTP_ADDR": "127.0.0.1:\(port)", "AUTOVOLT_API_TOKEN_FILE": tokenFile.path, "AUTOVOLT_ALARMS": rules.path,
            "AUTOVOLT_ALARM_WEBHOOK_URL": "http://127.0.0.1:\(webhook.port)/hook",
        ])
        #expect(await HTTPHealthTests.waitForHTTP(URLSession.shared, port))
        let live = try StreamReader("http://127.0.0.1:\(port)/api/power-analytics/alarms/stream")
        defer { live.stop() }
        #expect(eventually { live.text.contains("alarms after event 0") }, "the stream opens at once: \(live.text)")

        let publisher = try rig.publisher()
        try publisher.publish([power("lab-a1", 1, 400), power("lab-a1", 2, 1500), power("lab-a1", 3, 1600)])
        #expect(rig.waitForCount("alarms", 1, filter: ["status": "active", "rule": "hot"]))
        let alarm = try #require(try rig.client.findOne("alarms", filter: ["rule": "hot"]))
        #expect(alarm["esp32_name"]?.stringValue == "lab-a1" && alarm["severity"]?.stringValue == "high" && alarm["kind"]?.stringValue == "over_power")
        #expect(alarm["last_value"]?.doubleValue == 1500 && alarm["raised_at"]?.dateValue == Date(timeIntervalSince1970: Double(baseTime + 60)))
        #expect(alarm["cleared_at"] == .null && alarm["acknowledged_at"] == .null)
        let id = try #require(alarm["_id"]?.stringValue)
        let listed = try await call(port, "GET", "/api/power-analytics/alarms")
        #expect(listed.0 == 200 && json(listed.1)["count"] as? Int == 1, "\(listed.1)")
        #expect(eventually {
            (try? String(contentsOf: URL(string: "http://127.0.0.1:\(port)/metrics")!, encoding: .utf8))?
                .contains(#"autovolt_alarms_active{rule="hot",severity="high"} 1"#) == true
        })
        #expect(worker.log.contains("alarm raised") && worker.log.contains("lab-a1"))

        // 950 W is inside the hysteresis band; 850 W clears.
        try publisher.publish([power("lab-a1", 4, 950)])
        try publisher.publish([power("lab-a1", 5, 850)])
        #expect(rig.waitForCount("alarms", 1, filter: ["status": "cleared", "rule": "hot"]))
        #expect(try rig.client.findOne("alarms", filter: ["_id": .string(id)])?["last_value"]?.doubleValue == 850)
        #expect(eventually { worker.log.contains("alarm cleared") })

        #expect(try await call(port, "POST", "/api/power-analytics/alarms/\(id)/ack").0 == 401)
        let ack = try await call(port, "POST", "/api/power-analytics/alarms/\(id)/ack", token: token, body: #"{"by": "facilities"}"#)
        #expect(ack.0 == 200 && json(ack.1)["acknowledged"] as? Bool == true, "\(ack.1)")
        let again = try await call(port, "POST", "/api/power-analytics/alarms/\(id)/ack", token: token)
        #expect(again.0 == 200 && json(again.1)["acknowledged"] as? Bool == false)
        #expect(try await call(port, "POST", "/api/power-analytics/alarms/nope/ack", token: token).0 == 404)

        #expect(eventually { live.events.map(\.type) == ["raise", "clear", "ack"] }, "\(live.text)")
        #expect(live.events.map(\.id) == [1, 2, 3])
        // A client that saw event 1 resumes with the rest, in order, and nothing twice.
        let resumed = try StreamReader("http://127.0.0.1:\(port)/api/power-analytics/alarms/stream", lastEventID: 1)
        defer { resumed.stop() }
        #expect(eventually { resumed.events.count >= 2 }, "\(resumed.text)")
        #expect(resumed.events.map(\.id) == [2, 3] && resumed.events.map(\.type) == ["clear", "ack"])

        // The webhook refused the first POST: the raise is retried, then clear and ack follow in order.
        #expect(eventually(timeout: 30) { webhook.bodies.count >= 3 }, "\(webhook.bodies)")
        #expect(webhook.bodies.compactMap { $0["event"] as? String } == ["raise", "clear", "ack"])
        #expect((webhook.bodies.first?["alarm"] as? [String: Any])?["id"] as? String == id)
        #expect(worker.log.contains("alarm webhook failed; retrying"))

        // rejects: two bad messages within the window; offline: a board silent for 3 s.
        try publisher.publish([("autovolt/lab-a3/telemetry", "{broken"), ("autovolt/lab-a3/telemetry", #"{"energy_wh_total":-1,"switch_state":[1]}"#)])
        #expect(rig.waitForCount("alarms", 1, filter: ["status": "active", "rule": "noisy"]))
        try publisher.publish([power("lab-a2", 1, 10)])
        #expect(rig.waitForCount("alarms", 1, filter: ["status": "active", "rule": "silent"], timeout: 40))
        try publisher.publish([power("lab-a2", 2, 10)])
        #expect(rig.waitForCount("alarms", 1, filter: ["status": "cleared", "rule": "silent"]))

        let cli = try WorkerProcess.runToCompletion(["alarms", "list", "--status", "all", "--json"], environment: rig.environment)
        #expect(cli.status == 0 && (json(cli.stdout)["count"] as? Int ?? 0) >= 3, "\(cli.stdout)\(cli.stderr)")
        let active = try WorkerProcess.runToCompletion(["alarms", "list"], environment: rig.environment)
        #expect(active.stdout.contains("noisy") && !active.stdout.contains("hot@"), "\(active.stdout)")
        let noisy = try #require(try rig.client.findOne("alarms", filter: ["rule": "noisy"])?["_id"]?.stringValue)
        let acked = try WorkerProcess.runToCompletion(["alarms", "ack", noisy, "--by", "operator"], environment: rig.environment)
        #expect(acked.status == 0 && acked.stdout.contains("acknowledged"), "\(acked.stdout)\(acked.stderr)")
        #expect(try rig.client.findOne("alarms", filter: ["_id": .string(noisy)])?["acknowledged_by"]?.stringValue == "operator")
        #expect(try WorkerProcess.runToCompletion(["alarms", "ack", "missing"], environment: rig.environment).status == 1)
        live.stop()
        resumed.stop()
    }

    @Test func killNineNeitherRaisesTwiceNorLosesTheClearAndTwoWorkersRaiseOnce() throws {
        let rig = try Rig()
        let (rules, _, _) = try files(rig)
        let environment = ["AUTOVOLT_ALARMS": rules.path, "AUTOVOLT_LOG_LEVEL": "debug"]
        let first = try rig.startWorker(extra: environment)
        let publisher = try rig.publisher()
        try publisher.publish([power("lab-a1", 1, 400), power("lab-a1", 2, 1500)])
        #expect(rig.waitForCount("alarms", 1, filter: ["status": "active", "rule": "hot"]))
        first.kill9()

        let second = try rig.startWorker(extra: environment)
        try publisher.publish([power("lab-a1", 3, 1700)])
        #expect(rig.waitForCount("telemetry_events", 3, filter: ["esp32_name": "lab-a1"]))
        try publisher.publish([power("lab-a1", 4, 200)])
        #expect(rig.waitForCount("alarms", 1, filter: ["status": "cleared", "rule": "hot"]))
        #expect(rig.count("alarms", ["rule": "hot"]) == 1, "one raise across the kill")
        _ = second.stop()

        // Two workers in one share group: both timers see lab-a2 silent; the unique index keeps one alarm.
        let group = ["AUTOVOLT_MQTT_SHARE_GROUP": "alarms-\(UUID().uuidString.prefix(6))"]
        let aEnvironment = environment.merging(group) { $1 }.merging(["AUTOVOLT_MQTT_CLIENT_ID": "wa-\(UUID().uuidString.prefix(6))"]) { $1 }
        let a = try rig.startWorker(extra: aEnvironment)
        let b = try rig.startWorker(extra: environment.merging(group) { $1 }.merging([
            "AUTOVOLT_MQTT_CLIENT_ID": "wb-\(UUID().uuidString.prefix(6))",
            "AUTOVOLT_STATE_DIR": rig.stateDirectory.path + "-b",
        ]) { $1 })
        try publisher.publish([power("lab-a2", 1, 10)])
        #expect(rig.waitForCount("alarms", 1, filter: ["status": "active", "rule": "silent"], timeout: 40))
        // The worker that did not store it was refused by the index (its debug line says so).
        #expect(eventually(timeout: 30) { a.log.contains("alarm active already") || b.log.contains("alarm active already") },
                "\(a.log)\n\(b.log)")
        #expect(rig.count("alarms", ["rule": "silent"]) == 1)
        // Kill -9 of one and its restart while lab-a2 is still silent: the alarm stays as it is
        // (the restarted worker's start is no news of the board), through its timer's first rounds.
        a.kill9()
        let c = try rig.startWorker(extra: aEnvironment)
        #expect(eventually(timeout: 30) { c.log.components(separatedBy: "alarm timer ran").count > 2 }, "\(c.log)")
        #expect(rig.count("alarms", ["rule": "silent"]) == 1 && rig.count("alarms", ["rule": "silent", "status": "active"]) == 1,
                "no clear and no second raise across the restart")
        #expect(!c.log.contains("alarm cleared") && !b.log.contains("alarm cleared"))
        // Two rejects of lab-a3 split between the two workers (one each): "more than 1" is the
        // device's count in the database, not either worker's share.
        try publisher.publish([("autovolt/lab-a3/telemetry", "{broken"), ("autovolt/lab-a3/telemetry", "{broken too")])
        #expect(rig.waitForCount("alarms", 1, filter: ["status": "active", "rule": "noisy"], timeout: 30),
                "\((b.log + c.log).components(separatedBy: "\n").filter { $0.contains("lab-a3") || $0.contains("alarm raised") }.joined(separator: "\n"))")
        #expect(rig.count("alarms", ["rule": "noisy"]) == 1)
        try publisher.publish([power("lab-a2", 2, 10), power("lab-a2", 3, 10)])
        #expect(rig.waitForCount("alarms", 1, filter: ["status": "cleared", "rule": "silent"]))
        #expect(rig.count("alarms", ["rule": "silent"]) == 1)
    }

    @Test func sighupReloadsTheRulesAndABadFileKeepsThem() throws {
        let rig = try Rig()
        let (rules, _, _) = try files(rig)
        let worker = try rig.startWorker(extra: ["AUTOVOLT_ALARMS": rules.path])
        let publisher = try rig.publisher()
        try publisher.publish([power("lab-a1", 1, 400), power("lab-a1", 2, 1500)])
        #expect(rig.waitForCount("alarms", 1, filter: ["status": "active", "rule": "hot"]))
        let pid = try #require(worker.pid)

        // A file that does not parse: refused with the rule and field named, the rules in force stay.
        try "[[rule]]\nname = \"hot\"\nkind = \"over_power\"\n".write(to: rules, atomically: true, encoding: .utf8)
        kill(pid, SIGHUP)
        #expect(eventually { worker.log.contains("alarm rules not reloaded") }, "\(worker.log)")
        let refusal = worker.log.components(separatedBy: "\n").first { $0.contains("alarm rules not reloaded") } ?? ""
        #expect(refusal.contains("hot") && refusal.contains("threshold_w"), "\(refusal)")
        #expect(rig.count("alarms", ["status": "active", "rule": "hot"]) == 1)

        // The rule removed: its active alarm clears.
        try Self.rules.replacingOccurrences(of: "name = \"hot\"", with: "name = \"hotter\"").write(to: rules, atomically: true, encoding: .utf8)
        kill(pid, SIGHUP)
        #expect(eventually { worker.log.contains("alarm rules reloaded") }, "\(worker.log)")
        #expect(rig.waitForCount("alarms", 1, filter: ["status": "cleared", "rule": "hot"]))
        try publisher.publish([power("lab-a1", 3, 1600)])
        #expect(rig.waitForCount("alarms", 1, filter: ["status": "active", "rule": "hotter"]))
        #expect(worker.isRunning)
    }
}
