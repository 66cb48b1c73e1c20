import AutoVoltJournal
import Foundation
import Testing

func temporaryDirectory() -> String {
    let path = NSTemporaryDirectory() + "autovolt-journal-\(UUID().uuidString)"
    try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

@Suite("journal")
struct JournalTests {
    @Test func appendReadRemoveInOrder() throws {
        let journal = try Journal(directory: temporaryDirectory())
        for i in 0..<10 {
            try journal.append(topic: "autovolt/d\(i)/telemetry", payload: Array("p\(i)".utf8), receivedAt: Int64(i), retained: i == 3)
        }
        #expect(journal.pendingRecords == 10)
        let first = try journal.read(limit: 4)
        #expect(first.map(\.topic) == (0..<4).map { "autovolt/d\($0)/telemetry" })
        #expect(first[3].retained)
        #expect(first[2].payload == Array("p2".utf8))
        try journal.remove(through: first[3].id)
        #expect(journal.pendingRecords == 6)
        let rest = try journal.read(limit: 100)
        #expect(rest.count == 6)
        #expect(rest.first?.receivedAt == 4)
    }

    @Test func recordsSurviveReopeningAndIdsNeverRepeat() throws {
        let directory = temporaryDirectory()
        var lastID: Int64 = 0
        do {
            let journal = try Journal(directory: directory)
            for i in 0..<5 { lastID = try journal.append(topic: "t", payload: [UInt8(i)], receivedAt: 1, retained: false) }
            try journal.remove(through: lastID - 2)
            journal.close()
        }
        let reopened = try Journal(directory: directory)
        #expect(reopened.pendingRecords == 2)
        #expect(try reopened.read(limit: 10).map(\.payload) == [[3], [4]])
        try reopened.remove(through: lastID)
        let next = try reopened.append(topic: "t", payload: [9], receivedAt: 1, retained: false)
        #expect(next > lastID)
    }

    @Test func emptyAndBinaryPayloadsAreKeptExactly() throws {
        let journal = try Journal(directory: temporaryDirectory())
        try journal.append(topic: "t", payload: [], receivedAt: 1, retained: false)
        try journal.append(topic: "t", payload: [0, 0xFF, 0xFE, 10], receivedAt: 2, retained: false)
        let records = try journal.read(limit: 10)
        #expect(records.map(\.payload) == [[], [0, 0xFF, 0xFE, 10]])
    }

    @Test func reportsFullAtItsCap() throws {
        let journal = try Journal(directory: temporaryDirectory(), maxBytes: 64 * 1024)
        #expect(!journal.isFull)
        let payload = [UInt8](repeating: 65, count: 1000)
        for _ in 0..<200 { try journal.append(topic: "t", payload: payload, receivedAt: 1, retained: false) }
        #expect(journal.isFull)
        try journal.remove(through: Int64.max)
        #expect(!journal.isFull)
        #expect(journal.pendingRecords == 0)
    }

    @Test func unwritableDirectoryIsAClearError() {
        #expect(throws: JournalError.self) { try Journal(directory: "/proc/autovolt-cannot-write-here") }
    }

    @Test func stagedMessagesAreInvisibleUntilCommittedThenInOrder() throws {
        let directory = temporaryDirectory()
        do {
            let journal = try Journal(directory: directory)
            try journal.append(topic: "autovolt/a/telemetry", payload: Array("first".utf8), receivedAt: 1, retained: false)
            for i in 0..<3 {
                Array("p\(i)".utf8).withUnsafeBytes {
                    journal.stage(topic: "autovolt/d\(i)/status", payload: $0, receivedAt: Int64(10 + i), retained: i == 1)
                }
            }
            [UInt8]().withUnsafeBytes { journal.stage(topic: "", payload: $0, receivedAt: 20, retained: false) }
            #expect(journal.stagedCount == 4)
            #expect(journal.pendingRecords == 1)
            #expect(try journal.read(limit: 10).count == 1)
            try journal.commitStaged()
            #expect(journal.stagedCount == 0)
            #expect(journal.pendingRecords == 5)
            try journal.commitStaged()          // nothing staged: no-op
            journal.close()
        }
        // Committed means on disk: a new connection sees the batch.
        let reopened = try Journal(directory: directory)
        let records = try reopened.read(limit: 10)
        #expect(records.map(\.topic) == ["autovolt/a/telemetry", "autovolt/d0/status", "autovolt/d1/status", "autovolt/d2/status", ""])
        #expect(records.map(\.payload) == [Array("first".utf8), Array("p0".utf8), Array("p1".utf8), Array("p2".utf8), []])
        #expect(records.map(\.receivedAt) == [1, 10, 11, 12, 20])
        #expect(records.map(\.retained) == [false, false, true, false, false])
    }

    @Test func stagedMessagesThatWereNeverCommittedAreNotInTheJournal() throws {
        let directory = temporaryDirectory()
        do {
            let journal = try Journal(directory: directory)
            [UInt8](repeating: 1, count: 3).withUnsafeBytes { journal.stage(topic: "t", payload: $0, receivedAt: 1, retained: false) }
            journal.close()
        }
        #expect(try Journal(directory: directory).pendingRecords == 0)
    }
}
