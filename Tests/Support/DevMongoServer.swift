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

// MARK: - Fail points and the TTL monitor (docs/dev-mongo.md, "Fail points")

import AutoVoltMongo

/// How often a fail point fires, counted as mongod counts (`configureFailPoint`'s `mode`).
public enum DevMongoFailPointMode: Sendable, Hashable {
    /// Fires on every matching command (document) until turned off.
    case alwaysOn
    case off
    /// Fires on the next N matching commands (documents), then turns itself off.
    case times(Int)
    /// Lets the next N matching commands (documents) pass, then fires on every one.
    case skip(Int)

    var bson: BSON {
        switch self {
        case .alwaysOn: return "alwaysOn"
        case .off: return "off"
        case .times(let n): return ["times": .int64(Int64(n))]
        case .skip(let n): return ["skip": .int64(Int64(n))]
        }
    }
}

/// The `writeConcernError` a `failCommand` fail point adds to the reply of a command it lets
/// run (the write is applied, then reported as not acknowledged by the write concern).
public struct DevMongoWriteConcernError: Sendable, Hashable {
    public var code: Int
    public var codeName: String
    public var errmsg: String
    public var errInfo: BSONDocument?

    public init(code: Int, codeName: String, errmsg: String, errInfo: BSONDocument? = nil) {
        self.code = code
        self.codeName = codeName
        self.errmsg = errmsg
        self.errInfo = errInfo
    }

    /// mongod's answer when `w: "majority"` was not reached within `wtimeout`.
    public static let timeout = DevMongoWriteConcernError(
        code: 64, codeName: "WriteConcernFailed", errmsg: "waiting for replication timed out",
        errInfo: ["wtimeout": true])

    /// The primary shutting down while waiting for the write concern (retryable: a retryable
    /// write's reply carries the `RetryableWriteError` label).
    public static let shutdown = DevMongoWriteConcernError(
        code: 91, codeName: "ShutdownInProgress", errmsg: "Replication is being shut down")

    var bson: BSON {
        var d: BSONDocument = ["code": .int64(Int64(code)), "codeName": .string(codeName),
                               "errmsg": .string(errmsg)]
        if let errInfo { d["errInfo"] = .document(errInfo) }
        return .document(d)
    }
}

extension DevMongoServer {
    public typealias FailPointMode = DevMongoFailPointMode
    public typealias WriteConcernFailure = DevMongoWriteConcernError

    /// mongod's `failCommand` fail point: the next matching commands (names as sent, e.g.
    /// `"insert"`, `"update"`, `"findAndModify"`, `"find"`, `"aggregate"`, `"hello"`; case
    /// does not matter) fail, as `mode` counts. What a firing does, in this order:
    /// `closeConnection` closes the socket without a reply (nothing runs); `blockTimeMS` waits
    /// first (other connections go on); `errorCode` fails the command (`ok: 0`, `codeName` as
    /// mongod names it, `errorLabels` when given, else `RetryableWriteError` on a retryable
    /// write with a retryable code); otherwise `writeConcernError` lets the write run and
    /// reports it (write commands only). `appName` limits it to clients whose handshake carried
    /// that application name (`MongoClient`'s default is `autovolt-worker`), `namespace`
    /// (`"db.collection"`) to one collection. Returns how often it had fired before.
    @discardableResult
    public func failCommand(_ commands: [String], mode: FailPointMode, errorCode: Int? = nil,
                            errorLabels: [String]? = nil,
                            writeConcernError: WriteConcernFailure? = nil,
                            blockTimeMS: Int? = nil, closeConnection: Bool = false,
                            appName: String? = nil, namespace: String? = nil) throws -> Int {
        var data: BSONDocument = ["failCommands": .array(commands.map { .string($0) })]
        if let errorCode { data["errorCode"] = .int64(Int64(errorCode)) }
        if let errorLabels { data["errorLabels"] = .array(errorLabels.map { .string($0) }) }
        if let writeConcernError { data["writeConcernError"] = writeConcernError.bson }
        if let blockTimeMS {
            data["blockConnection"] = true
            data["blockTimeMS"] = .int64(Int64(blockTimeMS))
        }
        if closeConnection { data["closeConnection"] = true }
        if let appName { data["appName"] = .string(appName) }
        if let namespace { data["namespace"] = .string(namespace) }
        return try configureFailPoint("failCommand", mode: mode, data: data)
    }

    /// dev-mongo's `devMongoWriteError` fail point (mongod has none like it): each document of
    /// an insert, or statement of an update/delete/findAndModify, in `collection` (any when
    /// nil) whose fields equal every field of `match` (the statement's filter equalities or
    /// the document it would write or delete; an empty `match` is every one) is not written and
    /// gets a write error `{index, code, errmsg}`; the rest of the batch goes on
    /// (`ordered: false`) or stops there (`ordered: true`); findAndModify fails with `code`.
    /// `commands` defaults to all four. Each refused document uses one of `.times(n)`.
    /// Code 11000 is how to show the losing upsert of a race as a plain duplicate key;
    /// `raceUpserts` shows the race itself.
    @discardableResult
    public func failDocuments(collection: String? = nil, commands: [String]? = nil,
                              match: BSONDocument = [:], code: Int, errmsg: String? = nil,
                              mode: FailPointMode = .alwaysOn) throws -> Int {
        var data: BSONDocument = ["code": .int64(Int64(code)), "match": .document(match)]
        if let collection { data["collection"] = .string(collection) }
        if let commands { data["commands"] = .array(commands.map { .string($0) }) }
        if let errmsg { data["errmsg"] = .string(errmsg) }
        return try configureFailPoint("devMongoWriteError", mode: mode, data: data)
    }

    /// dev-mongo's `devMongoUpsertRace` fail point: an upsert (update or findAndModify) in
    /// `collection` (any when nil) that finds nothing and would insert a document matching
    /// `match` loses a race to an identical upsert on another connection, which inserts first.
    /// The outcome is mongod's: without a unique index, two documents; with a unique index on
    /// exactly the filter's equality fields, mongod retries the upsert as an update; otherwise
    /// E11000 (a write error, or a failed findAndModify).
    @discardableResult
    public func raceUpserts(collection: String? = nil, match: BSONDocument = [:],
                            mode: FailPointMode = .times(1)) throws -> Int {
        var data: BSONDocument = ["match": .document(match)]
        if let collection { data["collection"] = .string(collection) }
        return try configureFailPoint("devMongoUpsertRace", mode: mode, data: data)
    }

    /// Turns every fail point off.
    public func clearFailPoints() throws {
        for name in ["failCommand", "devMongoWriteError", "devMongoUpsertRace"] {
            try configureFailPoint(name, mode: .off, data: [:])
        }
    }

    /// One pass of the TTL monitor now, as if the clock read `now`: removes what mongod's TTL
    /// monitor would remove at that time (date older than `expireAfterSeconds`). Returns how
    /// many documents it removed.
    @discardableResult
    public func runTTLMonitor(now: Date = Date()) throws -> Int {
        let reply = try adminCommand(["devMongoRunTTLMonitor": 1, "now": .datetime(now)])
        return reply["deleted"]?.intValue ?? 0
    }

    /// `configureFailPoint` on `admin`; returns how often that fail point fired so far.
    @discardableResult
    public func configureFailPoint(_ name: String, mode: FailPointMode,
                                   data: BSONDocument) throws -> Int {
        let reply = try adminCommand(["configureFailPoint": .string(name), "mode": mode.bson,
                                      "data": .document(data)])
        return reply["count"]?.intValue ?? 0
    }

    /// Runs a command on `admin` over a connection of its own: one OP_MSG on a plain socket,
    /// with no handshake, so that no fail point (not even one on `hello` or with
    /// `closeConnection`) stands in its way. An `ok: 0` reply throws.
    @discardableResult
    public func adminCommand(_ command: BSONDocument, timeout: TimeInterval = 30) throws -> BSONDocument {
        var doc = command
        doc["$db"] = "admin"
        let bson = try doc.toBSONBytes()
        var message: [UInt8] = []
        func int32(_ v: Int32) { withUnsafeBytes(of: v.littleEndian) { message += $0 } }
        int32(Int32(16 + 4 + 1 + bson.count))  // messageLength
        int32(1)                                // requestID
        int32(0)                                // responseTo
        int32(2013)                             // OP_MSG
        int32(0)                                // flagBits
        message.append(0)                       // section kind 0: the body
        message += bson

        let fd = try Self.openSocket(port: port, timeout: timeout)
        defer { close(fd) }
        try Self.sendAll(fd, message)
        let header = try Self.receive(fd, 16)
        let length = header.withUnsafeBytes { Int(Int32(littleEndian: $0.loadUnaligned(as: Int32.self))) }
        guard length > 21 else { throw DevMongoServerError(description: "dev-mongo sent a bad reply length \(length)") }
        let body = try Self.receive(fd, length - 16)
        guard body[4] == 0 else { throw DevMongoServerError(description: "dev-mongo replied with section kind \(body[4])") }
        let reply = try BSONDocument(bsonBytes: Array(body[5...]))
        guard reply["ok"]?.doubleValue == 1 else {
            throw DevMongoServerError(description: "dev-mongo refused \(command): \(reply)")
        }
        return reply
    }

    private static func openSocket(port: Int, timeout: TimeInterval) throws -> Int32 {
        #if canImport(Glibc)
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #else
        let fd = socket(AF_INET, SOCK_STREAM, 0)
        #endif
        guard fd >= 0 else { throw DevMongoServerError(description: "socket: errno \(errno)") }
        var tv = timeval(tv_sec: Int(timeout), tv_usec: 0)
        _ = setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        _ = setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard rc == 0 else {
            let e = errno
            close(fd)
            throw DevMongoServerError(description: "cannot connect to dev-mongo on port \(port): errno \(e)")
        }
        return fd
    }

    private static func sendAll(_ fd: Int32, _ bytes: [UInt8]) throws {
        var sent = 0
        while sent < bytes.count {
            let n = bytes[sent...].withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw DevMongoServerError(description: "send to dev-mongo: errno \(errno)") }
            sent += n
        }
    }

    private static func receive(_ fd: Int32, _ count: Int) throws -> [UInt8] {
        var buf = [UInt8](repeating: 0, count: count)
        var got = 0
        while got < count {
            let n = buf[got...].withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                throw DevMongoServerError(description: n == 0 ? "dev-mongo closed the connection"
                                                              : "recv from dev-mongo: errno \(errno)")
            }
            got += n
        }
        return buf
    }
}
