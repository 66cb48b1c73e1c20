import AutoVoltCore
import AutoVoltMongo
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Testing

/// The alarms collection and its event log against the wire-protocol server: an event is stored
/// exactly once whatever fails between an alarm's write and its event's (kill -9, a lost answer
/// and a retry, two publishers), in the order the alarm changed.
@Suite("alarm store: events that cannot be lost")
struct AlarmStoreTests {
    let t0: EpochMillis = 1_796_300_000_000

    @Test func anEventIsStoredOnceWhateverFailsBetweenTheAlarmAndItsEvent() throws {
        let mongo = try DevMongoServer()
        defer { mongo.stop() }
        let client = try MongoClient(uri: mongo.uri(database: "alarms_\(UUID().uuidString.prefix(6))"))
        try Schema.ensure(on: client)
        let store = AlarmStore(client: client, writeConcern: .acknowledged)
        let rule = AlarmRule(name: "hot", kind: .overPower, severity: .high, thresholdW: 2000)
        let raise = AlarmBook.Change(kind: .raise, rule: rule, esp32Name: "lab-1", classroom: "CSE-301", at: t0, value: 2500)
        func events() throws -> [(id: Int64, type: String)] {
            try client.find(AlarmStore.events, filter: [:], sort: ["_id": 1], limit: 100).compactMap { doc in
                guard let id = doc["_id"]?.int64Value, let type = doc["type"]?.stringValue else { return nil }
                return (id, type)
            }
        }

        // The raise is stored, then the worker dies before its event: the alarm says so.
        let record = try #require(try store.raise(raise))
        #expect(try events().isEmpty && store.unpublishedAlarmIDs(limit: 10) == [record.id])
        // A retry of the same raise (its answer lost) is this raise, not "another worker's".
        #expect(try store.raise(raise)?.id == record.id)
        // A raise of a different moment meets the active one: nil.
        #expect(try store.raise(AlarmBook.Change(kind: .raise, rule: rule, esp32Name: "lab-1", classroom: "CSE-301", at: t0 + 1, value: 2600)) == nil)
        // The timer's sweep publishes it, once.
        #expect(try store.publish(alarmID: record.id).map(\.type) == ["raise"])
        #expect(try store.publish(alarmID: record.id).isEmpty)
        #expect(try events().map(\.type) == ["raise"] && store.unpublishedAlarmIDs(limit: 10).isEmpty)
        // Died after storing the event, before taking it off the list: published again, stored once.
        _ = try client.updateOne(AlarmStore.alarms, filter: ["_id": .string(record.id)], update: ["$push": ["unpublished": "raise"]],
                                 upsert: false, writeConcern: .acknowledged)
        #expect(try store.publish(alarmID: record.id).isEmpty)
        #expect(try events().count == 1 && store.unpublishedAlarmIDs(limit: 10).isEmpty)

        // An ack publishes its own event; a second ack changes nothing.
        guard case .acknowledged(let acked, let published) = try store.acknowledge(id: record.id, by: "facilities", at: t0 + 10_000) else {
            Issue.record("not acknowledged"); return
        }
        #expect(acked.acknowledgedBy == "facilities" && published.map(\.type) == ["ack"])
        guard case .already = try store.acknowledge(id: record.id, by: "someone", at: t0 + 11_000) else { Issue.record("acknowledged twice"); return }

        // A clear decided from a reading older than the raise (another worker's late one) leaves it alone.
        #expect(try store.clear(rule: "hot", esp32Name: "lab-1", at: t0 - 1, value: 100) == nil)
        let clear = AlarmBook.Change(kind: .clear, rule: rule, esp32Name: "lab-1", classroom: "CSE-301", at: t0 + 20_000, value: 900)
        #expect(try store.clear(clear)?.status == "cleared")
        // The clear's retry (its answer lost) is still this clear.
        #expect(try store.clear(clear)?.id == record.id)
        #expect(try store.publish(alarmID: record.id).map(\.type) == ["clear"])
        let log = try events()
        #expect(log.map(\.type) == ["raise", "ack", "clear"] && log.map(\.id) == log.map(\.id).sorted(), "\(log)")
        #expect(try store.events(after: 0, limit: 10).last?.alarm.status == "cleared")
    }
}
