import TOMLKit

/// One ESP32 board from `devices.toml` (contract section 5).
public struct DeviceInfo: Sendable, Equatable {
    public struct Switch: Sendable, Equatable {
        public var name: String
        public var ratedW: Double?
        public init(name: String, ratedW: Double?) {
            self.name = name
            self.ratedW = ratedW
        }
    }

    public static let defaultMaxPowerW = 20_000.0
    public static let defaultRollbackToleranceWh = 50.0
    public static let unassignedClassroom = "unassigned"

    public var esp32Name: String
    public var classroom: String
    public var maxPowerW: Double
    public var rollbackToleranceWh: Double
    public var switches: [Switch]
    /// The board's own secret for signed HTTP ingest (`hmac_secret`), if it has one.
    public var hmacSecret: String?

    public init(esp32Name: String, classroom: String, maxPowerW: Double = DeviceInfo.defaultMaxPowerW,
                rollbackToleranceWh: Double = DeviceInfo.defaultRollbackToleranceWh, switches: [Switch] = []) {
        self.esp32Name = esp32Name
        self.classroom = classroom
        self.maxPowerW = maxPowerW
        self.rollbackToleranceWh = rollbackToleranceWh
        self.switches = switches
    }

    /// What an unregistered device that publishes anyway is ingested as.
    public static func unregistered(_ name: String) -> DeviceInfo {
        DeviceInfo(esp32Name: name, classroom: unassignedClassroom)
    }
}

public struct DeviceRegistry: Sendable, Equatable {
    public private(set) var devices: [String: DeviceInfo]
    /// When each classroom is in use (`[[schedule]]`), for the left_on_after_hours alarms.
    public private(set) var schedules: [String: ClassSchedule]
    /// Classrooms billed together (`[[group]]`: `name`, `classrooms`), for example a department.
    public private(set) var groups: [String: [String]]

    public init(devices: [DeviceInfo] = []) {
        self.init(devices: devices, schedules: [:])
    }

    public init(devices: [DeviceInfo], schedules: [String: ClassSchedule], groups: [String: [String]] = [:]) {
        self.devices = Dictionary(devices.map { ($0.esp32Name, $0) }, uniquingKeysWith: { first, _ in first })
        self.schedules = schedules
        self.groups = groups
    }

    public func device(_ name: String) -> DeviceInfo? { devices[name] }

    /// The registered entry, or the `unassigned` stand-in for an unknown device.
    public func resolve(_ name: String) -> DeviceInfo { devices[name] ?? .unregistered(name) }

    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    /// Parses `devices.toml`: `[[device]]` tables, `[[schedule]]` tables (`classroom`,
    /// `weekdays`, `hours`, `holidays`: when the classroom is in use) and `[[group]]` tables
    /// (`name`, `classrooms`: a statement's scope). Every problem is reported
    /// with the device or classroom it concerns; nothing is silently defaulted except the
    /// documented optional fields.
    public static func parse(toml text: String) throws(ParseError) -> DeviceRegistry {
        let entries: [TOMLTable]
        let scheduleEntries: [TOMLTable]
        let groupEntries: [TOMLTable]
        do {
            let tables = try TOMLArrayOfTables.parse(text, keys: ["device", "schedule", "group"])
            entries = tables["device"] ?? []
            scheduleEntries = tables["schedule"] ?? []
            groupEntries = tables["group"] ?? []
        } catch {
            throw ParseError(message: error.message)
        }
        var groups: [String: [String]] = [:]
        for (index, entry) in groupEntries.enumerated() {
            guard let name = entry["name"]?.string, !name.isEmpty else {
                throw ParseError(message: "group #\(index + 1): name is missing or not a string")
            }
            let label = "group \"\(name)\""
            guard groups[name] == nil else { throw ParseError(message: "\(label) is listed twice") }
            for key in entry.keys where key != "name" && key != "classrooms" {
                throw ParseError(message: "\(label): unknown key \"\(key)\"")
            }
            guard let list = entry["classrooms"]?.array, !list.isEmpty else {
                throw ParseError(message: "\(label): classrooms must be a non-empty array of classroom names")
            }
            var classrooms: [String] = []
            for item in list {
                guard let classroom = item.string, !classroom.isEmpty else {
                    throw ParseError(message: "\(label): classrooms must be a non-empty array of classroom names")
                }
                if !classrooms.contains(classroom) { classrooms.append(classroom) }
            }
            groups[name] = classrooms
        }
        var schedules: [String: ClassSchedule] = [:]
        for (index, entry) in scheduleEntries.enumerated() {
            guard let classroom = entry["classroom"]?.string, !classroom.isEmpty else {
                throw ParseError(message: "schedule #\(index + 1): classroom is missing or not a string")
            }
            let label = "schedule of \"\(classroom)\""
            guard schedules[classroom] == nil else { throw ParseError(message: "\(label) is listed twice") }
            do {
                schedules[classroom] = try ClassSchedule.parse(entry, label: label, alsoAllowed: ["classroom"])
            } catch {
                throw ParseError(message: error.message)
            }
        }
        var devices: [DeviceInfo] = []
        var seen: Set<String> = []
        for (index, device) in entries.enumerated() {
            let position = "device #\(index + 1)"
            guard let name = device["esp32_name"]?.string else {
                throw ParseError(message: "\(position): esp32_name is missing or not a string")
            }
            let label = "device \"\(name)\""
            guard DeviceTopic.isValidDeviceName(name) else {
                throw ParseError(message: "\(label): esp32_name must match [A-Za-z0-9_.-]{1,64}")
            }
            guard seen.insert(name).inserted else { throw ParseError(message: "\(label) is listed twice") }
            guard let classroom = device["classroom"]?.string, !classroom.isEmpty else {
                throw ParseError(message: "\(label): classroom is missing or not a string")
            }
            let allowed: Set<String> = ["esp32_name", "classroom", "max_power_w", "rollback_tolerance_wh", "switch", "hmac_secret"]
            for key in device.keys where !allowed.contains(key) {
                throw ParseError(message: "\(label): unknown key \"\(key)\"")
            }
            let maxPower = try number(device["max_power_w"], "\(label): max_power_w") ?? DeviceInfo.defaultMaxPowerW
            guard maxPower > 0 else { throw ParseError(message: "\(label): max_power_w must be positive") }
            let tolerance = try number(device["rollback_tolerance_wh"], "\(label): rollback_tolerance_wh")
                ?? DeviceInfo.defaultRollbackToleranceWh
            guard tolerance >= 0 else { throw ParseError(message: "\(label): rollback_tolerance_wh must not be negative") }
            var switches: [DeviceInfo.Switch] = []
            if let switchEntries = device["switch"] {
                guard let list = switchEntries.array else { throw ParseError(message: "\(label): switch must be [[device.switch]] tables") }
                for (switchIndex, item) in list.enumerated() {
                    guard let sw = item.table, let switchName = sw["name"]?.string else {
                        throw ParseError(message: "\(label): switch #\(switchIndex + 1) needs a name")
                    }
                    let rated = try number(sw["rated_w"], "\(label): switch \"\(switchName)\" rated_w")
                    if let rated, rated < 0 { throw ParseError(message: "\(label): switch \"\(switchName)\" rated_w must not be negative") }
                    switches.append(.init(name: switchName, ratedW: rated))
                }
            }
            var info = DeviceInfo(esp32Name: name, classroom: classroom, maxPowerW: maxPower,
                                  rollbackToleranceWh: tolerance, switches: switches)
            if let secret = device["hmac_secret"] {
                guard let text = secret.string, text.utf8.count >= 16 else {
                    throw ParseError(message: "\(label): hmac_secret must be a string of at least 16 characters")
                }
                info.hmacSecret = text
            }
            devices.append(info)
        }
        return DeviceRegistry(devices: devices, schedules: schedules, groups: groups)
    }

    private static func number(_ value: TOMLValueConvertible?, _ what: String) throws(ParseError) -> Double? {
        guard let value else { return nil }
        if let d = value.double { return d }
        if let i = value.int { return Double(i) }
        throw ParseError(message: "\(what) must be a number")
    }
}

/// The `[[NAME]]` tables of a TOML file that holds nothing else (devices.toml, alarms.toml),
/// with one set of messages for what is wrong with its shape.
enum TOMLArrayOfTables {
    /// The tables, in order; empty when there are none. Throws the message to report.
    static func parse(_ text: String, key: String) throws(TOMLShapeError) -> [TOMLTable] {
        try parse(text, keys: [key])[key] ?? []
    }

    /// The tables of each of `keys` (a file may hold several kinds).
    static func parse(_ text: String, keys: [String]) throws(TOMLShapeError) -> [String: [TOMLTable]] {
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw TOMLShapeError(message: "line \(error.source.begin.line): \(error.description)")
        } catch {
            throw TOMLShapeError(message: "\(error)")
        }
        let expected = keys.map { "[[\($0)]]" }.joined(separator: " or ")
        for other in table.keys where !keys.contains(other) {
            throw TOMLShapeError(message: "unknown top-level key \"\(other)\" (expected \(expected) tables)")
        }
        var found: [String: [TOMLTable]] = [:]
        for key in keys {
            guard let entries = table[key] else { continue }
            guard let array = entries.array else { throw TOMLShapeError(message: "\"\(key)\" must be an array of tables ([[\(key)]])") }
            var tables: [TOMLTable] = []
            for (index, entry) in array.enumerated() {
                guard let t = entry.table else { throw TOMLShapeError(message: "\(key) #\(index + 1) is not a table") }
                tables.append(t)
            }
            found[key] = tables
        }
        return found
    }
}

struct TOMLShapeError: Error { let message: String }
