import Foundation
import TOMLKit

/// Alarm rules (`AUTOVOLT_ALARMS`, contract section 8) and their evaluation, pure: the live
/// pipeline feeds each device's readings (and a timer the silence of offline devices) through
/// `AlarmEvaluator`, which says when an alarm raises and when it clears. Storage, streams and the
/// webhook are the service layer's.
public enum AlarmKind: String, Sendable, CaseIterable {
    case overPower = "over_power"
    case leftOnAfterHours = "left_on_after_hours"
    case offline
    case counterStuck = "counter_stuck"
    case rejects
}

public enum AlarmSeverity: String, Sendable, CaseIterable, Comparable {
    case info, low, high, critical
    var rank: Int {
        switch self {
        case .info: 0
        case .low: 1
        case .high: 2
        case .critical: 3
        }
    }
    public static func < (a: Self, b: Self) -> Bool { a.rank < b.rank }
}

/// When a classroom is in use: local weekdays (1 = Monday ... 7 = Sunday), an hour range, and
/// holidays (whole local dates off).
public struct ClassSchedule: Sendable, Equatable {
    public var weekdays: Set<Int>
    /// Minutes after local midnight: from (inclusive) to (exclusive).
    public var fromMinute: Int
    public var toMinute: Int
    public var holidays: Set<CivilDate>

    public init(weekdays: Set<Int> = [1, 2, 3, 4, 5], fromMinute: Int = 8 * 60, toMinute: Int = 18 * 60, holidays: Set<CivilDate> = []) {
        self.weekdays = weekdays
        self.fromMinute = fromMinute
        self.toMinute = toMinute
        self.holidays = holidays
    }

    public func isInUse(at instant: EpochMillis, calendar: inout LocalCalendar) -> Bool {
        let day = calendar.day(containing: instant)
        guard !holidays.contains(day.date) else { return false }
        guard weekdays.contains(day.date.weekday) else { return false }
        let minute = Int((instant - day.start) / 60_000)
        return minute >= fromMinute && minute < toMinute
    }
}

public struct AlarmRule: Sendable, Equatable {
    public var name: String
    public var kind: AlarmKind
    public var severity: AlarmSeverity
    /// over_power: the power that raises; left_on_after_hours: `floor_w`, the power that counts as on.
    public var thresholdW: Double?
    /// over_power clears below `thresholdW - hysteresisW`.
    public var hysteresisW: Double
    /// How long the condition must hold before the alarm raises, and its absence before it clears
    /// (offline: how long a device may be silent or offline).
    public var durationMillis: Int64
    /// rejects: more than `count` rejected messages of one device within `windowMillis`.
    public var count: Int?
    public var windowMillis: Int64?
    /// left_on_after_hours: the rule's own schedule (else the classroom's `[[schedule]]` in the registry, else the default).
    public var schedule: ClassSchedule?
    public var classroom: String?
    public var esp32Name: String?

    public init(name: String, kind: AlarmKind, severity: AlarmSeverity = .low, thresholdW: Double? = nil, hysteresisW: Double = 0,
                durationMillis: Int64 = 0, count: Int? = nil, windowMillis: Int64? = nil, schedule: ClassSchedule? = nil,
                classroom: String? = nil, esp32Name: String? = nil) {
        self.name = name
        self.kind = kind
        self.severity = severity
        self.thresholdW = thresholdW
        self.hysteresisW = hysteresisW
        self.durationMillis = durationMillis
        self.count = count
        self.windowMillis = windowMillis
        self.schedule = schedule
        self.classroom = classroom
        self.esp32Name = esp32Name
    }

    /// Whether the rule watches this device.
    public func applies(to device: DeviceInfo) -> Bool {
        if let esp32Name, esp32Name != device.esp32Name { return false }
        if let classroom, classroom != device.classroom { return false }
        return true
    }
}

/// `[[rule]]` tables of the alarm file. Every problem names the rule and the field.
public struct AlarmRuleSet: Sendable, Equatable {
    public var rules: [AlarmRule]

    public init(rules: [AlarmRule] = []) { self.rules = rules }

    public struct ParseError: Error, Sendable, Equatable, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    public static func parse(toml text: String) throws(ParseError) -> AlarmRuleSet {
        let entries: [TOMLTable]
        do { entries = try TOMLArrayOfTables.parse(text, key: "rule") } catch { throw ParseError(message: error.message) }
        var rules: [AlarmRule] = []
        var names: Set<String> = []
        for (index, rule) in entries.enumerated() {
            guard let name = rule["name"]?.string, !name.isEmpty else {
                throw ParseError(message: "rule #\(index + 1): name is missing or not a string")
            }
            let label = "rule \"\(name)\""
            guard names.insert(name).inserted else { throw ParseError(message: "\(label): the name is used twice") }
            let common: Set<String> = ["name", "kind", "severity", "duration", "classroom", "esp32_name"]
            let known = common.union(["threshold_w", "hysteresis_w", "floor_w", "count", "window", "schedule"])
            for key in rule.keys where !known.contains(key) { throw ParseError(message: "\(label): unknown field \"\(key)\"") }
            guard let kindText = rule["kind"]?.string, let kind = AlarmKind(rawValue: kindText) else {
                throw ParseError(message: "\(label): kind must be one of \(AlarmKind.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            // A field of another kind would be ignored without a word (threshold_w on a
            // left_on_after_hours rule, whose power floor is floor_w): refused instead.
            let ofKind: Set<String> = switch kind {
            case .overPower: ["threshold_w", "hysteresis_w"]
            case .leftOnAfterHours: ["floor_w", "schedule"]
            case .offline, .counterStuck: []
            case .rejects: ["count", "window"]
            }
            for key in rule.keys.sorted() where !common.contains(key) && !ofKind.contains(key) {
                throw ParseError(message: "\(label): \(key) does not apply to \(kind.rawValue) rules")
            }
            var severity = AlarmSeverity.low
            if let value = rule["severity"] {
                guard let text = value.string, let parsed = AlarmSeverity(rawValue: text) else {
                    throw ParseError(message: "\(label): severity must be info, low, high or critical")
                }
                severity = parsed
            }
            func number(_ key: String) throws(ParseError) -> Double? {
                guard let value = rule[key] else { return nil }
                if let d = value.double, d.isFinite { return d }
                if let i = value.int { return Double(i) }
                throw ParseError(message: "\(label): \(key) must be a number")
            }
            func duration(_ key: String) throws(ParseError) -> Int64? {
                guard let value = rule[key] else { return nil }
                guard let text = value.string, let millis = DurationText.millis(text) else {
                    throw ParseError(message: "\(label): \(key) must be a duration such as \"90s\", \"15m\" or \"2h\"")
                }
                return millis
            }
            var parsed = AlarmRule(name: name, kind: kind, severity: severity)
            parsed.hysteresisW = try number("hysteresis_w") ?? 0
            guard parsed.hysteresisW >= 0 else { throw ParseError(message: "\(label): hysteresis_w must not be negative") }
            parsed.durationMillis = try duration("duration") ?? 0
            parsed.classroom = rule["classroom"]?.string
            parsed.esp32Name = rule["esp32_name"]?.string
            if rule["classroom"] != nil && parsed.classroom == nil { throw ParseError(message: "\(label): classroom must be a string") }
            if rule["esp32_name"] != nil && parsed.esp32Name == nil { throw ParseError(message: "\(label): esp32_name must be a string") }
            switch kind {
            case .overPower:
                guard let threshold = try number("threshold_w"), threshold > 0 else {
                    throw ParseError(message: "\(label): over_power needs threshold_w above 0")
                }
                guard parsed.hysteresisW < threshold else { throw ParseError(message: "\(label): hysteresis_w must be below threshold_w") }
                parsed.thresholdW = threshold
            case .leftOnAfterHours:
                parsed.thresholdW = try number("floor_w") ?? 0
                if let value = rule["schedule"] {
                    guard let table = value.table else { throw ParseError(message: "\(label): schedule must be a table") }
                    parsed.schedule = try ClassSchedule.parse(table, label: "\(label): schedule")
                }
            case .offline:
                guard parsed.durationMillis > 0 else {
                    throw ParseError(message: "\(label): offline needs a duration (how long a device may be silent)")
                }
            case .counterStuck:
                break
            case .rejects:
                guard let count = try number("count"), count >= 0, count == count.rounded(), count <= 1_000_000 else {
                    throw ParseError(message: "\(label): rejects needs count, a whole number of rejected messages (0 to 1000000)")
                }
                guard let window = try duration("window"), window > 0 else {
                    throw ParseError(message: "\(label): rejects needs window, a duration such as \"10m\"")
                }
                parsed.count = Int(count)
                parsed.windowMillis = window
            }
            rules.append(parsed)
        }
        return AlarmRuleSet(rules: rules)
    }
}

extension ClassSchedule {
    /// `{ weekdays = [1, 2, 3, 4, 5], hours = "08:00-18:00", holidays = ["2026-12-25"] }`.
    static func parse(_ table: TOMLTable, label: String, alsoAllowed: Set<String> = []) throws(AlarmRuleSet.ParseError) -> ClassSchedule {
        var schedule = ClassSchedule()
        for key in table.keys where !["weekdays", "hours", "holidays"].contains(key) && !alsoAllowed.contains(key) {
            throw .init(message: "\(label): unknown field \"\(key)\"")
        }
        if let value = table["weekdays"] {
            guard let list = value.array?.compactMap({ $0.int }), list.count == value.array?.count, list.allSatisfy({ (1...7).contains($0) }) else {
                throw .init(message: "\(label): weekdays must be a list of 1 (Monday) to 7 (Sunday)")
            }
            schedule.weekdays = Set(list)
        }
        if let value = table["hours"] {
            guard let text = value.string, let range = Self.minutes(text) else {
                throw .init(message: "\(label): hours must be \"HH:MM-HH:MM\"")
            }
            (schedule.fromMinute, schedule.toMinute) = range
        }
        if let value = table["holidays"] {
            guard let list = value.array?.compactMap({ $0.string.flatMap(CivilDate.init) }), list.count == value.array?.count else {
                throw .init(message: "\(label): holidays must be a list of \"YYYY-MM-DD\" dates")
            }
            schedule.holidays = Set(list)
        }
        return schedule
    }

    /// "08:00-18:00" as minutes after midnight; "24:00" may end a range.
    static func minutes(_ text: String) -> (Int, Int)? {
        let parts = text.split(separator: "-")
        guard parts.count == 2 else { return nil }
        func minute(_ s: Substring) -> Int? {
            let hm = s.split(separator: ":")
            guard hm.count == 2, let h = Int(hm[0]), let m = Int(hm[1]), (0...24).contains(h), (0..<60).contains(m), h * 60 + m <= 1440 else {
                return nil
            }
            return h * 60 + m
        }
        guard let from = minute(parts[0]), let to = minute(parts[1]), from < to else { return nil }
        return (from, to)
    }
}

/// One (rule, device)'s alarm state, and the step that moves it: a condition must hold for the
/// rule's duration before the alarm raises, and its clearing condition as long before it clears.
public struct AlarmEvaluator: Sendable, Equatable {
    public enum Transition: Sendable, Equatable {
        case raise(value: Double)
        case clear(value: Double)
    }

    public private(set) var active = false
    /// Since when the raising (while inactive) or clearing (while active) condition has held.
    public private(set) var holdingSince: EpochMillis?
    public private(set) var lastValue: Double?

    public init(active: Bool = false) { self.active = active }

    /// Takes the state another worker (or this one before a restart) stored: any wait starts over.
    public mutating func assume(active: Bool) {
        guard active != self.active else { return }
        self.active = active
        holdingSince = nil
    }

    /// `raise`: the condition that raises the alarm holds now; `clear`: the one that clears it.
    /// (They differ by the hysteresis: between them, nothing changes.)
    public mutating func step(at instant: EpochMillis, value: Double, raise: Bool, clear: Bool, duration: EpochMillis) -> Transition? {
        lastValue = value
        let holding = active ? clear : raise
        guard holding else {
            holdingSince = nil
            return nil
        }
        let since = holdingSince ?? instant
        holdingSince = since
        guard instant - since >= duration else { return nil }
        active.toggle()
        holdingSince = nil
        return active ? .raise(value: value) : .clear(value: value)
    }

    // MARK: The conditions of each kind

    /// over_power: above the threshold raises, below threshold - hysteresis clears.
    public mutating func overPower(_ rule: AlarmRule, powerW: Double, at instant: EpochMillis) -> Transition? {
        let threshold = rule.thresholdW ?? .infinity
        return step(at: instant, value: powerW, raise: powerW > threshold, clear: powerW < threshold - rule.hysteresisW,
                    duration: rule.durationMillis)
    }

    /// left_on_after_hours: a switch on, or power above the floor, outside the schedule.
    public mutating func leftOn(_ rule: AlarmRule, schedule: ClassSchedule, anySwitchOn: Bool, powerW: Double?,
                                at instant: EpochMillis, calendar: inout LocalCalendar) -> Transition? {
        let on = anySwitchOn || (powerW ?? 0) > (rule.thresholdW ?? 0)
        let leftOn = on && !schedule.isInUse(at: instant, calendar: &calendar)
        return step(at: instant, value: powerW ?? 0, raise: leftOn, clear: !leftOn, duration: rule.durationMillis)
    }

    /// offline: offline by status, or no telemetry, for longer than the duration (`offlineSince`:
    /// when its status said offline, nil while online). Called on each reading and by a timer.
    public mutating func offline(_ rule: AlarmRule, offlineSince: EpochMillis?, lastTelemetryAt: EpochMillis?,
                                 at instant: EpochMillis) -> Transition? {
        let silentFor = lastTelemetryAt.map { max(0, instant - $0) }
        let offlineFor = offlineSince.map { max(0, instant - $0) }
        let down = (offlineFor ?? 0) > rule.durationMillis || (silentFor ?? .max) > rule.durationMillis
        // The duration is the silence itself: raise as soon as it is over, clear as soon as the device is back.
        return step(at: instant, value: silentFor.map { Double($0) / 1000 } ?? -1, raise: down, clear: !down, duration: 0)
    }

    /// counter_stuck: readings flagged counter_stuck_with_power for longer than the duration.
    public mutating func counterStuck(_ rule: AlarmRule, flagged: Bool, powerW: Double?, at instant: EpochMillis) -> Transition? {
        step(at: instant, value: powerW ?? 0, raise: flagged, clear: !flagged, duration: rule.durationMillis)
    }

    /// rejects: more than `count` rejected messages of the device in the last `window`
    /// (`recentRejects`: their receive times, any order).
    public mutating func rejects(_ rule: AlarmRule, recentRejects: [EpochMillis], at instant: EpochMillis) -> Transition? {
        let window = rule.windowMillis ?? 0
        let n = recentRejects.filter { $0 > instant - window && $0 <= instant }.count
        let limit = rule.count ?? 0
        return step(at: instant, value: Double(n), raise: n > limit, clear: n <= limit, duration: rule.durationMillis)
    }
}

/// Durations as people write them: `7d`, `12h`, `30m`, `90s`, `500ms`, or plain seconds.
public enum DurationText {
    /// Milliseconds, or nil when `text` is no duration.
    public static func millis(_ text: String) -> Int64? {
        let units: [(String, Double)] = [("ms", 1), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)]
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        for (suffix, factor) in units where trimmed.hasSuffix(suffix) {
            guard let number = Double(trimmed.dropLast(suffix.count)), number.isFinite, number >= 0, number * factor < 1e15 else { return nil }
            return Int64(number * factor)
        }
        guard let seconds = Double(trimmed), seconds.isFinite, seconds >= 0, seconds < 1e12 else { return nil }
        return Int64(seconds * 1000)
    }
}
