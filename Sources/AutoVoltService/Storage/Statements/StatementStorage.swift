import AutoVoltCore

/// The data operations of monthly statements (`StatementStore`): the figures a statement is
/// built from (tariff rates, the month's daily aggregates, open review tickets, late readings),
/// and the statements themselves with their device-days (`statement_sources`) and the bytes of
/// frozen exports (`statement_exports`). One implementation per backend:
/// `MongoStatementStorage`, `PostgresStatementStorage`, held to the same contract by
/// StatementStorageConformanceTests. Only domain values cross it.
///
/// What a statement holds, which version a generate makes, what freezing renders and checks,
/// and what a diff says stay in the logic; implementations read and write. The guarantees they
/// carry: a frozen statement is never written again (a draft is replaced only while it is a
/// draft; freezing is one conditional write), a draft's sources are all stored before (or with)
/// the statement that names them and those of the draft it replaced are deleted, never a frozen
/// one's; an export's bytes are kept once per (statement, format, SHA-256). Blocking: call from
/// a dedicated thread. Errors are the backend's own (`MongoError`, `PostgresError`).
public protocol StatementStorage: Sendable {
    // MARK: The figures a statement is built from

    /// Every tariff version's rate (`cost_per_kwh`) by its id.
    func tariffRates() throws -> [String: Double]
    /// The daily aggregates of the dates [first, last] (of `classrooms`; nil: every classroom),
    /// in id order (byte order), in batches.
    func forEachDailyAggregate(from first: CivilDate, to last: CivilDate, classrooms: [String]?,
                               _ body: ([StatementDay]) -> Void) throws
    /// The open review tickets of the dates [first, last] (of `esp32Names`; nil: every device),
    /// ordered by date, esp32_name and kind (byte order), at most `limit`.
    func openTickets(from first: CivilDate, to last: CivilDate, esp32Names: [String]?, limit: Int) throws -> [Statement.Ticket]
    /// Per device of `esp32Names`, how many events with device time in [deviceFrom, deviceBefore)
    /// were received after `receivedAfter` (and at or before `receivedUntil`, when given).
    /// Devices without any are absent.
    func lateReadingCounts(esp32Names: [String], deviceFrom: EpochMillis, deviceBefore: EpochMillis,
                           receivedAfter: EpochMillis, receivedUntil: EpochMillis?) throws -> [String: Int]

    // MARK: Statements

    /// The highest frozen version of a month and scope (0: none).
    func lastFrozenVersion(month: String, scopeKey: String) throws -> Int
    /// Stores `statement`, a draft, under its id with `token` naming its sources (and the draft:
    /// `StoredStatement.draftToken`): its sources in chunks of `StatementDocuments.sourcesPerChunk`,
    /// all of them before (or in the same transaction as) the statement, which replaces only a
    /// draft of its id; the sources of the draft it replaced are deleted. `.versionFrozen`, and
    /// nothing left written, when the id is a frozen statement's (frozen meanwhile).
    func saveDraft(_ statement: Statement, token: String) throws -> DraftSave
    /// The statement stored under `id`, with its sources when they are inline (statements stored
    /// before `statement_sources`), else where they are; nil when there is none.
    func statement(id: String) throws -> StoredStatement?
    /// The sources stored under a statement's token, in chunk order, and how many chunks held them.
    func sources(statementID: String, token: String) throws -> StoredSources
    /// The statements of `month` (nil: all) without lines, days, segments, tickets or sources,
    /// ordered by month descending, scope_key (byte order), version descending; at most `limit`.
    func statements(month: String?, limit: Int) throws -> [Statement]
    /// Freezes the draft `id` if it is still a draft with `draftToken` (nil: none recorded):
    /// status frozen, `frozen_at`, `frozen_by`, the exports' hashes; the draft token removed.
    /// One conditional write: of two freezes, or a freeze and a generate, one only succeeds.
    /// False when nothing matched.
    func freeze(id: String, draftToken: String?, frozenAt: EpochMillis, by: String, exports: [Statement.Export]) throws -> Bool

    // MARK: Exports (`statement_exports`)

    /// Keeps an export's bytes under (statement, format, SHA-256); one kept already is left as it is.
    func keepExport(statementID: String, format: StatementFormat, sha256: String, bytes: [UInt8]) throws
    /// The bytes kept under (statement, format, SHA-256); nil when none are kept.
    func keptExport(statementID: String, format: StatementFormat, sha256: String) throws -> KeptExport?
}

/// What `StatementStorage.saveDraft` did.
public enum DraftSave: Sendable, Equatable {
    case saved
    /// The statement's id is a frozen statement's: nothing was written (the next generate makes
    /// the next version).
    case versionFrozen
}

/// Where a statement's device-days are kept (`statement_sources`), as its document names them.
public struct SourcesReference: Sendable, Equatable {
    public var token: String
    /// Device-days.
    public var count: Int
    public var chunks: Int

    public init(token: String, count: Int, chunks: Int) {
        self.token = token
        self.count = count
        self.chunks = chunks
    }
}

/// A statement as stored: without its sources when they are kept beside it (`sources`).
public struct StoredStatement: Sendable, Equatable {
    public var statement: Statement
    /// nil: the sources are inline (`statement.sources`), as stored before they moved beside it.
    public var sources: SourcesReference?
    /// The token of the draft (nil for a frozen statement, or one stored before tokens).
    public var draftToken: String?

    public init(statement: Statement, sources: SourcesReference?, draftToken: String?) {
        self.statement = statement
        self.sources = sources
        self.draftToken = draftToken
    }
}

/// The device-days found under a statement's token.
public struct StoredSources: Sendable, Equatable {
    public var chunks: Int
    public var sources: [Statement.Source]

    public init(chunks: Int, sources: [Statement.Source]) {
        self.chunks = chunks
        self.sources = sources
    }
}

/// A kept export.
public struct KeptExport: Sendable, Equatable {
    /// nil: the record holds no bytes.
    public var data: [UInt8]?

    public init(data: [UInt8]?) { self.data = data }
}
