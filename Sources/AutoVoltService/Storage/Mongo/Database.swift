import AutoVoltMongo

/// For the one-shot commands (replay, rebuild-ledger, cost-versions, recalculate, reconcile):
/// a client, the schema check and the write concern, with configuration problems as ConfigError.
public struct Database: Sendable {
    public let client: MongoClient
    public let writeConcern: WriteConcern

    /// For commands that write: connects and checks (or creates) the schema. A one-shot
    /// command's client waits up to `MongoClient.longOperationSocketTimeoutMS` (an hour) for an
    /// answer unless the URI sets `socketTimeoutMS`: its long operations (rebuild-ledger's group
    /// over every event, a recalculation of a year) are what it is run for, and a person watches
    /// it (Ctrl-C), where the worker's threads must notice a hung server within a minute.
    public static func open(_ config: WorkerConfig) throws -> Database {
        let client = try connect(config, socketTimeoutMS: MongoClient.longOperationSocketTimeoutMS)
        try Schema.ensure(on: client)
        return Database(client: client, writeConcern: try config.writeConcern.resolve(for: client))
    }

    /// For read-only commands and the worker: a client for `AUTOVOLT_MONGODB_URI` (socket
    /// timeout 60 s unless the URI sets one); an unusable URI is a configuration error naming
    /// the variable.
    public static func connect(_ config: WorkerConfig,
                               socketTimeoutMS: Int = MongoClient.defaultSocketTimeoutMS) throws(ConfigError) -> MongoClient {
        do {
            return try MongoClient(uri: config.mongoURI, socketTimeoutMS: socketTimeoutMS)
        } catch {
            throw ConfigError("AUTOVOLT_MONGODB_URI", error.message)
        }
    }
}
