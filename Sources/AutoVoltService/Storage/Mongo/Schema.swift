import AutoVoltMongo

/// The indexes the worker owns, and the start-up check that the database really is ours.
public enum Schema {
    static let day: Int = 86_400

    public static let indexes: [String: [IndexModel]] = AlarmStore.indexes.merging([
        Collections.telemetryEvents: [
            IndexModel(keys: ["event_hash": 1], name: "event_hash_unique", unique: true),
            IndexModel(keys: ["received_at": 1], name: "received_at_ttl", expireAfterSeconds: 730 * day),
            IndexModel(keys: ["esp32_name": 1, "device_ts": 1], name: "esp32_name_device_ts"),
            IndexModel(keys: ["processed": 1, "received_at": 1], name: "processed_received_at"),
            // The nightly reconciliation reads one local day of events by device time.
            IndexModel(keys: ["device_ts": 1], name: "device_ts"),
        ],
        Collections.rejectedMessages: [
            IndexModel(keys: ["received_at": 1], name: "received_at_ttl", expireAfterSeconds: 30 * day),
            IndexModel(keys: ["reason": 1, "received_at": -1], name: "reason_received_at"),
            // A device's latest rejects: its dashboard page, the rejects alarms.
            IndexModel(keys: ["esp32_name": 1, "received_at": -1], name: "esp32_name_received_at"),
        ],
        Collections.deviceStatus: [
            IndexModel(keys: ["esp32_name": 1], name: "esp32_name_unique", unique: true),
        ],
        Collections.ledgers: [
            IndexModel(keys: ["esp32_name": 1, "start_ts": 1], name: "esp32_name_start_ts"),
            IndexModel(keys: ["esp32_name": 1, "end_ts": 1], name: "esp32_name_end_ts"),
            // A device's entries of one local day (aggregation).
            IndexModel(keys: ["esp32_name": 1, "date": 1], name: "esp32_name_date"),
            IndexModel(keys: ["date": 1, "classroom": 1], name: "date_classroom"),
        ],
        Collections.dailyAggregates: [
            IndexModel(keys: ["date": 1, "esp32_name": 1], name: "date_esp32_name_unique", unique: true),
            // A month of some devices' days (monthly aggregation).
            IndexModel(keys: ["esp32_name": 1, "date": 1], name: "esp32_name_date"),
        ],
        Collections.monthlyAggregates: [
            IndexModel(keys: ["month": 1, "esp32_name": 1], name: "month_esp32_name_unique", unique: true),
        ],
        Collections.costVersions: [
            IndexModel(keys: ["effective_from": 1, "classroom": 1], name: "effective_from_classroom"),
        ],
        Collections.reconciliationReports: [
            IndexModel(keys: ["run_id": 1], name: "run_id_unique", unique: true),
            IndexModel(keys: ["finished_at": -1], name: "finished_at"), // /health's last run
            // The last judgement of each recent day (Scheduler.rejudgeChangedDays, every 5 minutes).
            IndexModel(keys: ["date": 1, "started_at": 1], name: "date_started_at"),
        ],
        "ledger_state": [
            IndexModel(keys: ["pending_dip_until": 1], name: "pending_dip_until"),
        ],
        // An aggregate's earlier versions, to explain a changed bill.
        "aggregate_history": [
            IndexModel(keys: ["aggregate_id": 1, "version": 1], name: "aggregate_id_version"),
        ],
        "ledger_dirty_days": [
            IndexModel(keys: ["date": 1], name: "date"),
            // Marks held by a ledger step: the aggregation leaves their days out every round, and
            // the next lease on a device releases them.
            IndexModel(keys: ["hold_until": 1], name: "hold_until"),
        ],
        Collections.reviewTickets: [
            IndexModel(keys: ["esp32_name": 1, "date": 1, "kind": 1], name: "esp32_name_date_kind_unique", unique: true),
            // A reconciliation judges the tickets of its day; the dashboard lists the open ones.
            IndexModel(keys: ["date": 1, "kind": 1], name: "date_kind"),
            IndexModel(keys: ["status": 1, "date": 1], name: "status_date"),
        ],
        // One statement per (month, scope, version); the _id says the same, the index lets a
        // replica set refuse a second one whatever wrote it.
        StatementStore.collection: [
            IndexModel(keys: ["month": 1, "scope_key": 1, "version": 1], name: "month_scope_version_unique", unique: true),
        ],
        StatementStore.exportsCollection: [
            IndexModel(keys: ["statement_id": 1], name: "statement_id"),
        ],
        StatementStore.sourcesCollection: [
            IndexModel(keys: ["statement_id": 1, "token": 1, "chunk": 1], name: "statement_id_token_chunk"),
        ],
    ], uniquingKeysWith: { a, _ in a })

    /// Fields every document of a collection we own must have. A document without them was
    /// written by another program (for example the Node.js backend's `autovolt` database).
    static let requiredFields: [String: [String]] = [
        Collections.telemetryEvents: ["event_hash", "esp32_name", "device_ts", "received_at", "energy_wh_total", "clock"],
        Collections.rejectedMessages: ["topic", "reason", "received_at"],
        Collections.deviceStatus: ["esp32_name"],
        Collections.ledgers: ["esp32_name", "start_ts", "end_ts", "date", "delta_wh"],
        Collections.dailyAggregates: ["date", "esp32_name", "energy_wh"],
        Collections.monthlyAggregates: ["month", "esp32_name", "energy_wh"],
        Collections.costVersions: ["cost_per_kwh", "effective_from"],
        Collections.reconciliationReports: ["run_id", "date"],
        Collections.reviewTickets: ["esp32_name", "date", "kind"],
        AlarmStore.alarms: ["rule", "esp32_name", "status", "raised_at"],
        StatementStore.collection: ["month", "scope", "version", "status"],
    ]

    public struct Conflict: Error, CustomStringConvertible {
        public let collection: String
        public let problem: String
        public var description: String {
            "collection \(collection) is not the worker's: \(problem). Point AUTOVOLT_MONGODB_URI at another database; nothing was changed"
        }
    }

    /// Checks that the collections hold our kind of documents, then creates the indexes.
    /// Never drops or rewrites anything. Throws `Conflict` (configuration, exit 78) or a
    /// `MongoError` (an outage: retry later).
    public static func ensure(on client: MongoClient) throws -> Void {
        for (collection, required) in requiredFields.sorted(by: { $0.key < $1.key }) {
            let existing = try client.listIndexes(collection)
            for wanted in indexes[collection] ?? [] {
                guard let index = existing.first(where: { $0["name"]?.stringValue == wanted.name }) else { continue }
                let sameKeys = index["key"]?.documentValue.map { keysEqual($0, wanted.keys) } ?? false
                let sameUnique = (index["unique"]?.boolValue ?? false) == wanted.unique
                let ttl = index["expireAfterSeconds"]?.int64Value.map(Int.init)
                if !sameKeys || !sameUnique || ttl != wanted.expireAfterSeconds {
                    throw Conflict(collection: collection, problem: "index \(wanted.name) exists with other options")
                }
            }
            for sample in try client.find(collection, filter: [:], limit: 3) {
                for field in required where sample[field] == nil {
                    let id = sample["_id"].map { "\($0)" } ?? "?"
                    throw Conflict(collection: collection, problem: "document \(id) has no \(field) field")
                }
            }
            if collection == Collections.telemetryEvents,
               let event = try client.findOne(collection, filter: [:]), event["device_ts"]?.dateValue == nil {
                throw Conflict(collection: collection, problem: "device_ts is not a date")
            }
        }
        // Building a new index over a large collection keeps the server busy for minutes before
        // it answers: past the socket timeout of the client (60 s), which would fail the build's
        // wait and retry it forever. So on a client with a socket timeout of an hour.
        let builder = try client.longRunning()
        for (collection, models) in indexes.sorted(by: { $0.key < $1.key }) {
            do {
                try builder.createIndexes(collection, models)
            } catch let error where error.isDuplicateKey {
                throw Conflict(collection: collection, problem: "existing documents violate a unique index (\(error.message))")
            } catch let error {
                // 85/86: an index with these keys or this name exists with other options.
                if case .server(let code) = error.kind, code == 85 || code == 86 || code == 67 {
                    throw Conflict(collection: collection, problem: error.message)
                }
                throw error
            }
        }
    }

    static func keysEqual(_ a: BSONDocument, _ b: BSONDocument) -> Bool {
        let left = a.map { ($0.0, $0.1.doubleValue ?? .nan) }
        let right = b.map { ($0.0, $0.1.doubleValue ?? .nan) }
        return left.count == right.count && zip(left, right).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
    }
}
