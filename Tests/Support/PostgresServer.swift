import Foundation
#if canImport(Glibc)
import Glibc
#endif

public struct PostgresServerError: Error, CustomStringConvertible {
    public let description: String
}

/// A PostgreSQL 15 server of the test's own (Debian's `postgresql`, issue 21): `initdb` in a
/// folder of its own, `pg_ctl` on a free port on 127.0.0.1, trust authentication for `postgres`.
/// As root the server runs as the `postgres` user (initdb refuses root), and its folder is made
/// traversable by that user. Stopped (immediately) and removed on deinit. @unchecked: the one
/// mutable property, `running`, is read and written under `lock`.
public final class PostgresServer: @unchecked Sendable {
    public let port: Int
    public let directory: URL
    private var dataDirectory: URL { directory.appendingPathComponent("data") }
    private var logFile: URL { directory.appendingPathComponent("server.log") }
    private let lock = NSLock()
    private var running = false

    /// Debian's server binaries (`/usr/lib/postgresql/15/bin`), the newest when several are installed.
    public static var binDirectory: String? {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int.init).sorted()
        return versions.last.map { "\(root)/\($0)/bin" }
    }

    public init() throws {
        guard let bin = Self.binDirectory else {
            throw PostgresServerError(description: "no PostgreSQL server under /usr/lib/postgresql: run scripts/setup")
        }
        self.bin = bin
        port = freeTCPPort()
        // Under /tmp, not the per-user temporary folder: the postgres user must reach it.
        directory = URL(fileURLWithPath: "/tmp/autovolt-pg-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true,
                                                attributes: [.posixPermissions: 0o755])
        if getuid() == 0 {
            guard let user = getpwnam("postgres") else {
                throw PostgresServerError(description: "running as root and there is no postgres user to run the server as")
            }
            guard chown(directory.path, user.pointee.pw_uid, user.pointee.pw_gid) == 0 else {
                throw PostgresServerError(description: "cannot hand \(directory.path) to the postgres user (errno \(errno))")
            }
        }
        let initdb = try runAsServerUser("\(bin)/initdb", ["-D", dataDirectory.path, "-A", "trust", "-U", "postgres", "--no-sync",
                                                          "-E", "UTF8", "--locale", "C"])
        guard initdb.status == 0 else {
            throw PostgresServerError(description: "initdb failed (\(initdb.status)): \(initdb.stderr)\(initdb.stdout)")
        }
        try start()
    }

    private let bin: String

    deinit {
        stop()
        try? FileManager.default.removeItem(at: directory)
    }

    /// `postgresql://postgres@127.0.0.1:PORT/DB`
    public func url(database: String = "postgres") -> String { "postgresql://postgres@127.0.0.1:\(port)/\(database)" }

    public var isRunning: Bool { lock.withLock { running } }

    /// Starts the server and waits until it accepts connections (`pg_ctl -w`).
    public func start(timeout: Int = 60) throws {
        // fsync off: a test's data need not survive the machine, and on a shared disk it is slow.
        let options = "-p \(port) -k \(directory.path) -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        let result = try runAsServerUser("\(bin)/pg_ctl", ["-D", dataDirectory.path, "-l", logFile.path, "-w", "-t", "\(timeout)",
                                                          "-o", options, "start"], timeout: Double(timeout) + 10)
        guard result.status == 0 else {
            throw PostgresServerError(description: "pg_ctl start failed (\(result.status)): \(result.stderr)\(result.stdout)\n\(log)")
        }
        lock.withLock { running = true }
    }

    /// Stops the server: `immediate` is a crash as far as the data is concerned (recovery at the
    /// next start replays the WAL), `fast` a clean shutdown.
    public func stop(mode: String = "immediate") {
        guard lock.withLock({ running }) else { return }
        _ = try? runAsServerUser("\(bin)/pg_ctl", ["-D", dataDirectory.path, "-m", mode, "-w", "stop"])
        lock.withLock { running = false }
    }

    /// `pg_ctl restart -m MODE`: the server away for as long as its recovery takes.
    public func restart(mode: String = "immediate") throws {
        stop(mode: mode)
        try start()
    }

    /// Runs SQL through `psql` (unaligned, tuples only, stopping at the first error); the output.
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres") throws -> String {
        let result = try runCapturing("\(bin)/psql", ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", "\(port)",
                                                      "-U", "postgres", "-d", database, "-c", sql])
        guard result.status == 0 else {
            throw PostgresServerError(description: "psql failed (\(result.status)) on \(sql): \(result.stderr)")
        }
        return result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// A new, empty database; its name.
    @discardableResult
    public func createDatabase(_ name: String = "autovolt_\(UUID().uuidString.prefix(8).lowercased())") throws -> String {
        try psql("CREATE DATABASE \"\(name)\"")
        return name
    }

    /// What the server logged (for failure messages).
    public var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    private func runAsServerUser(_ executable: String, _ arguments: [String], timeout: Double = 120) throws
        -> (status: Int32, stdout: String, stderr: String) {
        // pg_ctl start leaves the server running: it must not inherit more than stdout and stderr.
        if getuid() == 0 {
            return try runCapturing("/usr/sbin/runuser", ["-u", "postgres", "--", executable] + arguments, timeout: timeout,
                                    closingInherited: true)
        }
        return try runCapturing(executable, arguments, timeout: timeout, closingInherited: true)
    }
}
