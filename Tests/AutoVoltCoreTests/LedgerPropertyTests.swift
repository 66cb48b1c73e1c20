import AutoVoltCore
import Foundation
import PropertyBased
import Testing

/// A simulated device: true consumption, and the counter readings its firmware would publish,
/// with reboots (rollbacks and resets), glitches and offline gaps.
struct Scenario {
    var readings: [LedgerReading] = []
    /// What the counter really measured: the ledger's billable total must equal this.
    var expectedWh = 0.0
    var expectedAt: [Double] = []

    init(seed: Int64, start: EpochMillis, count: Int, device: DeviceInfo) {
        var rng = SplitMix64(seed: UInt64(bitPattern: seed))
        var time = start
        var counter = Double(Int.random(in: 5_000...50_000, using: &rng))
        var boot = 0
        var seq: Int64 = 0
        var quiet = 0 // readings since the last fault: faults are kept apart so each is unambiguous
        var glitchPending = false
        for index in 0..<count {
            // Time moves on by about one period, sometimes by a long offline gap.
            // (Not right after a fault: a reset followed by hours offline that used more than the old
            // counter reads exactly like a glitch, by rule 3.)
            let gap: EpochMillis = quiet > 0 && Int.random(in: 0..<40, using: &rng) == 0
                ? EpochMillis(Int.random(in: 600...30_000, using: &rng)) * 1000
                : EpochMillis(Int.random(in: 25...35, using: &rng)) * 1000
            time += gap
            let power = Double(Int.random(in: 0...3000, using: &rng))
            let used = power * Double(gap) / 3_600_000
            quiet += 1
            let roll = Int.random(in: 0..<100, using: &rng)
            // Faults happen on ordinary intervals: a reset hidden in a long offline gap can look like
            // a rise (more used since the restart than the old counter), which no rule can tell.
            let isLast = index == count - 1 || gap > 60_000
            if roll < 3 && quiet > 3 && counter > 1_000 && !isLast {
                // Reboot with the persisted counter restored a little lower (a rollback). The new
                // boot_id is what tells it from a glitch when the next reading is back above.
                let lost = Double(Int.random(in: 1...Int(device.rollbackToleranceWh), using: &rng))
                counter -= lost
                boot += 1
                seq = 0
                quiet = 0
                counter += 0 // nothing counted yet on the new boot
            } else if roll < 6 && quiet > 3 && counter > 1_000 && !isLast {
                // Reset to zero some time in this interval: only what was used since then is counted.
                let sinceRestart = used * Double(Int.random(in: 0...100, using: &rng)) / 100
                counter = sinceRestart
                expectedWh += sinceRestart
                boot += Int.random(in: 0...1, using: &rng)
                seq = 0
                quiet = 0
            } else {
                counter += used
                expectedWh += used
            }
            seq += 1
            var value = counter
            if roll >= 6 && roll < 9 && quiet > 3 && !isLast && !glitchPending {
                value = Double(Int.random(in: 0...Int(counter / 2), using: &rng)) // a single low, bogus reading
                glitchPending = true
                quiet = 0
            } else {
                glitchPending = false
            }
            if index == 0 { expectedWh = 0 } // the first reading is the baseline
            expectedAt.append(expectedWh)
            readings.append(LedgerReading(eventHash: "s\(seed)-\(index)", time: time, energyWh: value,
                                          bootID: "boot-\(boot)", seq: seq, clock: .device))
        }
    }
}

func checkInvariants(_ entries: [LedgerEntry], zone: TimeZone) {
    let sorted = entries.sorted { $0.start < $1.start }
    for (a, b) in zip(sorted, sorted.dropFirst()) {
        #expect(a.end <= b.start, "live entries overlap: \(a.start)-\(a.end) and \(b.start)-\(b.end)")
    }
    var calendar = LocalCalendar(timeZone: zone)
    for entry in entries {
        let day = calendar.day(containing: entry.start)
        #expect(entry.date == day.date)
        #expect(entry.end <= day.end, "entry crosses local midnight")
        #expect(entry.deltaWh >= 0)
    }
}

@Suite("ledger properties")
struct LedgerPropertyTests {
    static let fleetDevice = DeviceInfo(esp32Name: "gen", classroom: "X", maxPowerW: 20_000, rollbackToleranceWh: 50)

    func checkScenario(seed: Int64, zone: TimeZone, start: EpochMillis) {
        let scenario = Scenario(seed: seed, start: start, count: 400, device: Self.fleetDevice)
        var calendar = LocalCalendar(timeZone: zone)
        let entries = LedgerDeriver.derive(scenario.readings, device: Self.fleetDevice, calendar: &calendar)
        let billed = entries.filter(\.billable).map(\.deltaWh).reduce(0, +)
        #expect(abs(billed - scenario.expectedWh) < 1e-6 * max(1, scenario.expectedWh), "seed \(seed): billed \(billed), true \(scenario.expectedWh)")
        checkInvariants(entries, zone: zone)
    }

    @Test func billableTotalEqualsTrueConsumptionInKolkata() async {
        await propertyCheck(count: 150, input: Gen.int64(in: 0...Int64.max)) { seed in
            checkScenario(seed: seed, zone: kolkata, start: t0)
        }
    }

    /// Europe/London across both 2026 daylight-saving changes: days of 23 and 25 hours.
    @Test func billableTotalEqualsTrueConsumptionAcrossDaylightSaving() async {
        let london = TimeZone(identifier: "Europe/London")!
        let springForward: EpochMillis = 1_774_738_800_000 - 6 * 3_600_000 // 2026-03-29 01:00 UTC minus 6 h
        let fallBack: EpochMillis = 1_792_890_000_000 - 6 * 3_600_000 // 2026-10-25 01:00 UTC minus 6 h
        await propertyCheck(count: 75, input: Gen.int64(in: 0...Int64.max)) { seed in
            checkScenario(seed: seed, zone: london, start: springForward)
            checkScenario(seed: seed, zone: london, start: fallBack)
        }
    }

    /// Readings arriving in any order and in any batches (live derivation re-deriving from the
    /// restart point each time) end in exactly the ledger of a derivation over all of them.
    @Test func resultDoesNotDependOnArrivalOrder() async {
        await propertyCheck(count: 150, input: Gen.int64(in: 0...Int64.max)) { seed in
            let scenario = Scenario(seed: seed, start: t0, count: 120, device: Self.fleetDevice)
            var rng = SplitMix64(seed: UInt64(bitPattern: seed) ^ 0xABCDEF)
            // Mostly in order, with late readings shuffled within a window, as a broker replay does.
            var arrival = scenario.readings
            for i in arrival.indices where Int.random(in: 0..<5, using: &rng) == 0 {
                let j = min(arrival.count - 1, i + Int.random(in: 1...8, using: &rng))
                arrival.swapAt(i, j)
            }
            if Int.random(in: 0..<4, using: &rng) == 0 { arrival.shuffle(using: &rng) }
            var live: [LedgerEntry] = []
            var known: [LedgerReading] = []
            var position = 0
            while position < arrival.count {
                let size = Int.random(in: 1...10, using: &rng)
                let batch = arrival[position..<min(arrival.count, position + size)]
                position += size
                known.append(contentsOf: batch)
                known.sort { $0.time < $1.time }
                let earliest = batch.map(\.time).min() ?? 0
                let restart = LedgerWindow.restartPoint(intervals: LedgerWindow.intervals(of: live), earliestNewReading: earliest)
                let window = known.filter { restart == nil || $0.time >= restart! }
                var calendar = LocalCalendar(timeZone: kolkata)
                let derived = LedgerDeriver.derive(window, device: Self.fleetDevice, calendar: &calendar)
                live = live.filter { restart != nil && $0.start < restart! } + derived
                checkInvariants(live, zone: kolkata)
            }
            var calendar = LocalCalendar(timeZone: kolkata)
            let full = LedgerDeriver.derive(scenario.readings, device: Self.fleetDevice, calendar: &calendar)
            #expect(Set(live.map(\.id)) == Set(full.map(\.id)), "seed \(seed)")
        }
    }

    /// A healthy fleet (no faults but the usual jitter) is almost entirely high confidence.
    @Test func healthyFleetIsMostlyHighConfidence() {
        var rng = SplitMix64(seed: 42)
        var entries: [LedgerEntry] = []
        for d in 0..<50 {
            var time = t0
            var counter = 1000.0
            var readings: [LedgerReading] = []
            for i in 0..<200 {
                time += EpochMillis(Int.random(in: 28...32, using: &rng)) * 1000
                counter += Double(Int.random(in: 0...25, using: &rng)) / 10
                readings.append(LedgerReading(eventHash: "h\(d)-\(i)", time: time, energyWh: counter, bootID: "b", seq: Int64(i)))
            }
            var calendar = LocalCalendar(timeZone: kolkata)
            entries += LedgerDeriver.derive(readings, device: Self.fleetDevice, calendar: &calendar)
        }
        let high = entries.filter { $0.confidence == .high }.count
        #expect(Double(high) / Double(entries.count) >= 0.95)
    }
}

/// `rebuild-ledger` re-derives a window of readings at a time; whatever the window size, the
/// entries it keeps add up to exactly the derivation over the whole history.
@Suite("ledger rebuild windows")
struct LedgerRebuildWindowTests {
    /// The rebuild loop of LedgerStore.rebuild, without the database.
    static func rebuildInWindows(_ readings: [LedgerReading], size: Int, now: EpochMillis) -> [LedgerEntry] {
        var entries: [LedgerEntry] = []
        var from = 0
        var window = size
        while true {
            let end = min(readings.count, from + window)
            var calendar = LocalCalendar(timeZone: kolkata)
            guard let result = LedgerRebuildWindow.derive(Array(readings[from..<end]), isLast: end == readings.count,
                                                          device: LedgerPropertyTests.fleetDevice, calendar: &calendar, now: now) else {
                window *= 2
                continue
            }
            entries += result.entries
            guard let next = result.next else { return entries }
            let restart = readings.firstIndex { $0.time >= next } ?? readings.count
            #expect(restart > from, "a window made no progress")
            from = restart
            window = size
        }
    }

    @Test func windowsGiveTheWholeDerivation() async {
        await propertyCheck(count: 200, input: Gen.int64(in: 0...Int64.max)) { seed in
            let scenario = Scenario(seed: seed, start: t0, count: 300, device: LedgerPropertyTests.fleetDevice)
            let size = 2 + Int(UInt64(bitPattern: seed) % 40)
            // `now` right after the last reading: a trailing dip still waits, in both.
            let now = (scenario.readings.last?.time ?? 0) + 1_000
            var calendar = LocalCalendar(timeZone: kolkata)
            let whole = LedgerDeriver.derive(scenario.readings, device: LedgerPropertyTests.fleetDevice, calendar: &calendar, now: now)
            let windowed = Self.rebuildInWindows(scenario.readings, size: size, now: now)
            #expect(windowed.map(\.id) == whole.map(\.id), "seed \(seed), window \(size)")
        }
    }

    /// A stretch of nothing but falls has no final interval in a small window: it is read again larger.
    @Test func aWindowOfFallsGrows() {
        let readings: [LedgerReading] = (0..<12).map { (i: Int) -> LedgerReading in
            let energy: Double = i % 2 == 0 ? 1_000 + Double(i) : 10
            return LedgerReading(eventHash: "f\(i)", time: t0 + EpochMillis(i) * 30_000, energyWh: energy)
        }
        var calendar = LocalCalendar(timeZone: kolkata)
        #expect(LedgerRebuildWindow.derive(Array(readings[0..<2]), isLast: false, device: LedgerPropertyTests.fleetDevice,
                                           calendar: &calendar, now: .max) == nil)
        var whole = LocalCalendar(timeZone: kolkata)
        #expect(Self.rebuildInWindows(readings, size: 2, now: .max).map(\.id)
            == LedgerDeriver.derive(readings, device: LedgerPropertyTests.fleetDevice, calendar: &whole).map(\.id))
    }
}
