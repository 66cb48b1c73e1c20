import AutoVoltMongo
import AutoVoltTestSupport
import Foundation
import Testing

/// Integration tests against `scripts/dev-mongo`, one server per test (serialized: the timing
/// assertions need a quiet machine).
@Suite(.serialized) final class MongoClientTests {
    let server: DevMongoServer
    let client: MongoClient

    init() throws {
        server = try DevMongoServer()
        client = try MongoClient(uri: server.uri(database: "autovolt_test"))
    }

    deinit {
        client.close()  // while the server is still up: libmongoc sends endSessions
        server.stop()
    }

    private let majority = WriteConcern.majority(journal: false, timeoutMS: 5000)

    @Test func pingAndHello() throws {
        try client.ping()
        let hello = try client.hello()
        #expect(hello["ok"]?.doubleValue == 1)
        #expect(hello["isWritablePrimary"]?.boolValue == true || hello["ismaster"]?.boolValue == true)
        #expect(try client.isReplicaSet == false)
        #expect(client.databaseName == "autovolt_test")
    }

    @Test func replicaSetNameShowsInHello() throws {
        let rs = try DevMongoServer(replicaSetName: "rs0")
        let c = try MongoClient(uri: rs.uri(database: "x") + "?directConnection=true")
        #expect(try c.isReplicaSet == true)
        #expect(try c.hello()["setName"] == "rs0")
    }

    @Test func databaseNameDefaultsWhenTheURIHasNoPath() throws {
        let c = try MongoClient(uri: "mongodb://127.0.0.1:\(server.port)")
        #expect(c.databaseName == "autovolt_power")
        try c.ping()
    }

    @Test func insertManyUnorderedReportsDuplicatesAsResults() throws {
        try client.createIndexes("events", [IndexModel(keys: ["event_hash": 1], name: "event_hash_unique", unique: true)])
        let first = try client.insertMany([["event_hash": "h0"]], into: "events", ordered: false, writeConcern: majority)
        #expect(first.insertedCount == 1 && first.writeErrors.isEmpty)

        let docs: [BSONDocument] = [
            ["event_hash": "h1"],
            ["event_hash": "h0"],  // exists already
            ["event_hash": "h2"],
            ["event_hash": "h1"],  // duplicate inside the batch
            ["event_hash": "h3"],
        ]
        let result = try client.insertMany(docs, into: "events", ordered: false, writeConcern: majority)
        #expect(result.insertedCount == 3)
        #expect(result.writeErrors.map(\.index) == [1, 3])
        #expect(result.writeErrors.allSatisfy { $0.isDuplicateKey })
        #expect(result.writeErrors.allSatisfy { $0.code == 11000 })
        #expect(try client.countDocuments("events", filter: [:]) == 4)

        // Ordered: stops at the first duplicate.
        let ordered = try client.insertMany([["event_hash": "h4"], ["event_hash": "h0"], ["event_hash": "h5"]],
                                            into: "events", ordered: true, writeConcern: .acknowledged)
        #expect(ordered.insertedCount == 1)
        #expect(ordered.writeErrors.map(\.index) == [1])
        #expect(try client.countDocuments("events", filter: ["event_hash": "h5"]) == 0)

        // Empty input does nothing.
        #expect(try client.insertMany([], into: "events", ordered: false, writeConcern: majority).insertedCount == 0)
    }

    @Test func uniqueCompoundIndex() throws {
        try client.createIndexes("daily", [IndexModel(keys: ["date": 1, "esp32_name": 1], name: "date_device", unique: true)])
        let r = try client.insertMany([
            ["date": "2026-11-01", "esp32_name": "lab-101"],
            ["date": "2026-11-01", "esp32_name": "lab-102"],
            ["date": "2026-11-02", "esp32_name": "lab-101"],
            ["date": "2026-11-01", "esp32_name": "lab-101"],
        ], into: "daily", ordered: false, writeConcern: .acknowledged)
        #expect(r.insertedCount == 3)
        #expect(r.writeErrors.count == 1 && r.writeErrors[0].index == 3 && r.writeErrors[0].isDuplicateKey)
        let names = try client.listIndexes("daily").compactMap { $0["name"]?.stringValue }
        #expect(names.contains("date_device"))
    }

    @Test func updateOneUpsertAndDuplicateKey() throws {
        try client.createIndexes("status", [IndexModel(keys: ["serial": 1], name: "serial_unique", unique: true)])
        let inserted = try client.updateOne("status", filter: ["esp32_name": "lab-101"],
                                            update: ["$set": ["serial": 1, "online": true]],
                                            upsert: true, writeConcern: majority)
        #expect(inserted.matchedCount == 0)
        #expect(inserted.upsertedID != nil)
        let updated = try client.updateOne("status", filter: ["esp32_name": "lab-101"],
                                           update: ["$set": ["online": false], "$inc": ["sessions": 1]],
                                           upsert: true, writeConcern: majority)
        #expect(updated.matchedCount == 1 && updated.modifiedCount == 1 && updated.upsertedID == nil)
        #expect(try client.findOne("status", filter: ["esp32_name": "lab-101"])?["sessions"]?.int64Value == 1)

        // An upsert that collides with the unique index throws a duplicate-key error.
        do {
            _ = try client.updateOne("status", filter: ["esp32_name": "lab-102"],
                                     update: ["$set": ["serial": 1]], upsert: true, writeConcern: majority)
            Issue.record("expected a duplicate key error")
        } catch {
            #expect(error.isDuplicateKey)
            #expect(error.kind == .server(code: 11000))
            #expect(!error.isTransient)
        }

        // An update without operators is refused before it reaches the server.
        do {
            _ = try client.updateOne("status", filter: [:], update: ["online": true], upsert: false, writeConcern: majority)
            Issue.record("expected an invalid argument error")
        } catch {
            #expect(error.kind == .invalidArgument)
        }

        let many = try client.updateMany("status", filter: [:], update: ["$set": ["checked": true]], writeConcern: majority)
        #expect(many.matchedCount == 1)
        #expect(try client.deleteMany("status", filter: ["esp32_name": "lab-101"], writeConcern: majority) == 1)
        #expect(try client.countDocuments("status", filter: [:]) == 0)
    }

    @Test func findWithSortLimitAndGetMore() throws {
        let docs: [BSONDocument] = (0..<250).map { ["n": .int64(Int64($0)), "even": .bool($0 % 2 == 0)] }
        #expect(try client.insertMany(docs, into: "many", ordered: true, writeConcern: majority).insertedCount == 250)

        let all = try client.find("many", filter: [:], sort: ["n": 1])  // > 101: needs getMore
        #expect(all.count == 250)
        #expect(all.map { $0["n"]?.int64Value ?? -1 } == (0..<250).map(Int64.init))

        let top = try client.find("many", filter: ["even": true], sort: ["n": -1],
                                  projection: ["n": 1, "_id": 0], limit: 3, skip: 1)
        #expect(top.map { $0["n"]?.int64Value } == [246, 244, 242])
        #expect(top.first?.keys == ["n"])
        #expect(try client.findOne("many", filter: ["n": ["$gte": 100]], sort: ["n": 1])?["n"] == 100)
        #expect(try client.findOne("many", filter: ["n": -1]) == nil)
        #expect(try client.countDocuments("many", filter: ["even": false]) == 125)
    }

    @Test func forEachBatchHandsTheCursorOverInBoundedBatches() throws {
        let docs: [BSONDocument] = (0..<250).map { ["n": .int64(Int64($0)), "even": .bool($0 % 2 == 0)] }
        _ = try client.insertMany(docs, into: "batches", ordered: true, writeConcern: majority)
        var sizes: [Int] = []
        var seen: [Int64] = []
        try client.forEachBatch("batches", filter: [:], sort: ["n": 1], projection: ["n": 1, "_id": 0], batchSize: 40) { batch in
            sizes.append(batch.count)
            seen += batch.compactMap { $0["n"]?.int64Value }
        }
        #expect(sizes == [40, 40, 40, 40, 40, 40, 10])
        #expect(seen == (0..<250).map(Int64.init))
        var none = 0
        try client.forEachBatch("batches", filter: ["n": -1]) { _ in none += 1 }
        #expect(none == 0, "no batch for no documents")
        // An error thrown by the closure ends the iteration and comes out.
        var calls = 0
        #expect(throws: MongoError.self) {
            try client.forEachBatch("batches", filter: [:], batchSize: 100) { (_) throws(MongoError) in
                calls += 1
                throw MongoError(kind: .invalidArgument, code: 0, domain: 0, message: "stop")
            }
        }
        #expect(calls == 1)
        var groups: [String] = []
        try client.aggregateBatches("batches", pipeline: [["$group": ["_id": "$even", "n": ["$sum": 1]]]], batchSize: 1) { batch in
            #expect(batch.count == 1)
            groups += batch.map { "\($0["_id"]?.boolValue ?? false)=\($0["n"]?.int64Value ?? 0)" }
        }
        #expect(groups.sorted() == ["false=125", "true=125"])
    }

    @Test func aggregateGroup() throws {
        let docs: [BSONDocument] = [
            ["room": "CSE-301", "wh": 10.5], ["room": "CSE-301", "wh": 4.5], ["room": "LAB-1", "wh": 1.0],
        ]
        _ = try client.insertMany(docs, into: "ledger", ordered: true, writeConcern: majority)
        let out = try client.aggregate("ledger", pipeline: [
            ["$group": ["_id": "$room", "total": ["$sum": "$wh"], "n": ["$sum": 1]]],
            ["$sort": ["_id": 1]],
        ])
        #expect(out.count == 2)
        #expect(out[0]["_id"] == "CSE-301")
        #expect(out[0]["total"]?.doubleValue == 15)
        #expect(out[0]["n"]?.int64Value == 2)
        #expect(out[1]["total"]?.doubleValue == 1)
    }

    @Test func findOneAndUpdate() throws {
        let none = try client.findOneAndUpdate("counters", filter: ["_id": "runs"], update: ["$inc": ["seq": 1]],
                                               upsert: false, returnNew: true, writeConcern: majority)
        #expect(none == nil)
        let created = try client.findOneAndUpdate("counters", filter: ["_id": "runs"], update: ["$inc": ["seq": 1]],
                                                  upsert: true, returnNew: true, writeConcern: majority)
        #expect(created?["seq"]?.int64Value == 1)
        let before = try client.findOneAndUpdate("counters", filter: ["_id": "runs"], update: ["$inc": ["seq": 1]],
                                                 upsert: false, returnNew: false, writeConcern: majority)
        #expect(before?["seq"]?.int64Value == 1)
        #expect(try client.findOne("counters", filter: ["_id": "runs"])?["seq"]?.int64Value == 2)

        _ = try client.insertMany([["q": "a", "p": 2], ["q": "a", "p": 1]], into: "queue", ordered: true, writeConcern: majority)
        let first = try client.findOneAndUpdate("queue", filter: ["q": "a"], update: ["$set": ["taken": true]],
                                                sort: ["p": 1], upsert: false, returnNew: true, writeConcern: majority)
        #expect(first?["p"]?.int64Value == 1 && first?["taken"] == true)
    }

    @Test func bulkWriteMixesOperationsAndReportsWriteErrors() throws {
        try client.createIndexes("bulk", [IndexModel(keys: ["k": 1], name: "k_unique", unique: true)])
        let result = try client.bulkWrite("bulk", operations: [
            .insertOne(["k": 1, "v": 1]),
            .insertOne(["k": 2, "v": 1]),
            .insertOne(["k": 1, "v": 2]),  // duplicate
            .updateOne(filter: ["k": 2], update: ["$set": ["v": 5]], upsert: false),
            .updateMany(filter: ["v": ["$gte": 0]], update: ["$set": ["seen": true]], upsert: false),
            .replaceOne(filter: ["k": 3], replacement: ["k": 3, "v": 3], upsert: true),
            .deleteOne(["k": 1]),
            .deleteMany(["k": ["$gt": 100]]),
        ], ordered: false, writeConcern: majority)
        #expect(result.insertedCount == 2)
        #expect(result.writeErrors.count == 1)
        #expect(result.writeErrors.first?.index == 2)
        #expect(result.writeErrors.first?.isDuplicateKey == true)
        #expect(result.upsertedCount == 1)
        #expect(result.upsertedIDs[5] != nil)
        #expect(result.deletedCount == 1)
        #expect(try client.find("bulk", filter: [:], sort: ["k": 1]).map { $0["k"]?.int64Value } == [2, 3])
    }

    @Test func indexesTTLAndCollections() throws {
        #expect(try client.listIndexes("nothing_here") == [])
        try client.createIndexes("rejected", [
            IndexModel(keys: ["received_at": 1], name: "ttl_30d", expireAfterSeconds: 30 * 86400),
            IndexModel(keys: ["topic": 1], name: "topic_partial",
                       partialFilterExpression: ["reason": ["$exists": true]]),
        ])
        // Creating the same indexes again is a no-op.
        try client.createIndexes("rejected", [
            IndexModel(keys: ["received_at": 1], name: "ttl_30d", expireAfterSeconds: 30 * 86400),
        ])
        let indexes = try client.listIndexes("rejected")
        let ttl = indexes.first { $0["name"] == "ttl_30d" }
        #expect(ttl?["expireAfterSeconds"]?.int64Value == 2_592_000)
        #expect(ttl?["key"]?.documentValue == ["received_at": .int32(1)] || ttl?["key"]?.documentValue == ["received_at": 1])
        #expect(indexes.contains { $0["name"] == "_id_" })
        #expect(try client.listCollectionNames().contains("rejected"))

        try client.dropCollection("rejected")
        try client.dropCollection("rejected")  // a missing collection is fine
        #expect(try !client.listCollectionNames().contains("rejected"))
    }

    /// The server's write error for an update statement (a validator refusing the updated
    /// document, a document grown past the size limit) is about that one document, as a bulk
    /// write's; the same code refusing the command as a whole is about the request, and a write
    /// concern error stays one.
    @Test func anUpdatesWriteErrorIsAboutItsDocument() throws {
        let wc = WriteConcern.acknowledged
        func update(many: Bool = false) throws(MongoError) {
            if many {
                _ = try client.updateMany("status", filter: ["_id": "a"], update: ["$set": ["x": 2]], writeConcern: wc)
            } else {
                _ = try client.updateOne("status", filter: ["_id": "a"], update: ["$set": ["x": 2]], upsert: true, writeConcern: wc)
            }
        }
        try update()
        try server.failDocuments(collection: "status", match: ["_id": "a"], code: 121, errmsg: "Document failed validation", mode: .times(1))
        #expect(throws: MongoError.self) { try update() }
        do { try update() } catch { Issue.record("the fail point fired once: \(error)") }
        try server.failDocuments(collection: "status", match: ["_id": "a"], code: 121, errmsg: "Document failed validation", mode: .times(1))
        do {
            try update()
            Issue.record("expected a write error")
        } catch {
            #expect(error.scope == .document && error.code == 121 && error.refusesDocument, "\(error)")
            #expect(error.message.contains("Document failed validation"), "\(error)")
        }
        try server.failDocuments(collection: "status", code: 17419, mode: .times(1))
        do {
            try update(many: true)
            Issue.record("expected a write error")
        } catch {
            #expect(error.scope == .document && error.code == 17419 && error.refusesDocument, "\(error)")
        }
        // The command refused as a whole: about the request, never a refused document.
        try server.failCommand(["update"], mode: .times(1), errorCode: 121)
        do {
            try update()
            Issue.record("expected a command error")
        } catch {
            #expect(error.scope == .request && error.code == 121 && !error.refusesDocument && error.disposition == .persistent, "\(error)")
        }
        try server.failCommand(["update"], mode: .times(1), writeConcernError: .timeout)
        do {
            try update()
            Issue.record("expected a write concern error")
        } catch {
            #expect(error.isWriteConcernFailure && error.isTransient && error.code == 64, "\(error)")
        }
        // A duplicate key of an upsert is still one.
        try server.failDocuments(collection: "status", code: 11000, mode: .times(1))
        do {
            try update()
            Issue.record("expected a duplicate key")
        } catch {
            #expect(error.isDuplicateKey && !error.refusesDocument, "\(error)")
        }
    }

    /// What proves that writes are acknowledged with their concern again: only writes that
    /// returned, on this thread; not a write concern error, not a read, not an empty write.
    @Test func acknowledgedWritesAreCountedOnTheirThread() throws {
        let wc = WriteConcern.acknowledged
        let tally = MongoClient.AcknowledgedWrites(), inner = MongoClient.AcknowledgedWrites()
        try MongoClient.countingAcknowledgedWrites(in: tally) { () throws in
            _ = try client.insertMany([["_id": 1]], into: "acks", ordered: false, writeConcern: wc)
            _ = try client.insertMany([["_id": 1]], into: "acks", ordered: false, writeConcern: wc)  // a duplicate: answered
            _ = try client.insertMany([], into: "acks", ordered: false, writeConcern: wc)  // nothing sent
            _ = try client.find("acks", filter: [:], limit: 10)
            _ = try client.bulkWrite("acks", operations: [.insertOne(["_id": 2])], ordered: false, writeConcern: wc)
            try MongoClient.countingAcknowledgedWrites(in: inner) { () throws(MongoError) in
                _ = try client.updateOne("acks", filter: ["_id": 1], update: ["$set": ["x": 1]], upsert: false, writeConcern: wc)
            }
            _ = try client.findOneAndUpdate("acks", filter: ["_id": 2], update: ["$set": ["x": 1]], upsert: false, returnNew: true, writeConcern: wc)
            _ = try client.deleteMany("acks", filter: ["_id": 2], writeConcern: wc)
            try server.failCommand(["insert"], mode: .times(1), writeConcernError: .timeout)
            #expect(throws: MongoError.self) { try client.insertMany([["_id": 3]], into: "acks", ordered: false, writeConcern: wc) }
        }
        #expect(tally.count == 6 && inner.count == 1, "\(tally.count) \(inner.count)")
        // Another thread's writes are not this one's.
        let other = MongoClient.AcknowledgedWrites()
        try MongoClient.countingAcknowledgedWrites(in: other) { () throws(MongoError) in
            let done = DispatchSemaphore(value: 0)
            let client = self.client
            Thread.detachNewThread {
                _ = try? client.insertMany([["_id": 4]], into: "acks", ordered: false, writeConcern: wc)
                done.signal()
            }
            done.wait()
        }
        #expect(other.count == 0)
        _ = try client.insertMany([["_id": 5]], into: "acks", ordered: false, writeConcern: wc)
        #expect(tally.count == 6)
    }

    @Test func serverErrorsCarryTheServerCode() throws {
        do {
            _ = try client.runCommand(["noSuchCommand": 1])
            Issue.record("expected a server error")
        } catch {
            guard case .server(let code) = error.kind else {
                Issue.record("unexpected \(error)")
                return
            }
            #expect(code == 59)  // CommandNotFound
            #expect(!error.message.isEmpty)
        }
    }

    @Test func killedServerFailsFastWithAConnectionErrorAndRecovers() throws {
        try client.ping()
        server.kill()
        // Each call gives up after server selection (5 s by default), not libmongoc's 30 s.
        // (The find's network error is retried once as a retryable read, hence the wait.)
        for attempt in 0..<2 {
            let start = Date()
            do {
                _ = try attempt == 0 ? client.find("anything", filter: [:]) : [client.hello()]
                Issue.record("expected a connection error")
            } catch {
                #expect(error.kind == .connection)
                #expect(error.isTransient)
                #expect(error.message.contains("No suitable servers found"))
            }
            #expect(Date().timeIntervalSince(start) < 7)
        }

        // The pool reconnects once the server is back on the same port.
        try server.restart()
        var recovered = false
        for _ in 0..<20 where !recovered {
            recovered = (try? client.ping()) != nil
            if !recovered { Thread.sleep(forTimeInterval: 0.25) }
        }
        #expect(recovered)
    }

    @Test func restartKeepsTheDataFile() throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("dev-mongo-\(UUID().uuidString).bson")
        defer { try? FileManager.default.removeItem(at: file) }
        let durable = try DevMongoServer(dataFile: file)
        let c = try MongoClient(uri: durable.uri(database: "d"))
        _ = try c.insertMany([["k": 1]], into: "kept", ordered: true, writeConcern: majority)
        let port = durable.port
        try durable.restart()
        #expect(durable.port == port)
        var docs: [BSONDocument]? = nil
        for _ in 0..<20 where docs == nil {
            docs = try? c.find("kept", filter: [:], projection: ["_id": 0])
            if docs == nil { Thread.sleep(forTimeInterval: 0.25) }
        }
        #expect(docs == [["k": .int64(1)]])
        c.close()
        durable.stop()
    }

    @Test func closedClientThrows() throws {
        client.close()
        client.close()
        #expect(throws: MongoError.self) { try client.ping() }
    }

    @Test func asyncExecutorRunsQueries() async throws {
        let executor = MongoExecutor(client: client, threads: 2)
        _ = try await executor.run { c throws(MongoError) in
            try c.insertMany([["x": 1], ["x": 2], ["x": 3]], into: "async", ordered: true, writeConcern: .acknowledged)
        }
        let counts = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<8 {
                group.addTask {
                    try await executor.run { c throws(MongoError) in try c.countDocuments("async", filter: [:]) }
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(counts == Array(repeating: 3, count: 8))
        do {
            _ = try await executor.run { c throws(MongoError) in try c.runCommand(["noSuchCommand": 1]) }
            Issue.record("expected a server error")
        } catch let error as MongoError {
            #expect(error.kind == .server(code: 59))
        }
        await executor.shutdown()
        await #expect(throws: MongoError.self) { try await executor.run { c throws(MongoError) in try c.ping() } }
    }
}

/// Tests that need no server.
@Suite struct MongoClientOfflineTests {
    @Test func invalidURIKeepsLibmongocsMessage() {
        do {
            _ = try MongoClient(uri: "http://127.0.0.1:27017/db")
            Issue.record("expected .invalidURI")
        } catch {
            #expect(error.kind == .invalidURI)
            #expect(error.message.contains("Invalid URI Schema"))
            #expect(!error.isTransient)
        }
        do {
            _ = try MongoClient(uri: "mongodb://127.0.0.1:notaport/db")
            Issue.record("expected .invalidURI")
        } catch {
            #expect(error.kind == .invalidURI)
            #expect(!error.message.isEmpty)
        }
    }

    @Test func noServerAtAllIsAConnectionError() throws {
        let c = try MongoClient(uri: "mongodb://127.0.0.1:\(freeTCPPort())/x?serverSelectionTimeoutMS=1500")
        let start = Date()
        do {
            try c.ping()
            Issue.record("expected a connection error")
        } catch {
            #expect(error.kind == .connection)
            #expect(error.isTransient)
        }
        #expect(Date().timeIntervalSince(start) < 4)  // the URI overrides the 5 s default
    }

    @Test func refusedOptionsFailBeforeAnyIO() throws {
        let c = try MongoClient(uri: "mongodb://127.0.0.1:\(freeTCPPort())/x")
        do {
            _ = try c.insertMany([["a": 1]], into: "c", ordered: true, writeConcern: .w(0))
            Issue.record("expected .invalidArgument")
        } catch {
            #expect(error.kind == .invalidArgument)
        }
        do {
            _ = try c.find("c", filter: ["_id": .objectID("xyz")])
            Issue.record("expected .invalidArgument")
        } catch {
            #expect(error.kind == .invalidArgument)
        }
    }

    @Test func errorClassification() {
        let wc = MongoError(kind: .writeConcern, code: 64, domain: 16, message: "waiting for replication timed out")
        #expect(wc.isTransient && !wc.isDuplicateKey)
        #expect(MongoError(kind: .server(code: 11001), code: 11001, domain: 17, message: "dup").isDuplicateKey)
        #expect(MongoError(kind: .server(code: 91), code: 91, domain: 17, message: "shutting down").isTransient)
        #expect(!MongoError(kind: .server(code: 2), code: 2, domain: 17, message: "bad value").isTransient)
        #expect(MongoError(kind: .server(code: 2), code: 2, domain: 17, message: "x",
                           errorLabels: ["RetryableWriteError"]).isTransient)
        #expect("\(MongoError(kind: .connection, code: 13, domain: 15, message: "No suitable servers found"))"
                == "MongoDB connection: No suitable servers found")
    }

    /// A write concern this deployment can never satisfy (79, 100), as a write concern error or
    /// as the command's answer, is persistent and said to be unsatisfiable; a timeout is not, nor
    /// is the same code said of one document.
    @Test func unsatisfiableWriteConcerns() {
        for code in [79, 100] {
            let wce = MongoError(kind: .writeConcern, code: code, domain: 16, message: "Not enough data-bearing nodes")
            #expect(wce.isUnsatisfiableWriteConcern && wce.isWriteConcernFailure && wce.disposition == .persistent, "code \(code)")
            let command = MongoError(kind: .server(code: code), code: code, domain: 17, message: "unsatisfiable")
            #expect(command.isUnsatisfiableWriteConcern && command.disposition == .persistent, "code \(code)")
            #expect(!command.aboutOneDocument.isUnsatisfiableWriteConcern, "code \(code)")
        }
        let timeout = MongoError(kind: .writeConcern, code: 64, domain: 16, message: "waiting for replication timed out")
        #expect(!timeout.isUnsatisfiableWriteConcern && timeout.isTransient)
        #expect(!MongoError(kind: .server(code: 2), code: 2, domain: 17, message: "bad value").isUnsatisfiableWriteConcern)
        #expect(!MongoError(kind: .connection, code: 100, domain: 3, message: "x").isUnsatisfiableWriteConcern)
    }

    /// Issue 20 §2: one classification decides for a failed command and a per-document write
    /// error alike. A document is refused for good only by a known document-refusal code said of
    /// that document; a command refused as a whole (BadValue for a write concern the deployment
    /// rejects) is never "this document"; an unknown per-document code is retried, not set aside.
    @Test func oneClassificationForCommandsAndDocuments() {
        // A command-level BadValue: the request, retried loudly, never a refused document.
        let commandBadValue = MongoError(kind: .server(code: 2), code: 2, domain: 17, message: "cannot use 'j' option")
        #expect(commandBadValue.scope == .request)
        #expect(commandBadValue.disposition == .persistent)
        #expect(!commandBadValue.refusesDocument && !commandBadValue.isTransient)
        let commandValidation = MongoError(kind: .server(code: 121), code: 121, domain: 17, message: "validator")
        #expect(!commandValidation.refusesDocument)

        // The same codes said of one document are refusals of that document.
        for code in [2, 52, 55, 56, 57, 121, 10334, 17280] {
            let perDocument = WriteError(index: 0, code: code, message: "refused")
            #expect(perDocument.refusesDocument, "code \(code)")
            #expect(perDocument.disposition == .refusedDocument)
            #expect(perDocument.asMongoError.refusesDocument && perDocument.asMongoError.scope == .document)
        }
        // An unknown per-document code: retried with the batch (loudly), not dead-lettered.
        let unknown = WriteError(index: 3, code: 9999, message: "something new")
        #expect(!unknown.refusesDocument && unknown.disposition == .persistent)
        #expect(!unknown.asMongoError.refusesDocument)
        // Transient per-document codes (a primary stepping down mid-batch) and duplicates.
        #expect(WriteError(index: 0, code: 10107, message: "not primary").disposition == .transient)
        #expect(WriteError(index: 0, code: 91, message: "shutting down").disposition == .transient)
        #expect(WriteError(index: 0, code: 11000, message: "E11000").disposition == .duplicateKey)
        #expect(!WriteError(index: 0, code: 11000, message: "E11000").refusesDocument)

        // An error about the request keeps nothing of "this document".
        let recorded = WriteError(index: 0, code: 121, message: "validator").asMongoError.aboutTheRequest("recording a rejection")
        #expect(recorded.scope == .request && !recorded.refusesDocument && recorded.disposition == .persistent)
        #expect(recorded.message.hasPrefix("recording a rejection: "))

        // Invalid arguments: a document that cannot be encoded is refused; a closed client is not.
        let closed = MongoError(kind: .invalidArgument, code: 0, domain: 0, message: "MongoClient is closed")
        #expect(!closed.refusesDocument && closed.disposition == .persistent)
        #expect(closed.aboutOneDocument.refusesDocument)

        // Write concern: a timeout is waited out; an unsatisfiable concern is said loudly.
        #expect(MongoError(kind: .writeConcern, code: 64, domain: 16, message: "timed out").disposition == .transient)
        #expect(MongoError(kind: .writeConcern, code: 100, domain: 16, message: "unsatisfiable").disposition == .persistent)
        #expect(MongoError(kind: .writeConcern, code: 64, domain: 16, message: "x").isWriteConcernFailure)
        // Labels win: a retryable write error is transient whatever its code.
        #expect(MongoError(kind: .server(code: 2), code: 2, domain: 17, message: "x", errorLabels: ["RetryableWriteError"]).disposition == .transient)
    }

    /// A document that cannot even be encoded is about that document (it is set aside); the
    /// error is raised before any I/O.
    @Test func aDocumentThatCannotBeEncodedIsAboutThatDocument() throws {
        let c = try MongoClient(uri: "mongodb://127.0.0.1:\(freeTCPPort())/x?serverSelectionTimeoutMS=200")
        do {
            _ = try c.insertMany([["ok": 1], ["a\u{0}b": 1]], into: "c", ordered: false, writeConcern: .journaled)
            Issue.record("expected an encoding error")
        } catch {
            #expect(error.kind == .invalidArgument && error.scope == .document && error.refusesDocument, "\(error)")
        }
    }

    /// Issue 20 §4: the write concerns as libmongoc sends them.
    @Test func writeConcernDocuments() throws {
        let journaled = try WriteConcern.journaled.document
        #expect(journaled["w"]?.intValue == 1 && journaled["j"]?.boolValue == true, "\(journaled)")
        let acknowledged = try WriteConcern.acknowledged.document
        #expect(acknowledged["w"]?.intValue == 1 && acknowledged["j"] == nil, "\(acknowledged)")
        let majority = try WriteConcern.majority(journal: true, timeoutMS: 10_000).document
        #expect(majority["w"]?.stringValue == "majority" && majority["j"]?.boolValue == true
                && majority["wtimeout"]?.intValue == 10_000, "\(majority)")
        #expect("\(WriteConcern.journaled)" == "w:1 j:true")
    }

    /// Issue 20 §5: 60 s for an answer, unless the URI says; an hour at least on `longRunning()`
    /// (index builds, a group over every event), which is one client, shared, closed with its own.
    @Test func socketTimeoutsForShortAndLongOperations() throws {
        let port = freeTCPPort()
        let plain = try MongoClient(uri: "mongodb://127.0.0.1:\(port)/x")
        #expect(plain.socketTimeoutMS == 60_000)
        let long = try plain.longRunning()
        #expect(long.socketTimeoutMS == MongoClient.longOperationSocketTimeoutMS && long.databaseName == "x")
        #expect(try plain.longRunning() === long)
        let set = try MongoClient(uri: "mongodb://127.0.0.1:\(port)/x?socketTimeoutMS=500")
        #expect(set.socketTimeoutMS == 500)
        #expect(try set.longRunning().socketTimeoutMS == MongoClient.longOperationSocketTimeoutMS)
        #expect(try MongoClient(uri: "mongodb://127.0.0.1:\(port)/x", socketTimeoutMS: 7_200_000).longRunning().socketTimeoutMS == 7_200_000)
        plain.close()
        #expect(throws: MongoError.self) { try long.ping() }
    }

    /// A URI the worker shows (the replicaSet warning's `uri_to_use`, /health) holds no secret:
    /// the password is `****`, and the value of every option not known to hold none is `***`
    /// (an allow-list: an AWS session token, a key file's password, an option nobody listed).
    @Test func aShownURIHoldsNoSecret() throws {
        let hello: BSONDocument = ["setName": "rs0", "hosts": .array(["db1:27017", "db2:27017"]), "isWritablePrimary": true, "ok": 1]
        let uri = "mongodb://AKIDEXAMPLE:s3cret@db1:27017/autovolt_power?authSource=%24external&authMechanism=MONGODB-AWS"
            + "&authMechanismProperties=AWS_SESSION_TOKEN:tok3n&tls=true&tlsCAFile=/etc/ca.pem&tlsCertificateKeyFile=/etc/key.pem"
            + "&tlsCertificateKeyFilePassword=k3ypass&appname=autovolt&someFutureOption=f00ture&w=majority&wtimeoutMS=5000"
        let advice = try #require(try MongoClient(uri: uri).replicaSetAdvice(hello: hello))
        #expect(advice.suggestedURI == "mongodb://AKIDEXAMPLE:****@db1:27017,db2:27017/autovolt_power?authSource=%24external"
                + "&authMechanism=MONGODB-AWS&authMechanismProperties=***&tls=true&tlsCAFile=/etc/ca.pem&tlsCertificateKeyFile=/etc/key.pem"
                + "&tlsCertificateKeyFilePassword=***&appname=autovolt&someFutureOption=***&w=majority&wtimeoutMS=5000&replicaSet=rs0",
                "\(advice.suggestedURI)")
        for secret in ["s3cret", "tok3n", "k3ypass", "f00ture"] {
            #expect(!advice.suggestedURI.contains(secret), "\(secret): \(advice.suggestedURI)")
        }

        // The masked form of any URI: names are case-insensitive, ';' separates too, an option
        // without a value that nobody listed goes whole, an '@' in an option is not the user info.
        #expect(MongoClient.masked("mongodb://u:p%40ss@h1,h2:27018/db?SSLCLIENTCERTIFICATEKEYPASSWORD=x;ReadPreference=secondary")
                == "mongodb://u:****@h1,h2:27018/db?SSLCLIENTCERTIFICATEKEYPASSWORD=***&ReadPreference=secondary")
        #expect(MongoClient.masked("mongodb://h/?appname=a@b&token=abc@def&mysteryflag")
                == "mongodb://h/?appname=a@b&token=***&***")
        #expect(MongoClient.masked("mongodb+srv://u:pw@cluster0.example.net/db?authMechanismProperties=SERVICE_NAME:x&retryWrites=true")
                == "mongodb+srv://u:****@cluster0.example.net/db?authMechanismProperties=***&retryWrites=true")
        #expect(MongoClient.masked("mongodb://user@h") == "mongodb://user@h/")
        #expect(MongoClient.masked("postgres://u:pw@h/db") == "***")
        // Nothing of the password survives, whatever it holds.
        let tricky = MongoClient.masked("mongodb://u:a%3Fb%2Fc@h/db?x=1")
        #expect(!tricky.contains("a%3F") && !tricky.contains("%2Fc") && tricky.hasPrefix("mongodb://u:****@h/db"), "\(tricky)")
    }

    /// Issue 20 §3: a replica set member reached through a URI that does not name the set is
    /// found from `hello`, and the advice names the URI to use (the password masked).
    @Test func replicaSetAdviceNamesTheURIToUse() throws {
        let hello: BSONDocument = ["setName": "rs0", "hosts": .array(["db1:27017", "db2:27017", "db3:27017"]),
                                   "isWritablePrimary": true, "ok": 1]
        let plain = try MongoClient(uri: "mongodb://autovolt:s3cret@db1:27017/autovolt_power?authSource=admin")
        let advice = try #require(plain.replicaSetAdvice(hello: hello))
        #expect(advice.setName == "rs0" && advice.isWritablePrimary)
        #expect(advice.suggestedURI == "mongodb://autovolt:****@db1:27017,db2:27017,db3:27017/autovolt_power?authSource=admin&replicaSet=rs0",
                "\(advice.suggestedURI)")
        #expect(!advice.suggestedURI.contains("s3cret"))
        let direct = try MongoClient(uri: "mongodb://db1:27017/?directConnection=true")
        #expect(direct.replicaSetAdvice(hello: hello)?.suggestedURI == "mongodb://db1:27017,db2:27017,db3:27017/?replicaSet=rs0")
        // Named, discovering, or not a replica set at all: nothing to say.
        #expect(try MongoClient(uri: "mongodb://db1:27017/x?replicaSet=rs0").replicaSetAdvice(hello: hello) == nil)
        #expect(try MongoClient(uri: "mongodb://db1:27017/x?directConnection=false").replicaSetAdvice(hello: hello) == nil)
        #expect(plain.replicaSetAdvice(hello: ["isWritablePrimary": true, "ok": 1]) == nil)
    }
}
