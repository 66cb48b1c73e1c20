import CSQLite
import Foundation

/// The worker's durable inbox between the broker and MongoDB: a SQLite database in WAL mode.
///
/// A message is appended (and committed) on the MQTT thread before its callback returns, so
/// before libmosquitto writes the PUBACK; a record leaves only after MongoDB has acknowledged it.
/// See docs/delivery.md for the reasoning and the crash windows.
///
/// Thread safety: one connection guarded by a lock; every method may be called from any thread,
/// but all of them block on disk I/O, so never call them from Swift's cooperative pool.
public final class Journal: @unchecked Sendable {
    public enum SyncMode: String, Sendable {
        /// Commit reaches the WAL file (the OS) before `append` returns: survives a crash or kill of
        /// the worker, not a power cut of the host between two checkpoints.
        case normal
        /// fsync on every commit: also survives a power cut; slower.
        case full
    }

    public struct Record: Sendable, Equatable {
        public let id: Int64
        public let receivedAt: Int64
        public let retained: Bool
        public let topic: String
        public let payload: [UInt8]
    }

    public let path: String
    public let maxBytes: Int64
    private let lock = NSLock()
    private var db: OpaquePointer?
    private var insertStatement: OpaquePointer?
    private var selectStatement: OpaquePointer?
    private var deleteStatement: OpaquePointer?
    private var pending: Int
    private var pageSize: Int64 = 4096
    private var usedBytesCache: Int64 = 0
    private var appendsSinceSizeCheck = 0
    private var beginStatement: OpaquePointer?
    private var commitStatement: OpaquePointer?
    private var rollbackStatement: OpaquePointer?
    /// Messages staged by `stage` and not yet committed (see `commitStaged`): one reusable byte
    /// buffer and fixed-size entries, so staging allocates nothing once the buffers have grown.
    /// Touched only by the thread that stages and commits (the MQTT thread).
    private var stagedBytes: [UInt8] = []
    private var staged: [StagedEntry] = []
    private struct StagedEntry {
        var receivedAt: Int64
        var retained: Bool
        var topicStart: Int
        var topicCount: Int
        var payloadCount: Int
    }

    /// `mkdir -p` with the system's words on failure ("Not a directory", "Permission denied"),
    /// not Foundation's "The operation could not be completed".
    static func createDirectory(_ directory: String) throws(JournalError) {
        var path = directory.hasPrefix("/") ? "" : "."
        let components = directory.split(separator: "/")
        for (index, component) in components.enumerated() {
            path += "/" + component
            if mkdir(path, 0o750) != 0 && errno != EEXIST {
                let reason = String(cString: strerror(errno))
                let at = index == components.count - 1 ? "" : "\(path): "
                throw JournalError(message: "cannot create state directory \(directory): \(at)\(reason)", isUnusableLocation: true)
            }
        }
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory.boolValue else {
            throw JournalError(message: "state directory \(directory) is not a directory", isUnusableLocation: true)
        }
    }

    public init(directory: String, sync: SyncMode = .normal, maxBytes: Int64 = 1 << 30) throws(JournalError) {
        try Self.createDirectory(directory)
        path = (directory as NSString).appendingPathComponent("journal.sqlite3")
        self.maxBytes = maxBytes
        pending = 0
        var handle: OpaquePointer?
        let rc = sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil)
        db = handle
        guard rc == SQLITE_OK else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(handle)
            db = nil
            throw JournalError(message: "cannot open journal \(path): \(message)",
                               isUnusableLocation: [SQLITE_CANTOPEN, SQLITE_PERM, SQLITE_READONLY, SQLITE_AUTH].contains(rc & 0xff))
        }
        do {
            // One connection per journal, and only this process opens the file: exclusive locking
            // takes SQLite's file locks once instead of fcntl lock/unlock calls around every
            // transaction, and keeps the WAL index in heap memory instead of a shared -shm
            // mapping. Set before the first access to the WAL. A second process opening the same
            // journal (a second worker on one state directory) gets "database is locked".
            try execute("PRAGMA locking_mode=EXCLUSIVE")
            try execute("PRAGMA journal_mode=WAL")
            try execute("PRAGMA synchronous=\(sync == .full ? "FULL" : "NORMAL")")
            try execute("PRAGMA busy_timeout=5000")
            try execute("""
                CREATE TABLE IF NOT EXISTS inbox(
                    id INTEGER PRIMARY KEY AUTOINCREMENT,
                    received_at INTEGER NOT NULL,
                    retained INTEGER NOT NULL,
                    topic TEXT NOT NULL,
                    payload BLOB NOT NULL)
                """)
            insertStatement = try prepare("INSERT INTO inbox(received_at, retained, topic, payload) VALUES (?, ?, ?, ?)")
            selectStatement = try prepare("SELECT id, received_at, retained, topic, payload FROM inbox WHERE id > ? ORDER BY id LIMIT ?")
            deleteStatement = try prepare("DELETE FROM inbox WHERE id <= ?")
            beginStatement = try prepare("BEGIN IMMEDIATE")
            commitStatement = try prepare("COMMIT")
            rollbackStatement = try prepare("ROLLBACK")
            pending = Int(try scalar("SELECT count(*) FROM inbox"))
            pageSize = try scalar("PRAGMA page_size")
            usedBytesCache = try computeUsedBytes()
        } catch {
            close()
            throw error
        }
    }

    deinit { close() }

    public func close() {
        lock.lock()
        defer { lock.unlock() }
        for statement in [insertStatement, selectStatement, deleteStatement, beginStatement, commitStatement, rollbackStatement] {
            sqlite3_finalize(statement)
        }
        beginStatement = nil
        commitStatement = nil
        rollbackStatement = nil
        insertStatement = nil
        selectStatement = nil
        deleteStatement = nil
        if let db {
            sqlite3_close(db)
            self.db = nil
        }
    }

    /// Appends and commits one message; when this returns the message survives a crash of the
    /// process (and with `.full`, of the host).
    @discardableResult
    public func append(topic: String, payload: UnsafeRawBufferPointer, receivedAt: Int64, retained: Bool) throws(JournalError) -> Int64 {
        lock.lock()
        defer { lock.unlock() }
        guard db != nil else { throw JournalError(message: "journal is closed") }
        var topic = topic
        let result: Result<Int64, JournalError> = topic.withUTF8 { topicBytes in
            Result { () throws(JournalError) -> Int64 in
                try insertCounting(topic: UnsafeRawBufferPointer(topicBytes), payload: payload, receivedAt: receivedAt, retained: retained)
            }
        }
        return try result.get()
    }

    /// Appends and commits several messages in one transaction (an HTTP ingest request): all of
    /// them survive a crash when this returns, or none was written.
    public func appendBatch(_ messages: [(topic: String, payload: [UInt8])], receivedAt: Int64) throws(JournalError) {
        if messages.isEmpty { return }
        lock.lock()
        defer { lock.unlock() }
        guard db != nil, let begin = beginStatement, let commit = commitStatement else {
            throw JournalError(message: "journal is closed")
        }
        try step(begin, "begin")
        var inserted = 0
        var failure: JournalError?
        for message in messages {
            var topic = message.topic
            let result: Result<Int64, JournalError> = topic.withUTF8 { topicBytes in
                message.payload.withUnsafeBytes { payload in
                    Result { () throws(JournalError) -> Int64 in
                        try insertCounting(topic: UnsafeRawBufferPointer(topicBytes), payload: payload, receivedAt: receivedAt, retained: false)
                    }
                }
            }
            if case .failure(let error) = result { failure = error; break }
            inserted += 1
        }
        try commitOrRollBack(commit, inserted: inserted, failure: failure)
    }

    /// Ends the open transaction: commits it, or after a failure (of an insert or of the commit)
    /// rolls it back and takes back the rows `insertCounting` counted. Call with the lock held.
    private func commitOrRollBack(_ commit: OpaquePointer, inserted: Int, failure: JournalError?) throws(JournalError) {
        var failure = failure
        if failure == nil {
            do throws(JournalError) { try step(commit, "commit") } catch { failure = error }
        }
        guard let failure else { return }
        if let rollback = rollbackStatement {
            _ = sqlite3_step(rollback)
            _ = sqlite3_reset(rollback)
        }
        pending -= inserted
        throw failure
    }

    /// Keeps a copy of one message for the next `commitStaged`; nothing is durable yet. The
    /// caller must not let the broker see an acknowledgement for it before `commitStaged`
    /// succeeded (the MQTT thread commits before it writes the PUBACKs; docs/delivery.md).
    /// Call `stage` and `commitStaged` from one thread.
    public func stage(topic: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, receivedAt: Int64, retained: Bool) {
        let start = stagedBytes.count
        stagedBytes.append(contentsOf: topic)
        stagedBytes.append(contentsOf: payload)
        staged.append(StagedEntry(receivedAt: receivedAt, retained: retained, topicStart: start,
                                  topicCount: topic.count, payloadCount: payload.count))
    }

    public func stage(topic: String, payload: UnsafeRawBufferPointer, receivedAt: Int64, retained: Bool) {
        var topic = topic
        topic.withUTF8 { stage(topic: UnsafeRawBufferPointer($0), payload: payload, receivedAt: receivedAt, retained: retained) }
    }

    /// Messages staged and not yet committed.
    public var stagedCount: Int { staged.count }
    /// Bytes of topic and payload staged and not yet committed.
    public var stagedByteCount: Int { stagedBytes.count }

    /// Commits everything staged since the last commit in one transaction (one WAL write for
    /// the batch instead of one per message). When this returns without throwing, every staged
    /// message survives a crash of the process; on an error nothing of the batch is committed
    /// and it stays staged for the next call.
    public func commitStaged() throws(JournalError) {
        if staged.isEmpty { return }
        lock.lock()
        defer { lock.unlock() }
        guard db != nil, let begin = beginStatement, let commit = commitStatement else {
            throw JournalError(message: "journal is closed")
        }
        try step(begin, "begin")
        var inserted = 0
        let failure: JournalError? = stagedBytes.withUnsafeBytes { bytes -> JournalError? in
            for entry in staged {
                let topic = UnsafeRawBufferPointer(rebasing: bytes[entry.topicStart ..< entry.topicStart + entry.topicCount])
                let payloadStart = entry.topicStart + entry.topicCount
                let payload = UnsafeRawBufferPointer(rebasing: bytes[payloadStart ..< payloadStart + entry.payloadCount])
                do throws(JournalError) {
                    _ = try insertCounting(topic: topic, payload: payload, receivedAt: entry.receivedAt, retained: entry.retained)
                } catch {
                    return error
                }
                inserted += 1
            }
            return nil
        }
        try commitOrRollBack(commit, inserted: inserted, failure: failure)
        staged.removeAll(keepingCapacity: true)
        stagedBytes.removeAll(keepingCapacity: true)
    }

    private func step(_ statement: OpaquePointer, _ what: String) throws(JournalError) {
        defer { sqlite3_reset(statement) }
        guard sqlite3_step(statement) == SQLITE_DONE else {
            throw JournalError(message: "\(what) failed: \(String(cString: sqlite3_errmsg(db)))")
        }
    }

    /// One INSERT (its own transaction unless one is open); call with the lock held.
    private func insertCounting(topic: UnsafeRawBufferPointer, payload: UnsafeRawBufferPointer, receivedAt: Int64, retained: Bool) throws(JournalError) -> Int64 {
        guard let statement = insertStatement, let db else { throw JournalError(message: "journal is closed") }
        defer { sqlite3_reset(statement) }
        sqlite3_bind_int64(statement, 1, receivedAt)
        sqlite3_bind_int(statement, 2, retained ? 1 : 0)
        // SQLITE_STATIC: the bytes outlive the step (they are reset before the caller's buffers go).
        // A zero-length value must still bind as empty text / an empty blob, not NULL.
        let empty = UnsafeRawPointer(bitPattern: 1)
        let topicBase = (topic.baseAddress ?? empty).map { $0.assumingMemoryBound(to: CChar.self) }
        sqlite3_bind_text(statement, 3, topicBase, Int32(topic.count), SQLITE_STATIC)
        sqlite3_bind_blob(statement, 4, payload.baseAddress ?? empty, Int32(payload.count), SQLITE_STATIC)
        let rc = sqlite3_step(statement)
        guard rc == SQLITE_DONE else { throw JournalError(message: "append failed: \(String(cString: sqlite3_errmsg(db)))") }
        pending += 1
        appendsSinceSizeCheck += 1
        usedBytesCache += Int64(payload.count + topic.count + 24)
        return sqlite3_last_insert_rowid(db)
    }

    public func append(topic: String, payload: [UInt8], receivedAt: Int64, retained: Bool) throws(JournalError) -> Int64 {
        let result: Result<Int64, JournalError> = payload.withUnsafeBytes { buffer in
            Result { () throws(JournalError) -> Int64 in
                try append(topic: topic, payload: buffer, receivedAt: receivedAt, retained: retained)
            }
        }
        return try result.get()
    }

    /// The oldest records after `afterID`, in arrival order.
    public func read(after afterID: Int64 = 0, limit: Int) throws(JournalError) -> [Record] {
        lock.lock()
        defer { lock.unlock() }
        guard let statement = selectStatement, let db else { throw JournalError(message: "journal is closed") }
        defer { sqlite3_reset(statement) }
        sqlite3_bind_int64(statement, 1, afterID)
        sqlite3_bind_int64(statement, 2, Int64(limit))
        var records: [Record] = []
        records.reserveCapacity(limit)
        while true {
            let rc = sqlite3_step(statement)
            if rc == SQLITE_DONE { break }
            guard rc == SQLITE_ROW else { throw JournalError(message: "read failed: \(String(cString: sqlite3_errmsg(db)))") }
            let count = Int(sqlite3_column_bytes(statement, 4))
            let payload: [UInt8]
            if count > 0, let blob = sqlite3_column_blob(statement, 4) {
                payload = Array(UnsafeRawBufferPointer(start: blob, count: count))
            } else {
                payload = []
            }
            records.append(Record(
                id: sqlite3_column_int64(statement, 0),
                receivedAt: sqlite3_column_int64(statement, 1),
                retained: sqlite3_column_int(statement, 2) != 0,
                topic: sqlite3_column_text(statement, 3).map { String(cString: $0) } ?? "",
                payload: payload))
        }
        return records
    }

    /// Removes every record up to and including `id` (called once MongoDB has them).
    public func remove(through id: Int64) throws(JournalError) {
        lock.lock()
        defer { lock.unlock() }
        guard let statement = deleteStatement, let db else { throw JournalError(message: "journal is closed") }
        defer { sqlite3_reset(statement) }
        sqlite3_bind_int64(statement, 1, id)
        guard sqlite3_step(statement) == SQLITE_DONE else {
            throw JournalError(message: "remove failed: \(String(cString: sqlite3_errmsg(db)))")
        }
        pending = max(0, pending - Int(sqlite3_changes(db)))
        if pending == 0 {
            // Keep the WAL from growing without bound while the worker runs for months.
            sqlite3_wal_checkpoint_v2(db, nil, SQLITE_CHECKPOINT_PASSIVE, nil, nil)
        }
        usedBytesCache = (try? computeUsedBytes()) ?? usedBytesCache
    }

    public var pendingRecords: Int {
        lock.lock()
        defer { lock.unlock() }
        return pending
    }

    /// Bytes held by live records (pages in use; freed pages are reused and not counted).
    public var usedBytes: Int64 {
        lock.lock()
        defer { lock.unlock() }
        if appendsSinceSizeCheck >= 1000 {
            appendsSinceSizeCheck = 0
            usedBytesCache = (try? computeUsedBytes()) ?? usedBytesCache
        }
        return usedBytesCache
    }

    public var isFull: Bool { usedBytes >= maxBytes }

    // MARK: SQLite helpers (call with the lock held or from init)

    private func computeUsedBytes() throws(JournalError) -> Int64 {
        let pages = try scalar("PRAGMA page_count")
        let free = try scalar("PRAGMA freelist_count")
        return (pages - free) * pageSize
    }

    private func execute(_ sql: String) throws(JournalError) {
        var error: UnsafeMutablePointer<CChar>?
        guard sqlite3_exec(db, sql, nil, nil, &error) == SQLITE_OK else {
            let message = error.map { String(cString: $0) } ?? "unknown error"
            sqlite3_free(error)
            throw JournalError(message: "\(sql.prefix(40)): \(message)")
        }
    }

    private func prepare(_ sql: String) throws(JournalError) -> OpaquePointer? {
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(db, sql, -1, &statement, nil) == SQLITE_OK else {
            throw JournalError(message: "prepare failed: \(String(cString: sqlite3_errmsg(db)))")
        }
        return statement
    }

    private func scalar(_ sql: String) throws(JournalError) -> Int64 {
        guard let statement = try prepare(sql) else { throw JournalError(message: "prepare failed: \(sql)") }
        defer { sqlite3_finalize(statement) }
        guard sqlite3_step(statement) == SQLITE_ROW else {
            throw JournalError(message: "\(sql): \(String(cString: sqlite3_errmsg(db)))")
        }
        return sqlite3_column_int64(statement, 0)
    }
}

public struct JournalError: Error, Sendable, CustomStringConvertible {
    public let message: String
    /// The state directory cannot hold a journal at all (not creatable, not a directory, not
    /// writable): a configuration problem, not an outage.
    public let isUnusableLocation: Bool
    public init(message: String, isUnusableLocation: Bool = false) {
        self.message = message
        self.isUnusableLocation = isUnusableLocation
    }
    public var description: String { "journal: \(message)" }
}

/// SQLite's SQLITE_TRANSIENT (a macro Swift cannot import): copy the bound value.
let SQLITE_TRANSIENT = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
/// SQLite's SQLITE_STATIC: the bound value stays valid until the statement is reset.
let SQLITE_STATIC: sqlite3_destructor_type? = nil
