import AutoVoltMongo
import AutoVoltPostgres
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Synchronization

/// The storage suites' one fixture (issue 21 §3): a server of the test's own for one backend
/// (`BackendServer`), a fresh database on it with the worker's schema (MongoDB's indexes,
/// PostgreSQL's migrations, as `WorkerDatabase.ensureSchema` makes them at start), the
/// worker's connection to it (`database`: a client or a pool), and on demand the connections
/// of other workers on the same database. Everything is closed, and the server stopped, when
/// it goes.
final class BackendDatabase: Sendable {
    let server: BackendServer
    private let name: String
    private let poolSize: Int
    /// The worker's connection (replaced by `restart()`) and those of the other workers.
    private let connections: Mutex<(current: WorkerDatabase, others: [WorkerDatabase])>

    /// `name` names the database and the PostgreSQL connections (`application_name`);
    /// `keepsMongoData` lets dev-mongo's data survive `restart()`.
    init(_ backend: StorageBackend, name: String, keepsMongoData: Bool = false, poolSize: Int = 4) throws {
        server = try BackendServer(backend, name: name, keepsMongoData: keepsMongoData)
        self.name = name
        self.poolSize = poolSize
        let database = try Self.connect(server, size: poolSize, applicationName: name)
        do {
            try database.ensureSchema()
        } catch {
            database.close()
            throw error
        }
        connections = Mutex((database, []))
    }

    deinit {
        connections.withLock { connections in
            connections.others.forEach { $0.close() }
            connections.current.close()
        }
    }

    var backend: StorageBackend { server.backend }
    var postgres: PostgresServer? { server.postgres }
    var mongo: DevMongoServer? { server.mongo }
    /// The database's URI or URL.
    var url: String { server.url }

    /// The worker's connection.
    var database: WorkerDatabase { connections.withLock { $0.current } }
    /// The worker's client (MongoDB), for the tests' direct reads and writes.
    var client: MongoClient? { database.mongo }
    /// The worker's pool (PostgreSQL), for the tests' direct reads and writes.
    var pool: PostgresPool? {
        if case .postgresql(let pool) = database { return pool }
        return nil
    }

    /// Another worker's connection to the same database: a client or a pool of its own.
    func anotherWorker(poolSize: Int = 2) throws -> WorkerDatabase {
        let count = connections.withLock { $0.others.count }
        let other = try Self.connect(server, size: poolSize, applicationName: "\(name)-\(count + 2)")
        connections.withLock { $0.others.append(other) }
        return other
    }

    /// The server restarted (PostgreSQL: `pg_ctl restart -m immediate`, a crash) and the
    /// worker's connection made anew, as a restarted worker makes it; the old one is closed.
    @discardableResult
    func restart() throws -> WorkerDatabase {
        try server.restart()
        let fresh = try Self.connect(server, size: poolSize, applicationName: "\(name)-restarted")
        let old = connections.withLock { connections in
            defer { connections.current = fresh }
            return connections.current
        }
        old.close()
        return fresh
    }

    private static func connect(_ server: BackendServer, size: Int, applicationName: String) throws -> WorkerDatabase {
        switch server.backend {
        case .mongo: return .mongodb(try server.connectMongo())
        case .postgres: return .postgresql(try server.connectPostgres(size: size, applicationName: applicationName))
        }
    }
}
