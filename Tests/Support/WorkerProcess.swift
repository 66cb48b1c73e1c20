import Foundation

/// The built `autovolt-worker` executable run as a child process, exactly as an operator runs it.
public final class WorkerProcess: @unchecked Sendable {
    public static var executable: URL {
        packageRoot.appendingPathComponent(".build/debug/autovolt-worker")
    }

    public let environment: [String: String]
    public let logFile: URL
    private var process: Process?

    public init(environment: [String: String]) {
        self.environment = environment
        logFile = FileManager.default.temporaryDirectory.appendingPathComponent("autovolt-worker-\(UUID().uuidString).log")
        FileManager.default.createFile(atPath: logFile.path, contents: nil)
    }

    deinit {
        if let process, process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    /// As the systemd unit does: no libmongoc counter files in /dev/shm, which a worker killed
    /// by a test would leave behind for the next process with its pid (MongoClient.swift).
    static let shmOff = ["MONGOC_DISABLE_SHM": "1"]

    /// Runs `autovolt-worker ARGS` to completion and returns (exit status, stdout, stderr).
    public static func runToCompletion(_ arguments: [String], environment: [String: String], stdin: Data? = nil,
                                       timeout: Double = 60) throws -> (status: Int32, stdout: String, stderr: String) {
        try runCapturing(executable.path, arguments, environment: environment.merging(Self.shmOff) { old, _ in old },
                         stdin: stdin, timeout: timeout)
    }

    public func start(arguments: [String] = ["run"], extraEnvironment: [String: String] = [:]) throws {
        let process = unmaskedProcess(Self.executable.path, arguments)
        process.environment = environment.merging(extraEnvironment) { $1 }.merging(Self.shmOff) { old, _ in old }
        let handle = try FileHandle(forWritingTo: logFile)
        handle.seekToEndOfFile()
        process.standardOutput = handle
        process.standardError = handle
        try process.run()
        self.process = process
    }

    public var isRunning: Bool { process?.isRunning ?? false }
    public var pid: Int32? { process?.processIdentifier }

    /// SIGTERM and wait; returns the exit status.
    @discardableResult
    public func stop(timeout: Double = 30) -> Int32? {
        guard let process else { return nil }
        if process.isRunning { process.terminate() }
        return waitForExit(timeout: timeout)
    }

    /// SIGKILL: no chance to flush anything.
    public func kill9() {
        guard let process, process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    public func waitForExit(timeout: Double) -> Int32? {
        guard let process else { return nil }
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
        return process.isRunning ? nil : process.terminationStatus
    }

    public var log: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    /// Waits until the worker's log shows it connected to the broker.
    public func waitUntilConnected(timeout: Double = 20) -> Bool {
        eventually(timeout: timeout) { log.contains("MQTT connected") }
    }

    /// Until the broker has granted the three subscriptions `times` times (once per connect):
    /// only then does a fresh session receive what is published.
    public func waitUntilSubscribed(times: Int = 1, timeout: Double = 20) -> Bool {
        eventually(timeout: timeout) { log.components(separatedBy: "MQTT subscribed").count - 1 >= 3 * times }
    }
}

/// Runs a program (signals unmasked) to completion, or to `timeout` seconds, with its output in
/// files (a pipe nobody reads could fill and stall it); (exit status, stdout, stderr).
public func runCapturing(_ executable: String, _ arguments: [String], environment: [String: String]? = nil, stdin: Data? = nil,
                         timeout: Double = 60, closingInherited: Bool = false) throws -> (status: Int32, stdout: String, stderr: String) {
    let process = unmaskedProcess(executable, arguments, closingInherited: closingInherited)
    if let environment { process.environment = environment }
    let outURL = FileManager.default.temporaryDirectory.appendingPathComponent("autovolt-out-\(UUID().uuidString)")
    let errURL = FileManager.default.temporaryDirectory.appendingPathComponent("autovolt-err-\(UUID().uuidString)")
    FileManager.default.createFile(atPath: outURL.path, contents: nil)
    FileManager.default.createFile(atPath: errURL.path, contents: nil)
    defer {
        try? FileManager.default.removeItem(at: outURL)
        try? FileManager.default.removeItem(at: errURL)
    }
    process.standardOutput = try FileHandle(forWritingTo: outURL)
    process.standardError = try FileHandle(forWritingTo: errURL)
    let input = Pipe()
    process.standardInput = input
    try process.run()
    if let stdin { input.fileHandleForWriting.write(stdin) }
    try input.fileHandleForWriting.close()
    let deadline = Date().addingTimeInterval(timeout)
    while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
    if process.isRunning { process.terminate() }
    process.waitUntilExit()
    let outData = (try? Data(contentsOf: outURL)) ?? Data()
    let errData = (try? Data(contentsOf: errURL)) ?? Data()
    return (process.terminationStatus, String(decoding: outData, as: UTF8.self), String(decoding: errData, as: UTF8.self))
}
