import AutoVoltMongo
import AutoVoltPostgres
import Foundation

/// The worker's two storage backends (issue 21): the conformance suites run each test on both.
public enum StorageBackend: String, CaseIterable, Sendable, CustomStringConvertible {
    case mongo, postgres
    public var description: String { rawValue }
}

public struct BackendServerError: Error, CustomStringConvertible {
    public let description: String
}

/// A server of the test's own for one backend, with a fresh, empty database on it: dev-mongo
/// (`DevMongoServer`) or a PostgreSQL 15 of its own (`PostgresServer`). Connections are made
/// by the caller (`connectMongo`, `connectPostgres`) and are the caller's to close; the server
/// stops when this goes.
public final class BackendServer: Sendable {
    public let backend: StorageBackend
    public let mongo: DevMongoServer?
    public let postgres: PostgresServer?
    /// The database's `mongodb://` URI or `postgresql://` URL.
    public let url: String
    /// dev-mongo's data file, when the data must outlive a `restart()`.
    private let mongoDataFile: URL?

    /// `name` prefixes the database's name. `keepsMongoData`: dev-mongo writes its data to a
    /// file, so that `restart()` finds it again (PostgreSQL always does).
    public init(_ backend: StorageBackend, name: String = "autovolt", keepsMongoData: Bool = false) throws {
        self.backend = backend
        let suffix = UUID().uuidString.prefix(6).lowercased()
        switch backend {
        case .mongo:
            let file = keepsMongoData
                ? FileManager.default.temporaryDirectory.appendingPathComponent("\(name)-\(suffix).json") : nil
            let server = try DevMongoServer(dataFile: file)
            mongo = server
            postgres = nil
            mongoDataFile = file
            url = server.uri(database: "\(name)_\(suffix)")
        case .postgres:
            let server = try PostgresServer()
            mongo = nil
            postgres = server
            mongoDataFile = nil
            url = server.url(database: try server.createDatabase("\(name)_\(suffix)"))
        }
    }

    deinit {
        mongo?.stop()
        postgres?.stop()
        if let mongoDataFile { try? FileManager.default.removeItem(at: mongoDataFile) }
    }

    /// A client of its own on the database (MongoDB only).
    public func connectMongo() throws -> MongoClient {
        guard backend == .mongo else { throw BackendServerError(description: "a MongoClient asked of the \(backend) backend") }
        return try MongoClient(uri: url)
    }

    /// A pool of its own on the database (PostgreSQL only).
    public func connectPostgres(size: Int = 4, applicationName: String) throws -> PostgresPool {
        guard backend == .postgres else { throw BackendServerError(description: "a PostgresPool asked of the \(backend) backend") }
        return try PostgresPool(url: url, size: size, applicationName: applicationName)
    }

    /// The server restarted with its data: dev-mongo stopped and started on the same port
    /// (`keepsMongoData` for the data to survive), PostgreSQL `pg_ctl restart -m immediate`
    /// (a crash; recovery replays the WAL). Connections made before may be dead.
    public func restart() throws {
        switch backend {
        case .mongo: try mongo?.restart()
        case .postgres: try postgres?.restart(mode: "immediate")
        }
    }
}
