import ArgumentParser
import AutoVoltCore
import AutoVoltMongo
import AutoVoltService
import Foundation

struct Simulate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "A simulated campus with ground truth (CampusSimulator).",
        subcommands: [SimulateCapture.self, SimulateCheck.self])
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

    @Option(help: "Boards (about four to a classroom).") var devices: Int = 20
    @Option(help: "First local date, YYYY-MM-DD.") var start: String
    @Option(help: "Days to simulate.") var days: Int = 1
    @Option(help: "Seconds between readings.") var interval: Int = 30
    @Option(help: "Seed: the same seed gives the same campus.") var seed: UInt64 = 1
    @Option(help: "IANA time zone of the campus's days and class hours.") var timezone: String = "Asia/Kolkata"
    @Option(help: "Multiply every fault rate (reboots, resets, glitches, duplicates, late, offline); 0: none.")
    var faultScale: Double = 1
    @Option(help: "Directory to write into (created if missing).") var out: String

    func validate() throws {
        guard CivilDate(start) != nil else { throw ValidationError("--start \"\(start)\" is not YYYY-MM-DD") }
        guard (1...10_000).contains(devices) else { throw ValidationError("--devices must be 1...10000") }
        guard (1...366).contains(days) else { throw ValidationError("--days must be 1...366") }
        guard (1...3_600).contains(interval) else { throw ValidationError("--interval must be 1...3600 seconds") }
        guard faultScale >= 0 && faultScale.isFinite else { throw ValidationError("--fault-scale must be 0 or more") }
        guard TimeZone(identifier: timezone) != nil else { throw ValidationError("--timezone \"\(timezone)\" is not an IANA time zone") }
    }

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
            /// Distinct messages in the capture: the events the database must hold, once each.
            var events: Int
            var days: [String: Day]
            var faults: [String: Int]
            enum CodingKeys: String, CodingKey {
                case esp32Name = "esp32_name", classroom, firmware, events, days, faults
            }
        }
        var seed: UInt64
        var start: String
        var days: Int
        var intervalSeconds: Int
        var timeZone: String
        var messages: Int
        var rejects: Int
        var devices: [Device]
        enum CodingKeys: String, CodingKey {
            case seed, start, days, messages, rejects, devices
            case intervalSeconds = "interval_seconds", timeZone = "time_zone"
        }
    }

    func run() throws {
        guard let first = CivilDate(start), let zone = TimeZone(identifier: timezone) else { throw ExitCode(64) }
        let directory = URL(fileURLWithPath: out)
        try reportingFailures("simulate capture") {
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            var config = CampusSimulator.Config(devices: devices, start: first, days: days, intervalSeconds: interval, seed: seed)
            config.faults = config.faults.scaled(by: faultScale)
            let campus = CampusSimulator.devices(config)
            try Self.registry(campus).write(to: directory.appendingPathComponent("devices.toml"), atomically: true, encoding: .utf8)

            let capturePath = directory.appendingPathComponent("capture.txt").path
            guard FileManager.default.createFile(atPath: capturePath, contents: nil),
                  let capture = FileHandle(forWritingAtPath: capturePath) else {
                throw ValidationError("cannot write \(capturePath)")
            }
            defer { try? capture.close() }
            var calendar = LocalCalendar(timeZone: zone)
            var truth = TruthFile(seed: seed, start: first.description, days: days, intervalSeconds: interval, timeZone: timezone,
                                  messages: 0, rejects: 0, devices: [])
            // One device at a time: memory is one device's readings, however large the campus.
            for device in campus {
                let run = CampusSimulator.simulate(device, config: config, calendar: &calendar)
                var text = ""
                for reading in run.readings {
                    text += ISO8601.format(reading.deliveredAt) + " autovolt/\(device.info.esp32Name)/telemetry "
                        + Self.payload(reading, device: device) + "\n"
                }
                try capture.write(contentsOf: Data(text.utf8))
                truth.messages += run.readings.count
                truth.devices.append(.init(
                    esp32Name: device.info.esp32Name, classroom: device.info.classroom, firmware: device.firmware.rawValue,
                    events: run.readings.filter { !$0.isDuplicate }.count,
                    days: Dictionary(uniqueKeysWithValues: run.days.map { ($0.key.description, TruthFile.Day(consumedWh: $0.value.consumedWh, billableWh: $0.value.billableWh)) }),
                    faults: Dictionary(uniqueKeysWithValues: run.faults.map { ($0.key.rawValue, $0.value) })))
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            try encoder.encode(truth).write(to: directory.appendingPathComponent("truth.json"))
            print("simulated \(campus.count) boards, \(days) days: \(truth.messages) messages in \(capturePath)")
        }
    }

    /// The registry the campus was built with.
    static func registry(_ campus: [CampusSimulator.Device]) -> String {
        var text = "# Written by autovolt-worker simulate capture.\n"
        for device in campus {
            text += "\n[[device]]\nesp32_name = \"\(device.info.esp32Name)\"\nclassroom = \"\(device.info.classroom)\"\n"
            for s in device.info.switches {
                text += "\n[[device.switch]]\nname = \"\(s.name)\"\nrated_w = \(Int(s.ratedW ?? 0))\n"
            }
        }
        return text
    }

    /// The payload as each firmware writes it (contract section 3).
    static func payload(_ r: CampusSimulator.Reading, device: CampusSimulator.Device) -> String {
        switch device.firmware {
        case .contractV1:
            let states = r.switches.map { $0 ? "1" : "0" }.joined(separator: ",")
            return "{\"esp32_name\":\"\(device.info.esp32Name)\",\"timestamp\":\(r.timestampAsSent),\"energy_wh_total\":\(r.energyWh),"
                + "\"switch_state\":[\(states)],\"boot_id\":\"\(r.bootID ?? "")\",\"seq\":\(r.seq),\"power_w\":\(r.powerW ?? 0)}"
        case .firmwareGuide:
            let states = zip(device.info.switches, r.switches).map { "\"\($0.0.name)\":\($0.1)" }.joined(separator: ",")
            return "{\"esp32_name\":\"\(device.info.esp32Name)\",\"timestamp\":\(r.timestampAsSent),\"energy_wh_total\":\(Int(r.energyWh)),"
                + "\"switch_state\":{\(states)},\"sequence_no\":\(r.seq)}"
        }
    }
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
            and rejected_messages must hold the truth's rejects.
            """)

    @OptionGroup var options: ConfigOptions
    @Argument(help: "truth.json written by simulate capture.") var truth: String

    func run() throws {
        let config = try options.load()
        let data: Data
        do { data = try Data(contentsOf: URL(fileURLWithPath: truth)) } catch { throw fail("cannot read \(truth)", Exit.data) }
        let expected: SimulateCapture.TruthFile
        do { expected = try JSONDecoder().decode(SimulateCapture.TruthFile.self, from: data) } catch {
            throw fail("\(truth) is not a truth file: \(error)", Exit.data)
        }
        struct Figures { var ledger: [String: Double] = [:]; var aggregates: [String: Double] = [:]; var events: [String: Int] = [:]; var rejects = 0 }
        let names = expected.devices.map { BSON.string($0.esp32Name) }
        let figures = try withDatabase(config, "simulate check") { db throws -> Figures in
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
            f.rejects = try db.client.countDocuments(Collections.rejectedMessages, filter: [:])
            return f
        }

        var differences = 0
        var billed = 0.0, billable = 0.0, consumed = 0.0, deviceDays = 0
        print("device         firmware        date        billable_wh (truth)   ledger_wh  aggregate_wh  consumed_wh")
        for device in expected.devices {
            for (date, day) in device.days.sorted(by: { $0.key < $1.key }) {
                let key = "\(device.esp32Name)|\(date)"
                let ledger = figures.ledger[key] ?? 0
                let aggregate = figures.aggregates[key] ?? 0
                let ok = abs(ledger - day.billableWh) < 0.001 && abs(aggregate - day.billableWh) < 0.001
                if !ok { differences += 1 }
                deviceDays += 1
                billed += ledger
                billable += day.billableWh
                consumed += day.consumedWh
                print(padded(device.esp32Name, 14) + " " + padded(device.firmware, 15) + " " + date
                      + String(format: "  %19.3f  %10.3f  %12.3f  %11.3f", day.billableWh, ledger, aggregate, day.consumedWh)
                      + (ok ? "" : "  DIFFERENT"))
            }
            // Entries on dates the truth has none for are differences too.
            for (key, wh) in figures.ledger where key.hasPrefix(device.esp32Name + "|") && device.days[String(key.dropFirst(device.esp32Name.count + 1))] == nil && abs(wh) >= 0.001 {
                print("\(device.esp32Name): \(wh) Wh billed on \(key.dropFirst(device.esp32Name.count + 1)), a date without truth  DIFFERENT")
                differences += 1
            }
            let events = figures.events[device.esp32Name] ?? 0
            if events != device.events {
                print("\(device.esp32Name): \(events) events stored, \(device.events) distinct messages sent  DIFFERENT")
                differences += 1
            }
        }
        if figures.rejects != expected.rejects {
            print("rejected_messages: \(figures.rejects), truth \(expected.rejects)  DIFFERENT")
            differences += 1
        }
        print(String(format: "%d device-days: billed %.3f Wh, truth %.3f Wh billable, %.3f Wh consumed (%.3f Wh no rule can recover)",
                     deviceDays, billed, billable, consumed, consumed - billable))
        if differences > 0 {
            print("\(differences) differences")
            throw ExitCode(1)
        }
        print("no differences")
    }
}

/// `text` left-aligned in `width` columns (String(format:)'s %-14@ does not pad on Linux).
private func padded(_ text: String, _ width: Int) -> String {
    text.count >= width ? text : text + String(repeating: " ", count: width - text.count)
}
