import AutoVoltMQTT
import Foundation

/// PEM files for a publisher that connects over TLS (`certFile`/`keyFile`: a client certificate).
public struct TLSClientFiles: Sendable {
    public var caFile: String
    public var certFile: String?
    public var keyFile: String?

    public init(caFile: String, certFile: String? = nil, keyFile: String? = nil) {
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
    }
}

/// The product's QoS 1 publisher (AutoVoltMQTT.MQTTPublisher), connected before it is returned,
/// with a call that publishes a batch and waits for every PUBACK.
public final class TestPublisher: @unchecked Sendable {
    public let publisher: MQTTPublisher

    public init(port: Int, clientID: String = "test-publisher-\(UUID().uuidString.prefix(8))",
                username: String? = nil, password: String? = nil, tls: TLSClientFiles? = nil) throws {
        let settings = MQTTSettings(host: "127.0.0.1", port: port, useTLS: tls != nil, caFile: tls?.caFile,
                                    certFile: tls?.certFile, keyFile: tls?.keyFile, username: username, password: password,
                                    clientID: clientID, subscriptions: [])
        publisher = try MQTTPublisher(settings: settings)
        try publisher.waitUntilConnected(timeout: 10)
    }

    /// Publishes every message with QoS 1 and returns once the broker acknowledged all of them.
    public func publish(_ messages: [(topic: String, payload: String)], retain: Bool = false, timeout: Double = 60) throws {
        try publishBytes(messages.map { ($0.topic, Array($0.payload.utf8)) }, retain: retain, timeout: timeout)
    }

    public func publishBytes(_ messages: [(topic: String, payload: [UInt8])], retain: Bool = false, timeout: Double = 60) throws {
        for message in messages { try publisher.publish(topic: message.topic, payload: message.payload, retain: retain) }
        try publisher.waitForAcknowledgements(timeout: timeout)
    }
}
