import AutoVoltTestSupport
import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A datagram socket bound where `NOTIFY_SOCKET` points, as systemd's is; collects what arrives.
// @unchecked: `received` only under `lock`; the socket is immutable and recv() is thread-safe.
final class NotifySocket: @unchecked Sendable {
    let path: String
    private let fd: Int32
    private let lock = NSLock()
    private var received: [String] = []

    init() throws {
        // sun_path holds 108 bytes: a short name in /tmp, not the (long) temporary directory.
        path = "/tmp/autovolt-notify-\(UUID().uuidString.prefix(8)).sock"
        fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw HarnessError("socket: errno \(errno)") }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard bound == 0 else { close(fd); throw HarnessError("bind \(path): errno \(errno)") }
        var timeout = timeval(tv_sec: 0, tv_usec: 50_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit {
        close(fd)
        unlink(path)
    }

    /// Every datagram so far, in order of arrival (reads what is waiting first).
    var messages: [String] {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            let text = String(decoding: buffer[..<n], as: UTF8.self)
            lock.withLock { received.append(text) }
        }
        return lock.withLock { received }
    }

    /// The datagrams that contain `line` as one of their lines.
    func count(_ line: String) -> Int { messages.filter { $0.split(separator: "\n").contains(Substring(line)) }.count }
}

// In the serialized integration suite: each of these blocks a thread of the 2-core cooperative
// pool while it waits, and running them beside the other suites starved the HTTP timing tests.
extension IntegrationTests {
    @Test func readyThenWatchdogPingsThenStoppingOnSigterm() throws {
        let rig = try Rig()
        let socket = try NotifySocket()
        // WATCHDOG_USEC 0.4 s: a ping every 0.2 s (half of it); no WATCHDOG_PID, so this process.
        let worker = try rig.startWorker(extra: ["NOTIFY_SOCKET": socket.path, "WATCHDOG_USEC": "400000"])
        #expect(eventually(timeout: 20) { socket.count("READY=1") == 1 }, "\(socket.messages)\n\(worker.log)")
        #expect(eventually(timeout: 20) { socket.count("WATCHDOG=1") >= 3 }, "\(socket.messages)")
        // READY comes before any ping, and says what the worker does.
        let ready = try #require(socket.messages.first)
        #expect(ready.contains("READY=1") && ready.contains("STATUS=ingesting"), "\(ready)")
        #expect(socket.count("STOPPING=1") == 0)
        #expect(worker.stop() == 0)
        #expect(eventually(timeout: 5) { socket.count("STOPPING=1") == 1 }, "\(socket.messages)")
        // STOPPING is the last word: no ping after it.
        let messages = socket.messages
        let stopping = try #require(messages.lastIndex { $0.contains("STOPPING=1") })
        #expect(!messages[stopping...].contains { $0.contains("WATCHDOG=1") }, "\(messages)")
    }

    /// A stage that stops going round its loop stops the pings (systemd then restarts the
    /// worker): the ledger is held by a test hook, and between two "stalled" log lines, one per
    /// watchdog interval, no WATCHDOG=1 arrives, while the other stages still store readings.
    @Test func noWatchdogPingWhileAStageIsStalled() throws {
        let rig = try Rig()
        let socket = try NotifySocket()
        let worker = try rig.startWorker(extra: [
            "NOTIFY_SOCKET": socket.path, "WATCHDOG_USEC": "400000",
            "AUTOVOLT_TEST_STALL_STAGE": "ledger", "AUTOVOLT_TEST_STAGE_SILENCE_MS": "1000",
        ])
        let stalledLine = "ledger stage stalled; withholding the systemd watchdog ping"
        func stalledLogs() -> Int { worker.log.components(separatedBy: stalledLine).count - 1 }
        #expect(eventually(timeout: 20) { stalledLogs() >= 1 }, "\(worker.log)")
        let pingsAtFirst = socket.count("WATCHDOG=1")
        #expect(eventually(timeout: 20) { stalledLogs() >= 3 }, "\(worker.log)")
        #expect(socket.count("WATCHDOG=1") == pingsAtFirst, "\(socket.messages)")
        // Ingestion itself goes on: only the held stage is stalled.
        try rig.publisher().publish([reading("lab-101", 1)])
        #expect(rig.waitForCount("telemetry_events", 1))
        #expect(worker.stop() == 0)
    }

    @Test func withoutWatchdogUsecThereAreNoPings() throws {
        let rig = try Rig()
        let socket = try NotifySocket()
        let worker = try rig.startWorker(extra: ["NOTIFY_SOCKET": socket.path])
        #expect(eventually(timeout: 20) { socket.count("READY=1") == 1 }, "\(socket.messages)\n\(worker.log)")
        // A positive signal instead of a wait: the worker stores a reading, so its loop has run.
        try rig.publisher().publish([reading("lab-101", 1)])
        #expect(rig.waitForCount("telemetry_events", 1))
        #expect(worker.stop() == 0)
        #expect(eventually(timeout: 5) { socket.count("STOPPING=1") == 1 }, "\(socket.messages)")
        #expect(socket.count("WATCHDOG=1") == 0, "\(socket.messages)")
    }
}

/// A failure of the test's own machinery (a socket, a helper program), not of the worker.
struct HarnessError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
