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

    /// What an error is about: the request as a whole, or one document of it.
    public enum Scope: Sendable, Hashable {
        /// The request as a whole: the network, the client, or the server refusing or failing
        /// the command (`ok: 0`, a write concern error). Never "this document", whatever the code.
        case request
        /// One document of the request: a per-document write error in a write reply, or a
        /// document the client could not encode or send (a NUL in a key, too large).
        case document
    }

    /// What to do about an error. The one classification of this module: `isTransient`,
    /// `refusesDocument` and `WriteError`'s answers all come from it.
    public enum Disposition: Sendable, Hashable {
        /// A unique index holds the document already: an outcome, not a failure.
        case duplicateKey
        /// This one document can never be stored as it is (only known document refusals, and
        /// only for a document-level error): set it aside, store the others.
        case refusedDocument
        /// It may pass by itself (an outage, a stepped-down primary, a write concern timeout):
        /// wait and retry.
        case transient
        /// Retry, but it will not pass by itself (authentication, a command the deployment
        /// refuses, an unknown code): say so loudly. Never grounds to drop anything.
        case persistent
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
    /// The request or one document of it (see `Scope`).
    public let scope: Scope

    public init(kind: Kind, code: Int, domain: Int, message: String, errorLabels: [String] = [], scope: Scope = .request) {
        self.kind = kind
        self.code = code
        self.domain = domain
        self.message = message
        self.errorLabels = errorLabels
        self.scope = scope
    }

    /// The same error, about one document of the request.
    public var aboutOneDocument: MongoError {
        MongoError(kind: kind, code: code, domain: domain, message: message, errorLabels: errorLabels, scope: .document)
    }

    /// The same error about the request as a whole, its message prefixed with `context`: for a
    /// failure that must hold back the whole batch (for example the rejection of a message
    /// could not be recorded, so the message must stay where it is).
    public func aboutTheRequest(_ context: String) -> MongoError {
        MongoError(kind: kind, code: code, domain: domain, message: "\(context): \(message)", errorLabels: errorLabels, scope: .request)
    }

    /// The funnel: classifies a `bson_error_t` filled in by libmongoc/libbson. `reply` is the
    /// server reply when there was one (its `errorLabels` are kept).
    public init(bsonError error: bson_error_t, reply: BSONDocument? = nil) {
        let domain = Int(error.domain)
        let code = Int(error.code)
        self.init(kind: Self.classify(domain: domain, code: code), bsonError: error, reply: reply)
    }

    /// True for libmongoc's refusals of a document before sending it: invalid keys ("invalid
    /// document for insert", MONGOC_ERROR_COMMAND_INVALID_ARG) and a document too large for
    /// the server (MONGOC_ERROR_BSON_INVALID, MONGOC_ERROR_CLIENT_TOO_BIG). Only meaningful for
    /// a write whose options are the module's own (they are valid), so these name a document.
    var isClientSideDocumentRefusal: Bool {
        switch UInt32(truncatingIfNeeded: domain) {
        case MONGOC_ERROR_BSON.rawValue: return true
        case MONGOC_ERROR_COMMAND.rawValue: return code == Int(MONGOC_ERROR_COMMAND_INVALID_ARG.rawValue)
        case MONGOC_ERROR_CLIENT.rawValue: return code == Int(MONGOC_ERROR_CLIENT_TOO_BIG.rawValue)
        default: return false
        }
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
                  errorLabels: labels, scope: .request)
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

    /// Server error codes that mean "not now" (the retryable-writes list plus a few):
    /// HostUnreachable, HostNotFound, NetworkTimeout, ShutdownInProgress, PrimarySteppedDown,
    /// ExceededTimeLimit, SocketException, NotWritablePrimary, InterruptedAtShutdown,
    /// InterruptedDueToReplStateChange, NotPrimaryNoSecondaryOk, NotPrimaryOrSecondary.
    static let transientServerCodes: Set<Int> = [
        6, 7, 89, 91, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
    ]

    /// Write concern error codes that do not pass by waiting: UnknownReplWriteConcern (79),
    /// UnsatisfiableWriteConcern (100). Everything else (WriteConcernFailed 64, a wtimeout, a
    /// stepping-down primary) is waited out.
    static let persistentWriteConcernCodes: Set<Int> = [79, 100]

    /// The known refusals of one document for what it holds, not the database's state:
    /// BadValue, DollarPrefixedFieldName, InvalidIdField, InvalidDBRef, EmptyFieldName,
    /// DottedFieldName, DocumentValidationFailure, BSONObjectTooLarge, KeyTooLong, and a document
    /// grown past the size limit by an update (17419); in a write reply's `writeErrors` also
    /// libmongoc's own "document is too large for the cluster" (MONGOC_ERROR_BSON_INVALID, 18).
    /// Saying the same document again fails the same way, so it must not hold back the others.
    /// Only a document-level error (`scope == .document`) is read against this list: a command
    /// refused with BadValue (a write concern the deployment rejects) is about the request.
    static let documentRefusalCodes: Set<Int> = [2, 18, 52, 53, 55, 56, 57, 121, 10334, 17280, 17419]

    static let duplicateKeyCodes: Set<Int> = [11000, 11001]

    /// The classification (see `Disposition`).
    public var disposition: Disposition {
        if errorLabels.contains("RetryableWriteError") || errorLabels.contains("TransientTransactionError") {
            return .transient
        }
        switch kind {
        case .connection:
            let authFailure = domain == Int(MONGOC_ERROR_SASL.rawValue)
                || domain == Int(MONGOC_ERROR_SCRAM.rawValue)
                || (domain == Int(MONGOC_ERROR_CLIENT.rawValue)
                    && code == Int(MONGOC_ERROR_CLIENT_AUTHENTICATE.rawValue))
            return authFailure ? .persistent : .transient
        case .writeConcern:
            return Self.persistentWriteConcernCodes.contains(code) ? .persistent : .transient
        case .server(let code):
            if Self.duplicateKeyCodes.contains(code) { return .duplicateKey }
            if Self.transientServerCodes.contains(code) { return .transient }
            if scope == .document && Self.documentRefusalCodes.contains(code) { return .refusedDocument }
            return .persistent
        case .invalidArgument:
            // A document that cannot be encoded or sent is refused for good; anything else
            // invalid (a closed client, bad options) is ours to fix, not the document's.
            return scope == .document ? .refusedDocument : .persistent
        case .invalidURI, .protocolError:
            return .persistent
        }
    }

    /// True when retrying later may succeed by itself: the database is unreachable
    /// (authentication failures excepted), a write concern was not satisfied in time, or the
    /// server said so.
    public var isTransient: Bool { disposition == .transient }

    /// True when this error is about one document and retrying it cannot help: the server
    /// refused what it holds with a known code, or it could not even be encoded (a NUL in a
    /// key, too large). An outage, an authentication failure, an unknown code or anything said
    /// about the request as a whole is never this.
    public var refusesDocument: Bool { disposition == .refusedDocument }

    /// The write was applied but the write concern was not satisfied (e.g. `wtimeout` waiting
    /// for a majority that is not there).
    public var isWriteConcernFailure: Bool { kind == .writeConcern }

    /// The write concern asked for cannot be satisfied by this deployment, however long one
    /// waits: UnknownReplWriteConcern (79) or UnsatisfiableWriteConcern (100), as a write concern
    /// error (the write applied) or as the answer to the command as a whole. An operator must
    /// change the write concern or the deployment. (Classified `.persistent`.)
    public var isUnsatisfiableWriteConcern: Bool {
        guard Self.persistentWriteConcernCodes.contains(code) else { return false }
        switch kind {
        case .writeConcern: return true
        case .server: return scope == .request
        default: return false
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
