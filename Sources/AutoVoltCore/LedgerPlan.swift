/// The pure half of a ledger step (docs/ledger.md): what to write, given what is stored and what
/// the derivation says now. The service reads, calls these, and writes the result.

/// A live ledger entry as stored: what the diff and the restart logic need of it.
public struct StoredLedgerEntry: Sendable, Equatable {
    public var id: String
    public var esp32Name: String
    public var start: EpochMillis
    public var end: EpochMillis
    /// The stored local date, as text (an entry written by an older version may not parse).
    public var dateText: String
    public var sourceEvents: [String]

    public init(id: String, esp32Name: String, start: EpochMillis, end: EpochMillis, dateText: String, sourceEvents: [String]) {
        self.id = id
        self.esp32Name = esp32Name
        self.start = start
        self.end = end
        self.dateText = dateText
        self.sourceEvents = sourceEvents
    }
}

/// The writes that make the stored live entries of a stretch of one device's ledger equal to a
/// new derivation of the same stretch.
public struct LedgerChange: Sendable, Equatable {
    public struct Supersession: Sendable, Equatable {
        public var entry: StoredLedgerEntry
        /// The new entry covering the old one's start, or "rederived" when none does.
        public var replacement: String
    }

    /// Derived entries not stored yet (ids are content addresses: a stored id is the same entry).
    public var inserting: [LedgerEntry] = []
    /// Stored entries the derivation no longer gives.
    public var superseding: [Supersession] = []
    /// Local dates whose totals changed, to be re-aggregated, each with the earliest start of an
    /// entry inserted or superseded on it: the day's entries before that instant are as they were
    /// (the aggregation folds only what comes after, `DayFold`).
    public var changedFrom: [String: EpochMillis] = [:]
    public var dirtyDates: Set<String> { Set(changedFrom.keys) }

    public var isEmpty: Bool { inserting.isEmpty && superseding.isEmpty }
}

public enum LedgerDiff {
    /// Compares the stored live entries of a stretch with its derivation. `derived` is in time
    /// order, as `LedgerDeriver.derive` returns it.
    public static func plan(stored: [StoredLedgerEntry], derived: [LedgerEntry]) -> LedgerChange {
        var change = LedgerChange()
        let storedIDs = Set(stored.map(\.id))
        let derivedIDs = Set(derived.map(\.id))
        change.inserting = derived.filter { !storedIDs.contains($0.id) }
        for entry in stored where !derivedIDs.contains(entry.id) {
            change.superseding.append(.init(entry: entry, replacement: covering(entry.start, in: derived) ?? "rederived"))
        }
        for entry in change.inserting {
            change.changedFrom[entry.date.description] = min(change.changedFrom[entry.date.description] ?? .max, entry.start)
        }
        for item in change.superseding {
            change.changedFrom[item.entry.dateText] = min(change.changedFrom[item.entry.dateText] ?? .max, item.entry.start)
        }
        return change
    }

    /// The id of the entry whose time contains `instant` (live entries do not overlap and are in
    /// time order, so a binary search finds it).
    static func covering(_ instant: EpochMillis, in derived: [LedgerEntry]) -> String? {
        var low = 0, high = derived.count
        while low < high {
            let mid = (low + high) / 2
            if derived[mid].start <= instant { low = mid + 1 } else { high = mid }
        }
        guard low > 0 else { return nil }
        let candidate = derived[low - 1]
        return candidate.end > instant ? candidate.id : nil
    }
}

extension LedgerDeriver {
    /// When the trailing dip a derivation waits on settles, or nil when it waits on none. The
    /// derivation stops short of the last reading only then (every other step ends an entry at
    /// the reading it consumed).
    public static func pendingDipUntil(_ readings: [LedgerReading], derived: [LedgerEntry], policy: LedgerPolicy) -> EpochMillis? {
        guard readings.count >= 2, let last = readings.last, derived.last?.end != last.time else { return nil }
        return last.time + policy.pendingDipTimeoutMillis
    }
}

extension LedgerWindow {
    /// Whole intervals (midnight parts merged) of stored live entries, ordered by start.
    public static func intervals(of entries: [StoredLedgerEntry]) -> [Interval] {
        var byPair: [[String]: Interval] = [:]
        for e in entries {
            let existing = byPair[e.sourceEvents]
            byPair[e.sourceEvents] = Interval(start: min(existing?.start ?? e.start, e.start), end: max(existing?.end ?? e.end, e.end))
        }
        return byPair.values.sorted { $0.start < $1.start }
    }
}

/// Re-deriving a long history a window of readings at a time, so memory stays at one window
/// however long the history (`rebuild-ledger` of a device-year).
///
/// Readings can only change the interval they fall in and the one before it (`LedgerWindow`),
/// so a window's derivation is final up to the start of its last interval: the next window
/// starts there, and every entry that starts before it is the full derivation's.
public enum LedgerRebuildWindow {
    public struct Result: Sendable, Equatable {
        /// Entries that are final: the full derivation gives exactly these over this stretch.
        public var entries: [LedgerEntry]
        /// Where the next window starts (readings at or after it), nil after the last window.
        public var next: EpochMillis?
    }

    /// Derives one window: `readings` start at the previous window's `next` (or the device's
    /// first reading) and are in time order with distinct times. Returns nil when a window that
    /// is not the last has fewer than two whole intervals, so nothing of it is final yet: read a
    /// larger one.
    public static func derive(_ readings: [LedgerReading], isLast: Bool, device: DeviceInfo, calendar: inout LocalCalendar,
                              policy: LedgerPolicy = LedgerPolicy(), now: EpochMillis) -> Result? {
        if isLast {
            return Result(entries: LedgerDeriver.derive(readings, device: device, calendar: &calendar, policy: policy, now: now), next: nil)
        }
        // More readings follow, so a trailing dip is not trailing: `.max` settles it, and the
        // interval it makes is the last one, which the next window derives again anyway.
        let derived = LedgerDeriver.derive(readings, device: device, calendar: &calendar, policy: policy, now: .max)
        let intervals = LedgerWindow.intervals(of: derived)
        guard intervals.count >= 2, let last = intervals.last else { return nil }
        return Result(entries: derived.filter { $0.start < last.start }, next: last.start)
    }
}
