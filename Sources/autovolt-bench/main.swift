// autovolt-bench: benchmarks and load generation for scripts/bench-ingest. Not installed.
//
//   autovolt-bench core      [--messages N]   decode + validate + event hash throughput, one thread
//   autovolt-bench journal   [--messages N] [--full-messages M]   SQLite journal append / drain
//   autovolt-bench publish   --port P ...     QoS 1 telemetry publisher that waits for every PUBACK
//   autovolt-bench subscribe --port P --count N ...   mosquitto_sub-style counting subscriber
//
// Hand-parsed arguments on purpose: this target stays free of ArgumentParser.
import AutoVoltCore
import AutoVoltJournal
import CMosquitto
import Foundation

// MARK: - Small helpers

struct UsageError: Error { let message: String }

func die(_ message: String, code: Int32 = 1) -> Never {
    FileHandle.standardError.write(Data("autovolt-bench: \(message)\n".utf8))
    exit(code)
}

/// Monotonic seconds.
func now() -> Double {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
}

func wallMillis() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded()) }

func say(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}

func formatRate(_ value: Double) -> String {
    let n = Int(value.rounded())
    var digits = String(n)
    var out = ""
    while digits.count > 3 {
        out = "," + digits.suffix(3) + out
        digits.removeLast(3)
    }
    return digits + out
}

/// `--name value` options and bare flags, parsed by hand.
struct Options {
    private var values: [String: String] = [:]

    init(_ args: ArraySlice<String>, allowed: Set<String>) throws(UsageError) {
        var i = args.startIndex
        while i < args.endIndex {
            let arg = args[i]
            guard arg.hasPrefix("--") else { throw UsageError(message: "unexpected argument \"\(arg)\"") }
            var name = String(arg.dropFirst(2))
            var value: String
            if let eq = name.firstIndex(of: "=") {
                value = String(name[name.index(after: eq)...])
                name = String(name[..<eq])
            } else {
                guard i + 1 < args.endIndex else { throw UsageError(message: "--\(name) needs a value") }
                i += 1
                value = args[i]
            }
            guard allowed.contains(name) else { throw UsageError(message: "unknown option --\(name)") }
            values[name] = value
            i += 1
        }
    }

    func string(_ name: String, _ fallback: String? = nil) -> String? { values[name] ?? fallback }

    func int(_ name: String, _ fallback: Int? = nil, min: Int = 0) throws(UsageError) -> Int? {
        guard let text = values[name] else { return fallback }
        guard let v = Int(text.replacingOccurrences(of: "_", with: "")), v >= min else {
            throw UsageError(message: "--\(name) must be an integer >= \(min), got \"\(text)\"")
        }
        return v
    }

    func double(_ name: String, _ fallback: Double) throws(UsageError) -> Double {
        guard let text = values[name] else { return fallback }
        guard let v = Double(text), v.isFinite, v >= 0 else { throw UsageError(message: "--\(name) must be a number >= 0, got \"\(text)\"") }
        return v
    }
}

/// Realistic ESP32 names: building/room/board, e.g. "cse-301-a", "hostel-112-c".
func deviceNames(_ count: Int) -> [String] {
    let blocks = ["lab", "cse", "eee", "mech", "civil", "lib", "hostel", "admin", "sci", "arts"]
    let boards = ["a", "b", "c", "d", "e", "f"]
    var names: [String] = []
    names.reserveCapacity(count)
    var i = 0
    while names.count < count {
        let block = blocks[i % blocks.count]
        let room = 100 + (i / blocks.count) % 900
        let board = boards[(i / (blocks.count * 900)) % boards.count]
        let suffix = i >= blocks.count * 900 * boards.count ? "-\(i)" : ""
        names.append("\(block)-\(room)-\(board)\(suffix)")
        i += 1
    }
    return names
}

/// Energy in tenths of a Wh, as text ("12345.6").
func energyText(_ tenths: Int) -> String { "\(tenths / 10).\(tenths % 10)" }

// MARK: - core

func runCore(_ options: Options) throws(UsageError) {
    let count = try options.int("messages", 1_000_000, min: 1)!
    let deviceCount = try options.int("devices", 3000, min: 1)!
    let names = deviceNames(deviceCount)
    let topics = names.map { "autovolt/\($0)/telemetry" }
    var rng = SplitMix64(seed: 42)
    let receivedAt = wallMillis()
    let nowS = receivedAt / 1000

    // All payloads in one contiguous buffer (what a receive buffer looks like), built up front.
    let buildStart = now()
    var bytes: [UInt8] = []
    bytes.reserveCapacity(count * 200)
    var ranges: [(device: Int32, start: Int32, end: Int32)] = []
    ranges.reserveCapacity(count)
    var energy = [Int](repeating: 0, count: deviceCount)
    for d in 0..<deviceCount { energy[d] = 10_000 + rng.below(5_000_000) }
    for i in 0..<count {
        let d = rng.below(deviceCount)
        energy[d] += 1 + rng.below(400)
        let name = names[d]
        let age = rng.below(3600)
        let e = energyText(energy[d])
        let text: String
        switch i % 4 {
        case 0: // firmware contract v1, array form, seconds
            let s = (0..<4).map { _ in rng.below(2) == 0 ? "0" : "1" }.joined(separator: ",")
            text = "{\"esp32_name\":\"\(name)\",\"timestamp\":\(nowS - Int64(age)),\"energy_wh_total\":\(e),\"switch_state\":[\(s)]}"
        case 1: // AutoVolt firmware guide: object of booleans, milliseconds, power and boot fields
            let ms = (nowS - Int64(age)) * 1000 + Int64(rng.below(1000))
            text = "{\"esp32_name\":\"\(name)\",\"timestamp\":\(ms),\"energy_wh_total\":\(e),\"power_w\":\(rng.below(3000)).\(rng.below(10)),"
                + "\"switch_state\":{\"relay_16\":\(rng.below(2) == 0),\"relay_17\":\(rng.below(2) == 0)},"
                + "\"boot_id\":\"b\(d)-\(rng.below(100))\",\"seq\":\(i / deviceCount)}"
        case 2: // array of 8, extra keys kept in `extra`, no esp32_name (the topic names it)
            let s = (0..<8).map { _ in rng.below(2) == 0 ? "0" : "1" }.joined(separator: ",")
            text = "{\"timestamp\":\(nowS - Int64(age)),\"energy_wh_total\":\(e),\"switch_state\":[\(s)],"
                + "\"mac\":\"24:6F:28:\(String(d, radix: 16)):00:01\",\"rssi\":-\(40 + rng.below(50)),\"heap\":\(150_000 + rng.below(50_000)),"
                + "\"fw_version\":\"1.4.\(d % 7)\",\"uptime_s\":\(rng.below(2_000_000)),\"sequence_no\":\(i / deviceCount)}"
        default: // object of 0/1, seconds, classroom in payload
            text = "{\"esp32_name\":\"\(name)\",\"timestamp\":\(nowS - Int64(age)),\"energy_wh_total\":\(e),"
                + "\"switch_state\":{\"lights\":\(rng.below(2)),\"fans\":\(rng.below(2)),\"ac\":\(rng.below(2))},\"classroom\":\"R-\(d % 500)\"}"
        }
        let start = Int32(bytes.count)
        bytes.append(contentsOf: text.utf8)
        ranges.append((Int32(d), start, Int32(bytes.count)))
    }
    let buildSeconds = now() - buildStart
    say("core: \(formatRate(Double(count))) payloads from \(deviceCount) devices built in \(String(format: "%.2f", buildSeconds)) s "
        + "(avg \(bytes.count / count) B; mix: array/object switch_state, s/ms timestamps)")

    let decoder = MessageDecoder()
    var best = Double.infinity
    var accepted = 0
    var checksum: UInt64 = 0
    bytes.withUnsafeBufferPointer { all in
        for run in 1...3 {
            accepted = 0
            let t0 = now()
            for r in ranges {
                let payload = UnsafeBufferPointer(rebasing: all[Int(r.start)..<Int(r.end)])
                switch decoder.decode(topic: topics[Int(r.device)], payload: payload, receivedAt: receivedAt) {
                case .success(.telemetry(let reading)):
                    accepted += 1
                    checksum &+= UInt64(reading.eventHash.utf8.first ?? 0)
                case .success:
                    break
                case .failure(let rejection):
                    if accepted == 0 { FileHandle.standardError.write(Data("unexpected rejection: \(rejection)\n".utf8)) }
                }
            }
            let elapsed = now() - t0
            best = min(best, elapsed)
            say("core: run \(run): \(String(format: "%.3f", elapsed)) s, \(formatRate(Double(count) / elapsed)) msg/s")
        }
    }
    guard accepted == count else { die("core: only \(accepted) of \(count) payloads were accepted") }
    let rate = Double(count) / best
    say("core: best of 3: \(formatRate(rate)) msg/s, \(String(format: "%.0f", best / Double(count) * 1e9)) ns/message "
        + "(goal >= 300,000 msg/s on one core: \(rate >= 300_000 ? "met" : "NOT met")) [checksum \(checksum % 1000)]")
    say("RESULT core_msgs_per_s=\(Int(rate)) core_ns_per_msg=\(Int((best / Double(count) * 1e9).rounded()))")
}

// MARK: - journal

func runJournal(_ options: Options) throws(UsageError) {
    let count = try options.int("messages", 100_000, min: 1)!
    let fullCount = try options.int("full-messages", min(count, 5_000), min: 1)!
    let names = deviceNames(3000)
    var rng = SplitMix64(seed: 7)
    let nowS = wallMillis() / 1000
    var messages: [(topic: String, payload: [UInt8])] = []
    messages.reserveCapacity(max(count, fullCount))
    for i in 0..<max(count, fullCount) {
        let name = names[i % names.count]
        let text = "{\"esp32_name\":\"\(name)\",\"timestamp\":\(nowS - Int64(rng.below(3600))),\"energy_wh_total\":\(energyText(100_000 + i)),"
            + "\"switch_state\":[1,0,\(rng.below(2)),0],\"seq\":\(i / names.count)}"
        messages.append(("autovolt/\(name)/telemetry", Array(text.utf8)))
    }
    let base = FileManager.default.temporaryDirectory.appendingPathComponent("autovolt-bench-journal-\(getpid())").path
    defer { try? FileManager.default.removeItem(atPath: base) }

    for (mode, n) in [(Journal.SyncMode.normal, count), (.full, fullCount)] {
        let dir = base + "/" + mode.rawValue
        let journal: Journal
        do {
            journal = try Journal(directory: dir, sync: mode, maxBytes: 1 << 40)
        } catch {
            die("\(error)")
        }
        let receivedAt = wallMillis()
        let t0 = now()
        do {
            for m in messages.prefix(n) {
                _ = try journal.append(topic: m.topic, payload: m.payload, receivedAt: receivedAt, retained: false)
            }
        } catch {
            die("\(error)")
        }
        let appendSeconds = now() - t0
        let appendRate = Double(n) / appendSeconds
        say("journal[\(mode.rawValue)]: append \(formatRate(Double(n))) messages, one commit each: "
            + "\(String(format: "%.2f", appendSeconds)) s, \(formatRate(appendRate)) msg/s")

        let t1 = now()
        var drained = 0
        do {
            while true {
                let records = try journal.read(limit: 500)
                guard let last = records.last else { break }
                try journal.remove(through: last.id)
                drained += records.count
            }
        } catch {
            die("\(error)")
        }
        let drainSeconds = now() - t1
        guard drained == n else { die("journal[\(mode.rawValue)]: drained \(drained) of \(n)") }
        let drainRate = Double(n) / drainSeconds
        say("journal[\(mode.rawValue)]: read + remove in batches of 500: \(String(format: "%.2f", drainSeconds)) s, \(formatRate(drainRate)) msg/s")
        say("RESULT journal_\(mode.rawValue)_append_msgs_per_s=\(Int(appendRate)) journal_\(mode.rawValue)_drain_msgs_per_s=\(Int(drainRate))")
        journal.close()
    }
}

// MARK: - MQTT plumbing

struct MQTTFailure: Error { let message: String }

func mqttCheck(_ rc: Int32, _ what: String) {
    if rc != MOSQ_ERR_SUCCESS.rawValue {
        let text = rc == MOSQ_ERR_ERRNO.rawValue ? String(cString: strerror(errno)) : String(cString: mosquitto_strerror(rc))
        die("\(what): \(text)")
    }
}

func readPasswordFile(_ path: String) -> String {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { die("cannot read password file \(path)") }
    return text.trimmingCharacters(in: .newlines)
}

/// State shared between the caller's thread and libmosquitto's loop thread; passed to the C
/// callbacks as userdata through `Unmanaged`.
final class ClientState: @unchecked Sendable {
    let lock = NSLock()
    let connected = DispatchSemaphore(value: 0)
    let done = DispatchSemaphore(value: 0)
    var connackCode: Int32 = -1
    var disconnects = 0
    // publisher
    var acked = 0
    var window: DispatchSemaphore
    var target = 0
    // subscriber
    var received = 0
    var firstAt = 0.0
    var lastAt = 0.0
    var subscribed = false
    var topic = ""
    var qos: Int32 = 1

    init(window: Int) { self.window = DispatchSemaphore(value: window) }
}

func makeClient(id: String, clean: Bool, state: ClientState, options: Options) -> OpaquePointer {
    mosquitto_lib_init()
    let userdata = Unmanaged.passUnretained(state).toOpaque()
    guard let mosq = mosquitto_new(id, clean, userdata) else { die("mosquitto_new failed") }
    if let user = options.string("username") {
        let password = options.string("password-file").map(readPasswordFile)
        mqttCheck(mosquitto_username_pw_set(mosq, user, password), "username/password")
    }
    mosquitto_connect_callback_set(mosq) { _, userdata, rc in
        guard let userdata else { return }
        let state = Unmanaged<ClientState>.fromOpaque(userdata).takeUnretainedValue()
        state.lock.withLock { state.connackCode = rc }
        state.connected.signal()
    }
    mosquitto_disconnect_callback_set(mosq) { _, userdata, _ in
        guard let userdata else { return }
        let state = Unmanaged<ClientState>.fromOpaque(userdata).takeUnretainedValue()
        state.lock.withLock { state.disconnects += 1 }
    }
    return mosq
}

func connectAndWait(_ mosq: OpaquePointer, state: ClientState, host: String, port: Int) {
    mqttCheck(mosquitto_connect(mosq, host, Int32(port), 60), "cannot connect to \(host):\(port)")
    mqttCheck(mosquitto_loop_start(mosq), "mosquitto_loop_start")
    guard state.connected.wait(timeout: .now() + 10) == .success else { die("no CONNACK from \(host):\(port) within 10 s") }
    let rc = state.lock.withLock { state.connackCode }
    guard rc == 0 else { die("broker refused the connection: \(String(cString: mosquitto_connack_string(rc)))") }
}

// MARK: - publish

func runPublish(_ options: Options) throws(UsageError) {
    guard let port = try options.int("port", nil, min: 1) else { throw UsageError(message: "publish needs --port") }
    let host = options.string("host", "127.0.0.1")!
    let count = try options.int("messages", 100_000, min: 1)!
    let deviceCount = try options.int("devices", 3000, min: 1)!
    let rate = try options.double("rate", 0)
    let qos = try options.int("qos", 1, min: 0)!
    guard qos <= 2 else { throw UsageError(message: "--qos must be 0, 1 or 2") }
    let prefix = options.string("prefix", "autovolt")!
    let startEnergy = try options.double("start-energy", 1000)
    let inflight = try options.int("inflight", 1000, min: 1)!
    let timeout = try options.double("timeout", 300)
    let interval = try options.int("interval", 30, min: 1)!

    let names = deviceNames(deviceCount)
    let topics = names.map { "\(prefix)/\($0)/telemetry" }
    var rng = SplitMix64(seed: UInt64(truncatingIfNeeded: wallMillis()))
    var energy = (0..<deviceCount).map { _ in Int(startEnergy * 10) + rng.below(10_000) }
    var sent = [Int](repeating: 0, count: deviceCount)
    // Device times: the k-th reading of a device is `interval` seconds after its (k-1)-th, and
    // the last one is about now. Readings of one device never share a timestamp (that would be a
    // conflict, not a new reading), the order per device is the publish order, and everything
    // lies in the worker's trusted clock window (a backlog of readings, as after an outage).
    let perDevice = (count + deviceCount - 1) / deviceCount
    let firstTS = wallMillis() / 1000 - Int64((perDevice - 1) * interval)

    let state = ClientState(window: qos == 0 ? Int.max / 2 : inflight)
    state.target = count
    let mosq = makeClient(id: options.string("client-id", "autovolt-bench-pub-\(getpid())")!, clean: true, state: state, options: options)
    defer { mosquitto_destroy(mosq) }
    mqttCheck(mosquitto_int_option(mosq, MOSQ_OPT_SEND_MAXIMUM, Int32(min(inflight, 65535))), "send maximum")
    mosquitto_publish_callback_set(mosq) { _, userdata, _ in
        guard let userdata else { return }
        let state = Unmanaged<ClientState>.fromOpaque(userdata).takeUnretainedValue()
        let finished: Bool = state.lock.withLock {
            state.acked += 1
            return state.acked == state.target
        }
        state.window.signal()
        if finished { state.done.signal() }
    }
    connectAndWait(mosq, state: state, host: host, port: port)

    let t0 = now()
    var published = 0
    for i in 0..<count {
        if rate > 0 {
            let due = t0 + Double(i) / rate
            let wait = due - now()
            if wait > 0 { usleep(useconds_t(wait * 1e6)) }
        }
        if qos > 0 {
            guard state.window.wait(timeout: .now() + timeout) == .success else {
                die("publish: no PUBACK for \(Int(timeout)) s (\(state.lock.withLock { state.acked }) of \(published) acknowledged)")
            }
        }
        let d = i % deviceCount
        energy[d] += 1 + rng.below(300)
        let ts = firstTS + Int64(sent[d] * interval)
        sent[d] += 1
        let bits = (0..<4).map { _ in rng.below(3) == 0 ? "1" : "0" }.joined(separator: ",")
        let text = "{\"esp32_name\":\"\(names[d])\",\"timestamp\":\(ts),\"energy_wh_total\":\(energyText(energy[d])),"
            + "\"switch_state\":[\(bits)],\"seq\":\(sent[d])}"
        var utf8 = Array(text.utf8)
        let rc = utf8.withUnsafeMutableBytes { buffer in
            mosquitto_publish(mosq, nil, topics[d], Int32(buffer.count), buffer.baseAddress, Int32(qos), false)
        }
        mqttCheck(rc, "publish")
        published += 1
    }
    let publishedAt = now()
    if qos > 0 {
        let remaining = max(1, timeout - (publishedAt - t0))
        if state.lock.withLock({ state.acked }) < count, state.done.wait(timeout: .now() + remaining) != .success {
            let acked = state.lock.withLock { state.acked }
            say("published \(published) acked \(acked) elapsed \(String(format: "%.2f", now() - t0)) s")
            die("publish: only \(acked) of \(count) messages acknowledged within \(Int(timeout)) s")
        }
    }
    let elapsed = now() - t0
    let acked = qos > 0 ? state.lock.withLock { state.acked } : published
    mosquitto_disconnect(mosq)
    mosquitto_loop_stop(mosq, false)
    say("publish: published \(published) acked \(acked) elapsed \(String(format: "%.2f", elapsed)) s "
        + "\(formatRate(Double(acked) / elapsed)) msg/s (qos \(qos), \(deviceCount) devices, in flight <= \(inflight))")
    say("RESULT publish_msgs_per_s=\(Int(Double(acked) / elapsed)) publish_seconds=\(String(format: "%.3f", elapsed))")
}

// MARK: - subscribe

func runSubscribe(_ options: Options) throws(UsageError) {
    guard let port = try options.int("port", nil, min: 1) else { throw UsageError(message: "subscribe needs --port") }
    guard let count = try options.int("count", nil, min: 1) else { throw UsageError(message: "subscribe needs --count") }
    let host = options.string("host", "127.0.0.1")!
    let qos = try options.int("qos", 1, min: 0)!
    let timeout = try options.double("timeout", 300)
    let state = ClientState(window: 0)
    state.target = count
    state.topic = options.string("topic", "autovolt/+/telemetry")!
    state.qos = Int32(min(qos, 2))
    let mosq = makeClient(id: options.string("client-id", "autovolt-bench-sub-\(getpid())")!, clean: true, state: state, options: options)
    defer { mosquitto_destroy(mosq) }
    mosquitto_subscribe_callback_set(mosq) { _, userdata, _, _, _ in
        guard let userdata else { return }
        let state = Unmanaged<ClientState>.fromOpaque(userdata).takeUnretainedValue()
        let first = state.lock.withLock { () -> Bool in
            defer { state.subscribed = true }
            return !state.subscribed
        }
        if first { say("subscribed \(state.topic) qos \(state.qos)") }
    }
    mosquitto_message_callback_set(mosq) { _, userdata, _ in
        guard let userdata else { return }
        let state = Unmanaged<ClientState>.fromOpaque(userdata).takeUnretainedValue()
        let t = now()
        let finished: Bool = state.lock.withLock {
            state.received += 1
            if state.received == 1 { state.firstAt = t }
            state.lastAt = t
            return state.received == state.target
        }
        if finished { state.done.signal() }
    }
    connectAndWait(mosq, state: state, host: host, port: port)
    mqttCheck(mosquitto_subscribe(mosq, nil, state.topic, state.qos), "subscribe")
    let ok = state.done.wait(timeout: .now() + timeout) == .success
    mosquitto_disconnect(mosq)
    mosquitto_loop_stop(mosq, false)
    let (received, first, last) = state.lock.withLock { (state.received, state.firstAt, state.lastAt) }
    let span = max(last - first, 1e-9)
    // n messages span n-1 inter-arrival gaps.
    let rate = received > 1 ? Double(received - 1) / span : 0
    say("subscribe: received \(received) of \(count) in \(String(format: "%.2f", span)) s (first to last): \(formatRate(rate)) msg/s (qos \(qos))")
    say("RESULT subscribe_msgs_per_s=\(Int(rate)) subscribe_received=\(received)")
    if !ok { die("subscribe: timed out after \(Int(timeout)) s with \(received) of \(count) messages") }
}

// MARK: - main

let usage = """
    usage: autovolt-bench core [--messages N] [--devices D]
           autovolt-bench journal [--messages N] [--full-messages M]
           autovolt-bench ledger [--readings N] [--devices D]
           autovolt-bench publish --port P [--host H] [--messages N] [--devices D] [--rate R] [--qos 1]
                                  [--prefix autovolt] [--start-energy E] [--interval S] [--inflight W] [--timeout S]
                                  [--client-id ID] [--username U --password-file F]
           autovolt-bench subscribe --port P [--host H] --count N [--topic 'autovolt/+/telemetry'] [--qos 1]
                                    [--client-id ID] [--timeout S] [--username U --password-file F]
    """

/// Pure-core ledger derivation: N readings spread over D devices (30 s apart, with resets,
/// glitches and gaps now and then), derived device by device on one thread; best of 3.
func runLedger(_ options: Options) throws(UsageError) {
    let total = try options.int("readings", 1_000_000, min: 1) ?? 1_000_000
    let devices = try options.int("devices", 1_000, min: 1) ?? 1_000
    let perDevice = max(2, total / devices)
    var rng = SplitMix64(seed: 7)
    let zone = TimeZone(identifier: "Asia/Kolkata") ?? .gmt
    let start: Int64 = 1_793_507_400_000
    var fleets: [(DeviceInfo, [LedgerReading])] = []
    for d in 0..<devices {
        let device = DeviceInfo(esp32Name: "dev-\(d)", classroom: "room-\(d % 50)")
        var counter = Double(1000 + rng.below(100_000))
        var time = start
        var readings: [LedgerReading] = []
        readings.reserveCapacity(perDevice)
        for i in 0..<perDevice {
            time += rng.below(200) == 0 ? 3_600_000 : 30_000
            counter += Double(rng.below(300)) / 10
            var value = counter
            let roll = rng.below(1000)
            if roll == 0 { counter = 0; value = 0 } else if roll == 1 { value = 0 }
            // Real event hashes: 64 hex digits, so entry ids hash as many bytes as in the worker.
            let hash = EventHash.compute(esp32Name: device.esp32Name, timestampAsSent: String(time), energyWhTotal: value)
            readings.append(LedgerReading(eventHash: hash, time: time, energyWh: value, bootID: "b", seq: Int64(i)))
        }
        fleets.append((device, readings))
    }
    let count = fleets.reduce(0) { $0 + $1.1.count }
    var best = Double.infinity
    var entries = 0
    for _ in 0..<3 {
        let t = now()
        entries = 0
        for (device, readings) in fleets {
            var calendar = LocalCalendar(timeZone: zone)
            entries += LedgerDeriver.derive(readings, device: device, calendar: &calendar).count
        }
        best = min(best, now() - t)
    }
    say("ledger derivation: \(formatRate(Double(count) / best)) readings/s (\(count) readings, \(devices) devices, \(entries) entries, \(String(format: "%.0f", best / Double(count) * 1e9)) ns/reading, one thread, best of 3)")
    say("state kept in memory per tracked device between steps: \(MemoryLayout<LedgerReading>.stride) bytes per reading in a step's window; nothing between steps (the state lives in MongoDB)")
    say("RESULT ledger_readings_per_s=\(Int(Double(count) / best)) entries=\(entries)")
}

/// Pure-core accounting of one campus day: D devices x N readings (30 s apart, local day in
/// Asia/Kolkata, a few resets, rollbacks and glitches), ledger entries derived per device with
/// `LedgerDeriver.derive` (timed separately), then `Aggregator.daily` for every device with a
/// `TariffBook` of five versions (campus rate, a classroom's own rate, a mid-day campus change
/// and a correction of it); one thread, best of 3.
func runAccounting(_ options: Options) throws(UsageError) {
    let devices = try options.int("devices", 500, min: 1) ?? 500
    let perDevice = try options.int("readings", 2_880, min: 2) ?? 2_880
    let zone = TimeZone(identifier: "Asia/Kolkata") ?? .gmt
    var calendar = LocalCalendar(timeZone: zone)
    let date = CivilDate(year: 2026, month: 11, day: 5)
    let dayStart = calendar.startOfDay(date)
    let hour: Int64 = 3_600_000
    // Campus 7.00 INR/kWh from a month before; room-0 (10 devices) its own 9.00; the campus rate
    // changes at 13:00 that day to 7.50, corrected the same afternoon to 7.25 (same start, added later).
    let tariffs = TariffBook([
        Tariff(id: "tv-campus-1", costPerKwh: 7.0, currency: "INR", effectiveFrom: dayStart - 30 * 24 * hour, classroom: nil, createdAt: 1),
        Tariff(id: "tv-room-0", costPerKwh: 9.0, currency: "INR", effectiveFrom: dayStart - 10 * 24 * hour, classroom: "room-0", createdAt: 2),
        Tariff(id: "tv-campus-2", costPerKwh: 7.5, currency: "INR", effectiveFrom: dayStart + 13 * hour, classroom: nil, createdAt: 3),
        Tariff(id: "tv-campus-2b", costPerKwh: 7.25, currency: "INR", effectiveFrom: dayStart + 13 * hour, classroom: nil, createdAt: 4),
        Tariff(id: "tv-future", costPerKwh: 8.0, currency: "INR", effectiveFrom: dayStart + 40 * 24 * hour, classroom: nil, createdAt: 5),
    ])

    var rng = SplitMix64(seed: 11)
    var fleet: [(DeviceInfo, [LedgerReading])] = []
    fleet.reserveCapacity(devices)
    for d in 0..<devices {
        let device = DeviceInfo(esp32Name: "dev-\(d)", classroom: "room-\(d / 10)")
        var counter = Double(1000 + rng.below(100_000))
        var readings: [LedgerReading] = []
        readings.reserveCapacity(perDevice)
        for i in 0..<perDevice {
            counter += Double(rng.below(300)) / 10
            var value = counter
            let roll = rng.below(2000)
            if roll == 0 { counter = Double(rng.below(50)); value = counter }      // reset to zero
            else if roll == 1 { value = 0 }                                          // glitch
            else if roll == 2 { counter = max(0, counter - 20); value = counter }   // rollback
            readings.append(LedgerReading(eventHash: "d\(d)-\(i)", time: dayStart + 15_000 + Int64(i) * 30_000, energyWh: value))
        }
        fleet.append((device, readings))
    }
    let readingCount = fleet.reduce(0) { $0 + $1.1.count }

    // Ledger entries of the day per device (what the worker stores), derived first.
    var deriveBest = Double.infinity
    var perDeviceEntries: [(DeviceInfo, [AggregateEntry], billableWh: Double)] = []
    for _ in 0..<3 {
        let t = now()
        var out: [(DeviceInfo, [LedgerEntry])] = []
        out.reserveCapacity(devices)
        for (device, readings) in fleet {
            var cal = LocalCalendar(timeZone: zone)
            out.append((device, LedgerDeriver.derive(readings, device: device, calendar: &cal)))
        }
        deriveBest = min(deriveBest, now() - t)
        perDeviceEntries = out.map { device, entries in
            let day = entries.filter { $0.date == date }
            return (device, day.map { AggregateEntry(start: $0.start, end: $0.end, deltaWh: $0.deltaWh, billable: $0.billable,
                                                     confidence: $0.confidence) },
                    day.filter(\.billable).reduce(0) { $0 + $1.deltaWh })
        }
    }
    let entryCount = perDeviceEntries.reduce(0) { $0 + $1.1.count }

    var best = Double.infinity
    var figures: [DailyFigures] = []
    for run in 1...3 {
        let t = now()
        var out: [DailyFigures] = []
        out.reserveCapacity(devices)
        for (device, entries, _) in perDeviceEntries {
            var cal = LocalCalendar(timeZone: zone)   // one per device and day, as AggregationStore does
            out.append(Aggregator.daily(date: date, esp32Name: device.esp32Name, classroom: device.classroom, entries: entries,
                                        tariffs: tariffs, calendar: &cal))
        }
        let elapsed = now() - t
        best = min(best, elapsed)
        figures = out
        say("accounting: run \(run): Aggregator.daily x \(devices) devices: \(String(format: "%.1f", elapsed * 1000)) ms")
    }
    // Sanity: the day's energy is the billable ledger energy, every device priced, the mid-day split seen.
    for (f, (_, _, billable)) in zip(figures, perDeviceEntries) where abs(f.energyWh - billable) > 1e-6 * max(1, billable) {
        die("accounting: \(f.esp32Name): aggregate \(f.energyWh) Wh, ledger \(billable) Wh")
    }
    guard figures.allSatisfy({ $0.cost != nil }) else { die("accounting: a device has no cost") }
    let split = figures.filter { $0.costVersionIDs.count > 1 }.count
    let energy = figures.reduce(0) { $0 + $1.energyWh }
    let cost = figures.reduce(0) { $0 + ($1.cost ?? 0) }
    let monthT = now()
    let month = Aggregator.monthly(month: Aggregator.monthKey(date), days: figures)
    let monthMs = (now() - monthT) * 1000

    say("accounting: \(devices) devices x \(perDevice) readings = \(formatRate(Double(readingCount))) readings, "
        + "\(formatRate(Double(entryCount))) ledger entries of \(date) (Asia/Kolkata)")
    say("accounting: LedgerDeriver.derive (not part of the goal): \(String(format: "%.1f", deriveBest * 1000)) ms, "
        + "\(formatRate(Double(readingCount) / deriveBest)) readings/s, best of 3")
    say("accounting: Aggregator.daily for all \(devices) devices: \(String(format: "%.1f", best * 1000)) ms best of 3, "
        + "\(String(format: "%.0f", best / Double(max(entryCount, 1)) * 1e9)) ns/entry (goal < 200 ms: \(best < 0.2 ? "met" : "NOT met"))")
    say("accounting: campus day \(String(format: "%.3f", energy / 1000)) kWh, \(String(format: "%.2f", cost)) INR; "
        + "\(split) devices priced by two versions (the 13:00 change); month sum \(String(format: "%.3f", month.energyWh / 1000)) kWh "
        + "in \(String(format: "%.2f", monthMs)) ms")
    say("RESULT accounting_daily_ms=\(String(format: "%.3f", best * 1000)) accounting_ns_per_entry=\(Int((best / Double(max(entryCount, 1)) * 1e9).rounded())) "
        + "derive_ms=\(String(format: "%.3f", deriveBest * 1000)) entries=\(entryCount) devices=\(devices)")
}

let arguments = CommandLine.arguments
guard arguments.count >= 2 else { die(usage, code: 64) }
let rest = arguments.dropFirst(2)
do throws(UsageError) {
    switch arguments[1] {
    case "core":
        try runCore(Options(rest, allowed: ["messages", "devices"]))
    case "journal":
        try runJournal(Options(rest, allowed: ["messages", "full-messages"]))
    case "ledger":
        try runLedger(Options(rest, allowed: ["readings", "devices"]))
    case "accounting":
        try runAccounting(Options(rest, allowed: ["devices", "readings"]))
    case "publish":
        try runPublish(Options(rest, allowed: ["port", "host", "messages", "devices", "rate", "qos", "prefix", "start-energy",
                                               "interval", "inflight", "timeout", "client-id", "username", "password-file"]))
    case "subscribe":
        try runSubscribe(Options(rest, allowed: ["port", "host", "count", "topic", "qos", "client-id", "timeout",
                                                 "username", "password-file"]))
    case "-h", "--help", "help":
        say(usage)
    default:
        die("unknown subcommand \"\(arguments[1])\"\n\(usage)", code: 64)
    }
} catch {
    die("\(error.message)\n\(usage)", code: 64)
}
