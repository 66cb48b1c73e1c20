import CMosquitto
import Foundation
import Logging

/// Receives each message on the MQTT thread. The messages given to `receive` must be durable when
/// the next `flush` returns: the MQTT thread calls `flush` after every read of the socket and
/// before it writes anything, so no PUBACK of a message reaches the broker before that `flush`
/// has returned (see docs/delivery.md). A handler may make each message durable in `receive`
/// itself (the default `flush` does nothing) or batch them and commit in `flush`. Both may block
/// (for a journal commit, or while the journal is full); the broker then holds what it has.
public protocol MQTTMessageHandler: AnyObject, Sendable {
    func receive(topic: String, payload: UnsafeRawBufferPointer, retained: Bool)
    /// Makes every message given to `receive` since the last `flush` durable.
    func flush()
}

extension MQTTMessageHandler {
    public func flush() {}
}

public struct MQTTSettings: Sendable {
    public enum ProtocolVersion: String, Sendable { case v311 = "3.1.1", v5 = "5" }

    public var host: String
    public var port: Int
    public var useTLS: Bool
    public var caFile: String?
    public var certFile: String?
    public var keyFile: String?
    public var username: String?
    public var password: String?
    public var clientID: String
    public var subscriptions: [String]
    public var keepaliveSeconds: Int
    public var protocolVersion: ProtocolVersion
    public var reconnectMinDelay: Double
    public var reconnectMaxDelay: Double

    public init(host: String = "127.0.0.1", port: Int = 1883, useTLS: Bool = false, caFile: String? = nil,
                certFile: String? = nil, keyFile: String? = nil, username: String? = nil, password: String? = nil,
                clientID: String = "autovolt-worker", subscriptions: [String], keepaliveSeconds: Int = 30,
                protocolVersion: ProtocolVersion = .v311, reconnectMinDelay: Double = 0.5, reconnectMaxDelay: Double = 30) {
        self.host = host
        self.port = port
        self.useTLS = useTLS
        self.caFile = caFile
        self.certFile = certFile
        self.keyFile = keyFile
        self.username = username
        self.password = password
        self.clientID = clientID
        self.subscriptions = subscriptions
        self.keepaliveSeconds = keepaliveSeconds
        self.protocolVersion = protocolVersion
        self.reconnectMinDelay = reconnectMinDelay
        self.reconnectMaxDelay = reconnectMaxDelay
    }
}

public struct MQTTError: Error, Sendable, CustomStringConvertible {
    public let code: Int32
    public let message: String

    init(code: Int32, context: String) {
        self.code = code
        if code == MOSQ_ERR_ERRNO.rawValue {
            message = "\(context): \(String(cString: strerror(errno)))"
        } else {
            message = "\(context): \(String(cString: mosquitto_strerror(code)))"
        }
    }

    init(message: String) {
        code = MOSQ_ERR_UNKNOWN.rawValue
        self.message = message
    }

    public var description: String { message }
}

/// A libmosquitto client on a thread of its own, with a persistent session (clean session off,
/// fixed client id), QoS 1 subscriptions, and its own supervised reconnect loop.
///
/// Why a hand-driven `mosquitto_loop` with `mosquitto_threaded_set(true)` instead of
/// `mosquitto_loop_start`: the threaded flag is what defers the PUBACK until `on_message` has
/// returned (libmosquitto queues packets instead of writing them when the handle is threaded),
/// and driving the loop ourselves lets us supervise it: `loop_forever` gives up silently on
/// auth, TLS and protocol errors, and reconnects without jitter.
public final class MQTTSource: @unchecked Sendable {
    public let settings: MQTTSettings
    private let handler: MQTTMessageHandler
    private let logger: Logger
    private var handle: OpaquePointer?
    private let state = NSLock()
    private var stopping = false
    private var connectedFlag = false
    private var subscribeAcks = 0
    private var lastErrorText: String?
    private var lastMessageAtMillis: Int64?
    private var thread: Thread?
    private let wake = DispatchSemaphore(value: 0)
    private let finished = DispatchSemaphore(value: 0)
    /// Called on the MQTT thread whenever the connection goes up or down.
    public var onConnectionChange: (@Sendable (Bool) -> Void)?

    private static let libraryInit: Void = { mosquitto_lib_init() }()

    public init(settings: MQTTSettings, handler: MQTTMessageHandler, logger: Logger) throws(MQTTError) {
        _ = Self.libraryInit
        self.settings = settings
        self.handler = handler
        self.logger = logger
        guard let mosq = mosquitto_new(settings.clientID, false, nil) else {
            throw MQTTError(code: MOSQ_ERR_ERRNO.rawValue, context: "mosquitto_new")
        }
        handle = mosq
        mosquitto_user_data_set(mosq, Unmanaged.passUnretained(self).toOpaque())
        try check(mosquitto_threaded_set(mosq, true), "mosquitto_threaded_set")
        let version = settings.protocolVersion == .v5 ? MQTT_PROTOCOL_V5 : MQTT_PROTOCOL_V311
        try check(mosquitto_int_option(mosq, MOSQ_OPT_PROTOCOL_VERSION, Int32(version)), "protocol version")
        if let username = settings.username {
            try check(mosquitto_username_pw_set(mosq, username, settings.password), "username/password")
        }
        if settings.useTLS {
            // With no CA file the system trust store is used.
            let capath = settings.caFile == nil ? "/etc/ssl/certs" : nil
            try check(mosquitto_tls_set(mosq, settings.caFile, capath, settings.certFile, settings.keyFile, nil), "TLS settings")
        }
        mosquitto_connect_callback_set(mosq) { _, userdata, rc in
            guard let userdata else { return }
            Unmanaged<MQTTSource>.fromOpaque(userdata).takeUnretainedValue().didConnect(rc: rc)
        }
        mosquitto_disconnect_callback_set(mosq) { _, userdata, rc in
            guard let userdata else { return }
            Unmanaged<MQTTSource>.fromOpaque(userdata).takeUnretainedValue().didDisconnect(rc: rc)
        }
        mosquitto_subscribe_callback_set(mosq) { _, userdata, _, count, granted in
            guard let userdata, let granted else { return }
            let source = Unmanaged<MQTTSource>.fromOpaque(userdata).takeUnretainedValue()
            source.didSubscribe(granted: Array(UnsafeBufferPointer(start: granted, count: Int(count))))
        }
        mosquitto_message_callback_set(mosq) { _, userdata, message in
            guard let userdata, let message else { return }
            Unmanaged<MQTTSource>.fromOpaque(userdata).takeUnretainedValue().didReceive(message.pointee)
        }
    }

    deinit {
        if let handle { mosquitto_destroy(handle) }
    }

    public var isConnected: Bool { state.withLock { connectedFlag } }
    /// How many SUBACKs the broker has sent since start (one per connect): a fresh session
    /// receives messages only once its subscriptions are granted.
    public var subscriptionAcknowledgements: Int { state.withLock { subscribeAcks } }
    public var lastError: String? { state.withLock { lastErrorText } }
    public var lastMessageAt: Int64? { state.withLock { lastMessageAtMillis } }

    /// Starts the network thread. Connection failures are retried there with backoff.
    public func start() {
        let thread = Thread { [self] in
            runLoop()
            finished.signal()
        }
        thread.name = "autovolt-mqtt"
        self.thread = thread
        thread.start()
    }

    /// Disconnects cleanly (pending PUBACKs are flushed first) and waits for the thread to end,
    /// at most `timeout` seconds.
    public func stop(timeout: Double = 10) {
        let wasRunning: Bool = state.withLock {
            let running = !stopping && thread != nil
            stopping = true
            return running
        }
        wake.signal()
        if wasRunning { _ = finished.wait(timeout: .now() + timeout) }
    }

    // MARK: Network thread

    private var isStopping: Bool { state.withLock { stopping } }

    private func runLoop() {
        guard let mosq = handle else { return }
        var delay = settings.reconnectMinDelay
        while !isStopping {
            let rc = connect(mosq)
            if rc != MOSQ_ERR_SUCCESS.rawValue {
                let error = MQTTError(code: rc, context: "cannot connect to \(settings.host):\(settings.port)")
                record(error: error.message)
                logger.warning("MQTT connect failed, retrying", metadata: ["error": "\(error.message)", "retry_in_s": "\(String(format: "%.1f", delay))"])
                sleep(jittered(delay))
                delay = min(delay * 2, settings.reconnectMaxDelay)
                continue
            }
            // Drive the session until it fails or we are asked to stop.
            var loopRC = MOSQ_ERR_SUCCESS.rawValue
            while !isStopping {
                loopRC = pump(mosq, timeoutMillis: 200)
                if loopRC != MOSQ_ERR_SUCCESS.rawValue { break }
                if isConnected { delay = settings.reconnectMinDelay }
            }
            if isStopping {
                mosquitto_disconnect(mosq)
                // Flush queued PUBACKs and the DISCONNECT.
                for _ in 0..<10 where pump(mosq, timeoutMillis: 50) == MOSQ_ERR_SUCCESS.rawValue {}
                break
            }
            setConnected(false)
            let error = MQTTError(code: loopRC, context: "connection lost")
            record(error: error.message)
            logger.warning("MQTT connection lost, reconnecting", metadata: ["error": "\(error.message)", "retry_in_s": "\(String(format: "%.1f", delay))"])
            sleep(jittered(delay))
            delay = min(delay * 2, settings.reconnectMaxDelay)
        }
        setConnected(false)
    }

    /// Most messages read from the socket before their batch is handed to `flush`.
    static let maxBatch = 256

    /// One turn of the client loop, what `mosquitto_loop` does with the read and the write
    /// split apart: wait for the socket, read every message it holds (up to `maxBatch`; each one
    /// goes through `on_message`, and with the threaded handle its PUBACK is only queued), call
    /// the handler's `flush`, and only then write the queued packets. So a PUBACK never reaches
    /// the socket before the message it acknowledges was flushed, and one flush (one journal
    /// commit) serves every message that arrived together. `mosquitto_loop_read` and
    /// `mosquitto_loop_write` close the socket and call `on_disconnect` on errors themselves.
    private func pump(_ mosq: OpaquePointer, timeoutMillis: Int32) -> Int32 {
        let socket = mosquitto_socket(mosq)
        guard socket >= 0 else { return MOSQ_ERR_NO_CONN.rawValue }
        var fd = pollfd(fd: socket, events: Int16(POLLIN) | (mosquitto_want_write(mosq) ? Int16(POLLOUT) : 0), revents: 0)
        let ready = poll(&fd, 1, timeoutMillis)
        if ready < 0 { return errno == EINTR ? MOSQ_ERR_SUCCESS.rawValue : MOSQ_ERR_ERRNO.rawValue }
        if ready > 0 && fd.revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
            var rc = MOSQ_ERR_SUCCESS.rawValue
            var reads = 0
            while reads < Self.maxBatch {
                rc = mosquitto_loop_read(mosq, 1)
                reads += 1
                guard rc == MOSQ_ERR_SUCCESS.rawValue, mosquitto_socket(mosq) >= 0 else { break }
                // More bytes waiting? (errno cannot tell: libmosquitto's wake-up write to its
                // socket pair, which this loop does not read, fails with EAGAIN once it is full.)
                var more = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
                if poll(&more, 1, 0) <= 0 { break }
            }
            // Before anything is written: every PUBACK queued by the reads above goes out only
            // after this returns.
            handler.flush()
            noteBatchReceived()
            if rc != MOSQ_ERR_SUCCESS.rawValue || mosquitto_socket(mosq) < 0 { return rc }
        }
        if mosquitto_want_write(mosq) {
            let rc = mosquitto_loop_write(mosq, 1)
            if rc != MOSQ_ERR_SUCCESS.rawValue || mosquitto_socket(mosq) < 0 { return rc }
        }
        return mosquitto_loop_misc(mosq)
    }

    private func connect(_ mosq: OpaquePointer) -> Int32 {
        let keepalive = Int32(settings.keepaliveSeconds)
        switch settings.protocolVersion {
        case .v311:
            return mosquitto_connect(mosq, settings.host, Int32(settings.port), keepalive)
        case .v5:
            // MQTT 5 ends the session at disconnect unless a Session Expiry Interval is sent; the
            // property must go with every CONNECT, so reconnects also come through here.
            var properties: OpaquePointer?
            mosquitto_property_add_int32(&properties, Int32(MQTT_PROP_SESSION_EXPIRY_INTERVAL.rawValue), UInt32.max)
            defer { mosquitto_property_free_all(&properties) }
            return mosquitto_connect_bind_v5(mosq, settings.host, Int32(settings.port), keepalive, nil, properties)
        }
    }

    private func jittered(_ delay: Double) -> Double {
        delay * Double.random(in: 0.75...1.25)
    }

    private func sleep(_ seconds: Double) {
        _ = wake.wait(timeout: .now() + seconds)
    }

    private func record(error: String) {
        state.withLock { lastErrorText = error }
    }

    private func setConnected(_ value: Bool) {
        let changed: Bool = state.withLock {
            defer { connectedFlag = value }
            return connectedFlag != value
        }
        if changed { onConnectionChange?(value) }
    }

    // MARK: Callbacks (network thread)

    private func didConnect(rc: Int32) {
        guard rc == 0 else {
            let reason = String(cString: mosquitto_connack_string(rc))
            record(error: "broker refused the connection: \(reason)")
            logger.error("MQTT broker refused the connection", metadata: ["reason": "\(reason)"])
            return
        }
        setConnected(true)
        state.withLock { lastErrorText = nil }
        logger.info("MQTT connected", metadata: ["broker": "\(settings.host):\(settings.port)", "client_id": "\(settings.clientID)"])
        guard let mosq = handle else { return }
        // Subscribing again on every connect is harmless with a persistent session and repairs a
        // session the broker lost (restart without persistence).
        var cStrings = settings.subscriptions.map { strdup($0) }
        defer { cStrings.forEach { free($0) } }
        let rc = cStrings.withUnsafeBufferPointer { pointers -> Int32 in
            mosquitto_subscribe_multiple(mosq, nil, Int32(pointers.count), pointers.baseAddress, 1, 0, nil)
        }
        if rc != MOSQ_ERR_SUCCESS.rawValue {
            logger.error("MQTT subscribe failed", metadata: ["error": "\(MQTTError(code: rc, context: "subscribe").message)"])
        }
    }

    private func didSubscribe(granted: [Int32]) {
        state.withLock { subscribeAcks += 1 }
        for (filter, qos) in zip(settings.subscriptions, granted) {
            if qos >= 0x80 {
                logger.error("MQTT subscription refused by the broker (check its ACL)", metadata: ["topic": "\(filter)"])
            } else if qos < 1 {
                logger.warning("MQTT subscription granted below QoS 1: messages may be lost", metadata: ["topic": "\(filter)", "qos": "\(qos)"])
            } else {
                logger.info("MQTT subscribed", metadata: ["topic": "\(filter)", "qos": "\(qos)"])
            }
        }
    }

    private func didDisconnect(rc: Int32) {
        setConnected(false)
        if rc != 0 && !isStopping {
            record(error: "disconnected: \(String(cString: mosquitto_strerror(rc)))")
        }
    }

    private func didReceive(_ message: mosquitto_message) {
        guard let topicPointer = message.topic else { return }
        let topic = String(cString: topicPointer)
        let payload = UnsafeRawBufferPointer(start: message.payload, count: Int(max(0, message.payloadlen)))
        handler.receive(topic: topic, payload: payload, retained: message.retain)
        receivedSinceFlush = true
    }

    /// Set on the MQTT thread by `didReceive`; `lastMessageAt` is updated once per batch.
    private var receivedSinceFlush = false

    private func noteBatchReceived() {
        guard receivedSinceFlush else { return }
        receivedSinceFlush = false
        let now = Int64(Date().timeIntervalSince1970 * 1000)
        state.withLock { lastMessageAtMillis = now }
    }

    private func check(_ rc: Int32, _ context: String) throws(MQTTError) {
        guard rc == MOSQ_ERR_SUCCESS.rawValue else { throw MQTTError(code: rc, context: context) }
    }
}
