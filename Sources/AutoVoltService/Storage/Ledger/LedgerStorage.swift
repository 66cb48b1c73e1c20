import AutoVoltCore
import Foundation

/// The data operations of the ledger stage (`LedgerStore`, docs/ledger.md), one implementation
/// per backend: `MongoLedgerStorage`, `PostgresLedgerStorage`. Only domain values cross it.
///
/// Every operation is one round trip (or one batched read) and idempotent, so the logic is
/// correct without transactions: a step interrupted anywhere leaves its events unprocessed and
/// the next one derives and writes the same again. Blocking: call from a dedicated thread.
/// Errors are the backend's own (`MongoError`, `PostgresError`), classified by `StorageFailure`.
public protocol LedgerStorage: Sendable {
    // MARK: Finding work

    /// The devices of the `limit` oldest unprocessed events (by `received_at`), one name per
    /// event, oldest first.
    func unprocessedEventDevices(limit: Int) throws -> [String]
    /// Devices whose trailing dip settles at or before `now` (`pending_dip_until`), up to `limit`.
    func devicesWithDipDue(now: EpochMillis, limit: Int) throws -> [String]
    /// Every device that has events, in no particular order (a rebuild of the whole campus).
    func eventDeviceNames() throws -> [String]

    // MARK: Leases (`ledger_state`)

    /// Takes each device that nobody else holds (no lease, an expired one, or `owner`'s own),
    /// bumping its `version` (a new state starts at 1), with the lease until `until`. Returns
    /// the states of the devices now held, in any order; a device held by another is left out.
    /// The held marks of the devices now held (`markDirtyDays`) are released: the step that made
    /// them is over, cut short, and what it wrote is for the aggregation to take now.
    func acquireLeases(_ names: [String], owner: String, now: EpochMillis, until: EpochMillis) throws -> [LedgerLease]
    /// Extends `owner`'s lease on `name` to `until`; false when `owner` no longer holds it.
    func renewLease(_ name: String, owner: String, until: EpochMillis) throws -> Bool
    /// Gives back `owner`'s leases, recording what each release says (tail, dip deadline).
    func releaseLeases(_ releases: [LedgerRelease], owner: String, derivedAt: EpochMillis) throws
    /// The dip deadline recorded for `name`, if any.
    func pendingDipUntil(_ name: String) throws -> EpochMillis?

    // MARK: Events (`telemetry_events`)

    /// Unprocessed events of these devices, up to `limit`, in no particular order.
    func unprocessedEvents(of names: [String], limit: Int) throws -> [LedgerNewEvent]
    /// A device's earliest event by device time (only unprocessed ones when asked); nil when none.
    func earliestEvent(of name: String, unprocessedOnly: Bool) throws -> LedgerEventTimes?
    /// The events of each device from its `from` (device time, inclusive; nil: all), up to
    /// `limit`, ordered by device, device time and id (byte order).
    func events(_ devices: [LedgerDeviceStart], limit: Int) throws -> [LedgerStoredEvent]
    /// Which of `hashes` are still events of `name` (the others have expired or never were).
    func presentEventHashes(of name: String, among hashes: [String]) throws -> Set<String>
    /// Marks events as in the ledger (`processed`).
    func markProcessed(_ events: [LedgerEventRef]) throws

    // MARK: Entries (`device_consumption_ledgers`) and what follows from them

    /// Live entries (no `superseded_by`) that match `query`.
    func liveEntries(_ query: LedgerEntryQuery) throws -> [StoredLedgerEntry]
    /// The `parts` of a stored entry (how many midnight parts its interval has); nil when it is
    /// not stored or has none.
    func parts(ofEntry id: String) throws -> Int?
    /// Inserts the entries that are not stored yet (ids are content addresses). Returns the
    /// ids of those that were stored already.
    func insertEntries(_ entries: [LedgerEntry], createdAt: EpochMillis) throws -> [String]
    /// Makes these entries live again (clears `superseded_by` and `superseded_at`).
    func reviveEntries(_ ids: [String]) throws
    /// Marks live entries superseded; an entry superseded already keeps its first replacement.
    func supersede(_ supersessions: [LedgerChange.Supersession], at: EpochMillis) throws
    /// Marks device-days for re-aggregation (`ledger_dirty_days`): one row or document per mark
    /// (`markID`; a mark already stored is left as it is), `dirty_at` = `at`, kept from the
    /// aggregation until `holdUntil` (nil: not held), and in the same round trip removes the marks
    /// `replacing`. A ledger step marks before it writes (held) and again after (not held,
    /// replacing the first): whatever it wrote is marked before it is written, and a step cut
    /// short leaves its held mark, which the aggregation takes when the hold expires.
    func markDirtyDays(_ days: [LedgerDirtyDay], at: EpochMillis, holdUntil: EpochMillis?, replacing: [String]) throws
    /// Opens review tickets; one of the same device, date and kind that exists is left as it is.
    func openReviewTickets(_ tickets: [LedgerReviewTicket]) throws
}

extension LedgerStorage {
    /// Marks not held, replacing none.
    public func markDirtyDays(_ days: [LedgerDirtyDay], at: EpochMillis) throws {
        try markDirtyDays(days, at: at, holdUntil: nil, replacing: [])
    }
}

/// A device and where its stretch starts (device time for events, `start_ts` for entries;
/// nil: from its beginning).
public struct LedgerDeviceStart: Sendable, Hashable {
    public var name: String
    public var from: EpochMillis?

    public init(_ name: String, from: EpochMillis? = nil) {
        self.name = name
        self.from = from
    }
}

/// What a device's `ledger_state` said when this worker took it.
public struct LedgerLease: Sendable, Equatable {
    public var name: String
    /// Bumped by every acquisition.
    public var version: Int64
    /// The version held by the step that recorded the tail (nil: none recorded).
    public var tailVersion: Int64?
    public var tailStart: EpochMillis?
    public var tailEnd: EpochMillis?

    public init(name: String, version: Int64, tailVersion: Int64? = nil, tailStart: EpochMillis? = nil, tailEnd: EpochMillis? = nil) {
        self.name = name
        self.version = version
        self.tailVersion = tailVersion
        self.tailStart = tailStart
        self.tailEnd = tailEnd
    }
}

/// What a step leaves in the device's state for the next one: its last live interval (nil
/// when it has none yet).
public struct LedgerTail: Sendable, Equatable {
    public var last: LedgerWindow.Interval?

    public init(last: LedgerWindow.Interval?) { self.last = last }
}

/// A lease given back.
public struct LedgerRelease: Sendable, Equatable {
    public var name: String
    /// The version the lease was taken with.
    public var version: Int64
    /// The tail to record with `tail_version` = `version`; nil: the step cannot vouch for one
    /// (`tail_version` is cleared, so the next step asks the ledger).
    public var tail: LedgerTail?
    /// When the trailing dip settles; nil clears it.
    public var pendingDipUntil: EpochMillis?

    public init(name: String, version: Int64, tail: LedgerTail?, pendingDipUntil: EpochMillis?) {
        self.name = name
        self.version = version
        self.tail = tail
        self.pendingDipUntil = pendingDipUntil
    }
}

/// An event's identity: its id, and its receive time (the partition it lives in, where the
/// backend has partitions).
public struct LedgerEventRef: Sendable, Hashable {
    public var id: String
    public var receivedAt: EpochMillis?

    public init(id: String, receivedAt: EpochMillis?) {
        self.id = id
        self.receivedAt = receivedAt
    }
}

/// An unprocessed event, as a step plans with it.
public struct LedgerNewEvent: Sendable, Equatable {
    public var ref: LedgerEventRef
    public var esp32Name: String
    public var deviceTs: EpochMillis?

    public init(ref: LedgerEventRef, esp32Name: String, deviceTs: EpochMillis?) {
        self.ref = ref
        self.esp32Name = esp32Name
        self.deviceTs = deviceTs
    }
}

/// Device and receive time of one event.
public struct LedgerEventTimes: Sendable, Equatable {
    public var deviceTs: EpochMillis?
    public var receivedAt: EpochMillis?

    public init(deviceTs: EpochMillis?, receivedAt: EpochMillis?) {
        self.deviceTs = deviceTs
        self.receivedAt = receivedAt
    }
}

/// A stored event as the derivation reads it.
public struct LedgerStoredEvent: Sendable, Equatable {
    public var ref: LedgerEventRef
    public var esp32Name: String
    public var deviceTs: EpochMillis?
    public var processed: Bool
    /// nil when the stored event lacks what a reading needs (hash, device time, counter).
    public var reading: LedgerReading?

    public init(ref: LedgerEventRef, esp32Name: String, deviceTs: EpochMillis?, processed: Bool, reading: LedgerReading?) {
        self.ref = ref
        self.esp32Name = esp32Name
        self.deviceTs = deviceTs
        self.processed = processed
        self.reading = reading
    }
}

extension LedgerReading {
    /// A stored event's fields as a reading (the same for every backend); the uptime as
    /// `LedgerReading.uptimeMillis(uptimeSeconds:timestampAsSent:)` reads it.
    static func stored(eventHash: String, time: EpochMillis, energyWh: Double, bootID: String?, seq: Int64?, clock: String?,
                       powerW: Double?, uptimeSeconds: Double?, timestampSent: String?) -> LedgerReading {
        LedgerReading(eventHash: eventHash, time: time, energyWh: energyWh, bootID: bootID, seq: seq,
                      clock: clock == "receiver" ? .receiver : .device, powerW: powerW,
                      uptimeMillis: LedgerReading.uptimeMillis(uptimeSeconds: uptimeSeconds, timestampAsSent: timestampSent))
    }
}

/// Which live entries to read. Conditions are combined with AND; per-device `from` bounds
/// `start_ts` from below.
public struct LedgerEntryQuery: Sendable, Equatable {
    public enum Order: Sendable, Equatable { case startAscending, startDescending, endAscending, endDescending }

    public var devices: [LedgerDeviceStart]
    /// `start_ts <`
    public var startBefore: EpochMillis?
    /// `start_ts <=`
    public var startAtMost: EpochMillis?
    /// `end_ts >=`
    public var endAtLeast: EpochMillis?
    /// `end_ts <`
    public var endBefore: EpochMillis?
    /// `end_ts <=`
    public var endAtMost: EpochMillis?
    /// `source_events` is exactly this array.
    public var sourceEvents: [String]?
    public var order: Order?
    /// nil: every match, read in batches (a stretch its readings bound).
    public var limit: Int?

    public init(devices: [LedgerDeviceStart], startBefore: EpochMillis? = nil, startAtMost: EpochMillis? = nil,
                endAtLeast: EpochMillis? = nil, endBefore: EpochMillis? = nil, endAtMost: EpochMillis? = nil,
                sourceEvents: [String]? = nil, order: Order? = nil, limit: Int? = nil) {
        self.devices = devices
        self.startBefore = startBefore
        self.startAtMost = startAtMost
        self.endAtLeast = endAtLeast
        self.endBefore = endBefore
        self.endAtMost = endAtMost
        self.sourceEvents = sourceEvents
        self.order = order
        self.limit = limit
    }

    /// One device's live entries.
    public static func of(_ name: String, startBefore: EpochMillis? = nil, startAtMost: EpochMillis? = nil,
                          endAtLeast: EpochMillis? = nil, endBefore: EpochMillis? = nil, endAtMost: EpochMillis? = nil,
                          sourceEvents: [String]? = nil, order: Order? = nil, limit: Int? = nil, from: EpochMillis? = nil) -> LedgerEntryQuery {
        LedgerEntryQuery(devices: [LedgerDeviceStart(name, from: from)], startBefore: startBefore, startAtMost: startAtMost,
                         endAtLeast: endAtLeast, endBefore: endBefore, endAtMost: endAtMost, sourceEvents: sourceEvents,
                         order: order, limit: limit)
    }
}

/// A device-day whose ledger changed.
public struct LedgerDirtyDay: Sendable, Hashable {
    public var esp32Name: String
    /// The local date, "YYYY-MM-DD".
    public var date: String
    public var classroom: String
    /// The earliest start of an entry inserted or superseded on that day (nil: not known, stored as
    /// the epoch: the day is aggregated again from all its entries).
    public var changedFrom: EpochMillis?
    /// The mark's own key (`_id` / `id`): new for every mark, so the aggregation removes exactly
    /// the marks it read and a mark made meanwhile stays.
    public var markID: String

    public init(esp32Name: String, date: String, classroom: String, changedFrom: EpochMillis? = nil, markID: String = UUID().uuidString) {
        self.esp32Name = esp32Name
        self.date = date
        self.classroom = classroom
        self.changedFrom = changedFrom
        self.markID = markID
    }

    /// The device-day: "esp32_name|date".
    public var id: String { "\(esp32Name)|\(date)" }
}

/// A `review_tickets` document or row the ledger opens (implausible power).
public struct LedgerReviewTicket: Sendable, Equatable {
    public var esp32Name: String
    public var date: String
    public var kind: String
    public var detail: String
    public var status: String
    public var createdAt: EpochMillis
    public var runID: String

    public init(esp32Name: String, date: String, kind: String, detail: String, status: String = "open", createdAt: EpochMillis,
                runID: String) {
        self.esp32Name = esp32Name
        self.date = date
        self.kind = kind
        self.detail = detail
        self.status = status
        self.createdAt = createdAt
        self.runID = runID
    }
}

/// An error of the ledger's own (not the database's): the lease on a device was lost, or
/// another worker holds it for longer than a rebuild waits. Retried like an unknown server
/// error (persistent: loudly), as it was when it was raised as a `MongoError` of code 0.
public struct LedgerLeaseError: StorageFailure, Sendable {
    public var message: String

    public init(_ message: String) { self.message = message }

    public var storageDisposition: StorageDisposition { .persistent }
    public var storageCode: String { "0" }
    public var storageMessage: String { message }
    public var description: String { message }
}
