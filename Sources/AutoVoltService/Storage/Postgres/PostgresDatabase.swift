import AutoVoltPostgres

/// Opening the PostgreSQL database of `AUTOVOLT_DATABASE_URL`.
public enum PostgresDatabase {
    /// A pool for `config.postgresURL`. An unusable URL is a configuration error naming the
    /// variable; an unreachable server is the `PostgresError` (transient: the caller waits or fails).
    public static func connect(_ config: WorkerConfig, size: Int = 4, applicationName: String = "autovolt-worker") throws -> PostgresPool {
        guard let url = config.postgresURL else {
            throw ConfigError("AUTOVOLT_DATABASE_URL", "is not a postgresql:// URL")
        }
        let pool: PostgresPool
        do {
            pool = try PostgresPool(url: url, size: size, applicationName: applicationName)
        } catch {
            guard error.kind == .invalidURL else { throw error }
            throw ConfigError("AUTOVOLT_DATABASE_URL", "\(WorkerConfig.masked(url)): \(error.message)")
        }
        return pool
    }

    /// `autovolt-worker migrate` and the start of `run`: the version found and the versions applied.
    public static func migrate(_ pool: PostgresPool) throws -> (found: Int, applied: [Int]) {
        try pool.withConnection { connection in
            let found = try PostgresSchema.currentVersion(on: connection)
            return (found, try PostgresSchema.migrate(on: connection))
        }
    }
}
