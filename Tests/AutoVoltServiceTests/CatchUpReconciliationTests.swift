import AutoVoltCore
import AutoVoltMongo
import AutoVoltTestSupport
import Foundation
import Testing

/// A worker that comes back in the morning with the night's backlog queued in the broker judges
/// yesterday only once that backlog is stored and in the ledger (issue 20 §1): before, its
/// catch-up reconciliation ran a second after start and opened `unprocessed_events` and
/// `silent_device` tickets for boards whose whole day was then stored.
@Suite("integration: the catch-up reconciliation waits for the backlog", .serialized)
struct CatchUpReconciliationTests {
    @Test func aMorningBacklogIsJudgedOnceItIsIn() throws {
        let rig = try Rig()
        let boards = (1...16).map { "night-\($0)" }
        let registry = FileManager.default.temporaryDirectory.appendingPathComponent("catchup-\(UUID().uuidString).toml")
        let tables: [String] = boards.map { board in "[[device]]\nesp32_name = \"\(board)\"\nclassroom = \"R-\(board.suffix(1))\"\n" }
        try tables.joined(separator: "\n").write(to: registry, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: registry) }
        // Yesterday, local: the job is due at 00:00 today, whenever the test runs.
        let zone = try #require(TimeZone(identifier: "Asia/Kolkata"))
        var calendar = LocalCalendar(timeZone: zone)
        let today = calendar.date(of: EpochMillis(Date().timeIntervalSince1970 * 1000))
        let yesterday = CivilDate(daysSinceEpoch: today.daysSinceEpoch - 1)
        let start = Int(calendar.startOfDay(yesterday) / 1000)
        let extra = ["AUTOVOLT_DEVICES": registry.path, "AUTOVOLT_RECONCILE_AT": "00:00", "AUTOVOLT_TIMEZONE": "Asia/Kolkata"]

        // The worker has run before (its session exists, and the database has older readings, so
        // a catch-up is due), then stops for the night.
        let first = try rig.startWorker(extra: extra)
        #expect(first.stop() == 0)
        let before: BSON = .datetime(Date(timeIntervalSince1970: TimeInterval(start - 86_400)))
        var older: BSONDocument = ["_id": "older", "event_hash": "older", "esp32_name": "older-board", "classroom": "unassigned"]
        older["device_ts"] = before
        older["received_at"] = before
        older["energy_wh_total"] = 1.0
        older["switch_state"] = [1]
        older["clock"] = "device"
        older["processed"] = true
        _ = try rig.client.insertMany([older], into: "telemetry_events", ordered: true, writeConcern: .acknowledged)

        // The night: 16 boards every two minutes from 01:00 to 21:00, queued by the broker.
        var messages: [(topic: String, payload: String)] = []
        for minute in stride(from: 60, to: 21 * 60, by: 2) {
            for (index, board) in boards.enumerated() {
                let energy = 1000 + index * 10 + minute
                messages.append(("autovolt/\(board)/telemetry",
                                 #"{"timestamp":\#(start + minute * 60),"energy_wh_total":\#(energy),"switch_state":[1]}"#))
            }
        }
        try rig.publisher().publish(messages)

        // The morning: the worker comes back and catches up on yesterday.
        let worker = try rig.startWorker(extra: extra)
        let filter: BSONDocument = ["date": .string(yesterday.description)]
        #expect(eventually(timeout: 120) { rig.count("reconciliation_reports", filter) >= 1 }, "no report:\n\(worker.log)")
        let report = try #require(try rig.client.findOne("reconciliation_reports", filter: filter))
        #expect(rig.count("telemetry_events", ["esp32_name": ["$in": .array(boards.map { .string($0) })]]) == messages.count)
        #expect(report["data_complete"]?.boolValue == true, "\(report)")
        let findings = (report["anomalies"]?.arrayValue ?? []).compactMap { $0.documentValue?["kind"]?.stringValue }
        #expect(!findings.contains("unprocessed_events") && !findings.contains("silent_device"), "\(findings)")
        #expect(rig.count("review_tickets", ["date": .string(yesterday.description), "kind": ["$in": ["unprocessed_events", "silent_device"]]]) == 0)
        #expect(worker.log.contains("waits for the day's data"), "the catch-up should have waited:\n\(worker.log)")
    }
}
