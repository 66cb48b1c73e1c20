import AutoVoltMongo
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Testing

/// Issue 20 §2: what a real mongod does to the worker that dev-mongo never did unasked: write
/// concern timeouts, commands refused as a whole, per-document codes nobody knows, slow counts,
/// a replica set reached without its name. The worker runs as an operator runs it, against a
/// real mosquitto and dev-mongo with mongod's fail points (docs/dev-mongo.md, "Fail points").
@Suite("integration: faults of a real server", .serialized)
struct RealServerFaultTests {
    // MARK: Helpers

    /// The worker with its HTTP port, connected and subscribed, its first batch path warm.
    static func start(_ rig: Rig, extra: [String: String] = [:]) throws -> (worker: WorkerProcess, port: Int) {
        let port = freeTCPPort()
        let worker = try rig.startWorker(extra: ["AUTOVOLT_HTTP_ADDR": "127.0.0.1:\(port)"].merging(extra) { $1 })
        return (worker, port)
    }

    /// `/health` as JSON (empty when it does not answer).
    static func health(_ port: Int) -> [String: Any] {
        guard let url = URL(string: "http://127.0.0.1:\(port)/health"), let data = try? Data(contentsOf: url),
              let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return [:] }
        return json
    }

    static func section(_ document: [String: Any], _ path: String...) -> [String: Any] {
        var current = document
        for key in path { current = current[key] as? [String: Any] ?? [:] }
        return current
    }

    /// How often the fail point `name` has fired so far.
    static func fired(_ server: DevMongoServer, _ name: String) -> Int {
        let reply = try? server.adminCommand(["devMongoFailPoints": 1])
        for case .document(let point) in reply?["failPoints"]?.arrayValue ?? [] where point["name"]?.stringValue == name {
            return point["count"]?.intValue ?? 0
        }
        return 0
    }

    /// `count` readings spread over `devices` boards, each with its own timestamp and counter.
    static func burst(_ count: Int, devices: [String]) -> [(topic: String, payload: String)] {
        (0..<count).map { i in reading(devices[i % devices.count], i / devices.count) }
    }

    static func occurrences(of text: String, in log: String) -> Int { log.components(separatedBy: text).count - 1 }

    /// `/metrics` as text (empty when it does not answer).
    static func metricsText(_ port: Int) -> String {
        guard let url = URL(string: "http://127.0.0.1:\(port)/metrics"), let data = try? Data(contentsOf: url) else { return "" }
        return String(decoding: data, as: UTF8.self)
    }

    /// The value of the sample `name{...label...}` in /metrics (0 when absent).
    static func metric(_ port: Int, _ name: String, label: String) -> Double {
        for line in metricsText(port).split(separator: "\n") where line.hasPrefix(name + "{") && line.contains(label) {
            if let value = line.split(separator: " ").last.flatMap({ Double($0) }) { return value }
        }
        return 0
    }

    // MARK: (a) write concern timeouts

    /// Every insert into telemetry_events is applied and then reported as not acknowledged by
    /// the write concern (mongod's answer when no majority is reached within wtimeout). The
    /// journal keeps the burst, /health says degraded with the write concern failure, the log
    /// says it once; once the fail point is off everything is stored, once.
    @Test func aWriteConcernTimeoutDuringABurstLosesNothingAndIsShownOnce() throws {
        let rig = try Rig()
        let (worker, port) = try Self.start(rig)
        #expect(eventually { Self.section(Self.health(port), "mongodb")["reachable"] as? Bool == true })
        let events = Collections.telemetryEvents
        try rig.mongo.failCommand(["insert"], mode: .alwaysOn, writeConcernError: .timeout, namespace: "\(rig.database).\(events)")

        let messages = Self.burst(300, devices: ["lab-101", "lab-102", "lab-103"])
        try rig.publisher().publish(messages)

        // Degraded, with the write concern failure, while the journal holds the burst.
        var document: [String: Any] = [:]
        let degraded = eventually(timeout: 30) {
            document = Self.health(port)
            let concern = Self.section(document, "mongodb", "write_concern")
            return document["status"] as? String == "degraded" && concern["failing"] as? Bool == true
                && (Self.section(document, "journal")["pending_records"] as? Int ?? 0) > 0
        }
        #expect(degraded, "\(document)\n\(worker.log.suffix(3000))")
        let concern = Self.section(document, "mongodb", "write_concern")
        #expect((concern["last_failure"] as? String)?.contains("waiting for replication timed out") == true, "\(concern)")
        #expect(concern["failing_since"] is String && concern["last_failure_at"] is String, "\(concern)")
        #expect((Self.section(document, "mongodb")["last_error"] as? String)?.contains("write concern") == true, "\(document)")
        #expect(Self.section(document, "mongodb")["reachable"] as? Bool == true)
        // Retried several times, said once.
        #expect(eventually(timeout: 30) { Self.fired(rig.mongo, "failCommand") >= 4 })
        #expect(Self.occurrences(of: "does not acknowledge them with the write concern", in: worker.log) == 1, "\(worker.log.suffix(3000))")
        #expect((Self.section(Self.health(port), "journal")["pending_records"] as? Int ?? 0) > 0)

        try rig.mongo.failCommand(["insert"], mode: .off)
        #expect(eventually(timeout: 60) { Self.section(Self.health(port), "journal")["pending_records"] as? Int == 0 },
                "\(worker.log.suffix(3000))")
        #expect(rig.waitForCount(events, messages.count))
        #expect(rig.count(events) == messages.count)
        #expect(rig.count("rejected_messages") == 0)
        for device in ["lab-101", "lab-102", "lab-103"] {
            #expect(rig.count(events, ["esp32_name": .string(device)]) == 100)
        }
        #expect(eventually(timeout: 30) {
            let now = Self.health(port)
            return Self.section(now, "mongodb", "write_concern")["failing"] as? Bool == false && now["status"] as? String == "healthy"
        }, "\(Self.health(port))")
        #expect(worker.log.contains("acknowledges the writes with the write concern in force again"), "\(worker.log.suffix(2000))")
    }

    /// Only a write acknowledged with its concern ends a write concern failure. At night, with
    /// no traffic: the aggregation's last write of a pass (removing the day marks) is applied
    /// but fails its write concern, once. The ledger loop then goes round idle, writing nothing:
    /// that proves nothing, /health stays degraded and nothing says "acknowledged again". The
    /// next reading's ledger writes, acknowledged, end it.
    @Test func anIdleLedgerLoopDoesNotDeclareTheWriteConcernSatisfied() throws {
        let rig = try Rig()
        let (worker, port) = try Self.start(rig)
        let dirtyDays = "\(rig.database).ledger_dirty_days"
        let publisher = try rig.publisher()
        // A day with ledger entries, fully derived.
        try publisher.publish([reading("lab-101", 1), reading("lab-101", 2)])
        #expect(rig.waitForCount(Collections.telemetryEvents, 2))
        #expect(eventually(timeout: 30) {
            rig.count(Collections.telemetryEvents, ["processed": false]) == 0 && rig.count("ledger_dirty_days") == 0
                && Self.health(port)["status"] as? String == "healthy"
        }, "\(Self.health(port))\n\(worker.log.suffix(3000))")

        // One more reading: its day's mark is removed (applied) without the write concern. The
        // ledger step's own delete (its mark made before its writes, replaced once they are done)
        // comes first and passes; the aggregation's, after it, fails (and every one after it,
        // until the fail point is set again below).
        try rig.mongo.failCommand(["delete"], mode: .skip(1), writeConcernError: .timeout, namespace: dirtyDays)
        try publisher.publish([reading("lab-101", 3)])
        #expect(eventually(timeout: 30) { worker.log.contains("does not acknowledge them with the write concern") },
                "\(worker.log.suffix(3000))")
        #expect(Self.fired(rig.mongo, "failCommand") >= 1)

        // The aggregation loop goes round idle (each round reads the day marks), writing nothing.
        try rig.mongo.failCommand(["find"], mode: .alwaysOn, blockTimeMS: 1, namespace: dirtyDays)
        let rounds = Self.fired(rig.mongo, "failCommand")
        #expect(eventually(timeout: 30) { Self.fired(rig.mongo, "failCommand") >= rounds + 3 }, "\(worker.log.suffix(3000))")
        #expect(rig.count("ledger_dirty_days") == 0 && rig.count(Collections.telemetryEvents, ["processed": false]) == 0)
        let document = Self.health(port)
        #expect(document["status"] as? String == "degraded", "\(document)\n\(worker.log.suffix(3000))")
        #expect(Self.section(document, "mongodb", "write_concern")["failing"] as? Bool == true, "\(document)")
        #expect(!worker.log.contains("acknowledges the writes with the write concern in force again"), "\(worker.log.suffix(3000))")
        try rig.mongo.failCommand(["find"], mode: .off)

        // A ledger write acknowledged with the concern ends it.
        try publisher.publish([reading("lab-101", 4)])
        #expect(eventually(timeout: 30) {
            let now = Self.health(port)
            return Self.section(now, "mongodb", "write_concern")["failing"] as? Bool == false && now["status"] as? String == "healthy"
        }, "\(Self.health(port))\n\(worker.log.suffix(3000))")
        #expect(Self.occurrences(of: "acknowledges the writes with the write concern in force again", in: worker.log) == 1,
                "\(worker.log.suffix(3000))")
    }

    /// UnsatisfiableWriteConcern (100): the deployment can never satisfy the write concern in
    /// force, waiting does not help. Not the "is a majority up?" warning said once: an error
    /// naming AUTOVOLT_MONGODB_WRITE_CONCERN, repeated at a bounded rate (every second here, a
    /// minute by default) while the writes are retried more often, /health degraded with the
    /// advice in write_concern.last_failure. Nothing is lost.
    @Test func anUnsatisfiableWriteConcernIsAnErrorForAnOperatorRepeatedAtABoundedRate() throws {
        let rig = try Rig()
        let (worker, port) = try Self.start(rig, extra: ["AUTOVOLT_TEST_WRITE_CONCERN_REPEAT_MS": "1000"])
        #expect(eventually { Self.section(Self.health(port), "mongodb")["reachable"] as? Bool == true })
        let events = Collections.telemetryEvents
        let unsatisfiable = DevMongoServer.WriteConcernFailure(code: 100, codeName: "UnsatisfiableWriteConcern",
                                                               errmsg: "Not enough data-bearing nodes")
        try rig.mongo.failCommand(["insert"], mode: .alwaysOn, writeConcernError: unsatisfiable, namespace: "\(rig.database).\(events)")
        let messages = Self.burst(20, devices: ["lab-101", "lab-102"])
        try rig.publisher().publish(messages)

        let said = "MongoDB cannot satisfy the write concern in force"
        func lines() -> [Substring] { worker.log.split(separator: "\n").filter { $0.contains(said) } }
        // Said again, and not at every retry (the first retries come within the second).
        #expect(eventually(timeout: 30) { lines().count >= 3 && Self.fired(rig.mongo, "failCommand") > lines().count },
                "\(worker.log.suffix(3000))")
        let seen = lines()
        #expect(seen.allSatisfy { $0.contains(" ERROR ") && $0.contains("AUTOVOLT_MONGODB_WRITE_CONCERN") && $0.contains("code 100") }, "\(seen)")
        let format = ISO8601DateFormatter()
        format.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let times = seen.compactMap { line in line.split(separator: " ").first.flatMap { format.date(from: String($0)) } }
        #expect(times.count == seen.count)
        for (earlier, later) in zip(times, times.dropFirst()) {
            #expect(later.timeIntervalSince(earlier) >= 0.95, "\(seen)")
        }
        #expect(!worker.log.contains("is a majority of the replica set up?"), "\(worker.log.suffix(3000))")

        let document = Self.health(port)
        #expect(document["status"] as? String == "degraded", "\(document)")
        let concern = Self.section(document, "mongodb", "write_concern")
        #expect(concern["failing"] as? Bool == true, "\(concern)")
        #expect((concern["last_failure"] as? String)?.contains("AUTOVOLT_MONGODB_WRITE_CONCERN") == true, "\(concern)")
        #expect((Self.section(document, "journal")["pending_records"] as? Int ?? 0) > 0, "\(document)")
        #expect(rig.count("rejected_messages") == 0)

        try rig.mongo.failCommand(["insert"], mode: .off)
        #expect(eventually(timeout: 60) { Self.section(Self.health(port), "journal")["pending_records"] as? Int == 0 },
                "\(worker.log.suffix(3000))")
        #expect(rig.count(events) == messages.count)
        #expect(eventually(timeout: 30) { Self.health(port)["status"] as? String == "healthy" }, "\(Self.health(port))")
    }

    // MARK: (b) a command refused as a whole

    /// Every insert into telemetry_events fails as a command with BadValue (2), as mongod
    /// answers a write concern the deployment rejects. That says nothing of any document: the
    /// journal keeps the batch (nothing becomes store_refused), and once the cause is gone
    /// everything is stored.
    @Test func aCommandRefusedWithBadValueKeepsTheBatchInTheJournal() throws {
        let rig = try Rig()
        let (worker, port) = try Self.start(rig)
        #expect(eventually { Self.section(Self.health(port), "mongodb")["reachable"] as? Bool == true })
        let events = Collections.telemetryEvents
        try rig.mongo.failCommand(["insert"], mode: .alwaysOn, errorCode: 2, namespace: "\(rig.database).\(events)")

        let messages = Self.burst(40, devices: ["lab-101", "lab-102"])
        try rig.publisher().publish(messages)
        // Refused again and again (the batch, then retries), and never taken for a document.
        #expect(eventually(timeout: 30) { Self.fired(rig.mongo, "failCommand") >= 3 }, "\(worker.log.suffix(3000))")
        #expect(eventually(timeout: 10) { Self.section(Self.health(port), "journal")["pending_records"] as? Int == messages.count },
                "\(Self.health(port))")
        #expect(rig.count("rejected_messages") == 0)
        #expect(Self.section(Self.health(port), "ingest")["store_refused"] as? Int == 0)
        #expect(worker.log.contains("does not pass by itself"), "\(worker.log.suffix(3000))")

        try rig.mongo.failCommand(["insert"], mode: .off)
        #expect(rig.waitForCount(events, messages.count, timeout: 60), "\(worker.log.suffix(3000))")
        #expect(eventually(timeout: 30) { Self.section(Self.health(port), "journal")["pending_records"] as? Int == 0 })
        #expect(rig.count(events) == messages.count)
        #expect(rig.count("rejected_messages", ["reason": "store_refused"]) == 0)
        #expect(rig.count("rejected_messages") == 0)
    }

    /// A message leaves the journal only when it is stored somewhere. Here rejected_messages
    /// refuses every document (a validator, code 121), so neither a malformed message's
    /// rejection nor its minimal form (payload as hex) can be recorded: the batch stays in the
    /// journal (it was lost before, with one log line), and is recorded once the cause is gone.
    @Test func aRejectionThatCannotBeRecordedStaysInTheJournal() throws {
        let rig = try Rig()
        let (worker, port) = try Self.start(rig)
        #expect(eventually { Self.section(Self.health(port), "mongodb")["reachable"] as? Bool == true })
        try rig.mongo.failDocuments(collection: "rejected_messages", commands: ["insert"], code: 121,
                                    errmsg: "Document failed validation", mode: .alwaysOn)
        try rig.publisher().publish([reading("lab-101", 1), ("autovolt/lab-101/telemetry", "not json"), reading("lab-101", 2)])
        #expect(eventually(timeout: 30) { Self.fired(rig.mongo, "devMongoWriteError") >= 4 }, "\(worker.log.suffix(3000))")
        // The batch holding the malformed message stays (the readings may have come in a batch
        // of their own, and be stored).
        #expect(eventually(timeout: 10) { (Self.section(Self.health(port), "journal")["pending_records"] as? Int ?? 0) >= 1 },
                "\(Self.health(port))\n\(worker.log.suffix(3000))")
        #expect(rig.count("rejected_messages") == 0)
        #expect(worker.log.contains("its batch stays in the journal"), "\(worker.log.suffix(3000))")

        try rig.mongo.failDocuments(collection: "rejected_messages", commands: ["insert"], code: 121, mode: .off)
        #expect(rig.waitForCount("rejected_messages", 1, filter: ["reason": "invalid_json"], timeout: 60), "\(worker.log.suffix(3000))")
        #expect(eventually(timeout: 30) { Self.section(Self.health(port), "journal")["pending_records"] as? Int == 0 })
        #expect(rig.count(Collections.telemetryEvents) == 2)
        #expect(rig.count("rejected_messages") == 1)
    }

    // MARK: (c) a per-document code nobody knows

    /// One board's reading gets a per-document write error with a code that is not a known
    /// refusal of a document (9999), once. Good telemetry is not dead-lettered for an unknown
    /// code: the batch is retried (loudly) and every reading is stored, once.
    @Test func anUnknownPerDocumentCodeIsRetriedNotDeadLettered() throws {
        let rig = try Rig()
        let (worker, port) = try Self.start(rig)
        #expect(eventually { Self.section(Self.health(port), "mongodb")["reachable"] as? Bool == true })
        let events = Collections.telemetryEvents
        try rig.mongo.failDocuments(collection: events, commands: ["insert"], match: ["esp32_name": "lab-102"],
                                    code: 9999, errmsg: "a code nobody knows", mode: .times(1))
        let messages = Self.burst(20, devices: ["lab-101", "lab-102"])
        try rig.publisher().publish(messages)

        #expect(rig.waitForCount(events, messages.count, timeout: 60), "\(worker.log.suffix(3000))")
        #expect(Self.fired(rig.mongo, "devMongoWriteError") == 1)
        #expect(eventually(timeout: 30) { Self.section(Self.health(port), "journal")["pending_records"] as? Int == 0 })
        #expect(rig.count(events) == messages.count)
        #expect(rig.count(events, ["esp32_name": "lab-102"]) == 10)
        #expect(rig.count("rejected_messages") == 0, "\(worker.log.suffix(3000))")
        #expect(Self.section(Self.health(port), "ingest")["store_refused"] as? Int == 0)
        #expect(worker.log.contains("code not known to refuse a document"), "\(worker.log.suffix(3000))")
    }

    // MARK: (c') a refused presence update

    /// `device_status` refuses every update of one board with DocumentValidationFailure (121),
    /// said of that document (a write error), after the board's events are stored. The status is
    /// derived from messages that are stored: none of them becomes store_refused, the batch is
    /// not held in the journal, the refusal is said loudly with the board and the code, and
    /// counted in /metrics. The other board's presence is written; once the cause is gone the
    /// refused board's presence is written again.
    @Test func aRefusedPresenceUpdateNeitherDeadLettersNorHoldsStoredMessages() throws {
        let rig = try Rig()
        let (worker, port) = try Self.start(rig)
        #expect(eventually { Self.section(Self.health(port), "mongodb")["reachable"] as? Bool == true })
        let events = Collections.telemetryEvents
        try rig.mongo.failDocuments(collection: Collections.deviceStatus, match: ["_id": "lab-102"], code: 121,
                                    errmsg: "Document failed validation", mode: .alwaysOn)
        // Telemetry and a heartbeat (the folded bulk upsert), a status message (an update of its own).
        let messages = Self.burst(20, devices: ["lab-101", "lab-102"])
            + [("autovolt/lab-102/heartbeat", #"{"uptime":5000,"rssi":-55,"free_heap":20000}"#), ("autovolt/lab-102/status", "online")]
        try rig.publisher().publish(messages)

        #expect(rig.waitForCount(events, 20), "\(worker.log.suffix(3000))")
        #expect(eventually(timeout: 30) { Self.section(Self.health(port), "journal")["pending_records"] as? Int == 0 },
                "\(Self.health(port))\n\(worker.log.suffix(3000))")
        #expect(rig.count(events, ["esp32_name": "lab-102"]) == 10)
        #expect(rig.count("rejected_messages") == 0, "\(worker.log.suffix(3000))")
        #expect(Self.section(Self.health(port), "ingest")["store_refused"] as? Int == 0)
        #expect(rig.count(Collections.deviceStatus, ["_id": "lab-101"]) == 1)
        #expect(rig.count(Collections.deviceStatus, ["_id": "lab-102"]) == 0)
        #expect(Self.fired(rig.mongo, "devMongoWriteError") >= 2)
        // Loud, with the board and the code; counted.
        let said = worker.log.split(separator: "\n").filter { $0.contains("device_status refused the presence update") }
        #expect(!said.isEmpty && said.allSatisfy { $0.contains(" ERROR device_status") }, "\(worker.log.suffix(3000))")
        #expect(said.contains { $0.contains("esp32_name=lab-102") && $0.contains("code=121") }, "\(said)")
        #expect(eventually { Self.metric(port, "autovolt_device_status_refused_total", label: #"code="121""#) >= 2 },
                "\(Self.metricsText(port))")

        // The cause gone, the board's presence is written again.
        try rig.mongo.failDocuments(collection: Collections.deviceStatus, code: 121, mode: .off)
        try rig.publisher().publish([reading("lab-102", 100)])
        #expect(eventually(timeout: 30) { rig.count(Collections.deviceStatus, ["_id": "lab-102"]) == 1 }, "\(worker.log.suffix(3000))")
        #expect(rig.count("rejected_messages") == 0)
    }

    // MARK: (d) /health figures fail one by one

    /// Counts on device_status take 4 s on the server, past health's 2 s limit: online_devices
    /// is null with its error, the telemetry figures are there all the same. Then a failing
    /// `count` command (the metadata count behind total_events) takes only total_events away.
    @Test func healthFiguresFailIndependently() throws {
        let rig = try Rig(mongoArguments: ["--delay", "device_status:4000"])
        let (worker, port) = try Self.start(rig)
        try rig.publisher().publish([reading("lab-101", 1), reading("lab-101", 2)])
        #expect(rig.waitForCount(Collections.telemetryEvents, 2))

        var telemetry: [String: Any] = [:]
        let shown = eventually(timeout: 40) {
            telemetry = Self.section(Self.health(port), "telemetry")
            return telemetry["total_events"] as? Int == 2
        }
        #expect(shown, "\(telemetry)\n\(worker.log.suffix(2000))")
        #expect(telemetry["online_devices"] is NSNull, "\(telemetry)")
        let errors = telemetry["errors"] as? [String: Any] ?? [:]
        #expect((errors["online_devices"] as? String)?.contains("50") == true, "\(telemetry)")
        #expect(telemetry["unprocessed_events"] is Int && telemetry["events_last_hour"] as? Int == 2, "\(telemetry)")
        #expect(errors["total_events"] == nil && errors["events_last_hour"] == nil, "\(telemetry)")

        // The total comes from the collection's metadata (the `count` command), not a scan.
        try rig.mongo.failCommand(["count"], mode: .alwaysOn, errorCode: 13, namespace: "\(rig.database).\(Collections.telemetryEvents)")
        let failed = eventually(timeout: 40) {
            telemetry = Self.section(Self.health(port), "telemetry")
            return telemetry["total_events"] is NSNull
        }
        #expect(failed, "\(telemetry)")
        #expect(((telemetry["errors"] as? [String: Any])?["total_events"] as? String)?.contains("13") == true, "\(telemetry)")
        #expect(telemetry["events_last_hour"] as? Int == 2 && telemetry["unprocessed_events"] is Int, "\(telemetry)")
        try rig.mongo.failCommand(["count"], mode: .off)
    }

    /// The counts /health makes other than the total are answered by an index, so they stay
    /// cheap at any size (Schema.swift): processed first for unprocessed_events, received_at
    /// first for events_last_hour.
    @Test func healthCountsHaveIndexes() {
        let keys = (Schema.indexes[Collections.telemetryEvents] ?? []).map { $0.keys.map(\.0) }
        #expect(keys.contains { $0.first == "processed" }, "\(keys)")
        #expect(keys.contains { $0.first == "received_at" }, "\(keys)")
    }

    // MARK: (e) a replica set reached without its name

    /// dev-mongo answers as the primary of replica set rs0. A URI without `replicaSet=` makes
    /// libmongoc talk to that one host: the worker says so at start, once, with the URI to use,
    /// and /health shows it; with the URI it suggests there is nothing to say, and majority
    /// writes are in force either way.
    @Test func aReplicaSetMemberReachedWithoutTheSetsNameIsWarnedAbout() throws {
        let rig = try Rig(mongoArguments: ["--replset", "rs0"])
        let (worker, port) = try Self.start(rig)
        try rig.publisher().publish([reading("lab-101", 1)])
        #expect(rig.waitForCount(Collections.telemetryEvents, 1))
        #expect(eventually { worker.log.contains("does not name it") }, "\(worker.log.suffix(3000))")
        #expect(Self.occurrences(of: "does not name it", in: worker.log) == 1)
        #expect(worker.log.contains("replicaSet=rs0"), "\(worker.log.suffix(3000))")
        let mongodb = Self.section(Self.health(port), "mongodb")
        let replicaSet = mongodb["replica_set"] as? [String: Any] ?? [:]
        #expect(replicaSet["name"] as? String == "rs0", "\(mongodb)")
        let suggested = try #require(replicaSet["uri_to_use"] as? String)
        #expect(suggested.contains("replicaSet=rs0") && suggested.contains("/\(rig.database)"), "\(suggested)")
        #expect(Self.section(mongodb, "write_concern", "in_force")["w"] as? String == "majority", "\(mongodb)")
        #expect(worker.stop() == 0)

        // The suggested URI: libmongoc follows the set; nothing to warn about.
        let named = try Self.start(rig, extra: ["AUTOVOLT_MONGODB_URI": suggested])
        try rig.publisher().publish([reading("lab-101", 2)])
        #expect(rig.waitForCount(Collections.telemetryEvents, 2), "\(named.worker.log.suffix(3000))")
        #expect(eventually { Self.section(Self.health(named.port), "mongodb")["reachable"] as? Bool == true })
        let after = Self.section(Self.health(named.port), "mongodb")
        #expect(after["replica_set"] is NSNull, "\(after)")
        #expect(Self.section(after, "write_concern", "in_force")["w"] as? String == "majority", "\(after)")
        #expect(!named.worker.log.contains("does not name it"), "\(named.worker.log.suffix(3000))")
    }

    // MARK: §5: long operations and the socket timeout

    /// The index build on telemetry_events takes 1.5 s at start, longer than the worker's socket
    /// timeout (500 ms here, 60 s by default): the build is waited for on a client of its own
    /// with a long timeout, instead of failing and being retried forever while nothing is stored.
    @Test func anIndexBuildLongerThanTheSocketTimeoutDoesNotStopTheWorker() throws {
        let rig = try Rig()
        try rig.mongo.failCommand(["createIndexes"], mode: .alwaysOn, blockTimeMS: 1500,
                                  namespace: "\(rig.database).\(Collections.telemetryEvents)")
        let (worker, _) = try Self.start(rig, extra: ["AUTOVOLT_MONGODB_URI": rig.mongo.uri(database: rig.database) + "?socketTimeoutMS=500"])
        try rig.publisher().publish([reading("lab-101", 1)])
        #expect(rig.waitForCount(Collections.telemetryEvents, 1, timeout: 30), "\(worker.log.suffix(3000))")
        #expect(!worker.log.contains("not reachable at start-up"), "\(worker.log.suffix(3000))")
        #expect(Self.fired(rig.mongo, "failCommand") >= 1)
        try rig.mongo.failCommand(["createIndexes"], mode: .off)
    }

    // MARK: §4: a standalone journals before it acknowledges

    /// On a standalone the worker asks for `w: 1, j: true`: mongod answers only once the batch
    /// is in its journal, and only then does the worker delete its own copy.
    @Test func aStandaloneIsAskedForItsJournal() throws {
        let rig = try Rig()
        let (worker, port) = try Self.start(rig)
        try rig.publisher().publish([reading("lab-101", 1)])
        #expect(rig.waitForCount(Collections.telemetryEvents, 1))
        #expect(eventually { worker.log.contains(#"write_concern="w:1 j:true""#) }, "\(worker.log.suffix(2000))")
        let inForce = Self.section(Self.health(port), "mongodb", "write_concern", "in_force")
        #expect(inForce["w"] as? Int == 1 && inForce["j"] as? Bool == true, "\(inForce)")
    }
}
