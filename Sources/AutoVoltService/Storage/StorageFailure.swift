import AutoVoltMongo
import AutoVoltPostgres

/// What a stage does about a database error, whichever backend raised it (issue 21). Storage
/// protocols throw the backend's own typed error (`MongoError`, `PostgresError`); the stages
/// ask it this one question through `StorageFailure`, so a retry policy is written once.
public enum StorageDisposition: Sendable, Hashable {
    /// A unique key holds the row or document already: an outcome, not a failure.
    case duplicateKey
    /// This one document or row can never be stored as it is: set it aside, store the others.
    case refusedDocument
    /// It may pass by itself (an outage, a failover, a serialization failure, a deadlock): wait
    /// and retry.
    case transient
    /// Retry, but it will not pass by itself (authentication, a refused command, an unknown
    /// code): say so loudly. Never grounds to drop anything.
    case persistent
}

/// A database error a stage can classify without knowing the backend.
public protocol StorageFailure: Error, CustomStringConvertible {
    var storageDisposition: StorageDisposition { get }
    /// The server's code (MongoDB's number; PostgreSQL's SQLSTATE, as text) for logs and
    /// `store_refused` details.
    var storageCode: String { get }
    /// The server's or library's message, verbatim.
    var storageMessage: String { get }
}

extension StorageFailure {
    public var isTransientFailure: Bool { storageDisposition == .transient }
}

extension MongoError: StorageFailure {
    public var storageDisposition: StorageDisposition {
        switch disposition {
        case .duplicateKey: return .duplicateKey
        case .refusedDocument: return .refusedDocument
        case .transient: return .transient
        case .persistent: return .persistent
        }
    }
    public var storageCode: String { String(code) }
    public var storageMessage: String { message }
}

extension PostgresError: StorageFailure {
    /// A row refused for good only when the statement wrote one row: a multi-row statement's
    /// data exception says nothing of which row, so the caller splits the batch (as for MongoDB).
    public var storageDisposition: StorageDisposition {
        if isUniqueViolation { return .duplicateKey }
        if isTransient { return .transient }
        if refusesRow { return .refusedDocument }
        return .persistent
    }
    public var storageCode: String { sqlState ?? "connection" }
    public var storageMessage: String { message }
}

/// The classification of any error a storage call threw: a `StorageFailure` says its own; any
/// other error (a bug, a decoding problem of ours) is persistent, never grounds to drop data.
public func storageDisposition(of error: any Error) -> StorageDisposition {
    (error as? any StorageFailure)?.storageDisposition ?? .persistent
}
