import AutoVoltMongo

/// For the one-shot commands (replay, rebuild-ledger, cost-versions, recalculate, reconcile):
/// a client, the schema check and the write concern, with configuration problems as ConfigError.
public struct Database: Sendable {
    public let client: MongoClient
    public let writeConcern: WriteConcern

    public static func open(_ config: WorkerConfig) throws -> Database {
        let client: MongoClient
        do {
            client = try MongoClient(uri: config.mongoURI)
        } catch {
            throw ConfigError("AUTOVOLT_MONGODB_URI", error.message)
        }
        try Schema.ensure(on: client)
        return Database(client: client, writeConcern: try config.writeConcern.resolve(for: client))
    }
}
