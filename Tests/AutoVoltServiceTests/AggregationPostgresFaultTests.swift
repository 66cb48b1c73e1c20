import AutoVoltCore
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Testing

/// The aggregation stage on a PostgreSQL server that crashes (`pg_ctl restart -m immediate`):
/// the call that meets the crash fails with an error the stage retries, the retry succeeds on
/// new connections, and no version is lost or doubled, no dirty mark lost.
@Suite("aggregation on PostgreSQL: a server crash", .serialized)
struct AggregationPostgresFaultTests {
    typealias Rig = AggregationStorageRig

    @Test func aCrashedServerIsWaitedOutAndNothingIsLostOrDoubled() throws {
        let rig = try Rig(.postgres)
        let server = try #require(rig.postgres)
        try rig.storage.insertTariff(Tariff(id: "t", costPerKwh: 10, currency: "INR", effectiveFrom: 0, classroom: nil, createdAt: 0))
        try rig.entry("lab-101", Rig.day5 + Rig.hour, Rig.day5 + 2 * Rig.hour, 300)
        try rig.entry("lab-201", Rig.day5 + Rig.hour, Rig.day5 + 2 * Rig.hour, 100)
        #expect(try rig.store.processDirtyDays(now: Rig.later) == 2)

        try server.restart(mode: "immediate")
        // The pool's idle connections died with the server: the stage's loop retries what is transient.
        // The first statement on a dead connection fails; the next borrower connects afresh.
        try retryingTransient { try rig.entry("lab-101", Rig.day5 + 2 * Rig.hour, Rig.day5 + 3 * Rig.hour, 50) }
        var processed: Int?
        var failures: [StorageDisposition] = []
        for _ in 0..<10 where processed == nil {
            do {
                processed = try rig.store.processDirtyDays(now: Rig.later + 1)
            } catch {
                failures.append(storageDisposition(of: error))
                Thread.sleep(forTimeInterval: 0.2)
            }
        }
        #expect(processed == 1)
        #expect(failures.allSatisfy { $0 == .transient }, "\(failures)")
        #expect(try rig.dirtyMarkCount() == 0)
        let day = try #require(try rig.daily("lab-101", "2026-11-05"))
        #expect(day.version == 2 && day.figures.energyWh == 350 && day.figures.cost == 3.5)
        #expect(try rig.history("2026-11-05|lab-101").map(\.version) == [1])
        #expect(try rig.monthly("lab-101", "2026-11")?.version == 2)
        #expect(try rig.daily("lab-201", "2026-11-05")?.version == 1)

        // The server gone between the writes and the clearing of the marks: the day is recomputed
        // again (a new version with the same figures), never skipped.
        try rig.entry("lab-201", Rig.day5 + 2 * Rig.hour, Rig.day5 + 3 * Rig.hour, 25)
        rig.store.beforeVersionedWrite = nil
        var crashed = false
        rig.store.beforeVersionedWrite = {
            guard !crashed else { return }
            crashed = true
            // After the daily write of this call is read, before the monthly one: the crash
            // interrupts the call, the marks stay.
            try? server.restart(mode: "immediate")
        }
        var outcome: Int?
        for _ in 0..<10 where outcome == nil {
            do {
                outcome = try rig.store.processDirtyDays(now: Rig.later + 2)
            } catch {
                failures.append(storageDisposition(of: error))
                Thread.sleep(forTimeInterval: 0.2)
            }
        }
        #expect(!failures.isEmpty && failures.allSatisfy { $0 == .transient }, "\(failures)")
        rig.store.beforeVersionedWrite = nil
        #expect(crashed && outcome == 1)
        #expect(try retryingTransient { try rig.dirtyMarkCount() } == 0)
        let other = try #require(try rig.daily("lab-201", "2026-11-05"))
        #expect(other.figures.energyWh == 125 && other.figures.cost == 1.25)
        let history = try rig.history("2026-11-05|lab-201").map(\.version)
        #expect(history == Array(1..<other.version), "versions \(other.version), history \(history)")
        #expect(try rig.monthly("lab-201", "2026-11")?.figures.energyWh == 125)
    }
}
