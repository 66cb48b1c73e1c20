import AutoVoltPostgres

/// The PostgreSQL schema as versioned migrations (contract section 9). `autovolt-worker migrate`
/// applies the pending ones; `run` applies them at start and refuses (exit 78) a database whose
/// schema is newer than this worker knows. Each migration runs in its own transaction under an
/// advisory lock, so two workers starting together apply it once.
public enum PostgresSchema {
    public struct Migration: Sendable {
        public let version: Int
        public let name: String
        public let sql: String
    }

    /// Append only: a released migration is never edited; a change is a new version.
    public static let migrations: [Migration] = [
        Migration(version: 1, name: "the collections of contract sections 4 and 8 as tables", sql: [
            PostgresTables.telemetryEvents,
            PostgresTables.rejectedMessages,
            PostgresTables.deviceStatus,
            PostgresTables.ledgers,
            PostgresTables.ledgerState,
            PostgresTables.ledgerDirtyDays,
            PostgresTables.aggregates,
            PostgresTables.reconciliation,
            PostgresTables.alarms,
            PostgresTables.statements,
        ].joined(separator: "\n")),
        Migration(version: 2, name: "aggregation folds new ledger entries into a day's stored sums", sql: PostgresTables.dayFolds),
        Migration(version: 3, name: "events waiting for the ledger in a queue of their own; processed set by heap-only updates",
                  sql: PostgresTables.unprocessedQueue),
    ]

    public static var latestVersion: Int { migrations.map(\.version).max() ?? 0 }

    /// Why the worker cannot use this database: configuration, exit 78.
    public struct Refusal: Error, CustomStringConvertible {
        public let description: String
    }

    static let lockKey = 0x6175_746f_766f_6c74 // "autovolt"

    /// The version the database is at (0: no schema yet).
    public static func currentVersion(on connection: PostgresConnection) throws -> Int {
        let exists = try connection.query("SELECT to_regclass('schema_migrations') IS NOT NULL AS present").first?.bool("present") ?? false
        guard exists else { return 0 }
        return try connection.query("SELECT coalesce(max(version), 0) AS v FROM schema_migrations").first?.int("v") ?? 0
    }

    /// Applies the pending migrations; returns the versions applied (none when up to date).
    /// Throws `Refusal` for a schema newer than this worker's, or for tables of our names that
    /// another program made (no `schema_migrations`): nothing is changed then.
    @discardableResult
    public static func migrate(on connection: PostgresConnection) throws -> [Int] {
        try connection.transaction { () throws -> [Int] in
            try connection.execute("SELECT pg_advisory_xact_lock($1)", [lockKey])
            let current = try currentVersion(on: connection)
            if current > latestVersion {
                throw Refusal(description: "the database's schema is at version \(current), newer than this worker knows (\(latestVersion)): run a newer autovolt-worker; nothing was changed")
            }
            if current == 0 {
                let foreign = try connection.query("""
                    SELECT table_name FROM information_schema.tables
                    WHERE table_schema = current_schema() AND table_name = ANY($1::text[]) ORDER BY table_name
                    """, [PostgresTextArray(ownedTables)])
                if let table = foreign.first?.string("table_name") {
                    throw Refusal(description: "table \(table) exists but this database has no schema_migrations: it is not the worker's. Point AUTOVOLT_DATABASE_URL at another database; nothing was changed")
                }
                try connection.executeScript("""
                    CREATE TABLE schema_migrations (
                        version integer PRIMARY KEY,
                        name text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now()
                    )
                    """)
            }
            let pending = migrations.filter { $0.version > current }.sorted { $0.version < $1.version }
            for migration in pending {
                try connection.executeScript(migration.sql)
                try connection.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", [migration.version, migration.name])
            }
            return pending.map(\.version)
        }
    }

    /// Throws `Refusal` unless the database is at exactly this worker's version (read-only
    /// commands never migrate).
    public static func check(on connection: PostgresConnection) throws {
        let current = try currentVersion(on: connection)
        if current > latestVersion {
            throw Refusal(description: "the database's schema is at version \(current), newer than this worker knows (\(latestVersion)): run a newer autovolt-worker")
        }
        if current < latestVersion {
            throw Refusal(description: "the database's schema is at version \(current), this worker needs \(latestVersion): run autovolt-worker migrate")
        }
    }

    /// The tables of our collections' names: if one exists without `schema_migrations`, the
    /// database is another program's.
    static let ownedTables = [
        "telemetry_events", "device_consumption_ledgers", "daily_aggregates", "monthly_aggregates", "cost_versions",
        "device_status", "rejected_messages", "reconciliation_reports", "review_tickets", "alarms", "alarm_events", "statements", "statement_sources", "statement_exports",
    ]
}
