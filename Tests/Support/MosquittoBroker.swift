import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A real `mosquitto` broker on a free port, in a temporary directory, for integration tests.
///
/// With `shippedConfig: true` it runs `config/mosquitto/autovolt.conf` and its ACL, rewritten
/// only for the port and paths, and a password file with `users` (made with `mosquitto_passwd`).
/// With `tls` its one listener speaks MQTT over TLS only (the default configuration otherwise).
public final class MosquittoBroker: @unchecked Sendable {
    /// PEM files for a TLS listener.
    public struct TLSFiles: Sendable {
        public var caFile: String
        public var certFile: String
        public var keyFile: String
        /// Clients must present a certificate signed by `caFile`.
        public var requireClientCertificate: Bool

        public init(caFile: String, certFile: String, keyFile: String, requireClientCertificate: Bool = true) {
            self.caFile = caFile
            self.certFile = certFile
            self.keyFile = keyFile
            self.requireClientCertificate = requireClientCertificate
        }
    }

    public let port: Int
    public let directory: URL
    private var process: Process?
    private let configFile: URL

    public init(shippedConfig: Bool = false, users: [String: String] = [:], persistence: Bool = true,
                tls: TLSFiles? = nil) throws {
        port = freeTCPPort()
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("autovolt-mosquitto-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        configFile = directory.appendingPathComponent("mosquitto.conf")
        var lines: [String]
        if shippedConfig {
            let shipped = try String(contentsOf: packageRoot.appendingPathComponent("config/mosquitto/autovolt.conf"), encoding: .utf8)
            let passwd = directory.appendingPathComponent("autovolt.passwd").path
            let acl = directory.appendingPathComponent("autovolt.acl")
            try FileManager.default.copyItem(at: packageRoot.appendingPathComponent("config/mosquitto/autovolt.acl"), to: acl)
            FileManager.default.createFile(atPath: passwd, contents: Data())
            for (user, password) in users {
                try Self.run("/usr/bin/mosquitto_passwd", ["-b", passwd, user, password])
            }
            lines = shipped.split(separator: "\n", omittingEmptySubsequences: false).map { line -> String in
                if line.hasPrefix("listener ") { return "listener \(port) 127.0.0.1" }
                if line.hasPrefix("persistence_location ") { return "persistence_location \(directory.path)/" }
                if line.hasPrefix("password_file ") { return "password_file \(passwd)" }
                if line.hasPrefix("acl_file ") { return "acl_file \(acl.path)" }
                if line.hasPrefix("log_dest ") { return "" }
                return String(line)
            }
            lines.append("log_dest stderr")
        } else {
            lines = [
                "listener \(port) 127.0.0.1", "allow_anonymous true", "persistence \(persistence)",
                "persistence_location \(directory.path)/", "autosave_interval 1", "max_queued_messages 1000000",
                "max_inflight_messages 100", "log_dest stderr",
            ]
        }
        if let tls {
            guard let listener = lines.firstIndex(where: { $0.hasPrefix("listener ") }) else {
                throw DevMongoServerError(description: "the broker configuration has no listener line")
            }
            lines.insert(contentsOf: ["cafile \(tls.caFile)", "certfile \(tls.certFile)", "keyfile \(tls.keyFile)",
                                      "require_certificate \(tls.requireClientCertificate)"], at: listener + 1)
        }
        try lines.joined(separator: "\n").write(to: configFile, atomically: true, encoding: .utf8)
        try start()
    }

    deinit { stop() }

    public func start() throws {
        let process = unmaskedProcess("/usr/sbin/mosquitto", ["-c", configFile.path])
        let log = FileHandle(forWritingAtPath: directory.appendingPathComponent("mosquitto.log").path)
            ?? { FileManager.default.createFile(atPath: directory.appendingPathComponent("mosquitto.log").path, contents: nil)
                 return FileHandle(forWritingAtPath: directory.appendingPathComponent("mosquitto.log").path) }()
        log?.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        self.process = process
        try waitForPort(port, timeout: 10)
    }

    /// SIGTERM (mosquitto saves its persistence) and wait.
    public func stop() {
        guard let process, process.isRunning else { return }
        process.terminate()
        process.waitUntilExit()
    }

    public var log: String {
        (try? String(contentsOf: directory.appendingPathComponent("mosquitto.log"), encoding: .utf8)) ?? ""
    }

    static func run(_ path: String, _ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        try process.run()
        process.waitUntilExit()
    }
}

/// Waits until something accepts TCP connections on 127.0.0.1:`port`.
public func waitForPort(_ port: Int, timeout: Double) throws {
    let deadline = Date().addingTimeInterval(timeout)
    while Date() < deadline {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = UInt16(port).bigEndian
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        close(fd)
        if rc == 0 { return }
        Thread.sleep(forTimeInterval: 0.05)
    }
    throw DevMongoServerError(description: "nothing listens on port \(port) after \(timeout) s")
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
@discardableResult
public func eventually(timeout: Double = 20, interval: Double = 0.1, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = Date().addingTimeInterval(timeout)
    repeat {
        if try condition() { return true }
        Thread.sleep(forTimeInterval: interval)
    } while Date() < deadline
    return try condition()
}

/// A `Process` for `executable` that starts with an empty signal mask.
///
/// Foundation.Process on Linux passes the spawning thread's signal mask on to the child
/// (swift-corelibs-foundation#4772); tests run on Dispatch threads that block SIGTERM, so a child
/// would ignore `terminate()`. The child therefore goes through a tiny exec shim that clears it.
///
/// `closingInherited` also closes every descriptor above stderr before the exec: a command that
/// leaves a daemon behind (`pg_ctl start`) would otherwise hand it Foundation's end of the socket
/// that tells the child has exited, and the command would never be seen to finish.
public func unmaskedProcess(_ executable: String, _ arguments: [String], closingInherited: Bool = false) -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/python3")
    let close = closingInherited ? "os.closerange(3, os.sysconf('SC_OPEN_MAX')); " : ""
    process.arguments = ["-c", "import os, signal, sys; signal.pthread_sigmask(signal.SIG_SETMASK, []); \(close)os.execv(sys.argv[1], sys.argv[1:])",
                         executable] + arguments
    return process
}
