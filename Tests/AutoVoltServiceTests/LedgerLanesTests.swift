import AutoVoltCore
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Synchronization
import Testing

/// `LedgerStage.runInLanes`: a round's batches stepped on two threads at once, each once.
@Suite("ledger lanes")
struct LedgerLanesTests {
    struct Planted: Error {}

    @Test("every batch runs once, two at a time, and whether any progressed comes back")
    func everyBatchOnceTwoAtATime() throws {
        let ran = Mutex<[Int]>([])
        // The first two batches each wait for the other to have started: with one lane they
        // would wait out the timeout instead.
        let started = [DispatchSemaphore(value: 0), DispatchSemaphore(value: 0)]
        let metInTime = Mutex(true)
        let progressed = try LedgerStage.runInLanes(Array(0..<9), lanes: 2, stopping: { false }) { batch in
            if batch < 2 {
                started[batch].signal()
                if started[1 - batch].wait(timeout: .now() + 10) == .timedOut { metInTime.withLock { $0 = false } }
            }
            ran.withLock { $0.append(batch) }
            return batch == 7
        }
        #expect(progressed)
        #expect(metInTime.withLock { $0 }, "the first two batches did not run at the same time")
        #expect(ran.withLock { $0 }.sorted() == Array(0..<9))
        #expect(try !LedgerStage.runInLanes(Array(0..<3), lanes: 2, stopping: { false }) { _ in false })
        #expect(try !LedgerStage.runInLanes([Int](), lanes: 2, stopping: { false }) { _ in true })
    }

    @Test("after an error no lane takes another batch, and the error is thrown once both lanes stopped")
    func anErrorStopsTheRound() throws {
        // One lane: exactly the batches up to the failing one.
        let ran = Mutex<[Int]>([])
        #expect(throws: Planted.self) {
            try LedgerStage.runInLanes(Array(0..<50), lanes: 1, stopping: { false }) { batch in
                ran.withLock { $0.append(batch) }
                if batch == 3 { throw Planted() }
                return true
            }
        }
        #expect(ran.withLock { $0 } == [0, 1, 2, 3])
        // Two lanes: the other lane's batch in flight finishes before the error comes back.
        let finished = Mutex<Set<Int>>([])
        let started = DispatchSemaphore(value: 0), failing = DispatchSemaphore(value: 0)
        #expect(throws: Planted.self) {
            try LedgerStage.runInLanes([0, 1, 2], lanes: 2, stopping: { false }) { batch in
                if batch == 0 {
                    _ = started.wait(timeout: .now() + 10) // batch 1 is under way in the other lane
                    failing.signal()
                    throw Planted()
                }
                if batch == 1 {
                    started.signal()
                    _ = failing.wait(timeout: .now() + 10)
                }
                finished.withLock { _ = $0.insert(batch) }
                return true
            }
        }
        // Batch 1 was finished, not abandoned; batch 2 may or may not have been taken after it
        // (whether the error was recorded by then is the lanes' race), never before 0 failed.
        #expect(finished.withLock { $0 }.contains(1))
        let none = try LedgerStage.runInLanes(Array(0..<5), lanes: 2, stopping: { true }) { _ in true }
        #expect(!none)
    }

    @Test("devices stepped in two lanes get the ledger derived from scratch", arguments: StorageBackend.allCases)
    func twoLanesDeriveTheLedger(_ backend: StorageBackend) throws {
        typealias C = LedgerStorageConformanceTests
        let db = try C.LedgerDB(backend)
        let devices = (1...6).map { DeviceInfo(esp32Name: "lab-10\($0)", classroom: "CSE-30\($0)") }
        let store = db.store(devices)
        let t = C.day5 + 8 * C.hour
        var stored: [String: [LedgerReading]] = [:]
        for (n, device) in devices.enumerated() {
            var energy = 100.0 * Double(n)
            let readings = (0..<40).map { i -> LedgerReading in
                energy = i == 20 ? 2 : energy + Double(n + 1) // a reset halfway
                return C.reading(t + EpochMillis(i) * C.minute, energy)
            }
            stored[device.esp32Name] = try db.insert(device, readings, receivedAt: t + 41 * C.minute)
        }
        let now = t + 42 * C.minute
        let batches = stride(from: 0, to: devices.count, by: 2).map { devices[$0..<$0 + 2].map(\.esp32Name) }
        let progressed = try LedgerStage.runInLanes(batches, lanes: 2, stopping: { false }) { batch in
            try store.step(batch, now: now).values.contains { if case .done = $0 { true } else { false } }
        }
        #expect(progressed)
        for device in devices {
            #expect(try db.live(device.esp32Name) == C.fromScratch(stored[device.esp32Name] ?? [], device: device, now: now).map(C.Row.init))
        }
        #expect(try db.unprocessed() == 0)
    }
}
