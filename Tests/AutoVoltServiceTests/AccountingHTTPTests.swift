import AutoVoltMongo
import AutoVoltTestSupport
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

@Suite("integration: tariff and recalculation endpoints", .serialized)
struct AccountingHTTPTests {
    func call(_ port: Int, _ method: String, _ path: String, token: String? = nil, body: String? = nil) async throws -> (Int, [String: Any], Any?) {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)/api/power-analytics/\(path)")!)
        request.httpMethod = method
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let body {
            request.httpBody = Data(body.utf8)
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        }
        let (data, response) = try await URLSession.shared.data(for: request)
        let any = try? JSONSerialization.jsonObject(with: data)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, any as? [String: Any] ?? [:], any)
    }

    func waitForHTTP(_ port: Int) async {
        for _ in 0..<100 {
            if let answer = try? await call(port, "GET", "cost-versions"), answer.0 != 0 { return }
            try? await Task.sleep(nanoseconds: 100_000_000)
        }
    }

    @Test func writesNeedTheBearerTokenAndBadBodiesAre400() async throws {
        let rig = try Rig()
        let token = "test-token-\(UUID().uuidString)"
        let tokenFile = rig.stateDirectory.deletingLastPathComponent().appendingPathComponent("token-\(UUID().uuidString)")
        try token.write(to: tokenFile, atomically: true, encoding: .utf8)
        let port = freeTCPPort()
        try rig.startWorker(extra: ["AUTOVOLT_HTTP_ADDR": "127.0.0.1:\(port)", "AUTOVOLT_API_TOKEN_FILE": tokenFile.path])
        await waitForHTTP(port)
        let tariff = #"{"cost_per_kwh": 7.5, "effective_from": "2026-11-01", "currency": "INR", "notes": "campus"}"#
        #expect(try await call(port, "POST", "cost-versions", body: tariff).0 == 401)
        #expect(try await call(port, "POST", "cost-versions", token: "wrong", body: tariff).0 == 401)
        let bad = try await call(port, "POST", "cost-versions", token: token, body: #"{"cost_per_kwh": "cheap"}"#)
        #expect(bad.0 == 400 && (bad.1["error"] as? String) != nil)
        #expect(try await call(port, "POST", "cost-versions", token: token, body: #"{"cost_per_kwh": 1, "effective_from": "soon"}"#).0 == 400)
        // A classroom no board is in (here markup) is refused, naming the known ones; nothing is stored.
        let unknown = try await call(port, "POST", "cost-versions", token: token,
                                     body: #"{"cost_per_kwh": 9, "effective_from": "2026-11-01", "classroom": "<img src=x onerror=alert(1)>"}"#)
        #expect(unknown.0 == 400, "\(unknown.1)")
        #expect((unknown.1["error"] as? String)?.contains("known classrooms: ") == true && (unknown.1["error"] as? String)?.contains("CSE-301") == true,
                "\(unknown.1)")
        #expect((try await call(port, "GET", "cost-versions").2 as? [[String: Any]])?.isEmpty == true)
        let created = try await call(port, "POST", "cost-versions", token: token, body: tariff)
        #expect(created.0 == 201)
        #expect((created.1["tariff"] as? [String: Any])?["cost_per_kwh"] as? Double == 7.5)
        let list = try await call(port, "GET", "cost-versions")
        #expect(list.0 == 200 && (list.2 as? [[String: Any]])?.count == 1)
        // The date as given, in local time (Asia/Kolkata).
        #expect((list.2 as? [[String: Any]])?.first?["effective_from"] as? String == "2026-11-01T00:00:00.000+05:30")
        #expect(try await call(port, "POST", "recalculate", token: token, body: #"{"start": "2026-11-05", "end": "2026-11-01"}"#).0 == 400)
        let recalculated = try await call(port, "POST", "recalculate", token: token,
                                          body: #"{"classroom": "CSE-301", "start": "2026-11-01", "end": "2026-11-02"}"#)
        #expect(recalculated.0 == 200 && recalculated.1["changed"] is [Any])
        #expect(recalculated.1["recalculated"] is Int, "\(recalculated.1)") // no aggregates of CSE-301 in those days: 0
    }

    @Test func writesAreRefusedWithoutAConfiguredToken() async throws {
        let rig = try Rig()
        let port = freeTCPPort()
        try rig.startWorker(extra: ["AUTOVOLT_HTTP_ADDR": "127.0.0.1:\(port)"])
        await waitForHTTP(port)
        let answer = try await call(port, "POST", "cost-versions", token: "anything", body: #"{"cost_per_kwh": 7.5, "effective_from": "2026-11-01"}"#)
        #expect(answer.0 == 403)
        #expect((answer.1["error"] as? String)?.contains("AUTOVOLT_API_TOKEN_FILE") == true)
    }

    @Test func costVersionsAndRecalculateOnTheCommandLine() throws {
        let rig = try Rig()
        let added = try WorkerProcess.runToCompletion(
            ["cost-versions", "add", "--cost-per-kwh", "7.5", "--effective-from", "2026-11-01", "--classroom", "CSE-301", "--json"],
            environment: rig.environment)
        #expect(added.status == 0, "\(added.stderr)")
        #expect(added.stdout.contains("\"cost_per_kwh\" : 7.5"))
        let list = try WorkerProcess.runToCompletion(["cost-versions", "list"], environment: rig.environment)
        #expect(list.status == 0 && list.stdout.contains("CSE-301"))
        #expect(try WorkerProcess.runToCompletion(["cost-versions", "add", "--cost-per-kwh", "-1", "--effective-from", "2026-11-01"],
                                                  environment: rig.environment).status == 64)
        let unknown = try WorkerProcess.runToCompletion(
            ["cost-versions", "add", "--cost-per-kwh", "9", "--effective-from", "2026-11-01", "--classroom", "CSE-3O1"], environment: rig.environment)
        #expect(unknown.status == 64 && unknown.stderr.contains("CSE-3O1") && unknown.stderr.contains("CSE-301"), "\(unknown.stderr)")
        #expect(try WorkerProcess.runToCompletion(["recalculate", "--start", "2026-11-02", "--end", "2026-11-01"],
                                                  environment: rig.environment).status == 64)
        let recalc = try WorkerProcess.runToCompletion(["recalculate", "--start", "2026-11-01", "--end", "2026-11-30"], environment: rig.environment)
        #expect(recalc.status == 0 && recalc.stdout.contains("0 with changed figures"), "\(recalc.stdout)\(recalc.stderr)")
        let reconcile = try WorkerProcess.runToCompletion(["reconcile", "--date", "2026-11-05"], environment: rig.environment)
        #expect(reconcile.status == 0 && reconcile.stdout.contains("reconciliation of 2026-11-05"), "\(reconcile.stderr)")
        // Output into a pipe that is already closed (`... | head -0`) must not crash the command.
        let process = unmaskedProcess(WorkerProcess.executable.path, ["cost-versions", "list", "--json"])
        process.environment = rig.environment
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try pipe.fileHandleForReading.close()
        try process.run()
        process.waitUntilExit()
        #expect(process.terminationReason == .exit && process.terminationStatus == 0)
    }
}
