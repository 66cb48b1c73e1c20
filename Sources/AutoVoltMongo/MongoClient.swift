import CMongoc
import Foundation
import Synchronization
import NIOPosix

// MARK: - Options and results

/// The write concern sent with a write (through `mongoc_write_concern_t`).
public enum WriteConcern: Sendable, Hashable {
    /// `w: "majority"`, `wtimeout: timeoutMS` (0 = wait forever). `journal: true` adds `j: true`;
    /// `false` leaves `j` out, so the server's default applies (on a replica set
    /// `writeConcernMajorityJournalDefault`, true by default, journals majority writes anyway).
    case majority(journal: Bool, timeoutMS: Int)
    /// `w: 1`: the primary has applied the write, in memory. A crash of the server can lose it.
    case acknowledged
    /// `w: 1, j: true`: the primary has the write in its on-disk journal before it answers.
    /// What a standalone can promise; a caller that deletes its own copy once the write is
    /// acknowledged needs at least this.
    case journaled
    /// `w: n`, n >= 1. Unacknowledged writes (`w: 0`) are refused: results could not be reported.
    case w(Int)

    /// Appends `writeConcern` to `opts`.
    func append(to opts: OpaquePointer) throws(MongoError) {
        guard let wc = mongoc_write_concern_new() else {
            throw MongoError(kind: .invalidArgument, code: 0, domain: 0, message: "mongoc_write_concern_new failed")
        }
        defer { mongoc_write_concern_destroy(wc) }
        switch self {
        case .majority(let journal, let timeoutMS):
            mongoc_write_concern_set_w(wc, MONGOC_WRITE_CONCERN_W_MAJORITY)
            if journal { mongoc_write_concern_set_journal(wc, true) }
            if timeoutMS > 0 { mongoc_write_concern_set_wtimeout_int64(wc, Int64(timeoutMS)) }
        case .acknowledged:
            mongoc_write_concern_set_w(wc, 1)
        case .journaled:
            mongoc_write_concern_set_w(wc, 1)
            mongoc_write_concern_set_journal(wc, true)
        case .w(let n):
            guard n >= 1, let w = Int32(exactly: n) else {
                throw MongoError(kind: .invalidArgument, code: 0, domain: 0,
                                 message: "write concern w:\(n) is not supported (need w >= 1)")
            }
            mongoc_write_concern_set_w(wc, w)
        }
        guard mongoc_write_concern_append(wc, opts) else {
            throw MongoError(kind: .invalidArgument, code: 0, domain: 0, message: "invalid write concern \(self)")
        }
    }

    /// The `writeConcern` document sent with every write, as libmongoc builds it
    /// (e.g. `{"w": "majority", "j": true, "wtimeout": 10000}`).
    public var document: BSONDocument {
        get throws(MongoError) {
            let opts = try BSONDocument().makeBSON()
            try append(to: opts.pointer)
            let doc = try BSONDocument(copying: opts.pointer)
            return doc["writeConcern"]?.documentValue ?? [:]
        }
    }
}

extension WriteConcern: CustomStringConvertible {
    /// `w:"majority" j:true wtimeout:10000ms`, `w:1 j:true`, `w:1`.
    public var description: String {
        switch self {
        case .majority(let journal, let timeoutMS):
            return "w:\"majority\"" + (journal ? " j:true" : "") + (timeoutMS > 0 ? " wtimeout:\(timeoutMS)ms" : "")
        case .acknowledged: return "w:1"
        case .journaled: return "w:1 j:true"
        case .w(let n): return "w:\(n)"
        }
    }
}

/// One document (or operation) refused by the server inside an otherwise successful write.
public struct WriteError: Sendable, Hashable {
    /// Position of the document or operation in the request.
    public let index: Int
    public let code: Int
    public let message: String
    public var isDuplicateKey: Bool { code == 11000 || code == 11001 }
    /// What to do about it: `MongoError`'s one classification, for an error about one document.
    public var disposition: MongoError.Disposition { asMongoError.disposition }
    /// The server refused this one document with a known refusal code (a validator, a size or
    /// key limit) and saying it again will not help. A duplicate key, a transient code (a
    /// stepped-down primary, a shutdown) and any code not known to refuse a document are not
    /// this: they are retried with the batch.
    public var refusesDocument: Bool { disposition == .refusedDocument }
    public var asMongoError: MongoError {
        MongoError(kind: .server(code: code), code: code, domain: 0, message: message, scope: .document)
    }

    public init(index: Int, code: Int, message: String) {
        self.index = index
        self.code = code
        self.message = message
    }
}

extension Array where Element == WriteError {
    /// Throws the first error that is not a duplicate key. Duplicates are outcomes the caller
    /// handles itself (an earlier, interrupted attempt; another writer that got there first).
    public func throwUnlessDuplicateKeys() throws(MongoError) {
        if let error = first(where: { !$0.isDuplicateKey }) { throw error.asMongoError }
    }
}

public struct InsertManyResult: Sendable, Hashable {
    public let insertedCount: Int
    /// Per-document errors (for example duplicate keys): results, not failures.
    public let writeErrors: [WriteError]
}

public struct UpdateResult: Sendable, Hashable {
    public let matchedCount: Int
    public let modifiedCount: Int
    /// The `_id` of the upserted document, when the update inserted one.
    public let upsertedID: BSON?
}

public enum WriteModel: Sendable, Hashable {
    case insertOne(BSONDocument)
    case updateOne(filter: BSONDocument, update: BSONDocument, upsert: Bool)
    case updateMany(filter: BSONDocument, update: BSONDocument, upsert: Bool)
    case replaceOne(filter: BSONDocument, replacement: BSONDocument, upsert: Bool)
    case deleteOne(BSONDocument)
    case deleteMany(BSONDocument)
}

public struct BulkWriteResult: Sendable, Hashable {
    public let insertedCount: Int
    public let matchedCount: Int
    public let modifiedCount: Int
    public let deletedCount: Int
    public let upsertedCount: Int
    /// Operation index -> `_id` of the document it upserted.
    public let upsertedIDs: [Int: BSON]
    /// Per-operation errors (for example duplicate keys): results, not failures.
    public let writeErrors: [WriteError]
}

public struct IndexModel: Sendable, Hashable {
    public var keys: BSONDocument
    public var name: String
    public var unique: Bool
    /// TTL: documents expire this many seconds after the (date) field in `keys`.
    public var expireAfterSeconds: Int?
    public var partialFilterExpression: BSONDocument?

    public init(keys: BSONDocument, name: String, unique: Bool = false,
                expireAfterSeconds: Int? = nil, partialFilterExpression: BSONDocument? = nil) {
        self.keys = keys
        self.name = name
        self.unique = unique
        self.expireAfterSeconds = expireAfterSeconds
        self.partialFilterExpression = partialFilterExpression
    }

    var document: BSONDocument {
        var d: BSONDocument = ["key": .document(keys), "name": .string(name)]
        if unique { d["unique"] = true }
        if let expireAfterSeconds { d["expireAfterSeconds"] = .int64(Int64(expireAfterSeconds)) }
        if let partialFilterExpression { d["partialFilterExpression"] = .document(partialFilterExpression) }
        return d
    }
}

// MARK: - libmongoc initialisation

/// `mongoc_init()` exactly once per process (a global `let` is initialised lazily and atomically),
/// and libmongoc's logging routed through `MongoLog`. `mongoc_cleanup()` is never called: the
/// process exit reclaims everything.
private let mongocInitialised: Void = {
    mongoc_log_set_handler({ level, domain, message, _ in
        let lvl = MongoLog.Level(rawValue: Int(level.rawValue)) ?? .trace
        MongoLog.emit(lvl, domain.map { String(cString: $0) } ?? "", message.map { String(cString: $0) } ?? "")
    }, nil)
    mongoc_init()
    removeStaleCounterFiles()
}()

/// libmongoc keeps performance counters in `/dev/shm/mongoc-<pid>` and removes the file at a
/// normal exit. A process killed with SIGKILL leaves it behind; a later process that gets the
/// same pid (pid_max is often 32768) then prints "Falling back to malloc for counters" on
/// stderr while the library loads, before any code of ours runs (seen in CI: a one-shot
/// command's one-line error became two lines). So each process removes the files of dead
/// processes of its user. `MONGOC_DISABLE_SHM=1` in the environment (the systemd unit sets it)
/// avoids the files altogether.
func removeStaleCounterFiles(directory: String = "/dev/shm") {
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: directory) else { return }
    let me = geteuid()
    for name in names where name.hasPrefix("mongoc-") {
        guard let pid = pid_t(name.dropFirst("mongoc-".count)), pid > 0, pid != getpid() else { continue }
        var info = stat()
        let path = directory + "/" + name
        guard stat(path, &info) == 0, info.st_uid == me else { continue }
        if kill(pid, 0) != 0 && errno == ESRCH { unlink(path) }
    }
}

/// libmongoc's own log messages. Its default logger prints every level, DEBUG included (e.g. a
/// line per failed server-monitor check every 500 ms during an outage), to stderr. Here the
/// default prints `warning` and more severe to stderr; install a handler to route them to the
/// application's logger instead.
public enum MongoLog {
    public enum Level: Int, Sendable, Comparable {
        case error = 0, critical, warning, message, info, debug, trace
        public static func < (a: Level, b: Level) -> Bool { a.rawValue < b.rawValue }
    }

    public typealias Handler = @Sendable (_ level: Level, _ domain: String, _ message: String) -> Void

    private static let handler = Mutex<Handler>({ level, domain, message in
        guard level <= .warning else { return }
        // write(2), not FileHandle.write, which traps when stderr is a closed pipe.
        var line = "libmongoc \(level) [\(domain)]: \(message)\n"
        line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
    })

    /// Replaces the handler (process-wide). It is called on libmongoc's threads; keep it quick.
    public static func setHandler(_ handler: @escaping Handler) {
        _ = mongocInitialised
        Self.handler.withLock { $0 = handler }
    }

    fileprivate static func emit(_ level: Level, _ domain: String, _ message: String) {
        let current = handler.withLock { $0 }
        current(level, domain, message)
    }
}

// MARK: - Client

/// A MongoDB client over a `mongoc_client_pool_t`.
///
/// Every method here is **blocking** (network I/O inside libmongoc): call it from a thread of
/// your own, or through `MongoExecutor` from async code, never directly on Swift's cooperative
/// thread pool.
///
/// `@unchecked Sendable` is sound because `mongoc_client_pool_t` is thread-safe, and each
/// operation pops its own `mongoc_client_t`, uses it on the calling thread only, and pushes it
/// back; the only mutable Swift state (open/closed, in-flight count, cached hello) is guarded by
/// `state`.
public final class MongoClient: @unchecked Sendable {
    /// The database every operation addresses: the URI's path, default `autovolt_power`.
    public let databaseName: String

    /// The replica set the URI names (`replicaSet=`), if any. Without it, a URI of one host makes
    /// libmongoc talk to that server alone (a direct connection) and never follow a failover.
    public let uriReplicaSet: String?
    /// `directConnection=` in the URI, when it says.
    public let uriDirectConnection: Bool?
    /// `mongodb+srv://`: the hosts (and options) come from DNS.
    public let uriIsSRV: Bool
    /// The URI as given, for `replicaSetAdvice` (which masks it: `masked(_:)`) and `longRunning`.
    private let uriText: String

    private let state = NSCondition()
    private var pool: OpaquePointer?  // nil once closed
    private var inFlight = 0
    private var cachedIsReplicaSet: Bool?
    private var longRunningClient: MongoClient?

    /// The socket timeout of a client, unless its URI sets one: an answer that takes longer
    /// fails the operation with a network error (libmongoc's default of 300000 would pin a
    /// thread for 5 minutes on a hung server).
    public static let defaultSocketTimeoutMS = 60_000
    /// The socket timeout of `longRunning()` at least: for operations that legitimately keep the
    /// server busy for minutes before it answers (an index build over a large collection, a
    /// group over every event).
    public static let longOperationSocketTimeoutMS = 3_600_000

    /// `socketTimeoutMS` in force: the URI's, else `defaultSocketTimeoutMS` (or what `init` was
    /// given), raised to the floor `init` was given.
    public let socketTimeoutMS: Int
    private let appName: String
    private let socketTimeoutFloorMS: Int?

    /// Parses `uri` and creates the pool (no I/O happens until the first operation).
    ///
    /// Unless the URI sets them, `serverSelectionTimeoutMS` and `connectTimeoutMS` are 5000 (an
    /// outage fails within about 5 s, and the caller backs off) and `socketTimeoutMS` is
    /// `socketTimeoutMS` (default 60000, `defaultSocketTimeoutMS`). `socketTimeoutFloorMS`, when
    /// given, raises the socket timeout to at least that, whatever the URI says (`longRunning`).
    public init(uri: String, appName: String = "autovolt-worker", socketTimeoutMS: Int = MongoClient.defaultSocketTimeoutMS,
                socketTimeoutFloorMS: Int? = nil) throws(MongoError) {
        _ = mongocInitialised
        var error = bson_error_t()
        guard let parsed = mongoc_uri_new_with_error(uri, &error) else {
            throw MongoError(kind: .invalidURI, bsonError: error)
        }
        defer { mongoc_uri_destroy(parsed) }
        let defaults: [(String, Int32)] = [
            (MONGOC_URI_SERVERSELECTIONTIMEOUTMS, 5000),
            (MONGOC_URI_CONNECTTIMEOUTMS, 5000),
            (MONGOC_URI_SOCKETTIMEOUTMS, Int32(clamping: socketTimeoutMS)),
        ]
        for (option, value) in defaults where !mongoc_uri_has_option(parsed, option) {
            _ = mongoc_uri_set_option_as_int32(parsed, option, value)
        }
        if let floor = socketTimeoutFloorMS,
           Int(mongoc_uri_get_option_as_int32(parsed, MONGOC_URI_SOCKETTIMEOUTMS, 0)) < floor {
            _ = mongoc_uri_set_option_as_int32(parsed, MONGOC_URI_SOCKETTIMEOUTMS, Int32(clamping: floor))
        }
        self.socketTimeoutMS = Int(mongoc_uri_get_option_as_int32(parsed, MONGOC_URI_SOCKETTIMEOUTMS, 0))
        self.appName = appName
        self.socketTimeoutFloorMS = socketTimeoutFloorMS
        if !mongoc_uri_has_option(parsed, MONGOC_URI_APPNAME) {
            _ = mongoc_uri_set_appname(parsed, appName)
        }
        if let db = mongoc_uri_get_database(parsed), db.pointee != 0 {
            databaseName = String(cString: db)
        } else {
            databaseName = "autovolt_power"
        }
        uriReplicaSet = mongoc_uri_get_replica_set(parsed).map { String(cString: $0) }
        uriDirectConnection = mongoc_uri_has_option(parsed, MONGOC_URI_DIRECTCONNECTION)
            ? mongoc_uri_get_option_as_bool(parsed, MONGOC_URI_DIRECTCONNECTION, false) : nil
        uriIsSRV = uri.hasPrefix("mongodb+srv://")
        uriText = uri
        guard let pool = mongoc_client_pool_new_with_error(parsed, &error) else {
            throw MongoError(kind: .invalidURI, bsonError: error)
        }
        mongoc_client_pool_set_error_api(pool, MONGOC_ERROR_API_VERSION_2)
        self.pool = pool
    }

    deinit { close() }

    /// Destroys the pool. Waits for operations in flight; later calls throw `.invalidArgument`.
    /// Idempotent.
    public func close() {
        state.lock()
        guard let pool else { state.unlock(); return }
        self.pool = nil
        let long = longRunningClient
        longRunningClient = nil
        while inFlight > 0 { state.wait() }
        state.unlock()
        long?.close()
        mongoc_client_pool_destroy(pool)
    }

    /// A client of the same URI whose socket timeout is at least `longOperationSocketTimeoutMS`,
    /// for the few operations that keep the server busy longer than the socket timeout before
    /// it answers: building indexes at start, a group over every event. Made on first use and
    /// kept (a pool of its own; this client's operations keep their short timeout, so a hung
    /// server is still noticed within a minute everywhere else). Closed with this client.
    public func longRunning() throws(MongoError) -> MongoClient {
        if let floor = socketTimeoutFloorMS, socketTimeoutMS >= floor { return self }
        if socketTimeoutMS >= Self.longOperationSocketTimeoutMS { return self }
        state.lock()
        defer { state.unlock() }
        guard pool != nil else {
            throw MongoError(kind: .invalidArgument, code: 0, domain: 0, message: "MongoClient is closed")
        }
        if let longRunningClient { return longRunningClient }
        let long = try MongoClient(uri: uriText, appName: appName, socketTimeoutMS: socketTimeoutMS,
                                   socketTimeoutFloorMS: Self.longOperationSocketTimeoutMS)
        longRunningClient = long
        return long
    }

    // MARK: Plumbing

    private func withClient<T>(_ body: (OpaquePointer) throws(MongoError) -> T) throws(MongoError) -> T {
        state.lock()
        guard let pool else {
            state.unlock()
            throw MongoError(kind: .invalidArgument, code: 0, domain: 0, message: "MongoClient is closed")
        }
        inFlight += 1
        state.unlock()
        defer {
            state.lock()
            inFlight -= 1
            if inFlight == 0 { state.broadcast() }
            state.unlock()
        }
        guard let client = mongoc_client_pool_pop(pool) else {
            throw MongoError(kind: .connection, code: 0, domain: 0, message: "mongoc_client_pool_pop returned no client")
        }
        defer { mongoc_client_pool_push(pool, client) }
        return try body(client)
    }

    private func withCollection<T>(_ name: String, _ body: (OpaquePointer) throws(MongoError) -> T) throws(MongoError) -> T {
        try withClient { (client) throws(MongoError) -> T in
            guard let collection = mongoc_client_get_collection(client, databaseName, name) else {
                throw MongoError(kind: .invalidArgument, code: 0, domain: 0, message: "invalid collection name \(name.debugDescription)")
            }
            defer { mongoc_collection_destroy(collection) }
            return try body(collection)
        }
    }

    /// Builds an opts document, with the write concern when given.
    private static func options(_ doc: BSONDocument, _ writeConcern: WriteConcern? = nil) throws(MongoError) -> OwnedBSON {
        let opts = try doc.makeBSON()
        if let writeConcern { try writeConcern.append(to: opts.pointer) }
        return opts
    }

    /// Drains and destroys a cursor; a cursor error goes through the funnel.
    private static func drain(_ cursor: OpaquePointer?) throws(MongoError) -> [BSONDocument] {
        guard let cursor else {
            throw MongoError(kind: .invalidArgument, code: 0, domain: 0, message: "libmongoc returned no cursor")
        }
        defer { mongoc_cursor_destroy(cursor) }
        var out: [BSONDocument] = []
        var current: OpaquePointer? = nil
        while mongoc_cursor_next(cursor, &current) {
            if let current { out.append(try BSONDocument(copying: current)) }
        }
        var error = bson_error_t()
        var reply: OpaquePointer? = nil
        if mongoc_cursor_error_document(cursor, &error, &reply) {
            throw MongoError(bsonError: error, reply: reply.flatMap { try? BSONDocument(copying: $0) })
        }
        return out
    }

    /// Hands a cursor's documents to `body` in batches of at most `batchSize`, then destroys it;
    /// a cursor error goes through the funnel. Holds one batch at a time.
    private static func drain(_ cursor: OpaquePointer?, batchSize: Int,
                              _ body: ([BSONDocument]) throws(MongoError) -> Void) throws(MongoError) {
        guard let cursor else {
            throw MongoError(kind: .invalidArgument, code: 0, domain: 0, message: "libmongoc returned no cursor")
        }
        defer { mongoc_cursor_destroy(cursor) }
        let size = max(1, batchSize)
        var batch: [BSONDocument] = []
        batch.reserveCapacity(min(size, 1024))
        var current: OpaquePointer? = nil
        while mongoc_cursor_next(cursor, &current) {
            if let current { batch.append(try BSONDocument(copying: current)) }
            if batch.count >= size {
                try body(batch)
                batch.removeAll(keepingCapacity: true)
            }
        }
        var error = bson_error_t()
        var reply: OpaquePointer? = nil
        if mongoc_cursor_error_document(cursor, &error, &reply) {
            throw MongoError(bsonError: error, reply: reply.flatMap { try? BSONDocument(copying: $0) })
        }
        if !batch.isEmpty { try body(batch) }
    }

    private static func writeErrors(in reply: BSONDocument) -> [WriteError] {
        (reply["writeErrors"]?.arrayValue ?? []).compactMap { value in
            guard let e = value.documentValue else { return nil }
            return WriteError(index: e["index"]?.intValue ?? -1,
                              code: e["code"]?.intValue ?? 0,
                              message: e["errmsg"]?.stringValue ?? e["err"]?.stringValue ?? "")
        }
    }

    /// The first write concern error of a write reply (`writeConcernErrors` as merged by
    /// libmongoc, or a command's `writeConcernError`) as a `.writeConcern` error.
    private static func writeConcernError(in reply: BSONDocument) -> MongoError? {
        let wce = reply["writeConcernErrors"]?.arrayValue?.first?.documentValue
            ?? reply["writeConcernError"]?.documentValue
        guard let wce else { return nil }
        return MongoError(kind: .writeConcern, code: wce["code"]?.intValue ?? 0,
                          domain: Int(MONGOC_ERROR_WRITE_CONCERN.rawValue),
                          message: wce["errmsg"]?.stringValue ?? "write concern error",
                          errorLabels: reply["errorLabels"]?.arrayValue?.compactMap(\.stringValue) ?? [])
    }

    /// After a failed multi-document write: per-document write errors are results; anything else
    /// (no write errors, or a write concern error as well) is thrown. libmongoc reports the
    /// first write error in `error` even when a later batch failed on the network (its
    /// `_mongoc_write_result_complete` overwrites the error), so callers also check that every
    /// document is accounted for where they can.
    private static func checkFailedWrite(_ error: bson_error_t, _ reply: BSONDocument) throws(MongoError) -> [WriteError] {
        if let wce = writeConcernError(in: reply) { throw wce }
        let errors = writeErrors(in: reply)
        if errors.isEmpty {
            let failure = MongoError(bsonError: error, reply: reply)
            // libmongoc refused a document before sending it (invalid keys, too large): that
            // document's fault, not the request's (the options are this module's own).
            throw failure.isClientSideDocumentRefusal ? failure.aboutOneDocument : failure
        }
        return errors
    }

    // MARK: Commands

    /// Runs a command on `databaseName` (primary). An `ok: 0` reply throws `.server(code:)`, a
    /// `writeConcernError` in the reply throws `.writeConcern`.
    public func runCommand(_ command: BSONDocument) throws(MongoError) -> BSONDocument {
        let cmd = try command.makeBSON()
        return try withClient { (client) throws(MongoError) -> BSONDocument in
            let reply = ReplyBSON()
            var error = bson_error_t()
            let ok = mongoc_client_command_simple(client, databaseName, cmd.pointer, nil, reply.pointer, &error)
            let doc = reply.document
            guard ok else { throw MongoError(bsonError: error, reply: doc) }
            if let wce = Self.writeConcernError(in: doc) { throw wce }
            return doc
        }
    }

    public func ping() throws(MongoError) {
        _ = try runCommand(["ping": 1])
    }

    /// The server's `hello` reply; also caches whether the server is a replica set member.
    public func hello() throws(MongoError) -> BSONDocument {
        let reply = try runCommand(["hello": 1])
        let isRS = reply["setName"]?.stringValue != nil
        state.lock()
        cachedIsReplicaSet = isRS
        state.unlock()
        return reply
    }

    /// Whether the server is a replica set member (`setName` in `hello`). Runs `hello` the first
    /// time (blocking), then answers from the cache.
    public var isReplicaSet: Bool {
        get throws(MongoError) {
            state.lock()
            let cached = cachedIsReplicaSet
            state.unlock()
            if let cached { return cached }
            return try hello()["setName"]?.stringValue != nil
        }
    }

    /// What to say when the server is a replica set member but the URI does not name the set.
    public struct ReplicaSetAdvice: Sendable, Hashable {
        /// The set's name (`setName` in `hello`).
        public let setName: String
        /// The URI to use: the set's hosts as the server lists them, `replicaSet=NAME`, the
        /// URI's other options, masked (`masked(_:)`: the password `****`, the value of any option
        /// not known to hold no secret `***`).
        public let suggestedURI: String
        /// The server reached answers as the primary (else writes fail until one is reached).
        public let isWritablePrimary: Bool
    }

    /// Non-nil when `hello` (this server's reply) says it is a member of a replica set that
    /// the URI does not name: libmongoc then talks to this one host directly, and a failover
    /// to another member leaves the client on a server that no longer takes writes.
    public func replicaSetAdvice(hello: BSONDocument) -> ReplicaSetAdvice? {
        guard let setName = hello["setName"]?.stringValue, uriReplicaSet == nil, !uriIsSRV,
              uriDirectConnection != false  // directConnection=false: libmongoc discovers the set
        else { return nil }
        let hosts = (hello["hosts"]?.arrayValue ?? []).compactMap(\.stringValue)
        let writable = hello["isWritablePrimary"]?.boolValue ?? hello["ismaster"]?.boolValue ?? false
        return ReplicaSetAdvice(setName: setName, suggestedURI: Self.uri(uriText, hosts: hosts, replicaSet: setName),
                                isWritablePrimary: writable)
    }

    /// `uri` with its host list replaced by `hosts` (when any), `directConnection` dropped,
    /// `replicaSet=NAME` added, and masked as `masked(_:)` masks it.
    static func uri(_ uri: String, hosts: [String], replicaSet: String) -> String {
        guard var parts = MaskedURI(uri) else { return masked(uri) }
        if !hosts.isEmpty { parts.hosts = hosts.joined(separator: ",") }
        parts.options.removeAll { ["directconnection", "replicaset"].contains($0.split(separator: "=", maxSplits: 1).first?.lowercased() ?? "") }
        parts.options.append("replicaSet=\(replicaSet)")
        return parts.description
    }

    /// URI options (lowercased) whose values are known to hold no secret: timeouts, pool sizes,
    /// read and write preferences, TLS switches and file paths, the authentication database and
    /// mechanism's name. Every other option's value is masked (`***`) wherever the worker shows
    /// a URI: `authMechanismProperties` (AWS_SESSION_TOKEN:...), `tlsCertificateKeyFilePassword`,
    /// and whatever an option added later may hold. An allow-list, so that a new option is
    /// masked until someone decides it is harmless.
    public static let nonSecretURIOptions: Set<String> = [
        "appname", "authmechanism", "authsource", "compressors", "connecttimeoutms", "directconnection",
        "heartbeatfrequencyms", "journal", "loadbalanced", "localthresholdms", "maxconnecting", "maxidletimems",
        "maxpoolsize", "maxstalenessseconds", "minpoolsize", "readconcernlevel", "readpreference",
        "readpreferencetags", "replicaset", "retryreads", "retrywrites", "serverselectiontimeoutms",
        "serverselectiontryonce", "sockettimeoutms", "srvmaxhosts", "srvservicename", "ssl", "tls",
        "tlsallowinvalidcertificates", "tlsallowinvalidhostnames", "tlscafile", "tlscertificatekeyfile",
        "tlsdisablecertificaterevocationcheck", "tlsdisableocspendpointcheck", "tlsinsecure", "w",
        "waitqueuetimeoutms", "wtimeoutms", "zlibcompressionlevel",
    ]

    /// `uri` fit for a log line or /health: the user info's password is `****`, and the value of
    /// every option not in `nonSecretURIOptions` is `***` (an option without a value that is not
    /// in it is `***` whole). Hosts, the database and the user name are kept. Anything that is
    /// not a `mongodb://` or `mongodb+srv://` URI is `***`.
    public static func masked(_ uri: String) -> String {
        MaskedURI(uri)?.description ?? "***"
    }

    /// A URI taken apart as libmongoc reads it, its secrets masked.
    struct MaskedURI: CustomStringConvertible {
        var scheme: String
        /// `user` or `user:****`.
        var userinfo: String?
        var hosts: String
        /// The path after the hosts (`/database`), possibly empty.
        var path: String
        /// `name=value` each, the values masked unless the name is known to hold no secret.
        var options: [String]

        init?(_ uri: String) {
            guard let scheme = ["mongodb://", "mongodb+srv://"].first(where: { uri.lowercased().hasPrefix($0) }) else { return nil }
            self.scheme = String(uri.prefix(scheme.count))
            var rest = uri.dropFirst(scheme.count)
            // The user info ends at the last '@' before the path (or the options): an '@' in an
            // option's value is not it.
            let head = rest[..<(rest.firstIndex(of: "/") ?? rest.firstIndex(of: "?") ?? rest.endIndex)]
            if let at = head.lastIndex(of: "@") {
                let info = rest[..<at]
                userinfo = info.firstIndex(of: ":").map { String(info[..<$0]) + ":****" } ?? String(info)
                rest = rest[rest.index(after: at)...]
            }
            let hostsEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
            hosts = String(rest[..<hostsEnd])
            var tail = rest[hostsEnd...]
            options = []
            if let q = tail.firstIndex(of: "?") {
                options = tail[tail.index(after: q)...].split(whereSeparator: { $0 == "&" || $0 == ";" }).map { option in
                    let parts = option.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                    let known = MongoClient.nonSecretURIOptions.contains(parts[0].lowercased())
                    if parts.count == 1 { return known ? String(option) : "***" }
                    return known ? String(option) : String(parts[0]) + "=***"
                }
                tail = tail[..<q]
            }
            path = String(tail)
        }

        var description: String {
            var out = scheme
            if let userinfo { out += userinfo + "@" }
            out += hosts
            out += path.isEmpty ? "/" : path
            if !options.isEmpty { out += "?" + options.joined(separator: "&") }
            return out
        }
    }

    // MARK: Writes

    /// Inserts `documents` (libmongoc adds an ObjectId `_id` to those without one). Documents the
    /// server refuses (duplicate keys, ...) are reported in `writeErrors`; only failures of the
    /// whole write (network, write concern, ...) throw. Empty input returns at once.
    public func insertMany(_ documents: [BSONDocument], into collection: String, ordered: Bool,
                           writeConcern: WriteConcern) throws(MongoError) -> InsertManyResult {
        if documents.isEmpty { return InsertManyResult(insertedCount: 0, writeErrors: []) }
        let owned = try documents.map { (d) throws(MongoError) -> OwnedBSON in
            do throws(MongoError) { return try d.makeBSON() } catch { throw error.aboutOneDocument }
        }
        let opts = try Self.options(["ordered": .bool(ordered)], writeConcern)
        return try withCollection(collection) { (coll) throws(MongoError) -> InsertManyResult in
            var pointers: [OpaquePointer?] = owned.map(\.pointer)
            let reply = ReplyBSON()
            var error = bson_error_t()
            let ok = pointers.withUnsafeMutableBufferPointer { buf in
                mongoc_collection_insert_many(coll, buf.baseAddress, buf.count, opts.pointer, reply.pointer, &error)
            }
            let doc = reply.document
            let inserted = doc["insertedCount"]?.intValue ?? 0
            if ok {
                Self.noteAcknowledgedWrite()
                return InsertManyResult(insertedCount: inserted, writeErrors: [])
            }
            let errors = try Self.checkFailedWrite(error, doc)
            // Every document must be either inserted or refused (ordered: the first refusal
            // stops the insert); otherwise part of the write failed for another reason.
            let complete = ordered
                ? errors.count == 1 && errors[0].index == inserted
                : inserted + errors.count == documents.count
            guard complete else {
                throw MongoError(kind: .connection, code: Int(error.code), domain: Int(error.domain),
                                 message: "insert incomplete: \(inserted) inserted, \(errors.count) refused of \(documents.count); \(MongoError(bsonError: error).message)")
            }
            Self.noteAcknowledgedWrite()
            return InsertManyResult(insertedCount: inserted, writeErrors: errors)
        }
    }

    private func update(_ collection: String, filter: BSONDocument, update: BSONDocument, upsert: Bool,
                        many: Bool, writeConcern: WriteConcern) throws(MongoError) -> UpdateResult {
        let f = try filter.makeBSON()
        let u = try update.makeBSON()
        let opts = try Self.options(["upsert": .bool(upsert)], writeConcern)
        return try withCollection(collection) { (coll) throws(MongoError) -> UpdateResult in
            let reply = ReplyBSON()
            var error = bson_error_t()
            let ok = many
                ? mongoc_collection_update_many(coll, f.pointer, u.pointer, opts.pointer, reply.pointer, &error)
                : mongoc_collection_update_one(coll, f.pointer, u.pointer, opts.pointer, reply.pointer, &error)
            let doc = reply.document
            guard ok else {
                // A write error in the reply is the server's answer about the document the
                // statement would write (a validator, a size limit, a duplicate key): one
                // document's, like a bulk write's `writeErrors`. A write concern error is checked
                // first (an update of many may have applied some documents before the error);
                // anything else is about the request.
                if let wce = Self.writeConcernError(in: doc) { throw wce }
                if let writeError = Self.writeErrors(in: doc).first { throw writeError.asMongoError }
                throw MongoError(bsonError: error, reply: doc)
            }
            Self.noteAcknowledgedWrite()
            return UpdateResult(matchedCount: doc["matchedCount"]?.intValue ?? 0,
                                modifiedCount: doc["modifiedCount"]?.intValue ?? 0,
                                upsertedID: doc["upsertedId"])
        }
    }

    /// Updates the first matching document (`update` must use `$` operators). A duplicate key
    /// (e.g. a racing upsert) throws a `MongoError` with `isDuplicateKey == true`. The server's
    /// write error for the statement (a validator refusing the updated document, a document
    /// grown past the size limit) throws as an error about one document (`scope == .document`),
    /// a command refused as a whole as one about the request.
    public func updateOne(_ collection: String, filter: BSONDocument, update: BSONDocument, upsert: Bool,
                          writeConcern: WriteConcern) throws(MongoError) -> UpdateResult {
        try self.update(collection, filter: filter, update: update, upsert: upsert, many: false, writeConcern: writeConcern)
    }

    public func updateMany(_ collection: String, filter: BSONDocument, update: BSONDocument, upsert: Bool = false,
                           writeConcern: WriteConcern) throws(MongoError) -> UpdateResult {
        try self.update(collection, filter: filter, update: update, upsert: upsert, many: true, writeConcern: writeConcern)
    }

    /// Deletes every matching document; returns how many.
    public func deleteMany(_ collection: String, filter: BSONDocument,
                           writeConcern: WriteConcern) throws(MongoError) -> Int {
        let f = try filter.makeBSON()
        let opts = try Self.options([:], writeConcern)
        return try withCollection(collection) { (coll) throws(MongoError) -> Int in
            let reply = ReplyBSON()
            var error = bson_error_t()
            let ok = mongoc_collection_delete_many(coll, f.pointer, opts.pointer, reply.pointer, &error)
            let doc = reply.document
            guard ok else { throw MongoError(bsonError: error, reply: doc) }
            Self.noteAcknowledgedWrite()
            return doc["deletedCount"]?.intValue ?? 0
        }
    }

    /// Runs `operations` as one bulk write. Per-operation errors are in `writeErrors`; only
    /// failures of the whole write throw. Caveat (libmongoc): an unordered bulk mixing operation
    /// kinds is sent as several commands, and a network failure of a later command after write
    /// errors in an earlier one is reported as those write errors; the counts then fall short.
    public func bulkWrite(_ collection: String, operations: [WriteModel], ordered: Bool,
                          writeConcern: WriteConcern) throws(MongoError) -> BulkWriteResult {
        if operations.isEmpty {
            return BulkWriteResult(insertedCount: 0, matchedCount: 0, modifiedCount: 0, deletedCount: 0,
                                   upsertedCount: 0, upsertedIDs: [:], writeErrors: [])
        }
        let opts = try Self.options(["ordered": .bool(ordered)], writeConcern)
        return try withCollection(collection) { (coll) throws(MongoError) -> BulkWriteResult in
            guard let bulk = mongoc_collection_create_bulk_operation_with_opts(coll, opts.pointer) else {
                throw MongoError(kind: .invalidArgument, code: 0, domain: 0, message: "cannot create bulk operation")
            }
            defer { mongoc_bulk_operation_destroy(bulk) }
            for op in operations {
                var error = bson_error_t()
                let ok: Bool
                do throws(MongoError) {
                switch op {
                case .insertOne(let d):
                    let b = try d.makeBSON()
                    ok = mongoc_bulk_operation_insert_with_opts(bulk, b.pointer, nil, &error)
                case .updateOne(let filter, let update, let upsert):
                    let f = try filter.makeBSON(), u = try update.makeBSON()
                    let o = try Self.options(["upsert": .bool(upsert)])
                    ok = mongoc_bulk_operation_update_one_with_opts(bulk, f.pointer, u.pointer, o.pointer, &error)
                case .updateMany(let filter, let update, let upsert):
                    let f = try filter.makeBSON(), u = try update.makeBSON()
                    let o = try Self.options(["upsert": .bool(upsert)])
                    ok = mongoc_bulk_operation_update_many_with_opts(bulk, f.pointer, u.pointer, o.pointer, &error)
                case .replaceOne(let filter, let replacement, let upsert):
                    let f = try filter.makeBSON(), r = try replacement.makeBSON()
                    let o = try Self.options(["upsert": .bool(upsert)])
                    ok = mongoc_bulk_operation_replace_one_with_opts(bulk, f.pointer, r.pointer, o.pointer, &error)
                case .deleteOne(let filter):
                    let f = try filter.makeBSON()
                    ok = mongoc_bulk_operation_remove_one_with_opts(bulk, f.pointer, nil, &error)
                case .deleteMany(let filter):
                    let f = try filter.makeBSON()
                    ok = mongoc_bulk_operation_remove_many_with_opts(bulk, f.pointer, nil, &error)
                }
                } catch {
                    throw error.aboutOneDocument  // this operation's document could not be encoded
                }
                // libmongoc validates each operation as it is added (keys of an insert, ...).
                guard ok else { throw MongoError(bsonError: error).aboutOneDocument }
            }
            let reply = ReplyBSON()
            var error = bson_error_t()
            let serverID = mongoc_bulk_operation_execute(bulk, reply.pointer, &error)
            let doc = reply.document
            var errors: [WriteError] = []
            let inserted = doc["nInserted"]?.intValue ?? 0
            if serverID == 0 {
                errors = try Self.checkFailedWrite(error, doc)
                let insertsOnly = operations.allSatisfy { if case .insertOne = $0 { true } else { false } }
                let complete = ordered
                    ? errors.count == 1 && (!insertsOnly || errors[0].index == inserted)
                    : (!insertsOnly || inserted + errors.count == operations.count)
                guard complete else {
                    throw MongoError(kind: .connection, code: Int(error.code), domain: Int(error.domain),
                                     message: "bulk write incomplete (\(errors.count) write errors); \(MongoError(bsonError: error).message)")
                }
            }
            Self.noteAcknowledgedWrite()
            var upserted: [Int: BSON] = [:]
            for case .document(let u) in doc["upserted"]?.arrayValue ?? [] {
                if let i = u["index"]?.intValue, let id = u["_id"] { upserted[i] = id }
            }
            return BulkWriteResult(insertedCount: inserted,
                                   matchedCount: doc["nMatched"]?.intValue ?? 0,
                                   modifiedCount: doc["nModified"]?.intValue ?? 0,
                                   deletedCount: doc["nRemoved"]?.intValue ?? 0,
                                   upsertedCount: doc["nUpserted"]?.intValue ?? 0,
                                   upsertedIDs: upserted, writeErrors: errors)
        }
    }

    /// Finds one document and updates it (`findAndModify`); returns the document before the
    /// update, or after it with `returnNew`, or nil when nothing matched (and nothing was
    /// upserted).
    public func findOneAndUpdate(_ collection: String, filter: BSONDocument, update: BSONDocument,
                                 sort: BSONDocument? = nil, upsert: Bool, returnNew: Bool,
                                 writeConcern: WriteConcern) throws(MongoError) -> BSONDocument? {
        let f = try filter.makeBSON()
        let u = try update.makeBSON()
        let s = try sort?.makeBSON()
        let extra = try Self.options([:], writeConcern)
        return try withCollection(collection) { (coll) throws(MongoError) -> BSONDocument? in
            guard let fam = mongoc_find_and_modify_opts_new() else {
                throw MongoError(kind: .invalidArgument, code: 0, domain: 0, message: "mongoc_find_and_modify_opts_new failed")
            }
            defer { mongoc_find_and_modify_opts_destroy(fam) }
            var flags = MONGOC_FIND_AND_MODIFY_NONE.rawValue
            if upsert { flags |= MONGOC_FIND_AND_MODIFY_UPSERT.rawValue }
            if returnNew { flags |= MONGOC_FIND_AND_MODIFY_RETURN_NEW.rawValue }
            guard mongoc_find_and_modify_opts_set_update(fam, u.pointer),
                  s.map({ mongoc_find_and_modify_opts_set_sort(fam, $0.pointer) }) ?? true,
                  mongoc_find_and_modify_opts_set_flags(fam, mongoc_find_and_modify_flags_t(rawValue: flags)),
                  mongoc_find_and_modify_opts_append(fam, extra.pointer)
            else {
                throw MongoError(kind: .invalidArgument, code: 0, domain: 0, message: "invalid findAndModify options")
            }
            let reply = ReplyBSON()
            var error = bson_error_t()
            let ok = mongoc_collection_find_and_modify_with_opts(coll, f.pointer, fam, reply.pointer, &error)
            let doc = reply.document
            guard ok else { throw MongoError(bsonError: error, reply: doc) }
            if let wce = Self.writeConcernError(in: doc) { throw wce }
            Self.noteAcknowledgedWrite()
            return doc["value"]?.documentValue
        }
    }

    // MARK: Reads

    /// At most `limit` matching documents, as one array. The limit is required so that no
    /// array grows with the data: pass the bound the query has (a page size, or the number of
    /// ids asked for), and use `forEachBatch` for anything that has none.
    public func find(_ collection: String, filter: BSONDocument, sort: BSONDocument? = nil,
                     projection: BSONDocument? = nil, limit: Int,
                     skip: Int? = nil, maxTimeMS: Int? = nil) throws(MongoError) -> [BSONDocument] {
        guard limit > 0 else { return [] }
        var o = BSONDocument()
        if let sort { o["sort"] = .document(sort) }
        if let projection { o["projection"] = .document(projection) }
        o["limit"] = .int64(Int64(limit))
        if let skip { o["skip"] = .int64(Int64(skip)) }
        if let ms = try Self.maxTimeMS(maxTimeMS) { o["maxTimeMS"] = .int64(Int64(ms)) }
        let f = try filter.makeBSON()
        let opts = try o.makeBSON()
        return try withCollection(collection) { (coll) throws(MongoError) -> [BSONDocument] in
            try Self.drain(mongoc_collection_find_with_opts(coll, f.pointer, opts.pointer, nil))
        }
    }

    /// The matching documents in batches of at most `batchSize`, handed to `body` as the cursor
    /// delivers them: memory stays at one batch however many documents match. `body` runs on the
    /// calling thread with the cursor open (keep it short, and do no MongoDB call from it with a
    /// pool of one client). An error from `body` or the cursor ends the iteration and is thrown.
    public func forEachBatch(_ collection: String, filter: BSONDocument, sort: BSONDocument? = nil,
                             projection: BSONDocument? = nil, batchSize: Int = 1000, maxTimeMS: Int? = nil,
                             _ body: ([BSONDocument]) throws(MongoError) -> Void) throws(MongoError) {
        var o = BSONDocument()
        if let sort { o["sort"] = .document(sort) }
        if let projection { o["projection"] = .document(projection) }
        o["batchSize"] = .int64(Int64(max(1, batchSize)))
        if let ms = try Self.maxTimeMS(maxTimeMS) { o["maxTimeMS"] = .int64(Int64(ms)) }
        let f = try filter.makeBSON()
        let opts = try o.makeBSON()
        try withCollection(collection) { (coll) throws(MongoError) in
            try Self.drain(mongoc_collection_find_with_opts(coll, f.pointer, opts.pointer, nil), batchSize: batchSize, body)
        }
    }

    /// An aggregation's results in batches of at most `batchSize` (see `forEachBatch`).
    public func aggregateBatches(_ collection: String, pipeline: [BSONDocument], batchSize: Int = 1000, maxTimeMS: Int? = nil,
                                 _ body: ([BSONDocument]) throws(MongoError) -> Void) throws(MongoError) {
        let p = try (["pipeline": .array(pipeline.map { .document($0) })] as BSONDocument).makeBSON()
        var o: BSONDocument = ["batchSize": .int64(Int64(max(1, batchSize)))]
        if let ms = try Self.maxTimeMS(maxTimeMS) { o["maxTimeMS"] = .int64(Int64(ms)) }
        let opts = try o.makeBSON()
        try withCollection(collection) { (coll) throws(MongoError) in
            try Self.drain(mongoc_collection_aggregate(coll, MONGOC_QUERY_NONE, p.pointer, opts.pointer, nil), batchSize: batchSize, body)
        }
    }

    public func findOne(_ collection: String, filter: BSONDocument, sort: BSONDocument? = nil,
                        projection: BSONDocument? = nil) throws(MongoError) -> BSONDocument? {
        try find(collection, filter: filter, sort: sort, projection: projection, limit: 1).first
    }

    /// The number of documents of the collection from its metadata (the `count` command without
    /// a filter: `mongoc_collection_estimated_document_count`): no scan, however large the
    /// collection. May be off after an unclean shutdown, and counts orphans on a sharded cluster.
    public func estimatedDocumentCount(_ collection: String, maxTimeMS: Int? = nil) throws(MongoError) -> Int {
        let opts = try Self.maxTimeMS(maxTimeMS).map { (ms) throws(MongoError) -> OwnedBSON in try (["maxTimeMS": .int64(Int64(ms))] as BSONDocument).makeBSON() }
        return try withCollection(collection) { (coll) throws(MongoError) -> Int in
            let reply = ReplyBSON()
            var error = bson_error_t()
            let n = mongoc_collection_estimated_document_count(coll, opts?.pointer, nil, reply.pointer, &error)
            guard n >= 0 else { throw MongoError(bsonError: error, reply: reply.document) }
            return Int(n)
        }
    }

    /// Counts the matching documents (an aggregation: `$match`, then `$group`). The server reads
    /// every match, so give it a filter an index answers; for a whole collection use
    /// `estimatedDocumentCount`.
    public func countDocuments(_ collection: String, filter: BSONDocument, maxTimeMS: Int? = nil) throws(MongoError) -> Int {
        let f = try filter.makeBSON()
        let opts = try Self.maxTimeMS(maxTimeMS).map { (ms) throws(MongoError) -> OwnedBSON in try (["maxTimeMS": .int64(Int64(ms))] as BSONDocument).makeBSON() }
        return try withCollection(collection) { (coll) throws(MongoError) -> Int in
            let reply = ReplyBSON()
            var error = bson_error_t()
            let n = mongoc_collection_count_documents(coll, f.pointer, opts?.pointer, nil, reply.pointer, &error)
            guard n >= 0 else { throw MongoError(bsonError: error, reply: reply.document) }
            return Int(n)
        }
    }

    // MARK: Collections and indexes

    /// Runs `createIndexes`. Creating an index that exists with the same options is a no-op; the
    /// same name or keys with other options throws `.server(code: 85 or 86)`.
    public func createIndexes(_ collection: String, _ indexes: [IndexModel]) throws(MongoError) {
        if indexes.isEmpty { return }
        _ = try runCommand([
            "createIndexes": .string(collection),
            "indexes": .array(indexes.map { .document($0.document) }),
        ])
    }

    /// The collection's index descriptions; a missing collection has none.
    public func listIndexes(_ collection: String) throws(MongoError) -> [BSONDocument] {
        do throws(MongoError) {
            return try withCollection(collection) { (coll) throws(MongoError) -> [BSONDocument] in
                try Self.drain(mongoc_collection_find_indexes_with_opts(coll, nil))
            }
        } catch where error.isNamespaceNotFound {
            return []
        }
    }

    public func listCollectionNames() throws(MongoError) -> [String] {
        try withClient { (client) throws(MongoError) -> [String] in
            guard let db = mongoc_client_get_database(client, databaseName) else {
                throw MongoError(kind: .invalidArgument, code: 0, domain: 0, message: "invalid database name \(databaseName)")
            }
            defer { mongoc_database_destroy(db) }
            var error = bson_error_t()
            guard let names = mongoc_database_get_collection_names_with_opts(db, nil, &error) else {
                throw MongoError(bsonError: error)
            }
            defer { bson_strfreev(names) }
            var out: [String] = []
            var i = 0
            while let name = names[i] {
                out.append(String(cString: name))
                i += 1
            }
            return out
        }
    }

    /// Drops a collection; a missing collection is not an error.
    public func dropCollection(_ collection: String) throws(MongoError) {
        do throws(MongoError) {
            try withCollection(collection) { (coll) throws(MongoError) in
                var error = bson_error_t()
                if !mongoc_collection_drop_with_opts(coll, nil, &error) { throw MongoError(bsonError: error) }
            }
        } catch where error.isNamespaceNotFound {
            return
        }
    }
}

extension MongoError {
    /// NamespaceNotFound (26), also reported by older servers as "ns not found".
    var isNamespaceNotFound: Bool {
        if case .server(let code) = kind {
            return code == 26 || message.contains("ns not found") || message.contains("ns does not exist")
        }
        return false
    }
}

// MARK: - Operation deadlines

extension MongoClient {
    private static let deadlineKey = "AutoVoltMongo.operationDeadline"

    /// Runs `body` (blocking, on the calling thread) with a deadline for every read issued from
    /// this thread inside it: `find`, `aggregate` and `countDocuments` send the time left as
    /// `maxTimeMS` (the server stops the query), and one started after the deadline throws
    /// MaxTimeMSExpired (server code 50) without reaching the server. Like the drivers'
    /// client-side operation timeout, so that a query made of several commands keeps to one
    /// budget. An explicit `maxTimeMS` argument wins.
    public static func withDeadline<T>(_ deadline: ContinuousClock.Instant,
                                       _ body: () throws(MongoError) -> T) throws(MongoError) -> T {
        let dictionary = Thread.current.threadDictionary
        let previous = dictionary[deadlineKey]
        dictionary[deadlineKey] = DeadlineBox(deadline)
        defer { dictionary[deadlineKey] = previous }
        return try body()
    }

    private final class DeadlineBox: NSObject {
        let deadline: ContinuousClock.Instant
        init(_ deadline: ContinuousClock.Instant) { self.deadline = deadline }
    }

    /// The `maxTimeMS` to send: the explicit one, else what is left of this thread's deadline.
    static func maxTimeMS(_ explicit: Int?) throws(MongoError) -> Int? {
        if let explicit { return max(1, explicit) }
        guard let box = Thread.current.threadDictionary[deadlineKey] as? DeadlineBox else { return nil }
        let left = ContinuousClock.now.duration(to: box.deadline).components
        let ms = left.seconds * 1000 + left.attoseconds / 1_000_000_000_000_000
        guard ms > 0 else {
            throw MongoError(kind: .server(code: 50), code: 50, domain: 0, message: "operation exceeded time limit (deadline passed)")
        }
        return Int(ms)
    }
}

// MARK: - Acknowledged writes

extension MongoClient {
    /// How many writes the server acknowledged with their write concern, counted by
    /// `countingAcknowledgedWrites`. @unchecked: `count` is written only by the thread that runs
    /// the count (the tally is found through that thread's dictionary), and read after it.
    public final class AcknowledgedWrites: NSObject, @unchecked Sendable {
        public fileprivate(set) var count = 0
        override public init() {}
    }

    private static let acknowledgedWritesKey = "AutoVoltMongo.acknowledgedWrites"

    private final class TallyBox: NSObject {
        let tallies: [AcknowledgedWrites]
        init(_ tallies: [AcknowledgedWrites]) { self.tallies = tallies }
    }

    /// Runs `body` (blocking, on the calling thread) and counts in `tally` every write issued
    /// from this thread inside it that the server acknowledged with the write concern it was
    /// sent with: an `insertMany`, `updateOne`, `updateMany`, `deleteMany`, `bulkWrite` or
    /// `findOneAndUpdate` that returned (its reply had no write concern error; per-document
    /// write errors such as duplicates do not make a reply unacknowledged, the server waits for
    /// the concern all the same). A write that threw, or had nothing to send, is not counted.
    /// What proves that writes are acknowledged again after write concern failures: a loop that
    /// wrote nothing proves nothing. The count is kept when `body` throws; nested counts all count.
    public static func countingAcknowledgedWrites<T, E: Error>(in tally: AcknowledgedWrites,
                                                              _ body: () throws(E) -> T) throws(E) -> T {
        let dictionary = Thread.current.threadDictionary
        let previous = dictionary[acknowledgedWritesKey] as? TallyBox
        dictionary[acknowledgedWritesKey] = TallyBox((previous?.tallies ?? []) + [tally])
        defer { dictionary[acknowledgedWritesKey] = previous }
        return try body()
    }

    /// A write of this thread was acknowledged with its write concern.
    static func noteAcknowledgedWrite() {
        noteAcknowledgedWrites(1)
    }

    /// Counts, in every tally of this thread, writes acknowledged on another thread for this
    /// one (work split over threads counts each part in a tally of its own, added here once
    /// that thread is done).
    public static func noteAcknowledgedWrites(_ count: Int) {
        guard count > 0, let box = Thread.current.threadDictionary[acknowledgedWritesKey] as? TallyBox else { return }
        for tally in box.tallies { tally.count += count }
    }
}

extension MongoError {
    /// The server stopped the operation at its `maxTimeMS` (MaxTimeMSExpired, 50).
    public var isTimeLimitExceeded: Bool {
        if case .server(let code) = kind { return code == 50 }
        return false
    }
}

// MARK: - Async access

/// Runs blocking `MongoClient` calls on a dedicated `NIOThreadPool`, so async code (HTTP
/// handlers) never blocks Swift's cooperative thread pool with a libmongoc call.
public final class MongoExecutor: Sendable {
    public let client: MongoClient
    private let threadPool: NIOThreadPool

    /// Starts `threads` threads. Up to that many MongoDB calls run at once; more wait in line.
    public init(client: MongoClient, threads: Int = 4) {
        self.client = client
        threadPool = NIOThreadPool(numberOfThreads: max(1, threads))
        threadPool.start()
    }

    /// Runs `body` on the pool. Throws what `body` throws (a `MongoError`), a `MongoError` of kind
    /// `.invalidArgument` after `shutdown()`, or `CancellationError` when the task was cancelled
    /// before `body` started.
    public func run<T: Sendable>(_ body: @Sendable @escaping (MongoClient) throws(MongoError) -> T) async throws -> T {
        let client = self.client
        do {
            return try await threadPool.runIfActive { try body(client) }
        } catch is NIOThreadPoolError.ThreadPoolInactive {
            throw MongoError(kind: .invalidArgument, code: 0, domain: 0, message: "MongoExecutor is shut down")
        } catch is CancellationError where !Task.isCancelled {
            // NIOThreadPool refuses work after shutdown by "cancelling" it.
            throw MongoError(kind: .invalidArgument, code: 0, domain: 0, message: "MongoExecutor is shut down")
        }
    }

    /// Stops the threads after the queued work has run.
    public func shutdown() async {
        try? await threadPool.shutdownGracefully()
    }
}
