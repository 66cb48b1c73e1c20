import AutoVoltCore
import Foundation
import Testing

/// The alarm book as the live pipeline drives it: readings, rejects, presence, reloads.
@Suite("alarm book: the live pipeline's alarm state")
struct AlarmBookTests {
    let t0: EpochMillis = 1_796_300_000_000 // a Thursday, 15:43 in Asia/Kolkata
    let lab = DeviceInfo(esp32Name: "lab-1", classroom: "CSE-301")
    let other = DeviceInfo(esp32Name: "hall-1", classroom: "HALL")

    func book(_ rules: [AlarmRule]) throws -> AlarmBook {
        AlarmBook(rules: rules, calendar: LocalCalendar(timeZone: try #require(TimeZone(identifier: "Asia/Kolkata"))), startedAt: t0)
    }

    func reading(_ seconds: Int64, wh: Double, power: Double? = nil, on: Bool = false, boot: String? = nil) -> AlarmBook.Reading {
        AlarmBook.Reading(esp32Name: "lab-1", time: t0 + seconds * 1000, receivedAt: t0 + seconds * 1000, energyWh: wh, powerW: power,
                          anySwitchOn: on, bootID: boot)
    }

    @Test func overPowerFromTheIntervalsAveragePowerRaisesOnceAndClearsBelowTheHysteresis() throws {
        var book = try book([AlarmRule(name: "hot", kind: .overPower, severity: .high, thresholdW: 2000, hysteresisW: 200, classroom: "CSE-301")])
        #expect(book.observe(reading(0, wh: 100), device: lab).isEmpty)
        // 30 Wh in 36 s is 3000 W.
        let raised = book.observe(reading(36, wh: 130), device: lab)
        #expect(raised.map(\.kind) == [.raise] && raised.first?.value == 3000 && raised.first?.classroom == "CSE-301")
        #expect(book.observe(reading(72, wh: 160), device: lab).isEmpty, "still above: no second raise")
        // 1900 W is inside the hysteresis band: nothing changes.
        #expect(book.observe(reading(108, wh: 179), device: lab).isEmpty)
        #expect(book.observe(reading(144, wh: 190), device: lab).map(\.kind) == [.clear])
        // Out of scope: another classroom's board never raises this rule.
        #expect(book.observe(AlarmBook.Reading(esp32Name: "hall-1", time: t0, receivedAt: t0, energyWh: 0, powerW: 9000), device: other).isEmpty)
    }

    @Test func aLateReadingChangesNoPowerAlarmAndAResetIsNoNegativePower() throws {
        var book = try book([AlarmRule(name: "hot", kind: .overPower, thresholdW: 2000)])
        _ = book.observe(reading(100, wh: 500, power: 100), device: lab)
        #expect(book.observe(reading(50, wh: 400, power: 5000), device: lab).isEmpty, "older than the latest: its moment has passed")
        // A counter reset (new boot, counter from 0) without power_w gives no average at all.
        #expect(book.observe(reading(130, wh: 0, boot: "b2"), device: lab).isEmpty)
        #expect(!book.isActive(.init(rule: "hot", esp32Name: "lab-1")))
    }

    @Test func counterStuckUsesTheLedgersRuleOnConsecutiveReadings() throws {
        var book = try book([AlarmRule(name: "stuck", kind: .counterStuck, durationMillis: 60_000)])
        _ = book.observe(reading(0, wh: 100, power: 1000), device: lab)
        // 1000 W for 30 s is 8.3 Wh; the counter moved 0.
        #expect(book.observe(reading(30, wh: 100, power: 1000), device: lab).isEmpty, "held 0 s of 60")
        #expect(book.observe(reading(60, wh: 100, power: 1000), device: lab).isEmpty)
        #expect(book.observe(reading(90, wh: 100, power: 1000), device: lab).map(\.kind) == [.raise])
        #expect(book.observe(reading(120, wh: 108.3, power: 1000), device: lab).isEmpty, "the clear waits as long")
        #expect(book.observe(reading(180, wh: 125, power: 1000), device: lab).map(\.kind) == [.clear])
    }

    @Test func leftOnAfterHoursUsesTheRulesSchedule() throws {
        let schedule = ClassSchedule(weekdays: [1, 2, 3, 4, 5], fromMinute: 8 * 60, toMinute: 15 * 60)
        var book = try book([AlarmRule(name: "left-on", kind: .leftOnAfterHours, thresholdW: 50, schedule: schedule)])
        // 15:43 local is after 15:00: a switch on raises.
        #expect(book.observe(reading(0, wh: 1, on: true), device: lab).map(\.kind) == [.raise])
        #expect(book.observe(reading(30, wh: 1, on: false), device: lab).map(\.kind) == [.clear])
    }

    @Test func leftOnAfterHoursFallsBackToTheClassroomsScheduleInTheRegistry() throws {
        var book = try book([AlarmRule(name: "left-on", kind: .leftOnAfterHours, thresholdW: 50)])
        // The default (08:00-18:00 on weekdays) has the room in use at 15:43 on a Thursday ...
        #expect(book.observe(reading(0, wh: 1, on: true), device: lab).isEmpty)
        // ... the classroom's own schedule ends at 15:00.
        book.schedules = ["CSE-301": ClassSchedule(weekdays: [1, 2, 3, 4, 5], fromMinute: 8 * 60, toMinute: 15 * 60)]
        #expect(book.observe(reading(30, wh: 1, on: true), device: lab).map(\.kind) == [.raise])
    }

    @Test func offlineByPresenceRaisesAfterTheDurationAndAReadingClearsIt() throws {
        var book = try book([AlarmRule(name: "silent", kind: .offline, durationMillis: 600_000)])
        let seen = AlarmBook.Presence(esp32Name: "lab-1", online: true, lastStatusAt: t0, lastTelemetryAt: t0 - 86_400_000)
        // Silent since before the worker started: counted from the start, not from a day ago.
        #expect(book.checkPresence(seen, device: lab, now: t0 + 60_000).isEmpty)
        #expect(book.checkPresence(seen, device: lab, now: t0 + 600_001).map(\.kind) == [.raise])
        #expect(book.checkPresence(seen, device: lab, now: t0 + 700_000).isEmpty, "once")
        #expect(book.observe(reading(701, wh: 1), device: lab).map(\.kind) == [.clear])
        // Offline by its status (Last Will) for longer than the duration.
        let gone = AlarmBook.Presence(esp32Name: "lab-1", online: false, lastStatusAt: t0 + 800_000, lastTelemetryAt: t0 + 800_000)
        #expect(book.checkPresence(gone, device: lab, now: t0 + 1_300_000).isEmpty)
        #expect(book.checkPresence(gone, device: lab, now: t0 + 1_400_001).map(\.kind) == [.raise])
    }

    /// Kill -9 or a second worker starting: the offline alarm in force stays until the board is
    /// heard from; the worker's start only delays raising new ones.
    @Test func anOfflineAlarmInForceSurvivesARestartUntilTheBoardIsHeardFrom() throws {
        let rule = AlarmRule(name: "silent", kind: .offline, durationMillis: 600_000)
        var restarted = try book([rule])  // started at t0
        let key = AlarmBook.Key(rule: "silent", esp32Name: "lab-1")
        restarted.assume(active: [key])
        let silent = AlarmBook.Presence(esp32Name: "lab-1", online: true, lastStatusAt: t0 - 3_600_000, lastTelemetryAt: t0 - 3_600_000)
        #expect(restarted.checkPresence(silent, device: lab, now: t0 + 5_000).isEmpty, "no clear: it has been silent for an hour")
        #expect(restarted.checkPresence(silent, device: lab, now: t0 + 700_000).isEmpty, "and no second raise")
        #expect(restarted.isActive(key))
        let neverSeen = AlarmBook.Presence(esp32Name: "lab-1", online: nil, lastStatusAt: nil, lastTelemetryAt: nil)
        #expect(restarted.checkPresence(neverSeen, device: lab, now: t0 + 5_000).isEmpty && restarted.isActive(key))
        let back = AlarmBook.Presence(esp32Name: "lab-1", online: true, lastStatusAt: t0 + 10_000, lastTelemetryAt: t0 + 10_000)
        #expect(restarted.checkPresence(back, device: lab, now: t0 + 11_000).map(\.kind) == [.clear])
    }

    /// A status still saying offline (a Last Will nobody replaced) keeps the alarm: a reading
    /// does not clear it only for the timer to raise it again a moment later.
    @Test func aReadingDoesNotClearAnOfflineAlarmWhileTheStatusSaysOffline() throws {
        var book = try book([AlarmRule(name: "silent", kind: .offline, durationMillis: 60_000)])
        let gone = AlarmBook.Presence(esp32Name: "lab-1", online: false, lastStatusAt: t0 + 1000, lastTelemetryAt: t0)
        #expect(book.checkPresence(gone, device: lab, now: t0 + 62_000).map(\.kind) == [.raise])
        #expect(book.observe(reading(70, wh: 1), device: lab).isEmpty)
        let stillGone = AlarmBook.Presence(esp32Name: "lab-1", online: false, lastStatusAt: t0 + 1000, lastTelemetryAt: t0 + 70_000)
        #expect(book.checkPresence(stillGone, device: lab, now: t0 + 75_000).isEmpty, "no flapping")
        let online = AlarmBook.Presence(esp32Name: "lab-1", online: true, lastStatusAt: t0 + 80_000, lastTelemetryAt: t0 + 80_000)
        #expect(book.checkPresence(online, device: lab, now: t0 + 81_000).map(\.kind) == [.clear])
    }

    /// After a restart the book knows no rejects; the database's recent ones let the window's end clear the alarm.
    @Test func aRejectAlarmInForceAfterARestartClearsWhenItsWindowPasses() throws {
        var book = try book([AlarmRule(name: "noisy", kind: .rejects, count: 2, windowMillis: 60_000)])
        let key = AlarmBook.Key(rule: "noisy", esp32Name: "lab-1")
        book.assume(active: [key])
        // The book knows none of its rejects, but the timer counts the device's in the database.
        #expect(book.devicesWithRecentRejects == ["lab-1"])
        book.learnRejects(of: "lab-1", times: [t0 - 3000, t0 - 2000, t0 - 1000])
        #expect(book.tickRejects(now: t0 + 10_000, registry: DeviceRegistry()).isEmpty, "three in the window: still active")
        #expect(book.tickRejects(now: t0 + 60_000, registry: DeviceRegistry()).map(\.kind) == [.clear])
    }

    /// A share group: this worker saw one reject, the database holds the other worker's too.
    @Test func rejectsLearnedFromTheDatabaseRaiseOnTheTimer() throws {
        var book = try book([AlarmRule(name: "noisy", kind: .rejects, count: 1, windowMillis: 600_000, esp32Name: "lab-1")])
        #expect(book.observeReject(device: lab, at: t0).isEmpty)
        #expect(book.devicesWithRecentRejects == ["lab-1"])
        // The other worker's reject arrived in the same millisecond: still two.
        book.learnRejects(of: "lab-1", times: [t0, t0])
        #expect(book.tickRejects(now: t0 + 1000, registry: DeviceRegistry(devices: [lab])).map(\.kind) == [.raise])
    }

    @Test func rejectsCountInTheWindowAndTheTimerClearsWhenItPasses() throws {
        var book = try book([AlarmRule(name: "noisy", kind: .rejects, count: 2, windowMillis: 60_000)])
        #expect(book.observeReject(device: lab, at: t0).isEmpty)
        #expect(book.observeReject(device: lab, at: t0 + 1000).isEmpty)
        #expect(book.observeReject(device: lab, at: t0 + 2000).map(\.kind) == [.raise], "3 > 2 within a minute")
        #expect(book.tickRejects(now: t0 + 30_000, registry: DeviceRegistry()).isEmpty)
        #expect(book.tickRejects(now: t0 + 61_000, registry: DeviceRegistry()).map(\.kind) == [.clear])
    }

    @Test func theDatabaseSaysWhatIsActiveAndAReloadClearsRemovedRules() throws {
        let hot = AlarmRule(name: "hot", kind: .overPower, thresholdW: 2000)
        var book = try book([hot, AlarmRule(name: "silent", kind: .offline, durationMillis: 1000)])
        let key = AlarmBook.Key(rule: "hot", esp32Name: "lab-1")
        // Raised before a restart (or by another worker): no second raise, and the clear is not lost.
        book.assume(active: [key])
        #expect(book.observe(reading(0, wh: 1, power: 5000), device: lab).isEmpty)
        #expect(book.observe(reading(30, wh: 2, power: 10), device: lab).map(\.kind) == [.clear])
        book.assume(active: [key])
        let changes = book.replaceRules([AlarmRule(name: "silent", kind: .offline, durationMillis: 1000)], registry: DeviceRegistry(), now: t0)
        #expect(changes.map(\.kind) == [.clear] && changes.first?.rule.name == "hot")
        #expect(book.activeKeys.isEmpty && book.rules.map(\.name) == ["silent"])
    }
}
