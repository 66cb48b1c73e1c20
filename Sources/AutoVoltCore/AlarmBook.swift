/// The alarm state of every (rule, device), fed by the live pipeline: readings and rejects as
/// they are stored, and device presence by a timer. Pure: it says which alarms raise or clear;
/// the service stores them (one active document per (rule, device) under a unique index) and
/// tells this book what the database holds, so a restart or a second worker never raises twice.
public struct AlarmBook {
    /// A reading as the alarms need it.
    public struct Reading: Sendable, Equatable {
        public var esp32Name: String
        /// The instant it stands for (the trusted device clock, else the receive time).
        public var time: EpochMillis
        public var receivedAt: EpochMillis
        public var energyWh: Double
        public var powerW: Double?
        public var anySwitchOn: Bool
        public var bootID: String?

        public init(esp32Name: String, time: EpochMillis, receivedAt: EpochMillis, energyWh: Double, powerW: Double? = nil,
                    anySwitchOn: Bool = false, bootID: String? = nil) {
            self.esp32Name = esp32Name
            self.time = time
            self.receivedAt = receivedAt
            self.energyWh = energyWh
            self.powerW = powerW
            self.anySwitchOn = anySwitchOn
            self.bootID = bootID
        }

        public init(_ reading: TelemetryReading) {
            self.init(esp32Name: reading.esp32Name, time: reading.deviceTime, receivedAt: reading.receivedAt,
                      energyWh: reading.energyWhTotal, powerW: reading.powerW, anySwitchOn: Self.anyOn(reading.switchState),
                      bootID: reading.bootID)
        }

        /// `switch_state` is an array of 0/1 or an object of name to bool or 0/1.
        static func anyOn(_ value: JSONValue) -> Bool {
            switch value {
            case .bool(let b): b
            case .number(let n): n.value != 0
            case .string(let s): ["on", "true", "1"].contains(s.lowercased())
            case .array(let items): items.contains(where: anyOn)
            case .object(let o): o.members.contains { anyOn($0.value) }
            case .null: false
            }
        }
    }

    /// What the timer reads of a device's presence (`device_status`).
    public struct Presence: Sendable, Equatable {
        public var esp32Name: String
        public var online: Bool?
        public var lastStatusAt: EpochMillis?
        public var lastTelemetryAt: EpochMillis?

        public init(esp32Name: String, online: Bool?, lastStatusAt: EpochMillis?, lastTelemetryAt: EpochMillis?) {
            self.esp32Name = esp32Name
            self.online = online
            self.lastStatusAt = lastStatusAt
            self.lastTelemetryAt = lastTelemetryAt
        }
    }

    public struct Key: Hashable, Sendable {
        public var rule: String
        public var esp32Name: String
        public init(rule: String, esp32Name: String) {
            self.rule = rule
            self.esp32Name = esp32Name
        }
    }

    public struct Change: Sendable, Equatable {
        public enum Kind: String, Sendable { case raise, clear }
        public var kind: Kind
        public var rule: AlarmRule
        public var esp32Name: String
        public var classroom: String
        public var at: EpochMillis
        public var value: Double
        public var key: Key { Key(rule: rule.name, esp32Name: esp32Name) }

        public init(kind: Kind, rule: AlarmRule, esp32Name: String, classroom: String, at instant: EpochMillis, value: Double) {
            self.kind = kind
            self.rule = rule
            self.esp32Name = esp32Name
            self.classroom = classroom
            self.at = instant
            self.value = value
        }
    }

    public private(set) var rules: [AlarmRule]
    /// Devices silent since before the worker started count from its start, not from the epoch.
    public let startedAt: EpochMillis
    private var evaluators: [Key: AlarmEvaluator] = [:]
    private var classrooms: [Key: String] = [:]
    private var lastReading: [String: Reading] = [:]
    /// The most recent reject times of each device, at most the largest `count` + 1 of any rule.
    private var rejectTimes: [String: [EpochMillis]] = [:]
    /// Devices whose last status (as the timer read it) says offline.
    private var saysOffline: Set<String> = []
    private var calendar: LocalCalendar
    /// The classrooms' schedules from the registry (`[[schedule]]`), for rules without their own.
    public var schedules: [String: ClassSchedule] = [:]

    public init(rules: [AlarmRule], calendar: LocalCalendar, startedAt: EpochMillis) {
        self.rules = rules
        self.calendar = calendar
        self.startedAt = startedAt
    }

    public var hasRules: Bool { !rules.isEmpty }
    /// The offline rules' shortest duration: the timer checks presence a few times within it.
    public var shortestOfflineDuration: EpochMillis? { rules.filter { $0.kind == .offline }.map(\.durationMillis).min() }

    public func isActive(_ key: Key) -> Bool { evaluators[key]?.active ?? false }
    public var activeKeys: Set<Key> { Set(evaluators.filter { $0.value.active }.map(\.key)) }

    /// New rules (SIGHUP). Alarms of rules that are gone, or whose scope no longer covers the
    /// device, are cleared; those of rules that remain keep their state.
    public mutating func replaceRules(_ newRules: [AlarmRule], registry: DeviceRegistry, now: EpochMillis) -> [Change] {
        let byName = Dictionary(newRules.map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var changes: [Change] = []
        for (key, evaluator) in evaluators {
            let kept = byName[key.rule].map { $0.applies(to: registry.resolve(key.esp32Name)) && $0.kind == rule(key.rule)?.kind } ?? false
            guard !kept else { continue }
            if evaluator.active, let old = rule(key.rule) {
                changes.append(Change(kind: .clear, rule: old, esp32Name: key.esp32Name, classroom: classrooms[key] ?? "", at: now,
                                      value: evaluator.lastValue ?? 0))
            }
            evaluators[key] = nil
            classrooms[key] = nil
        }
        rules = newRules
        return changes
    }

    private func rule(_ name: String) -> AlarmRule? { rules.first { $0.name == name } }

    /// What the database holds: these (rule, device) have an active alarm, no other has.
    public mutating func assume(active: Set<Key>) {
        for key in Set(evaluators.keys).union(active) {
            evaluators[key, default: AlarmEvaluator()].assume(active: active.contains(key))
        }
    }

    // MARK: The live pipeline

    /// A stored reading. Readings older than the device's latest one (late deliveries) change no
    /// power alarm: their moment has passed. Any reading ends an offline alarm.
    public mutating func observe(_ reading: Reading, device: DeviceInfo) -> [Change] {
        var changes: [Change] = []
        let previous = lastReading[reading.esp32Name]
        let isLatest = previous.map { reading.time > $0.time } ?? true
        if isLatest { lastReading[reading.esp32Name] = reading }
        // The average power since the previous reading of the same boot, when the board reports none.
        var interval: (millis: Int64, deltaWh: Double)?
        if let previous, isLatest, previous.bootID == reading.bootID, reading.energyWh >= previous.energyWh {
            interval = (reading.time - previous.time, reading.energyWh - previous.energyWh)
        }
        let averageW = interval.map { $0.millis > 0 ? $0.deltaWh / (Double($0.millis) / 3_600_000) : 0 }
        let powerW = reading.powerW ?? averageW
        for rule in rules where rule.applies(to: device) {
            let key = Key(rule: rule.name, esp32Name: device.esp32Name)
            var evaluator = evaluators[key] ?? AlarmEvaluator()
            let transition: AlarmEvaluator.Transition?
            switch rule.kind {
            case .overPower:
                guard isLatest, let powerW else { continue }
                transition = evaluator.overPower(rule, powerW: powerW, at: reading.time)
            case .leftOnAfterHours:
                guard isLatest else { continue }
                let schedule = rule.schedule ?? schedules[device.classroom] ?? ClassSchedule()
                transition = evaluator.leftOn(rule, schedule: schedule, anySwitchOn: reading.anySwitchOn, powerW: powerW,
                                              at: reading.time, calendar: &calendar)
            case .counterStuck:
                guard isLatest, let interval else { continue }
                let flagged = LedgerDeriver.counterStuckWithPower(powerA: previous?.powerW, powerB: reading.powerW,
                                                                  durationMillis: interval.millis, deltaWh: interval.deltaWh)
                transition = evaluator.counterStuck(rule, flagged: flagged, powerW: reading.powerW, at: reading.time)
            case .offline:
                // A status still saying offline keeps the alarm: the timer ends it with the status.
                guard evaluator.active, !saysOffline.contains(device.esp32Name) else { continue }
                transition = evaluator.offline(rule, offlineSince: nil, lastTelemetryAt: reading.receivedAt, at: reading.receivedAt)
            case .rejects:
                continue
            }
            record(transition, of: rule, device: device, evaluator: evaluator, at: isLatest ? reading.time : reading.receivedAt, into: &changes)
        }
        return changes
    }

    /// A rejected message of this device (received at `at`).
    public mutating func observeReject(device: DeviceInfo, at instant: EpochMillis) -> [Change] {
        let rejectRules = rules.filter { $0.kind == .rejects && $0.applies(to: device) }
        guard !rejectRules.isEmpty else { return [] }
        let keep = (rejectRules.compactMap(\.count).max() ?? 0) + 1
        var times = rejectTimes[device.esp32Name] ?? []
        times.append(instant)
        times.sort()
        if times.count > keep { times.removeFirst(times.count - keep) }
        rejectTimes[device.esp32Name] = times
        return evaluateRejects(device: device, rules: rejectRules, at: instant)
    }

    /// The devices whose rejects the timer counts in the database: those with recent rejects in
    /// the book, and those with a reject alarm in force (after a restart the book knows none of
    /// their rejects, and the window's end must still clear the alarm).
    public var devicesWithRecentRejects: [String] {
        let inForce = evaluators.filter { $0.value.active && rule($0.key.rule)?.kind == .rejects }.map(\.key.esp32Name)
        return Set(rejectTimes.keys).union(inForce).sorted()
    }

    /// A device's recent reject times as the database holds them, which includes every reject
    /// this book observed (it observes only stored ones) and those of the other workers of a
    /// share group. They replace the book's (two rejects received in the same millisecond by two
    /// workers are two).
    public mutating func learnRejects(of esp32Name: String, times: [EpochMillis]) {
        let keep = (rules.filter { $0.kind == .rejects }.compactMap(\.count).max() ?? 0) + 1
        rejectTimes[esp32Name] = Array(times.sorted().suffix(keep))
    }

    // MARK: The timer

    /// Ends reject alarms whose window has passed (devices with recent rejects only).
    public mutating func tickRejects(now: EpochMillis, registry: DeviceRegistry) -> [Change] {
        var changes: [Change] = []
        for name in rejectTimes.keys.sorted() {
            let device = registry.resolve(name)
            let rejectRules = rules.filter { $0.kind == .rejects && $0.applies(to: device) }
            changes += evaluateRejects(device: device, rules: rejectRules, at: now)
            let longest = rejectRules.compactMap(\.windowMillis).max() ?? 0
            let anyActive = rejectRules.contains { isActive(Key(rule: $0.name, esp32Name: name)) }
            if !anyActive, (rejectTimes[name]?.last ?? 0) <= now - longest { rejectTimes[name] = nil }
        }
        return changes
    }

    /// Offline alarms of one device, from its presence now.
    public mutating func checkPresence(_ presence: Presence, device: DeviceInfo, now: EpochMillis) -> [Change] {
        var changes: [Change] = []
        if presence.online == false { saysOffline.insert(device.esp32Name) } else { saysOffline.remove(device.esp32Name) }
        for rule in rules where rule.kind == .offline && rule.applies(to: device) {
            let key = Key(rule: rule.name, esp32Name: device.esp32Name)
            var evaluator = evaluators[key] ?? AlarmEvaluator()
            let transition: AlarmEvaluator.Transition?
            if evaluator.active {
                // In force: it ends when the device is heard from, never because the worker restarted.
                transition = evaluator.offline(rule, offlineSince: presence.online == false ? presence.lastStatusAt ?? 0 : nil,
                                               lastTelemetryAt: presence.lastTelemetryAt, at: now)
            } else {
                // Silence before the worker's start counts from it: after a downtime the broker's
                // backlog is still on its way, and a board never seen has had no chance yet.
                let offlineSince = presence.online == false ? presence.lastStatusAt ?? startedAt : nil
                let lastTelemetry = max(presence.lastTelemetryAt ?? startedAt, startedAt)
                transition = evaluator.offline(rule, offlineSince: offlineSince.map { max($0, startedAt) }, lastTelemetryAt: lastTelemetry, at: now)
            }
            record(transition, of: rule, device: device, evaluator: evaluator, at: now, into: &changes)
        }
        return changes
    }

    private mutating func evaluateRejects(device: DeviceInfo, rules rejectRules: [AlarmRule], at instant: EpochMillis) -> [Change] {
        var changes: [Change] = []
        let times = rejectTimes[device.esp32Name] ?? []
        for rule in rejectRules {
            let key = Key(rule: rule.name, esp32Name: device.esp32Name)
            var evaluator = evaluators[key] ?? AlarmEvaluator()
            let transition = evaluator.rejects(rule, recentRejects: times, at: instant)
            record(transition, of: rule, device: device, evaluator: evaluator, at: instant, into: &changes)
        }
        return changes
    }

    private mutating func record(_ transition: AlarmEvaluator.Transition?, of rule: AlarmRule, device: DeviceInfo,
                                 evaluator: AlarmEvaluator, at instant: EpochMillis, into changes: inout [Change]) {
        let key = Key(rule: rule.name, esp32Name: device.esp32Name)
        evaluators[key] = evaluator
        classrooms[key] = device.classroom
        switch transition {
        case .raise(let value)?:
            changes.append(Change(kind: .raise, rule: rule, esp32Name: device.esp32Name, classroom: device.classroom, at: instant, value: value))
        case .clear(let value)?:
            changes.append(Change(kind: .clear, rule: rule, esp32Name: device.esp32Name, classroom: device.classroom, at: instant, value: value))
        case nil:
            break
        }
    }
}
