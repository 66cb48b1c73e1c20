import AutoVoltCore
import AutoVoltMongo
import Foundation

/// `IngestStorage` on MongoDB: the drain's writes as they always were (unordered `insertMany`s,
/// one bulk write of presence upserts, status updates one by one), every write with the
/// resolved write concern. Errors are `MongoError`s, per-document ones in their item's place.
public final class MongoIngestStorage: IngestStorage {
    let client: MongoClient
    let writeConcern: WriteConcern

    public init(client: MongoClient, writeConcern: WriteConcern) {
        self.client = client
        self.writeConcern = writeConcern
    }

    // MARK: Events

    public func insertEvents(_ events: [IngestEvent]) throws -> [EventWriteResult] {
        guard !events.isEmpty else { return [] }
        let documents = events.map { Documents.telemetryEvent($0.reading, classroom: $0.classroom) }
        let result = try client.insertMany(documents, into: Collections.telemetryEvents, ordered: false, writeConcern: writeConcern)
        var results = [EventWriteResult](repeating: .inserted, count: events.count)
        var duplicates: [Int] = []
        for failure in result.writeErrors {
            guard events.indices.contains(failure.index) else {
                // A duplicate that names no event changes nothing; any other error naming no
                // event cannot say which message it is about: keep the batch rather than guess.
                if failure.isDuplicateKey { continue }
                throw failure.asMongoError.aboutTheRequest("a write error names no event of the batch (index \(failure.index))")
            }
            if failure.isDuplicateKey {
                duplicates.append(failure.index)
            } else {
                results[failure.index] = .failed(failure.asMongoError)
            }
        }
        if !duplicates.isEmpty {
            // `_id` collided, or `event_hash`: the stored event of the same `_id` (if any) says
            // whether it is the same reading.
            let ids = duplicates.map { BSON.string(events[$0].id) }
            let stored = try client.find(Collections.telemetryEvents, filter: ["_id": ["$in": .array(ids)]],
                                         projection: ["energy_wh_total": 1, "event_hash": 1], limit: ids.count)
            var storedEnergy: [String: Double] = [:]
            for doc in stored {
                if let id = doc["_id"]?.stringValue, let energy = doc["energy_wh_total"]?.doubleValue { storedEnergy[id] = energy }
            }
            for index in duplicates {
                results[index] = .alreadyStored(storedEnergyWhTotal: storedEnergy[events[index].id])
            }
        }
        return results
    }

    // MARK: Rejections

    public func recordRejections(_ records: [RejectedMessageRecord]) throws -> [(any Error)?] {
        guard !records.isEmpty else { return [] }
        let result = try client.insertMany(records.map(Self.document), into: Collections.rejectedMessages, ordered: false,
                                           writeConcern: writeConcern)
        var results = [(any Error)?](repeating: nil, count: records.count)
        for failure in result.writeErrors where !failure.isDuplicateKey {
            // A duplicate is the same rejection recorded by an earlier, interrupted attempt.
            guard records.indices.contains(failure.index) else {
                throw failure.asMongoError.aboutTheRequest("recording a rejected message (a write error names no document of the request)")
            }
            results[failure.index] = failure.asMongoError
        }
        return results
    }

    /// The document of a rejection (the minimal form keeps the fields in the order it always had).
    static func document(_ record: RejectedMessageRecord) -> BSONDocument {
        if let hex = record.payloadHex {
            var doc: BSONDocument = [
                "_id": .string(record.id),
                "topic": .string(record.topic),
                "reason": .string(record.reason),
                "received_at": .millis(record.receivedAt),
            ]
            if let name = record.esp32Name { doc["esp32_name"] = .string(name) }
            doc["payload_bytes"] = .int64(record.payloadBytes)
            doc["payload"] = .string(record.payload)
            doc["payload_hex"] = .string(hex)
            doc["detail"] = .string(record.detail)
            return doc
        }
        var doc: BSONDocument = [
            "_id": .string(record.id),
            "topic": .string(record.topic),
            "payload": .string(record.payload),
            "payload_bytes": .int64(record.payloadBytes),
            "reason": .string(record.reason),
            "detail": .string(record.detail),
            "received_at": .millis(record.receivedAt),
        ]
        if let name = record.esp32Name { doc["esp32_name"] = .string(name) }
        return doc
    }

    // MARK: Presence

    public func upsertPresence(_ updates: [PresenceUpdate]) throws -> [(any Error)?] {
        guard !updates.isEmpty else { return [] }
        let models = updates.map(Self.presenceModel)
        let outcome: Result<BulkWriteResult, MongoError>
        do {
            outcome = .success(try client.bulkWrite(Collections.deviceStatus, operations: models, ordered: false,
                                                    writeConcern: writeConcern))
        } catch {
            outcome = .failure(error)
        }
        let result: BulkWriteResult
        switch outcome {
        case .success(let written):
            result = written
        case .failure(let error) where error.refusesDocument:
            // An update that could not even be sent (encoded) is not named: one by one.
            guard updates.count > 1 else { return [error] }
            var results: [(any Error)?] = []
            for update in updates { results += try upsertPresence([update]) }
            return results
        case .failure(let error):
            throw error
        }
        // Anything but a duplicate or a known refusal (a stepped-down primary, a code nobody
        // knows) is retried with the batch: the upserts are idempotent.
        if let retry = result.writeErrors.first(where: { !$0.isDuplicateKey && !$0.refusesDocument }) {
            throw retry.asMongoError.aboutTheRequest("writing device_status")
        }
        var results = [(any Error)?](repeating: nil, count: updates.count)
        for failure in result.writeErrors where failure.refusesDocument {
            guard updates.indices.contains(failure.index) else {
                throw failure.asMongoError.aboutTheRequest("a device_status write error names no update of the request (index \(failure.index))")
            }
            results[failure.index] = failure.asMongoError
        }
        // Two workers raced to create the same device document: apply ours again as an update.
        for failure in result.writeErrors where failure.isDuplicateKey {
            guard models.indices.contains(failure.index),
                  case .updateOne(let filter, let update, _) = models[failure.index] else { continue }
            do {
                _ = try client.updateOne(Collections.deviceStatus, filter: filter, update: update, upsert: false, writeConcern: writeConcern)
            } catch {
                guard error.refusesDocument else { throw error }
                let refusal: any Error = error
                results[failure.index] = refusal
            }
        }
        return results
    }

    static func presenceModel(_ update: PresenceUpdate) -> WriteModel {
        var set: BSONDocument = ["classroom": .string(update.classroom)]
        if let v = update.uptimeS { set["uptime_s"] = .double(v) }
        if let v = update.rssi { set["rssi"] = .double(v) }
        if let v = update.freeHeap { set["free_heap"] = .double(v) }
        if let v = update.bootID { set["boot_id"] = .string(v) }
        if let v = update.fwVersion { set["fw_version"] = .string(v) }
        var max: BSONDocument = [:]
        if let at = update.lastSeenAt { max["last_seen_at"] = .millis(at) }
        if let at = update.lastTelemetryAt { max["last_telemetry_at"] = .millis(at) }
        if let at = update.lastHeartbeatAt { max["last_heartbeat_at"] = .millis(at) }
        // Only status messages say online/offline; until one arrives it is unknown (null).
        let onInsert = withNullTimes(["esp32_name": .string(update.esp32Name), "online": .null, "sessions": .int64(0)], except: max)
        return .updateOne(filter: ["_id": .string(update.esp32Name)],
                          update: ["$set": .document(set), "$max": .document(max), "$setOnInsert": .document(onInsert)],
                          upsert: true)
    }

    /// Every contract field of `device_status` exists from the start: times not yet seen are null
    /// (`$max` later replaces a null, which sorts before every date).
    static func withNullTimes(_ base: BSONDocument, except present: BSONDocument) -> BSONDocument {
        var document = base
        for field in ["last_seen_at", "last_status_at", "last_heartbeat_at", "last_telemetry_at"] where present[field] == nil {
            document[field] = .null
        }
        return document
    }

    public func writeStatus(_ change: StatusChange) throws {
        let name = change.esp32Name, classroom = change.classroom
        let times: BSONDocument = ["last_seen_at": .millis(change.at), "last_status_at": .millis(change.at)]
        if change.online {
            // Count a session only on a transition from offline (or unknown) to online.
            do {
                _ = try client.updateOne(
                    Collections.deviceStatus,
                    filter: ["_id": .string(name), "online": ["$ne": true]],
                    update: [
                        "$set": ["online": true, "classroom": .string(classroom), "esp32_name": .string(name)],
                        "$max": .document(times),
                        "$inc": ["sessions": .int64(1)],
                        "$setOnInsert": .document(Self.withNullTimes([:], except: times)),
                    ],
                    upsert: true, writeConcern: writeConcern)
            } catch let error where error.isDuplicateKey {
                // Already online: the upsert tried to create a second document for the device.
                _ = try client.updateOne(
                    Collections.deviceStatus, filter: ["_id": .string(name)],
                    update: ["$set": ["classroom": .string(classroom)], "$max": .document(times)],
                    upsert: false, writeConcern: writeConcern)
            }
        } else {
            _ = try client.updateOne(
                Collections.deviceStatus, filter: ["_id": .string(name)],
                update: [
                    "$set": ["online": false, "classroom": .string(classroom)],
                    "$max": .document(times),
                    "$setOnInsert": .document(Self.withNullTimes(["esp32_name": .string(name), "sessions": .int64(0)], except: times)),
                ],
                upsert: true, writeConcern: writeConcern)
        }
    }

    // MARK: Requeue

    public func storeRefusedRejections(since: EpochMillis?, after: String?, limit: Int) throws -> [StoredRejection] {
        var filter: BSONDocument = ["reason": .string(RejectReason.storeRefused.rawValue)]
        if let since { filter["received_at"] = ["$gte": .millis(since)] }
        if let after { filter["_id"] = ["$gt": .string(after)] }
        return try client.find(Collections.rejectedMessages, filter: filter, sort: ["_id": 1], limit: limit).map(Self.storedRejection)
    }

    static func storedRejection(_ document: BSONDocument) -> StoredRejection {
        let received = document["received_at"]?.dateValue.map { EpochMillis(($0.timeIntervalSince1970 * 1000).rounded()) }
        return StoredRejection(id: document["_id"]?.stringValue, topic: document["topic"]?.stringValue,
                               payload: document["payload"]?.stringValue, payloadHex: document["payload_hex"]?.stringValue,
                               receivedAt: received)
    }

    public func deleteRejection(id: String) throws {
        _ = try client.deleteMany(Collections.rejectedMessages, filter: ["_id": .string(id)], writeConcern: writeConcern)
    }
}
