import AutoVoltCore
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

/// Issue 20 §4: the sequences of the differential run that checked late data against the
/// contract. Each has a low reading, then a reading the device took before a later one but that
/// is delivered last and turns the low reading into a glitch (rule 3), some with a reboot after
/// it; fed one reading per step, so the late reading supersedes what the earlier steps derived.
/// Every bill is worked out by hand from the contract's section 6 in the case's comment.
@Suite("ledger regressions: late readings that make a glitch")
struct LedgerRegressionTests {
    static let lab = DeviceInfo(esp32Name: "lab-7", classroom: "R-7", maxPowerW: 20_000, rollbackToleranceWh: 50)

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        /// In the order they reach the worker; the last one is the late reading.
        var arrival: [LedgerReading]
        var billedWh: Double
        /// The live entries' deltas and reasons, in time order.
        var entries: [(delta: Double, reasons: [LedgerReason])]
        var testDescription: String { name }
    }

    static func reading(_ second: Int64, _ energy: Double, boot: String? = nil, seq: Int64? = nil) -> LedgerReading {
        LedgerReading(eventHash: "x\(second)-\(energy)", time: t0 + second * 1000, energyWh: energy, bootID: boot, seq: seq)
    }

    static let cases: [Case] = [
        // The issue's example, one boot: 1000 at t, 900 at t+5 s, 990 at t+60 s, and 1010 at
        // t+30 s delivered last. In device-time order 1000, 900, 1010, 990:
        //   1000 -> 900 falls with no evidence of a reboot and the next reading (1010) is back at or
        //   above 1000: rule 3, the 900 is a glitch, one interval 1000 -> 1010 = 10 Wh;
        //   1010 -> 990 falls 20 Wh (<= 50), nothing after it: rule 2, a rollback, 0 Wh.
        // Billed 10 Wh (before the late reading: a 900 Wh reset and 90 Wh).
        Case(name: "example: glitch then rollback (10 Wh)",
             arrival: [reading(0, 1000, boot: "b1"), reading(5, 900, boot: "b1"), reading(60, 990, boot: "b1"),
                       reading(30, 1010, boot: "b1")],
             billedWh: 10,
             entries: [(10, [.glitchSkipped]), (0, [.counterRollback])]),
        // One boot, no reboot. 1000, 900, 995, 1014 at t, t+5, t+60, t+90; 1004 at t+30 late.
        // In order 1000, 900, 1004, 995, 1014:
        //   1000 -> 900, next 1004 >= 1000: glitch, 1000 -> 1004 = 4 Wh;
        //   1004 -> 995, next 1014 >= 1004: glitch again, 1004 -> 1014 = 10 Wh.
        // Billed 14 Wh (before the late reading: a 900 Wh reset, unbillable in 5 s, 95 and 19 Wh).
        Case(name: "two glitches, the first made by the late reading (14 Wh)",
             arrival: [reading(0, 1000, boot: "b1"), reading(5, 900, boot: "b1"), reading(60, 995, boot: "b1"),
                       reading(90, 1014, boot: "b1"), reading(30, 1004, boot: "b1")],
             billedWh: 14,
             entries: [(4, [.glitchSkipped]), (10, [.glitchSkipped])]),
        // A reboot (new boot_id) after the readings of the old boot. 1000, 900, 990 on b1 at t,
        // t+5, t+60, then 999 on b2 at t+90; 1010 on b1 at t+30 late. In order:
        //   1000 -> 900 (b1, b1), next 1010 >= 1000, no boot change to it: glitch, 10 Wh;
        //   1010 -> 990 (b1, b1) falls 20 Wh, no evidence, next 999 < 1010: rule 2, rollback, 0 Wh;
        //   990 (b1) -> 999 (b2): a reboot that rises counts 999 - 990 = 9 Wh (rule 2's last line).
        // Billed 19 Wh.
        Case(name: "glitch, rollback, then a new boot_id (19 Wh)",
             arrival: [reading(0, 1000, boot: "b1"), reading(5, 900, boot: "b1"), reading(60, 990, boot: "b1"),
                       reading(90, 999, boot: "b2"), reading(30, 1010, boot: "b1")],
             billedWh: 19,
             entries: [(10, [.glitchSkipped]), (0, [.counterRollback]), (9, [.reboot])]),
        // A board without boot_id (the firmware guide's): its seq starts again after a reboot.
        // 1000 seq 40, 900 seq 41, 990 seq 43 at t, t+5, t+60, then 1019 seq 1 at t+90; 1010 seq 42
        // at t+30 late. In order 1000/40, 900/41, 1010/42, 990/43, 1019/1:
        //   1000 -> 900: seq rose, no evidence; next 1010 >= 1000: glitch, 10 Wh (seq 40 -> 42: seq_gap);
        //   1010 -> 990: seq rose, no evidence; next 1019 >= 1010: glitch, 1010 -> 1019 = 9 Wh; the
        //   reboot (seq 43 -> 1) lies after the low reading, so it does not stop the glitch rule
        //   and belongs to the interval over it (docs/ledger.md rule 3): reboot, reset marker.
        // Billed 19 Wh.
        Case(name: "glitch, then a glitch with a lower seq after it (19 Wh)",
             arrival: [reading(0, 1000, seq: 40), reading(5, 900, seq: 41), reading(60, 990, seq: 43),
                       reading(90, 1019, seq: 1), reading(30, 1010, seq: 42)],
             billedWh: 19,
             entries: [(10, [.glitchSkipped, .seqGap]), (9, [.glitchSkipped, .reboot])]),
        // A reboot that reset the counter: boot_id and seq both start again. 1000 b1/10, 900 b1/11
        // at t, t+5, then 3 b2/1 at t+60 and 23 b2/2 at t+90; 1010 b1/12 at t+30 late. In order:
        //   1000 -> 900 (b1, seq up), next 1010 >= 1000 on the same boot: glitch, 10 Wh (seq_gap: 10 -> 12);
        //   1010 (b1) -> 3 (b2): a fall with evidence of a reboot is classified at once by rule 2
        //   (never a glitch): 1007 Wh > 50, a reset, counts the 3 Wh since the restart;
        //   3 -> 23: 20 Wh.
        // Billed 10 + 3 + 20 = 33 Wh (before the late reading: a 900 Wh reset, unbillable, then 3 and 20).
        Case(name: "glitch, then a reboot that reset the counter (33 Wh)",
             arrival: [reading(0, 1000, boot: "b1", seq: 10), reading(5, 900, boot: "b1", seq: 11),
                       reading(60, 3, boot: "b2", seq: 1), reading(90, 23, boot: "b2", seq: 2),
                       reading(30, 1010, boot: "b1", seq: 12)],
             billedWh: 33,
             entries: [(10, [.glitchSkipped, .seqGap]), (3, [.reboot, .counterReset]), (20, [])]),
    ]

    /// When the late reading is delivered: before any dip settles, or long after (every dip of
    /// the earlier steps settled by the worker's dip check first).
    static let lateDelays: [EpochMillis] = [100_000, 20 * minute]

    @Test(arguments: cases, lateDelays)
    func fedOneStepAtATimeTheLateReadingSupersedesAndTheBillIsTheContracts(_ c: Case, lateAt: EpochMillis) {
        var ledger = PureLiveLedger(device: Self.lab, zone: kolkata)
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
    @Test(arguments: cases)
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
                var ledger = PureLiveLedger(device: Self.lab, zone: kolkata)
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
