import AutoVoltTestSupport
import Foundation
import Testing

// In the serialized integration suite: each of these blocks a thread of the 2-core cooperative
// pool while it waits, and running them beside the other suites starved the HTTP timing tests.
extension IntegrationTests {
    /// MQTT 5 ends a session at disconnect unless the client sends a Session Expiry Interval: the
    /// worker sends one, so QoS 1 messages published while it is stopped wait at the broker.
    @Test func messagesPublishedWhileAnMQTT5WorkerIsStoppedArrive() throws {
        let rig = try Rig()
        let v5 = ["AUTOVOLT_MQTT_PROTOCOL": "5"]
        #expect(try rig.startWorker(extra: v5).stop() == 0)
        try rig.publisher().publish((0..<50).map { reading("lab-101", $0) })
        let second = try rig.startWorker(extra: v5)
        #expect(rig.waitForCount("telemetry_events", 50), "stored \(rig.count("telemetry_events"))\n\(second.log.suffix(2000))")
    }
}
