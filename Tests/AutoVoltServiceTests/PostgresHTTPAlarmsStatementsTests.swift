@testable import AutoVoltCore
import AutoVoltMongo
import AutoVoltPostgres
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// The alarm and statement HTTP routes and the dashboard's alarm panel on PostgreSQL (issue 21
/// §2): one worker on dev-mongo and one on a real PostgreSQL, the same alarms and figures
/// written into each through the stages' own storages, then the same requests to both. The
/// answers are compared byte for byte (JSON with sorted keys, the stream's events, the CSV, the
/// dashboard's alarm sections), only the instants each worker took itself (an ack's, a draft's,
/// a freeze's) set aside.
@Suite("integration: alarm and statement HTTP routes on both backends", .serialized)
struct PostgresHTTPAlarmsStatementsTests {
    static let registryText = """
        [[device]]
        esp32_name = "lab-101"
        classroom = "CSE-301"

        [[device]]
        esp32_name = "lab-102"
        classroom = "CSE-301"

        [[device]]
        esp32_name = "lab-201"
        classroom = "EEE-105"

        [[device]]
        esp32_name = "lab-301"
        classroom = "LAB-X"

        [[group]]
        name = "Computing"
        classrooms = ["CSE-301"]
        """

    /// One backend: its worker's HTTP port and the database the test writes through.
    struct Side {
        let name: String
        let port: Int
        let database: WorkerDatabase
        let worker: WorkerProcess
    }

    /// Both workers, started on schemas made up front, with the registry above and a token.
    /// @unchecked: one test uses it, on its own task; `sides` is set once in `init`.
    final class Pair: @unchecked Sendable {
        let mongoRig: Rig
        let postgresRig: PostgresRig
        let pool: PostgresPool
        let directory: URL
        let token = "token-\(UUID().uuidString)"
        var sides: [Side] = []

        init() throws {
            mongoRig = try Rig()
            postgresRig = try PostgresRig()
            pool = try PostgresPool(url: postgresRig.url, size: 2, applicationName: "http-parity-test")
            directory = FileManager.default.temporaryDirectory.appendingPathComponent("http-parity-\(UUID().uuidString)")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let devices = directory.appendingPathComponent("devices.toml")
            try PostgresHTTPAlarmsStatementsTests.registryText.write(to: devices, atomically: true, encoding: .utf8)
            let tokenFile = directory.appendingPathComponent("token")
            try token.write(to: tokenFile, atomically: true, encoding: .utf8)
            try Schema.ensure(on: mongoRig.client)
            try pool.withConnection { try PostgresSchema.migrate(on: $0) }
            let mongoPort = freeTCPPort(), postgresPort = freeTCPPort()
            func extra(_ port: Int) -> [String: String] {
                ["AUTOVOLT_HTTP_ADDR": "127.0.0.1:\(port)", "AUTOVOLT_API_TOKEN_FILE": tokenFile.path, "AUTOVOLT_DEVICES": devices.path]
            }
            let mongoWorker = try mongoRig.startWorker(extra: extra(mongoPort))
            let postgresWorker = try postgresRig.startWorker(extra: extra(postgresPort))
            sides = [Side(name: "mongodb", port: mongoPort, database: .mongodb(mongoRig.client), worker: mongoWorker),
                     Side(name: "postgresql", port: postgresPort, database: .postgresql(pool), worker: postgresWorker)]
        }

        deinit {
            pool.close()
            try? FileManager.default.removeItem(at: directory)
        }
    }

    static func http(_ side: Side, _ method: String, _ path: String, token: String? = nil, body: String? = nil) async throws
        -> (status: Int, data: Data, headers: [AnyHashable: Any]) {
        var request = URLRequest(url: try #require(URL(string: "http://127.0.0.1:\(side.port)\(path)")))
        request.httpMethod = method
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        if let body { request.httpBody = Data(body.utf8) }
        let (data, response) = try await URLSession.shared.data(for: request)
        let http = response as? HTTPURLResponse
        return (http?.statusCode ?? 0, data, http?.allHeaderFields ?? [:])
    }

    static func text(_ data: Data) -> String { String(decoding: data, as: UTF8.self) }

    static func object(_ data: Data) -> [String: Any] { (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:] }

    /// The JSON with `dropping` keys removed at every depth, keys sorted: what two workers
    /// answer alike once the instants each took itself are set aside.
    static func canonical(_ data: Data, dropping: Set<String>) -> String {
        func strip(_ value: Any) -> Any {
            if let object = value as? [String: Any] {
                return object.filter { !dropping.contains($0.key) }.mapValues(strip)
            }
            if let array = value as? [Any] { return array.map(strip) }
            return value
        }
        guard let value = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]),
              let out = try? JSONSerialization.data(withJSONObject: strip(value), options: [.sortedKeys, .fragmentsAllowed]) else {
            return "not JSON: \(text(data))"
        }
        return text(out)
    }

    /// The HTML from `<section id=...>`'s start to its end.
    static func section(_ html: String, from marker: String) -> String {
        guard let start = html.range(of: marker) else { return "no \(marker)" }
        let rest = html[start.lowerBound...]
        guard let end = rest.range(of: "</section>") else { return String(rest) }
        return String(rest[..<end.upperBound])
    }

    // MARK: Alarms

    @Test("alarms: list, stream, ack and the dashboard's panels answer the same on PostgreSQL as on MongoDB")
    func alarms() async throws {
        let pair = try Pair()
        for side in pair.sides { #expect(await HTTPHealthTests.waitForHTTP(URLSession.shared, side.port), "\(side.name)") }
        // A raise cleared, then two active alarms, each published as the alarm stage does.
        let now = SystemClock.nowMillis() / 1000 * 1000
        let hot = NewAlarm(id: "hot@lab-101@\(now - 600_000)", rule: "hot", kind: "over_power", esp32Name: "lab-101", classroom: "CSE-301",
                           severity: "high", raisedAt: now - 600_000, value: 1500)
        let silent = NewAlarm(id: "silent@lab-201@\(now - 300_000)", rule: "silent", kind: "offline", esp32Name: "lab-201",
                              classroom: "EEE-105", severity: "warning", raisedAt: now - 300_000, value: 0)
        let noisy = NewAlarm(id: "noisy@lab-101@\(now - 120_000)", rule: "noisy", kind: "rejects", esp32Name: "lab-101", classroom: "CSE-301",
                             severity: "warning", raisedAt: now - 120_000, value: 2)
        for side in pair.sides {
            let storage = side.database.alarmStorage(writeConcern: .acknowledged)
            #expect(try storage.insertAlarm(hot))
            _ = try storage.publish(alarmID: hot.id)
            #expect(try storage.clearActive(rule: "hot", esp32Name: "lab-101", at: now - 540_000, value: 850) != nil)
            _ = try storage.publish(alarmID: hot.id)
            for alarm in [silent, noisy] {
                #expect(try storage.insertAlarm(alarm))
                _ = try storage.publish(alarmID: alarm.id)
            }
        }
        let (mongo, postgres) = (pair.sides[0], pair.sides[1])

        // The lists, byte for byte.
        for query in ["", "?status=all", "?status=all&limit=1", "?status=all&from=\(ISO8601.format(now - 400_000))"] {
            let a = try await Self.http(mongo, "GET", "/api/power-analytics/alarms\(query)")
            let b = try await Self.http(postgres, "GET", "/api/power-analytics/alarms\(query)")
            #expect(a.status == 200 && b.status == 200, "\(query): \(Self.text(b.data))")
            #expect(Self.text(a.data) == Self.text(b.data), "\(query)")
        }
        let all = Self.object(try await Self.http(postgres, "GET", "/api/power-analytics/alarms?status=all").data)
        #expect(all["count"] as? Int == 3 && (all["alarms"] as? [[String: Any]])?.map { $0["id"] as? String ?? "" } == [noisy.id, silent.id, hot.id],
                "newest first: \(all)")
        #expect(try await Self.http(postgres, "GET", "/api/power-analytics/alarms?status=cleared").status == 400)

        // The dashboard's panels, before any ack (the ack's instant is each worker's own).
        var calendar = LocalCalendar(timeZone: TimeZone(identifier: "Asia/Kolkata") ?? .gmt)
        let today = calendar.date(of: now)
        var panels: [[String]] = []
        for side in [mongo, postgres] {
            let page = Self.text(try await Self.http(side, "GET", "/?date=\(today)").data)
            let device = Self.text(try await Self.http(side, "GET", "/devices/lab-101?date=\(today)").data)
            panels.append([Self.section(page, from: "<section id=alarms>"), Self.section(device, from: "<h2>Alarms</h2>")])
        }
        #expect(panels[0] == panels[1])
        let panel = panels[1][0]
        #expect(panel.contains("<td>silent</td>") && panel.contains("<td>noisy</td>") && !panel.contains("<td>hot</td>"), "the two active alarms: \(panel)")
        #expect(panels[1][1].contains("<td>hot</td>") && panels[1][1].contains("<td>noisy</td>"), "lab-101's alarms: \(panels[1][1])")

        // The stream from the start, then acks over HTTP: the same events, numbered alike.
        let streams = try [mongo, postgres].map { try StreamReader("http://127.0.0.1:\($0.port)/api/power-analytics/alarms/stream", lastEventID: 0) }
        defer { streams.forEach { $0.stop() } }
        var ackedAt: [String] = []
        for side in [mongo, postgres] {
            let path = "/api/power-analytics/alarms/\(silent.id)/ack"
            #expect(try await Self.http(side, "POST", path).status == 401)
            let ack = try await Self.http(side, "POST", path, token: pair.token, body: #"{"by": "facilities"}"#)
            let answer = Self.object(ack.data)
            #expect(ack.status == 200 && answer["acknowledged"] as? Bool == true, "\(side.name): \(Self.text(ack.data))")
            ackedAt.append(((answer["alarm"] as? [String: Any])?["acknowledged_at"] as? String) ?? "none")
            let again = try await Self.http(side, "POST", path, token: pair.token)
            #expect(again.status == 200 && Self.object(again.data)["acknowledged"] as? Bool == false
                    && (Self.object(again.data)["alarm"] as? [String: Any])?["acknowledged_by"] as? String == "facilities")
            #expect(try await Self.http(side, "POST", "/api/power-analytics/alarms/nope/ack", token: pair.token).status == 404)
        }
        #expect(streams.allSatisfy { stream in eventually(timeout: 15) { stream.events.count >= 5 } }, "\(streams.map(\.text))")
        func blocks(_ stream: StreamReader, ackedAt: String) -> [String] {
            stream.text.replacingOccurrences(of: ackedAt, with: "ACKED").components(separatedBy: "\n\n").filter { $0.hasPrefix("id: ") }
        }
        let events = [blocks(streams[0], ackedAt: ackedAt[0]), blocks(streams[1], ackedAt: ackedAt[1])]
        #expect(events[0] == events[1])
        #expect(streams[1].events.map(\.id) == [1, 2, 3, 4, 5] && streams[1].events.map(\.type) == ["raise", "clear", "raise", "raise", "ack"],
                "\(streams[1].text)")
        // A stream opened without Last-Event-ID starts after the last event.
        let fresh = try StreamReader("http://127.0.0.1:\(postgres.port)/api/power-analytics/alarms/stream")
        defer { fresh.stop() }
        #expect(eventually { fresh.text.contains("alarms after event 5") }, "\(fresh.text)")

        // After the acks, the lists agree but for each worker's instant.
        var lists: [String] = []
        for (index, side) in [mongo, postgres].enumerated() {
            lists.append(Self.text(try await Self.http(side, "GET", "/api/power-analytics/alarms?status=all").data)
                .replacingOccurrences(of: ackedAt[index], with: "ACKED"))
        }
        #expect(lists[0] == lists[1] && lists[1].contains(#""acknowledged_by":"facilities""#), "\(lists[1])")
    }

    // MARK: Statements

    @Test("statements: generate, list, show, export and freeze answer the same on PostgreSQL as on MongoDB")
    func statements() async throws {
        let pair = try Pair()
        typealias Seed = StatementStorageConformanceTests.Seed
        func at(_ text: String) -> EpochMillis { ISO8601.parseMillis(text) ?? 0 }
        for side in pair.sides {
            let aggregation = side.database.aggregationStorage(writeConcern: .acknowledged)
            try aggregation.insertTariff(Tariff(id: "v1", costPerKwh: 8, currency: "INR", effectiveFrom: at("2026-01-01T00:00:00+05:30"),
                                                classroom: nil, createdAt: at("2026-01-01T00:00:00+05:30"), notes: "campus"))
            var figures: [AggregateFigures] = []
            for day in 1...5 {
                let date = String(format: "2026-11-%02d", day)
                for (index, (name, room)) in [("lab-101", "CSE-301"), ("lab-102", "CSE-301"), ("lab-201", "EEE-105")].enumerated() {
                    figures.append(Seed.daily(date, name, room, energy: 1000 + Double(index) * 37.125 + Double(day) * 1.5, versions: [("v1", 8)]))
                }
            }
            figures.append(Seed.daily("2026-11-02", "lab-301", "LAB-X", energy: 250.25, versions: []))
            let writes = figures.map { AggregateWrite(figures: $0, replacing: nil, keepsHistory: false) }
            #expect(try aggregation.writeAggregates(.daily, writes, now: at("2026-11-30T09:00:00+05:30"), writeID: UUID().uuidString).count == figures.count)
        }
        for side in pair.sides { #expect(await HTTPHealthTests.waitForHTTP(URLSession.shared, side.port), "\(side.name)") }
        let (mongo, postgres) = (pair.sides[0], pair.sides[1])
        let base = "/api/power-analytics/statements"
        // What each worker sets itself: the instants, and the PDF's and XLSX's checksums, which
        // print the freeze instant (the XLSX's document properties to the second): two freezes a
        // second apart give other bytes. The CSV's checksum, all figures, must match.
        let instants: Set<String> = ["created_at", "frozen_at", "pdf", "xlsx"]

        /// The same request to both; the two answers, which must agree but for the instants.
        func both(_ method: String, _ path: String, token: String? = nil, body: String? = nil, status: Int,
                  _ comment: String = "") async throws -> [(status: Int, data: Data, headers: [AnyHashable: Any])] {
            let answers = [try await Self.http(mongo, method, path, token: token, body: body),
                           try await Self.http(postgres, method, path, token: token, body: body)]
            for (side, answer) in zip([mongo, postgres], answers) {
                #expect(answer.status == status, "\(side.name) \(method) \(path): \(Self.text(answer.data))")
            }
            #expect(Self.canonical(answers[0].data, dropping: instants) == Self.canonical(answers[1].data, dropping: instants), "\(method) \(path)")
            return answers
        }

        let campus = try await both("POST", "\(base)/generate", token: pair.token, body: #"{"month":"2026-11"}"#, status: 201)
        #expect(Self.object(campus[1].data)["id"] as? String == "2026-11.campus.v1" && Self.object(campus[1].data)["status"] as? String == "draft")
        var expectedWh = 250.25
        for day in 1...5 {
            for index in 0..<3 { expectedWh += 1000 + Double(index) * 37.125 + Double(day) * 1.5 }
        }
        #expect(abs((Self.object(campus[1].data)["energy_wh"] as? Double ?? 0) - expectedWh) < 1e-6, "\(Self.text(campus[1].data))")
        let group = try await both("POST", "\(base)/generate", token: pair.token, body: #"{"month":"2026-11","group":"Computing"}"#, status: 201)
        #expect(Self.object(group[1].data)["id"] as? String == "2026-11.group.Computing.v1")
        _ = try await both("GET", "\(base)?month=2026-11", status: 200)
        _ = try await both("GET", "\(base)/2026-11.campus.v1", status: 200)
        let draftCSV = try await both("GET", "\(base)/2026-11.campus.v1/export.csv", status: 200)
        #expect(draftCSV[0].data == draftCSV[1].data && Self.text(draftCSV[1].data).contains("lab-301"))

        let frozen = try await both("POST", "\(base)/2026-11.campus.v1/freeze", token: pair.token, body: #"{"by":"finance"}"#, status: 200)
        #expect(Self.object(frozen[1].data)["status"] as? String == "frozen" && Self.object(frozen[1].data)["frozen_by"] as? String == "finance")
        let shown = try await both("GET", "\(base)/2026-11.campus.v1", status: 200)
        let recorded = ((Self.object(shown[1].data)["exports"] as? [String: [String: Any]]) ?? [:]).compactMapValues { $0["sha256"] as? String }
        #expect(Set(recorded.keys) == ["csv", "pdf", "xlsx"], "\(Self.text(shown[1].data))")
        for format in ["csv", "pdf", "xlsx"] {
            for side in [mongo, postgres] {
                let export = try await Self.http(side, "GET", "\(base)/2026-11.campus.v1/export.\(format)")
                let sha = EventHash.sha256Hex(bytes: Array(export.data))
                #expect(export.status == 200 && export.headers["X-Content-SHA256"] as? String == sha, "\(side.name) \(format)")
                if side.name == postgres.name { #expect(sha == recorded[format], "the \(format) frozen") }
            }
        }
        let frozenCSV = try await both("GET", "\(base)/2026-11.campus.v1/export.csv", status: 200)
        #expect(frozenCSV[0].data == frozenCSV[1].data)
        _ = try await both("GET", "\(base)?month=2026-11", status: 200)

        // Refusals, alike.
        _ = try await both("POST", "\(base)/2026-11.campus.v1/freeze", token: pair.token, status: 409)
        _ = try await both("POST", "\(base)/generate", body: #"{"month":"2026-11"}"#, status: 401)
        _ = try await both("POST", "\(base)/generate", token: pair.token, body: #"{"month":"2026-13"}"#, status: 400)
        _ = try await both("POST", "\(base)/generate", token: pair.token, body: #"{"month":"2026-11","group":"Nope"}"#, status: 404)
        _ = try await both("GET", "\(base)/2026-11.campus.v9", status: 404)
        _ = try await both("GET", "\(base)/2026-11.campus.v1/export.doc", status: 404)
        _ = try await both("GET", "\(base)?month=11-2026", status: 400)
        // The next generate is version 2, over HTTP as from the CLI.
        let next = try await both("POST", "\(base)/generate", token: pair.token, body: #"{"month":"2026-11"}"#, status: 201)
        #expect(Self.object(next[1].data)["id"] as? String == "2026-11.campus.v2")
        let cli = try WorkerProcess.runToCompletion(["statements", "list", "--month", "2026-11", "--json"],
                                                    environment: pair.postgresRig.environment)
        #expect(cli.status == 0 && cli.stdout.contains("2026-11.campus.v2") && cli.stdout.contains("2026-11.group.Computing.v1"),
                "\(cli.stdout)\(cli.stderr)")
    }
}
