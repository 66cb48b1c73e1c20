import AutoVoltMQTT
import AutoVoltTestSupport
import Foundation
import Logging
import Testing

final class Collector: MQTTMessageHandler, @unchecked Sendable {
    private let lock = NSLock()
    private var items: [(topic: String, payload: String, retained: Bool)] = []
    func receive(topic: String, payload: UnsafeRawBufferPointer, retained: Bool) {
        let text = String(decoding: payload, as: UTF8.self)
        lock.withLock { items.append((topic, text, retained)) }
    }
    var messages: [(topic: String, payload: String, retained: Bool)] { lock.withLock { items } }
}

func settings(port: Int, clientID: String = "src-\(UUID().uuidString.prefix(6))", share: String? = nil) -> MQTTSettings {
    let prefix = share.map { "$share/\($0)/" } ?? ""
    let filters = ["telemetry", "status", "heartbeat"].map { "\(prefix)autovolt/+/\($0)" }
    return MQTTSettings(port: port, clientID: clientID, subscriptions: filters, reconnectMinDelay: 0.1, reconnectMaxDelay: 0.5)
}

@Suite("MQTT source", .serialized)
struct MQTTSourceTests {
    @Test func receivesQoS1MessagesWithTheRetainedFlag() throws {
        let broker = try MosquittoBroker()
        let publisher = try TestPublisher(port: broker.port)
        try publisher.publish([("autovolt/lab-1/status", "online")], retain: true)
        let collector = Collector()
        let source = try MQTTSource(settings: settings(port: broker.port), handler: collector, logger: Logger(label: "test"))
        source.start()
        defer { source.stop() }
        #expect(eventually { source.isConnected })
        #expect(eventually { collector.messages.count == 1 })
        try publisher.publish([("autovolt/lab-1/telemetry", "{}"), ("autovolt/lab-1/status", "offline"), ("other/topic", "x")])
        #expect(eventually { collector.messages.count == 3 })
        let messages = collector.messages
        #expect(messages[0].retained && messages[0].payload == "online")
        #expect(messages[1].topic == "autovolt/lab-1/telemetry" && !messages[1].retained)
        #expect(!messages.contains { $0.topic == "other/topic" })
    }

    @Test func waitsForABrokerThatIsNotThereYetAndSurvivesItsRestart() throws {
        let broker = try MosquittoBroker()
        broker.stop()
        let collector = Collector()
        let source = try MQTTSource(settings: settings(port: broker.port), handler: collector, logger: Logger(label: "test"))
        source.start()
        defer { source.stop() }
        #expect(eventually { source.lastError != nil })
        #expect(!source.isConnected)
        try broker.start()
        #expect(eventually { source.isConnected })
        broker.stop()
        #expect(eventually { !source.isConnected })
        try broker.start()
        #expect(eventually { source.isConnected })
        #expect(eventually { source.subscriptionAcknowledgements >= 2 })
        try TestPublisher(port: broker.port).publish([("autovolt/x/heartbeat", "{}")])
        #expect(eventually { collector.messages.count == 1 })
    }

    @Test func sharedSubscriptionsSplitTheLoad() throws {
        let broker = try MosquittoBroker()
        let a = Collector(), b = Collector()
        let sa = try MQTTSource(settings: settings(port: broker.port, share: "g"), handler: a, logger: Logger(label: "a"))
        let sb = try MQTTSource(settings: settings(port: broker.port, share: "g"), handler: b, logger: Logger(label: "b"))
        sa.start()
        sb.start()
        defer { sa.stop(); sb.stop() }
        #expect(eventually { sa.subscriptionAcknowledgements >= 1 && sb.subscriptionAcknowledgements >= 1 })
        try TestPublisher(port: broker.port).publish((0..<100).map { ("autovolt/d\($0)/telemetry", "\($0)") })
        #expect(eventually { a.messages.count + b.messages.count == 100 })
        #expect(a.messages.count > 0 && b.messages.count > 0)
    }
}
