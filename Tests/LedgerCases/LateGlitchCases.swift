import AutoVoltCore

/// Issue 20 §4: the sequences of the differential run that checked late data against the
/// contract, shared by the pure test (AutoVoltCoreTests/LedgerRegressionTests, through
/// `PureLiveLedger`) and the store's (AutoVoltServiceTests/LedgerRegressionStoreTests, through
/// `LedgerStore` on dev-mongo), so the two can never test different data. Each has a low reading,
/// then a reading the device took before a later one but that is delivered last and turns the low
/// reading into a glitch (rule 3), some with a reboot after it. Every bill is worked out by hand
/// from the contract's section 6 in the case's comment.
public enum LateGlitchCases {
    /// 2026-11-01T10:00:00+05:30.
    public static let t0: EpochMillis = 1_793_507_400_000
    public static let minute: EpochMillis = 60_000
    public static let lab = DeviceInfo(esp32Name: "lab-7", classroom: "R-7", maxPowerW: 20_000, rollbackToleranceWh: 50)

    public struct Case: Sendable {
        public var name: String
        /// In the order they reach the worker; the last one is the late reading.
        public var arrival: [LedgerReading]
        public var billedWh: Double
        /// The live entries' deltas and reasons, in time order.
        public var entries: [(delta: Double, reasons: [LedgerReason])]
    }

    static func reading(_ second: Int64, _ energy: Double, boot: String? = nil, seq: Int64? = nil) -> LedgerReading {
        LedgerReading(eventHash: "x\(second)-\(energy)", time: t0 + second * 1000, energyWh: energy, bootID: boot, seq: seq)
    }

    public static let cases: [Case] = [
        // The example, one boot: 1000 at t, 900 at t+5 s, 990 at t+60 s, and 1010 at
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
    public static let lateDelays: [EpochMillis] = [100_000, 20 * minute]
}
