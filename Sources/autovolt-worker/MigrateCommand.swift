import ArgumentParser
import AutoVoltMongo
import AutoVoltService

/// `autovolt-worker migrate`: brings the database's schema to this worker's version and says
/// what it did (PostgreSQL: the versioned migrations; MongoDB: the collections' check and indexes).
struct Migrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Create or migrate the database schema (PostgreSQL migrations, MongoDB indexes), then exit.")

    @OptionGroup var options: ConfigOptions

    func run() throws {
        let config = try options.load()
        do {
            switch config.databaseKind {
            case .postgresql:
                let pool = try PostgresDatabase.connect(config, size: 1, applicationName: "autovolt-worker migrate")
                defer { pool.close() }
                let (found, applied) = try PostgresDatabase.migrate(pool)
                if applied.isEmpty {
                    print("migrate: the schema is at version \(found), this worker's; nothing to do")
                } else {
                    print("migrate: applied \(applied.map(String.init).joined(separator: ", ")) (version \(found) -> \(applied.max() ?? found))")
                }
            case .mongodb:
                _ = try Database.open(config)
                print("migrate: MongoDB collections checked and their indexes in place")
            }
        } catch let error as ConfigError {
            throw fail(error.description, Exit.config)
        } catch let error as PostgresSchema.Refusal {
            throw fail(error.description, Exit.config)
        } catch let error as Schema.Conflict {
            throw fail(error.description, Exit.config)
        } catch {
            throw fail("migrate: \(error)", Exit.failure)
        }
    }
}
