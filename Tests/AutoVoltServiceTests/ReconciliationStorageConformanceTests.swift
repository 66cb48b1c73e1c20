@testable import AutoVoltCore
import AutoVoltMongo
import AutoVoltPostgres
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Logging
import Synchronization
import Testing

/// The contract of `ReconciliationStorage` (issue 21 §3), the same tests against MongoDB
/// (dev-mongo) and PostgreSQL (a server of the test's own): a scheduler job leased by one of two
/// workers only, an expired lease taken over (and the former holder's finish ignored), a day
/// judged again at most once an interval; tickets opened, kept, resolved and reopened, one
/// ticket per key when two judgements or the ledger race; a report stored once per run_id; the
/// day's figures summed by the database; and through `Reconciler` and `Scheduler` a day judged
/// and a night run alike on both. The data is written with the other stages' own storages, so
/// the reads are checked against what the writers really store.
@Suite("reconciliation storage conformance: MongoDB and PostgreSQL", .serialized)
struct ReconciliationStorageConformanceTests {
    static let zone = TimeZone(identifier: "Asia/Kolkata")!
    /// 2026-11-05T00:00+05:30.
    static let day5: EpochMillis = 1_793_817_000_000
    static let day6 = day5 + 24 * hour
    static let minute: EpochMillis = 60_000
    static let hour: EpochMillis = 3_600_000
    static let date5 = CivilDate(year: 2026, month: 11, day: 5)
    static let lease: EpochMillis = 15 * minute

    /// A row of `scheduler_runs`, read straight from the collection or table.
    struct Run: Equatable {
        var status: String?
        var owner: String?
        var runID: String?
        var error: String?
        var leaseUntil: EpochMillis?
    }

    /// A review ticket, read straight from the collection or table.
    struct Ticket: Equatable {
        var status: String
        var detail: String
        var runID: String?
        var lastRunID: String?
        var resolvedRunID: String?
        var resolvedAt: EpochMillis?
        var reopenedAt: EpochMillis?
    }

    /// One backend's database (the shared `BackendDatabase`) with the storage under test, the
    /// other stages' storages to write the data with, and direct reads to check what was stored.
    final class ReconDB: Sendable {
        let fixture: BackendDatabase
        let storage: any ReconciliationStorage
        let ledger: any LedgerStorage
        let ingest: any IngestStorage
        let aggregation: any AggregationStorage

        init(_ backend: StorageBackend) throws {
            fixture = try BackendDatabase(backend, name: "recon")
            let database = fixture.database
            storage = database.reconciliationStorage(writeConcern: .acknowledged)
            ledger = database.ledgerStorage(writeConcern: .acknowledged)
            ingest = database.ingestStorage(writeConcern: .acknowledged)
            aggregation = database.aggregationStorage(writeConcern: .acknowledged)
        }

        var backend: StorageBackend { fixture.backend }
        var client: MongoClient? { fixture.client }
        var pool: PostgresPool? { fixture.pool }

        /// Another worker's storage: a connection of its own to the same database.
        func secondStorage() throws -> any ReconciliationStorage {
            try fixture.anotherWorker().reconciliationStorage(writeConcern: .acknowledged)
        }

        // MARK: Direct reads

        func run(_ id: String) throws -> Run? {
            switch backend {
            case .mongo:
                guard let doc = try client?.findOne(Scheduler.runsCollection, filter: ["_id": .string(id)]) else { return nil }
                return Run(status: doc["status"]?.stringValue, owner: doc["owner"]?.stringValue, runID: doc["run_id"]?.stringValue,
                           error: doc["error"]?.stringValue, leaseUntil: doc["lease_until"]?.dateValue.map(MongoLedgerStorage.millis))
            case .postgres:
                guard let row = try pool?.withConnection({ connection in
                    try connection.query("SELECT status, owner, run_id, error, lease_until FROM scheduler_runs WHERE id = $1", [id]).first
                }) else { return nil }
                return Run(status: row.string("status"), owner: row.string("owner"), runID: row.string("run_id"), error: row.string("error"),
                           leaseUntil: row.millis("lease_until"))
            }
        }

        /// The tickets of a date by "esp32_name|kind".
        func tickets(_ date: String) throws -> [String: Ticket] {
            var out: [String: Ticket] = [:]
            switch backend {
            case .mongo:
                for doc in try client?.find(Collections.reviewTickets, filter: ["date": .string(date)], limit: 1000) ?? [] {
                    let key = "\(doc["esp32_name"]?.stringValue ?? "")|\(doc["kind"]?.stringValue ?? "")"
                    out[key] = Ticket(status: doc["status"]?.stringValue ?? "", detail: doc["detail"]?.stringValue ?? "",
                                      runID: doc["run_id"]?.stringValue, lastRunID: doc["last_run_id"]?.stringValue,
                                      resolvedRunID: doc["resolved_run_id"]?.stringValue,
                                      resolvedAt: doc["resolved_at"]?.dateValue.map(MongoLedgerStorage.millis),
                                      reopenedAt: doc["reopened_at"]?.dateValue.map(MongoLedgerStorage.millis))
                }
            case .postgres:
                let rows = try pool?.withConnection { connection in
                    try connection.query("""
                        SELECT esp32_name, kind, status, detail #>> '{}' AS detail, run_id, last_run_id, resolved_run_id, resolved_at, reopened_at
                        FROM review_tickets WHERE date = $1
                        """, [date])
                } ?? []
                for row in rows {
                    out["\(row.string("esp32_name") ?? "")|\(row.string("kind") ?? "")"] = Ticket(
                        status: row.string("status") ?? "", detail: row.string("detail") ?? "", runID: row.string("run_id"),
                        lastRunID: row.string("last_run_id"), resolvedRunID: row.string("resolved_run_id"), resolvedAt: row.millis("resolved_at"),
                        reopenedAt: row.millis("reopened_at"))
                }
            }
            return out
        }

        /// A report's status and devices_checked.
        func report(_ runID: String) throws -> (status: String, devicesChecked: Int, judgedAgain: Bool)? {
            switch backend {
            case .mongo:
                guard let doc = try client?.findOne(Collections.reconciliationReports, filter: ["run_id": .string(runID)]) else { return nil }
                return (doc["status"]?.stringValue ?? "", doc["devices_checked"]?.intValue ?? -1, doc["judged_again"]?.boolValue ?? false)
            case .postgres:
                guard let row = try pool?.withConnection({ connection in
                    try connection.query("SELECT status, devices_checked, judged_again FROM reconciliation_reports WHERE run_id = $1", [runID]).first
                }) else { return nil }
                return (row.string("status") ?? "", row.int("devices_checked") ?? -1, row.bool("judged_again") ?? false)
            }
        }

        func reportCount() throws -> Int {
            switch backend {
            case .mongo: return try client?.countDocuments(Collections.reconciliationReports, filter: [:]) ?? -1
            case .postgres:
                return try pool?.withConnection { connection in
                    try connection.query("SELECT count(*) AS n FROM reconciliation_reports").first?.int("n")
                } ?? -1
            }
        }

        // MARK: Writing, through the other stages' storages

        static func entry(_ id: String, _ device: String, date: CivilDate, start: EpochMillis, wh: Double, billable: Bool = true,
                          reasons: [LedgerReason] = [], part: Int = 0, parts: Int = 1) -> LedgerEntry {
            LedgerEntry(id: id, esp32Name: device, classroom: "CSE-301", start: start, end: start + 30_000, date: date, deltaWh: wh,
                        isResetMarker: false, billable: billable, confidence: reasons.isEmpty ? .high : .low, reasons: reasons,
                        sourceEvents: ["from-\(id)", "to-\(id)"], part: part, parts: parts)
        }

        func writeEntries(_ entries: [LedgerEntry]) throws {
            #expect(try ledger.insertEntries(entries, createdAt: ReconciliationStorageConformanceTests.day6).isEmpty, "\(backend): entries inserted")
        }

        func supersede(_ entry: LedgerEntry) throws {
            try ledger.supersede([LedgerChange.Supersession(
                entry: StoredLedgerEntry(id: entry.id, esp32Name: entry.esp32Name, start: entry.start, end: entry.end,
                                         dateText: entry.date.description, sourceEvents: entry.sourceEvents),
                replacement: "rederived")], at: ReconciliationStorageConformanceTests.day6)
        }

        func writeDaily(_ date: String, _ device: String, energy: Double, cost: Double?, overlap: Int64 = 0, at: EpochMillis) throws {
            let figures = AggregateFigures(kind: .daily, key: date, esp32Name: device, classroom: "CSE-301", energyWh: energy, cost: cost,
                                           currency: cost == nil ? nil : "INR",
                                           day: DayDetail(costVersionIDs: cost == nil ? [] : ["v1"], coverage: 1, confidence: [.high: 1, .medium: 0, .low: 0],
                                                          entries: 1, unpricedWh: cost == nil ? energy : 0, overlapMillis: overlap, hourlyWh: [],
                                                          costSegments: [], complete: true))
            let stored = try aggregation.aggregates(.daily, ids: [figures.id])
            let applied = try aggregation.writeAggregates(.daily, [AggregateWrite(figures: figures, replacing: stored[figures.id], keepsHistory: false)],
                                                          now: at, writeID: UUID().uuidString)
            #expect(applied == [figures.id], "\(backend): daily aggregate written")
        }

        static func event(_ device: String, deviceTime: EpochMillis, receivedAt: EpochMillis) -> IngestEvent {
            IngestEvent(reading: TelemetryReading(
                esp32Name: device, deviceTime: deviceTime, receivedAt: receivedAt, clock: .device, clockNote: nil,
                timestampAsSent: ISO8601.format(deviceTime), energyWhTotal: 1000, switchState: (try? JSONValue.parse("[1]")) ?? .null, powerW: nil, bootID: "b1",
                seq: 1, uptimeS: 10, fwVersion: "1.0", payloadClassroom: nil, extra: JSONObject(),
                eventHash: EventHash.compute(esp32Name: device, timestampAsSent: String(deviceTime), energyWhTotal: 1000)), classroom: "CSE-301")
        }

        func writeEvents(_ events: [IngestEvent], processed: Bool) throws {
            for result in try ingest.insertEvents(events) {
                if case .failed(let error) = result { Issue.record("\(backend): event not stored: \(error)") }
            }
            if processed { try markProcessed(events) }
        }

        func markProcessed(_ events: [IngestEvent]) throws {
            try ledger.markProcessed(events.map { LedgerEventRef(id: $0.id, receivedAt: $0.reading.receivedAt) })
        }
    }

    func leaseFor(_ id: String, owner: String, at now: EpochMillis, kind: String = "day_close") -> RunLease {
        RunLease(id: id, kind: kind, date: Self.date5, owner: owner, startedAt: now, leaseUntil: now + Self.lease)
    }

    // MARK: Scheduler runs

    @Test(arguments: StorageBackend.allCases)
    func aRunIsLeasedByOneOfTwoWorkersOnly(backend: StorageBackend) throws {
        let db = try ReconDB(backend)
        let a = db.storage, b = try db.secondStorage()
        let now = Self.day6 + 10 * Self.minute
        let ids = (1...12).map { "day_close:2026-10-\(String(format: "%02d", $0))" }
        // Both workers ask for every job at the same moment, from two threads.
        let won = Mutex<[String: [String]]>([:])
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 2) { worker in
            let (storage, owner) = worker == 0 ? (a, "worker:a") : (b, "worker:b")
            for id in ids {
                do {
                    if try storage.acquireRun(leaseFor(id, owner: owner, at: now), condition: .notDone) {
                        won.withLock { $0[id, default: []].append(owner) }
                    }
                } catch {
                    failures.withLock { $0.append("\(owner) \(id): \(error)") }
                }
            }
        }
        #expect(failures.withLock { $0 }.isEmpty)
        let winners = won.withLock { $0 }
        for id in ids { #expect(winners[id]?.count == 1, "\(backend): \(id) leased by \(winners[id] ?? [])") }

        // Held: neither the other worker nor the holder takes it again before it expires.
        let id = ids[0]
        let holder = try #require(winners[id]?.first)
        let other = holder == "worker:a" ? "worker:b" : "worker:a"
        #expect(try !a.acquireRun(leaseFor(id, owner: other, at: now + Self.minute), condition: .notDone))
        #expect(try !b.acquireRun(leaseFor(id, owner: holder, at: now + Self.minute), condition: .notDone))
        #expect(try db.run(id) == Run(status: "running", owner: holder, runID: nil, error: nil, leaseUntil: now + Self.lease))

        // Done: listed as done, never leased again, whenever asked.
        #expect(try a.doneRuns(ids).isEmpty)
        try a.finishRun(id: id, owner: holder, finishedAt: now + 2 * Self.minute, runID: nil)
        #expect(try b.doneRuns(ids + ["reconcile:2026-11-05"]) == [id])
        #expect(try db.run(id) == Run(status: "done", owner: holder, runID: nil, error: nil, leaseUntil: nil))
        #expect(try !b.acquireRun(leaseFor(id, owner: other, at: now + 48 * Self.hour), condition: .notDone))

        // Failed: the lease is given back at once and another worker takes the job; a failure
        // that says no error keeps the one recorded before.
        let failed = ids[1]
        let failedHolder = try #require(winners[failed]?.first)
        try a.failRun(id: failed, owner: failedHolder, error: "boom")
        #expect(try db.run(failed) == Run(status: "failed", owner: failedHolder, runID: nil, error: "boom", leaseUntil: nil))
        #expect(try b.acquireRun(leaseFor(failed, owner: "worker:c", at: now + Self.minute), condition: .notDone))
        try b.failRun(id: failed, owner: "worker:c", error: nil)
        #expect(try db.run(failed) == Run(status: "failed", owner: "worker:c", runID: nil, error: "boom", leaseUntil: nil))
        #expect(try a.doneRuns([failed]).isEmpty)
    }

    @Test(arguments: StorageBackend.allCases)
    func anExpiredLeaseIsTakenOverAndTheFormerHolderCannotFinishIt(backend: StorageBackend) throws {
        let db = try ReconDB(backend)
        let a = db.storage, b = try db.secondStorage()
        let t = Self.day6 + 2 * Self.hour
        let id = "reconcile:2026-11-05"
        #expect(try a.acquireRun(leaseFor(id, owner: "worker:a", at: t, kind: "reconcile"), condition: .notDone))
        // Until the lease's end, included, it is a's.
        #expect(try !b.acquireRun(leaseFor(id, owner: "worker:b", at: t + 10 * Self.minute, kind: "reconcile"), condition: .notDone))
        #expect(try !b.acquireRun(leaseFor(id, owner: "worker:b", at: t + Self.lease, kind: "reconcile"), condition: .notDone))
        // Past it (a died mid-run), b takes it over.
        let takeover = t + Self.lease + 1
        #expect(try b.acquireRun(leaseFor(id, owner: "worker:b", at: takeover, kind: "reconcile"), condition: .notDone))
        #expect(try db.run(id) == Run(status: "running", owner: "worker:b", runID: nil, error: nil, leaseUntil: takeover + Self.lease))
        // a coming back finishes nothing, nor fails it.
        try a.finishRun(id: id, owner: "worker:a", finishedAt: takeover + 1000, runID: "recon-a")
        try a.failRun(id: id, owner: "worker:a", error: "late")
        #expect(try db.run(id) == Run(status: "running", owner: "worker:b", runID: nil, error: nil, leaseUntil: takeover + Self.lease))
        try b.finishRun(id: id, owner: "worker:b", finishedAt: takeover + 2000, runID: "recon-b")
        #expect(try db.run(id) == Run(status: "done", owner: "worker:b", runID: "recon-b", error: nil, leaseUntil: nil))
        #expect(try a.doneRuns([id]) == [id])
    }

    @Test(arguments: StorageBackend.allCases)
    func aDayJudgedAgainIsTakenAtMostOnceAnInterval(backend: StorageBackend) throws {
        let db = try ReconDB(backend)
        let a = db.storage, b = try db.secondStorage()
        let t = Self.day6 + 5 * Self.hour
        let id = "reconcile_again:2026-11-05"
        func ask(_ storage: any ReconciliationStorage, _ owner: String, at now: EpochMillis) throws -> Bool {
            try storage.acquireRun(leaseFor(id, owner: owner, at: now, kind: "reconcile_again"), condition: .lastStartedAtOrBefore(now - Self.hour))
        }
        // Never taken: taken. Done, it stays closed for the interval since it was taken, then opens.
        #expect(try ask(a, "worker:a", at: t))
        #expect(try !ask(b, "worker:b", at: t + 1000))
        try a.finishRun(id: id, owner: "worker:a", finishedAt: t + 5000, runID: "recon-1")
        #expect(try !ask(b, "worker:b", at: t + 30 * Self.minute))
        #expect(try !ask(b, "worker:b", at: t + Self.hour - 1))
        #expect(try ask(b, "worker:b", at: t + Self.hour))
        #expect(try db.run(id)?.owner == "worker:b")
        // A run done is no obstacle to this condition (unlike a nightly job's).
        try b.finishRun(id: id, owner: "worker:b", finishedAt: t + Self.hour + 5000, runID: "recon-2")
        #expect(try ask(a, "worker:a", at: t + 2 * Self.hour))
        #expect(try db.run(id)?.status == "running")
    }

    // MARK: Tickets

    @Test(arguments: StorageBackend.allCases)
    func ticketsAreOpenedKeptResolvedAndReopened(backend: StorageBackend) throws {
        let db = try ReconDB(backend)
        let s = db.storage
        let kinds = ["counter_reset", "silent_device", "implausible_power"]
        let reset = TicketKey(esp32Name: "lab-101", kind: "counter_reset")
        let silent = TicketKey(esp32Name: "lab-102", kind: "silent_device")
        let implausible = TicketKey(esp32Name: "lab-103", kind: "implausible_power")
        // A ticket of a kind the judgement does not judge, and one of another day.
        try db.ledger.openReviewTickets([
            LedgerReviewTicket(esp32Name: "lab-101", date: "2026-11-05", kind: "manual_check", detail: "a person's", createdAt: Self.day5, runID: "p"),
            LedgerReviewTicket(esp32Name: "lab-101", date: "2026-11-04", kind: "counter_reset", detail: "yesterday's", createdAt: Self.day5, runID: "p"),
        ])

        // 1: two new tickets, and a third whose key the ledger inserts while the judgement runs:
        // the ledger's, not this run's (counted not opened, its last_run_id set).
        let t1 = Self.day6 + 2 * Self.hour
        var seen: [TicketKey: StoredTicket] = [:]
        let opened1 = try s.judgeTickets(date: Self.date5, kinds: kinds, runID: "r1", now: t1) { existing in
            seen = existing
            try? db.ledger.openReviewTickets([LedgerReviewTicket(esp32Name: "lab-103", date: "2026-11-05", kind: "implausible_power",
                                                                 detail: "ledger's", createdAt: t1, runID: "ledger")])
            return [.open(reset, detail: "1 counter reset(s)"), .open(silent, detail: "no telemetry all day"),
                    .open(implausible, detail: "1 interval(s) above max_power_w, not billed")]
        }
        #expect(seen.isEmpty)
        #expect(opened1 == 2)
        var tickets = try db.tickets("2026-11-05")
        #expect(tickets["lab-101|counter_reset"] == Ticket(status: "open", detail: "1 counter reset(s)", runID: "r1", lastRunID: "r1"))
        #expect(tickets["lab-102|silent_device"] == Ticket(status: "open", detail: "no telemetry all day", runID: "r1", lastRunID: "r1"))
        #expect(tickets["lab-103|implausible_power"] == Ticket(status: "open", detail: "ledger's", runID: "ledger", lastRunID: "r1"))
        #expect(tickets["lab-101|manual_check"]?.status == "open")
        #expect(try db.tickets("2026-11-04")["lab-101|counter_reset"]?.detail == "yesterday's")

        // 2: the reset found again (detail updated), the silence gone (resolved), the third kept.
        let t2 = t1 + Self.hour
        let opened2 = try s.judgeTickets(date: Self.date5, kinds: kinds, runID: "r2", now: t2) { existing in
            seen = existing
            return [.keep(reset, detail: "2 counter reset(s)", reopen: false), .keep(implausible, detail: "2 interval(s)", reopen: false),
                    .resolve(silent)]
        }
        #expect(opened2 == 0)
        #expect(seen == [reset: StoredTicket(isOpen: true), silent: StoredTicket(isOpen: true), implausible: StoredTicket(isOpen: true)])
        tickets = try db.tickets("2026-11-05")
        #expect(tickets["lab-101|counter_reset"] == Ticket(status: "open", detail: "2 counter reset(s)", runID: "r1", lastRunID: "r2"))
        #expect(tickets["lab-102|silent_device"] == Ticket(status: "resolved", detail: "no telemetry all day", runID: "r1", lastRunID: "r1",
                                                           resolvedRunID: "r2", resolvedAt: t2))

        // 3: the silence back (reopened, its resolution removed), the reset gone (resolved).
        let t3 = t2 + Self.hour
        let opened3 = try s.judgeTickets(date: Self.date5, kinds: kinds, runID: "r3", now: t3) { existing in
            seen = existing
            return [.keep(silent, detail: "no telemetry all day", reopen: true), .resolve(reset)]
        }
        #expect(opened3 == 0)
        #expect(seen[silent] == StoredTicket(isOpen: false))
        tickets = try db.tickets("2026-11-05")
        #expect(tickets["lab-102|silent_device"] == Ticket(status: "open", detail: "no telemetry all day", runID: "r1", lastRunID: "r3",
                                                           reopenedAt: t3))
        #expect(tickets["lab-101|counter_reset"] == Ticket(status: "resolved", detail: "2 counter reset(s)", runID: "r1", lastRunID: "r2",
                                                           resolvedRunID: "r3", resolvedAt: t3))
        // Untouched: the kind not judged, the other day's.
        #expect(tickets["lab-101|manual_check"]?.status == "open")
        #expect(try db.tickets("2026-11-04")["lab-101|counter_reset"]?.status == "open")

        // 4: a retry of a run (same run id) opens nothing twice, and resolving a resolved ticket
        // leaves its resolution as it was.
        let retried = try s.judgeTickets(date: Self.date5, kinds: kinds, runID: "r3", now: t3 + 1000) { _ in
            [.open(silent, detail: "again"), .resolve(reset)]
        }
        #expect(retried == 0)
        tickets = try db.tickets("2026-11-05")
        #expect(tickets["lab-101|counter_reset"]?.resolvedAt == t3)
        #expect(tickets.count == 4)
    }

    @Test(arguments: StorageBackend.allCases)
    func twoJudgementsOfOneDayAtOnceOpenEachTicketOnce(backend: StorageBackend) throws {
        let db = try ReconDB(backend)
        let storages = [db.storage, try db.secondStorage()]
        let keys = (1...10).map { TicketKey(esp32Name: "lab-\(100 + $0)", kind: "silent_device") }
        let opened = Mutex<[Int]>([])
        let failures = Mutex<[String]>([])
        DispatchQueue.concurrentPerform(iterations: 2) { worker in
            do {
                let n = try storages[worker].judgeTickets(date: Self.date5, kinds: ["silent_device"], runID: "run-\(worker)",
                                                           now: Self.day6 + 2 * Self.hour) { existing in
                    keys.map { key in existing[key] != nil ? .keep(key, detail: "no telemetry all day", reopen: false)
                                                           : .open(key, detail: "no telemetry all day") }
                }
                opened.withLock { $0.append(n) }
            } catch {
                failures.withLock { $0.append("\(worker): \(error)") }
            }
        }
        #expect(failures.withLock { $0 }.isEmpty)
        #expect(opened.withLock { $0.reduce(0, +) } == 10, "\(backend): \(opened.withLock { $0 })")
        let tickets = try db.tickets("2026-11-05")
        #expect(tickets.count == 10 && tickets.values.allSatisfy { $0.status == "open" })
    }

    // MARK: Reports

    func record(_ runID: String, date: String, startedAt: EpochMillis, finishedAt: EpochMillis, status: String = "ok",
                aggregatesComputedAt: EpochMillis? = nil, judgedAgain: Bool = false) -> ReconciliationReportRecord {
        let finding = Reconciler.Finding(esp32Name: "lab-101", kind: "aggregate_mismatch", detail: "ledger 1.000 Wh, daily aggregate 0.000 Wh")
        let report = Reconciler.Report(runID: runID, date: date, startedAt: ISO8601.format(startedAt), finishedAt: ISO8601.format(finishedAt),
                                       status: status, devicesChecked: 3, anomalies: status == "ok" ? [] : [finding], missingHeartbeats: ["lab-102"],
                                       aggregateMismatches: status == "ok" ? [] : [finding], ticketsOpened: 1, ticketsResolved: 0,
                                       ticketsStillOpen: 0, dataComplete: judgedAgain, incompleteData: judgedAgain ? nil : "events pending")
        return ReconciliationReportRecord(report: report, startedAt: startedAt, finishedAt: finishedAt, aggregatesComputedAt: aggregatesComputedAt,
                                          judgedAgain: judgedAgain)
    }

    @Test(arguments: StorageBackend.allCases)
    func aReportIsStoredOncePerRunIDAndTheLastJudgementsAreFound(backend: StorageBackend) throws {
        let db = try ReconDB(backend)
        let s = db.storage
        let t = Self.day6 + 2 * Self.hour
        #expect(try s.lastReconciliation() == nil)
        #expect(try s.lastJudgements(from: CivilDate(year: 2026, month: 10, day: 6), before: CivilDate(year: 2026, month: 11, day: 6)).isEmpty)
        #expect(try s.insertReport(record("r1", date: "2026-11-05", startedAt: t, finishedAt: t + 1000, status: "anomalies",
                                          aggregatesComputedAt: t - 10 * Self.minute)))
        // The same run id again (a retry after a lost answer): the first stays.
        #expect(try !s.insertReport(record("r1", date: "2026-11-05", startedAt: t, finishedAt: t + 9000, status: "ok")))
        #expect(try db.reportCount() == 1)
        #expect(try db.report("r1")?.status == "anomalies" && db.report("r1")?.devicesChecked == 3)
        #expect(try s.lastReconciliation().map { [String($0.at), $0.runID] } == [String(t + 1000), "r1"])

        try s.insertReport(record("r2", date: "2026-11-05", startedAt: t + Self.hour, finishedAt: t + Self.hour + 1000, judgedAgain: true))
        try s.insertReport(record("r3", date: "2026-11-03", startedAt: t - 2 * Self.hour, finishedAt: t + 2 * Self.hour,
                                  aggregatesComputedAt: t - 3 * Self.hour))
        try s.insertReport(record("r4", date: "2026-11-06", startedAt: t, finishedAt: t + 1000))
        try s.insertReport(record("r5", date: "2026-10-31", startedAt: t, finishedAt: t + 1000))
        #expect(try db.report("r2")?.judgedAgain == true && db.report("r1")?.judgedAgain == false)
        // The one that finished last, whenever it started.
        #expect(try s.lastReconciliation().map { [String($0.at), $0.runID] } == [String(t + 2 * Self.hour), "r3"])
        // Each date's latest judgement in [from, before): what it saw, nil when it saw none.
        let judged = try s.lastJudgements(from: CivilDate(year: 2026, month: 11, day: 1), before: CivilDate(year: 2026, month: 11, day: 6))
        #expect(judged == [Self.date5: DayJudgement(startedAt: t + Self.hour, aggregatesComputedAt: nil),
                           CivilDate(year: 2026, month: 11, day: 3): DayJudgement(startedAt: t - 2 * Self.hour, aggregatesComputedAt: t - 3 * Self.hour)])
    }

    // MARK: The day's figures

    /// Ledger entries, aggregates, events, presence and dirty days of the 5th (and around it),
    /// written with the other stages' storages. Returns the heartbeat time of lab-101.
    @discardableResult
    func seedDay(_ db: ReconDB) throws -> EpochMillis {
        let d5 = Self.date5, d6 = CivilDate(year: 2026, month: 11, day: 6)
        let superseded = ReconDB.entry("a4", "lab-101", date: d5, start: Self.day5 + 4 * Self.hour, wh: 100)
        try db.writeEntries([
            ReconDB.entry("a1", "lab-101", date: d5, start: Self.day5 + Self.hour, wh: 10),
            ReconDB.entry("a2", "lab-101", date: d5, start: Self.day5 + 2 * Self.hour, wh: 5.5, reasons: [.counterReset]),
            ReconDB.entry("a3", "lab-101", date: d5, start: Self.day5 + 3 * Self.hour, wh: 0, billable: false, reasons: [.glitchSkipped]),
            superseded,
            // The second part of an interval across midnight: its energy counts, its reason was counted by its first part.
            ReconDB.entry("a5", "lab-101", date: d5, start: Self.day5, wh: 2, reasons: [.longGap], part: 1, parts: 2),
            ReconDB.entry("a6", "lab-101", date: d6, start: Self.day6 + Self.hour, wh: 7, reasons: [.counterReset]),
            ReconDB.entry("b1", "lab-102", date: d5, start: Self.day5 + Self.hour, wh: 0, billable: false),
            ReconDB.entry("c1", "lab-103", date: d5, start: Self.day5 + Self.hour, wh: 0, billable: false, reasons: [.implausiblePower, .longGap]),
        ])
        try db.supersede(superseded)
        try db.writeDaily("2026-11-05", "lab-101", energy: 17.5, cost: 0.14, at: Self.day6 + 10 * Self.minute)
        try db.writeDaily("2026-11-05", "lab-103", energy: 0, cost: nil, overlap: 3000, at: Self.day6 + 20 * Self.minute)
        try db.writeDaily("2026-11-04", "lab-101", energy: 1, cost: 0.01, at: Self.day6 + 30 * Self.minute)
        try db.writeDaily("2026-10-31", "lab-101", energy: 1, cost: 0.01, at: Self.day6 + 40 * Self.minute)
        let october = Self.day5 - 16 * 24 * Self.hour
        try db.writeEvents([ReconDB.event("lab-101", deviceTime: Self.day5 + Self.hour, receivedAt: Self.day5 + Self.hour + 1500),
                            ReconDB.event("lab-104", deviceTime: Self.day6 + Self.hour, receivedAt: Self.day6 + Self.hour + 1500),
                            ReconDB.event("lab-105", deviceTime: october, receivedAt: october + 1500)], processed: true)
        try db.writeEvents([ReconDB.event("lab-101", deviceTime: Self.day5 + 2 * Self.hour, receivedAt: Self.day6 + 5 * Self.hour),
                            ReconDB.event("lab-101", deviceTime: Self.day5 + 3 * Self.hour, receivedAt: Self.day6 + 5 * Self.hour),
                            ReconDB.event("lab-102", deviceTime: Self.day5 - Self.hour, receivedAt: Self.day5 - Self.hour + 1500)], processed: false)
        let heartbeat = Self.day6 + 2 * Self.hour - Self.minute
        try db.ingest.writeStatus(StatusChange(esp32Name: "lab-101", classroom: "CSE-301", online: true, at: Self.day5))
        try db.ingest.writeStatus(StatusChange(esp32Name: "lab-102", classroom: "CSE-301", online: false, at: Self.day5))
        try db.ingest.writeStatus(StatusChange(esp32Name: "lab-106", classroom: "CSE-301", online: true, at: Self.day5))
        var beat = PresenceUpdate(esp32Name: "lab-101", classroom: "CSE-301")
        beat.lastHeartbeatAt = heartbeat
        beat.lastSeenAt = heartbeat
        for error in try db.ingest.upsertPresence([beat]) where error != nil { Issue.record("\(db.backend): presence: \(String(describing: error))") }
        return heartbeat
    }

    @Test(arguments: StorageBackend.allCases)
    func theDaysFiguresAreSummedByTheDatabase(backend: StorageBackend) throws {
        let db = try ReconDB(backend)
        let s = db.storage
        #expect(try s.firstReceivedAt() == nil)
        if backend == .postgres {
            // An older month's partition with no rows: the first event is in the next one.
            try db.pool?.withConnection { connection in
                try connection.executeScript("""
                    CREATE TABLE telemetry_events_2026_09 PARTITION OF telemetry_events
                    FOR VALUES FROM ('2026-09-01 00:00:00+00') TO ('2026-10-01 00:00:00+00')
                    """)
            }
        }
        let heartbeat = try seedDay(db)

        #expect(try s.ledgerFigures(of: Self.date5) == [
            "lab-101": LedgerDayFigures(billableWh: 17.5, resets: 1, glitches: 1),
            "lab-103": LedgerDayFigures(billableWh: 0, implausible: 1, longGaps: 1),
        ])
        #expect(try s.dayAggregates(of: Self.date5) == DayAggregates(byDevice: [
            "lab-101": DayAggregate(energyWh: 17.5, cost: 0.14, overlapMillis: 0, computedAt: Self.day6 + 10 * Self.minute),
            "lab-103": DayAggregate(energyWh: 0, cost: nil, overlapMillis: 3000, computedAt: Self.day6 + 20 * Self.minute),
        ], newestComputedAt: Self.day6 + 20 * Self.minute))
        #expect(try s.dayAggregates(of: CivilDate(year: 2026, month: 11, day: 7)) == DayAggregates())
        #expect(try s.newestAggregates(from: CivilDate(year: 2026, month: 11, day: 1), before: CivilDate(year: 2026, month: 11, day: 6)) == [
            Self.date5: Self.day6 + 20 * Self.minute, CivilDate(year: 2026, month: 11, day: 4): Self.day6 + 30 * Self.minute,
        ])
        #expect(try s.unprocessedEventCounts(from: Self.day5, to: Self.day6) == ["lab-101": 2])
        #expect(try s.devicesWithoutEvents(["lab-101", "lab-102", "lab-103"], from: Self.day5, to: Self.day6) == ["lab-102", "lab-103"])
        #expect(try s.devicesWithoutEvents([], from: Self.day5, to: Self.day6).isEmpty)
        #expect(try s.hasUnprocessedEvents(before: Self.day5))
        #expect(try !s.hasUnprocessedEvents(before: Self.day5 - Self.hour))
        #expect(try s.presence() == [
            "lab-101": DevicePresence(online: true, lastHeartbeatAt: heartbeat),
            "lab-102": DevicePresence(online: false, lastHeartbeatAt: nil),
            "lab-106": DevicePresence(online: true, lastHeartbeatAt: nil),
        ])
        #expect(try s.firstReceivedAt() == Self.day5 - 16 * 24 * Self.hour + 1500)

        #expect(try !s.hasDirtyDays(upTo: Self.date5))
        try db.ledger.markDirtyDays([LedgerDirtyDay(esp32Name: "lab-101", date: "2026-11-06", classroom: "CSE-301")], at: Self.day6)
        #expect(try !s.hasDirtyDays(upTo: Self.date5))
        try db.ledger.markDirtyDays([LedgerDirtyDay(esp32Name: "lab-101", date: "2026-11-05", classroom: "CSE-301")], at: Self.day6)
        #expect(try s.hasDirtyDays(upTo: Self.date5))
    }

    // MARK: Through the logic

    static let registry = DeviceRegistry(devices: [DeviceInfo(esp32Name: "lab-101", classroom: "CSE-301"),
                                                   DeviceInfo(esp32Name: "lab-102", classroom: "CSE-301"),
                                                   DeviceInfo(esp32Name: "lab-103", classroom: "CSE-301")])

    @Test(arguments: StorageBackend.allCases)
    func theReconcilerJudgesADayAlikeOnEitherBackend(backend: StorageBackend) throws {
        let db = try ReconDB(backend)
        try seedDay(db)
        // The ledger met an implausible interval of lab-103 and opened its ticket already.
        try db.ledger.openReviewTickets([LedgerReviewTicket(esp32Name: "lab-103", date: "2026-11-05", kind: "implausible_power",
                                                            detail: "from the ledger", createdAt: Self.day6, runID: "ledger")])
        let reconciler = Reconciler(storage: db.storage, registry: Self.registry, timeZone: Self.zone, logger: Logger(label: "test"))
        let now = Self.day6 + 2 * Self.hour
        #expect(try reconciler.pendingInDatabase(Self.date5) == ["events of 2026-11-05 or before not yet in the ledger"])
        let first = try reconciler.run(date: Self.date5, now: now)
        let expected: Set<String> = [
            "lab-101 unprocessed_events: 2 events of the day are not in the ledger", "lab-101 counter_reset: 1 counter reset(s)",
            "lab-101 glitch: 1 glitch reading(s) skipped", "lab-102 silent_device: no telemetry all day",
            "lab-103 ledger_overlap: live ledger entries overlap for 3.0 s; run rebuild-ledger for the device",
            "lab-103 implausible_power: 1 interval(s) above max_power_w, not billed", "lab-103 long_gap: 1 gap(s) longer than an hour",
            "lab-103 silent_device: no telemetry all day",
        ]
        #expect(Set(first.anomalies.map { "\($0.esp32Name) \($0.kind): \($0.detail)" }) == expected)
        #expect(first.devicesChecked == 3 && first.status == "anomalies" && first.missingHeartbeats.isEmpty)
        #expect(first.ticketsOpened == 7 && first.ticketsStillOpen == 1 && first.ticketsResolved == 0)
        #expect(try db.report(first.runID)?.status == "anomalies")

        // The backlog worked off: its finding goes, its ticket is resolved; the rest stay.
        let pending = [ReconDB.event("lab-101", deviceTime: Self.day5 + 2 * Self.hour, receivedAt: Self.day6 + 5 * Self.hour),
                       ReconDB.event("lab-101", deviceTime: Self.day5 + 3 * Self.hour, receivedAt: Self.day6 + 5 * Self.hour),
                       ReconDB.event("lab-102", deviceTime: Self.day5 - Self.hour, receivedAt: Self.day5 - Self.hour + 1500)]
        try db.markProcessed(pending)
        #expect(try reconciler.pendingInDatabase(Self.date5).isEmpty)
        let again = try reconciler.run(date: Self.date5, now: now + Self.hour, judgement: .again)
        #expect(again.anomalies.count == 7)
        #expect(again.ticketsOpened == 0 && again.ticketsStillOpen == 7 && again.ticketsResolved == 1)
        let tickets = try db.tickets("2026-11-05")
        #expect(tickets["lab-101|unprocessed_events"]?.status == "resolved" && tickets["lab-101|unprocessed_events"]?.resolvedRunID == again.runID)
        #expect(tickets["lab-103|implausible_power"] == Ticket(status: "open", detail: "1 interval(s) above max_power_w, not billed",
                                                               runID: "ledger", lastRunID: again.runID))
        #expect(try Reconciler.lastReconciliation(db.storage)?.runID == again.runID)
        #expect(try db.report(again.runID)?.judgedAgain == true)
        let judged = try db.storage.lastJudgements(from: Self.date5, before: CivilDate(year: 2026, month: 11, day: 6))
        #expect(judged[Self.date5] == DayJudgement(startedAt: now + Self.hour, aggregatesComputedAt: Self.day6 + 20 * Self.minute))
    }

    @Test(arguments: StorageBackend.allCases)
    func aNightOfTheSchedulerRunsEachJobOnceAcrossTwoWorkers(backend: StorageBackend) throws {
        let db = try ReconDB(backend)
        let second = try db.secondStorage()
        let registry = DeviceRegistry(devices: [DeviceInfo(esp32Name: "lab-101", classroom: "CSE-301")])
        try db.writeEntries([ReconDB.entry("n1", "lab-101", date: Self.date5, start: Self.day5 + Self.hour, wh: 12)])
        try db.writeEvents([ReconDB.event("lab-101", deviceTime: Self.day5 + Self.hour, receivedAt: Self.day5 + Self.hour + 1500)], processed: true)
        let logger = Logger(label: "test")
        func scheduler(_ storage: any ReconciliationStorage, _ owner: String) -> Scheduler {
            Scheduler(storage: storage, schedule: Schedule(reconcileAt: (2, 0), lookbackDays: 1), timeZone: Self.zone, owner: owner,
                      aggregation: AggregationStore(storage: db.aggregation, registry: registry, timeZone: Self.zone, logger: logger),
                      reconciler: Reconciler(storage: storage, registry: registry, timeZone: Self.zone, logger: logger),
                      logger: logger, listeningSince: Self.day6 - Self.hour)
        }
        let a = scheduler(db.storage, "worker:a"), b = scheduler(second, "worker:b")
        #expect(try a.tick(now: Self.day6 + 6 * Self.minute).map(\.id) == ["day_close:2026-11-05"])
        #expect(try b.tick(now: Self.day6 + 7 * Self.minute).isEmpty)
        #expect(try b.tick(now: Self.day6 + 2 * Self.hour + 1000).map(\.id) == ["reconcile:2026-11-05"])
        #expect(try a.tick(now: Self.day6 + 2 * Self.hour + 2000).isEmpty)
        let reconcile = try #require(try db.run("reconcile:2026-11-05"))
        #expect(reconcile.status == "done" && reconcile.owner == "worker:b" && reconcile.leaseUntil == nil)
        let runID = try #require(reconcile.runID)
        #expect(try Reconciler.lastReconciliation(db.storage)?.runID == runID)
        // The day was closed before it was judged: ledger and aggregate agree; no tariff is in force.
        let tickets = try db.tickets("2026-11-05")
        #expect(Set(tickets.keys) == ["lab-101|no_tariff"])
        // Nothing changed since: nothing is judged again.
        #expect(try a.rejudgeChangedDays(now: Self.day6 + 4 * Self.hour).isEmpty)
    }
}
