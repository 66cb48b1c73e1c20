import AutoVoltCore
import AutoVoltMongo
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Testing

extension IntegrationTests {
    /// A simulated campus day through the real pipeline: `simulate capture`, `replay`,
    /// `rebuild-ledger`, `recalculate`, then `simulate check` finds no difference between what
    /// was billed and the truth; one ledger entry changed by half a watt-hour, and it finds it.
    @Test func aSimulatedCampusDayIsBilledExactlyAsItsTruthSays() throws {
        let rig = try Rig()
        let out = rig.stateDirectory.deletingLastPathComponent().appendingPathComponent("sim-\(UUID().uuidString.prefix(8))")
        defer { try? FileManager.default.removeItem(at: out) }
        let capture = try WorkerProcess.runToCompletion(
            ["simulate", "capture", "--devices", "8", "--start", "2026-11-02", "--days", "1", "--seed", "11", "--out", out.path],
            environment: rig.environment)
        #expect(capture.status == 0, "\(capture.stderr)")
        var environment = rig.environment
        environment["AUTOVOLT_DEVICES"] = out.appendingPathComponent("devices.toml").path
        environment["AUTOVOLT_LOG_LEVEL"] = "warning"
        for step in [["replay", out.appendingPathComponent("capture.txt").path], ["rebuild-ledger"],
                     ["recalculate", "--start", "2026-11-02", "--end", "2026-11-03"]] {
            let run = try WorkerProcess.runToCompletion(step, environment: environment, timeout: 300)
            #expect(run.status == 0, "\(step): \(run.stderr)")
        }
        let truth = out.appendingPathComponent("truth.json").path
        let check = try WorkerProcess.runToCompletion(["simulate", "check", truth], environment: environment)
        #expect(check.status == 0, "\(check.stdout)\n\(check.stderr)")
        #expect(check.stdout.contains("no differences"))
        #expect(check.stdout.contains("firmware_guide") && check.stdout.contains("contract_v1"))

        _ = try rig.client.updateOne(Collections.ledgers, filter: ["billable": true, "delta_wh": ["$gt": 1], "superseded_by": ["$exists": false]],
                                     update: ["$inc": ["delta_wh": 0.5]], upsert: false, writeConcern: .acknowledged)
        let tampered = try WorkerProcess.runToCompletion(["simulate", "check", truth], environment: environment)
        #expect(tampered.status == 1)
        #expect(tampered.stdout.contains("DIFFERENT") && tampered.stdout.contains("1 differences"), "\(tampered.stdout)")
    }
}
