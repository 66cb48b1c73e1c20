import AutoVoltCore
import AutoVoltMongo
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Testing

/// Review tickets follow the data (issue 20 §1): a reconciliation resolves the tickets of its day
/// whose finding no longer holds, waits for the day's data before judging it, and judges a day
/// again when its data changed after the judgement.
@Suite("integration: reconciliation tickets follow the data", .serialized)
struct ReconciliationTicketTests {
    let day = CivilDate("2026-11-05")!
    let day6 = day5 + 24 * oneHour

    func reconciler(_ rig: AccountingRig) -> Reconciler {
        Reconciler(client: rig.client, registry: rig.registry, timeZone: rig.zone, writeConcern: .acknowledged, logger: rig.logger)
    }

    func scheduler(_ rig: AccountingRig, owner: String = "a", intake: DataReadiness = .complete,
                   maxWait: EpochMillis = 20 * 60_000) -> Scheduler {
        Scheduler(client: rig.client, schedule: Schedule(reconcileAt: (2, 0), lookbackDays: 1), timeZone: rig.zone, owner: owner,
                  aggregation: rig.aggregation, reconciler: reconciler(rig), writeConcern: .acknowledged, logger: rig.logger,
                  listeningSince: day6, intakeReadiness: { intake }, maxJudgementWait: maxWait)
    }

    func ticket(_ rig: AccountingRig, _ device: String, _ kind: String) throws -> BSONDocument? {
        try rig.client.findOne(Collections.reviewTickets, filter: ["esp32_name": .string(device), "date": "2026-11-05", "kind": .string(kind)])
    }

    /// lab-201's readings of the 5th arrive after a first judgement said it was silent.
    func lateDay(_ rig: AccountingRig, now: EpochMillis) throws {
        try rig.ingest("lab-201", [(day5 + 9 * oneHour, 100), (day5 + 10 * oneHour, 180)], now: now)
    }

    @Test func aTicketWhoseFindingNoLongerHoldsIsResolvedAndOneFoundAgainStaysOrReopens() throws {
        let rig = try AccountingRig()
        _ = try rig.aggregation.addTariff(costPerKwh: 8, currency: "INR", effectiveFrom: 0, classroom: nil, notes: nil, now: day5)
        // lab-101: a counter reset (stays a finding); lab-201: nothing yet (silent).
        try rig.ingest("lab-101", [(day5 + oneHour, 5000), (day5 + oneHour + 30_000, 5001), (day5 + oneHour + 60_000, 3),
                                   (day5 + oneHour + 90_000, 4)], now: later)
        try rig.ingest("lab-102", [(day5 + oneHour, 100), (day5 + 2 * oneHour, 150)], now: later)
        let first = try reconciler(rig).run(date: day, now: later)
        #expect(first.ticketsOpened == first.anomalies.count)
        #expect(try ticket(rig, "lab-201", "silent_device")?["status"]?.stringValue == "open")
        #expect(try ticket(rig, "lab-101", "counter_reset")?["status"]?.stringValue == "open")

        try lateDay(rig, now: later + oneHour)
        let second = try reconciler(rig).run(date: day, now: later + oneHour)
        let silent = try #require(try ticket(rig, "lab-201", "silent_device"))
        #expect(silent["status"]?.stringValue == "resolved")
        #expect(silent["resolved_run_id"]?.stringValue == second.runID)
        #expect(silent["resolved_at"]?.dateValue.map(LedgerStore.millis) == later + oneHour)
        #expect(second.ticketsResolved == 1 && second.ticketsOpened == 0)
        #expect(try ticket(rig, "lab-101", "counter_reset")?["status"]?.stringValue == "open")
        #expect(second.ticketsStillOpen == second.anomalies.count)
        // Every open ticket of the day is a finding of the last run, and every finding has one.
        let open = try rig.client.find(Collections.reviewTickets, filter: ["date": "2026-11-05", "status": "open"])
            .map { "\($0["esp32_name"]?.stringValue ?? ""):\($0["kind"]?.stringValue ?? "")" }
        #expect(Set(open) == Set(second.anomalies.map { "\($0.esp32Name):\($0.kind)" }))
        // The dashboard counts what is open, grouped by the database.
        let shown = try DashboardData.OpenTickets.load(client: rig.client) { rig.registry.resolve($0).classroom }
        #expect(shown.total == open.count)
        #expect(shown.groups.map(\.kind) == ["counter_reset"] && shown.groups.first?.boards.map(\.esp32Name) == ["lab-101"])
        #expect(shown.byClassroom == ["CSE-301": 1])

        // A finding that comes back reopens its ticket (one document per device, kind and day).
        _ = try rig.client.updateOne(Collections.dailyAggregates, filter: ["_id": "2026-11-05|lab-102"],
                                     update: ["$set": ["energy_wh": 999.0]], upsert: false, writeConcern: .acknowledged)
        _ = try reconciler(rig).run(date: day, now: later + 2 * oneHour)
        #expect(try ticket(rig, "lab-102", "aggregate_mismatch")?["status"]?.stringValue == "open")
        _ = try rig.aggregation.recalculate(start: day, end: day, classroom: nil, esp32Name: "lab-102", now: later + 3 * oneHour)
        _ = try reconciler(rig).run(date: day, now: later + 3 * oneHour)
        #expect(try ticket(rig, "lab-102", "aggregate_mismatch")?["status"]?.stringValue == "resolved")
        _ = try rig.client.updateOne(Collections.dailyAggregates, filter: ["_id": "2026-11-05|lab-102"],
                                     update: ["$set": ["energy_wh": 998.0]], upsert: false, writeConcern: .acknowledged)
        let reopened = try reconciler(rig).run(date: day, now: later + 4 * oneHour)
        let mismatch = try #require(try ticket(rig, "lab-102", "aggregate_mismatch"))
        #expect(mismatch["status"]?.stringValue == "open")
        #expect(mismatch["resolved_at"] == nil)
        #expect(mismatch["reopened_at"]?.dateValue.map(LedgerStore.millis) == later + 4 * oneHour)
        #expect(mismatch["last_run_id"]?.stringValue == reopened.runID)
        #expect(rig.count(Collections.reviewTickets, ["esp32_name": "lab-102", "kind": "aggregate_mismatch"]) == 1)
    }

    @Test func aTicketOfAnotherKindIsNotTheReconciliationsToClose() throws {
        let rig = try AccountingRig()
        _ = try rig.client.insertMany([["esp32_name": "lab-101", "date": "2026-11-05", "kind": "operator_note", "detail": "meter swapped",
                                        "status": "open", "created_at": .millis(later), "run_id": "person"]],
                                      into: Collections.reviewTickets, ordered: true, writeConcern: .acknowledged)
        _ = try reconciler(rig).run(date: day, now: later)
        #expect(try ticket(rig, "lab-101", "operator_note")?["status"]?.stringValue == "open")
    }

    @Test func theNightlyRunWaitsForTheDaysDataThenJudgesIt() throws {
        let rig = try AccountingRig()
        // The night's backlog: lab-101's readings of the 5th are stored but not yet in the ledger.
        let docs: [BSONDocument] = [(day5 + oneHour, 100.0), (day5 + 2 * oneHour, 150.0)].map { r in
            ["_id": .string("lab-101@\(r.0)"), "event_hash": .string(EventHash.compute(esp32Name: "lab-101", timestampAsSent: String(r.0), energyWhTotal: r.1)),
             "esp32_name": "lab-101", "classroom": "CSE-301", "device_ts": .millis(r.0), "received_at": .millis(day6 + oneHour),
             "energy_wh_total": .double(r.1), "switch_state": [1], "clock": "device", "processed": false]
        }
        _ = try rig.client.insertMany(docs, into: Collections.telemetryEvents, ordered: true, writeConcern: .acknowledged)
        let s = scheduler(rig)
        let dueAt = day6 + 2 * oneHour
        // The close runs; the reconciliation waits while the ledger has the day's events to take.
        #expect(try s.tick(now: dueAt + 1000).map(\.id) == ["day_close:2026-11-05"])
        #expect(s.isWaitingForData)
        #expect(rig.count(Collections.reconciliationReports) == 0)
        try rig.ledger.advance("lab-101", now: dueAt + 60_000)
        _ = try rig.aggregation.processDirtyDays(now: dueAt + 60_000)
        #expect(try s.tick(now: dueAt + 61_000).map(\.id) == ["reconcile:2026-11-05"])
        #expect(!s.isWaitingForData)
        let report = try #require(try rig.client.findOne(Collections.reconciliationReports, filter: ["date": "2026-11-05"]))
        #expect(report["data_complete"]?.boolValue == true)
        #expect(try ticket(rig, "lab-101", "unprocessed_events") == nil)
        #expect(try ticket(rig, "lab-101", "silent_device") == nil)
    }

    @Test func aWorkerStillReceivingWaitsAndAStuckStageIsWaitedForAtMostTheBound() throws {
        let rig = try AccountingRig()
        try rig.ingest("lab-101", [(day5 + oneHour, 100), (day5 + 2 * oneHour, 150)], now: day6 + oneHour)
        let busy = DataReadiness(pending: ["40 messages in the journal not yet stored"])
        let s = scheduler(rig, intake: busy, maxWait: 10 * 60_000)
        let dueAt = day6 + 2 * oneHour
        _ = try s.tick(now: dueAt + 1000)
        #expect(try s.tick(now: dueAt + 5 * 60_000).isEmpty)
        #expect(rig.count(Collections.reconciliationReports) == 0)
        // Past the bound it judges what it has, and says so.
        #expect(try s.tick(now: dueAt + 11 * 60_000).map(\.id) == ["reconcile:2026-11-05"])
        let report = try #require(try rig.client.findOne(Collections.reconciliationReports, filter: ["date": "2026-11-05"]))
        #expect(report["data_complete"]?.boolValue == false)
        #expect(report["incomplete_data"]?.stringValue == "40 messages in the journal not yet stored")
    }

    @Test func aDayWhoseDataChangedAfterItsJudgementIsJudgedAgainAtMostHourly() throws {
        let rig = try AccountingRig()
        try rig.ingest("lab-101", [(day5 + oneHour, 100), (day5 + 2 * oneHour, 150)], now: day6 + oneHour)
        try rig.ingest("lab-102", [(day5 + oneHour, 100), (day5 + 2 * oneHour, 150)], now: day6 + oneHour)
        let a = scheduler(rig, owner: "a"), b = scheduler(rig, owner: "b")
        let dueAt = day6 + 2 * oneHour
        _ = try a.tick(now: dueAt + 1000)
        #expect(try ticket(rig, "lab-201", "silent_device")?["status"]?.stringValue == "open")
        // Nothing changed: nothing judged again.
        #expect(try a.rejudgeChangedDays(now: dueAt + 2 * oneHour).isEmpty)
        // lab-201's offline queue arrives half an hour after the judgement.
        try lateDay(rig, now: dueAt + 30 * 60_000)
        // Within the hour after the judgement: not yet.
        #expect(try a.rejudgeChangedDays(now: dueAt + 50 * 60_000).isEmpty)
        // After it, once across the two workers.
        #expect(try a.rejudgeChangedDays(now: dueAt + 3 * oneHour) == [day])
        #expect(try b.rejudgeChangedDays(now: dueAt + 3 * oneHour + 1000).isEmpty)
        #expect(try ticket(rig, "lab-201", "silent_device")?["status"]?.stringValue == "resolved")
        #expect(rig.count(Collections.reconciliationReports, ["date": "2026-11-05"]) == 2)
        // Judged since the last change: not again.
        #expect(try b.rejudgeChangedDays(now: dueAt + 5 * oneHour).isEmpty)
    }

    /// The lease alone keeps two workers from judging a day again at once (one holds it) or
    /// twice within the hour (across the hour's turn).
    @Test func aDayIsJudgedAgainByOneWorkerAtATimeAndAtMostHourlyAcrossWorkers() throws {
        let rig = try AccountingRig()
        try rig.ingest("lab-101", [(day5 + oneHour, 100), (day5 + 2 * oneHour, 150)], now: day6 + oneHour)
        let dueAt = day6 + 2 * oneHour
        _ = try scheduler(rig, owner: "a").tick(now: dueAt + 1000)
        try lateDay(rig, now: dueAt + 30 * 60_000)
        let id: BSON = "reconcile_again:2026-11-05"
        // Another worker is judging it right now.
        _ = try rig.client.insertMany([["_id": id, "kind": "reconcile_again", "status": "running", "owner": "other",
                                        "started_at": .millis(dueAt + 150 * 60_000), "lease_until": .millis(dueAt + 165 * 60_000)]],
                                      into: Scheduler.runsCollection, ordered: true, writeConcern: .acknowledged)
        #expect(try scheduler(rig, owner: "a").rejudgeChangedDays(now: dueAt + 155 * 60_000).isEmpty)
        // Its lease has passed but it started less than an hour ago (its report not written yet).
        #expect(try scheduler(rig, owner: "b").rejudgeChangedDays(now: dueAt + 170 * 60_000).isEmpty)
        #expect(rig.count(Collections.reconciliationReports, ["date": "2026-11-05"]) == 1)
        // An hour after it started: this worker judges it.
        #expect(try scheduler(rig, owner: "b").rejudgeChangedDays(now: dueAt + 211 * 60_000) == [day])
        #expect(rig.count(Collections.reconciliationReports, ["date": "2026-11-05"]) == 2)
    }

    /// Judged again for late data, a day keeps what is about the moment of its first judgement
    /// (a board online without a heartbeat then), and a board silent that day is not newly
    /// reported (it may be one registered since).
    @Test func aJudgementMadeAgainLeavesMomentFindingsAndDoesNotReportNewSilence() throws {
        let rig = try AccountingRig()
        _ = try rig.aggregation.addTariff(costPerKwh: 8, currency: "INR", effectiveFrom: 0, classroom: nil, notes: nil, now: day5)
        try rig.ingest("lab-101", [(day5 + oneHour, 100), (day5 + 2 * oneHour, 150)], now: day6 + oneHour)
        try rig.ingest("lab-201", [(day5 + oneHour, 100), (day5 + 2 * oneHour, 150)], now: day6 + oneHour)
        _ = try rig.client.updateOne(Collections.deviceStatus, filter: ["_id": "lab-101"],
                                     update: ["$set": ["esp32_name": "lab-101", "online": true]], upsert: true, writeConcern: .acknowledged)
        let first = try reconciler(rig).run(date: day, now: day6 + 2 * oneHour)
        #expect(Set(first.anomalies.map { "\($0.esp32Name):\($0.kind)" }) == ["lab-101:missing_heartbeat", "lab-102:silent_device"])
        // The next morning lab-101 beats; late readings change the 5th; a board joins the registry.
        _ = try rig.client.updateOne(Collections.deviceStatus, filter: ["_id": "lab-101"],
                                     update: ["$set": ["last_heartbeat_at": .millis(day6 + 26 * oneHour)]], upsert: false, writeConcern: .acknowledged)
        try rig.ingest("lab-201", [(day5 + 3 * oneHour, 190)], now: day6 + 26 * oneHour)
        let joined = DeviceRegistry(devices: Array(rig.registry.devices.values) + [DeviceInfo(esp32Name: "lab-301", classroom: "EEE-105")])
        let again = try Reconciler(client: rig.client, registry: joined, timeZone: rig.zone, writeConcern: .acknowledged, logger: rig.logger)
            .run(date: day, now: day6 + 26 * oneHour, judgement: .again)
        #expect(Set(again.anomalies.map { "\($0.esp32Name):\($0.kind)" }) == ["lab-102:silent_device"])
        #expect(try ticket(rig, "lab-101", "missing_heartbeat")?["status"]?.stringValue == "open")
        #expect(try ticket(rig, "lab-102", "silent_device")?["status"]?.stringValue == "open")
        #expect(try ticket(rig, "lab-301", "silent_device") == nil)
        #expect(again.ticketsOpened == 0 && again.ticketsResolved == 0)
    }

    /// A day whose ledger changed but whose aggregates wait to be computed again is not judged
    /// yet: the ledger and the old aggregates would disagree (a false aggregate_mismatch).
    @Test func theNightlyRunWaitsForTheDaysAggregatesToo() throws {
        let rig = try AccountingRig()
        try rig.ingest("lab-101", [(day5 + oneHour, 100), (day5 + 2 * oneHour, 150)], now: day6 + oneHour)
        _ = try rig.client.insertMany([["_id": "lab-101|2026-11-05", "esp32_name": "lab-101", "date": "2026-11-05", "classroom": "CSE-301",
                                        "dirty_at": .millis(day6 + oneHour)]],
                                      into: LedgerStore.dirtyDaysCollection, ordered: true, writeConcern: .acknowledged)
        let s = scheduler(rig)
        let dueAt = day6 + 2 * oneHour
        #expect(!(try s.tick(now: dueAt + 1000).map(\.id).contains("reconcile:2026-11-05")))
        #expect(s.isWaitingForData)
        _ = try rig.aggregation.processDirtyDays(now: dueAt + 2000)
        #expect(try s.tick(now: dueAt + 3000).map(\.id) == ["reconcile:2026-11-05"])
    }
}
