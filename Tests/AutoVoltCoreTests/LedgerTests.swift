import AutoVoltCore
import Foundation
import Testing

let kolkata = TimeZone(identifier: "Asia/Kolkata")!
let device = DeviceInfo(esp32Name: "lab-101", classroom: "CSE-301", maxPowerW: 5000, rollbackToleranceWh: 50)
/// 2026-11-01T10:00:00+05:30
let t0: EpochMillis = 1_793_507_400_000
let minute: EpochMillis = 60_000

func r(_ seconds: Int64, _ energy: Double, boot: String? = nil, seq: Int64? = nil, clock: ClockSource = .device,
       power: Double? = nil) -> LedgerReading {
    LedgerReading(eventHash: "e\(seconds)-\(energy)", time: t0 + seconds * 1000, energyWh: energy, bootID: boot, seq: seq,
                  clock: clock, powerW: power)
}

func derive(_ readings: [LedgerReading], zone: TimeZone = kolkata, now: EpochMillis = .max, device d: DeviceInfo = device) -> [LedgerEntry] {
    var calendar = LocalCalendar(timeZone: zone)
    return LedgerDeriver.derive(readings, device: d, calendar: &calendar, now: now)
}

func billable(_ entries: [LedgerEntry]) -> Double { entries.filter(\.billable).map(\.deltaWh).reduce(0, +) }

@Suite("ledger rules")
struct LedgerRuleTests {
    /// Entry ids are stored: the same entry must keep its id across releases (a changed id would
    /// supersede the whole ledger on the next rebuild). Pinned for a reset across midnight.
    @Test func entryIDsArePinned() {
        let entries = derive([r(0, 1000, boot: "b1", seq: 7), r(15 * 3600, 40, boot: "b2", seq: 1)])
        #expect(entries.map(\.id) == ["d4fcb828bc4bbc628e50eb4935409cec228d59ffbdbccd066f2148486815c2fc",
                                     "8ea1e5ce4f4c03734ca55af5cfafd9b6d9ceeaac89976acb038607f8993f4deb"])
    }

    @Test func firstReadingEverIsOnlyABaseline() {
        #expect(derive([r(0, 1000)]).isEmpty)
        #expect(derive([]).isEmpty)
    }

    @Test func increaseCountsTheDifference() {
        let e = derive([r(0, 1000), r(30, 1002.5)])
        #expect(e.count == 1)
        #expect(e[0].deltaWh == 2.5)
        #expect(e[0].confidence == .high)
        #expect(e[0].reasons.isEmpty)
        #expect(!e[0].isResetMarker && e[0].billable)
        #expect(e[0].sourceEvents == ["e0-1000.0", "e30-1002.5"])
        #expect(e[0].date.description == "2026-11-01")
    }

    @Test func equalReadingsAreAZeroInterval() {
        let e = derive([r(0, 1000), r(30, 1000)])
        #expect(e.count == 1 && e[0].deltaWh == 0 && e[0].confidence == .high)
    }

    @Test func rebootToZeroThenClimbingCountsWhatWasUsedSinceTheRestart() {
        let e = derive([r(0, 1000), r(30, 1010), r(60, 3), r(90, 8)])
        #expect(e.map(\.deltaWh) == [10, 3, 5])
        #expect(e[1].isResetMarker && e[1].reasons.contains(.counterReset) && e[1].confidence == .low)
        #expect(billable(e) == 18)
    }

    @Test func smallFallIsARollbackNotAReset() {
        // The firmware restored a counter saved 40 Wh ago: billing 960 Wh again would be the worst error.
        let e = derive([r(0, 1000), r(30, 960), r(60, 965)])
        #expect(e.map(\.deltaWh) == [0, 5])
        #expect(e[0].reasons == [.counterRollback] && e[0].isResetMarker && e[0].confidence == .medium)
    }

    @Test func rollbackToleranceComesFromTheRegistry() {
        var strict = device
        strict.rollbackToleranceWh = 10
        let e = derive([r(0, 1000), r(30, 960), r(60, 965)], device: strict)
        #expect(e[0].reasons.contains(.counterReset) && e[0].deltaWh == 960)
    }

    @Test func glitchIsSkippedAndNothingIsCountedTwice() {
        let e = derive([r(0, 1000), r(30, 0), r(60, 1020)])
        #expect(e.count == 1)
        #expect(e[0].deltaWh == 20)
        #expect(e[0].reasons == [.glitchSkipped] && e[0].confidence == .low)
        #expect(e[0].sourceEvents == ["e0-1000.0", "e60-1020.0"])
    }

    @Test func dipThatStaysLowIsAReset() {
        let e = derive([r(0, 1000), r(30, 0), r(60, 4)])
        #expect(e.map(\.deltaWh) == [0, 4])
        #expect(e[0].reasons == [.counterReset])
    }

    @Test func trailingDipWaitsForTheNextReadingOrTheTimeout() {
        let readings = [r(0, 1000), r(30, 10)]
        let dipTime = t0 + 30_000
        #expect(derive(readings, now: dipTime + 60_000).isEmpty)
        let settled = derive(readings, now: dipTime + 300_000)
        #expect(settled.count == 1 && settled[0].reasons == [.counterReset] && settled[0].deltaWh == 10)
    }

    @Test func bootIDChangeMarksARebootWhateverTheValues() {
        let rising = derive([r(0, 1000, boot: "a"), r(30, 1004, boot: "b")])
        #expect(rising[0].deltaWh == 4 && rising[0].isResetMarker && rising[0].reasons == [.reboot])
        // With a new boot a fall is classified at once (no glitch check).
        let falling = derive([r(0, 1000, boot: "a"), r(30, 990, boot: "b"), r(60, 1001, boot: "b")])
        #expect(falling.map(\.deltaWh) == [0, 11])
        #expect(falling[0].reasons == [.reboot, .counterRollback])
    }

    /// Found by a differential run (issue 10): a low reading on the same boot, then a reboot
    /// that restores the previous level. The fall has no reboot evidence, so it is a glitch; the
    /// boot change belongs to the interval over it. True energy: 0 Wh, not a reset and 194 Wh.
    @Test func aGlitchFollowedByARebootBackAtTheLevelBillsNothing() {
        for low in [517_104.0, 0] {
            let e = derive([r(0, 517_298, boot: "b10"), r(30, low, boot: "b10"), r(60, 517_298, boot: "b43")])
            #expect(e.count == 1, "low \(low)")
            #expect(e.first?.deltaWh == 0 && e.first?.isResetMarker == true)
            #expect(e.first?.reasons == [.glitchSkipped, .reboot])
            #expect(e.first?.sourceEvents == ["e0-517298.0", "e60-517298.0"])
            #expect(billable(e) == 0)
        }
    }

    /// Rule 3's evidence of a reboot is not only boot_id: the firmware guide's boards send none,
    /// but their sequence_no starts again and their millis() timestamps go down. With such
    /// evidence a fall is a rollback (0 Wh, then counting from the restored counter), never a
    /// glitch, which would under-bill the rolled-back Wh.
    @Test func aLowerSeqOrUptimeIsEvidenceOfAReboot() {
        func up(_ seconds: Int64, _ energy: Double, uptime: Int64) -> LedgerReading {
            var reading = r(seconds, energy)
            reading.uptimeMillis = uptime
            return reading
        }
        let bySeq = derive([r(0, 1000, seq: 40), r(30, 995, seq: 1), r(60, 1003, seq: 2)])
        let byUptime = derive([up(0, 1000, uptime: 3_600_000), up(30, 995, uptime: 4_000), up(60, 1003, uptime: 34_000)])
        for e in [bySeq, byUptime] {
            #expect(e.map(\.deltaWh) == [0, 8])
            #expect(e.first?.reasons == [.reboot, .counterRollback] && e.first?.isResetMarker == true)
        }
        // No evidence: the same values are a glitch (3 Wh over the two intervals).
        let none = derive([r(0, 1000), r(30, 995), r(60, 1003)])
        #expect(none.map(\.deltaWh) == [3] && none[0].reasons == [.glitchSkipped])
        // A higher seq on the same boot is no evidence.
        #expect(derive([r(0, 1000, seq: 1), r(30, 995, seq: 2), r(60, 1003, seq: 3)]).map(\.deltaWh) == [3])
        #expect(LedgerReading.rebooted(between: r(0, 1, seq: 5), and: r(30, 1, seq: 5)) == false)
    }

    @Test func aTimestampThatIsAnUptimeIsReadAsOne() {
        #expect(LedgerReading.uptimeMillis(timestampAsSent: "123456") == 123_456)
        #expect(LedgerReading.uptimeMillis(timestampAsSent: "0") == 0)
        #expect(LedgerReading.uptimeMillis(timestampAsSent: "1730822400") == nil)     // epoch seconds
        #expect(LedgerReading.uptimeMillis(timestampAsSent: "1730822400000") == nil)  // epoch milliseconds
        #expect(LedgerReading.uptimeMillis(timestampAsSent: "2026-11-05T10:00:00Z") == nil)
        #expect(LedgerReading.uptimeMillis(timestampAsSent: "-5") == nil)
        #expect(LedgerReading.uptimeMillis(timestampAsSent: nil) == nil)
    }

    @Test func seqGapsAreNoted() {
        let e = derive([r(0, 1000, boot: "a", seq: 1), r(30, 1001, boot: "a", seq: 2), r(60, 1002, boot: "a", seq: 5)])
        #expect(e[0].reasons.isEmpty)
        #expect(e[1].reasons == [.seqGap] && e[1].confidence == .medium)
    }

    @Test func implausiblePowerIsNotBillable() {
        // 1,000 Wh in 30 s is 120 kW, far over the 5 kW maximum.
        let e = derive([r(0, 1000), r(30, 2000), r(60, 2001)])
        #expect(!e[0].billable && e[0].reasons.contains(.implausiblePower) && e[0].confidence == .low)
        #expect(billable(e) == 1)
    }

    @Test func anAstronomicalJumpIsNotBilledAndDoesNotTrap() {
        let e = derive([r(0, 1000), r(30, 1e300), r(60, 1e300 + 1)])
        #expect(!e[0].billable && e[0].reasons.contains(.implausiblePower))
        #expect(derive([r(0, 1000), r(0, 2000)]).allSatisfy { !$0.billable || $0.deltaWh == 0 })
    }

    @Test func counterStuckWhilePowerIsReported() {
        let e = derive([r(0, 1000, power: 400), r(600, 1000, power: 400)])
        #expect(e[0].reasons.contains(.counterStuckWithPower))
        #expect(e[0].deltaWh == 0 && e[0].billable)
        let healthy = derive([r(0, 1000, power: 400), r(600, 1066.7, power: 400)])
        #expect(!healthy[0].reasons.contains(.counterStuckWithPower))
    }

    @Test func gapsGradeConfidence() {
        #expect(derive([r(0, 1), r(90, 2)])[0].confidence == .high)
        #expect(derive([r(0, 1), r(600, 2)])[0].reasons == [.gap])
        #expect(derive([r(0, 1), r(600, 2)])[0].confidence == .medium)
        #expect(derive([r(0, 1), r(7200, 2)])[0].confidence == .low)
    }

    @Test func receiverClockIsMediumConfidence() {
        let e = derive([r(0, 1), r(30, 2, clock: .receiver)])
        #expect(e[0].reasons == [.receiverClock] && e[0].confidence == .medium)
    }

    @Test func sixHourGapAcrossLocalMidnightIsSplitProRata() {
        // 21:00 to 03:00 local (IST): 3 h before midnight, 3 h after; 600 Wh used.
        let start = t0 + 11 * 3_600_000 // 2026-11-01T21:00+05:30
        let readings = [LedgerReading(eventHash: "a", time: start, energyWh: 100),
                        LedgerReading(eventHash: "b", time: start + 6 * 3_600_000, energyWh: 700)]
        let e = derive(readings)
        #expect(e.count == 2)
        #expect(e.map(\.date.description) == ["2026-11-01", "2026-11-02"])
        #expect(e.map(\.deltaWh) == [300, 300])
        #expect(e[0].end == e[1].start)
        #expect(e[0].end == start + 3 * 3_600_000)
        #expect(e.allSatisfy { $0.sourceEvents == ["a", "b"] && $0.parts == 2 })
        #expect(Set(e.map(\.id)).count == 2)
    }

    @Test func midnightExactlyOnAReadingDoesNotSplit() {
        let midnight = t0 + 14 * 3_600_000 // 2026-11-02T00:00+05:30
        let readings = [LedgerReading(eventHash: "a", time: midnight - 30_000, energyWh: 1),
                        LedgerReading(eventHash: "b", time: midnight, energyWh: 2),
                        LedgerReading(eventHash: "c", time: midnight + 30_000, energyWh: 3)]
        let e = derive(readings)
        #expect(e.count == 2)
        #expect(e.map(\.date.description) == ["2026-11-01", "2026-11-02"])
    }

    @Test func utcMidnightIsNotALocalBoundary() {
        // 05:15 to 05:45 IST crosses 00:00 UTC but not local midnight.
        let utcMidnight = t0 + 14 * 3_600_000 + 19_800_000
        let e = derive([LedgerReading(eventHash: "a", time: utcMidnight - 900_000, energyWh: 1),
                        LedgerReading(eventHash: "b", time: utcMidnight + 900_000, energyWh: 2)])
        #expect(e.count == 1)
    }

    @Test func lateReadingInTheMiddleIsPlacedWhereItBelongs() {
        let inOrder = derive([r(0, 1000), r(30, 1010), r(60, 1020)])
        let withoutMiddle = derive([r(0, 1000), r(60, 1020)])
        #expect(withoutMiddle.count == 1 && withoutMiddle[0].deltaWh == 20)
        #expect(inOrder.count == 2 && billable(inOrder) == 20)
    }

    @Test func lateReadingBeforeTheFirstOneAddsAnEarlierInterval() {
        let e = derive([r(-30, 995), r(0, 1000), r(30, 1010)])
        #expect(e.map(\.deltaWh) == [5, 10])
    }

    @Test func idsAreDeterministicAndContentAddressed() {
        let a = derive([r(0, 1000), r(30, 1010)])
        let b = derive([r(0, 1000), r(30, 1010)])
        #expect(a.map(\.id) == b.map(\.id))
        var other = device
        other.classroom = "CSE-999"
        #expect(derive([r(0, 1000), r(30, 1010)], device: other)[0].id != a[0].id)
    }
}
