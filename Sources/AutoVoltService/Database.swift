import AutoVoltMongo

/// For the one-shot commands (replay, rebuild-ledger, cost-versions, recalculate, reconcile):
/// a client, the schema check and the write concern, with configuration problems as ConfigError.
public struct Database: Sendable {
    public let client: MongoClient
    public let writeConcern: WriteConcern

    /// For commands that write: connects and checks (or creates) the schema.
    public static func open(_ config: WorkerConfig) throws -> Database {
        let client = try connect(config)
        try Schema.ensure(on: client)
        return Database(client: client, writeConcern: try config.writeConcern.resolve(for: client))
    }

    /// For read-only commands: a client for `AUTOVOLT_MONGODB_URI`; an unusable URI is a
    /// configuration error naming the variable.
    public static func connect(_ config: WorkerConfig) throws(ConfigError) -> MongoClient {
        do {
            return try MongoClient(uri: config.mongoURI)
        } catch {
            throw ConfigError("AUTOVOLT_MONGODB_URI", error.message)
        }
    }
}
