import CMosquitto
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

/// A QoS 1 publisher that waits for every PUBACK (mosquitto_pub -l may exit before delivering
/// everything, so tests that count messages cannot rely on it).
public final class TestPublisher: @unchecked Sendable {
    private let handle: OpaquePointer
    private let lock = NSLock()
    private var acknowledged = 0
    private var connected = false

    private static let libraryInit: Void = { mosquitto_lib_init() }()

    public init(port: Int, clientID: String = "test-publisher-\(UUID().uuidString.prefix(8))",
                username: String? = nil, password: String? = nil, tls: TLSClientFiles? = nil) throws {
        _ = Self.libraryInit
        guard let mosq = mosquitto_new(clientID, true, nil) else { throw DevMongoServerError(description: "mosquitto_new failed") }
        handle = mosq
        mosquitto_user_data_set(mosq, Unmanaged.passUnretained(self).toOpaque())
        mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, Int32(MQTT_PROTOCOL_V311))
        if let username { mosquitto_username_pw_set(mosq, username, password) }
        if let tls {
            let rc = mosquitto_tls_set(mosq, tls.caFile, nil, tls.certFile, tls.keyFile, nil)
            guard rc == MOSQ_ERR_SUCCESS.rawValue else {
                mosquitto_destroy(mosq)
                throw DevMongoServerError(description: "publisher TLS settings: \(String(cString: mosquitto_strerror(rc)))")
            }
        }
        mosquitto_publish_callback_set(mosq) { _, userdata, _ in
            guard let userdata else { return }
            let publisher = Unmanaged<TestPublisher>.fromOpaque(userdata).takeUnretainedValue()
            publisher.lock.withLock { publisher.acknowledged += 1 }
        }
        mosquitto_connect_callback_set(mosq) { _, userdata, rc in
            guard let userdata, rc == 0 else { return }
            let publisher = Unmanaged<TestPublisher>.fromOpaque(userdata).takeUnretainedValue()
            publisher.lock.withLock { publisher.connected = true }
        }
        mosquitto_max_inflight_messages_set(mosq, 100)
        let rc = mosquitto_connect(mosq, "127.0.0.1", Int32(port), 30)
        guard rc == MOSQ_ERR_SUCCESS.rawValue else {
            mosquitto_destroy(mosq)
            throw DevMongoServerError(description: "publisher cannot connect: \(String(cString: mosquitto_strerror(rc)))")
        }
        mosquitto_loop_start(mosq)
        guard eventually(timeout: 10, interval: 0.02, { lock.withLock { connected } }) else {
            throw DevMongoServerError(description: "publisher not connected (refused?)")
        }
    }

    deinit {
        mosquitto_disconnect(handle)
        mosquitto_loop_stop(handle, false)
        mosquitto_destroy(handle)
    }

    /// Publishes every message with QoS 1 and returns once the broker acknowledged all of them.
    public func publish(_ messages: [(topic: String, payload: String)], retain: Bool = false, timeout: Double = 60) throws {
        try publishBytes(messages.map { ($0.topic, Array($0.payload.utf8)) }, retain: retain, timeout: timeout)
    }

    public func publishBytes(_ messages: [(topic: String, payload: [UInt8])], retain: Bool = false, timeout: Double = 60) throws {
        let target = lock.withLock { acknowledged } + messages.count
        for message in messages {
            var rc: Int32
            repeat {
                rc = message.payload.withUnsafeBytes { bytes in
                    mosquitto_publish(handle, nil, message.topic, Int32(bytes.count), bytes.baseAddress, 1, retain)
                }
                if rc == MOSQ_ERR_NO_CONN.rawValue || rc == MOSQ_ERR_NOMEM.rawValue { Thread.sleep(forTimeInterval: 0.01) }
            } while rc == MOSQ_ERR_NO_CONN.rawValue || rc == MOSQ_ERR_NOMEM.rawValue
            guard rc == MOSQ_ERR_SUCCESS.rawValue else {
                throw DevMongoServerError(description: "publish failed: \(String(cString: mosquitto_strerror(rc)))")
            }
        }
        guard eventually(timeout: timeout, interval: 0.01, { lock.withLock { acknowledged } >= target }) else {
            throw DevMongoServerError(description: "only \(lock.withLock { acknowledged }) of \(target) messages acknowledged")
        }
    }
}
