/// A campus of simulated boards with ground truth (issue 10): the loads each board really drew,
/// the readings its firmware publishes with the faults real boards have, and what the contract's
/// rules must bill from the readings that reach the broker. The truth is computed from the loads
/// and the fault schedule (which fault happened where), never by calling the ledger code, so
/// comparing the two tests the ledger.
///
/// Pure and deterministic: the same configuration and seed give the same campus, byte for byte.
/// One device at a time (`simulate(_:config:calendar:)`), so a caller can stream a large campus.
public enum CampusSimulator {
    public enum Firmware: String, Sendable, CaseIterable {
        /// The AutoVolt firmware guide: `millis()` timestamps, `sequence_no` that starts again after
        /// a reboot, no `boot_id`, the counter persisted every 10 Wh and published as whole Wh.
        case firmwareGuide = "firmware_guide"
        /// Contract v1: epoch seconds, `boot_id`, `seq`, `power_w`, the exact counter restored.
        case contractV1 = "contract_v1"
    }

    /// Probability per reading of each fault; faults are kept at least four readings apart.
    public struct FaultRates: Sendable, Equatable {
        public var reboot = 0.002
        public var reset = 0.0005
        public var glitch = 0.002
        /// A glitch reading directly followed by a reboot that restores the level (contract v1 boards).
        public var glitchThenReboot = 0.001
        public var duplicate = 0.01
        public var late = 0.01
        /// An offline period whose readings the broker queues (delivered late) or that are lost.
        public var offlineQueued = 0.0005
        public var offlineLost = 0.0005
        /// Contract v1 boards whose clock is wrong for one reading: seconds since boot (an RTC that
        /// never synced reads 1970), milliseconds instead of seconds, or minutes ahead.
        public var clock1970 = 0.001
        public var clockMillis = 0.001
        public var clockAhead = 0.001
        /// A payload the decoder must refuse (truncated JSON, a missing, textual or negative counter)
        /// in place of the reading.
        public var malformed = 0.001
        public init() {}
    }

    public struct Config: Sendable, Equatable {
        public var devices: Int
        public var start: CivilDate
        public var days: Int
        public var intervalSeconds: Int = 30
        public var seed: UInt64
        public var faults = FaultRates()
        /// nil: every third board on the firmware guide, the others contract v1.
        public var firmware: Firmware?
        /// Boards are named `<prefix>-<room>-<n>`.
        public var namePrefix = "sim"
        /// Instead of whole local days from `start`: `count` intervals from an instant (the live simulator).
        public var span: Span?
        public init(devices: Int, start: CivilDate, days: Int, intervalSeconds: Int = 30, seed: UInt64) {
            self.devices = devices
            self.start = start
            self.days = days
            self.intervalSeconds = intervalSeconds
            self.seed = seed
        }
    }

    /// A stretch of simulated time from an instant, and how it maps onto the wall clock when the
    /// readings are published live: virtual time runs `rate` times faster than real time and
    /// reaches `realStart` at `start`.
    public struct Span: Sendable, Equatable {
        public var start: EpochMillis
        public var count: Int
        public var realStart: EpochMillis
        public var rate: Double
        public init(start: EpochMillis, count: Int, realStart: EpochMillis? = nil, rate: Double = 1) {
            self.start = start
            self.count = count
            self.realStart = realStart ?? start
            self.rate = rate
        }
        /// The wall-clock instant of a virtual one.
        public func real(_ virtual: EpochMillis) -> EpochMillis {
            realStart + EpochMillis((Double(virtual - start) / rate).rounded())
        }
    }

    public struct Device: Sendable, Equatable {
        public var info: DeviceInfo
        public var firmware: Firmware
        /// Busy until 21:00 on weekdays instead of 17:00.
        public var eveningClasses: Bool
        public var index: Int
    }

    public enum Fault: String, Sendable, CaseIterable {
        case reboot, reset, glitch, glitchThenReboot = "glitch_then_reboot", duplicate, late
        case offlineQueued = "offline_queued", offlineLost = "offline_lost"
        case clock1970 = "clock_1970", clockMillis = "clock_millis", clockAhead = "clock_ahead", malformed
    }

    /// What a board's clock put in the timestamp of one reading.
    public enum SentClock: Sendable, Equatable {
        case correct
        /// Seconds since boot: an RTC that never synced counts from 1970.
        case sinceBoot
        case milliseconds
        /// This many seconds ahead of the receive time (more than the contract's 5 minutes).
        case ahead(seconds: Int64)
    }

    public struct Reading: Sendable, Equatable {
        /// The instant the reading was taken (what a correct device clock says).
        public var time: EpochMillis
        public var deliveredAt: EpochMillis
        /// The counter as published (whole Wh for the firmware guide's boards).
        public var energyWh: Double
        public var bootID: String?
        public var seq: Int64
        public var uptimeMillis: Int64
        public var powerW: Double?
        public var switches: [Bool]
        /// The same message delivered a second time.
        public var isDuplicate: Bool
        public var firmware: Firmware
        public var sentClock: SentClock = .correct
        /// The payload the decoder must refuse, sent in place of this reading.
        public var malformed: String?

        /// The timestamp as the firmware sends it: epoch seconds (or what a wrong clock says), or
        /// the guide's `millis()`.
        public var timestampAsSent: String {
            guard firmware == .contractV1 else { return String(uptimeMillis) }
            switch sentClock {
            case .correct: return String(time / 1000)
            case .sinceBoot: return String(uptimeMillis / 1000)
            case .milliseconds: return String(time)
            // With the receive time's milliseconds, as a fast RTC would read: a whole number of
            // seconds ahead could equal a later reading's timestamp, and with an unchanged counter
            // the contract's event hash would make the two one event.
            case .ahead(let seconds):
                let at = deliveredAt + seconds * 1000
                return "\(at / 1000).\(String(1000 + at % 1000).dropFirst())"
            }
        }
        /// Whether the contract trusts the timestamp (section 3): a correct clock, in seconds or milliseconds.
        public var deviceClockTrusted: Bool {
            firmware == .contractV1 && (sentClock == .correct || sentClock == .milliseconds)
        }
        /// The time the ledger orders the reading by: the device's when trusted, else the receive
        /// time (the guide's `millis()` timestamp is no time at all).
        public var ledgerTime: EpochMillis { deviceClockTrusted ? time : deliveredAt }
    }

    public struct DayTruth: Sendable, Equatable {
        /// What the loads really drew that local day.
        public var consumedWh = 0.0
        /// What the contract's rules must bill from the delivered readings.
        public var billableWh = 0.0
    }

    /// Energy the truth counts on a local date, known from an instant on: consumption as the
    /// loads draw it, billable energy once both readings of its interval are delivered.
    public struct Contribution: Sendable, Equatable {
        public var knownAt: EpochMillis
        public var date: CivilDate
        public var consumedWh: Double
        public var billableWh: Double
    }

    public struct DeviceRun: Sendable {
        public var device: Device
        /// In delivery order, duplicates and malformed payloads included.
        public var readings: [Reading]
        public var contributions: [Contribution]
        public var faults: [Fault: Int]

        /// The whole run's truth per local date.
        public var days: [CivilDate: DayTruth] { days(knownBy: .max) }

        /// The truth of what was delivered by `instant` (a live run's truth so far).
        public func days(knownBy instant: EpochMillis) -> [CivilDate: DayTruth] {
            var out: [CivilDate: DayTruth] = [:]
            for c in contributions where c.knownAt <= instant {
                out[c.date, default: DayTruth()].consumedWh += c.consumedWh
                out[c.date, default: DayTruth()].billableWh += c.billableWh
            }
            return out
        }

        /// Distinct valid messages delivered by `instant`: the events the database must hold once
        /// each. Distinct by event hash, as the database keeps them: two messages with the same
        /// timestamp as sent and the same counter are one event (a board whose clock is stuck in
        /// 1970 sends that twice while its counter stands still; counting them as two made
        /// `simulate check` and a property test report a difference now and then).
        public func events(deliveredBy instant: EpochMillis = .max) -> Int {
            let decoder = MessageDecoder()
            let topic = "autovolt/\(device.info.esp32Name)/telemetry"
            var hashes = Set<String>()
            for r in readings where r.deliveredAt <= instant && !r.isDuplicate && r.malformed == nil {
                let payload = Array(CampusSimulator.payload(r, device: device).utf8)
                if case .success(.telemetry(let t)) = decoder.decode(topic: topic, payload: payload, receivedAt: r.deliveredAt) {
                    hashes.insert(t.eventHash)
                }
            }
            return hashes.count
        }

        /// Payloads delivered by `instant` that the decoder must refuse.
        public func rejects(deliveredBy instant: EpochMillis = .max) -> Int {
            readings.reduce(0) { $0 + ($1.deliveredAt <= instant && $1.malformed != nil ? 1 : 0) }
        }
    }

    /// The campus's boards: about four to a classroom, every third one on the firmware guide.
    public static func devices(_ config: Config) -> [Device] {
        (0..<config.devices).map { i in
            var rng = SplitMix64(seed: config.seed &+ UInt64(i) &* 0x9E37_79B9)
            let room = "R\(100 + i / 4)"
            let switches = (0..<rng.int(in: 2...6)).map { s in
                DeviceInfo.Switch(name: "relay_\(s + 1)", ratedW: Double([40, 60, 100, 250, 1200, 1500][rng.int(in: 0...5)]))
            }
            return Device(info: DeviceInfo(esp32Name: "\(config.namePrefix)-\(room.lowercased())-\(i % 4 + 1)", classroom: room, switches: switches),
                          firmware: config.firmware ?? (i % 3 == 2 ? .firmwareGuide : .contractV1),
                          eveningClasses: rng.int(in: 0...4) == 0, index: i)
        }
    }

    /// Whether a switch is on in the local hour starting at `hourStart`: mostly during classes
    /// (weekdays 09:00-17:00, or to 21:00 with evening classes), now and then left on.
    static func isOn(_ device: Device, switch s: Int, hourStart: EpochMillis, calendar: inout LocalCalendar, seed: UInt64) -> Bool {
        let day = calendar.day(containing: hourStart)
        let hour = Int((hourStart - day.start) / 3_600_000)
        let inClass = day.date.weekday <= 5 && hour >= 9 && hour < (device.eveningClasses ? 21 : 17)
        var rng = SplitMix64(seed: seed ^ UInt64(bitPattern: hourStart) &+ UInt64(device.index * 64 + s) &* 0xD6E8_FEB8_6659_FD93)
        return rng.unit() < (inClass ? 0.7 : 0.03)
    }

    public static func simulate(_ device: Device, config: Config, calendar: inout LocalCalendar) -> DeviceRun {
        let interval = EpochMillis(max(1, config.intervalSeconds)) * 1000
        let start: EpochMillis, count: Int
        if let span = config.span {
            (start, count) = (span.start, max(0, span.count))
        } else {
            start = calendar.startOfDay(config.start)
            count = Int((calendar.startOfDay(CivilDate(daysSinceEpoch: config.start.daysSinceEpoch + max(0, config.days))) - start) / interval)
        }
        /// Delivery instants are wall-clock ones when the span is published live.
        func real(_ virtual: EpochMillis) -> EpochMillis { config.span?.real(virtual) ?? virtual }
        var rng = SplitMix64(seed: config.seed ^ 0xA5A5_0000 &+ UInt64(device.index))
        let rates = config.faults
        let tolerance = device.info.rollbackToleranceWh

        var run = DeviceRun(device: device, readings: [], contributions: [], faults: [:])
        var counter = Double(rng.int(in: 2_000...80_000)) // the board's internal counter, Wh
        var boot = 1, seq: Int64 = 0, bootedAt = start - EpochMillis(rng.int(in: 60...86_400)) * 1000
        var quiet = 0 // readings since the last fault or offline period
        var offlineLeft = 0, offlineLost = false, queued: [Reading] = []
        var pendingGlitchReboot = false
        var sinceBootStamps: Set<String> = []
        // The billing chain: the last delivered reading the truth bills from, and how the next one relates.
        var billedFrom: Reading?
        var hourOn: (hour: EpochMillis, on: [Bool])?

        func published(_ value: Double) -> Double { device.firmware == .firmwareGuide ? value.rounded(.down) : value }
        /// The contract's bill for the interval from the chain's last reading to `b`, by what the
        /// simulation knows happened in between: a reboot (rule 2, or rule 1 across a reboot), or
        /// ordinary counting with a glitch or lost readings in between (rules 1 and 3).
        func bill(_ b: Reading, rebootedSince: Bool, calendar: inout LocalCalendar) {
            defer { billedFrom = b }
            guard let a = billedFrom else { return }
            let knownAt = max(a.deliveredAt, b.deliveredAt)
            var delta = b.energyWh - a.energyWh
            if rebootedSince && delta < 0 { delta = a.energyWh - b.energyWh <= tolerance ? 0 : b.energyWh }
            // Rule 4: more than the device's maximum power is not billed. It happens to the guide's
            // boards after an offline period: the broker's queue arrives at once, and with receive
            // times the energy of an hour lands in milliseconds.
            let hours = Double(b.ledgerTime - a.ledgerTime) / 3_600_000
            if delta > 0 && (hours <= 0 || delta / hours > device.info.maxPowerW) { return }
            addTruth(from: a.ledgerTime, to: b.ledgerTime, energy: delta, billable: true, knownAt: knownAt, calendar: &calendar)
        }
        func addTruth(from a: EpochMillis, to b: EpochMillis, energy: Double, billable: Bool, knownAt: EpochMillis,
                      calendar: inout LocalCalendar) {
            var t = a
            while t < b {
                let day = calendar.day(containing: t)
                let pieceEnd = min(b, day.end)
                let share = energy * Double(pieceEnd - t) / Double(b - a)
                run.contributions.append(Contribution(knownAt: knownAt, date: day.date, consumedWh: billable ? 0 : share,
                                                      billableWh: billable ? share : 0))
                t = pieceEnd
            }
        }

        for k in 0...count {
            let time = start + EpochMillis(k) * interval
            // The load over the interval that ends now.
            if k > 0 {
                let from = time - interval
                let hour = from - ((from - start) % 3_600_000)
                if hourOn?.hour != hour {
                    hourOn = (hour, device.info.switches.indices.map { isOn(device, switch: $0, hourStart: hour, calendar: &calendar, seed: config.seed) })
                }
            }
            let on = hourOn?.on ?? device.info.switches.map { _ in false }
            let powerW = zip(device.info.switches, on).reduce(0.0) { $0 + ($1.1 ? ($1.0.ratedW ?? 0) : 0) }
            let used = k > 0 ? powerW * Double(interval) / 3_600_000 : 0
            if k > 0 { addTruth(from: time - interval, to: time, energy: used, billable: false, knownAt: real(time), calendar: &calendar) }

            // Which fault, if any, this reading has (never near the ends, never near another one).
            let eligible = quiet >= 4 && k > 2 && k < count - 6 && offlineLeft == 0 && !pendingGlitchReboot
            var fault: Fault?
            if eligible {
                let roll = rng.unit()
                var edge = 0.0
                for candidate in Fault.allCases {
                    edge += rates[candidate]
                    if roll < edge { fault = candidate; break }
                }
                if fault == .glitchThenReboot && device.firmware != .contractV1 { fault = .glitch }
                // Receive order is the guide's boards' only order: a late one is out of order for good.
                if fault == .late && device.firmware != .contractV1 { fault = nil }
                // The guide's timestamp is an uptime anyway: there is no clock to get wrong.
                if let f = fault, [Fault.clock1970, .clockMillis, .clockAhead].contains(f) && device.firmware != .contractV1 { fault = nil }
                if fault == .reset && counter < tolerance + used + 100 { fault = nil } // a reset must read as one
                if (fault == .glitch || fault == .glitchThenReboot) && published(counter) < 20 { fault = nil }
            }
            quiet = fault == nil || fault == .duplicate || fault == .late || fault == .malformed ? quiet + 1 : 0

            var reboot = false
            switch fault {
            case .reboot?:
                // Mid-interval: the guide's boards restore the counter saved at the last 10 Wh.
                let before = counter + used / 2
                counter = (device.firmware == .firmwareGuide ? (before / 10).rounded(.down) * 10 : before) + used / 2
                reboot = true
            case .reset?:
                counter = used / 2 // only what was used since the restart is counted
                reboot = true
            default:
                counter += used
            }
            if pendingGlitchReboot {
                reboot = true // the counter was restored exactly: nothing lost
                pendingGlitchReboot = false
            }
            if reboot {
                boot += 1
                seq = 0
                bootedAt = time - EpochMillis(rng.int(in: 1_000...Int(max(1_001, interval - 1_000)))) // uptimes never repeat by construction
            }
            seq += 1
            var value = published(counter)
            let isGlitch = fault == .glitch || fault == .glitchThenReboot
            if isGlitch {
                value = Double(rng.int(in: 0...max(0, Int(value / 2)))) // one bogus low reading
                if fault == .glitchThenReboot { pendingGlitchReboot = true }
            }
            let deliveredVirtually = time + EpochMillis(rng.int(in: 50...900))
            var reading = Reading(time: time, deliveredAt: real(deliveredVirtually), energyWh: value,
                                  bootID: device.firmware == .contractV1 ? "b\(device.index)-\(boot)" : nil, seq: seq,
                                  uptimeMillis: time - bootedAt, powerW: device.firmware == .contractV1 ? powerW : nil,
                                  switches: on, isDuplicate: false, firmware: device.firmware)
            switch fault {
            case .clock1970?:
                reading.sentClock = .sinceBoot
                // Seconds since boot repeat from boot to boot: with the counter unchanged, two such
                // readings are one event under the contract's hash (name, timestamp as sent, counter).
                // That is the contract's identity, but a truth would have to model the lost reading;
                // the simulator does not send the second one.
                if !sinceBootStamps.insert("\(reading.timestampAsSent)|\(reading.energyWh)").inserted {
                    reading.sentClock = .correct
                    fault = nil
                }
            case .clockMillis?: reading.sentClock = .milliseconds
            case .clockAhead?: reading.sentClock = .ahead(seconds: Int64(rng.int(in: 6...30) * 60))
            case .malformed?: reading.malformed = malformedPayload(reading, device: device, kind: rng.below(4))
            default: break
            }
            if let fault { run.faults[fault, default: 0] += 1 }

            // Offline periods start here: their readings are held by the broker, or lost.
            if fault == .offlineQueued || fault == .offlineLost {
                offlineLeft = rng.int(in: 10...120)
                offlineLost = fault == .offlineLost
            }
            if offlineLeft > 0 {
                offlineLeft -= 1
                quiet = 0
                if offlineLost { continue }
                queued.append(reading)
                if offlineLeft == 0 {
                    // Back online: the broker delivers what it queued, in order, before the next reading.
                    for (j, var held) in queued.enumerated() {
                        held.deliveredAt = real(time + interval / 2) + EpochMillis(j)
                        run.readings.append(held)
                        bill(held, rebootedSince: false, calendar: &calendar)
                    }
                    queued = []
                }
                continue
            }

            if fault == .late { reading.deliveredAt = real(deliveredVirtually + EpochMillis(rng.int(in: 1...4)) * interval) }
            run.readings.append(reading)
            if fault == .duplicate {
                var again = reading
                again.isDuplicate = true
                again.deliveredAt = real(deliveredVirtually + EpochMillis(rng.int(in: 100...20_000)))
                run.readings.append(again)
            }
            // A glitch is no reading to bill from (rule 3), a refused payload no reading at all.
            if !isGlitch && reading.malformed == nil { bill(reading, rebootedSince: reboot, calendar: &calendar) }
        }

        run.readings.sort { ($0.deliveredAt, $0.time) < ($1.deliveredAt, $1.time) }
        return run
    }
}

extension CampusSimulator {
    /// The payload as each firmware writes it (contract section 3), or the refused one sent in its place.
    public static func payload(_ r: Reading, device: Device) -> String {
        if let malformed = r.malformed { return malformed }
        return wellFormedPayload(r, device: device)
    }

    static func wellFormedPayload(_ r: Reading, device: Device) -> String {
        switch device.firmware {
        case .contractV1:
            let states = r.switches.map { $0 ? "1" : "0" }.joined(separator: ",")
            return "{\"esp32_name\":\"\(device.info.esp32Name)\",\"timestamp\":\(r.timestampAsSent),\"energy_wh_total\":\(r.energyWh),"
                + "\"switch_state\":[\(states)],\"boot_id\":\"\(r.bootID ?? "")\",\"seq\":\(r.seq),\"power_w\":\(r.powerW ?? 0)}"
        case .firmwareGuide:
            let states = zip(device.info.switches, r.switches).map { "\"\($0.0.name)\":\($0.1)" }.joined(separator: ",")
            return "{\"esp32_name\":\"\(device.info.esp32Name)\",\"timestamp\":\(r.timestampAsSent),\"energy_wh_total\":\(Int(r.energyWh)),"
                + "\"switch_state\":{\(states)},\"sequence_no\":\(r.seq)}"
        }
    }

    /// What a broken firmware build or a corrupted transfer sends: the decoder refuses each kind.
    static func malformedPayload(_ r: Reading, device: Device, kind: Int) -> String {
        let good = wellFormedPayload(r, device: device)
        let name = device.info.esp32Name
        switch kind {
        case 0: return String(good.prefix(good.count / 2)) // cut off in transfer
        case 1: return "{\"esp32_name\":\"\(name)\",\"timestamp\":\(r.timestampAsSent),\"switch_state\":[]}" // no counter
        case 2: return "{\"esp32_name\":\"\(name)\",\"timestamp\":\(r.timestampAsSent),\"energy_wh_total\":\"nan\",\"switch_state\":[]}"
        default: return "{\"esp32_name\":\"\(name)\",\"timestamp\":\(r.timestampAsSent),\"energy_wh_total\":-\(Int(r.energyWh) + 1),\"switch_state\":[]}"
        }
    }
}

extension CampusSimulator.FaultRates {
    /// Every rate multiplied by `factor` (0: a campus without faults).
    public func scaled(by factor: Double) -> Self {
        var out = self
        let f = max(0, factor)
        out.reboot *= f; out.reset *= f; out.glitch *= f; out.glitchThenReboot *= f
        out.duplicate *= f; out.late *= f; out.offlineQueued *= f; out.offlineLost *= f
        out.clock1970 *= f; out.clockMillis *= f; out.clockAhead *= f; out.malformed *= f
        return out
    }

    subscript(_ fault: CampusSimulator.Fault) -> Double {
        switch fault {
        case .reboot: reboot
        case .reset: reset
        case .glitch: glitch
        case .glitchThenReboot: glitchThenReboot
        case .duplicate: duplicate
        case .late: late
        case .offlineQueued: offlineQueued
        case .offlineLost: offlineLost
        case .clock1970: clock1970
        case .clockMillis: clockMillis
        case .clockAhead: clockAhead
        case .malformed: malformed
        }
    }
}

/// SplitMix64: small, fast and reproducible from its seed on every platform (the simulator, the
/// benchmarks' load generators and the property tests all draw from it).
public struct SplitMix64: RandomNumberGenerator, Sendable {
    public var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    public mutating func unit() -> Double { Double(next() >> 11) / Double(1 << 53) }
    public mutating func int(in range: ClosedRange<Int>) -> Int { range.lowerBound + Int(next() % UInt64(range.count)) }
    /// In 0..<n (n > 0).
    public mutating func below(_ n: Int) -> Int { Int(next() % UInt64(n)) }
}
