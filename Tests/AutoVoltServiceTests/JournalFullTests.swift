import AutoVoltMongo
import AutoVoltTestSupport
import Foundation
import Testing

// In the serialized integration suite: each of these blocks a thread of the 2-core cooperative
// pool while it waits, and running them beside the other suites starved the HTTP timing tests.
extension IntegrationTests {
    /// The database is away and the journal (1 MiB, the smallest allowed) fills up: the worker
    /// stops taking messages, the broker holds the rest for its session, and once the database is
    /// back every message arrives exactly once.
    @Test func aFullJournalHoldsTheRestAtTheBrokerAndEverythingArrivesOnce() throws {
        let rig = try Rig()
        rig.mongo.kill()
        let worker = try rig.startWorker(extra: ["AUTOVOLT_JOURNAL_MAX_BYTES": "1MiB"])
        // 2 KB a message: 1 MiB takes about 500; few messages keep the load on the machine low.
        let total = 1200
        let note = String(repeating: "n", count: 2000)
        let messages = (0..<total).map { i -> (topic: String, payload: String) in
            let r = reading("lab-10\(i % 5)", i)
            return (r.topic, String(r.payload.dropLast()) + #","note":"\#(note)"}"#)
        }
        try rig.publisher().publish(messages, timeout: 120)
        #expect(eventually(timeout: 60) { worker.log.contains("JOURNAL FULL") }, "\(worker.log.suffix(2000))")
        // Full: what is not in the journal is still at the broker, not acknowledged by the worker.
        #expect(worker.isRunning)
        try rig.mongo.restart()
        #expect(rig.waitForCount("telemetry_events", total, timeout: 120),
                "stored \(rig.count("telemetry_events")) of \(total)\n\(worker.log.suffix(2000))")
        // Once a sentinel published after everything is stored, no redelivery is still on its way.
        try rig.publisher().publish([reading("lab-109", total)])
        #expect(rig.waitForCount("telemetry_events", 1, filter: ["esp32_name": "lab-109"]))
        #expect(rig.count("telemetry_events") == total + 1)
        let distinct = try rig.client.aggregate("telemetry_events", pipeline: [["$group": ["_id": "$event_hash"]]]).count
        #expect(distinct == total + 1)
        #expect(rig.count("rejected_messages") == 0)
    }
}
