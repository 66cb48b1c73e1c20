import AutoVoltCore
import AutoVoltMongo
import AutoVoltTestSupport
import Foundation
import Testing

let registry: DeviceRegistry = {
    let text = (try? String(contentsOf: packageRoot.appendingPathComponent("config/devices.toml"), encoding: .utf8)) ?? ""
    return (try? DeviceRegistry.parse(toml: text)) ?? DeviceRegistry()
}()

func telemetryPayload(_ device: String, second: Int, energy: Double, boot: String = "b1") -> (topic: String, payload: String) {
    ("autovolt/\(device)/telemetry",
     #"{"timestamp":\#(baseTime + second),"energy_wh_total":\#(energy),"switch_state":[1],"boot_id":"\#(boot)"}"#)
}

/// What the ledger must hold for these readings: the pure derivation, settled.
func expectedEntries(_ readings: [(device: String, second: Int, energy: Double)]) -> Set<String> {
    var ids = Set<String>()
    for (name, group) in Dictionary(grouping: readings, by: \.device) {
        let ledgerReadings = group.sorted { $0.second < $1.second }.map { r in
            LedgerReading(eventHash: EventHash.compute(esp32Name: name, timestampAsSent: String(baseTime + r.second), energyWhTotal: r.energy),
                          time: EpochMillis(baseTime + r.second) * 1000, energyWh: r.energy, bootID: "b1")
        }
        var calendar = LocalCalendar(timeZone: TimeZone(identifier: "Asia/Kolkata")!)
        ids.formUnion(LedgerDeriver.derive(ledgerReadings, device: registry.resolve(name), calendar: &calendar).map(\.id))
    }
    return ids
}

extension Rig {
    func liveLedgerIDs() -> Set<String> {
        let docs = (try? client.find("device_consumption_ledgers", filter: ["superseded_by": ["$exists": false]], projection: ["_id": 1])) ?? []
        return Set(docs.compactMap { $0["_id"]?.stringValue })
    }

    func waitForLedger(_ expected: Set<String>, timeout: Double = 60) -> Bool {
        eventually(timeout: timeout, interval: 0.2) {
            count("telemetry_events", ["processed": false]) == 0 && liveLedgerIDs() == expected
        }
    }
}

@Suite("integration: ledger", .serialized)
struct LedgerIntegrationTests {
    @Test func ledgerFollowsResetsGlitchesAndLateReadings() throws {
        let rig = try Rig()
        try rig.startWorker()
        let publisher = try rig.publisher()
        let readings: [(device: String, second: Int, energy: Double)] = [
            ("lab-101", 0, 1000), ("lab-101", 30, 1010), ("lab-101", 60, 0), ("lab-101", 90, 1020),
            ("lab-101", 120, 5), ("lab-101", 150, 8),
        ]
        try publisher.publish(readings.map { telemetryPayload($0.device, second: $0.second, energy: $0.energy) })
        let converged = rig.waitForLedger(expectedEntries(readings))
        #expect(converged, "live: \(rig.liveLedgerIDs().count)")
        func liveTotal() throws -> Double {
            try rig.client.find("device_consumption_ledgers", filter: ["superseded_by": ["$exists": false], "billable": true])
                .compactMap { $0["delta_wh"]?.doubleValue }.reduce(0, +)
        }
        #expect(try liveTotal() == 28)
        let reset = try #require(try rig.client.findOne("device_consumption_ledgers", filter: ["is_reset_marker": true]))
        #expect(reset["quality"]?.documentValue?["reasons"]?.arrayValue?.contains(.string("counter_reset")) == true)
        #expect(reset["date"]?.stringValue?.count == 10)
        // A late reading between the first two splits that interval; the total stays right.
        let late = readings + [("lab-101", 15, 1005)]
        try publisher.publish([telemetryPayload("lab-101", second: 15, energy: 1005)])
        let convergedAgain = rig.waitForLedger(expectedEntries(late))
        #expect(convergedAgain)
        #expect(try liveTotal() == 28)
        #expect(rig.count("device_consumption_ledgers", ["superseded_by": ["$exists": true]]) >= 1)
        #expect(rig.count("telemetry_events", ["processed": true]) == 7)
    }

    @Test func killNineMidStreamGivesTheSameLedgerAsAnUninterruptedRun() throws {
        let rig = try Rig()
        // Small batches, so the kill cannot come after one batch stored and derived everything.
        let first = try rig.startWorker(extra: ["AUTOVOLT_BATCH_SIZE": "10"])
        var readings: [(device: String, second: Int, energy: Double)] = []
        for device in ["lab-101", "lab-102", "lab-103"] {
            var energy = 5000.0
            for i in 0..<150 {
                energy += Double(i % 7)
                // Now and then a reset to near zero, and a glitch.
                if i == 60 { energy = 3 }
                readings.append((device, i * 20, i == 100 ? 1 : energy)) // all in the past: device clocks stay trusted
            }
        }
        let publisher = try rig.publisher()
        let unprocessedAtKill = LockedBox(-1)
        let killer = Thread {
            _ = eventually(timeout: 30, interval: 0.01) { rig.count("device_consumption_ledgers") >= 50 }
            first.kill9()
            unprocessedAtKill.value = rig.count("telemetry_events", ["processed": false])
        }
        killer.start()
        try publisher.publish(readings.map { telemetryPayload($0.device, second: $0.second, energy: $0.energy) })
        _ = eventually(timeout: 30) { !first.isRunning && unprocessedAtKill.value >= 0 }
        let total = rig.count("telemetry_events")
        #expect(unprocessedAtKill.value > 0 || total < readings.count, "the kill came after the ledger was complete")
        try rig.startWorker()
        let expected = expectedEntries(readings)
        let converged = rig.waitForLedger(expected, timeout: 120)
        #expect(converged, "live \(rig.liveLedgerIDs().count) of \(expected.count), unprocessed \(rig.count("telemetry_events", ["processed": false]))")
    }

    @Test func rebuildLedgerIsIdempotentAndAppliesChangedRules() throws {
        let rig = try Rig()
        let worker = try rig.startWorker()
        let readings: [(device: String, second: Int, energy: Double)] = [
            ("lab-101", 0, 1000), ("lab-101", 30, 1010), ("lab-101", 60, 985), ("lab-101", 90, 990),
        ]
        try rig.publisher().publish(readings.map { telemetryPayload($0.device, second: $0.second, energy: $0.energy) })
        let converged = rig.waitForLedger(expectedEntries(readings))
        #expect(converged)
        #expect(worker.stop() == 0)
        let same = try WorkerProcess.runToCompletion(["rebuild-ledger"], environment: rig.environment)
        #expect(same.status == 0, "\(same.stderr)")
        #expect(same.stdout.contains("0 entries inserted, 0 superseded"), "\(same.stdout)")
        // The registry now says lab-101 is in another classroom: every entry is derived anew.
        let registryFile = rig.stateDirectory.deletingLastPathComponent().appendingPathComponent("registry-\(UUID().uuidString).toml")
        try "[[device]]\nesp32_name = \"lab-101\"\nclassroom = \"MOVED-1\"\n".write(to: registryFile, atomically: true, encoding: .utf8)
        var environment = rig.environment
        environment["AUTOVOLT_DEVICES"] = registryFile.path
        let changed = try WorkerProcess.runToCompletion(["rebuild-ledger", "--esp32-name", "lab-101"], environment: environment)
        #expect(changed.status == 0, "\(changed.stderr)")
        #expect(changed.stdout.contains("3 entries inserted, 3 superseded"), "\(changed.stdout)")
        #expect(rig.count("device_consumption_ledgers", ["superseded_by": ["$exists": false], "classroom": "MOVED-1"]) == 3)
        let bad = try WorkerProcess.runToCompletion(["rebuild-ledger", "--start", "2026-13-01", "--end", "2026-11-02"], environment: environment)
        #expect(bad.status == 64)
    }

    /// A rebuild in windows of a few readings (glitch, rollback, reset and a gap over midnight
    /// land on window edges) gives exactly the derivation over the whole history.
    @Test func rebuildInSmallWindowsEqualsTheWholeDerivation() throws {
        let rig = try Rig()
        let worker = try rig.startWorker()
        var readings: [(device: String, second: Int, energy: Double)] = []
        var energy = 5_000.0
        for i in 0..<36 {
            // A day's gap after the 12th reading: the interval over it is split at local midnight.
            let second = i < 12 ? -90_000 + 30 * i : -3_000 + 30 * i
            switch i {
            case 5: readings.append(("lab-102", second, 7)) // a glitch: the next reading is back above
            case 15: energy -= 20; readings.append(("lab-102", second, energy)) // a rollback
            case 22: energy = 3; readings.append(("lab-102", second, energy)) // a reset
            default: energy += 11; readings.append(("lab-102", second, energy))
            }
        }
        try rig.publisher().publish(readings.map { telemetryPayload($0.device, second: $0.second, energy: $0.energy) })
        #expect(rig.waitForLedger(expectedEntries(readings)))
        #expect(worker.stop() == 0)

        // The device moved: every entry is derived anew, in windows of 3 and of 4 readings.
        let registryFile = rig.stateDirectory.deletingLastPathComponent().appendingPathComponent("registry-\(UUID().uuidString).toml")
        try "[[device]]\nesp32_name = \"lab-102\"\nclassroom = \"MOVED-2\"\n".write(to: registryFile, atomically: true, encoding: .utf8)
        var environment = rig.environment
        environment["AUTOVOLT_DEVICES"] = registryFile.path
        var moved = registry.resolve("lab-102")
        moved.classroom = "MOVED-2"
        let ledgerReadings = readings.map { r in
            LedgerReading(eventHash: EventHash.compute(esp32Name: r.device, timestampAsSent: String(baseTime + r.second), energyWhTotal: r.energy),
                          time: EpochMillis(baseTime + r.second) * 1000, energyWh: r.energy, bootID: "b1")
        }
        var calendar = LocalCalendar(timeZone: TimeZone(identifier: "Asia/Kolkata")!)
        let whole = LedgerDeriver.derive(ledgerReadings, device: moved, calendar: &calendar)
        #expect(Set(whole.map(\.date)).count == 2, "the history spans two local dates")
        let run = try WorkerProcess.runToCompletion(["rebuild-ledger", "--esp32-name", "lab-102", "--window", "3"], environment: environment)
        #expect(run.status == 0, "\(run.stderr)")
        #expect(rig.liveLedgerIDs() == Set(whole.map(\.id)))
        #expect(rig.count("device_consumption_ledgers", ["superseded_by": ["$exists": false], "classroom": "MOVED-2"]) == whole.count)
        let again = try WorkerProcess.runToCompletion(["rebuild-ledger", "--esp32-name", "lab-102", "--window", "4"], environment: environment)
        #expect(again.stdout.contains("0 entries inserted, 0 superseded"), "\(again.stdout) \(again.stderr)")
        #expect(rig.liveLedgerIDs() == Set(whole.map(\.id)))
        // The lease is given back, and the live worker goes on from the rebuilt tail.
        let next = [("lab-102", 3_000, energy + 50)]
        let restarted = try rig.startWorker(extra: ["AUTOVOLT_DEVICES": registryFile.path])
        try rig.publisher().publish(next.map { telemetryPayload($0.0, second: $0.1, energy: $0.2) })
        let all = ledgerReadings + [LedgerReading(eventHash: EventHash.compute(esp32Name: "lab-102", timestampAsSent: String(baseTime + 3_000), energyWhTotal: energy + 50),
                                                  time: EpochMillis(baseTime + 3_000) * 1000, energyWh: energy + 50, bootID: "b1")]
        var calendar2 = LocalCalendar(timeZone: TimeZone(identifier: "Asia/Kolkata")!)
        #expect(rig.waitForLedger(Set(LedgerDeriver.derive(all, device: moved, calendar: &calendar2).map(\.id))))
        #expect(restarted.stop() == 0)
    }

    @Test func aTrailingDipSettlesAsAResetAfterTheTimeout() throws {
        let rig = try Rig()
        // 12 s: the first step must still see the dip waiting, on a loaded machine too.
        try rig.startWorker(extra: ["AUTOVOLT_DIP_TIMEOUT": "12s"])
        // The dip is "now" (baseTime is an hour ago): it waits for the next reading, then times out.
        let nowSecond = Int(Date().timeIntervalSince1970.rounded(.up)) - baseTime
        let readings: [(device: String, second: Int, energy: Double)] = [
            ("lab-101", nowSecond - 60, 1000), ("lab-101", nowSecond - 30, 1010), ("lab-101", nowSecond, 4),
        ]
        try rig.publisher().publish(readings.map { telemetryPayload($0.device, second: $0.second, energy: $0.energy) })
        // All three stored and all processed: "none unprocessed" alone also holds before anything is stored.
        #expect(eventually(timeout: 10) {
            rig.count("telemetry_events") == readings.count && rig.count("telemetry_events", ["processed": false]) == 0
        })
        #expect(rig.count("device_consumption_ledgers") == 1, "the dip did not wait")
        let settled = rig.waitForLedger(expectedEntries(readings), timeout: 60)
        #expect(settled)
        #expect(rig.count("device_consumption_ledgers", ["is_reset_marker": true]) == 1)
    }

    @Test func twoWorkersInOneShareGroupGiveTheSameLedgerAsOne() throws {
        let rig = try Rig()
        try rig.startWorker(extra: ["AUTOVOLT_MQTT_SHARE_GROUP": "ledger", "AUTOVOLT_MQTT_CLIENT_ID": "w-a-\(rig.clientID)"])
        try rig.startWorker(extra: ["AUTOVOLT_MQTT_SHARE_GROUP": "ledger", "AUTOVOLT_MQTT_CLIENT_ID": "w-b-\(rig.clientID)",
                                    "AUTOVOLT_STATE_DIR": rig.stateDirectory.path + "-b"])
        var readings: [(device: String, second: Int, energy: Double)] = []
        for device in ["lab-101", "lab-102"] {
            for i in 0..<120 { readings.append((device, i * 30, 100 + Double(i * 2) + (i == 50 ? -90 : 0))) }
        }
        try rig.publisher().publish(readings.map { telemetryPayload($0.device, second: $0.second, energy: $0.energy) })
        let expected = expectedEntries(readings)
        let converged = rig.waitForLedger(expected, timeout: 120)
        #expect(converged, "live \(rig.liveLedgerIDs().count) of \(expected.count)")
        let logs = rig.workers.map(\.log)
        #expect(logs.allSatisfy { $0.contains("MQTT connected") })
    }
}

final class LockedBox<T: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: T
    init(_ value: T) { stored = value }
    var value: T {
        get { lock.withLock { stored } }
        set { lock.withLock { stored = newValue } }
    }
}
