import AutoVoltMongo
import AutoVoltTestSupport
import Foundation
import Testing

/// The fail point helpers of `DevMongoServer` (docs/dev-mongo.md, "Fail points") against a real
/// `scripts/dev-mongo`, through `MongoClient` as the worker uses it. One server per test.
@Suite(.serialized) final class DevMongoFailPointTests {
    let server: DevMongoServer
    let client: MongoClient

    init() throws {
        server = try DevMongoServer()
        client = try MongoClient(uri: server.uri(database: "failpoints"))
    }

    deinit {
        client.close()
        server.stop()
    }

    private func insert(_ docs: [BSONDocument], into collection: String = "events",
                        ordered: Bool = true) throws(MongoError) -> InsertManyResult {
        try client.insertMany(docs, into: collection, ordered: ordered, writeConcern: .acknowledged)
    }

    @Test func failCommandTimesFailsTheNextCommandsThenTurnsItselfOff() throws {
        try server.failCommand(["insert"], mode: .times(3), errorCode: 91, errorLabels: ["RetryableWriteError"])
        for _ in 0..<3 {
            let error = #expect(throws: MongoError.self) { try self.insert([["a": 1]]) }
            #expect(error?.kind == .server(code: 91))
            #expect(error?.errorLabels.contains("RetryableWriteError") == true)
            #expect(error?.isTransient == true)
        }
        #expect(try insert([["a": 2]]).insertedCount == 1)
        #expect(try client.countDocuments("events", filter: [:]) == 1)
    }

    @Test func failCommandSkipLetsSomeThroughThenFailsEveryOne() throws {
        let before = try server.failCommand(["ping"], mode: .skip(1), errorCode: 2)
        try client.ping()
        for _ in 0..<2 {
            let error = #expect(throws: MongoError.self) { try self.client.ping() }
            #expect(error?.kind == .server(code: 2))
        }
        try server.clearFailPoints()
        try client.ping()
        #expect(try server.configureFailPoint("failCommand", mode: .off, data: [:]) - before == 2)
    }

    @Test func writeConcernErrorIsReportedAfterTheWriteIsApplied() throws {
        try server.failCommand(["insert", "update"], mode: .alwaysOn, writeConcernError: .timeout)
        let error = #expect(throws: MongoError.self) { try self.insert([["_id": "x", "n": 0]]) }
        #expect(error?.kind == .writeConcern)
        #expect(error?.code == 64)
        let again = #expect(throws: MongoError.self) {
            try self.client.updateOne("events", filter: ["_id": "x"], update: ["$inc": ["n": 1]], upsert: false,
                                      writeConcern: .majority(journal: false, timeoutMS: 1000))
        }
        #expect(again?.isWriteConcernFailure == true)
        try server.clearFailPoints()
        #expect(try client.findOne("events", filter: ["_id": "x"])?["n"]?.intValue == 1)  // both applied
    }

    @Test func blockTimeMSDelaysThenRunsAndCloseConnectionDropsTheSocket() throws {
        _ = try insert([["a": 1]])
        try server.failCommand(["aggregate"], mode: .times(1), blockTimeMS: 400)
        let started = Date()
        #expect(try client.countDocuments("events", filter: [:]) == 1)
        #expect(Date().timeIntervalSince(started) >= 0.38)

        try server.failCommand(["insert"], mode: .times(1), closeConnection: true)
        let error = #expect(throws: MongoError.self) { try self.insert([["a": 2]]) }
        #expect(error?.kind == .connection)
        #expect(try insert([["a": 3]]).insertedCount == 1)
        #expect(try client.countDocuments("events", filter: [:]) == 2)  // the dropped one never ran
    }

    @Test func countDocumentsIsAnAggregateAndTheEstimateACount() throws {
        _ = try insert([["a": 1]])
        try server.failCommand(["count"], mode: .alwaysOn, errorCode: 2, namespace: "failpoints.events")
        #expect(try client.countDocuments("events", filter: [:]) == 1)
        #expect(throws: MongoError.self) { try self.client.estimatedDocumentCount("events") }
        try server.failCommand(["aggregate"], mode: .alwaysOn, errorCode: 2)
        #expect(throws: MongoError.self) { try self.client.countDocuments("events", filter: [:]) }
    }

    @Test func appNameLimitsFailCommandToThatClient() throws {
        try server.failCommand(["ping"], mode: .alwaysOn, errorCode: 6, appName: "other-app")
        try client.ping()  // autovolt-worker
        let other = try MongoClient(uri: server.uri(database: "failpoints"), appName: "other-app")
        defer { other.close() }
        #expect(throws: MongoError.self) { try other.ping() }
        try server.clearFailPoints()
        try other.ping()
    }

    @Test func clearFailPointsGetsThroughEvenWhenHelloIsFailing() throws {
        try server.failCommand(["hello", "isMaster", "ping"], mode: .alwaysOn, closeConnection: true)
        try server.failDocuments(code: 121)
        try server.clearFailPoints()  // its own socket: no handshake to fail
        try client.ping()
        #expect(try insert([["a": 1]]).insertedCount == 1)
    }

    @Test func failDocumentsRefusesOneDocumentOfABatch() throws {
        try server.failDocuments(collection: "telemetry_events", match: ["esp32_name": "lab-1"], code: 999,
                                 mode: .times(1))
        let result = try insert([["esp32_name": "lab-0"], ["esp32_name": "lab-1"], ["esp32_name": "lab-1"]],
                                into: "telemetry_events", ordered: false)
        #expect(result.insertedCount == 2)  // times(1): the second lab-1 got through
        #expect(result.writeErrors.map(\.index) == [1])
        #expect(result.writeErrors.first?.code == 999)
    }

    @Test func raceUpsertsLosesToAnIdenticalUpsert() throws {
        try client.createIndexes("devices", [IndexModel(keys: ["name": 1], name: "name_1", unique: true)])
        // Filter = exactly the unique index's fields: mongod retries the loser as an update.
        try server.raceUpserts(collection: "devices", mode: .times(1))
        let retried = try client.updateOne("devices", filter: ["name": "a"], update: ["$inc": ["n": 1]], upsert: true,
                                           writeConcern: .acknowledged)
        #expect(retried.matchedCount == 1)
        #expect(retried.upsertedID == nil)
        #expect(try client.findOne("devices", filter: ["name": "a"])?["n"]?.intValue == 2)
        // A filter with more fields: the loser gets E11000.
        try server.raceUpserts(collection: "devices", match: ["name": "b"])
        let error = #expect(throws: MongoError.self) {
            try self.client.updateOne("devices", filter: ["name": "b", "open": true], update: ["$set": ["n": 1]],
                                      upsert: true, writeConcern: .acknowledged)
        }
        #expect(error?.isDuplicateKey == true)
        #expect(try client.countDocuments("devices", filter: ["name": "b"]) == 1)  // the winner's
    }

    @Test func runTTLMonitorExpiresAsOfTheGivenTime() throws {
        let day: TimeInterval = 86_400
        try client.createIndexes("telemetry_events", [
            IndexModel(keys: ["received_at": 1], name: "received_at_ttl", expireAfterSeconds: 730 * 86_400),
        ])
        let now = Date()
        _ = try insert([["_id": "old", "received_at": .datetime(now - 731 * day)],
                        ["_id": "recent", "received_at": .datetime(now - day)]], into: "telemetry_events")
        #expect(try server.runTTLMonitor() == 1)
        #expect(try client.countDocuments("telemetry_events", filter: [:]) == 1)
        #expect(try server.runTTLMonitor(now: now + 730 * day) == 1)
        #expect(try client.countDocuments("telemetry_events", filter: [:]) == 0)
    }
}
