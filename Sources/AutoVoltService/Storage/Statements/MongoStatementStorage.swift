import AutoVoltCore
import AutoVoltMongo
import Foundation

/// `StatementStorage` on MongoDB: `statements`, `statement_sources` and `statement_exports`, and
/// the statements' reads of `cost_versions`, `daily_aggregates`, `review_tickets` and
/// `telemetry_events`. The documents are `StatementDocuments`'. Throws `MongoError`.
public final class MongoStatementStorage: StatementStorage {
    let client: MongoClient
    let writeConcern: WriteConcern

    public init(client: MongoClient, writeConcern: WriteConcern) {
        self.client = client
        self.writeConcern = writeConcern
    }

    static var collection: String { StatementStore.collection }
    static var sourcesCollection: String { StatementStore.sourcesCollection }
    static var exportsCollection: String { StatementStore.exportsCollection }

    // MARK: The figures

    public func tariffRates() throws -> [String: Double] {
        var rates: [String: Double] = [:]
        try client.forEachBatch(Collections.costVersions, filter: [:], projection: ["cost_per_kwh": 1]) { (batch) throws(MongoError) in
            for doc in batch {
                if let id = doc["_id"]?.stringValue ?? doc["_id"]?.objectIDValue, let rate = doc["cost_per_kwh"]?.doubleValue { rates[id] = rate }
            }
        }
        return rates
    }

    public func forEachDailyAggregate(from first: CivilDate, to last: CivilDate, classrooms: [String]?,
                                      _ body: ([StatementDay]) -> Void) throws {
        var filter: BSONDocument = ["date": ["$gte": .string(first.description), "$lte": .string(last.description)]]
        if let classrooms { filter["classroom"] = ["$in": .array(classrooms.map { .string($0) })] }
        try client.forEachBatch(Collections.dailyAggregates, filter: filter, sort: ["_id": 1], projection: StatementDocuments.dayProjection) { (batch) throws(MongoError) in
            body(batch.compactMap(StatementDocuments.day))
        }
    }

    public func openTickets(from first: CivilDate, to last: CivilDate, esp32Names: [String]?, limit: Int) throws -> [Statement.Ticket] {
        var filter: BSONDocument = ["status": "open", "date": ["$gte": .string(first.description), "$lte": .string(last.description)]]
        if let esp32Names { filter["esp32_name"] = ["$in": .array(esp32Names.map { .string($0) })] }
        return try client.find(Collections.reviewTickets, filter: filter, sort: ["date": 1, "esp32_name": 1, "kind": 1], limit: limit).map { doc in
            Statement.Ticket(id: doc["_id"]?.stringValue ?? doc["_id"]?.objectIDValue ?? "", esp32Name: doc["esp32_name"]?.stringValue ?? "",
                             date: doc["date"]?.stringValue ?? "", kind: doc["kind"]?.stringValue ?? "", detail: doc["detail"]?.stringValue ?? "")
        }
    }

    public func lateReadingCounts(esp32Names: [String], deviceFrom: EpochMillis, deviceBefore: EpochMillis,
                                  receivedAfter: EpochMillis, receivedUntil: EpochMillis?) throws -> [String: Int] {
        guard !esp32Names.isEmpty else { return [:] }
        var received: BSONDocument = ["$gt": .millis(receivedAfter)]
        if let receivedUntil { received["$lte"] = .millis(receivedUntil) }
        var counts: [String: Int] = [:]
        try client.aggregateBatches(Collections.telemetryEvents, pipeline: [
            ["$match": [
                "esp32_name": ["$in": .array(esp32Names.map { .string($0) })], "received_at": .document(received),
                "device_ts": ["$gte": .millis(deviceFrom), "$lt": .millis(deviceBefore)],
            ]],
            ["$group": ["_id": "$esp32_name", "n": ["$sum": 1]]],
        ]) { (batch) throws(MongoError) in
            for doc in batch { if let name = doc["_id"]?.stringValue { counts[name] = doc["n"]?.intValue ?? 0 } }
        }
        return counts
    }

    // MARK: Statements

    public func lastFrozenVersion(month: String, scopeKey: String) throws -> Int {
        try client.findOne(Self.collection, filter: ["month": .string(month), "scope_key": .string(scopeKey), "status": "frozen"],
                           sort: ["version": -1], projection: ["version": 1])?["version"]?.intValue ?? 0
    }

    public func saveDraft(_ statement: Statement, token: String) throws -> DraftSave {
        var doc = StatementDocuments.document(statement, sourcesToken: token)
        doc["draft_token"] = .string(token)
        // The sources first: once the document names them, they are all there.
        try client.insertMany(StatementDocuments.sourceChunks(statement, token: token), into: Self.sourcesCollection,
                              ordered: false, writeConcern: writeConcern).writeErrors.throwUnlessDuplicateKeys()
        let replaced: Result<BSONDocument?, MongoError>
        do throws(MongoError) {
            replaced = .success(try client.findOneAndUpdate(Self.collection, filter: ["_id": .string(statement.id), "status": "draft"],
                                                            update: doc, upsert: true, returnNew: false, writeConcern: writeConcern))
        } catch {
            replaced = .failure(error)
        }
        if case .failure(let error) = replaced {
            guard error.isDuplicateKey else { throw error }
            // The version was frozen meanwhile (the filter missed it, the upsert hit its _id).
            _ = try client.deleteMany(Self.sourcesCollection, filter: ["statement_id": .string(statement.id), "token": .string(token)],
                                      writeConcern: writeConcern)
            return .versionFrozen
        }
        // The draft this one replaced: its sources are named by nothing any more.
        if case .success(let previous) = replaced, let old = previous?["sources"]?.documentValue?["token"]?.stringValue {
            _ = try client.deleteMany(Self.sourcesCollection, filter: ["statement_id": .string(statement.id), "token": .string(old)],
                                      writeConcern: writeConcern)
        }
        return .saved
    }

    public func statement(id: String) throws -> StoredStatement? {
        guard let doc = try client.findOne(Self.collection, filter: ["_id": .string(id)]),
              let statement = StatementDocuments.statement(doc) else { return nil }
        var reference: SourcesReference?
        if let named = doc["sources"]?.documentValue, let token = named["token"]?.stringValue, doc["_id"]?.stringValue != nil {
            reference = SourcesReference(token: token, count: named["count"]?.intValue ?? 0, chunks: named["chunks"]?.intValue ?? 0)
        }
        return StoredStatement(statement: statement, sources: reference, draftToken: doc["draft_token"]?.stringValue)
    }

    public func sources(statementID: String, token: String) throws -> StoredSources {
        var sources: [Statement.Source] = []
        var chunks = 0
        try client.forEachBatch(Self.sourcesCollection, filter: ["statement_id": .string(statementID), "token": .string(token)],
                                sort: ["chunk": 1], batchSize: 8) { (docs) throws(MongoError) in
            for chunk in docs {
                chunks += 1
                sources += chunk["aggregates"]?.arrayValue?.compactMap(\.documentValue).compactMap(StatementDocuments.source) ?? []
            }
        }
        return StoredSources(chunks: chunks, sources: sources)
    }

    public func statements(month: String?, limit: Int) throws -> [Statement] {
        var filter: BSONDocument = [:]
        if let month { filter["month"] = .string(month) }
        return try client.find(Self.collection, filter: filter, sort: ["month": -1, "scope_key": 1, "version": -1],
                               projection: ["lines": 0, "aggregates": 0, "sources": 0, "days": 0, "review_tickets": 0, "segments": 0],
                               limit: limit).compactMap(StatementDocuments.statement)
    }

    public func freeze(id: String, draftToken: String?, frozenAt: EpochMillis, by: String, exports: [Statement.Export]) throws -> Bool {
        try client.updateOne(Self.collection, filter: ["_id": .string(id), "status": "draft", "draft_token": draftToken.map { .string($0) } ?? .null],
                             update: ["$set": ["status": "frozen", "frozen_at": .millis(frozenAt), "frozen_by": .string(by),
                                               "exports": StatementDocuments.exports(exports)],
                                      "$unset": ["draft_token": ""]],
                             upsert: false, writeConcern: writeConcern).matchedCount == 1
    }

    // MARK: Exports

    public func keepExport(statementID: String, format: StatementFormat, sha256: String, bytes: [UInt8]) throws {
        _ = try client.updateOne(Self.exportsCollection, filter: ["_id": .string(StatementStore.exportID(statementID, format, sha256))],
                                 update: ["$setOnInsert": [
                                     "statement_id": .string(statementID), "format": .string(format.rawValue), "sha256": .string(sha256),
                                     "bytes": .int64(Int64(bytes.count)), "data": .binary(subtype: 0, data: bytes),
                                 ]], upsert: true, writeConcern: writeConcern)
    }

    public func keptExport(statementID: String, format: StatementFormat, sha256: String) throws -> KeptExport? {
        guard let stored = try client.findOne(Self.exportsCollection, filter: ["_id": .string(StatementStore.exportID(statementID, format, sha256))])
        else { return nil }
        guard case .binary(_, let bytes)? = stored["data"] else { return KeptExport(data: nil) }
        return KeptExport(data: bytes)
    }
}
