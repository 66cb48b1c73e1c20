import Foundation
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The package root: the nearest directory above this file that holds `Package.swift`.
public var packageRoot: URL {
    var dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    while dir.path != "/" {
        if FileManager.default.fileExists(atPath: dir.appendingPathComponent("Package.swift").path) {
            return dir
        }
        dir = dir.deletingLastPathComponent()
    }
    return URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
}

/// A TCP port that was free on 127.0.0.1 a moment ago (bind to port 0, read it, close).
public func freeTCPPort() -> Int {
    #if canImport(Glibc)
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    #else
    let fd = socket(AF_INET, SOCK_STREAM, 0)
    #endif
    guard fd >= 0 else { return 0 }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_port = 0
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, len) }
    }
    guard bound == 0 else { return 0 }
    let named = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    guard named == 0 else { return 0 }
    return Int(UInt16(bigEndian: addr.sin_port))
}

public struct DevMongoServerError: Error, CustomStringConvertible {
    public let description: String
}

/// `scripts/dev-mongo` (a MongoDB wire-protocol server for tests) run as a child process.
///
/// Starts on a free port (`--port 0`), or on `port` when given; `restart()` reuses the port and
/// the data file, so a `MongoClient` can reconnect after an outage. Stopped on deinit.
public final class DevMongoServer: @unchecked Sendable {
    public private(set) var port: Int
    public let dataFile: URL?
    public let replicaSetName: String?
    /// More command-line options, e.g. `["--delay", "COLL:MS"]`.
    public let extraArguments: [String]

    private let lock = NSLock()
    private var process: Process?
    private var output = Data()  // stdout + stderr, the last 64 KiB, for error messages
    private var announcedPort: Int?

    /// Starts the server and waits (up to `timeout`) for its
    /// `dev-mongo listening on 127.0.0.1:PORT` line.
    public init(port: Int = 0, dataFile: URL? = nil, replicaSetName: String? = nil,
                extraArguments: [String] = [], timeout: TimeInterval = 20) throws {
        self.port = port
        self.dataFile = dataFile
        self.replicaSetName = replicaSetName
        self.extraArguments = extraArguments
        try start(timeout: timeout)
    }

    deinit { stop() }

    /// `mongodb://127.0.0.1:PORT/DB`
    public func uri(database: String = "autovolt_test") -> String {
        "mongodb://127.0.0.1:\(port)/\(database)"
    }

    public var isRunning: Bool {
        lock.lock(); defer { lock.unlock() }
        return process?.isRunning ?? false
    }

    /// What the server printed (stdout and stderr, the last 64 KiB).
    public var log: String {
        lock.lock(); defer { lock.unlock() }
        return String(decoding: output, as: UTF8.self)
    }

    private func start(timeout: TimeInterval) throws {
        let script = packageRoot.appendingPathComponent("scripts/dev-mongo")
        guard FileManager.default.fileExists(atPath: script.path) else {
            throw DevMongoServerError(description: "\(script.path) does not exist")
        }
        var args = ["--port", String(port)]
        if let dataFile { args += ["--data", dataFile.path] }
        if let replicaSetName { args += ["--replset", replicaSetName] }
        args += extraArguments

        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
        // Foundation.Process on Linux passes the spawning thread's signal mask on to the child
        // (swift-corelibs-foundation#4772); tests run on Dispatch threads, which block SIGTERM,
        // so the server would ignore `stop()`. Clear the mask, then exec the real command.
        p.arguments = ["-c", Self.unblockSignalsAndExec, script.path] + args
        let pipe = Pipe()
        p.standardOutput = pipe
        p.standardError = pipe
        p.standardInput = FileHandle.nullDevice

        let ready = DispatchSemaphore(value: 0)
        lock.lock()
        output.removeAll()
        announcedPort = nil
        lock.unlock()
        pipe.fileHandleForReading.readabilityHandler = { [weak self] handle in
            let chunk = handle.availableData
            if chunk.isEmpty {  // EOF: the process is gone
                handle.readabilityHandler = nil
                ready.signal()
                return
            }
            guard let self else { return }
            self.lock.lock()
            self.output.append(chunk)
            if self.output.count > 65536 { self.output.removeFirst(self.output.count - 65536) }
            var found = false
            if self.announcedPort == nil,
               let port = Self.parseListeningPort(String(decoding: self.output, as: UTF8.self)) {
                self.announcedPort = port
                found = true
            }
            self.lock.unlock()
            if found { ready.signal() }
        }
        p.terminationHandler = { _ in ready.signal() }  // exited before announcing a port
        do {
            try p.run()
        } catch {
            pipe.fileHandleForReading.readabilityHandler = nil
            throw DevMongoServerError(description: "cannot start dev-mongo: \(error)")
        }
        lock.lock()
        process = p
        lock.unlock()

        _ = ready.wait(timeout: .now() + timeout)
        lock.lock()
        let got = announcedPort
        lock.unlock()
        guard let got else {
            stop()
            throw DevMongoServerError(description: "dev-mongo did not report 'listening' within \(timeout) s; output:\n\(log)")
        }
        port = got
    }

    private static let unblockSignalsAndExec =
        "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); "
        + "os.execv(sys.executable, [sys.executable] + sys.argv[1:])"

    static func parseListeningPort(_ text: String) -> Int? {
        for line in text.split(separator: "\n") {
            let prefix = "dev-mongo listening on 127.0.0.1:"
            if let r = line.range(of: prefix) {
                let digits = line[r.upperBound...].prefix(while: \.isNumber)
                if let port = Int(digits) { return port }
            }
        }
        return nil
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL. Idempotent.
    public func stop() {
        lock.lock()
        let p = process
        process = nil
        lock.unlock()
        guard let p else { return }
        if p.isRunning {
            p.terminate()
            let deadline = Date().addingTimeInterval(5)
            while p.isRunning && Date() < deadline { usleep(20_000) }
            if p.isRunning { Foundation.kill(p.processIdentifier, SIGKILL) }
        }
        p.waitUntilExit()
    }

    /// SIGKILL now (an abrupt outage).
    public func kill() {
        lock.lock()
        let p = process
        process = nil
        lock.unlock()
        guard let p else { return }
        if p.isRunning { Foundation.kill(p.processIdentifier, SIGKILL) }
        p.waitUntilExit()
    }

    /// Stops the server if running, then starts it again on the same port with the same data
    /// file. The port may be refused for a moment after the old process died; retried briefly.
    public func restart(timeout: TimeInterval = 20) throws {
        stop()
        let deadline = Date().addingTimeInterval(timeout)
        while true {
            do {
                try start(timeout: max(1, deadline.timeIntervalSinceNow))
                return
            } catch {
                if Date() >= deadline { throw error }
                usleep(200_000)
            }
        }
    }
}
