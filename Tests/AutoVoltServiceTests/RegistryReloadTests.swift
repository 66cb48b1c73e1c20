import AutoVoltMongo
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Testing

/// Issue 9, section 5: SIGHUP reloads the device registry; a bad file is refused and the registry
/// in force stays; rebuild-ledger applies the registry to history.
@Suite("integration: registry reload", .serialized)
struct RegistryReloadTests {
    func registry(_ classroom: String) -> String {
        """
        [[device]]
        esp32_name = "lab-900"
        classroom = "\(classroom)"
        """
    }

    @Test func sighupReloadsTheRegistryAndABadFileKeepsTheOldOne() throws {
        let rig = try Rig()
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("devices-\(UUID().uuidString).toml")
        try registry("R-OLD").write(to: file, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(at: file) }
        let worker = try rig.startWorker(extra: ["AUTOVOLT_DEVICES": file.path])
        let publisher = try rig.publisher()
        try publisher.publish([reading("lab-900", 1)])
        #expect(rig.waitForCount(Collections.telemetryEvents, 1, filter: ["classroom": "R-OLD"]))

        try registry("R-NEW").write(to: file, atomically: true, encoding: .utf8)
        let pid = try #require(worker.pid)
        kill(pid, SIGHUP)
        #expect(eventually { worker.log.contains("device registry reloaded") }, "\(worker.log)")
        try publisher.publish([reading("lab-900", 2)])
        #expect(rig.waitForCount(Collections.telemetryEvents, 1, filter: ["classroom": "R-NEW"]))

        try "[[device]]\nesp32_name = \"lab-900\"\n".write(to: file, atomically: true, encoding: .utf8)
        kill(pid, SIGHUP)
        #expect(eventually { worker.log.contains("device registry not reloaded") }, "\(worker.log)")
        let refusal = worker.log.components(separatedBy: "\n").first { $0.contains("device registry not reloaded") } ?? ""
        #expect(refusal.contains("classroom"), "\(refusal)")
        try publisher.publish([reading("lab-900", 3)])
        #expect(rig.waitForCount(Collections.telemetryEvents, 2, filter: ["classroom": "R-NEW"]))
        #expect(worker.isRunning)

        // History keeps its classroom until rebuild-ledger applies the registry in force to it.
        #expect(rig.waitForCount(Collections.ledgers, 2))
        try registry("R-REBUILT").write(to: file, atomically: true, encoding: .utf8)
        var env = rig.environment
        env["AUTOVOLT_DEVICES"] = file.path
        let run = try WorkerProcess.runToCompletion(["rebuild-ledger", "--esp32-name", "lab-900"], environment: env)
        #expect(run.status == 0, "\(run.stderr)")
        #expect(rig.count(Collections.ledgers, ["classroom": "R-REBUILT"]) > 0, "\(run.stdout)")
    }
}
