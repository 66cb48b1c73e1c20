import CMongoc

/// Every failure of this module. Errors reported by libmongoc all pass through one funnel,
/// `init(bsonError:reply:)`, which classifies libmongoc's error domain (error API version 2).
public struct MongoError: Error, CustomStringConvertible, Sendable {
    public enum Kind: Sendable, Hashable {
        /// Server selection, socket, network or authentication failure: the database is not
        /// reachable right now. Back off and retry (see `isTransient`).
        case connection
        /// The server replied `ok: 0` (or reported a write error) with this server error code.
        case server(code: Int)
        /// The write was applied on the primary but the write concern was not satisfied
        /// (e.g. `wtimeout` waiting for a majority). Retrying an idempotent write is safe.
        case writeConcern
        /// The connection string could not be parsed.
        case invalidURI
        /// The request was refused before reaching the server (bad document, bad options,
        /// client closed, ...): a programming or data error, retrying does not help.
        case invalidArgument
        /// The server's reply was not understood (corrupt BSON, bad wire version, dead cursor).
        case protocolError
    }

    public let kind: Kind
    /// libmongoc's error code, which for server errors is the server's code.
    public let code: Int
    /// libmongoc's error domain (`mongoc_error_domain_t`), 0 for errors raised by this module.
    public let domain: Int
    /// The library's message, verbatim.
    public let message: String
    /// `errorLabels` from the server reply, if any (e.g. `RetryableWriteError`).
    public let errorLabels: [String]

    public init(kind: Kind, code: Int, domain: Int, message: String, errorLabels: [String] = []) {
        self.kind = kind
        self.code = code
        self.domain = domain
        self.message = message
        self.errorLabels = errorLabels
    }

    /// The funnel: classifies a `bson_error_t` filled in by libmongoc/libbson. `reply` is the
    /// server reply when there was one (its `errorLabels` are kept).
    public init(bsonError error: bson_error_t, reply: BSONDocument? = nil) {
        let domain = Int(error.domain)
        let code = Int(error.code)
        self.init(kind: Self.classify(domain: domain, code: code), bsonError: error, reply: reply)
    }

    /// The funnel with the kind decided by the caller (used for URI parsing errors).
    init(kind: Kind, bsonError error: bson_error_t, reply: BSONDocument? = nil) {
        let message = withUnsafeBytes(of: error.message) { raw -> String in
            let bytes = raw.prefix(while: { $0 != 0 })
            return String(decoding: bytes, as: UTF8.self)
        }
        let labels = reply?["errorLabels"]?.arrayValue?.compactMap(\.stringValue) ?? []
        self.init(kind: kind, code: Int(error.code), domain: Int(error.domain),
                  message: message.isEmpty ? "unknown libmongoc error" : message,
                  errorLabels: labels)
    }

    static func classify(domain: Int, code: Int) -> Kind {
        switch UInt32(truncatingIfNeeded: domain) {
        case MONGOC_ERROR_SERVER.rawValue,
             MONGOC_ERROR_QUERY.rawValue,   // legacy error API only
             MONGOC_ERROR_INSERT.rawValue:  // legacy error API only
            return .server(code: code)
        case MONGOC_ERROR_WRITE_CONCERN.rawValue:
            return .writeConcern
        case MONGOC_ERROR_SERVER_SELECTION.rawValue,
             MONGOC_ERROR_STREAM.rawValue,
             MONGOC_ERROR_SASL.rawValue,
             MONGOC_ERROR_SCRAM.rawValue:
            return .connection
        case MONGOC_ERROR_CLIENT.rawValue:
            switch UInt32(truncatingIfNeeded: code) {
            case MONGOC_ERROR_CLIENT_TOO_BIG.rawValue, MONGOC_ERROR_CLIENT_TOO_SMALL.rawValue:
                return .invalidArgument
            default:
                return .connection
            }
        case MONGOC_ERROR_PROTOCOL.rawValue, MONGOC_ERROR_CURSOR.rawValue:
            return .protocolError
        case 0:
            return .protocolError  // a failure without an error: should not happen
        default:
            // BSON, MATCHER, NAMESPACE, COMMAND, COLLECTION, GRIDFS, TRANSACTION, POOL, ...
            return .invalidArgument
        }
    }

    /// Server error codes that mean "not now" (the retryable-writes list plus a few).
    static let transientServerCodes: Set<Int> = [
        6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
    ]

    /// True when retrying later may succeed: the database is unreachable (authentication failures
    /// excepted), a write concern was not satisfied in time, or the server said so.
    public var isTransient: Bool {
        switch kind {
        case .connection:
            let authFailure = domain == Int(MONGOC_ERROR_SASL.rawValue)
                || domain == Int(MONGOC_ERROR_SCRAM.rawValue)
                || (domain == Int(MONGOC_ERROR_CLIENT.rawValue)
                    && code == Int(MONGOC_ERROR_CLIENT_AUTHENTICATE.rawValue))
            return !authFailure
        case .writeConcern:
            return true
        case .server(let code):
            return Self.transientServerCodes.contains(code)
                || errorLabels.contains("RetryableWriteError")
                || errorLabels.contains("TransientTransactionError")
        case .invalidURI, .invalidArgument, .protocolError:
            return false
        }
    }

    /// Server codes that refuse one document for what it holds, not the database's state:
    /// BadValue, DollarPrefixedFieldName, InvalidDBRef, EmptyFieldName, DottedFieldName,
    /// DocumentValidationFailure, BSONObjectTooLarge, KeyTooLong. Retrying the same document
    /// fails the same way, so it must not hold back the documents after it.
    static let documentRefusedServerCodes: Set<Int> = [2, 52, 55, 56, 57, 121, 10334, 17280]

    /// True when this error is about one document and retrying it cannot help: the server
    /// refused what it holds, or it could not even be encoded (a NUL in a key, too large).
    /// An outage, an authentication failure or an unknown server error is never this.
    public var refusesDocument: Bool {
        switch kind {
        case .invalidArgument: true
        case .server(let code): Self.documentRefusedServerCodes.contains(code) && !isTransient
        default: false
        }
    }

    /// A unique index refused the write (E11000).
    public var isDuplicateKey: Bool {
        if case .server(let code) = kind { return code == 11000 || code == 11001 }
        return false
    }

    public var description: String {
        let k: String
        switch kind {
        case .connection: k = "connection"
        case .server(let code): k = "server error \(code)"
        case .writeConcern: k = "write concern error \(code)"
        case .invalidURI: k = "invalid URI"
        case .invalidArgument: k = "invalid argument"
        case .protocolError: k = "protocol error"
        }
        return "MongoDB \(k): \(message)"
    }
}
