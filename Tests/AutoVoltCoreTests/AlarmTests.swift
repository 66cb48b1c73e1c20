import AutoVoltCore
import Foundation
import PropertyBased
import Testing

@Suite("alarm rules and their evaluation")
struct AlarmTests {
    let t0: EpochMillis = 1_796_300_000_000 // 2026-12-03T10:13:20Z, a Thursday, 15:43 in Asia/Kolkata

    @Test func aRuleFileParsesAndEveryMistakeNamesTheRuleAndField() throws {
        let set = try AlarmRuleSet.parse(toml: """
            [[rule]]
            name = "lab-over-power"
            kind = "over_power"
            threshold_w = 2000
            hysteresis_w = 200
            duration = "30s"
            severity = "high"
            classroom = "CSE-301"

            [[rule]]
            name = "lights-left-on"
            kind = "left_on_after_hours"
            floor_w = 50
            schedule = { weekdays = [1, 2, 3, 4, 5], hours = "08:00-18:00", holidays = ["2026-12-25"] }

            [[rule]]
            name = "silent"
            kind = "offline"
            duration = "10m"

            [[rule]]
            name = "noisy"
            kind = "rejects"
            count = 5
            window = "10m"
            esp32_name = "lab-101"
            """)
        #expect(set.rules.map(\.name) == ["lab-over-power", "lights-left-on", "silent", "noisy"])
        #expect(set.rules[0].thresholdW == 2000 && set.rules[0].hysteresisW == 200 && set.rules[0].durationMillis == 30_000)
        #expect(set.rules[0].severity == .high && set.rules[0].classroom == "CSE-301")
        #expect(set.rules[1].schedule?.holidays == [CivilDate(year: 2026, month: 12, day: 25)] && set.rules[1].schedule?.toMinute == 18 * 60)
        #expect(set.rules[3].count == 5 && set.rules[3].windowMillis == 600_000 && set.rules[3].esp32Name == "lab-101")

        func refusal(_ toml: String) -> String {
            do { _ = try AlarmRuleSet.parse(toml: toml); return "" } catch { return error.message }
        }
        #expect(refusal(#"[[rule]]\#nname = "a"\#nkind = "over_power""#).contains(#"rule "a": over_power needs threshold_w"#))
        #expect(refusal(#"[[rule]]\#nname = "a"\#nkind = "fire""#).contains(#"rule "a": kind must be one of"#))
        #expect(refusal(#"[[rule]]\#nname = "a"\#nkind = "offline"\#nduration = "soon""#).contains(#"rule "a": duration must be a duration"#))
        #expect(refusal(#"[[rule]]\#nname = "a"\#nkind = "counter_stuck"\#nseverity = "dire""#).contains("severity must be"))
        #expect(refusal(#"[[rule]]\#nname = "a"\#nkind = "counter_stuck"\#nthreshhold = 1"#).contains(#"unknown field "threshhold""#))
        #expect(refusal(#"[[rule]]\#nname = "a"\#nkind = "counter_stuck"\#n[[rule]]\#nname = "a"\#nkind = "offline"\#nduration = "1m""#)
                    .contains("used twice"))
        #expect(refusal(#"[[rule]]\#nname = "a"\#nkind = "over_power"\#nthreshold_w = 100\#nhysteresis_w = 100"#).contains("hysteresis_w must be below"))
        #expect(refusal(#"[[rule]]\#nname = "a"\#nkind = "rejects"\#nwindow = "1m""#).contains("rejects needs count"))
        // Another kind's field would be ignored silently (a left-on rule's floor is floor_w): refused.
        #expect(refusal(#"[[rule]]\#nname = "a"\#nkind = "left_on_after_hours"\#nthreshold_w = 50"#)
                    .contains(#"rule "a": threshold_w does not apply to left_on_after_hours rules"#))
        #expect(refusal(#"[[rule]]\#nname = "a"\#nkind = "offline"\#nduration = "1m"\#ncount = 3"#).contains("count does not apply to offline"))
        // A count too large for an Int is a refusal, not a trap.
        #expect(refusal(#"[[rule]]\#nname = "a"\#nkind = "rejects"\#ncount = 1e19\#nwindow = "1m""#).contains("rejects needs count"))
    }

    @Test func overPowerRaisesAfterTheDurationAndClearsBelowTheHysteresis() {
        let rule = AlarmRule(name: "p", kind: .overPower, thresholdW: 2000, hysteresisW: 200, durationMillis: 60_000)
        var state = AlarmEvaluator()
        #expect(state.overPower(rule, powerW: 2500, at: t0) == nil)            // holds from now
        #expect(state.overPower(rule, powerW: 2400, at: t0 + 30_000) == nil)   // not long enough
        #expect(state.overPower(rule, powerW: 2100, at: t0 + 60_000) == .raise(value: 2100))
        #expect(state.active)
        #expect(state.overPower(rule, powerW: 1900, at: t0 + 90_000) == nil)   // inside the hysteresis: still active
        #expect(state.overPower(rule, powerW: 1700, at: t0 + 120_000) == nil)  // clearing starts
        #expect(state.overPower(rule, powerW: 1850, at: t0 + 150_000) == nil)  // back in the band: clearing starts over
        #expect(state.overPower(rule, powerW: 1700, at: t0 + 160_000) == nil)
        #expect(state.overPower(rule, powerW: 1000, at: t0 + 220_000) == .clear(value: 1000))
        #expect(!state.active)
        // A spike shorter than the duration raises nothing.
        #expect(state.overPower(rule, powerW: 3000, at: t0 + 300_000) == nil)
        #expect(state.overPower(rule, powerW: 500, at: t0 + 330_000) == nil)
        #expect(state.overPower(rule, powerW: 3000, at: t0 + 350_000) == nil)
        #expect(!state.active)
    }

    @Test func leftOnAfterHoursFollowsTheScheduleAndItsHolidays() {
        var calendar = LocalCalendar(timeZone: TimeZone(identifier: "Asia/Kolkata")!)
        let schedule = ClassSchedule(weekdays: [1, 2, 3, 4, 5], fromMinute: 8 * 60, toMinute: 18 * 60,
                                     holidays: [CivilDate(year: 2026, month: 12, day: 4)])
        let rule = AlarmRule(name: "l", kind: .leftOnAfterHours, thresholdW: 50)
        let day = calendar.startOfDay(CivilDate(year: 2026, month: 12, day: 3)) // Thursday
        var state = AlarmEvaluator()
        #expect(state.leftOn(rule, schedule: schedule, anySwitchOn: true, powerW: 400, at: day + 10 * 3_600_000, calendar: &calendar) == nil)
        #expect(state.leftOn(rule, schedule: schedule, anySwitchOn: true, powerW: 400, at: day + 19 * 3_600_000, calendar: &calendar)
                == .raise(value: 400))
        #expect(state.leftOn(rule, schedule: schedule, anySwitchOn: false, powerW: 10, at: day + 20 * 3_600_000, calendar: &calendar)
                == .clear(value: 10))
        // Power above the floor counts as on; the holiday (Friday the 4th) is outside the schedule all day.
        let holiday = calendar.startOfDay(CivilDate(year: 2026, month: 12, day: 4))
        #expect(state.leftOn(rule, schedule: schedule, anySwitchOn: false, powerW: 80, at: holiday + 11 * 3_600_000, calendar: &calendar)
                == .raise(value: 80))
        // Saturday is no weekday of the schedule.
        let saturday = calendar.startOfDay(CivilDate(year: 2026, month: 12, day: 5))
        #expect(!schedule.isInUse(at: saturday + 11 * 3_600_000, calendar: &calendar))
        #expect(schedule.isInUse(at: day + 8 * 3_600_000, calendar: &calendar) && !schedule.isInUse(at: day + 18 * 3_600_000, calendar: &calendar))
    }

    @Test func offlineCounterStuckAndRejectsRaiseAndClear() {
        let offline = AlarmRule(name: "o", kind: .offline, durationMillis: 600_000)
        var o = AlarmEvaluator()
        #expect(o.offline(offline, offlineSince: nil, lastTelemetryAt: t0, at: t0 + 300_000) == nil)
        #expect(o.offline(offline, offlineSince: nil, lastTelemetryAt: t0, at: t0 + 600_001) == .raise(value: 600.001))
        #expect(o.offline(offline, offlineSince: nil, lastTelemetryAt: t0 + 700_000, at: t0 + 700_000) == .clear(value: 0))
        // Offline by status counts too, for as long.
        #expect(o.offline(offline, offlineSince: t0 + 710_000, lastTelemetryAt: t0 + 700_000, at: t0 + 800_000) == nil)
        #expect(o.offline(offline, offlineSince: t0 + 710_000, lastTelemetryAt: t0 + 700_000, at: t0 + 1_320_000) != nil)

        let stuck = AlarmRule(name: "s", kind: .counterStuck, durationMillis: 120_000)
        var s = AlarmEvaluator()
        #expect(s.counterStuck(stuck, flagged: true, powerW: 300, at: t0) == nil)
        #expect(s.counterStuck(stuck, flagged: true, powerW: 300, at: t0 + 120_000) == .raise(value: 300))
        #expect(s.counterStuck(stuck, flagged: false, powerW: 300, at: t0 + 150_000) == nil)
        #expect(s.counterStuck(stuck, flagged: false, powerW: 300, at: t0 + 270_000) == .clear(value: 300))

        let rejects = AlarmRule(name: "r", kind: .rejects, count: 2, windowMillis: 60_000)
        var r = AlarmEvaluator()
        #expect(r.rejects(rejects, recentRejects: [t0, t0 + 1_000], at: t0 + 2_000) == nil)
        #expect(r.rejects(rejects, recentRejects: [t0, t0 + 1_000, t0 + 2_000], at: t0 + 2_000) == .raise(value: 3))
        #expect(r.rejects(rejects, recentRejects: [t0, t0 + 1_000, t0 + 2_000], at: t0 + 61_000) == .clear(value: 1))
    }

    /// Whatever the readings, raises and clears alternate (at most one active alarm per rule and
    /// device), and nothing raises unless the condition held for the whole duration.
    @Test func raisesAndClearsAlternateAndRespectTheDuration() async {
        await propertyCheck(count: 200, input: Gen.int64(in: 0...Int64.max)) { seed in
            var rng = SplitMix64(seed: UInt64(bitPattern: seed))
            let duration = EpochMillis(rng.int(in: 0...5)) * 30_000
            let rule = AlarmRule(name: "p", kind: .overPower, thresholdW: 1000, hysteresisW: Double(rng.int(in: 0...300)), durationMillis: duration)
            var state = AlarmEvaluator()
            var lastTransition: AlarmEvaluator.Transition?
            var aboveSince: EpochMillis?
            for k in 0..<200 {
                let at = t0 + EpochMillis(k) * 30_000
                let power = Double(rng.int(in: 0...2000))
                aboveSince = power > 1000 ? (aboveSince ?? at) : nil
                guard let transition = state.overPower(rule, powerW: power, at: at) else { continue }
                switch (lastTransition, transition) {
                case (nil, .raise), (.clear?, .raise):
                    #expect(power > 1000 && aboveSince.map { at - $0 >= duration } == true)
                case (.raise?, .clear):
                    #expect(power < 1000 - rule.hysteresisW)
                default:
                    Issue.record("\(String(describing: lastTransition)) then \(transition)")
                }
                lastTransition = transition
            }
        }
    }
}
