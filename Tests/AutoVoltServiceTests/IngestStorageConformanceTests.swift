import AutoVoltCore
import AutoVoltMongo
import AutoVoltPostgres
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Logging
import Testing

/// The contract of `IngestStorage` (issue 21 §3), the same tests against MongoDB (dev-mongo) and
/// PostgreSQL (a server of the test's own), through `IngestProcessor` where the outcome is the
/// drain's (duplicates, conflicts, `store_refused`) and through the storage where it is the
/// protocol's: duplicates collapse (in one batch, across calls, across a month boundary, and
/// between two workers at once), a conflicting reading is rejected beside the stored one,
/// rejections are idempotent by id, presence only moves forward and counts sessions, a refused
/// row is `store_refused` while the rest of its batch is stored, and `requeue` stores it once
/// the cause is gone. On PostgreSQL also: retention drops whole partitions and never the
/// ledger, and text PostgreSQL cannot hold (a NUL) is kept, not lost.
@Suite("ingest storage conformance: MongoDB and PostgreSQL", .serialized)
struct IngestStorageConformanceTests {
    /// 2026-12-01T00:00:00Z: the turn of a month (and of a partition).
    static let december: EpochMillis = 1_796_083_200_000
    static let second: EpochMillis = 1000
    static let day: EpochMillis = 86_400_000
    static let registry = DeviceRegistry(devices: [
        DeviceInfo(esp32Name: "lab-101", classroom: "CSE-301"),
        DeviceInfo(esp32Name: "lab-102", classroom: "CSE-302"),
    ])

    struct Rejected: Equatable {
        var id: String
        var reason: String
        var payload: String
        var payloadHex: String?
        var detail: String
        var esp32Name: String?
    }

    struct Status: Equatable {
        var classroom: String?
        var online: Bool?
        var sessions: Int64?
        var lastSeenAt: EpochMillis?
        var lastStatusAt: EpochMillis?
        var lastHeartbeatAt: EpochMillis?
        var lastTelemetryAt: EpochMillis?
        var rssi: Double?
        var bootID: String?
    }

    /// One backend's database (the shared `BackendDatabase`) with its ingest storage, and the
    /// reads the tests check the stored data with (straight from the collections or tables, not
    /// through the storage under test).
    final class Database: Sendable {
        let fixture: BackendDatabase
        let storage: any IngestStorage
        let logger = Logger(label: "ingest-conformance")

        init(_ backend: StorageBackend) throws {
            fixture = try BackendDatabase(backend, name: "ingest")
            storage = fixture.database.ingestStorage(writeConcern: .acknowledged)
        }

        var backend: StorageBackend { fixture.backend }
        var client: MongoClient? { fixture.client }
        var pool: PostgresPool? { fixture.pool }

        /// Another worker's storage: a client or pool of its own on the same database.
        func secondStorage() throws -> any IngestStorage {
            try fixture.anotherWorker().ingestStorage(writeConcern: .acknowledged)
        }

        func processor(_ storage: (any IngestStorage)? = nil) -> IngestProcessor {
            IngestProcessor(storage: storage ?? self.storage, decoder: MessageDecoder(), registry: IngestStorageConformanceTests.registry,
                            logger: logger)
        }

        /// From now on the database refuses every event of `device` for what it holds (a
        /// validator as mongod has them, a CHECK constraint); nil lifts it.
        func refuseEvents(of device: String?) throws {
            switch backend {
            case .mongo:
                let rules: [BSON] = device.map { [.string("telemetry_events:esp32_name=\($0)")] } ?? []
                _ = try client?.runCommand(["devMongoRefuse": .array(rules)])
            case .postgres:
                try pool?.withConnection { connection in
                    try connection.execute("ALTER TABLE telemetry_events DROP CONSTRAINT IF EXISTS refuse_device")
                    if let device {
                        try connection.execute("ALTER TABLE telemetry_events ADD CONSTRAINT refuse_device CHECK (esp32_name <> '\(device)')")
                    }
                }
            }
        }

        func eventCount(_ device: String? = nil) throws -> Int {
            switch backend {
            case .mongo:
                let filter: BSONDocument = device.map { ["esp32_name": .string($0)] } ?? [:]
                return try client?.countDocuments(Collections.telemetryEvents, filter: filter) ?? -1
            case .postgres:
                return try pool?.withConnection { connection in
                    try connection.query("SELECT count(*) AS n FROM telemetry_events WHERE $1::text IS NULL OR esp32_name = $1::text",
                                         [device]).first?.int("n")
                } ?? -1
            }
        }

        func rejections(reason: String? = nil) throws -> [Rejected] {
            switch backend {
            case .mongo:
                let filter: BSONDocument = reason.map { ["reason": .string($0)] } ?? [:]
                return try (client?.find(Collections.rejectedMessages, filter: filter, sort: ["_id": 1]) ?? []).map { doc in
                    Rejected(id: doc["_id"]?.stringValue ?? "", reason: doc["reason"]?.stringValue ?? "",
                             payload: doc["payload"]?.stringValue ?? "", payloadHex: doc["payload_hex"]?.stringValue,
                             detail: doc["detail"]?.stringValue ?? "", esp32Name: doc["esp32_name"]?.stringValue)
                }
            case .postgres:
                return try pool?.withConnection { connection in
                    try connection.query("""
                        SELECT id, reason, payload, payload_hex, detail, esp32_name FROM rejected_messages
                        WHERE $1::text IS NULL OR reason = $1::text ORDER BY id
                        """, [reason]).map { row in
                        Rejected(id: row.string("id") ?? "", reason: row.string("reason") ?? "", payload: row.string("payload") ?? "",
                                 payloadHex: row.string("payload_hex"), detail: row.string("detail") ?? "",
                                 esp32Name: row.string("esp32_name"))
                    }
                } ?? []
            }
        }

        func status(_ name: String) throws -> Status? {
            switch backend {
            case .mongo:
                guard let doc = try client?.findOne(Collections.deviceStatus, filter: ["_id": .string(name)]) else { return nil }
                func millis(_ key: String) -> EpochMillis? {
                    doc[key]?.dateValue.map { EpochMillis(($0.timeIntervalSince1970 * 1000).rounded()) }
                }
                return Status(classroom: doc["classroom"]?.stringValue, online: doc["online"]?.boolValue,
                              sessions: doc["sessions"]?.int64Value, lastSeenAt: millis("last_seen_at"),
                              lastStatusAt: millis("last_status_at"), lastHeartbeatAt: millis("last_heartbeat_at"),
                              lastTelemetryAt: millis("last_telemetry_at"), rssi: doc["rssi"]?.doubleValue,
                              bootID: doc["boot_id"]?.stringValue)
            case .postgres:
                return try pool?.withConnection { connection in
                    try connection.query("SELECT * FROM device_status WHERE esp32_name = $1", [name]).first.map { row in
                        Status(classroom: row.string("classroom"), online: row.bool("online"), sessions: row.int64("sessions"),
                               lastSeenAt: row.millis("last_seen_at"), lastStatusAt: row.millis("last_status_at"),
                               lastHeartbeatAt: row.millis("last_heartbeat_at"), lastTelemetryAt: row.millis("last_telemetry_at"),
                               rssi: row.double("rssi"), bootID: row.string("boot_id"))
                    }
                } ?? nil
            }
        }
    }

    // MARK: Messages

    static func telemetry(_ device: String, at seconds: EpochMillis?, _ energy: Double, receivedAt: EpochMillis,
                          extra: String = "") -> InboundMessage {
        let time = seconds.map { #""timestamp":\#($0),"# } ?? ""
        return InboundMessage(topic: "autovolt/\(device)/telemetry",
                              payload: Array(#"{\#(time)"energy_wh_total":\#(energy),"switch_state":[1,0]\#(extra)}"#.utf8),
                              receivedAt: receivedAt)
    }

    static func heartbeat(_ device: String, receivedAt: EpochMillis, rssi: Double? = nil, bootID: String? = nil) -> InboundMessage {
        var fields = [#""uptime_s":12"#]
        if let rssi { fields.append(#""rssi":\#(rssi)"#) }
        if let bootID { fields.append(#""boot_id":"\#(bootID)""#) }
        return InboundMessage(topic: "autovolt/\(device)/heartbeat", payload: Array("{\(fields.joined(separator: ","))}".utf8),
                              receivedAt: receivedAt)
    }

    static func status(_ device: String, _ state: String, receivedAt: EpochMillis, retained: Bool = false) -> InboundMessage {
        InboundMessage(topic: "autovolt/\(device)/status", payload: Array(state.utf8), receivedAt: receivedAt, retained: retained)
    }

    /// The storage's own event for a message (what the processor would hand it).
    static func event(_ message: InboundMessage) throws -> IngestEvent {
        guard case .success(.telemetry(let reading)) = MessageDecoder().decode(topic: message.topic, payload: message.payload,
                                                                               receivedAt: message.receivedAt) else {
            throw IngestStorageContractError(message: "not a reading: \(String(decoding: message.payload, as: UTF8.self))")
        }
        return IngestEvent(reading: reading, classroom: registry.device(reading.esp32Name)?.classroom ?? "unassigned")
    }

    static func isInserted(_ result: EventWriteResult) -> Bool { if case .inserted = result { true } else { false } }
    static func stored(_ result: EventWriteResult) -> Double?? {
        if case .alreadyStored(let energy) = result { return .some(energy) }
        return nil
    }

    // MARK: Duplicates and conflicts

    @Test("the same message twice, in one batch, in two, and either side of a month's turn is one event", arguments: StorageBackend.allCases)
    func duplicatesCollapse(_ backend: StorageBackend) throws {
        let db = try Database(backend)
        let processor = db.processor()
        let seconds = (Self.december - 30 * Self.second) / 1000
        let first = Self.telemetry("lab-101", at: seconds, 1000, receivedAt: Self.december - 10 * Self.second)
        var outcome = try processor.ingest([first, first])
        #expect(outcome.inserted == 1 && outcome.duplicates == 1 && outcome.rejectedTotal == 0)
        outcome = try processor.ingest([first])
        #expect(outcome.inserted == 0 && outcome.duplicates == 1)
        // Redelivered after the turn of the month: another receive time, another partition.
        var again = first
        again.receivedAt = Self.december + 10 * Self.second
        outcome = try processor.ingest([again])
        #expect(outcome.inserted == 0 && outcome.duplicates == 1 && outcome.rejectedTotal == 0)
        // On the receiver's clock the id is the hash: the same across the turn too.
        let untimed = Self.telemetry("lab-101", at: nil, 1010, receivedAt: Self.december - Self.second)
        var untimedAgain = untimed
        untimedAgain.receivedAt = Self.december + Self.second
        outcome = try processor.ingest([untimed])
        #expect(outcome.inserted == 1)
        outcome = try processor.ingest([untimedAgain])
        #expect(outcome.inserted == 0 && outcome.duplicates == 1)
        #expect(try db.eventCount("lab-101") == 2)

        // The protocol: results in order, each already-stored event with the stored counter.
        let events = try [first, untimed, Self.telemetry("lab-102", at: seconds, 5, receivedAt: Self.december)].map(Self.event)
        let results = try db.storage.insertEvents(events)
        #expect(results.count == 3)
        #expect(Self.stored(results[0]) == .some(1000))
        #expect(Self.stored(results[1]) == .some(1010))
        #expect(Self.isInserted(results[2]))
        #expect(try db.eventCount() == 3)
    }

    @Test("a second reading for the same device time with another counter is a conflict, kept beside the first", arguments: StorageBackend.allCases)
    func conflictingReading(_ backend: StorageBackend) throws {
        let db = try Database(backend)
        let processor = db.processor()
        let seconds = Self.december / 1000 + 60
        _ = try processor.ingest([Self.telemetry("lab-101", at: seconds, 1000, receivedAt: Self.december + 61 * Self.second)])
        var outcome = try processor.ingest([Self.telemetry("lab-101", at: seconds, 1005, receivedAt: Self.december + 62 * Self.second)])
        #expect(outcome.inserted == 0 && outcome.rejected[.conflict] == 1)
        // In one batch: the first is stored, the second conflicts with it.
        outcome = try processor.ingest([
            Self.telemetry("lab-102", at: seconds, 10, receivedAt: Self.december + 63 * Self.second),
            Self.telemetry("lab-102", at: seconds, 11, receivedAt: Self.december + 63 * Self.second),
        ])
        #expect(outcome.inserted == 1 && outcome.rejected[.conflict] == 1)
        let conflicts = try db.rejections(reason: "conflict")
        #expect(conflicts.count == 2)
        #expect(Set(conflicts.compactMap(\.esp32Name)) == ["lab-101", "lab-102"])
        #expect(conflicts.contains { $0.detail.contains("already reported 1000.0 Wh") })
        #expect(try db.eventCount() == 2)
        // Recorded once, however often the message comes back.
        _ = try processor.ingest([Self.telemetry("lab-101", at: seconds, 1005, receivedAt: Self.december + 62 * Self.second)])
        #expect(try db.rejections(reason: "conflict").count == 2)
    }

    @Test("two workers storing the same readings at once store each once", arguments: StorageBackend.allCases)
    func twoWorkersAtOnce(_ backend: StorageBackend) throws {
        let db = try Database(backend)
        let storages = [db.storage, try db.secondStorage()]
        let base = Self.december / 1000
        let messages: [InboundMessage] = (0..<40).map { (i: Int) -> InboundMessage in
            let offset = EpochMillis(i)
            let device = i % 2 == 0 ? "lab-101" : "lab-102"
            return Self.telemetry(device, at: base + offset, Double(100 + i), receivedAt: Self.december + offset * Self.second)
        }
        let events = try messages.map(Self.event)
        for round in 0..<3 {
            let results = LockedBox<[[EventWriteResult]]>([])
            let failures = LockedBox<[String]>([])
            let lock = NSLock()
            let group = DispatchGroup()
            for (worker, storage) in storages.enumerated() {
                // Each worker its own order: the two batches meet in the middle.
                let batch = worker == 0 ? events : events.reversed()
                DispatchQueue.global().async(group: group) {
                    do {
                        let written = try storage.insertEvents(batch)
                        lock.withLock { results.value.append(worker == 0 ? written : written.reversed()) }
                    } catch {
                        lock.withLock { failures.value.append("\(error)") }
                    }
                }
            }
            group.wait()
            #expect(failures.value.isEmpty, "\(failures.value)")
            let inserted = results.value.map { $0.filter(Self.isInserted).count }.reduce(0, +)
            #expect(inserted == (round == 0 ? events.count : 0), "round \(round)")
            for written in results.value {
                for (index, result) in written.enumerated() where !Self.isInserted(result) {
                    #expect(Self.stored(result) == .some(events[index].reading.energyWhTotal), "\(result)")
                }
            }
        }
        #expect(try db.eventCount() == events.count)
    }

    // MARK: Rejections

    @Test("rejections are recorded once by their id", arguments: StorageBackend.allCases)
    func rejectionsIdempotent(_ backend: StorageBackend) throws {
        let db = try Database(backend)
        let processor = db.processor()
        let bad = InboundMessage(topic: "autovolt/lab-101/telemetry", payload: Array(#"{"switch_state":[1]}"#.utf8),
                                 receivedAt: Self.december - Self.second)
        #expect(try processor.ingest([bad, bad]).rejected[.missingEnergy] == 2)
        #expect(try processor.ingest([bad]).rejected[.missingEnergy] == 1)
        #expect(try db.rejections().count == 1)
        // Another receive time is another message.
        var later = bad
        later.receivedAt = Self.december + Self.second
        _ = try processor.ingest([later])
        #expect(try db.rejections(reason: "missing_energy").count == 2)

        let record = RejectedMessageRecord(topic: "autovolt/lab-102/telemetry", payload: Array("nope".utf8),
                                           receivedAt: Self.december + Self.day, rejection: Rejection(.invalidJSON, "not JSON"),
                                           esp32Name: "lab-102")
        var results = try db.storage.recordRejections([record, record])
        #expect(results.count == 2 && results.allSatisfy { $0 == nil })
        results = try db.storage.recordRejections([record])
        #expect(results.count == 1 && results[0] == nil)
        let stored = try db.rejections(reason: "invalid_json")
        #expect(stored == [Rejected(id: record.id, reason: "invalid_json", payload: "nope", payloadHex: nil, detail: "not JSON",
                                    esp32Name: "lab-102")])
    }

    /// A raw NUL byte in a payload: MongoDB keeps it in the text; PostgreSQL's text cannot hold
    /// it, so the rejection is kept in its minimal form (the payload as hex), and the bytes
    /// read back are the bytes received either way. A NUL inside a JSON string of a valid
    /// reading is stored (jsonb cannot hold U+0000 either: it is kept as the text `\u0000`).
    @Test("a NUL is never grounds to lose a message", arguments: StorageBackend.allCases)
    func nulCharacters(_ backend: StorageBackend) throws {
        let db = try Database(backend)
        let processor = db.processor()
        let payload = Array(#"{"energy_wh_total":"#.utf8) + [0] + Array("}".utf8)
        let bad = InboundMessage(topic: "autovolt/lab-101/telemetry", payload: payload, receivedAt: Self.december)
        let outcome = try processor.ingest([bad])
        #expect(outcome.rejectedTotal == 1 && outcome.rejected[.storeRefused] == nil)
        let rejected = try #require(try db.rejections().first)
        let text = rejected.payloadHex.flatMap(Requeue.bytes(hex:)) ?? Array(rejected.payload.utf8)
        #expect(text == payload)
        #expect((rejected.payloadHex != nil) == (backend == .postgres))

        let valid = Self.telemetry("lab-101", at: Self.december / 1000, 7, receivedAt: Self.december,
                                   extra: #","note":"a\u0000b","\u0000":1"#)
        #expect(try processor.ingest([valid]).inserted == 1)
    }

    // MARK: Presence

    @Test("presence only moves forward, keeps what a heartbeat said, and counts sessions", arguments: StorageBackend.allCases)
    func presence(_ backend: StorageBackend) throws {
        let db = try Database(backend)
        let processor = db.processor()
        let t = Self.december, s = Self.second
        _ = try processor.ingest([Self.telemetry("lab-101", at: nil, 1, receivedAt: t + 10 * s)])
        #expect(try db.status("lab-101") == Status(classroom: "CSE-301", online: nil, sessions: 0, lastSeenAt: t + 10 * s,
                                                    lastTelemetryAt: t + 10 * s))
        _ = try processor.ingest([Self.heartbeat("lab-101", receivedAt: t + 20 * s, rssi: -60, bootID: "b1")])
        // An older reading and a heartbeat that says less: nothing moves back, nothing is erased.
        _ = try processor.ingest([Self.telemetry("lab-101", at: nil, 2, receivedAt: t + 5 * s),
                                  Self.heartbeat("lab-101", receivedAt: t + 15 * s)])
        #expect(try db.status("lab-101") == Status(classroom: "CSE-301", online: nil, sessions: 0, lastSeenAt: t + 20 * s,
                                                    lastHeartbeatAt: t + 20 * s, lastTelemetryAt: t + 10 * s, rssi: -60, bootID: "b1"))

        _ = try processor.ingest([Self.status("lab-101", "online", receivedAt: t + 40 * s)])
        _ = try processor.ingest([Self.status("lab-101", "online", receivedAt: t + 50 * s)])
        var status = try #require(try db.status("lab-101"))
        #expect(status.online == true && status.sessions == 1 && status.lastStatusAt == t + 50 * s && status.lastSeenAt == t + 50 * s)
        // Offline, online again (in one batch, in order), and a retained status that says nothing.
        let outcome = try processor.ingest([Self.status("lab-101", "offline", receivedAt: t + 60 * s),
                                            Self.status("lab-101", "online", receivedAt: t + 70 * s),
                                            Self.status("lab-101", "offline", receivedAt: t + 80 * s, retained: true)])
        #expect(outcome.statuses == 2 && outcome.ignoredRetainedStatuses == 1)
        status = try #require(try db.status("lab-101"))
        #expect(status.online == true && status.sessions == 2 && status.lastStatusAt == t + 70 * s)
        _ = try processor.ingest([Self.status("lab-101", "offline", receivedAt: t + 90 * s)])
        #expect(try db.status("lab-101")?.online == false)

        // A board first heard of by its Last Will.
        _ = try processor.ingest([Self.status("lab-102", "offline", receivedAt: t + 30 * s)])
        #expect(try db.status("lab-102") == Status(classroom: "CSE-302", online: false, sessions: 0, lastSeenAt: t + 30 * s,
                                                    lastStatusAt: t + 30 * s))
        // Several readings of a board in one batch: one update, the latest times.
        _ = try processor.ingest([Self.telemetry("lab-102", at: nil, 1, receivedAt: t + 100 * s),
                                  Self.telemetry("lab-102", at: nil, 2, receivedAt: t + 95 * s)])
        status = try #require(try db.status("lab-102"))
        #expect(status.lastTelemetryAt == t + 100 * s && status.lastSeenAt == t + 100 * s && status.online == false)

        // The protocol: one result per update.
        var update = PresenceUpdate(esp32Name: "lab-103", classroom: "unassigned")
        update.lastSeenAt = t
        let results = try db.storage.upsertPresence([update, PresenceUpdate(esp32Name: "lab-104", classroom: "unassigned")])
        #expect(results.count == 2 && results.allSatisfy { $0 == nil })
        #expect(try db.status("lab-104")?.sessions == 0)
    }

    // MARK: Refused rows and requeue

    @Test("a refused row is store_refused, kept whole, the rest of its batch stored, and requeued once allowed", arguments: StorageBackend.allCases)
    func refusedRow(_ backend: StorageBackend) throws {
        let db = try Database(backend)
        let processor = db.processor()
        try db.refuseEvents(of: "lab-102")
        let base = Self.december / 1000
        let padding = String(repeating: "p", count: 6000)   // more than the 4 KiB kept of other rejects
        let refused = (0..<3).map { i in
            Self.telemetry("lab-102", at: base + EpochMillis(i), Double(500 + i), receivedAt: Self.december + EpochMillis(i) * Self.second,
                           extra: #","note":"\#(padding)""#)
        }
        let good = (0..<4).map { i in
            Self.telemetry("lab-101", at: base + EpochMillis(i), Double(100 + i), receivedAt: Self.december + EpochMillis(i) * Self.second)
        }
        let outcome = try processor.ingest([good[0], refused[0], good[1], refused[1], good[2], refused[2], good[3]])
        #expect(outcome.inserted == 4 && outcome.rejected[.storeRefused] == 3 && outcome.storageErrors == 3)
        #expect(try db.eventCount("lab-101") == 4 && db.eventCount("lab-102") == 0)
        let kept = try db.rejections(reason: "store_refused")
        #expect(kept.count == 3)
        #expect(Set(kept.map(\.payload)) == Set(refused.map { String(decoding: $0.payload, as: UTF8.self) }))
        #expect(kept.allSatisfy { $0.esp32Name == "lab-102" && $0.payloadHex == nil })
        let code = backend == .mongo ? "121" : "23514"
        #expect(kept.allSatisfy { $0.detail.contains("(code \(code))") }, "\(kept.map(\.detail))")

        // The protocol: the refusal in its row's place, classified as a refused document.
        let results = try db.storage.insertEvents(try [good[0], refused[0]].map(Self.event))
        #expect(Self.stored(results[0]) == .some(100))
        guard case .failed(let error) = results[1] else {
            Issue.record("not refused: \(results[1])")
            return
        }
        #expect(storageDisposition(of: error) == .refusedDocument)

        // Requeue, in pages of two: still refused, then stored once allowed, then nothing left.
        var summary = try Requeue.run(storage: db.storage, decoder: MessageDecoder(), registry: Self.registry, since: nil,
                                      pageSize: 2, logger: db.logger)
        #expect(summary.examined == 3 && summary.stillRefused == 3)
        #expect(try db.rejections(reason: "store_refused").count == 3)
        try db.refuseEvents(of: nil)
        summary = try Requeue.run(storage: db.storage, decoder: MessageDecoder(), registry: Self.registry,
                                  since: Self.december + Self.second, pageSize: 2, logger: db.logger)
        #expect(summary.examined == 2 && summary.stored == 2)
        summary = try Requeue.run(storage: db.storage, decoder: MessageDecoder(), registry: Self.registry, since: nil,
                                  pageSize: 2, logger: db.logger)
        #expect(summary.examined == 1 && summary.stored == 1)
        #expect(try db.eventCount("lab-102") == 3)
        #expect(try db.rejections().isEmpty)
        summary = try Requeue.run(storage: db.storage, decoder: MessageDecoder(), registry: Self.registry, since: nil,
                                  pageSize: 2, logger: db.logger)
        #expect(summary.examined == 0)
    }

    // MARK: Retention (PostgreSQL: partitions; MongoDB expires by its TTL indexes)

    @Test("a month's partition is analyzed as it fills, before autovacuum would: the planner probes by id, not a scan")
    func freshPartitionsAreAnalyzed() throws {
        let db = try Database(.postgres)
        let pool = try #require(db.pool)
        let storage = try #require(db.storage as? PostgresIngestStorage)
        let start = Self.december + Self.day
        func tuples() throws -> Double? {
            try pool.withConnection { connection in
                try connection.query("SELECT reltuples::float8 AS n FROM pg_class WHERE relname = 'telemetry_events_2026_12'").first?.double("n")
            }
        }
        let events = try (0..<999).map { i in
            try Self.event(Self.telemetry("lab-\(i % 50)", at: (start + EpochMillis(i) * Self.second) / 1000, Double(i), receivedAt: start + EpochMillis(i)))
        }
        _ = try storage.insertEvents(events)
        #expect(try tuples() == -1, "never analyzed yet")
        _ = try storage.insertEvents([try Self.event(Self.telemetry("lab-1", at: start / 1000 + 5_000, 1, receivedAt: start + 5_000))])
        #expect(try tuples() == 1_000)
    }

    @Test("retention drops whole partitions past 730 and 30 days, and never touches the ledger")
    func retention() throws {
        let db = try Database(.postgres)
        let storage = try #require(db.storage as? PostgresIngestStorage)
        let pool = try #require(db.pool)
        let now = Self.december + 10 * Self.day            // 2026-12-11
        let old = now - 800 * Self.day                     // 2024-10-02
        let processor = db.processor()
        _ = try processor.ingest([Self.telemetry("lab-101", at: old / 1000, 1, receivedAt: old),
                                  Self.telemetry("lab-101", at: (now - Self.day) / 1000, 2, receivedAt: now - Self.day)])
        let badJSON = { (at: EpochMillis) in InboundMessage(topic: "autovolt/lab-101/telemetry", payload: Array("x".utf8), receivedAt: at) }
        _ = try processor.ingest([badJSON(now - 45 * Self.day), badJSON(now - 2 * Self.day)])
        try pool.withConnection { connection in
            try connection.execute("""
                INSERT INTO device_consumption_ledgers (id, esp32_name, classroom, start_ts, end_ts, date, delta_wh, is_reset_marker,
                    billable, quality, source_events, derivation_version, created_at)
                VALUES ('old-entry', 'lab-101', 'CSE-301', $1::timestamptz, $1::timestamptz, '2024-10-02', 5, false, true,
                    '{"confidence":"high","reasons":[]}', '[]', 1, $1::timestamptz)
                """, [PostgresTimestamp(millis: old)])
            // A partition an interrupted run detached but did not drop.
            try connection.execute("CREATE TABLE telemetry_events_2023_01 (LIKE telemetry_events)")
        }
        func partitions() throws -> [String] {
            try pool.withConnection { connection in
                try connection.query("""
                    SELECT c.relname AS name FROM pg_class c
                    WHERE c.relkind = 'r' AND (c.relname LIKE 'telemetry\\_events\\_%' OR c.relname LIKE 'rejected\\_messages\\_%')
                    ORDER BY 1
                    """).compactMap { $0.string("name") }
            }
        }
        #expect(try partitions() == [
            "rejected_messages_2026_10", "rejected_messages_2026_11", "rejected_messages_2026_12", "rejected_messages_2027_01",
            "telemetry_events_2023_01", "telemetry_events_2024_10", "telemetry_events_2024_11",
            "telemetry_events_2026_12", "telemetry_events_2027_01",
        ])

        let dropped = try storage.dropExpiredPartitions(now: now)
        #expect(Set(dropped) == ["telemetry_events_2023_01", "telemetry_events_2024_10", "telemetry_events_2024_11", "rejected_messages_2026_10"])
        #expect(try partitions() == [
            "rejected_messages_2026_11", "rejected_messages_2026_12", "rejected_messages_2027_01",
            "telemetry_events_2026_12", "telemetry_events_2027_01",
        ])
        #expect(try db.eventCount() == 1)
        #expect(try db.rejections().count == 1)
        let ledger = try pool.withConnection { connection in
            try connection.query("SELECT count(*) AS n FROM device_consumption_ledgers").first?.int("n")
        }
        #expect(ledger == 1)
        // The expired event had not reached the ledger: its place in the ledger's queue went with it.
        let queued = try pool.withConnection { connection in
            try connection.query("SELECT id FROM telemetry_unprocessed").compactMap { $0.string("id") }
        }
        #expect(queued.count == 1 && queued.allSatisfy { !$0.contains("@\(old / 1000)") })
        #expect(try storage.dropExpiredPartitions(now: now).isEmpty)

        // An old reading replayed after its partition was dropped: the partition is made again.
        #expect(try processor.ingest([Self.telemetry("lab-102", at: old / 1000, 1, receivedAt: old)]).inserted == 1)
        // Another process dropped a partition this one knew: the write is retried, not refused.
        try pool.withConnection { connection in try connection.execute("DROP TABLE telemetry_events_2024_10") }
        let message = Self.telemetry("lab-102", at: old / 1000 + 1, 2, receivedAt: old + Self.second)
        do {
            _ = try processor.ingest([message])
            Issue.record("a missing partition was not noticed")
        } catch {
            #expect(storageDisposition(of: error) == .transient, "\(error)")
        }
        #expect(try processor.ingest([message]).inserted == 1)
        #expect(try db.rejections(reason: "store_refused").isEmpty)
    }
}
