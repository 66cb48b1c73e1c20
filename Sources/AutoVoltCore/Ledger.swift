import Crypto

/// Ledger derivation: from one device's counter readings to intervals of consumed energy
/// (contract section 6). A pure, deterministic function of the readings (ordered by device
/// time, duplicates already removed), the device's registry entry, the time zone and "now"
/// (only used to settle a trailing dip that waited long enough). docs/ledger.md explains each
/// rule with examples.

public enum Confidence: String, Sendable, CaseIterable, Comparable {
    case high, medium, low

    public static func < (a: Confidence, b: Confidence) -> Bool { a.rank < b.rank }
    var rank: Int { self == .high ? 0 : self == .medium ? 1 : 2 }
}

/// Why an entry is not an ordinary interval. Raw values are stored in `quality.reasons`.
public enum LedgerReason: String, Sendable, CaseIterable {
    case counterRollback = "counter_rollback"
    case counterReset = "counter_reset"
    case reboot = "reboot"
    case glitchSkipped = "glitch_skipped"
    case gap = "gap"
    case longGap = "long_gap"
    case receiverClock = "receiver_clock"
    case seqGap = "seq_gap"
    case implausiblePower = "implausible_power"
    case counterStuckWithPower = "counter_stuck_with_power"

    /// The confidence an entry can have at best with this reason.
    public var ceiling: Confidence {
        switch self {
        case .gap, .receiverClock, .seqGap, .counterRollback, .reboot: .medium
        case .counterReset, .glitchSkipped, .longGap, .implausiblePower, .counterStuckWithPower: .low
        }
    }
}

/// One stored reading, as the ledger sees it.
public struct LedgerReading: Sendable, Hashable {
    public var eventHash: String
    public var time: EpochMillis
    public var energyWh: Double
    public var bootID: String?
    public var seq: Int64?
    public var clock: ClockSource
    public var powerW: Double?
    /// Time since the device booted, in milliseconds: its `uptime_s`, or a timestamp it sent that
    /// is an uptime (`millis()`), when it sent one. Going down means it rebooted (rule 3).
    public var uptimeMillis: Int64?

    public init(eventHash: String, time: EpochMillis, energyWh: Double, bootID: String? = nil, seq: Int64? = nil,
                clock: ClockSource = .device, powerW: Double? = nil, uptimeMillis: Int64? = nil) {
        self.eventHash = eventHash
        self.time = time
        self.energyWh = energyWh
        self.bootID = bootID
        self.seq = seq
        self.clock = clock
        self.powerW = powerW
        self.uptimeMillis = uptimeMillis
    }

    /// Whether the device rebooted between `earlier` and `later` (contract rule 3): a different
    /// `boot_id`, a lower `seq`/`sequence_no` (it counts per boot), or a lower uptime. Evidence
    /// needs both readings to carry the same kind of field; none is no evidence.
    public static func rebooted(between earlier: LedgerReading, and later: LedgerReading) -> Bool {
        if let a = earlier.bootID, let b = later.bootID, a != b { return true }
        if let a = earlier.seq, let b = later.seq, b < a { return true }
        if let a = earlier.uptimeMillis, let b = later.uptimeMillis, b < a { return true }
        return false
    }

    /// The uptime a stored reading says: `uptime_s` when a clock can hold it (not negative,
    /// within 64-bit milliseconds: it is stored as sent, and 1e300 passes as a number; converting
    /// that trapped, and the worker crashed on the event at every restart), else a timestamp as
    /// sent that is an uptime.
    public static func uptimeMillis(uptimeSeconds: Double?, timestampAsSent: String?) -> Int64? {
        uptimeSeconds.flatMap { $0 >= 0 ? Int64(exactly: ($0 * 1000).rounded()) : nil } ?? uptimeMillis(timestampAsSent: timestampAsSent)
    }

    /// The uptime in a timestamp as sent: a plain number that, read as the contract reads
    /// timestamps, lies before 2020, is the firmware guide's `millis()` (milliseconds since boot).
    public static func uptimeMillis(timestampAsSent text: String?) -> Int64? {
        guard let text, let value = Double(text), value.isFinite, value >= 0 else { return nil }
        let asEpochMillis = value > ClockPolicy.millisecondsThreshold ? value : value * 1000
        guard asEpochMillis < Double(ClockPolicy.epoch2020Millis) else { return nil }
        return Int64(value.rounded())
    }
}

public struct LedgerEntry: Sendable, Hashable {
    public var id: String
    public var esp32Name: String
    public var classroom: String
    public var start: EpochMillis
    public var end: EpochMillis
    /// Local date (AUTOVOLT_TIMEZONE) the whole entry lies in.
    public var date: CivilDate
    public var deltaWh: Double
    public var isResetMarker: Bool
    public var billable: Bool
    public var confidence: Confidence
    public var reasons: [LedgerReason]
    /// The two readings the interval runs between (a glitch reading in between is not one).
    public var sourceEvents: [String]
    /// Position of this part when the interval crosses local midnight (0-based), and how many.
    public var part: Int
    public var parts: Int
}

public struct LedgerPolicy: Sendable, Equatable {
    /// The firmware publishes every 30 s; a gap above three periods lowers confidence.
    public var nominalPeriodMillis: Int64 = 30_000
    /// Gaps up to this are medium confidence; longer ones low.
    public var mediumGapMillis: Int64 = 3_600_000
    /// How long a dip waits for the next reading before it settles as a reset or rollback.
    public var pendingDipTimeoutMillis: Int64 = 300_000
    /// Bump when the rules change: entries then get new ids on a rebuild.
    public static let derivationVersion = 1

    public init() {}
}

public enum LedgerDeriver {
    /// Derives every entry for `readings` (sorted by time, distinct times). A trailing dip that
    /// is younger than `pendingDipTimeoutMillis` at `now` produces no entry yet.
    public static func derive(_ readings: [LedgerReading], device: DeviceInfo, calendar: inout LocalCalendar,
                              policy: LedgerPolicy = LedgerPolicy(), now: EpochMillis = .max) -> [LedgerEntry] {
        var entries: [LedgerEntry] = []
        guard var anchor = readings.first else { return entries }
        entries.reserveCapacity(readings.count)
        var index = 1
        while index < readings.count {
            let reading = readings[index]
            let rebooted = LedgerReading.rebooted(between: anchor, and: reading)
            if reading.energyWh >= anchor.energyWh {
                var reasons: [LedgerReason] = []
                if rebooted { reasons.append(.reboot) }
                emit(from: anchor, to: reading, delta: reading.energyWh - anchor.energyWh, resetMarker: rebooted,
                     reasons: reasons, device: device, calendar: &calendar, policy: policy, into: &entries)
                anchor = reading
                index += 1
                continue
            }
            // The counter fell. Rule 3 first: a single low reading followed by one back at or above
            // the previous level is a glitch, unless there is evidence of a reboot between the
            // previous reading and the low one. A reboot after the low reading does not explain
            // the fall: it belongs to the interval over the glitch (517298 -> 517104 -> 517298 on a
            // new boot is 0 Wh, not a reset and 194 Wh).
            if !rebooted, index + 1 < readings.count {
                let next = readings[index + 1]
                if next.energyWh >= anchor.energyWh {
                    let nextRebooted = LedgerReading.rebooted(between: anchor, and: next)
                    emit(from: anchor, to: next, delta: next.energyWh - anchor.energyWh, resetMarker: nextRebooted,
                         reasons: nextRebooted ? [.glitchSkipped, .reboot] : [.glitchSkipped],
                         device: device, calendar: &calendar, policy: policy, into: &entries)
                    anchor = next
                    index += 2
                    continue
                }
            }
            if !rebooted, index + 1 == readings.count, now != .max, now - reading.time < policy.pendingDipTimeoutMillis {
                break // wait for the next reading to tell a glitch from a reset
            }
            // Rule 2: a small fall is a restored, slightly older counter; a large one a reset to zero.
            let fall = anchor.energyWh - reading.energyWh
            var reasons: [LedgerReason] = rebooted ? [.reboot] : []
            let delta: Double
            if fall <= device.rollbackToleranceWh {
                reasons.append(.counterRollback)
                delta = 0
            } else {
                reasons.append(.counterReset)
                delta = reading.energyWh
            }
            emit(from: anchor, to: reading, delta: delta, resetMarker: true, reasons: reasons,
                 device: device, calendar: &calendar, policy: policy, into: &entries)
            anchor = reading
            index += 1
        }
        return entries
    }

    /// The device reports power but its counter barely moved: the energy the reported power
    /// integrates to over the interval is at least 0.25 Wh and the counter shows under half of it.
    /// (Shared with the counter_stuck alarm, which applies it to readings as they arrive.)
    public static func counterStuckWithPower(powerA: Double?, powerB: Double?, durationMillis: Int64, deltaWh: Double) -> Bool {
        guard let powerA, let powerB, durationMillis > 0 else { return false }
        let integrated = (powerA + powerB) / 2 * Double(durationMillis) / 3_600_000
        return integrated >= 0.25 && deltaWh < integrated / 2
    }

    static func emit(from a: LedgerReading, to b: LedgerReading, delta: Double, resetMarker: Bool, reasons base: [LedgerReason],
                     device: DeviceInfo, calendar: inout LocalCalendar, policy: LedgerPolicy, into entries: inout [LedgerEntry]) {
        var reasons = base
        let duration = b.time - a.time
        if duration > policy.mediumGapMillis {
            reasons.append(.longGap)
        } else if duration > 3 * policy.nominalPeriodMillis {
            reasons.append(.gap)
        }
        if a.clock == .receiver || b.clock == .receiver { reasons.append(.receiverClock) }
        if !resetMarker, a.bootID == b.bootID, let sa = a.seq, let sb = b.seq, sb != sa + 1 { reasons.append(.seqGap) }
        var billable = true
        let hours = Double(duration) / 3_600_000
        if delta > 0 && (duration <= 0 || delta / hours > device.maxPowerW) {
            reasons.append(.implausiblePower)
            billable = false
        }
        if counterStuckWithPower(powerA: a.powerW, powerB: b.powerW, durationMillis: duration, deltaWh: delta) {
            reasons.append(.counterStuckWithPower)
        }
        var confidence = Confidence.high
        for reason in reasons where reason.ceiling > confidence { confidence = reason.ceiling }
        let sources = [a.eventHash, b.eventHash]

        // Most intervals lie inside one local day: one entry, nothing to split.
        let firstDay = calendar.day(containing: a.time)
        if b.time <= firstDay.end {
            var entry = LedgerEntry(
                id: "", esp32Name: device.esp32Name, classroom: device.classroom, start: a.time, end: b.time,
                date: firstDay.date, deltaWh: max(0, delta), isResetMarker: resetMarker, billable: billable,
                confidence: confidence, reasons: reasons, sourceEvents: sources, part: 0, parts: 1)
            entry.id = entryID(entry)
            entries.append(entry)
            return
        }
        // Split at local midnights, in proportion to time; the last part takes the remainder so
        // the parts add up to the delta exactly.
        var cuts: [(start: EpochMillis, end: EpochMillis, date: CivilDate)] = []
        var cursor = a.time
        repeat {
            let day = calendar.day(containing: cursor)
            let end = min(b.time, day.end)
            cuts.append((cursor, end, day.date))
            cursor = end
        } while cursor < b.time
        var assigned = 0.0
        for (part, cut) in cuts.enumerated() {
            let share: Double
            if part == cuts.count - 1 {
                share = delta - assigned
            } else {
                share = duration > 0 ? delta * Double(cut.end - cut.start) / Double(duration) : 0
                assigned += share
            }
            var entry = LedgerEntry(
                id: "", esp32Name: device.esp32Name, classroom: device.classroom, start: cut.start, end: cut.end,
                date: cut.date, deltaWh: max(0, share), isResetMarker: resetMarker, billable: billable,
                confidence: confidence, reasons: reasons, sourceEvents: sources,
                part: part, parts: cuts.count)
            entry.id = entryID(entry)
            entries.append(entry)
        }
    }

    /// Deterministic id: the same derivation always yields the same id (so replaying a step
    /// writes nothing twice), and any change of content yields another (so a replaced entry
    /// keeps its own id and can be marked superseded).
    public static func entryID(_ e: LedgerEntry) -> String {
        // Binary fields straight into one stack buffer, hashed in one call: the id is computed
        // for every entry, so no text formatting of numbers, no heap buffer and no per-field
        // hashing calls. The byte layout is pinned by LedgerTests.entryIDsArePinned.
        var size = 8 * 6 + 1 + e.esp32Name.utf8.count + e.classroom.utf8.count + 2
        for source in e.sourceEvents { size += source.utf8.count + 1 }
        for reason in e.reasons { size += reason.rawValue.utf8.count + 1 }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: size) { buffer in
            var out = ByteWriter(buffer: buffer)
            out.add(Int64(LedgerPolicy.derivationVersion))
            out.add(e.esp32Name)
            out.add(e.classroom)
            for source in e.sourceEvents { out.add(source) }
            out.add(Int64(e.part))
            out.add(Int64(e.parts))
            out.add(e.start)
            out.add(e.end)
            out.add(e.deltaWh.bitPattern)
            out.add(UInt8(e.isResetMarker ? 1 : 0) | UInt8(e.billable ? 2 : 0))
            for reason in e.reasons { out.add(reason.rawValue) }
            return EventHash.hex(SHA256.hash(data: UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buffer)[0..<out.count])))
        }
    }
}

/// Appends an entry id's fields to a buffer sized for them: strings as UTF-8 plus a NUL,
/// integers little-endian. A struct, not closures over a counter, so no exclusivity checks.
private struct ByteWriter {
    let buffer: UnsafeMutableBufferPointer<UInt8>
    var count = 0

    mutating func add(_ text: String) {
        let copied = text.utf8.withContiguousStorageIfAvailable { utf8 -> Int in
            UnsafeMutableBufferPointer(rebasing: buffer[count...]).initialize(fromContentsOf: utf8)
        }
        if let copied {
            count += copied
        } else {
            for byte in text.utf8 { append(byte) }
        }
        append(0)
    }

    mutating func add<T: FixedWidthInteger>(_ value: T) {
        withUnsafeBytes(of: value.littleEndian) { raw in
            UnsafeMutableRawBufferPointer(rebasing: UnsafeMutableRawBufferPointer(buffer)[count..<count + raw.count]).copyMemory(from: raw)
        }
        count += MemoryLayout<T>.size
    }

    private mutating func append(_ byte: UInt8) {
        buffer[count] = byte
        count += 1
    }
}

/// Where live derivation must start again when new readings arrive.
///
/// The derivation's only state at an anchor (a reading that starts an interval) is that
/// reading, so deriving from an anchor whose successor lies before every new reading gives the
/// same entries as deriving from the first reading ever. New readings can change the fate of
/// the interval they fall in and of the anchor before it (a low reading may turn out to be a
/// glitch), so the restart point is the start of the interval before the one they touch.
public enum LedgerWindow {
    public struct Interval: Sendable, Equatable {
        public var start: EpochMillis
        public var end: EpochMillis
        public init(start: EpochMillis, end: EpochMillis) {
            self.start = start
            self.end = end
        }
    }

    /// Whole intervals (midnight parts merged) of live entries, ordered by start.
    public static func intervals(of entries: [LedgerEntry]) -> [Interval] {
        var byPair: [String: Interval] = [:]
        for e in entries {
            let key = e.sourceEvents.joined(separator: ",")
            if let existing = byPair[key] {
                byPair[key] = Interval(start: min(existing.start, e.start), end: max(existing.end, e.end))
            } else {
                byPair[key] = Interval(start: e.start, end: e.end)
            }
        }
        return byPair.values.sorted { $0.start < $1.start }
    }

    /// The time from which to re-derive (readings at or after it), or nil for "from the start".
    public static func restartPoint(intervals: [Interval], earliestNewReading: EpochMillis) -> EpochMillis? {
        let touched = intervals.firstIndex { $0.end >= earliestNewReading } ?? intervals.count
        let restart = touched - 1
        return restart >= 0 ? intervals[restart].start : nil
    }
}
