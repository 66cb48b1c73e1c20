import AutoVoltMongo
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing

/// Issue 9, section 1: one bad message never stops the others, and a valid one is never lost.
@Suite("integration: hostile input and refused documents", .serialized)
struct HostileInputTests {
    /// Valid readings whose unknown keys hold NUL, `$` or `.`, deep nesting, huge numbers and
    /// invalid UTF-8, mixed with ordinary ones: every message ends up as an event or a rejected
    /// message, the valid ones are all events, and the reading published last is stored.
    @Test func aFloodOfHostilePayloadsStopsNothing() throws {
        let rig = try Rig()
        try rig.startWorker(extra: ["AUTOVOLT_BATCH_SIZE": "50"])
        let publisher = try rig.publisher()
        let device = "lab-101"
        let topic = "autovolt/\(device)/telemetry"
        func valid(_ i: Int, _ extra: String) -> [UInt8] {
            Array(#"{"timestamp":\#(baseTime + i),"energy_wh_total":\#(1000 + i),"switch_state":[1],"extra":\#(extra)}"#.utf8)
        }
        let deep = String(repeating: "[", count: 25) + String(repeating: "]", count: 25)
        let hostileExtras = [
            #"{"\u0000": 2}"#, #"{"$where": "x"}"#, #"{"a.b": {"$gt": 1}}"#, #"{"%00": 1, "\u0000": 2}"#,
            deep, "1" + String(repeating: "9", count: 400), "1e308", #"{"":{"$":{".":null}}}"#, #"{"k": "a\u0000b"}"#,
        ]
        var messages: [(topic: String, payload: [UInt8])] = []
        var validCount = 0
        var i = 0
        for round in 0..<20 {
            for extra in hostileExtras {
                messages.append((topic, valid(i, extra))); i += 1; validCount += 1
            }
            messages.append((topic, valid(i, "1"))); i += 1; validCount += 1
            // Rejected by the decoder, each for its own reason.
            messages.append((topic, Array(#"{"energy_wh_total":5,"n":\#(round),"switch_state":{"$x":true}}"#.utf8)))
            messages.append((topic, [0x7B, 0xFF, 0xFE, 0x7D, UInt8(round)]))
            messages.append((topic, Array(#"{"energy_wh_total":1e400,"switch_state":[1],"n":\#(round)}"#.utf8)))
            messages.append((topic, Array((String(repeating: "[", count: 40) + "\(round)").utf8)))
        }
        let last = baseTime + i
        messages.append((topic, valid(i, #"{"last": true}"#))); validCount += 1
        try publisher.publishBytes(messages)

        let events = Collections.telemetryEvents
        #expect(rig.waitForCount(events, 1, filter: ["device_ts": .datetime(Date(timeIntervalSince1970: Double(last)))], timeout: 30),
                "the last valid reading was not stored")
        #expect(rig.waitForCount(events, validCount, timeout: 30))
        #expect(rig.waitForCount("rejected_messages", messages.count - validCount, timeout: 30))
        #expect(rig.count(events) == validCount)
        #expect(rig.count("rejected_messages") == messages.count - validCount)
        let refused = (try? rig.client.find("rejected_messages", filter: ["reason": "store_refused"], limit: 3)) ?? []
        #expect(refused.isEmpty, "\(refused.map { "\($0["payload"]?.stringValue ?? "") -> \($0["detail"]?.stringValue ?? "")" })")
        let nul = try rig.client.findOne(events, filter: ["device_ts": .datetime(Date(timeIntervalSince1970: Double(baseTime)))])
        #expect(nul?["extra"]?.documentValue?["extra"]?.documentValue?.keys == ["%00"])
        let dollar = try rig.client.findOne(events, filter: ["device_ts": .datetime(Date(timeIntervalSince1970: Double(baseTime + 1)))])
        #expect(dollar?["extra"]?.documentValue?["extra"]?.documentValue?.keys == ["%24where"])
    }

    /// A document the database refuses for good is set aside as store_refused with its whole
    /// payload; the rest of the batch and everything after it is stored; `requeue` stores it
    /// once the cause is fixed, and a second requeue finds nothing.
    @Test func aRefusedDocumentIsKeptWholeAndRequeued() throws {
        let rig = try Rig()
        _ = try rig.client.runCommand(["devMongoRefuse": .array([.string("telemetry_events:esp32_name=lab-102")])])
        let port = freeTCPPort()
        try rig.startWorker(extra: ["AUTOVOLT_HTTP_ADDR": "127.0.0.1:\(port)"])
        let publisher = try rig.publisher()
        let padding = String(repeating: "p", count: 6000)   // more than the 4 KiB kept of other rejects
        let refused = ("autovolt/lab-102/telemetry",
                       #"{"timestamp":\#(baseTime),"energy_wh_total":500,"switch_state":[1],"note":"\#(padding)"}"#)
        try publisher.publish([reading("lab-101", 1), refused, reading("lab-101", 2), reading("lab-101", 3)])
        #expect(rig.waitForCount(Collections.telemetryEvents, 3))
        #expect(rig.waitForCount("rejected_messages", 1, filter: ["reason": "store_refused"]))
        let rejected = try rig.client.findOne("rejected_messages", filter: ["reason": "store_refused"])
        #expect(rejected?["payload"]?.stringValue == refused.1)
        #expect(rejected?["esp32_name"]?.stringValue == "lab-102")
        #expect(rejected?["detail"]?.stringValue?.contains("121") == true, "\(String(describing: rejected))")

        // Counted where the operator looks: /health and /metrics.
        var fetched: Data?
        _ = eventually { fetched = try? Data(contentsOf: URL(string: "http://127.0.0.1:\(port)/health")!); return fetched != nil }
        let health = try #require(fetched)
        let ingest = (try JSONSerialization.jsonObject(with: health) as? [String: Any])?["ingest"] as? [String: Any]
        #expect(ingest?["store_refused"] as? Int == 1, "\(String(decoding: health, as: UTF8.self))")
        let metrics = try #require(try? String(contentsOf: URL(string: "http://127.0.0.1:\(port)/metrics")!, encoding: .utf8))
        #expect(metrics.contains(#"autovolt_messages_rejected_total{reason="store_refused"} 1"#), "\(metrics)")

        // Still refused: requeue leaves it where it is.
        let env = rig.environment
        var run = try WorkerProcess.runToCompletion(["requeue", "--reason", "store_refused"], environment: env)
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("1 still refused"), "\(run.stdout)")
        #expect(rig.count("rejected_messages", ["reason": "store_refused"]) == 1)

        _ = try rig.client.runCommand(["devMongoRefuse": .array([])])
        run = try WorkerProcess.runToCompletion(["requeue", "--reason", "store_refused", "--since", "2020-01-01"], environment: env)
        #expect(run.status == 0, "\(run.stderr)")
        #expect(run.stdout.contains("1 stored"), "\(run.stdout)")
        #expect(rig.count(Collections.telemetryEvents, ["esp32_name": "lab-102"]) == 1)
        #expect(rig.count("rejected_messages") == 0)
        run = try WorkerProcess.runToCompletion(["requeue", "--reason", "store_refused"], environment: env)
        #expect(run.stdout.contains("requeued 0 messages"), "\(run.stdout)")

        let usage = try WorkerProcess.runToCompletion(["requeue", "--reason", "invalid_json"], environment: env)
        #expect(usage.status == 64)
    }
}
