import AutoVoltCore
import AutoVoltLedgerCases
import Foundation
import Testing

/// One device's ledger kept live the way `LedgerStore` keeps it, without a database: each step
/// stores the readings that arrived, takes `LedgerWindow.restartPoint` over the live intervals
/// (what `LedgerStore.restartPoint` computes from the trusted tail or from the entries around the
/// earliest new reading), derives from there at the step's `now`, and applies `LedgerDiff.plan`
/// against the live entries from the restart point on: new ids inserted (an id derived again
/// after it was superseded is live again), the others superseded. A trailing dip is settled by a
/// step of its own once its deadline (`LedgerDeriver.pendingDipUntil`) has passed, as the
/// ledger thread's dip check does.
struct PureLiveLedger {
    let device: DeviceInfo
    let zone: TimeZone
    var policy = LedgerPolicy()
    /// The stored events, in device-time order.
    private(set) var readings: [LedgerReading] = []
    /// Every entry ever written, by id, and the ids superseded (with what replaced them).
    private(set) var written: [String: LedgerEntry] = [:]
    private(set) var superseded: [String: String] = [:]
    private(set) var pendingDipUntil: EpochMillis?
    private(set) var steps = 0

    init(device: DeviceInfo, zone: TimeZone) {
        self.device = device
        self.zone = zone
    }

    /// Live entries, in time order.
    var live: [LedgerEntry] {
        written.values.filter { superseded[$0.id] == nil }.sorted { ($0.start, $0.part) < ($1.start, $1.part) }
    }

    var billedWh: Double { live.filter(\.billable).map(\.deltaWh).reduce(0, +) }

    /// Readings that arrive at `now`; first the settling step of a dip whose deadline passed.
    mutating func arrive(_ arriving: [LedgerReading], now: EpochMillis) {
        settleDip(before: now)
        readings.append(contentsOf: arriving)
        readings.sort { $0.time < $1.time }
        step(earliestNew: arriving.map(\.time).min(), now: now)
    }

    /// The worker's dip check: a device whose trailing dip's deadline is at or before `now`.
    mutating func settleDip(before now: EpochMillis) {
        if let until = pendingDipUntil, until <= now { step(earliestNew: nil, now: until) }
    }

    private mutating func step(earliestNew: EpochMillis?, now: EpochMillis) {
        steps += 1
        let stored = live.map { StoredLedgerEntry(id: $0.id, esp32Name: $0.esp32Name, start: $0.start, end: $0.end,
                                                  dateText: $0.date.description, sourceEvents: $0.sourceEvents) }
        let intervals = LedgerWindow.intervals(of: stored)
        // LedgerStore.restartPoint: new readings from the interval before the one they touch;
        // nothing new (a dip to settle) from the start of the last interval.
        let restart = earliestNew.map { LedgerWindow.restartPoint(intervals: intervals, earliestNewReading: $0) } ?? intervals.last?.start
        let window = readings.filter { restart == nil || $0.time >= restart! }
        var calendar = LocalCalendar(timeZone: zone)
        let derived = LedgerDeriver.derive(window, device: device, calendar: &calendar, policy: policy, now: now)
        let change = LedgerDiff.plan(stored: stored.filter { restart == nil || $0.start >= restart! }, derived: derived)
        for entry in change.inserting {
            written[entry.id] = entry
            superseded[entry.id] = nil // LedgerStore.write: a duplicate id is live again
        }
        for item in change.superseding { superseded[item.entry.id] = item.replacement }
        pendingDipUntil = LedgerDeriver.pendingDipUntil(window, derived: derived, policy: policy)
    }

    /// The ledger from scratch: every stored reading derived in order at `now`.
    func fromScratch(now: EpochMillis) -> [LedgerEntry] {
        var calendar = LocalCalendar(timeZone: zone)
        return LedgerDeriver.derive(readings, device: device, calendar: &calendar, policy: policy, now: now)
    }
}

/// Issue 20 §4: the sequences of `LateGlitchCases` (each bill worked out by hand there), fed
/// one reading per step, so the late reading supersedes what the earlier steps derived.
@Suite("ledger regressions: late readings that make a glitch")
struct LedgerRegressionTests {
    typealias Case = LateGlitchCases.Case

    @Test(arguments: LateGlitchCases.cases, LateGlitchCases.lateDelays)
    func fedOneStepAtATimeTheLateReadingSupersedesAndTheBillIsTheContracts(_ c: Case, lateAt: EpochMillis) {
        var ledger = PureLiveLedger(device: LateGlitchCases.lab, zone: kolkata)
        var now = t0
        for (index, reading) in c.arrival.enumerated() {
            let isLate = index == c.arrival.count - 1
            now = isLate ? t0 + lateAt : max(now, reading.time + 1_000)
            let liveBefore = Set(ledger.live.map(\.id))
            ledger.arrive([reading], now: now)
            // After every step the live ledger is the derivation from scratch at that moment.
            #expect(ledger.live.map(\.id) == ledger.fromScratch(now: now).map(\.id), "\(c.name): step \(index)")
            if isLate {
                #expect(!liveBefore.isSubset(of: Set(ledger.live.map(\.id))), "\(c.name): the late reading superseded nothing")
            }
        }
        let end = now + 10 * minute
        ledger.settleDip(before: end)
        #expect(ledger.pendingDipUntil == nil)
        let scratch = ledger.fromScratch(now: end)
        #expect(ledger.live.map(\.id) == scratch.map(\.id), "\(c.name): live is not the derivation from scratch")
        #expect(ledger.live == scratch)
        #expect(ledger.billedWh == c.billedWh, "\(c.name)")
        #expect(billable(scratch) == c.billedWh, "\(c.name)")
        #expect(ledger.live.map(\.deltaWh) == c.entries.map(\.delta), "\(c.name)")
        #expect(ledger.live.map(\.reasons) == c.entries.map(\.reasons), "\(c.name)")
        #expect(ledger.live.allSatisfy { $0.billable })
        #expect(!ledger.superseded.isEmpty)
    }

    /// The same readings in every order they could arrive in, one per step, with the steps
    /// close together (dips still waiting) or minutes apart (each dip settled before the next
    /// reading): after every step the live ledger is the derivation from scratch, and at the end
    /// the bill is the contract's whatever the order.
    @Test(arguments: LateGlitchCases.cases)
    func everyArrivalOrderEndsInTheSameLedger(_ c: Case) {
        func permutations(_ items: [LedgerReading]) -> [[LedgerReading]] {
            guard items.count > 1 else { return [items] }
            return items.indices.flatMap { i in
                var rest = items
                let first = rest.remove(at: i)
                return permutations(rest).map { [first] + $0 }
            }
        }
        for spacing in [1_000, 6 * minute] as [EpochMillis] {
            for order in permutations(c.arrival) {
                var ledger = PureLiveLedger(device: LateGlitchCases.lab, zone: kolkata)
                var now = t0
                for reading in order {
                    now = max(now + spacing, reading.time + 1_000)
                    ledger.arrive([reading], now: now)
                    if ledger.live.map(\.id) != ledger.fromScratch(now: now).map(\.id) {
                        Issue.record("\(c.name): arrival \(order.map(\.energyWh)) spacing \(spacing): differs after \(reading.energyWh)")
                        return
                    }
                }
                ledger.settleDip(before: now + 10 * minute)
                #expect(ledger.billedWh == c.billedWh, "\(c.name): arrival \(order.map(\.energyWh))")
            }
        }
    }
}

extension LateGlitchCases.Case: CustomTestStringConvertible {
    public var testDescription: String { name }
}
