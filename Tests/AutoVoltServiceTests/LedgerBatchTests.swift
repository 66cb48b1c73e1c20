import AutoVoltCore
import AutoVoltMongo
@testable import AutoVoltService
import Foundation
import Testing

/// LedgerStore's batched steps against the wire-protocol server: several devices per step, the
/// tail a finished step records (so the next one need not ask the ledger), and steps that were
/// interrupted before recording it.
@Suite("integration: ledger batches", .serialized)
struct LedgerBatchTests {
    /// Random rounds of readings for three devices (in order, late, duplicated, dips, resets),
    /// each round one batched step; now and then a step is "interrupted" after its ledger writes
    /// (the state document's version moves on without a release and its tail is garbage). The
    /// live ledger must always equal the pure derivation of everything stored so far. With step
    /// limits of a few events, almost every step is a backlog derived in windows instead.
    @Test(arguments: [nil, 3])
    func batchedStepsMatchThePureDerivationThroughLateDataAndInterruptions(stepLimit: Int?) throws {
        let rig = try AccountingRig()
        if let stepLimit { rig.ledger.stepLimits = .init(events: stepLimit, readings: 2 * stepLimit) }
        let devices = ["lab-101", "lab-102", "lab-201"]
        var rng = SplitMix64(seed: 7)
        var stored: [String: [(time: EpochMillis, energy: Double)]] = [:]
        var counters: [String: Double] = Dictionary(uniqueKeysWithValues: devices.map { ($0, 1000) })
        var clock: [String: EpochMillis] = Dictionary(uniqueKeysWithValues: devices.map { ($0, day5 - 2 * oneHour) })
        var now = day5
        for round in 0..<40 {
            var docs: [BSONDocument] = []
            for device in devices {
                for _ in 0..<Int(rng.next() % 4) {
                    var time = clock[device]! + 30_000 + Int64(rng.next() % 3) * 30_000
                    var energy = counters[device]! + Double(rng.next() % 20)
                    switch rng.next() % 10 {
                    case 0: // late: between two stored readings, never at the same instant
                        time = clock[device]! - 10_000 - Int64(rng.next() % 50_000)
                        energy = max(0, counters[device]! - 5)
                    case 1: energy = 0 // a dip: a glitch or a reset, settled by what follows
                    default: break
                    }
                    if stored[device, default: []].contains(where: { $0.time == time }) { continue }
                    if time > clock[device]! {
                        clock[device] = time
                        counters[device] = energy
                    }
                    stored[device, default: []].append((time, energy))
                    docs.append(rig.event(device, time: time, energy: energy, now: now))
                }
            }
            if !docs.isEmpty {
                _ = try rig.client.insertMany(docs, into: Collections.telemetryEvents, ordered: false, writeConcern: .acknowledged)
            }
            now += 45_000
            try rig.ledger.advance(devices, now: now)
            if round % 7 == 3 {
                // An interrupted step: acquired (version bumped), never released, and a tail that
                // would lose the next interval if it were believed (it starts after the last reading).
                let victim = devices[round % devices.count]
                let afterLast = clock[victim]! + 1
                _ = try rig.client.updateOne(LedgerStore.stateCollection, filter: ["_id": .string(victim)],
                                             update: ["$inc": ["version": .int64(1)],
                                                      "$set": ["tail_start": .millis(afterLast), "tail_end": .millis(afterLast)]],
                                             upsert: false, writeConcern: .acknowledged)
            }
            #expect(try rig.liveLedger() == rig.expected(stored, now: now), "round \(round)")
        }
        let entries = try rig.liveLedger()
        #expect(entries.count > 100 && stored.values.contains { $0.contains { $0.energy == 0 } }, "a fleet worth checking")
        let states = try rig.client.find(LedgerStore.stateCollection, filter: [:])
        #expect(states.allSatisfy { $0["lease_owner"] == nil }, "every lease given back")
        #expect(try rig.client.countDocuments(Collections.telemetryEvents, filter: ["processed": false]) == 0)
    }

    /// A rebuild that derives entries which exist but were superseded (the registry moved a
    /// device and moved it back) makes exactly those live again, written a few at a time.
    @Test func entriesDerivedAgainAfterBeingSupersededAreLiveAgain() throws {
        let rig = try AccountingRig()
        rig.ledger.stepLimits.writeChunk = 3
        var energy = 500.0
        let readings: [(time: EpochMillis, energy: Double)] = (0..<12).map { i in
            energy += i == 6 ? -400 : 7 // one reset among them
            return (day5 + EpochMillis(i) * 300_000, energy)
        }
        try rig.ingest("lab-101", readings, now: day5 + oneHour)
        let original = try rig.liveLedger()
        #expect(original.count >= 11)
        rig.ledger.registry = DeviceRegistry(devices: [DeviceInfo(esp32Name: "lab-101", classroom: "MOVED")])
        _ = try rig.ledger.rebuild("lab-101", dates: nil, now: day5 + 2 * oneHour)
        #expect(Set(try rig.liveLedger().keys).isDisjoint(with: original.keys), "every entry derived anew for the new classroom")
        rig.ledger.registry = rig.registry
        let back = try rig.ledger.rebuild("lab-101", dates: nil, now: day5 + 3 * oneHour)
        #expect(back.inserted == original.count)
        #expect(try rig.liveLedger() == original)
    }

    /// The stored events carry the reboot evidence to the derivation: a `seq` that starts again
    /// (lab-101), a `millis()` timestamp as sent that goes down (lab-102), an `uptime_s` that goes
    /// down (lab-201). Each fall is a rollback followed by 8 Wh, not a 3 Wh glitch.
    @Test func rebootEvidenceInStoredEventsReachesTheLedger() throws {
        let rig = try AccountingRig()
        let values: [(offset: EpochMillis, energy: Double, seq: Int64, uptime: Double)] = [
            (0, 1000, 40, 3_600), (30_000, 995, 1, 4), (60_000, 1003, 2, 34),
        ]
        var docs: [BSONDocument] = []
        for (device, field) in [("lab-101", "seq"), ("lab-102", "timestamp_sent"), ("lab-201", "uptime_s")] {
            for v in values {
                var doc = rig.event(device, time: day5 + v.offset, energy: v.energy)
                switch field {
                case "seq": doc["seq"] = .int64(v.seq)
                case "timestamp_sent": doc["timestamp_sent"] = .string(String(Int64(v.uptime * 1000)))
                default: doc["uptime_s"] = .double(v.uptime)
                }
                docs.append(doc)
            }
        }
        _ = try rig.client.insertMany(docs, into: Collections.telemetryEvents, ordered: false, writeConcern: .acknowledged)
        try rig.ledger.advance(["lab-101", "lab-102", "lab-201"], now: day5 + oneHour)
        for device in ["lab-101", "lab-102", "lab-201"] {
            let entries = try rig.client.find(Collections.ledgers, filter: ["esp32_name": .string(device)], sort: ["start_ts": 1])
            #expect(entries.compactMap { $0["delta_wh"]?.doubleValue } == [0, 8], "\(device)")
            #expect(entries.first?["quality"]?.documentValue?["reasons"]?.arrayValue?.compactMap(\.stringValue)
                        == ["reboot", "counter_rollback"], "\(device)")
        }
    }

    @Test func aBacklogIsCutIntoBatchesOfAboutBatchEventsEvents() throws {
        let rig = try AccountingRig()
        var docs: [BSONDocument] = []
        for i in 0..<300 { docs.append(rig.event("lab-101", time: day5 + Int64(i) * 30_000, energy: Double(i), now: day5)) }
        for i in 0..<200 { docs.append(rig.event("lab-102", time: day5 + Int64(i) * 30_000, energy: Double(i), now: day5 + 1)) }
        for d in 0..<5 { docs.append(rig.event("dev-\(d)", time: day5, energy: 1, now: day5 + 2 + Int64(d))) }
        _ = try rig.client.insertMany(docs, into: Collections.telemetryEvents, ordered: false, writeConcern: .acknowledged)
        let batches = try rig.ledger.workBatches(now: day5, batchSize: 3, batchEvents: 250)
        // Oldest first; lab-101 alone exceeds the events budget (250), lab-102 leaves room for
        // two one-event devices, and then the batch size (3) cuts.
        #expect(batches == [["lab-101"], ["lab-102", "dev-0", "dev-1"], ["dev-2", "dev-3", "dev-4"]])
    }

    @Test func aBacklogBeyondTheWindowGoesTenDevicesAtATime() throws {
        // 30 devices with 200 events each, interleaved in time: the 5,000-event window shows
        // each with fewer than it has, so batches are capped at ten devices.
        let rig = try AccountingRig()
        var docs: [BSONDocument] = []
        for i in 0..<200 {
            for d in 0..<30 { docs.append(rig.event("dev-\(d)", time: day5 + Int64(i) * 30_000, energy: Double(i), now: day5 + Int64(i * 30 + d))) }
        }
        _ = try rig.client.insertMany(docs, into: Collections.telemetryEvents, ordered: false, writeConcern: .acknowledged)
        let batches = try rig.ledger.workBatches(now: day5)
        #expect(batches.map(\.count) == [10, 10, 10])
        #expect(Set(batches.joined()).count == 30)
    }

    @Test func aDeviceHeldByAnotherWorkerIsLeftToIt() throws {
        let rig = try AccountingRig()
        _ = try rig.client.insertMany([rig.event("lab-101", time: day5, energy: 1), rig.event("lab-102", time: day5, energy: 1)],
                                      into: Collections.telemetryEvents, ordered: false, writeConcern: .acknowledged)
        _ = try rig.client.updateOne(LedgerStore.stateCollection, filter: ["_id": "lab-102"],
                                     update: ["$set": ["lease_owner": "other", "lease_until": .millis(day5 + oneHour)]],
                                     upsert: true, writeConcern: .acknowledged)
        let results = try rig.ledger.advance(["lab-101", "lab-102"], now: day5 + 1000)
        #expect(results["lab-101"] == .done(newEvents: 1))
        #expect(results["lab-102"] == .busy)
        #expect(try rig.client.countDocuments(Collections.telemetryEvents, filter: ["processed": false, "esp32_name": "lab-102"]) == 1)
        // Once the other worker's lease has expired, the device is taken over.
        #expect(try rig.ledger.advance(["lab-102"], now: day5 + 2 * oneHour)["lab-102"] == .done(newEvents: 1))
    }
}

extension AccountingRig {
    func event(_ device: String, time: EpochMillis, energy: Double, now: EpochMillis) -> BSONDocument {
        let hash = EventHash.compute(esp32Name: device, timestampAsSent: String(time), energyWhTotal: energy)
        return ["_id": .string("\(device)@\(time)"), "event_hash": .string(hash), "esp32_name": .string(device),
                "classroom": .string(registry.resolve(device).classroom), "device_ts": .millis(time), "received_at": .millis(now),
                "energy_wh_total": .double(energy), "switch_state": [1], "clock": "device", "processed": false]
    }

    func event(_ device: String, time: EpochMillis, energy: Double) -> BSONDocument { event(device, time: time, energy: energy, now: time) }

    /// Live entries: id and energy.
    func liveLedger() throws -> [String: Double] {
        let docs = try client.find(Collections.ledgers, filter: ["superseded_by": ["$exists": false]], projection: ["delta_wh": 1])
        return Dictionary(uniqueKeysWithValues: docs.compactMap { d in d["_id"]?.stringValue.map { ($0, d["delta_wh"]?.doubleValue ?? .nan) } })
    }

    /// The pure derivation of the stored readings at `now`.
    func expected(_ stored: [String: [(time: EpochMillis, energy: Double)]], now: EpochMillis) -> [String: Double] {
        var out: [String: Double] = [:]
        for (device, readings) in stored {
            let sorted = readings.sorted { $0.time < $1.time }.map { r in
                LedgerReading(eventHash: EventHash.compute(esp32Name: device, timestampAsSent: String(r.time), energyWhTotal: r.energy),
                              time: r.time, energyWh: r.energy)
            }
            var calendar = LocalCalendar(timeZone: zone)
            for entry in LedgerDeriver.derive(sorted, device: registry.resolve(device), calendar: &calendar, now: now) { out[entry.id] = entry.deltaWh }
        }
        return out
    }
}
