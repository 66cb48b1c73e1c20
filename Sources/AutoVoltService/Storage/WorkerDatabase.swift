import AutoVoltMongo
import AutoVoltPostgres

/// The database of one worker process, chosen by `AUTOVOLT_DATABASE_URL` (contract section 9):
/// it hands each stage its storage, so a stage's logic is the same on either backend.
public enum WorkerDatabase: Sendable {
    case mongodb(MongoClient)
    case postgresql(PostgresPool)

    /// Connects (MongoDB lazily, PostgreSQL at once, waiting out nothing: an unreachable
    /// PostgreSQL is retried by the stages). An unusable URL is a `ConfigError`.
    public static func open(_ config: WorkerConfig, poolSize: Int = 8) throws -> WorkerDatabase {
        switch config.databaseKind {
        case .mongodb:
            return .mongodb(try Database.connect(config))
        case .postgresql:
            return .postgresql(try PostgresDatabase.connect(config, size: poolSize))
        }
    }

    /// For the one-shot commands that write (replay, rebuild-ledger, requeue, tariffs,
    /// recalculate): the database with its schema checked or migrated, and MongoDB's write
    /// concern (`Database.open`: a client patient with long operations). PostgreSQL needs none.
    public static func openForCommand(_ config: WorkerConfig) throws -> (database: WorkerDatabase, writeConcern: WriteConcern) {
        switch config.databaseKind {
        case .mongodb:
            let opened = try Database.open(config)
            return (.mongodb(opened.client), opened.writeConcern)
        case .postgresql:
            let database = WorkerDatabase.postgresql(try PostgresDatabase.connect(config, size: 2, applicationName: "autovolt-worker command"))
            try database.ensureSchema()
            return (database, .acknowledged)
        }
    }

    /// The MongoDB client, for MongoDB's own executors (HTTP reads) and checks: nil on PostgreSQL.
    public var mongo: MongoClient? {
        if case .mongodb(let client) = self { return client }
        return nil
    }

    public var backendName: String {
        switch self {
        case .mongodb: "MongoDB"
        case .postgresql: "PostgreSQL"
        }
    }

    /// The database's name for logs (never credentials).
    public var name: String {
        switch self {
        case .mongodb(let client): client.databaseName
        case .postgresql(let pool): WorkerConfig.masked(pool.url)
        }
    }

    /// Checks the schema and creates what is missing: MongoDB's indexes (`Schema.Conflict` for
    /// another program's collections), PostgreSQL's pending migrations (`PostgresSchema.Refusal`
    /// for a newer schema or another program's tables). Both are configuration errors.
    public func ensureSchema() throws {
        switch self {
        case .mongodb(let client):
            try Schema.ensure(on: client)
        case .postgresql(let pool):
            _ = try PostgresDatabase.migrate(pool)
        }
    }

    public func ingestStorage(writeConcern: WriteConcern) -> any IngestStorage {
        switch self {
        case .mongodb(let client): MongoIngestStorage(client: client, writeConcern: writeConcern)
        case .postgresql(let pool): PostgresIngestStorage(pool: pool)
        }
    }

    public func ledgerStorage(writeConcern: WriteConcern) -> any LedgerStorage {
        switch self {
        case .mongodb(let client): MongoLedgerStorage(client: client, writeConcern: writeConcern)
        case .postgresql(let pool): PostgresLedgerStorage(pool: pool)
        }
    }

    public func reconciliationStorage(writeConcern: WriteConcern) -> any ReconciliationStorage {
        switch self {
        case .mongodb(let client): MongoReconciliationStorage(client: client, writeConcern: writeConcern)
        case .postgresql(let pool): PostgresReconciliationStorage(pool: pool)
        }
    }

    public func close() {
        switch self {
        case .mongodb(let client): client.close()
        case .postgresql(let pool): pool.close()
        }
    }

    public func alarmStorage(writeConcern: WriteConcern) -> any AlarmStorage {
        switch self {
        case .mongodb(let client): MongoAlarmStorage(client: client, writeConcern: writeConcern)
        case .postgresql(let pool): PostgresAlarmStorage(pool: pool)
        }
    }

    public func statementStorage(writeConcern: WriteConcern) -> any StatementStorage {
        switch self {
        case .mongodb(let client): MongoStatementStorage(client: client, writeConcern: writeConcern)
        case .postgresql(let pool): PostgresStatementStorage(pool: pool)
        }
    }

    public func aggregationStorage(writeConcern: WriteConcern) -> any AggregationStorage {
        switch self {
        case .mongodb(let client): MongoAggregationStorage(client: client, writeConcern: writeConcern)
        case .postgresql(let pool): PostgresAggregationStorage(pool: pool)
        }
    }
}
