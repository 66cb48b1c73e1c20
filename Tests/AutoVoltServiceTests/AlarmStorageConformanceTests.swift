@testable import AutoVoltCore
import AutoVoltMongo
import AutoVoltPostgres
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Logging
import Synchronization
import Testing

/// The contract of `AlarmStorage` (issue 21 §3), the same tests against MongoDB (dev-mongo) and
/// PostgreSQL (a server of the test's own), through `AlarmStore` and `AlarmService`, the logic
/// the worker runs: one active alarm per rule and device when two workers raise (and clear) at
/// once; raise, clear and ack with their retries; the event log numbered in one increasing
/// sequence with each event published once when two workers sweep the outboxes together; and a
/// worker restarted (with its database) that takes the active alarms back, neither raising
/// again nor losing the clear. Presence and rejects are written with the ingest's own storage.
@Suite("alarm storage conformance: MongoDB and PostgreSQL", .serialized)
struct AlarmStorageConformanceTests {
    /// 2026-12-01T10:00:00Z.
    static let t0: EpochMillis = 1_796_119_200_000
    static let rule = AlarmRule(name: "hot", kind: .overPower, severity: .high, thresholdW: 2000)
    static let silent = AlarmRule(name: "silent", kind: .offline, severity: .critical, durationMillis: 60_000)

    /// One backend's database (the shared `BackendDatabase`) with the storage under test, the
    /// ingest's storage to write presence and rejects with, and direct access to stage what a
    /// crash leaves behind.
    final class AlarmDB: Sendable {
        let fixture: BackendDatabase
        /// The worker's storages, made anew by `restartDatabase()`.
        private let storages: Mutex<(alarm: any AlarmStorage, ingest: any IngestStorage)>

        init(_ backend: StorageBackend) throws {
            // dev-mongo keeps its data in a file, so that the server can be restarted with it.
            fixture = try BackendDatabase(backend, name: "alarms", keepsMongoData: true)
            storages = Mutex(Self.storages(fixture.database))
        }

        private static func storages(_ database: WorkerDatabase) -> (alarm: any AlarmStorage, ingest: any IngestStorage) {
            (database.alarmStorage(writeConcern: .acknowledged), database.ingestStorage(writeConcern: .acknowledged))
        }

        var backend: StorageBackend { fixture.backend }
        var storage: any AlarmStorage { storages.withLock { $0.alarm } }
        var ingest: any IngestStorage { storages.withLock { $0.ingest } }
        var client: MongoClient? { fixture.client }
        var pool: PostgresPool? { fixture.pool }

        /// Another worker's storage: a connection of its own to the same database.
        func secondStorage() throws -> any AlarmStorage {
            try fixture.anotherWorker().alarmStorage(writeConcern: .acknowledged)
        }

        /// The database restarted (PostgreSQL: `pg_ctl restart -m immediate`, a crash), and the
        /// worker's storages made anew, as a restarted worker makes them.
        func restartDatabase() throws {
            let database = try fixture.restart()
            storages.withLock { $0 = Self.storages(database) }
        }

        /// What a worker killed between storing an event and emptying the outbox leaves: the
        /// event type listed again on the alarm.
        func listAgain(_ alarmID: String, _ type: String) throws {
            switch backend {
            case .mongo:
                _ = try client?.updateOne(AlarmStore.alarms, filter: ["_id": .string(alarmID)], update: ["$push": ["unpublished": .string(type)]],
                                          upsert: false, writeConcern: .acknowledged)
            case .postgres:
                _ = try pool?.withConnection { connection in
                    try connection.execute("UPDATE alarms SET unpublished = unpublished || $2::jsonb WHERE id = $1",
                                           [alarmID, PostgresJSON("[\"\(type)\"]")])
                }
            }
        }

        /// Every alarm of a rule (any status), straight from the collection or table.
        func alarmCount(rule: String, status: String? = nil) throws -> Int {
            try storage.alarms(activeOnly: false, from: nil, to: nil, limit: 100_000)
                .filter { $0.rule == rule && (status == nil || $0.status == status) }.count
        }
    }

    static func change(_ kind: AlarmBook.Change.Kind, _ device: String, rule: AlarmRule = rule, at: EpochMillis, value: Double) -> AlarmBook.Change {
        AlarmBook.Change(kind: kind, rule: rule, esp32Name: device, classroom: "CSE-301", at: at, value: value)
    }

    /// Every event of the log, in number order.
    static func log(_ store: AlarmStore) throws -> [AlarmEvent] {
        var all: [AlarmEvent] = []
        while true {
            let page = try store.events(after: all.last?.id ?? 0, limit: 100)
            all += page
            if page.count < 100 { return all }
        }
    }

    // MARK: One active alarm per rule and device

    @Test(arguments: StorageBackend.allCases)
    func oneActiveAlarmPerRuleAndDeviceUnderTwoRacingWriters(backend: StorageBackend) throws {
        let db = try AlarmDB(backend)
        let stores = [AlarmStore(storage: db.storage), AlarmStore(storage: try db.secondStorage())]
        let devices = (1...30).map { "board-\($0)" }
        let failures = Mutex<[String]>([])
        for round in 0..<3 {
            let base = Self.t0 + Int64(round) * 3_600_000
            // Both workers raise every device, a millisecond apart (two clocks), at once.
            let raised = Mutex<[String: [String]]>([:])
            DispatchQueue.concurrentPerform(iterations: 2) { worker in
                for device in devices {
                    do {
                        if let alarm = try stores[worker].raise(Self.change(.raise, device, at: base + Int64(worker), value: 2500)) {
                            raised.withLock { $0[device, default: []].append(alarm.id) }
                        }
                    } catch {
                        failures.withLock { $0.append("raise \(device) by \(worker): \(error)") }
                    }
                }
            }
            let winners = raised.withLock { $0 }
            for device in devices {
                #expect(winners[device]?.count == 1, "\(backend) round \(round): \(device) raised by \(winners[device] ?? [])")
            }
            let active = try stores[1].activeAlarms()
            #expect(active.count == devices.count && Set(active.map(\.esp32Name)) == Set(devices), "\(backend): one active alarm each")
            #expect(Set(active.map(\.id)) == Set(winners.values.flatMap { $0 }), "\(backend): the winners' alarms are the active ones")
            // A third raise, later, meets the active one.
            #expect(try stores[0].raise(Self.change(.raise, devices[0], at: base + 10, value: 2600)) == nil)

            // Both clear every device at once, at two moments: one clear each.
            let cleared = Mutex<[String: [Int]]>([:])
            DispatchQueue.concurrentPerform(iterations: 2) { worker in
                for device in devices {
                    do {
                        if try stores[worker].clear(rule: Self.rule.name, esp32Name: device, at: base + 60_000 + Int64(worker), value: 900) != nil {
                            cleared.withLock { $0[device, default: []].append(worker) }
                        }
                    } catch {
                        failures.withLock { $0.append("clear \(device) by \(worker): \(error)") }
                    }
                }
            }
            let clears = cleared.withLock { $0 }
            for device in devices { #expect(clears[device]?.count == 1, "\(backend) round \(round): \(device) cleared by \(clears[device] ?? [])") }
            #expect(try stores[0].activeAlarms().isEmpty, "\(backend): none active after the clears")
        }
        #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 })")
        // A new raise after each clear: three alarms per device, all cleared.
        #expect(try db.alarmCount(rule: Self.rule.name) == 3 * devices.count)
        #expect(try db.alarmCount(rule: Self.rule.name, status: "cleared") == 3 * devices.count)
        // One rule's active alarm does not hold back another rule's of the same device.
        #expect(try stores[0].raise(Self.change(.raise, devices[0], at: Self.t0 + 9_000_000, value: 2500)) != nil)
        #expect(try stores[0].raise(Self.change(.raise, devices[0], rule: Self.silent, at: Self.t0 + 9_000_000, value: 70)) != nil)
        #expect(try stores[1].activeAlarms().count == 2)
    }

    // MARK: Raise, clear, ack and their retries

    @Test(arguments: StorageBackend.allCases)
    func raiseClearAndAckWithTheirRetries(backend: StorageBackend) throws {
        let db = try AlarmDB(backend)
        let store = AlarmStore(storage: db.storage)
        let t0 = Self.t0
        let raise = Self.change(.raise, "lab-1", at: t0, value: 2500)

        // The raise is stored, then the worker dies before its event: the alarm says so.
        let record = try #require(try store.raise(raise))
        #expect(record == AlarmRecord(id: "hot@lab-1@\(t0)", rule: "hot", kind: "over_power", esp32Name: "lab-1", classroom: "CSE-301",
                                      severity: "high", status: "active", raisedAt: t0, clearedAt: nil, lastValue: 2500, acknowledgedAt: nil,
                                      acknowledgedBy: nil))
        #expect(try store.storage.alarm(id: record.id) == record, "\(backend): stored as returned")
        #expect(try Self.log(store).isEmpty && store.unpublishedAlarmIDs(limit: 10) == [record.id])
        // A retry of the same raise (its answer lost) is this raise, not "another worker's".
        #expect(try store.raise(raise) == record)
        // A raise of a different moment meets the active one.
        #expect(try store.raise(Self.change(.raise, "lab-1", at: t0 + 1, value: 2600)) == nil)
        // The timer's sweep publishes it, once.
        #expect(try store.publish(alarmID: record.id).map(\.type) == ["raise"])
        #expect(try store.publish(alarmID: record.id).isEmpty)
        #expect(try Self.log(store).map(\.type) == ["raise"] && store.unpublishedAlarmIDs(limit: 10).isEmpty)
        // Died after storing the event, before emptying the outbox: published again, stored once.
        try db.listAgain(record.id, "raise")
        #expect(try store.unpublishedAlarmIDs(limit: 10) == [record.id])
        #expect(try store.publish(alarmID: record.id).isEmpty)
        #expect(try Self.log(store).count == 1 && store.unpublishedAlarmIDs(limit: 10).isEmpty)

        // An ack publishes its own event; a second ack changes nothing; an unknown id is not found.
        guard case .acknowledged(let acked, let published) = try store.acknowledge(id: record.id, by: "facilities", at: t0 + 10_000) else {
            Issue.record("\(backend): not acknowledged"); return
        }
        #expect(acked.acknowledgedBy == "facilities" && acked.acknowledgedAt == ISO8601.format(t0 + 10_000) && published.map(\.type) == ["ack"])
        guard case .already(let again) = try store.acknowledge(id: record.id, by: "someone", at: t0 + 11_000) else {
            Issue.record("\(backend): acknowledged twice"); return
        }
        #expect(again.acknowledgedBy == "facilities")
        guard case .notFound = try store.acknowledge(id: "hot@nobody@1", by: "someone", at: t0) else { Issue.record("\(backend): found"); return }

        // A clear decided from a reading older than the raise (another worker's late one) leaves it alone.
        #expect(try store.clear(rule: "hot", esp32Name: "lab-1", at: t0 - 1, value: 100) == nil)
        let clear = Self.change(.clear, "lab-1", at: t0 + 20_000, value: 900)
        let cleared = try #require(try store.clear(clear))
        #expect(cleared.status == "cleared" && cleared.clearedAt == ISO8601.format(t0 + 20_000) && cleared.lastValue == 900
                && cleared.acknowledgedBy == "facilities")
        // The clear's retry (its answer lost) is still this clear; another moment's finds none.
        #expect(try store.clear(clear) == cleared)
        #expect(try store.clear(rule: "hot", esp32Name: "lab-1", at: t0 + 20_001, value: 900) == nil)
        #expect(try store.publish(alarmID: record.id).map(\.type) == ["clear"])
        let log = try Self.log(store)
        #expect(log.map(\.type) == ["raise", "ack", "clear"] && log.map(\.id) == log.map(\.id).sorted(), "\(backend): \(log.map(\.type))")
        // Each event carries the alarm as it was when stored, and its moment.
        #expect(log.map(\.alarm.status) == ["active", "active", "cleared"])
        #expect(log.map(\.at) == [t0, t0 + 10_000, t0 + 20_000].map { ISO8601.format($0) })
        #expect(log.last?.alarm == cleared)
        #expect(try store.lastEventID() >= log.last?.id ?? .max)

        // A new raise after the clear is a new alarm; the device's other alarms are listed newest first.
        let second = try #require(try store.raise(Self.change(.raise, "lab-1", at: t0 + 30_000, value: 3000)))
        let sameMoment = try #require(try store.raise(Self.change(.raise, "lab-1", rule: Self.silent, at: t0 + 30_000, value: 61)))
        _ = try #require(try store.raise(Self.change(.raise, "lab-2", at: t0 + 5_000, value: 2100)))
        #expect(try store.list(activeOnly: false, from: nil, to: nil, limit: 10).map(\.id)
                == [second.id, sameMoment.id, "hot@lab-2@\(t0 + 5_000)", record.id], "\(backend): newest first, then by id")
        #expect(try store.list(activeOnly: true, from: nil, to: nil, limit: 10).map(\.id) == [second.id, sameMoment.id, "hot@lab-2@\(t0 + 5_000)"])
        #expect(try store.list(activeOnly: false, from: t0 + 5_000, to: t0 + 30_000, limit: 10).map(\.id) == ["hot@lab-2@\(t0 + 5_000)"],
                "\(backend): [from, to)")
        #expect(try store.list(activeOnly: false, from: t0, to: nil, limit: 2).map(\.id) == [second.id, sameMoment.id])
        #expect(try Set(store.activeAlarms().map(\.id)) == [second.id, sameMoment.id, "hot@lab-2@\(t0 + 5_000)"])
    }

    // MARK: The event log

    @Test(arguments: StorageBackend.allCases)
    func eventIdsStrictlyIncreaseAndEachEventIsPublishedOnce(backend: StorageBackend) throws {
        let db = try AlarmDB(backend)
        let stores = [AlarmStore(storage: db.storage), AlarmStore(storage: try db.secondStorage())]
        let devices = (1...24).map { "board-\($0)" }
        // Each alarm raised by one worker, acknowledged, cleared by the other, and none of it
        // published: every worker died before its events (the outboxes hold raise, ack, clear).
        var ids: [String] = []
        for (i, device) in devices.enumerated() {
            let at = Self.t0 + Int64(i) * 1000
            let alarm = try #require(try stores[i % 2].raise(Self.change(.raise, device, at: at, value: 2500)))
            #expect(try stores[(i + 1) % 2].storage.acknowledge(id: alarm.id, by: "ops", at: at + 100) != nil)
            #expect(try stores[(i + 1) % 2].clear(rule: Self.rule.name, esp32Name: device, at: at + 200, value: 10) != nil)
            ids.append(alarm.id)
        }
        #expect(try Set(stores[0].unpublishedAlarmIDs(limit: 100)) == Set(ids))

        // Both workers' timers sweep at once, each alarm's events published by whoever gets there.
        let published = Mutex<[String: [String]]>([:])  // "alarm|type" -> the workers that published it
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 2) { worker in
            do {
                let listed = try stores[worker].unpublishedAlarmIDs(limit: 100)
                for id in worker == 0 ? listed : listed.reversed() {
                    for event in try stores[worker].publish(alarmID: id) {
                        published.withLock { $0["\(event.alarm.id)|\(event.type)", default: []].append("w\(worker)") }
                    }
                }
            } catch {
                failures.withLock { $0.append("worker \(worker): \(error)") }
            }
        }
        #expect(failures.withLock { $0 }.isEmpty, "\(failures.withLock { $0 })")
        let byEvent = published.withLock { $0 }
        #expect(byEvent.count == 3 * ids.count, "\(backend): every event published")
        #expect(byEvent.values.allSatisfy { $0.count == 1 }, "\(backend): each event published once: \(byEvent.filter { $0.value.count != 1 })")
        #expect(try stores[1].unpublishedAlarmIDs(limit: 100).isEmpty)

        // The log: one event per alarm and type, numbers strictly increasing, each alarm's in the
        // order it changed, each carrying the alarm as stored (acknowledged, cleared).
        let log = try Self.log(stores[1])
        #expect(log.count == 3 * ids.count)
        #expect(zip(log, log.dropFirst()).allSatisfy { $0.id < $1.id }, "\(backend): strictly increasing")
        for id in ids {
            let events = log.filter { $0.alarm.id == id }
            #expect(events.map(\.type) == ["raise", "ack", "clear"], "\(backend): \(id): \(events.map(\.type))")
            #expect(events.allSatisfy { $0.alarm.status == "cleared" && $0.alarm.acknowledgedBy == "ops" })
        }
        // Pages resume after any number (Last-Event-ID).
        let after = log[10].id
        #expect(try stores[0].events(after: after, limit: 5).map(\.id) == Array(log.map(\.id).filter { $0 > after }.prefix(5)))
        #expect(try stores[0].events(after: log.last?.id ?? 0, limit: 5).isEmpty)
        #expect(try stores[0].lastEventID() >= log.last?.id ?? .max)

        // Sweeping again stores nothing; a later event is numbered after every earlier one.
        for id in ids { #expect(try stores[0].publish(alarmID: id).isEmpty) }
        #expect(try Self.log(stores[0]).count == log.count)
        let later = try #require(try stores[0].raise(Self.change(.raise, devices[0], at: Self.t0 + 3_600_000, value: 2500)))
        #expect(try stores[0].publish(alarmID: later.id).map(\.type) == ["raise"])
        let newest = try #require(try stores[1].events(after: log.last?.id ?? 0, limit: 5).first)
        let lastHandedOut = try stores[1].lastEventID()
        #expect(newest.alarm.id == later.id && newest.id > log.last?.id ?? .max && newest.id <= lastHandedOut)

        // Kept 30 days: PostgreSQL deletes older events in batches; MongoDB's TTL index does it.
        let expired = try stores[0].storage.expireEvents(before: Self.t0 + 3_600_000)
        switch backend {
        case .mongo:
            #expect(expired == 0)
        case .postgres:
            #expect(expired == log.count)
            #expect(try Self.log(stores[0]).map(\.id) == [newest.id])
            #expect(try stores[0].storage.expireEvents(before: Self.t0 + 3_600_000) == 0)
            #expect(try stores[0].lastEventID() == newest.id, "the sequence goes on")
        }
    }

    // MARK: What the timer reads of the other stages

    @Test(arguments: StorageBackend.allCases)
    func presenceAndRejectsAreReadAsTheIngestStoresThem(backend: StorageBackend) throws {
        let db = try AlarmDB(backend)
        let t0 = Self.t0
        var heard = PresenceUpdate(esp32Name: "lab-1", classroom: "CSE-301")
        heard.lastSeenAt = t0
        heard.lastTelemetryAt = t0
        #expect(try db.ingest.upsertPresence([heard]).allSatisfy { $0 == nil })
        try db.ingest.writeStatus(StatusChange(esp32Name: "lab-2", classroom: "CSE-301", online: false, at: t0 + 5_000))
        var seen: [AlarmBook.Presence] = []
        var batches = 0
        try db.storage.forEachPresence(batchSize: 1) { batch in
            batches += 1
            seen += batch
        }
        #expect(batches >= 2, "\(backend): in batches")
        #expect(seen.sorted { $0.esp32Name < $1.esp32Name } == [
            AlarmBook.Presence(esp32Name: "lab-1", online: nil, lastStatusAt: nil, lastTelemetryAt: t0),
            AlarmBook.Presence(esp32Name: "lab-2", online: false, lastStatusAt: t0 + 5_000, lastTelemetryAt: nil),
        ], "\(backend): \(seen)")

        let rejects = (0..<6).map { i in
            RejectedMessageRecord(id: "r\(i)", topic: "autovolt/lab-\(i % 3 == 0 ? 9 : 1)/telemetry", payload: "{", payloadBytes: 1,
                                  reason: "invalid_json", detail: "not JSON", receivedAt: t0 + Int64(i) * 1000, esp32Name: i % 3 == 0 ? "lab-9" : "lab-1")
        }
        #expect(try db.ingest.recordRejections(rejects).allSatisfy { $0 == nil })
        // lab-1's at t0+1s, 2s, 4s, 5s: after t0+1s, the latest three, newest first.
        #expect(try db.storage.recentRejects(of: "lab-1", since: t0 + 1_000, keep: 3) == [t0 + 5_000, t0 + 4_000, t0 + 2_000])
        #expect(try db.storage.recentRejects(of: "lab-1", since: t0 + 4_500, keep: 10) == [t0 + 5_000])
        #expect(try db.storage.recentRejects(of: "lab-7", since: 0, keep: 10).isEmpty)
    }

    // MARK: A restart

    /// An `AlarmService` on its own thread, as the worker's alarms stage runs it.
    final class RunningService: Sendable {
        let service: AlarmService
        let startedAt = SystemClock.nowMillis()
        private let done = DispatchSemaphore(value: 0)

        init(config: WorkerConfig, storage: any AlarmStorage) {
            service = AlarmService(config: config, storage: { _ in storage }, logger: Logger(label: "alarm-conformance"),
                                   startedAt: startedAt)
            let thread = Thread { [service, done] in
                service.run(schemaReady: { true }, writeConcern: { .acknowledged }, beat: {})
                done.signal()
            }
            thread.start()
        }

        func stop() {
            service.requestStop()
            done.wait()
        }
    }

    /// `eventually`, with a failing read (the database away) counted as not yet.
    static func waitUntil(_ timeout: TimeInterval, _ condition: () throws -> Bool) -> Bool {
        eventually(timeout: timeout, interval: 0.2) { (try? condition()) == true }
    }

    @Test(arguments: StorageBackend.allCases)
    func aRestartedWorkerTakesTheActiveAlarmsBackAndNeitherRaisesAgainNorLosesTheClear(backend: StorageBackend) throws {
        let db = try AlarmDB(backend)
        var config = try #require(try? WorkerConfig(values: [
            "AUTOVOLT_MONGODB_URI": "mongodb://127.0.0.1:1/unused",
            "AUTOVOLT_DEVICES": packageRoot.appendingPathComponent("config/devices.toml").path,
            "AUTOVOLT_TIMEZONE": "Asia/Kolkata",
        ], readFile: { try String(contentsOfFile: $0, encoding: .utf8) }))
        let duration: EpochMillis = 2_000
        config.alarmRules = AlarmRuleSet(rules: [AlarmRule(name: "silent", kind: .offline, severity: .high, durationMillis: duration, esp32Name: "lab-101")])
        func alarms() throws -> [AlarmRecord] {
            try db.storage.alarms(activeOnly: false, from: nil, to: nil, limit: 100).filter { $0.rule == "silent" }
        }

        // lab-101 is never heard from: raised once its silence passes the duration, and published.
        let first = RunningService(config: config, storage: db.storage)
        let raised = Self.waitUntil(20) { try alarms().count == 1 && Self.log(AlarmStore(storage: db.storage)).count == 1 }
        first.stop()
        #expect(raised, "\(backend): the offline alarm raised")
        let alarm = try #require(try alarms().first)
        #expect(alarm.status == "active" && alarm.esp32Name == "lab-101")

        // The worker and its database restart; the board is still silent for longer than the duration.
        try db.restartDatabase()
        #expect(Self.waitUntil(20) { try db.storage.activeAlarms(limit: 10).count == 1 }, "\(backend): the database is back")
        let second = RunningService(config: config, storage: db.storage)
        // Silence counts from the worker's start: once its timer has judged the board silent
        // for longer than the duration (an evaluation a second past it), a raise would be stored.
        let judged = Self.waitUntil(20) { (second.service.completedEvaluations.lastAt ?? 0) >= second.startedAt + duration + 1_000 }
        #expect(judged, "\(backend): the restarted worker's timer judged the silence past the duration: \(second.service.completedEvaluations)")
        #expect(try alarms().map(\.id) == [alarm.id], "\(backend): the alarm in force is taken back, not raised again")
        #expect(try alarms().first?.status == "active", "\(backend): a restart never clears an offline alarm")

        // The board is heard from: the restarted worker clears it, once.
        var heard = PresenceUpdate(esp32Name: "lab-101", classroom: "CSE-301")
        heard.lastSeenAt = SystemClock.nowMillis()
        heard.lastTelemetryAt = heard.lastSeenAt
        #expect(try db.ingest.upsertPresence([heard]).allSatisfy { $0 == nil })
        let cleared = Self.waitUntil(20) { try db.storage.alarm(id: alarm.id)?.status == "cleared" }
        let events = Self.waitUntil(10) { try Self.log(AlarmStore(storage: db.storage)).filter { $0.alarm.id == alarm.id }.count == 2 }
        second.stop()
        #expect(cleared && events, "\(backend): cleared and published")
        let log = try Self.log(AlarmStore(storage: db.storage)).filter { $0.alarm.id == alarm.id }
        #expect(log.map(\.type) == ["raise", "clear"] && log[0].id < log[1].id, "\(backend): \(log.map(\.type))")
        #expect(try AlarmStore(storage: db.storage).unpublishedAlarmIDs(limit: 10).isEmpty)
    }
}
