import Foundation

/// Every failure of this module: libpq's and the server's, with the server's SQLSTATE.
public struct PostgresError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Hashable {
        /// The server could not be reached or the connection broke: retry after a pause.
        case connection
        /// The server answered a statement with an error (`sqlState` says which).
        case server
        /// The connection URL could not be used.
        case invalidURL
        /// Something this module did not expect from libpq (an unknown result status).
        case protocolError
    }

    public let kind: Kind
    /// The server's five-character SQLSTATE (e.g. "23505"), nil for errors that are not the server's.
    public let sqlState: String?
    /// libpq's or the server's message, verbatim (one line).
    public let message: String

    public init(kind: Kind, sqlState: String? = nil, message: String) {
        self.kind = kind
        self.sqlState = sqlState
        self.message = message.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// PostgreSQL's text cannot hold a NUL character: refused like the server refuses an invalid
    /// byte sequence (22021), before anything is sent (libpq's C strings would cut it short).
    static let nulCharacter = PostgresError(kind: .server, sqlState: "22021",
                                            message: "a value holds a NUL character (0x00), which PostgreSQL text cannot store")

    /// unique_violation
    public var isUniqueViolation: Bool { sqlState == "23505" }
    /// serialization_failure or deadlock_detected: the transaction can be run again as it was.
    public var isSerializationFailure: Bool { sqlState == "40001" || sqlState == "40P01" }

    /// True when waiting and trying again may succeed by itself: the connection (class 08, or
    /// lost), a serialization failure or deadlock (40001, 40P01), the server shutting down or
    /// starting (57P01-57P03), too many connections or out of resources (class 53), a lock not
    /// available (55P03), a statement cancelled by a timeout (57014).
    public var isTransient: Bool {
        if kind == .connection { return true }
        guard kind == .server, let state = sqlState else { return false }
        if state.hasPrefix("08") || state.hasPrefix("53") { return true }
        return ["40001", "40P01", "57P01", "57P02", "57P03", "55P03", "57014"].contains(state)
    }

    /// The value of one row can never be stored as it is: a data exception (class 22: a number
    /// out of range, invalid text, a NUL in a string) or an integrity constraint other than a
    /// unique key (class 23: not null, check, foreign key).
    public var refusesRow: Bool {
        guard kind == .server, let state = sqlState else { return false }
        return state.hasPrefix("22") || (state.hasPrefix("23") && state != "23505")
    }

    public var description: String {
        switch kind {
        case .connection: return "PostgreSQL connection: \(message)"
        case .server: return "PostgreSQL error \(sqlState ?? "?"): \(message)"
        case .invalidURL: return "PostgreSQL URL: \(message)"
        case .protocolError: return "PostgreSQL protocol: \(message)"
        }
    }
}
