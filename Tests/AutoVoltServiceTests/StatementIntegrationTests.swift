import AutoVoltCore
import AutoVoltMongo
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// The microgrid runbook's month-end flow end to end, as finance and the operator run it:
/// readings over MQTT into a real worker, then `autovolt-worker statements ...` and the HTTP API.
/// The PDF is read back with pdftotext, the XLSX with openpyxl (Debian's python3).
@Suite("integration: statements end to end (worker, CLI, HTTP, exports)", .serialized)
struct StatementIntegrationTests {
    static let registryText = """
        [[device]]
        esp32_name = "st-1"
        classroom = "CSE-301"

        [[device]]
        esp32_name = "st-2"
        classroom = "CSE-301"

        [[device]]
        esp32_name = "st-3"
        classroom = "EEE-105"

        [[group]]
        name = "Computing"
        classrooms = ["CSE-301"]
        """

    struct Setup {
        let rig: Rig
        let environment: [String: String]
        let directory: URL
        let port: Int
        let token: String
    }

    static func setUp() throws -> Setup {
        let rig = try Rig()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("statements-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let devices = directory.appendingPathComponent("devices.toml")
        try registryText.write(to: devices, atomically: true, encoding: .utf8)
        let token = "token-\(UUID().uuidString)"
        let tokenFile = directory.appendingPathComponent("token")
        try token.write(to: tokenFile, atomically: true, encoding: .utf8)
        let port = freeTCPPort()
        // November's readings are weeks old by the receive time: trust device clocks that far back.
        let environment = rig.environment.merging([
            "AUTOVOLT_DEVICES": devices.path, "AUTOVOLT_MAX_CLOCK_LAG": "400d", "AUTOVOLT_HTTP_ADDR": "127.0.0.1:\(port)",
            "AUTOVOLT_API_TOKEN_FILE": tokenFile.path,
        ]) { $1 }
        return Setup(rig: rig, environment: environment, directory: directory, port: port, token: token)
    }

    static let kolkata = TimeZone(identifier: "Asia/Kolkata")!

    /// Seconds since 1970 of a local time in November 2026.
    static func november(_ day: Int, _ hour: Int) -> Int {
        let calendar = LocalCalendar(timeZone: kolkata)
        return Int(calendar.startOfDay(CivilDate(year: 2026, month: 11, day: day)) / 1000) + hour * 3600
    }

    static func telemetry(_ device: String, _ seconds: Int, _ energy: Double) -> (topic: String, payload: String) {
        ("autovolt/\(device)/telemetry", #"{"esp32_name":"\#(device)","timestamp":\#(seconds),"energy_wh_total":\#(energy),"switch_state":[1]}"#)
    }

    static func cli(_ setup: Setup, _ arguments: [String]) throws -> (status: Int32, stdout: String, stderr: String) {
        try WorkerProcess.runToCompletion(arguments, environment: setup.environment)
    }

    static func json(_ text: String) -> [String: Any] {
        (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
    }

    /// The month's daily aggregates as a statement counts them (mWh, 1/10,000 INR).
    static func aggregates(_ rig: Rig) throws -> (energy: Int64, cost: Int64, count: Int) {
        let docs = try rig.client.find(Collections.dailyAggregates, filter: ["date": ["$gte": "2026-11-01", "$lte": "2026-11-30"]], limit: 1000)
        return (docs.map { FixedPoint.energy($0["energy_wh"]?.doubleValue ?? 0) }.reduce(0, +),
                docs.map { FixedPoint.money($0["cost"]?.doubleValue ?? 0) }.reduce(0, +), docs.count)
    }

    /// Everything published is in the ledger and the aggregates (no event waiting, no dirty day).
    static func settled(_ rig: Rig, events: Int) -> Bool {
        rig.count(Collections.telemetryEvents) >= events && rig.count(Collections.telemetryEvents, ["processed": false]) == 0
            && rig.count("ledger_dirty_days") == 0
    }

    static func http(_ setup: Setup, _ method: String, _ path: String, token: String? = nil, body: String? = nil) async throws
        -> (status: Int, data: Data, headers: [AnyHashable: Any]) {
        var request = URLRequest(url: try #require(URL(string: "http://127.0.0.1:\(setup.port)/api/power-analytics/\(path)")))
        request.httpMethod = method
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let body { request.httpBody = Data(body.utf8) }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as? HTTPURLResponse
        return (http?.statusCode ?? 0, data, http?.allHeaderFields ?? [:])
    }

    static func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = unmaskedProcess(executable, arguments)
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    @Test func theMonthEndRoutineFromReadingsToSignedExports() async throws {
        let setup = try Self.setUp()
        let rig = setup.rig
        defer { try? FileManager.default.removeItem(at: setup.directory) }
        #expect(try Self.cli(setup, ["cost-versions", "add", "--cost-per-kwh", "8", "--effective-from", "2026-11-01"]).status == 0)
        let worker = try rig.startWorker(extra: setup.environment)

        // Three days of readings, every two hours, from three boards.
        let publisher = try rig.publisher()
        var messages: [(topic: String, payload: String)] = []
        for (index, device) in ["st-1", "st-2", "st-3"].enumerated() {
            for step in 0..<36 {
                messages.append(Self.telemetry(device, Self.november(10, 0) + step * 7200, 5000 + Double(step) * (55.5 + Double(index) * 20.25)))
            }
        }
        try publisher.publish(messages)
        #expect(eventually(timeout: 60) { Self.settled(rig, events: messages.count) && rig.count(Collections.dailyAggregates) >= 9 },
                "readings not settled:\n\(worker.log.suffix(3000))")
        let before = try Self.aggregates(rig)

        // generate -> review -> freeze
        let generated = try Self.cli(setup, ["statements", "generate", "--month", "2026-11", "--json"])
        #expect(generated.status == 0, "\(generated.stderr)")
        let draft = Self.json(generated.stdout)
        let id = try #require(draft["id"] as? String)
        #expect(id == "2026-11.campus.v1" && draft["status"] as? String == "draft" && draft["version"] as? Int == 1)
        #expect(draft["energy_wh"] as? Double == Double(before.energy) / 1000)
        #expect(draft["cost"] as? Double == Double(before.cost) / 10_000)
        let shown = try Self.cli(setup, ["statements", "show", id])
        #expect(shown.status == 0 && shown.stdout.contains("st-3 (EEE-105)"), "\(shown.stdout)\(shown.stderr)")
        let frozen = try Self.cli(setup, ["statements", "freeze", id, "--by", "finance", "--json"])
        #expect(frozen.status == 0 && Self.json(frozen.stdout)["status"] as? String == "frozen", "\(frozen.stderr)")

        // export all three formats
        var files: [String: URL] = [:]
        for format in ["csv", "pdf", "xlsx"] {
            let file = setup.directory.appendingPathComponent("statement.\(format)")
            let exported = try Self.cli(setup, ["statements", "export", id, "--format", format, "--out", file.path])
            #expect(exported.status == 0 && exported.stdout.contains("as frozen"), "\(exported.stdout) \(exported.stderr)")
            files[format] = file
        }
        let csvText = try String(contentsOf: try #require(files["csv"]), encoding: .utf8)
        let totalRow = try #require(csvText.components(separatedBy: "\r\n").first { $0.contains(",total,") })
        let totalFields = totalRow.split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        #expect(totalFields[8] == FixedPoint.wh(before.energy) && totalFields[10] == FixedPoint.moneyText(before.cost),
                "CSV totals equal the aggregates exactly: \(totalRow)")
        let pdfText = try Self.run("/usr/bin/pdftotext", ["-layout", try #require(files["pdf"]).path, "-"])
        for expected in [id, "FROZEN", "finance", "November 2026", "\(FixedPoint.kwh(before.energy)) kWh",
                         "₹\(FixedPoint.moneyText(before.cost, decimals: 2))", "st-1", "st-2", "st-3"] {
            #expect(pdfText.output.contains(expected), "the PDF lacks \(expected):\n\(pdfText.output)")
        }
        let xlsx = try Self.run("/usr/bin/python3", ["-c", """
            import json, sys, openpyxl
            ws = openpyxl.load_workbook(sys.argv[1])["Statement"]
            total = next(r for r in ws.iter_rows(values_only=True) if r[0] == "Total")
            print(json.dumps({"wh": total[3], "cost": total[4]}))
            """, try #require(files["xlsx"]).path])
        let sheet = Self.json(xlsx.output)
        #expect(sheet["wh"] as? Double == Double(before.energy) / 1000 && sheet["cost"] as? Double == Double(before.cost) / 10_000,
                "\(xlsx.output)")
        let frozenBytes = try files.mapValues { try Data(contentsOf: $0) }
        let report = Self.json(try Self.cli(setup, ["statements", "export", id, "--format", "xlsx", "--out",
                                                    setup.directory.appendingPathComponent("report.xlsx").path, "--json"]).stdout)
        #expect(report["sha256"] as? String == EventHash.sha256Hex(bytes: Array(frozenBytes["xlsx"] ?? Data())) && report["status"] as? String == "frozen")

        // A late reading inside the month, after the freeze.
        try publisher.publish([Self.telemetry("st-1", Self.november(13, 1), 9000)])
        #expect(eventually(timeout: 60) { Self.settled(rig, events: messages.count + 1) && ((try? Self.aggregates(rig).energy) ?? before.energy) != before.energy },
                "the late reading did not reach the aggregates:\n\(worker.log.suffix(3000))")
        let after = try Self.aggregates(rig)
        for (format, file) in files {
            let again = setup.directory.appendingPathComponent("again.\(format)")
            #expect(try Self.cli(setup, ["statements", "export", id, "--format", format, "--out", again.path]).status == 0)
            #expect(try Data(contentsOf: again) == frozenBytes[format], "the frozen \(format) export changed")
            _ = file
        }

        // A new generate is version 2 with the new figures; diff names the change.
        let second = Self.json(try Self.cli(setup, ["statements", "generate", "--month", "2026-11", "--json"]).stdout)
        #expect(second["id"] as? String == "2026-11.campus.v2" && second["version"] as? Int == 2)
        #expect(second["energy_wh"] as? Double == Double(after.energy) / 1000)
        let diff = try Self.cli(setup, ["statements", "diff", id, "--json"])
        let changes = Self.json(diff.stdout)["changes"] as? [[String: Any]] ?? []
        #expect(changes.count == 1 && changes.first?["esp32_name"] as? String == "st-1", "\(diff.stdout)\(diff.stderr)")
        #expect(changes.first?["reasons"] as? [String] == ["late_readings"] && changes.first?["late_readings"] as? Int == 1)
        let text = try Self.cli(setup, ["statements", "diff", id, "2026-11.campus.v2"])
        #expect(text.status == 0 && text.stdout.contains("st-1 (CSE-301)") && text.stdout.contains("late readings (1)"), "\(text.stdout)")
        let listed = try Self.cli(setup, ["statements", "list", "--month", "2026-11"])
        #expect(listed.stdout.contains("2026-11.campus.v1  frozen") && listed.stdout.contains("2026-11.campus.v2  draft"), "\(listed.stdout)")

        // The same through HTTP.
        let list = try await Self.http(setup, "GET", "statements?month=2026-11")
        #expect(list.status == 200 && ((Self.json(String(decoding: list.data, as: UTF8.self))["statements"] as? [Any])?.count == 2))
        let pdf = try await Self.http(setup, "GET", "statements/\(id)/export.pdf")
        #expect(pdf.status == 200 && pdf.data == frozenBytes["pdf"])
        #expect((pdf.headers["X-Content-SHA256"] as? String) == EventHash.sha256Hex(bytes: Array(frozenBytes["pdf"] ?? Data())))
        #expect(try await Self.http(setup, "GET", "statements/\(id)").status == 200)
        #expect(try await Self.http(setup, "GET", "statements/2026-11.campus.v9").status == 404)
        #expect(try await Self.http(setup, "GET", "statements/\(id)/export.doc").status == 404)
        #expect(try await Self.http(setup, "POST", "statements/generate", body: #"{"month":"2026-11"}"#).status == 401)
        #expect(try await Self.http(setup, "POST", "statements/generate", token: setup.token, body: #"{"month":"2026-13"}"#).status == 400)
        #expect(try await Self.http(setup, "POST", "statements/generate", token: setup.token, body: #"{"month":"2026-11","group":"Nope"}"#).status == 404)
        #expect(try await Self.http(setup, "POST", "statements/\(id)/freeze", token: setup.token).status == 409)
        let group = try await Self.http(setup, "POST", "statements/generate", token: setup.token, body: #"{"month":"2026-11","group":"Computing"}"#)
        #expect(group.status == 201 && Self.json(String(decoding: group.data, as: UTF8.self))["id"] as? String == "2026-11.group.Computing.v1")
        let freeze = try await Self.http(setup, "POST", "statements/2026-11.group.Computing.v1/freeze", token: setup.token, body: #"{"by":"dean"}"#)
        #expect(freeze.status == 200 && Self.json(String(decoding: freeze.data, as: UTF8.self))["frozen_by"] as? String == "dean")

        // Bad input: one line, exit 64 or 1, nothing changed.
        let statementsBefore = rig.count(StatementStore.collection)
        for (arguments, status) in [
            (["statements", "generate", "--month", "2026-13"], Int32(64)),
            (["statements", "generate", "--month", "2026-11", "--classroom", "NOPE-9"], 64),
            (["statements", "generate", "--month", "2026-11", "--group", "Nope"], 64),
            (["statements", "generate", "--month", "2030-01"], 64),
            (["statements", "freeze", id], 1),
            (["statements", "show", "2026-11.campus.v9"], 1),
            (["statements", "export", id, "--format", "pdf", "--out", "/nonexistent-dir/statement.pdf"], 1),
            (["statements", "export", id, "--format", "docx", "--out", "x"], 64),
        ] {
            let result = try Self.cli(setup, arguments)
            #expect(result.status == status, "\(arguments): \(result.status) \(result.stderr)")
            #expect(result.stderr.split(separator: "\n").count == 1, "one line: \(result.stderr)")
        }
        #expect(rig.count(StatementStore.collection) == statementsBefore)
    }
}
