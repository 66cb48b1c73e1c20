import CMosquitto
import Foundation

/// A QoS 1 publisher that counts what the broker has acknowledged, for the live simulator and the
/// tests (`mosquitto_pub -l` may exit before its last messages are acknowledged, so nothing that
/// counts messages can rely on it).
///
/// libmosquitto's own thread (`mosquitto_loop_start`) drives the socket and reconnects after a
/// broker restart; with `cleanSession` off and a fixed client id the broker keeps the session, so
/// messages in flight across the restart are sent again, not lost. Calls block the calling thread:
/// use it from a thread of its own, never from Swift's cooperative pool.
// @unchecked: the counters and flags are read and written only under `lock`; `handle` is set
// once in init and then used only through libmosquitto calls that are thread-safe with
// loop_start (publish, disconnect, loop_stop).
public final class MQTTPublisher: @unchecked Sendable {
    private let handle: OpaquePointer
    private let lock = NSLock()
    private var acknowledged = 0
    private var published = 0
    private var connected = false
    private var lastConnectResult: Int32?

    private static let libraryInit: Void = { mosquitto_lib_init() }()

    /// Opens the connection; `waitUntilConnected` waits for the broker's answer.
    public init(settings: MQTTSettings, cleanSession: Bool = true, maxInflight: Int = 100) throws(MQTTError) {
        _ = Self.libraryInit
        guard let mosq = mosquitto_new(settings.clientID, cleanSession, nil) else {
            throw MQTTError(code: MOSQ_ERR_ERRNO.rawValue, context: "mosquitto_new")
        }
        handle = mosq
        mosquitto_user_data_set(mosq, Unmanaged.passUnretained(self).toOpaque())
        do throws(MQTTError) {
            let version = settings.protocolVersion == .v5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311
            try check(mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, Int32(version)), "protocol version")
            if let username = settings.username {
                try check(mosquitto_username_pw_set(mosq, username, settings.password), "username/password")
            }
            if settings.useTLS || settings.caFile != nil {
                let capath = settings.caFile == nil ? "/etc/ssl/certs" : nil
                try check(mosquitto_tls_set(mosq, settings.caFile, capath, settings.certFile, settings.keyFile, nil), "TLS settings")
            }
            try check(mosquitto_max_inflight_messages_set(mosq, UInt32(max(1, maxInflight))), "max inflight")
            try check(mosquitto_reconnect_delay_set(mosq, 1, 10, true), "reconnect delay")
        } catch {
            mosquitto_destroy(mosq)
            throw error
        }
        mosquitto_publish_callback_set(mosq) { _, userdata, _ in
            guard let userdata else { return }
            Unmanaged<MQTTPublisher>.fromOpaque(userdata).takeUnretainedValue().update { $0.acknowledged += 1 }
        }
        mosquitto_connect_callback_set(mosq) { _, userdata, rc in
            guard let userdata else { return }
            Unmanaged<MQTTPublisher>.fromOpaque(userdata).takeUnretainedValue().update {
                $0.connected = rc == 0
                $0.lastConnectResult = rc
            }
        }
        // A blocking first connect: the broker must be up now; after that the loop thread
        // reconnects. (connect_async before loop_start aborted in the loop's select on this
        // libmosquitto 2.0.11, FD_SET of a socket not yet open.)
        do throws(MQTTError) {
            try check(mosquitto_connect(mosq, settings.host, Int32(settings.port), Int32(settings.keepaliveSeconds)),
                      "connect to \(settings.host):\(settings.port)")
            try check(mosquitto_loop_start(mosq), "network thread")
        } catch {
            mosquitto_destroy(mosq)
            throw error
        }
    }

    deinit {
        mosquitto_disconnect(handle)
        mosquitto_loop_stop(handle, false)
        mosquitto_destroy(handle)
    }

    private func update(_ change: (MQTTPublisher) -> Void) {
        lock.withLock { change(self) }
    }

    /// Polls until `done` holds or `timeout` seconds have passed. Polling, not a condition
    /// variable, on purpose: waking the caller the instant a callback fires let it call into
    /// libmosquitto while the loop thread was still inside that callback, and libmosquitto 2.0.11
    /// then aborted in its select (FD_SET of a socket being closed), under load in the tests.
    private func wait(timeout: Double, until done: (MQTTPublisher) -> Bool) -> Bool {
        let deadline = Date(timeIntervalSinceNow: timeout)
        while true {
            if lock.withLock({ done(self) }) { return true }
            if Date() >= deadline { return false }
            Thread.sleep(forTimeInterval: 0.01)
        }
    }

    public var acknowledgedCount: Int { lock.withLock { acknowledged } }
    public var isConnected: Bool { lock.withLock { connected } }

    /// Waits for the broker's CONNACK; a refusal (bad credentials, say) fails at once.
    public func waitUntilConnected(timeout: Double) throws(MQTTError) {
        guard wait(timeout: timeout, until: { $0.connected || ($0.lastConnectResult ?? 0) != 0 }), isConnected else {
            let rc = lock.withLock { lastConnectResult }
            let reason = rc.map { String(cString: mosquitto_connack_string($0)) } ?? "no answer from the broker"
            throw MQTTError(message: "not connected after \(timeout) s: \(reason)")
        }
    }

    /// Hands one message to libmosquitto (QoS 1 unless told otherwise). While more than
    /// `window` messages wait for their PUBACK it blocks, so a slow broker slows the publisher
    /// instead of filling memory.
    public func publish(topic: String, payload: some Collection<UInt8>, qos: Int32 = 1, retain: Bool = false,
                        window: Int = 10_000) throws(MQTTError) {
        _ = wait(timeout: 3_600, until: { $0.published - $0.acknowledged < window })
        let bytes = Array(payload)
        while true {
            let rc = bytes.withUnsafeBytes { buffer in
                mosquitto_publish(handle, nil, topic, Int32(buffer.count), buffer.baseAddress, qos, retain)
            }
            if rc == MOSQ_ERR_SUCCESS.rawValue { break }
            // Not connected (yet, or again): libmosquitto refuses until the loop has reconnected.
            guard rc == MOSQ_ERR_NO_CONN.rawValue || rc == MOSQ_ERR_NOMEM.rawValue else {
                throw MQTTError(code: rc, context: "publish to \(topic)")
            }
            _ = wait(timeout: 0.05, until: { $0.connected })
        }
        update { $0.published += 1 } // on_publish counts QoS 0 messages once sent, QoS 1 once acknowledged
    }

    /// Returns once the broker has acknowledged every message published so far.
    public func waitForAcknowledgements(timeout: Double) throws(MQTTError) {
        guard wait(timeout: timeout, until: { $0.acknowledged >= $0.published }) else {
            let (a, p) = lock.withLock { (acknowledged, published) }
            throw MQTTError(message: "only \(a) of \(p) messages acknowledged after \(timeout) s")
        }
    }

    private func check(_ rc: Int32, _ context: String) throws(MQTTError) {
        guard rc == MOSQ_ERR_SUCCESS.rawValue else { throw MQTTError(code: rc, context: context) }
    }
}
