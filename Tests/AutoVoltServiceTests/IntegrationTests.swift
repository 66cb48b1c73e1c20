import AutoVoltMongo
import AutoVoltPostgres
import AutoVoltTestSupport
import Foundation
import Testing

/// A real mosquitto, scripts/dev-mongo and the built worker executable, on free ports; with
/// `backend: .postgres` the worker stores into a PostgreSQL 15 of the rig's own instead
/// (`AUTOVOLT_DATABASE_URL`), and `count` reads it there. @unchecked: a rig belongs to one test;
/// `workers` is appended by that test's thread only, everything else is set in `init`.
final class Rig: @unchecked Sendable {
    let broker: MosquittoBroker
    let mongo: DevMongoServer
    let client: MongoClient
    /// The worker's backend; `mongo` and `client` serve the MongoDB one.
    let backend: StorageBackend
    let postgres: PostgresServer?
    private let postgresURL: String?
    private let pool: PostgresPool?
    let stateDirectory: URL
    let database = "autovolt_it_\(UUID().uuidString.prefix(8))"
    let clientID = "worker-\(UUID().uuidString.prefix(8))"
    var workers: [WorkerProcess] = []

    init(backend: StorageBackend = .mongo, shippedBrokerConfig: Bool = false, users: [String: String] = [:], mongoData: URL? = nil,
         mongoArguments: [String] = [], brokerTLS: MosquittoBroker.TLSFiles? = nil) throws {
        self.backend = backend
        broker = try MosquittoBroker(shippedConfig: shippedBrokerConfig, users: users, tls: brokerTLS)
        mongo = try DevMongoServer(dataFile: mongoData, extraArguments: mongoArguments)
        client = try MongoClient(uri: mongo.uri(database: database))
        if backend == .postgres {
            let server = try PostgresServer()
            let url = server.url(database: try server.createDatabase())
            postgres = server
            postgresURL = url
            pool = try PostgresPool(url: url, size: 1, applicationName: "integration-tests")
        } else {
            postgres = nil
            postgresURL = nil
            pool = nil
        }
        stateDirectory = FileManager.default.temporaryDirectory.appendingPathComponent("autovolt-state-\(UUID().uuidString)")
    }

    deinit {
        for worker in workers { worker.kill9() }
        broker.stop()
        mongo.stop()
        pool?.close()
        postgres?.stop()
    }

    var environment: [String: String] {
        var environment = [
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
            "AUTOVOLT_MQTT_URL": "mqtt://127.0.0.1:\(broker.port)",
            "AUTOVOLT_MQTT_CLIENT_ID": clientID,
            "AUTOVOLT_STATE_DIR": stateDirectory.path,
            "AUTOVOLT_DEVICES": packageRoot.appendingPathComponent("config/devices.toml").path,
            "AUTOVOLT_HTTP_ADDR": "off",
            "AUTOVOLT_LOG_LEVEL": "info",
        ]
        if let postgresURL {
            environment["AUTOVOLT_DATABASE_URL"] = postgresURL
        } else {
            environment["AUTOVOLT_MONGODB_URI"] = mongo.uri(database: database)
        }
        return environment
    }

    /// Starts a worker and waits until it is connected and subscribed.
    @discardableResult
    func startWorker(extra: [String: String] = [:]) throws -> WorkerProcess {
        let worker = WorkerProcess(environment: environment.merging(extra) { $1 })
        try worker.start()
        workers.append(worker)
        #expect(worker.waitUntilSubscribed(), "worker did not connect and subscribe:\n\(worker.log)")
        return worker
    }

    func publisher() throws -> TestPublisher { try TestPublisher(port: broker.port) }

    /// Documents (rows) of `collection` (the table of that name) whose top-level fields equal
    /// `filter`'s strings, numbers and booleans; -1 when the database does not answer.
    func count(_ collection: String, _ filter: BSONDocument = [:]) -> Int {
        guard let pool else { return (try? client.countDocuments(collection, filter: filter)) ?? -1 }
        let (condition, params) = Self.sqlCondition(filter)
        return (try? pool.withConnection { connection in
            try connection.query("SELECT count(*) AS n FROM \(collection)\(condition)", params).first?.int64("n")
        }).flatMap { $0 }.map(Int.init) ?? -1
    }

    /// The columns of one row of `collection` matching `filter`, as text (PostgreSQL only).
    func row(_ collection: String, _ filter: BSONDocument, columns: [String]) throws -> [String: String?]? {
        guard let pool else { return nil } // PostgreSQL only: MongoDB's tests read documents with `client`
        let (condition, params) = Self.sqlCondition(filter)
        return try pool.withConnection { connection in
            try connection.query("SELECT \(columns.map { "\($0)::text AS \($0)" }.joined(separator: ", ")) FROM \(collection)\(condition) LIMIT 1",
                                 params).first.map { row in Dictionary(uniqueKeysWithValues: columns.map { ($0, row.string($0)) }) }
        }
    }

    /// Distinct values of `column` in `collection`.
    func distinctCount(_ collection: String, _ column: String) throws -> Int {
        guard let pool else {
            return try client.aggregate(collection, pipeline: [["$group": ["_id": .string("$\(column)")]]]).count
        }
        return try pool.withConnection { connection in
            Int(try connection.query("SELECT count(DISTINCT \(column)) AS n FROM \(collection)").first?.int64("n") ?? -1)
        }
    }

    private static func sqlCondition(_ filter: BSONDocument) -> (String, [any PostgresBindable]) {
        var clauses: [String] = []
        var params: [any PostgresBindable] = []
        for key in filter.keys {
            guard let value = filter[key] else { continue }
            let placeholder = "$\(params.count + 1)"
            switch value {
            case .string(let text): params.append(text); clauses.append("\(key) = \(placeholder)")
            case .double(let number): params.append(number); clauses.append("\(key) = \(placeholder)::float8")
            case .int64(let number): params.append(number); clauses.append("\(key) = \(placeholder)::int8")
            case .int32(let number): params.append(Int64(number)); clauses.append("\(key) = \(placeholder)::int8")
            case .bool(let flag): params.append(flag); clauses.append("\(key) = \(placeholder)::bool")
            default: clauses.append("false") // a filter this reader does not translate matches nothing
            }
        }
        return (clauses.isEmpty ? "" : " WHERE " + clauses.joined(separator: " AND "), params)
    }

    func waitForCount(_ collection: String, _ expected: Int, filter: BSONDocument = [:], timeout: Double = 30) -> Bool {
        eventually(timeout: timeout) { count(collection, filter) >= expected }
    }

    /// The database away: dev-mongo killed (its data saved first), PostgreSQL crashed
    /// (`pg_ctl stop -m immediate`); `databaseBack` starts it again on its data.
    func databaseAway() {
        if let postgres { postgres.stop(mode: "immediate") } else { mongo.kill() }
    }

    func databaseBack() throws {
        if let postgres { try postgres.start() } else { try mongo.restart() }
    }

    /// What the worker logs while it cannot store a batch.
    var cannotStore: String { backend == .postgres ? "cannot store to PostgreSQL" : "cannot store to MongoDB" }
}

/// About an hour ago, in seconds, moved back (by at most three and a half hours) to 22:30 local
/// time (Asia/Kolkata, no daylight saving) when that is between 22:30 and 02:00: then readings
/// from 50 minutes before it to 90 minutes after it, and a day (25 hours) before it, each stay on
/// one local date whenever the tests run (a reading across midnight is split into two entries).
let baseTime: Int = {
    let anHourAgo = Int(Date().timeIntervalSince1970) - 3600
    let secondsOfDay = ((anHourAgo + 19_800) % 86_400 + 86_400) % 86_400
    let latest = 22 * 3600 + 1800, earliest = 2 * 3600
    if secondsOfDay > latest { return anHourAgo - (secondsOfDay - latest) }
    if secondsOfDay < earliest { return anHourAgo - secondsOfDay - (86_400 - latest) }
    return anHourAgo
}()

/// Telemetry for `device` with a distinct timestamp and counter per index.
func reading(_ device: String, _ index: Int, energy: Double? = nil) -> (topic: String, payload: String) {
    ("autovolt/\(device)/telemetry",
     #"{"esp32_name":"\#(device)","timestamp":\#(baseTime + index),"energy_wh_total":\#(energy ?? Double(1000 + index)),"switch_state":[1,0]}"#)
}

@Suite("integration: worker, mosquitto and the database (dev-mongo, PostgreSQL)", .serialized)
struct IntegrationTests {
    @Test(arguments: StorageBackend.allCases)
    func duplicateDeliveryIsStoredOnceAndAConflictIsRejected(_ backend: StorageBackend) throws {
        let rig = try Rig(backend: backend)
        try rig.startWorker()
        let publisher = try rig.publisher()
        let message = reading("lab-101", 1)
        try publisher.publish([message, message, reading("lab-101", 2)])
        // Same device and time, another counter value.
        try publisher.publish([reading("lab-101", 1, energy: 5)])
        #expect(rig.waitForCount("rejected_messages", 1, filter: ["reason": "conflict"]))
        #expect(rig.count("telemetry_events") == 2)
        if backend == .postgres {
            let event = try #require(try rig.row("telemetry_events", ["energy_wh_total": 1001.0],
                                                 columns: ["esp32_name", "classroom", "clock", "processed", "device_ts", "event_hash"]))
            #expect(event["esp32_name"] == "lab-101" && event["classroom"]??.isEmpty == false && event["clock"] == "device")
            #expect(event["processed"] != nil && event["device_ts"]??.isEmpty == false)
            #expect(event["event_hash"]??.count == 64)
            return
        }
        let event = try #require(try rig.client.findOne("telemetry_events", filter: ["energy_wh_total": 1001.0]))
        #expect(event["esp32_name"]?.stringValue == "lab-101")
        #expect(event["classroom"]?.stringValue != nil)
        #expect(event["clock"]?.stringValue == "device")
        #expect(event["processed"]?.boolValue != nil)
        #expect(event["device_ts"]?.dateValue == Date(timeIntervalSince1970: Double(baseTime + 1)))
        #expect(event["event_hash"]?.stringValue?.count == 64)
    }

    @Test(arguments: StorageBackend.allCases)
    func everyRejectReasonIsRecorded(_ backend: StorageBackend) throws {
        let rig = try Rig(backend: backend)
        try rig.startWorker()
        let publisher = try rig.publisher()
        let cases: [(topic: String, payload: [UInt8], reason: String)] = [
            ("autovolt/lab-101/telemetry", Array("{not json".utf8), "invalid_json"),
            ("autovolt/lab-101/telemetry", Array(#"{"energy_wh_total":1,"switch_state":[1],"x":""#.utf8) + [0xFF] + Array(#""}"#.utf8), "invalid_utf8"),
            ("autovolt/lab-101/telemetry", Array(#"[1,2]"#.utf8), "wrong_shape"),
            ("autovolt/lab-101/telemetry", Array(("{\"energy_wh_total\":1,\"switch_state\":[1],\"pad\":\"" + String(repeating: "x", count: 17000) + "\"}").utf8), "payload_too_large"),
            ("autovolt/lab.bad!/telemetry", Array(#"{"energy_wh_total":1,"switch_state":[1]}"#.utf8), "invalid_device_name"),
            ("autovolt/lab-101/telemetry", Array(#"{"esp32_name":"lab-102","energy_wh_total":1,"switch_state":[1]}"#.utf8), "device_name_mismatch"),
            ("autovolt/lab-101/telemetry", Array(#"{"switch_state":[1]}"#.utf8), "missing_energy"),
            ("autovolt/lab-101/telemetry", Array(#"{"energy_wh_total":-3,"switch_state":[1]}"#.utf8), "invalid_energy"),
            ("autovolt/lab-101/telemetry", Array(#"{"energy_wh_total":NaN,"switch_state":[1]}"#.utf8), "invalid_energy"),
            ("autovolt/lab-101/telemetry", Array(#"{"energy_wh_total":1,"switch_state":"on"}"#.utf8), "invalid_switch_state"),
            ("autovolt/lab-101/status", Array("sleeping".utf8), "invalid_status"),
        ]
        try publisher.publishBytes(cases.map { ($0.topic, $0.payload) })
        #expect(rig.waitForCount("rejected_messages", cases.count), "rejected: \(rig.count("rejected_messages"))")
        for (reason, expected) in Dictionary(grouping: cases, by: \.reason).mapValues(\.count) {
            #expect(rig.count("rejected_messages", ["reason": .string(reason)]) == expected, "\(reason)")
        }
        #expect(rig.count("telemetry_events") == 0)
        if backend == .postgres {
            let utf8 = try #require(try rig.row("rejected_messages", ["reason": "invalid_utf8"], columns: ["payload"]))
            #expect(utf8["payload"]??.contains("\\xFF") == true)
            let large = try #require(try rig.row("rejected_messages", ["reason": "payload_too_large"], columns: ["payload"]))
            #expect((large["payload"]??.utf8.count ?? 0) <= 4096)
            return
        }
        let utf8 = try #require(try rig.client.findOne("rejected_messages", filter: ["reason": "invalid_utf8"]))
        #expect(utf8["payload"]?.stringValue?.contains("\\xFF") == true)
        let large = try #require(try rig.client.findOne("rejected_messages", filter: ["reason": "payload_too_large"]))
        #expect((large["payload"]?.stringValue?.utf8.count ?? 0) <= 4096)
    }

    @Test func presenceFromStatusHeartbeatAndTelemetry() throws {
        let rig = try Rig()
        // A retained "online" published before the worker subscribes is replayed to it on subscribe.
        let early = try rig.publisher()
        try early.publish([("autovolt/lab-103/status", "online")], retain: true)
        try rig.startWorker()
        let publisher = try rig.publisher()
        try publisher.publish([("autovolt/lab-101/status", "online")])
        try publisher.publish([("autovolt/lab-101/heartbeat", #"{"uptime":5000,"rssi":-55,"free_heap":20000}"#)])
        try publisher.publish([reading("lab-101", 1)])
        try publisher.publish([("autovolt/lab-101/status", #"{"status":"offline"}"#)])
        try publisher.publish([("autovolt/lab-101/status", "online")])
        try publisher.publish([("autovolt/ghost-9/heartbeat", "{}")])
        #expect(eventually(timeout: 20) {
            (try? rig.client.findOne("device_status", filter: ["esp32_name": "lab-101"]))??["sessions"]?.int64Value == 2
        })
        let status = try #require(try rig.client.findOne("device_status", filter: ["esp32_name": "lab-101"]))
        #expect(status["online"]?.boolValue == true)
        #expect(status["classroom"]?.stringValue == "CSE-301")
        for field in ["last_seen_at", "last_status_at", "last_heartbeat_at", "last_telemetry_at"] {
            #expect(status[field]?.dateValue != nil, "\(field)")
        }
        #expect(status["uptime_s"]?.doubleValue == 5)
        #expect(rig.waitForCount("device_status", 1, filter: ["esp32_name": "ghost-9"]))
        let ghost = try #require(try rig.client.findOne("device_status", filter: ["esp32_name": "ghost-9"]))
        #expect(ghost["classroom"]?.stringValue == "unassigned")
        // Every contract field is there from the start; what has not been seen yet is null.
        #expect(ghost["last_heartbeat_at"]?.dateValue != nil && ghost["last_seen_at"]?.dateValue != nil)
        #expect(ghost["last_status_at"] == .null && ghost["last_telemetry_at"] == .null && ghost["online"] == .null)
        #expect(ghost["sessions"]?.int64Value == 0)
        // The retained replay updated nothing.
        #expect(rig.count("device_status", ["esp32_name": "lab-103"]) == 0)
    }

    @Test(arguments: StorageBackend.allCases)
    func killNineMidBurstLosesNothingAndStoresNothingTwice(_ backend: StorageBackend) throws {
        let rig = try Rig(backend: backend)
        // Small batches, so the kill cannot come after one batch took in all the rest.
        let first = try rig.startWorker(extra: ["AUTOVOLT_BATCH_SIZE": "10"])
        let publisher = try rig.publisher()
        let messages = (0..<1000).map { reading("lab-10\($0 % 5)", $0) }
        let killer = Thread {
            _ = eventually(timeout: 20, interval: 0.005) { rig.count("telemetry_events") >= 200 }
            first.kill9()
        }
        killer.start()
        try publisher.publish(messages)
        _ = eventually(timeout: 20) { !first.isRunning }
        #expect(!first.isRunning)
        let stored = rig.count("telemetry_events")
        #expect(stored < 1000, "the kill came too late to test anything (\(stored) stored)")
        try rig.startWorker()
        #expect(rig.waitForCount("telemetry_events", 1000, timeout: 60))
        // A sentinel published after everything: the broker delivers the session's queue in
        // order, so once the sentinel is stored any redelivery of the burst has been through too.
        try publisher.publish([reading("lab-109", 5000)])
        #expect(rig.waitForCount("telemetry_events", 1, filter: ["esp32_name": "lab-109"]))
        #expect(rig.count("telemetry_events") == 1001)
        #expect(try rig.distinctCount("telemetry_events", "event_hash") == 1001)
    }

    @Test(arguments: StorageBackend.allCases)
    func crashInsideTheCallbackLosesNothing(_ backend: StorageBackend) throws {
        let rig = try Rig(backend: backend)
        // Establish the persistent session, then run a worker that dies inside the MQTT callback,
        // before journaling, on the 50th message (docs/delivery.md).
        try rig.startWorker().stop()
        let dying = WorkerProcess(environment: rig.environment)
        try dying.start(extraEnvironment: ["AUTOVOLT_TEST_EXIT_AT_MESSAGE": "50"])
        rig.workers.append(dying)
        #expect(dying.waitUntilConnected())
        let publisher = try rig.publisher()
        try publisher.publish((0..<100).map { reading("lab-101", $0) })
        #expect(dying.waitForExit(timeout: 20) == 86)
        try rig.startWorker()
        #expect(rig.waitForCount("telemetry_events", 100))
        #expect(rig.count("telemetry_events", ["energy_wh_total": 1049.0]) == 1, "message 50 was lost")
    }

    @Test(arguments: StorageBackend.allCases)
    func crashBeforeABatchIsCommittedLosesNothing(_ backend: StorageBackend) throws {
        let rig = try Rig(backend: backend)
        // The MQTT thread stages a socket read's messages and commits them in one transaction
        // before it writes their PUBACKs. This worker dies in its first flush, before the commit
        // (how many batches a burst takes depends on timing; the first is certain): the batch's
        // messages were never acknowledged and must come back.
        try rig.startWorker().stop()
        let dying = WorkerProcess(environment: rig.environment)
        try dying.start(extraEnvironment: ["AUTOVOLT_TEST_EXIT_AT_FLUSH": "1"])
        rig.workers.append(dying)
        #expect(dying.waitUntilConnected())
        let publisher = try rig.publisher()
        try publisher.publish((0..<200).map { reading("lab-101", $0) })
        #expect(dying.waitForExit(timeout: 20) == 87)
        try rig.startWorker()
        #expect(rig.waitForCount("telemetry_events", 200))
    }

    @Test(arguments: StorageBackend.allCases)
    func databaseOutageDuringABurstLosesNothing(_ backend: StorageBackend) throws {
        let rig = try Rig(backend: backend)
        let worker = try rig.startWorker()
        let publisher = try rig.publisher()
        try publisher.publish((0..<200).map { reading("lab-101", $0) })
        #expect(rig.waitForCount("telemetry_events", 200))
        // dev-mongo keeps its data only in memory without --data; a restart of the same server
        // would lose what was stored, so the outage is simulated by stopping it after a save.
        // PostgreSQL crashes and recovers from its WAL.
        rig.databaseAway()
        try publisher.publish((200..<700).map { reading("lab-102", $0) })
        // Until a store has really failed (after the 5 s server selection timeout) and backs off.
        #expect(eventually(timeout: 30) { worker.log.contains(rig.cannotStore) }, "\(worker.log.suffix(2000))")
        #expect(worker.isRunning)
        try rig.databaseBack()
        #expect(rig.waitForCount("telemetry_events", 500, filter: ["esp32_name": "lab-102"], timeout: 60),
                "after the outage: \(rig.count("telemetry_events", ["esp32_name": "lab-102"]))\n\(worker.log.suffix(2000))")
        #expect(worker.log.contains(rig.cannotStore))
        // A real server keeps what was stored before the crash (dev-mongo without --data does not).
        if backend == .postgres { #expect(rig.count("telemetry_events") == 700) }
    }

    @Test(arguments: StorageBackend.allCases)
    func brokerRestartIsSurvived(_ backend: StorageBackend) throws {
        let rig = try Rig(backend: backend)
        let worker = try rig.startWorker()
        try rig.publisher().publish([reading("lab-101", 1)])
        #expect(rig.waitForCount("telemetry_events", 1))
        rig.broker.stop()
        // The worker has noticed the broker is gone (and tried again at least once) before it comes back.
        #expect(eventually(timeout: 30) { worker.log.contains("MQTT connection lost") && worker.log.contains("MQTT connect failed") },
                "\(worker.log.suffix(2000))")
        try rig.broker.start()
        #expect(worker.waitUntilSubscribed(times: 2, timeout: 40), "\(worker.log)")
        try rig.publisher().publish([reading("lab-101", 2)])
        #expect(rig.waitForCount("telemetry_events", 2))
    }

    @Test func messagesPublishedWhileTheWorkerIsStoppedAllArrive() throws {
        let users = ["autovolt-worker": "worker-pass", "lab-101": "dev-pass"]
        let rig = try Rig(shippedBrokerConfig: true, users: users)
        let passwordFile = rig.broker.directory.appendingPathComponent("worker.pw")
        try "worker-pass\n".write(to: passwordFile, atomically: true, encoding: .utf8)
        let auth = ["AUTOVOLT_MQTT_USERNAME": "autovolt-worker", "AUTOVOLT_MQTT_PASSWORD_FILE": passwordFile.path]
        // Create the persistent session, stop the worker, publish 5,000, start it again.
        let first = try rig.startWorker(extra: auth)
        #expect(first.stop() == 0)
        let device = try TestPublisher(port: rig.broker.port, clientID: "lab-101", username: "lab-101", password: "dev-pass")
        try device.publish((0..<5000).map { reading("lab-101", $0) }, timeout: 120)
        try rig.startWorker(extra: auth)
        #expect(rig.waitForCount("telemetry_events", 5000, timeout: 120), "stored \(rig.count("telemetry_events"))")
    }

    @Test func aDeviceCannotPublishUnderAnotherDevicesName() throws {
        let users = ["autovolt-worker": "worker-pass", "lab-101": "dev-pass"]
        let rig = try Rig(shippedBrokerConfig: true, users: users)
        let passwordFile = rig.broker.directory.appendingPathComponent("worker.pw")
        try "worker-pass\n".write(to: passwordFile, atomically: true, encoding: .utf8)
        try rig.startWorker(extra: ["AUTOVOLT_MQTT_USERNAME": "autovolt-worker", "AUTOVOLT_MQTT_PASSWORD_FILE": passwordFile.path])
        let device = try TestPublisher(port: rig.broker.port, clientID: "lab-101", username: "lab-101", password: "dev-pass")
        try device.publish([reading("lab-102", 1)]) // refused by the ACL (silently, in MQTT 3.1.1)
        // Published after the refused one on the same connection: the broker forwards in order
        // and the worker stores in journal order, so once it is stored the refused one would be too.
        try device.publish([reading("lab-101", 2)])
        #expect(rig.waitForCount("telemetry_events", 1, filter: ["esp32_name": "lab-101"]))
        #expect(rig.count("telemetry_events", ["esp32_name": "lab-102"]) == 0)
        // Anonymous clients are refused outright.
        #expect(throws: (any Error).self) { try TestPublisher(port: rig.broker.port) }
    }

    @Test(arguments: StorageBackend.allCases)
    func sigtermStopsCleanlyWithExitZero(_ backend: StorageBackend) throws {
        let rig = try Rig(backend: backend)
        let worker = try rig.startWorker()
        try rig.publisher().publish((0..<50).map { reading("lab-101", $0) })
        #expect(rig.waitForCount("telemetry_events", 50))
        #expect(worker.stop() == 0)
        #expect(worker.log.contains("autovolt-worker stopped"))
    }

    @Test(arguments: StorageBackend.allCases)
    func replayIngestsCapturedLinesAndDuplicatesCollapse(_ backend: StorageBackend) throws {
        let rig = try Rig(backend: backend)
        let a = reading("lab-101", 1), b = reading("lab-101", 2)
        let capture = """
            \(a.topic) \(a.payload)
            \(a.topic) \(a.payload)
            2026-11-01T10:00:00+0530 \(b.topic) \(b.payload)
            1795456431.25 autovolt/lab-101/status online
            1795456432 autovolt/lab-101/telemetry {broken

            """
        let result = try WorkerProcess.runToCompletion(["replay", "-"], environment: rig.environment, stdin: Data(capture.utf8))
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("2 stored, 1 duplicates, 1 rejected"), "\(result.stdout)")
        #expect(rig.count("telemetry_events") == 2)
        #expect(rig.count("rejected_messages", ["reason": "invalid_json"]) == 1)
        // With receive times in the capture, a second replay changes nothing at all.
        let again = try WorkerProcess.runToCompletion(["replay", "-"], environment: rig.environment, stdin: Data(capture.utf8))
        #expect(again.status == 0)
        #expect(rig.count("telemetry_events") == 2)
        #expect(rig.count("rejected_messages") == 1)
    }

    @Test func badConfigurationExits78WithOneLine() throws {
        let env = ["AUTOVOLT_TIMEZONE": "Mars/Olympus", "PATH": "/usr/bin:/bin"]
        let result = try WorkerProcess.runToCompletion(["run"], environment: env)
        #expect(result.status == 78)
        #expect(result.stderr.contains("AUTOVOLT_TIMEZONE"))
        #expect(result.stderr.split(separator: "\n").count == 1)
        // A state directory that cannot exist is configuration too (not an outage to retry).
        let devices = packageRoot.appendingPathComponent("config/devices.toml").path
        let noState = try WorkerProcess.runToCompletion(["run"], environment: ["AUTOVOLT_STATE_DIR": "/dev/null/autovolt",
                                                                              "AUTOVOLT_DEVICES": devices, "AUTOVOLT_HTTP_ADDR": "off"])
        #expect(noState.status == 78, "\(noState.stderr)")
        #expect(noState.stderr.contains("AUTOVOLT_STATE_DIR") && noState.stderr.split(separator: "\n").count == 1, "\(noState.stderr)")
        let check = try WorkerProcess.runToCompletion(["run", "--check-config"],
                                                      environment: ["AUTOVOLT_DEVICES": packageRoot.appendingPathComponent("config/devices.toml").path])
        #expect(check.status == 0, "\(check.stderr)")
        let usage = try WorkerProcess.runToCompletion(["run", "--no-such-flag"], environment: [:])
        #expect(usage.status == 64)
        #expect(usage.stderr.split(separator: "\n").count == 1 && usage.stderr.contains("--no-such-flag"), "\(usage.stderr)")
        let missing = try WorkerProcess.runToCompletion(["recalculate", "--start", "2026-11-01"], environment: [:])
        #expect(missing.status == 64)
        #expect(missing.stderr.split(separator: "\n").count == 1 && missing.stderr.contains("--end"), "\(missing.stderr)")
    }

    @Test func aForeignDatabaseIsRefusedWithExit78AndLeftAlone() throws {
        let rig = try Rig()
        // What the Node.js backend keeps in its own telemetry_events.
        _ = try rig.client.insertMany([["deviceId": "abc", "power": 12.5, "timestamp": .datetime(Date())]],
                                      into: "telemetry_events", ordered: true, writeConcern: .acknowledged)
        let result = try WorkerProcess.runToCompletion(["run"], environment: rig.environment, timeout: 30)
        #expect(result.status == 78, "\(result.stderr)")
        #expect(result.stderr.contains("telemetry_events"))
        #expect(rig.count("telemetry_events") == 1)
        #expect(try rig.client.listIndexes("telemetry_events").count == 1)
    }
}
