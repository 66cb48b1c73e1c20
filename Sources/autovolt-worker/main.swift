import ArgumentParser
import AutoVoltCore
import AutoVoltMongo
import AutoVoltService
import Foundation
import Logging
import Metrics
import Prometheus

/// Exit statuses (sysexits.h): 64 bad arguments (ArgumentParser's default), 78 bad configuration.
enum Exit {
    static let config = ExitCode(78)
    static let data = ExitCode(65)
    static let failure = ExitCode(1)
}

func fail(_ message: String, _ code: ExitCode) -> ExitCode {
    StandardStreams.err("autovolt-worker: \(message)\n")
    return code
}

struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: "TOML configuration file; the environment wins over it.")
    var config: String?

    func load() throws -> WorkerConfig {
        do {
            return try WorkerConfig.load(configFile: config)
        } catch {
            throw fail(error.description, Exit.config)
        }
    }
}

/// `service`: the long-running worker logs libmongoc's warnings; a one-shot command keeps them
/// at debug level, so a failure ends in exactly one line on stderr (its own error).
func makeLogger(_ config: WorkerConfig, service: Bool = false) -> Logger {
    let level = config.logLevel
    let json = config.logFormat == .json
    LoggingSystem.bootstrap { label in WorkerLogHandler(label: label, level: level, json: json) }
    let logger = Logger(label: "autovolt-worker")
    // libmongoc's own diagnostics go through the same log, with its domain.
    MongoLog.setHandler { mongoLevel, domain, message in
        let mapped: Logger.Level = switch mongoLevel {
        case .error, .critical: service ? .error : .debug
        case .warning: service ? .warning : .debug
        case .message, .info: .debug
        case .debug, .trace: .trace
        }
        logger.log(level: mapped, "libmongoc: \(message)", metadata: ["domain": "\(domain)"])
    }
    return logger
}

struct AutoVoltWorker: AsyncParsableCommand {
    static func start() async {
        // A parent may hand us a blocked SIGTERM/SIGINT (e.g. Foundation.Process on Linux copies
        // the spawning thread's mask); we must still stop when asked.
        var signals = sigset_t()
        sigemptyset(&signals)
        sigaddset(&signals, SIGTERM)
        sigaddset(&signals, SIGINT)
        sigaddset(&signals, SIGHUP)
        pthread_sigmask(SIG_UNBLOCK, &signals, nil)
        // Output piped into `head` and closed early must not kill us: writes then just fail.
        signal(SIGPIPE, SIG_IGN)
        do {
            var command = try parseAsRoot()
            if var asyncCommand = command as? AsyncParsableCommand {
                try await asyncCommand.run()
            } else {
                try command.run()
            }
        } catch {
            // A usage error is one line on stderr, like every other failure (contract section 1);
            // ArgumentParser's own form adds the usage text below it. --help and --version are
            // not errors and print in full.
            // (An ExitCode was thrown after its own message was printed.)
            if !(error is ExitCode), exitCode(for: error) == .validationFailure {
                let message = message(for: error).split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
                    .filter { !$0.isEmpty }.joined(separator: "; ")
                let withoutPrefix = message.hasPrefix("Error: ") ? String(message.dropFirst(7)) : message
                StandardStreams.err("autovolt-worker: \(withoutPrefix) (see autovolt-worker help)\n")
                Foundation.exit(ExitCode.validationFailure.rawValue)
            }
            exit(withError: error)
        }
    }

    static let configuration = CommandConfiguration(
        commandName: "autovolt-worker",
        abstract: "AutoVolt energy-metering ingestion: MQTT in, MongoDB out.",
        subcommands: [Run.self, Migrate.self, ReplayCommand.self, RequeueCommand.self, RebuildLedger.self, CostVersions.self, Recalculate.self, Reconcile.self, Summary.self, Timeline.self, DeviceBreakdown.self, Monthly.self, Alarms.self, Statements.self, Simulate.self])
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the worker (MQTT in, journal, MongoDB out, HTTP health and metrics).")

    @OptionGroup var options: ConfigOptions

    @Flag(name: .long, help: "Validate the configuration and the device registry, then exit.")
    var checkConfig = false

    func run() async throws {
        let config = try options.load()
        if checkConfig {
            print("configuration OK: mqtt \(config.mqtt.host):\(config.mqtt.port), \(config.devices.devices.count) devices, time zone \(config.timeZone.identifier), state \(config.stateDirectory)")
            for warning in config.warnings { print("warning: \(warning)") }
            return
        }
        let logger = makeLogger(config, service: true)
        for warning in config.warnings { logger.warning("\(warning)") }
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        do {
            try await WorkerService.runUntilSignalled(config: config, faults: FaultInjection.from(environment: ProcessInfo.processInfo.environment),
                                                     logger: logger, registry: registry)
        } catch let error as ConfigError {
            throw fail(error.description, Exit.config)
        } catch let error as Schema.Conflict {
            throw fail(error.description, Exit.config)
        } catch let error as PostgresSchema.Refusal {
            throw fail(error.description, Exit.config)
        } catch {
            throw fail("\(error)", Exit.failure)
        }
    }
}

struct ReplayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "replay",
        abstract: "Ingest captured mosquitto_sub lines (TOPIC PAYLOAD or TIME TOPIC PAYLOAD) through the same pipeline.",
        discussion: """
            Capture with:  mosquitto_sub -v -t 'autovolt/#' > capture.txt
                     or:  mosquitto_sub -F '%I %t %p' -t 'autovolt/#' > capture.txt   (keeps receive times)
            Then:         autovolt-worker replay capture.txt    (- reads standard input)
            """)

    @OptionGroup var options: ConfigOptions

    @Argument(help: "Capture file, or - for standard input.")
    var file: String

    func run() throws {
        let config = try options.load()
        let logger = makeLogger(config)
        let input: FileHandle
        if file == "-" {
            input = .standardInput
        } else {
            guard let handle = FileHandle(forReadingAtPath: file) else {
                throw fail("cannot read \(file)", Exit.data)
            }
            input = handle
        }
        let summary = try reportingFailures("replay") { try Replay.run(input: input, config: config, logger: logger) }
        let o = summary.outcome
        var text = "replayed \(summary.messages) messages from \(summary.lines) lines: \(o.inserted) stored, \(o.duplicates) duplicates, \(o.rejectedTotal) rejected"
        if !o.rejected.isEmpty {
            text += " (" + o.rejected.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key.rawValue): \($0.value)" }.joined(separator: ", ") + ")"
        }
        text += ", \(o.statuses) status, \(o.heartbeats) heartbeats"
        print(text)
        if summary.unparseable > 0 {
            throw fail("\(summary.unparseable) lines were not TOPIC PAYLOAD or TIME TOPIC PAYLOAD (see the log)", Exit.data)
        }
    }
}

struct RequeueCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "requeue",
        abstract: "Store again the messages the database refused (reason store_refused), once the cause is fixed.",
        discussion: """
            Each message goes through the same pipeline as a live one: stored now, it leaves
            rejected_messages; still refused, it stays. Duplicates collapse, so running it again is safe.
            """)

    @OptionGroup var options: ConfigOptions

    @Option(help: "Which rejections to try again; only store_refused keeps whole payloads.")
    var reason: String

    @Option(help: "Only messages received at or after this local date (YYYY-MM-DD) or instant (ISO 8601).")
    var since: String?

    func validate() throws {
        guard reason == RejectReason.storeRefused.rawValue else {
            throw ValidationError("--reason must be store_refused (other rejections keep at most 4 KiB of their payload and are not valid messages)")
        }
        if let since, CivilDate(since) == nil, ISO8601.parseMillis(since) == nil {
            throw ValidationError("--since \"\(since)\" is not a date YYYY-MM-DD or an ISO 8601 instant")
        }
    }

    func run() throws {
        let config = try options.load()
        let logger = makeLogger(config)
        var from: EpochMillis?
        if let since {
            if let date = CivilDate(since) {
                from = LocalCalendar(timeZone: config.timeZone).startOfDay(date)
            } else {
                from = ISO8601.parseMillis(since)
            }
        }
        let s = try reportingFailures("requeue") { try Requeue.run(config: config, since: from, logger: logger) }
        print("requeued \(s.examined) messages: \(s.stored) stored, \(s.duplicates) already stored, \(s.rejectedOtherwise) rejected for another reason, \(s.other) status or heartbeat applied, \(s.stillRefused) still refused")
    }
}

struct RebuildLedger: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rebuild-ledger",
        abstract: "Re-derive the ledger from the stored events (after a rule change or a fix).",
        discussion: """
            Events are the source of truth: entries that the rules now derive differently are marked
            superseded_by and the new ones inserted; nothing is deleted. Safe while workers run: the
            device's lease keeps them off it, renewed for every window. An interrupted rebuild leaves
            the ledger rebuilt up to some time; run it again to finish.
            """)

    @OptionGroup var options: ConfigOptions

    @Option(name: .customLong("esp32-name"), help: "Only this device.")
    var esp32Name: String?

    @Option(help: "First local date (YYYY-MM-DD) whose entries may be replaced.")
    var start: String?

    @Option(help: "Last local date (YYYY-MM-DD), inclusive.")
    var end: String?

    @Option(help: "Readings re-derived at a time: memory stays at one window of them.")
    var window: Int = 20_000

    func validate() throws {
        if window < 2 { throw ValidationError("--window must be at least 2 readings") }
        if (start == nil) != (end == nil) { throw ValidationError("--start and --end go together") }
        if let start, CivilDate(start) == nil { throw ValidationError("--start \"\(start)\" is not a date YYYY-MM-DD") }
        if let end, CivilDate(end) == nil { throw ValidationError("--end \"\(end)\" is not a date YYYY-MM-DD") }
        if let s = start.flatMap(CivilDate.init), let e = end.flatMap(CivilDate.init), e < s {
            throw ValidationError("--end is before --start")
        }
    }

    func run() throws {
        let config = try options.load()
        let logger = makeLogger(config)
        var dates: ClosedRange<CivilDate>?
        if let s = start.flatMap(CivilDate.init), let e = end.flatMap(CivilDate.init) { dates = s...e }
        let summary = try withWorkerDatabase(config, "rebuild") { db in
            try LedgerRebuild.run(storage: db.database.ledgerStorage(writeConcern: db.writeConcern), config: config, device: esp32Name,
                                  dates: dates, windowReadings: window, logger: logger)
        }
        print("rebuilt \(summary.devices) devices: \(summary.inserted) entries inserted, \(summary.superseded) superseded")
        if summary.keptExpired > 0 {
            print("\(summary.keptExpired) devices kept their ledger before their oldest stored readings as it was (those events expired; the log says up to which day)")
        }
    }
}

// main.swift's top-level code is the entry point (the CLI spans several files).
await AutoVoltWorker.start()
