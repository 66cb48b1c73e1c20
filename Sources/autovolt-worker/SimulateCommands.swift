import ArgumentParser
import AutoVoltCore
import AutoVoltMongo
import AutoVoltMQTT
import AutoVoltPostgres
import AutoVoltService
import Foundation
import Synchronization

struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "A simulated campus with ground truth (CampusSimulator).",
        subcommands: [SimulateCapture.self, SimulateLive.self, SimulateCheck.self, SimulateRegistry.self])
}

/// What makes a campus: the same options and seed give the same boards and readings.
struct CampusOptions: ParsableArguments {
    @Option(help: "Boards (about four to a classroom).") var devices: Int = 20
    @Option(help: "Seconds between a board's readings (simulated time).") var interval: Int = 30
    @Option(help: "Seed: the same seed gives the same campus.") var seed: UInt64 = 1
    @Option(help: "Boards are named PREFIX-<room>-<n>.") var prefix: String = "sim"
    @Option(help: "mixed (every third board on the firmware guide), contract_v1 or firmware_guide.")
    var firmware: String = "mixed"
    @Option(help: "IANA time zone of the campus's days and class hours.") var timezone: String = "Asia/Kolkata"
    @Option(help: "Multiply every fault rate (reboots, resets, glitches, duplicates, late, offline, bad clocks, malformed); 0: none.")
    var faultScale: Double = 1

    func validate() throws {
        guard (1...10_000).contains(devices) else { throw ValidationError("--devices must be 1...10000") }
        guard (1...3_600).contains(interval) else { throw ValidationError("--interval must be 1...3600 seconds") }
        guard faultScale >= 0 && faultScale.isFinite else { throw ValidationError("--fault-scale must be 0 or more") }
        guard TimeZone(identifier: timezone) != nil else { throw ValidationError("--timezone \"\(timezone)\" is not an IANA time zone") }
        guard firmware == "mixed" || CampusSimulator.Firmware(rawValue: firmware) != nil else {
            throw ValidationError("--firmware must be mixed, contract_v1 or firmware_guide")
        }
        guard prefix.range(of: "^[a-z0-9][a-z0-9_-]{0,15}$", options: .regularExpression) != nil else {
            throw ValidationError("--prefix must be 1-16 lowercase letters, digits, '-' or '_'")
        }
    }

    var zone: TimeZone { TimeZone(identifier: timezone) ?? .current } // validate() has checked it

    func config(start: CivilDate, days: Int) -> CampusSimulator.Config {
        var config = CampusSimulator.Config(devices: devices, start: start, days: days, intervalSeconds: interval, seed: seed)
        config.faults = config.faults.scaled(by: faultScale)
        config.firmware = CampusSimulator.Firmware(rawValue: firmware)
        config.namePrefix = prefix
        return config
    }
}

/// The truth of a simulated campus, as `simulate check` reads it.
struct TruthFile: Codable {
    struct Day: Codable {
        var consumedWh: Double
        var billableWh: Double
        enum CodingKeys: String, CodingKey { case consumedWh = "consumed_wh", billableWh = "billable_wh" }
    }
    struct Device: Codable {
        var esp32Name: String
        var classroom: String
        var firmware: String
        /// The board's loads with every switch on: bounds how much a few ms of receive time move between days.
        var ratedW: Double?
        /// Distinct valid messages delivered: the events the database must hold, once each.
        var events: Int
        /// Payloads the decoder must refuse.
        var rejects: Int?
        var days: [String: Day]
        var faults: [String: Int]
        enum CodingKeys: String, CodingKey {
            case esp32Name = "esp32_name", classroom, firmware, ratedW = "rated_w", events, rejects, days, faults
        }
    }
    var seed: UInt64
    var start: String
    var days: Int
    var intervalSeconds: Int
    var timeZone: String
    var messages: Int
    var rejects: Int
    /// Live runs: the truth takes publish times for the receive times the worker uses (boards whose
    /// clock is not trusted); they differ by at most this much, which can move that much energy
    /// across a local midnight (the device's total over all days is still exact).
    var receiveTimeSlackMillis: Int?
    /// Live runs: the truth covers what was published up to this instant.
    var asOf: String?
    var devices: [Device]
    enum CodingKeys: String, CodingKey {
        case seed, start, days, messages, rejects, devices
        case intervalSeconds = "interval_seconds", timeZone = "time_zone"
        case receiveTimeSlackMillis = "receive_time_slack_ms", asOf = "as_of"
    }

    static func device(_ run: CampusSimulator.DeviceRun, knownBy instant: EpochMillis = .max) -> Device {
        Device(esp32Name: run.device.info.esp32Name, classroom: run.device.info.classroom, firmware: run.device.firmware.rawValue,
               ratedW: run.device.info.switches.reduce(0) { $0 + ($1.ratedW ?? 0) },
               events: run.events(deliveredBy: instant), rejects: run.rejects(deliveredBy: instant),
               days: Dictionary(uniqueKeysWithValues: run.days(knownBy: instant).map {
                   ($0.key.description, Day(consumedWh: $0.value.consumedWh, billableWh: $0.value.billableWh))
               }),
               faults: Dictionary(uniqueKeysWithValues: run.faults.map { ($0.key.rawValue, $0.value) }))
    }

    /// Written to a temporary file and renamed, so a reader never sees half a truth.
    func write(to url: URL) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: url, options: .atomic)
    }
}

/// Prints the registry of a simulated campus (what capture and live write as devices.toml).
struct SimulateRegistry: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "registry",
        abstract: "Print the devices.toml of a simulated campus (start the worker with it before simulate live).")
    @OptionGroup var campus: CampusOptions

    func run() throws {
        print(registry(CampusSimulator.devices(campus.config(start: CivilDate(year: 2026, month: 1, day: 1), days: 1))), terminator: "")
    }
}

/// The registry the campus was built with.
func registry(_ campus: [CampusSimulator.Device]) -> String {
    var text = "# Written by autovolt-worker simulate.\n"
    for device in campus {
        text += "\n[[device]]\nesp32_name = \"\(device.info.esp32Name)\"\nclassroom = \"\(device.info.classroom)\"\n"
        for s in device.info.switches {
            text += "\n[[device.switch]]\nname = \"\(s.name)\"\nrated_w = \(Int(s.ratedW ?? 0))\n"
        }
    }
    return text
}

/// Writes a simulated campus as files: the registry, a capture `replay` ingests, and the truth.
struct SimulateCapture: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "capture",
        abstract: "Write DIR/devices.toml, DIR/capture.txt (mosquitto_sub -F '%I %t %p' lines) and DIR/truth.json.",
        discussion: """
            Then:  AUTOVOLT_DEVICES=DIR/devices.toml autovolt-worker replay DIR/capture.txt
            truth.json gives per device and local day what the loads drew (consumed_wh) and what the
            contract's rules must bill from the readings in the capture (billable_wh).
            """)

    @OptionGroup var campus: CampusOptions
    @Option(help: "First local date, YYYY-MM-DD.") var start: String
    @Option(help: "Days to simulate.") var days: Int = 1
    @Option(help: "Directory to write into (created if missing).") var out: String

    func validate() throws {
        guard CivilDate(start) != nil else { throw ValidationError("--start \"\(start)\" is not YYYY-MM-DD") }
        guard (1...366).contains(days) else { throw ValidationError("--days must be 1...366") }
    }

    func run() throws {
        guard let first = CivilDate(start) else { throw ExitCode(64) }
        let directory = URL(fileURLWithPath: out)
        try reportingFailures("simulate capture") {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let config = campus.config(start: first, days: days)
            let boards = CampusSimulator.devices(config)
            try registry(boards).write(to: directory.appendingPathComponent("devices.toml"), atomically: true, encoding: .utf8)

            let capturePath = directory.appendingPathComponent("capture.txt").path
            guard FileManager.default.createFile(atPath: capturePath, contents: nil),
                  let capture = FileHandle(forWritingAtPath: capturePath) else {
                throw ValidationError("cannot write \(capturePath)")
            }
            defer { try? capture.close() }
            var calendar = LocalCalendar(timeZone: campus.zone)
            var truth = TruthFile(seed: campus.seed, start: first.description, days: days, intervalSeconds: campus.interval,
                                  timeZone: campus.timezone, messages: 0, rejects: 0, devices: [])
            // One device at a time: memory is one device's readings, however large the campus.
            for device in boards {
                let run = CampusSimulator.simulate(device, config: config, calendar: &calendar)
                var text = ""
                for reading in run.readings {
                    text += ISO8601.format(reading.deliveredAt) + " autovolt/\(device.info.esp32Name)/telemetry "
                        + CampusSimulator.payload(reading, device: device) + "\n"
                }
                try capture.write(contentsOf: Data(text.utf8))
                truth.messages += run.readings.count
                truth.rejects += run.rejects()
                truth.devices.append(TruthFile.device(run))
            }
            try truth.write(to: directory.appendingPathComponent("truth.json"))
            print("simulated \(boards.count) boards, \(days) days: \(truth.messages) messages (\(truth.rejects) malformed) in \(capturePath)")
        }
    }
}

/// Publishes a simulated campus over MQTT as it happens, and keeps its truth up to date.
struct SimulateLive: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "live",
        abstract: "Publish a simulated campus over MQTT in real time (or --rate times faster); DIR/truth.json grows as it goes.",
        discussion: """
            The broker is the worker's (AUTOVOLT_MQTT_URL and its TLS and credential settings). Start the
            worker with the campus's registry first (simulate registry, or DIR/devices.toml of an earlier
            run with the same options), so its session exists before the first reading. DIR/truth.json is
            rewritten every few seconds with what has been published, and at the end with everything;
            Ctrl-C stops early and writes the truth of what was published. Then: simulate check DIR/truth.json.
            With --rate X the boards' clocks run X times faster and catch up with the wall clock at the end
            (they start (X-1) x minutes behind), so the worker trusts them.
            """)

    @OptionGroup var options: ConfigOptions
    @OptionGroup var campus: CampusOptions
    @Option(help: "Minutes of wall-clock time to publish.") var minutes: Double = 10
    @Option(help: "Simulated seconds per real second.") var rate: Double = 1
    @Option(help: "Directory for devices.toml and truth.json (created if missing).") var out: String

    func validate() throws {
        guard minutes > 0 && minutes <= 7 * 1_440 else { throw ValidationError("--minutes must be above 0 and at most a week") }
        guard rate >= 1 && rate <= 10_000 else { throw ValidationError("--rate must be 1...10000") }
        // The contract trusts a device time at most AUTOVOLT_MAX_CLOCK_LAG (7 days) behind.
        guard (rate - 1) * minutes < 6 * 1_440 else { throw ValidationError("--rate x --minutes must stay under six days behind the wall clock") }
    }

    func run() throws {
        let config = try options.load()
        let directory = URL(fileURLWithPath: out)
        let truthURL = directory.appendingPathComponent("truth.json")
        try reportingFailures("simulate live") {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            let now = SystemClock.nowMillis()
            let realStart = (now / 1000 + 2) * 1000
            let duration = EpochMillis(minutes * 60_000)
            let virtualStart = realStart - EpochMillis(Double(duration) * (rate - 1))
            let intervalMillis = EpochMillis(campus.interval) * 1000
            var calendar = LocalCalendar(timeZone: campus.zone)
            var simulation = campus.config(start: calendar.day(containing: virtualStart).date, days: 1)
            simulation.span = .init(start: virtualStart, count: Int(Double(duration) * rate) / Int(intervalMillis),
                                    realStart: realStart, rate: rate)
            let boards = CampusSimulator.devices(simulation)
            try registry(boards).write(to: directory.appendingPathComponent("devices.toml"), atomically: true, encoding: .utf8)
            let runs = boards.map { CampusSimulator.simulate($0, config: simulation, calendar: &calendar) }
            // Every message of every board, in the order they go out.
            var schedule: [(at: EpochMillis, board: Int, reading: Int)] = []
            for (b, run) in runs.enumerated() { for (i, r) in run.readings.enumerated() { schedule.append((r.deliveredAt, b, i)) } }
            schedule.sort { ($0.at, $0.board, $0.reading) < ($1.at, $1.board, $1.reading) }

            func truth(knownBy instant: EpochMillis) -> TruthFile {
                let devices = runs.map { TruthFile.device($0, knownBy: instant) }
                return TruthFile(seed: campus.seed, start: calendar.day(containing: virtualStart).date.description, days: 1,
                                 intervalSeconds: campus.interval, timeZone: campus.timezone,
                                 messages: schedule.lazy.filter { $0.at <= instant }.count,
                                 rejects: devices.reduce(0) { $0 + ($1.rejects ?? 0) }, receiveTimeSlackMillis: 2_000,
                                 asOf: instant == .max ? nil : ISO8601.format(instant), devices: devices)
            }

            var settings = config.mqtt
            settings.clientID = "autovolt-simulator-\(campus.prefix)-\(campus.seed)"
            let publisher = try MQTTPublisher(settings: settings, cleanSession: false)
            try publisher.waitUntilConnected(timeout: 30)
            let stop = StopFlag()
            print("publishing \(schedule.count) messages of \(boards.count) boards over \(minutes) min to \(settings.host):\(settings.port); truth in \(truthURL.path)")
            var published = 0, lastTruthAt = SystemClock.nowMillis(), maxBehind: EpochMillis = 0
            for item in schedule {
                if stop.isSet { break }
                let wait = item.at - SystemClock.nowMillis()
                if wait > 0 { Thread.sleep(forTimeInterval: Double(wait) / 1000) } // pacing the simulated boards
                maxBehind = max(maxBehind, SystemClock.nowMillis() - item.at)
                let run = runs[item.board]
                try publisher.publish(topic: "autovolt/\(run.device.info.esp32Name)/telemetry",
                                      payload: Array(CampusSimulator.payload(run.readings[item.reading], device: run.device).utf8))
                published += 1
                if SystemClock.nowMillis() - lastTruthAt >= 5_000 {
                    try truth(knownBy: item.at).write(to: truthURL)
                    lastTruthAt = SystemClock.nowMillis()
                }
            }
            try publisher.waitForAcknowledgements(timeout: 120)
            let final = published == schedule.count ? truth(knownBy: .max) : truth(knownBy: schedule[max(0, published - 1)].at)
            try final.write(to: truthURL)
            print("published \(published) messages (\(final.rejects) malformed), all acknowledged; at most \(maxBehind) ms behind schedule")
            if published < schedule.count { throw ExitCode(130) }
        }
    }
}

/// Set by SIGINT or SIGTERM, so a live run stops between messages and still writes its truth.
// @unchecked: `flag` is a Mutex; `sources` is written only in init and only kept alive after it
// (DispatchSourceSignal is not Sendable).
final class StopFlag: @unchecked Sendable {
    private let flag = Mutex(false)
    private var sources: [DispatchSourceSignal] = []

    init() {
        for sig in [SIGINT, SIGTERM] {
            signal(sig, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler { [self] in flag.withLock { $0 = true } }
            source.resume()
            sources.append(source)
        }
    }

    var isSet: Bool { flag.withLock { $0 } }
}

/// Compares the database with a truth file: every device-day's billed energy, in the live ledger
/// and in the daily aggregates, and every device's events.
struct SimulateCheck: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "check",
        abstract: "Compare the database with DIR/truth.json; exit 1 on any difference.",
        discussion: """
            After replay (and the ledger: a running worker, or rebuild-ledger then recalculate), every
            device-day's billable Wh in the live ledger and in daily_aggregates must equal the truth's
            billable_wh within 0.001 Wh, each device must have exactly its distinct messages as events,
            and rejected_messages must hold the truth's rejects. A live run's truth allows a day to differ
            by what its receive-time slack can move across midnight, while each device's total stays exact.
            --wait retries until the worker has caught up (or the time is up).
            """)

    @OptionGroup var options: ConfigOptions
    @Option(help: "Seconds to keep retrying while the database differs (a worker still draining).") var wait: Double = 0
    @Flag(help: "Print only the differences and the summary, not every device-day.") var quiet = false
    @Argument(help: "truth.json written by simulate capture or simulate live.") var truth: String

    struct Figures { var ledger: [String: Double] = [:]; var aggregates: [String: Double] = [:]; var events: [String: Int] = [:]; var rejects = 0 }

    func run() throws {
        let config = try options.load()
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: truth)) } catch { throw fail("cannot read \(truth)", Exit.data) }
        let expected: TruthFile
        do { expected = try JSONDecoder().decode(TruthFile.self, from: data) } catch {
            throw fail("\(truth) is not a truth file: \(error)", Exit.data)
        }
        let deadline = Date(timeIntervalSinceNow: wait)
        while true {
            // While the worker still has events to derive or days to aggregate, the full
            // comparison (which reads every ledger entry of the campus) would only slow it down.
            if Date() < deadline, try !settled(config) {
                Thread.sleep(forTimeInterval: 2) // polling the database while the worker drains
                continue
            }
            let figures = try fetch(config, expected)
            let last = Date() >= deadline
            let differences = compare(expected, figures, print: false)
            if differences == 0 || last { _ = compare(expected, figures, print: true) }
            if differences == 0 { return }
            if last {
                print("\(differences) differences")
                throw ExitCode(1)
            }
            Thread.sleep(forTimeInterval: 2) // polling the database while the worker drains
        }
    }

    /// No event waits for the ledger and no day for its aggregates. On PostgreSQL the small
    /// queue is asked first: `processed` has no index, and the scan that proves it (the
    /// conditions are evaluated left to right) runs only once the queue is empty.
    func settled(_ config: WorkerConfig) throws -> Bool {
        if config.databaseKind == .postgresql {
            return try withPostgres(config) { c in
                try c.query("""
                    SELECT NOT EXISTS (SELECT 1 FROM telemetry_unprocessed)
                       AND NOT EXISTS (SELECT 1 FROM ledger_dirty_days)
                       AND NOT EXISTS (SELECT 1 FROM telemetry_events WHERE NOT processed) AS settled
                    """).first?.bool("settled") ?? false
            }
        }
        return try withDatabase(config, "simulate check") { db throws -> Bool in
            try db.client.countDocuments(Collections.telemetryEvents, filter: ["processed": false]) == 0
                && db.client.countDocuments("ledger_dirty_days", filter: [:]) == 0
        }
    }

    func fetch(_ config: WorkerConfig, _ expected: TruthFile) throws -> Figures {
        if config.databaseKind == .postgresql { return try fetchPostgres(config, expected) }
        let names = expected.devices.map { BSON.string($0.esp32Name) }
        return try withDatabase(config, "simulate check") { db throws -> Figures in
            var f = Figures()
            let scope: BSONDocument = ["esp32_name": ["$in": .array(names)]]
            var live = scope
            live["superseded_by"] = ["$exists": false]
            live["billable"] = true
            try db.client.aggregateBatches(Collections.ledgers, pipeline: [
                ["$match": .document(live)],
                ["$group": ["_id": ["n": "$esp32_name", "d": "$date"], "wh": ["$sum": "$delta_wh"]]],
            ]) { (groups) throws(MongoError) in
                for g in groups {
                    guard let id = g["_id"]?.documentValue, let n = id["n"]?.stringValue, let d = id["d"]?.stringValue else { continue }
                    f.ledger["\(n)|\(d)"] = g["wh"]?.doubleValue ?? 0
                }
            }
            try db.client.forEachBatch(Collections.dailyAggregates, filter: scope, projection: ["esp32_name": 1, "date": 1, "energy_wh": 1]) { (docs) throws(MongoError) in
                for d in docs {
                    guard let n = d["esp32_name"]?.stringValue, let date = d["date"]?.stringValue else { continue }
                    f.aggregates["\(n)|\(date)"] = d["energy_wh"]?.doubleValue ?? 0
                }
            }
            try db.client.aggregateBatches(Collections.telemetryEvents, pipeline: [
                ["$match": .document(scope)], ["$group": ["_id": "$esp32_name", "n": ["$sum": 1]]],
            ]) { (groups) throws(MongoError) in
                for g in groups { if let n = g["_id"]?.stringValue { f.events[n] = g["n"]?.intValue ?? 0 } }
            }
            f.rejects = try db.client.countDocuments(Collections.rejectedMessages, filter: [
                "topic": ["$in": .array(expected.devices.map { .string("autovolt/\($0.esp32Name)/telemetry") })],
            ])
            return f
        }
    }

    /// The same figures from PostgreSQL, summed by the server.
    func fetchPostgres(_ config: WorkerConfig, _ expected: TruthFile) throws -> Figures {
        let names = PostgresTextArray(expected.devices.map(\.esp32Name))
        return try withPostgres(config) { c in
            var f = Figures()
            try c.forEachBatch("""
                SELECT esp32_name, date, sum(delta_wh) AS wh FROM device_consumption_ledgers
                WHERE esp32_name = ANY($1::text[]) AND superseded_by IS NULL AND billable GROUP BY esp32_name, date
                """, [names]) { rows in
                for r in rows { if let n = r.string("esp32_name"), let d = r.string("date") { f.ledger["\(n)|\(d)"] = r.double("wh") ?? 0 } }
            }
            try c.forEachBatch("SELECT esp32_name, date, energy_wh FROM daily_aggregates WHERE esp32_name = ANY($1::text[])", [names]) { rows in
                for r in rows { if let n = r.string("esp32_name"), let d = r.string("date") { f.aggregates["\(n)|\(d)"] = r.double("energy_wh") ?? 0 } }
            }
            for r in try c.query("SELECT esp32_name, count(*) AS n FROM telemetry_events WHERE esp32_name = ANY($1::text[]) GROUP BY esp32_name", [names]) {
                if let n = r.string("esp32_name") { f.events[n] = r.int("n") ?? 0 }
            }
            let topics = PostgresTextArray(expected.devices.map { "autovolt/\($0.esp32Name)/telemetry" })
            f.rejects = try c.query("SELECT count(*) AS n FROM rejected_messages WHERE topic = ANY($1::text[])", [topics]).first?.int("n") ?? 0
            return f
        }
    }

    func withPostgres<T>(_ config: WorkerConfig, _ body: (PostgresConnection) throws -> T) throws -> T {
        try reportingFailures("simulate check") {
            let pool = try PostgresDatabase.connect(config, size: 1, applicationName: "autovolt-worker simulate check")
            defer { pool.close() }
            return try pool.withConnection(body)
        }
    }

    /// Counts the differences, printing the table when asked.
    func compare(_ expected: TruthFile, _ figures: Figures, print show: Bool) -> Int {
        func out(_ line: String) { if show { print(line) } }
        var differences = 0
        var billed = 0.0, billable = 0.0, consumed = 0.0, deviceDays = 0
        if !quiet { out("device         firmware        date        billable_wh (truth)   ledger_wh  aggregate_wh  consumed_wh") }
        let slack = Double(expected.receiveTimeSlackMillis ?? 0)
        for device in expected.devices {
            // What a receive time later than the publish time can move across a midnight, at full load.
            let dayTolerance = max(0.001, (device.ratedW ?? 0) * slack / 3_600_000)
            var ledgerTotal = 0.0, aggregateTotal = 0.0, truthTotal = 0.0
            for (date, day) in device.days.sorted(by: { $0.key < $1.key }) {
                let key = "\(device.esp32Name)|\(date)"
                let ledger = figures.ledger[key] ?? 0
                let aggregate = figures.aggregates[key] ?? 0
                let ok = abs(ledger - day.billableWh) < dayTolerance && abs(aggregate - day.billableWh) < dayTolerance
                if !ok { differences += 1 }
                deviceDays += 1
                billed += ledger
                billable += day.billableWh
                consumed += day.consumedWh
                ledgerTotal += ledger; aggregateTotal += aggregate; truthTotal += day.billableWh
                if !quiet || !ok {
                    out(padded(device.esp32Name, 14) + " " + padded(device.firmware, 15) + " " + date
                        + String(format: "  %19.3f  %10.3f  %12.3f  %11.3f", day.billableWh, ledger, aggregate, day.consumedWh)
                        + (ok ? "" : "  DIFFERENT"))
                }
            }
            if dayTolerance > 0.001 && (abs(ledgerTotal - truthTotal) >= 0.001 || abs(aggregateTotal - truthTotal) >= 0.001) {
                out("\(device.esp32Name): \(ledgerTotal) Wh in the ledger, \(aggregateTotal) Wh aggregated over all days, truth \(truthTotal) Wh  DIFFERENT")
                differences += 1
            }
            // Entries on dates the truth has none for are differences too.
            for (key, wh) in figures.ledger where key.hasPrefix(device.esp32Name + "|") && device.days[String(key.dropFirst(device.esp32Name.count + 1))] == nil && abs(wh) >= 0.001 {
                out("\(device.esp32Name): \(wh) Wh billed on \(key.dropFirst(device.esp32Name.count + 1)), a date without truth  DIFFERENT")
                differences += 1
            }
            let events = figures.events[device.esp32Name] ?? 0
            if events != device.events {
                out("\(device.esp32Name): \(events) events stored, \(device.events) distinct messages sent  DIFFERENT")
                differences += 1
            }
        }
        if figures.rejects != expected.rejects {
            out("rejected_messages: \(figures.rejects), truth \(expected.rejects)  DIFFERENT")
            differences += 1
        }
        out(String(format: "%d device-days of %d boards: billed %.3f Wh, truth %.3f Wh billable, %.3f Wh consumed (%.3f Wh no rule can recover); %d malformed payloads rejected",
                   deviceDays, expected.devices.count, billed, billable, consumed, consumed - billable, figures.rejects))
        if differences == 0 { out("no differences") }
        return differences
    }
}

/// `text` left-aligned in `width` columns (String(format:)'s %-14@ does not pad on Linux).
private func padded(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}
