import AutoVoltCore
import AutoVoltExport
import AutoVoltMongo
import Foundation
import Logging

/// Why a statement command did nothing. Each is one line for the operator, an exit status for
/// the CLI and an HTTP status for the API.
public enum StatementError: Error, Sendable, CustomStringConvertible {
    case badMonth(String)
    case futureMonth(String)
    case unknownScope(String)
    case noFigures(month: String, scope: StatementScope)
    case notFound(String)
    case alreadyFrozen(String)
    /// Another generate or freeze changed the statement while this one ran; nothing was written.
    case conflict(String)
    case differentScope(String, String)
    /// A frozen export's stored bytes, or a fresh rendering of it, do not have the hash recorded at freezing.
    case exportChanged(id: String, format: StatementFormat, detail: String)
    case export(ExportError)
    /// The backend's own error (`MongoError`, `PostgresError`; `storageDisposition(of:)` classifies it).
    case database(any Error)

    public var description: String {
        switch self {
        case .badMonth(let text): "month \"\(text)\" is not YYYY-MM"
        case .futureMonth(let month): "month \(month) has not begun"
        case .unknownScope(let what): "unknown \(what)"
        case .noFigures(let month, let scope): "no daily aggregates for \(month) in \(scope.description.lowercased()): nothing to state"
        case .notFound(let id): "no statement \(id)"
        case .alreadyFrozen(let id): "statement \(id) is frozen already; it never changes (generate makes the next version)"
        case .conflict(let what): what
        case .differentScope(let a, let b): "\(a) and \(b) are not versions of the same month and scope"
        case .exportChanged(let id, let format, let detail): "the \(format.rawValue) export of frozen statement \(id) would differ from the one frozen: \(detail); nothing written"
        case .export(let error): error.description
        case .database(let error): "database: \(error)"
        }
    }

    /// 64 for what the caller asked wrongly, 1 for everything else.
    public var exitCode: Int32 {
        switch self {
        case .badMonth, .futureMonth, .unknownScope, .differentScope: 64
        default: 1
        }
    }

    public var httpStatus: Int {
        switch self {
        case .badMonth, .futureMonth, .differentScope: 400
        case .unknownScope, .noFigures, .notFound: 404
        case .alreadyFrozen, .conflict: 409
        case .database: 503
        case .exportChanged, .export: 500
        }
    }
}

/// One line of `statements list`.
public struct StatementSummary: Sendable, Encodable {
    public var id: String
    public var month: String
    public var scope: String
    public var version: Int
    public var status: String
    public var energyWh: Double
    public var cost: Double?
    public var currency: String?
    public var createdAt: String
    public var frozenAt: String?
    public var frozenBy: String?

    enum CodingKeys: String, CodingKey {
        case id, month, scope, version, status, cost, currency
        case energyWh = "energy_wh", createdAt = "created_at", frozenAt = "frozen_at", frozenBy = "frozen_by"
    }

    public func encode(to encoder: Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode(month, forKey: .month)
        try c.encode(scope, forKey: .scope)
        try c.encode(version, forKey: .version)
        try c.encode(status, forKey: .status)
        try c.encode(energyWh, forKey: .energyWh)
        try c.encode(cost, forKey: .cost)
        try c.encode(currency, forKey: .currency)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(frozenAt, forKey: .frozenAt)
        try c.encode(frozenBy, forKey: .frozenBy)
    }
}

/// Monthly statements: `statements` (one per month, scope and version), `statement_sources`
/// (the device-days each rests on) and `statement_exports` (the bytes of a frozen statement's
/// exports, written when it is frozen), through a `StatementStorage` of either backend. A draft
/// is replaced by the next generate; a frozen statement is never written again. What a
/// statement holds, its versions, freezing, exports and diffs are decided here, once.
public struct StatementStore: Sendable {
    public static let collection = "statements"
    public static let exportsCollection = "statement_exports"
    /// The device-days each statement rests on, in chunks beside it (see `StatementDocuments.sourceChunks`).
    public static let sourcesCollection = "statement_sources"
    /// A statement lists at most this many open review tickets (the oldest first).
    static let ticketLimit = 1000

    let storage: any StatementStorage
    let registry: DeviceRegistry
    let timeZone: TimeZone
    let logger: Logger
    /// Tests only: runs between freeze's read of the draft and its write, to stage a race.
    var beforeFreezeWrite: (@Sendable () -> Void)?

    public init(storage: any StatementStorage, registry: DeviceRegistry, timeZone: TimeZone, logger: Logger) {
        self.storage = storage
        self.registry = registry
        self.timeZone = timeZone
        self.logger = logger
    }

    /// On MongoDB.
    public init(client: MongoClient, registry: DeviceRegistry, timeZone: TimeZone, writeConcern: WriteConcern, logger: Logger) {
        self.init(storage: MongoStatementStorage(client: client, writeConcern: writeConcern), registry: registry, timeZone: timeZone,
                  logger: logger)
    }

    static func database<T>(_ body: () throws -> T) throws(StatementError) -> T {
        do { return try body() } catch { throw .database(error) }
    }

    // MARK: Generate

    /// The scope a command names: `classroom` or `group`, or the campus.
    public func scope(classroom: String?, group: String?) throws(StatementError) -> StatementScope {
        switch (classroom, group) {
        case (let c?, nil): return .classroom(c)
        case (nil, let g?):
            guard registry.groups[g] != nil else {
                let known = registry.groups.keys.sorted()
                throw .unknownScope("group \"\(g)\" (the registry's groups: \(known.isEmpty ? "none" : known.joined(separator: ", ")))")
            }
            return .group(g)
        case (nil, nil): return .campus
        case (.some, .some): throw .unknownScope("scope: give --classroom or --group, not both")
        }
    }

    /// Makes the draft of `month` for `scope` from the current daily aggregates: version 1, or
    /// the one after the last frozen version; a draft of that version is replaced.
    public func generate(month: String, scope: StatementScope, now: EpochMillis) throws(StatementError) -> Statement {
        for _ in 0..<5 {
            let version = try Self.database { try lastFrozenVersion(month: month, scope: scope) } + 1
            var statement = try build(month: month, scope: scope, version: version, now: now)
            statement.status = .draft
            let token = UUID().uuidString
            // The version was frozen meanwhile: go round, the next generate makes the next version.
            guard try Self.database({ try storage.saveDraft(statement, token: token) }) == .saved else { continue }
            logger.info("statement generated", metadata: [
                "statement_id": "\(statement.id)", "month": "\(month)", "scope": "\(StatementDocuments.scopeKey(scope))",
                "version": "\(version)", "energy_wh": "\(FixedPoint.wh(statement.energy))",
                "cost": "\(statement.cost.map { FixedPoint.moneyText($0) } ?? "null")",
            ])
            return statement
        }
        // Replaced or frozen under our hands five times in a row: say so rather than go on.
        throw .conflict("statement \(month) of the \(scope.description.lowercased()) kept changing while generating (other generates or freezes at the same time); try again")
    }

    func lastFrozenVersion(month: String, scope: StatementScope) throws -> Int {
        try storage.lastFrozenVersion(month: month, scopeKey: StatementDocuments.scopeKey(scope))
    }

    /// The classrooms a scope stands for (nil: every classroom).
    func classrooms(of scope: StatementScope) -> [String]? {
        switch scope {
        case .campus: nil
        case .classroom(let name): [name]
        case .group(let name): registry.groups[name] ?? []
        }
    }

    /// The statement of the current figures, not stored. Reads the month's aggregates in
    /// batches; holds one accumulator per device.
    func build(month: String, scope: StatementScope, version: Int, now: EpochMillis) throws(StatementError) -> Statement {
        guard let (first, last) = Statement.dates(ofMonth: month) else { throw .badMonth(month) }
        var calendar = LocalCalendar(timeZone: timeZone)
        guard first <= calendar.date(of: now) else { throw .futureMonth(month) }
        let members = classrooms(of: scope)
        var builder = StatementBuilder(month: month)
        var names = Set<String>()
        var count = 0
        try Self.database {
            builder = StatementBuilder(month: month, rates: try storage.tariffRates())
            try storage.forEachDailyAggregate(from: first, to: last, classrooms: members) { days in
                for day in days {
                    builder.add(day)
                    names.insert(day.esp32Name)
                    count += 1
                }
            }
        }
        guard count > 0 else {
            if case .classroom(let name) = scope, !registry.devices.values.contains(where: { $0.classroom == name }) {
                throw .unknownScope("classroom \"\(name)\" (no device of the registry is in it and no aggregate of \(month) names it)")
            }
            throw .noFigures(month: month, scope: scope)
        }
        let tickets = try Self.database {
            try storage.openTickets(from: first, to: last, esp32Names: members == nil ? nil : names.sorted(), limit: Self.ticketLimit)
        }
        return builder.finish(id: Statement.id(month: month, scope: scope, version: version), scope: scope,
                              classrooms: members ?? [], version: version, timeZone: timeZone.identifier, createdAt: now, tickets: tickets)
    }

    // MARK: Read

    public func show(_ id: String) throws(StatementError) -> Statement {
        guard let stored = try Self.database({ try storage.statement(id: id) }) else { throw .notFound(id) }
        var statement = stored.statement
        statement.sources = try sources(of: stored)
        return statement
    }

    /// A statement's device-days: inline in statements stored before they moved beside it, else
    /// its `statement_sources` chunks, all of them (a missing one is an error, never a short list).
    func sources(of stored: StoredStatement) throws(StatementError) -> [Statement.Source] {
        guard let named = stored.sources else { return stored.statement.sources }
        let id = stored.statement.id
        let found = try Self.database { try storage.sources(statementID: id, token: named.token) }
        guard found.chunks == named.chunks, found.sources.count == named.count else {
            throw .conflict("statement \(id): \(found.sources.count) of its \(named.count) device-days are in \(Self.sourcesCollection); generate the draft again (a frozen statement's exports are unaffected)")
        }
        return found.sources
    }

    public func list(month: String?) throws(StatementError) -> [StatementSummary] {
        if let month, Statement.parseMonth(month) == nil { throw .badMonth(month) }
        return try Self.database { try storage.statements(month: month, limit: 1000) }.map(summary)
    }

    public func summary(_ s: Statement) -> StatementSummary {
        StatementSummary(id: s.id, month: s.month, scope: StatementDocuments.scopeKey(s.scope), version: s.version, status: s.status.rawValue,
                         energyWh: Double(s.energy) / Double(FixedPoint.energyScale),
                         cost: s.cost.map { Double($0) / Double(FixedPoint.moneyScale) }, currency: s.currency,
                         createdAt: local(s.createdAt), frozenAt: s.frozenAt.map(local), frozenBy: s.frozenBy)
    }

    func local(_ millis: EpochMillis) -> String {
        ISO8601.format(millis, in: timeZone)
    }

    // MARK: Freeze and export

    /// Freezes a draft: its exports are made now, their SHA-256 recorded with the freeze (one
    /// conditional write, so two freezes cannot both win) and their bytes kept.
    public func freeze(_ id: String, by: String, now: EpochMillis) throws(StatementError) -> Statement {
        guard let stored = try Self.database({ try storage.statement(id: id) }) else { throw .notFound(id) }
        var statement = stored.statement
        guard statement.status == .draft else { throw .alreadyFrozen(id) }
        statement.sources = try sources(of: stored)
        statement.status = .frozen
        statement.frozenAt = now
        statement.frozenBy = by
        let rendered = try StatementFormat.allCases.map { format throws(StatementError) in (format, try render(statement, format)) }
        statement.exports = rendered.map { Statement.Export(format: $0.0, sha256: EventHash.sha256Hex(bytes: $0.1), bytes: $0.1.count) }
        // The bytes first, under their hash: once the freeze below is written, every export it
        // records is there (a renderer that changes with a library upgrade cannot lose it).
        for (format, bytes) in rendered { try keep(statement, format, bytes) }
        beforeFreezeWrite?()
        let exports = statement.exports
        let frozen = try Self.database {
            try storage.freeze(id: id, draftToken: stored.draftToken, frozenAt: now, by: by, exports: exports)
        }
        guard frozen else {
            // Frozen by someone else, or replaced by a new generate, since it was read: the
            // figures this freeze was asked for are not the ones there now. (The bytes it kept
            // stay: they are found only by the hashes of this freeze, which nothing records.)
            if try show(id).status == .frozen { throw .alreadyFrozen(id) }
            throw .conflict("statement \(id) was generated again while it was being frozen; review it and freeze again")
        }
        logger.notice("statement frozen", metadata: [
            "statement_id": "\(id)", "frozen_by": "\(by)", "energy_wh": "\(FixedPoint.wh(statement.energy))",
            "cost": "\(statement.cost.map { FixedPoint.moneyText($0) } ?? "null")",
            "sha256": "\(statement.exports.map { "\($0.format.rawValue)=\($0.sha256.prefix(12))" }.joined(separator: " "))",
        ])
        return statement
    }

    /// A kept export is found by its statement, format and hash: a freeze that lost a race
    /// leaves nothing the winner's exports could be mistaken for.
    static func exportID(_ id: String, _ format: StatementFormat, _ sha256: String) -> String { "\(id)|\(format.rawValue)|\(sha256)" }

    func keep(_ statement: Statement, _ format: StatementFormat, _ bytes: [UInt8]) throws(StatementError) {
        let sha = EventHash.sha256Hex(bytes: bytes)
        try Self.database { try storage.keepExport(statementID: statement.id, format: format, sha256: sha, bytes: bytes) }
    }

    func render(_ statement: Statement, _ format: StatementFormat) throws(StatementError) -> [UInt8] {
        do {
            switch format {
            case .csv: return StatementCSV.render(statement)
            case .pdf: return try StatementPDF.render(statement)
            case .xlsx: return try StatementXLSX.render(statement)
            }
        } catch {
            throw .export(error)
        }
    }

    /// A draft's export is made from it now; a frozen statement's is the one made when it was
    /// frozen, checked against its SHA-256 (and made again, and checked, if its bytes were lost).
    public func export(_ id: String, format: StatementFormat) throws(StatementError) -> (statement: Statement, bytes: [UInt8]) {
        let statement = try show(id)
        guard statement.status == .frozen else { return (statement, try render(statement, format)) }
        guard let recorded = statement.exports.first(where: { $0.format == format }) else {
            throw .exportChanged(id: id, format: format, detail: "no hash was recorded at freezing")
        }
        let stored = try Self.database { try storage.keptExport(statementID: id, format: format, sha256: recorded.sha256) }
        if let stored {
            guard let bytes = stored.data else {
                throw .exportChanged(id: id, format: format, detail: "the kept export has no bytes")
            }
            let sha = EventHash.sha256Hex(bytes: bytes)
            guard sha == recorded.sha256 else {
                throw .exportChanged(id: id, format: format, detail: "the kept bytes have SHA-256 \(sha), the statement records \(recorded.sha256)")
            }
            return (statement, bytes)
        }
        let bytes = try render(statement, format)
        let sha = EventHash.sha256Hex(bytes: bytes)
        guard sha == recorded.sha256 else {
            throw .exportChanged(id: id, format: format, detail: "its kept bytes are gone and rendering again gives SHA-256 \(sha), not \(recorded.sha256)")
        }
        try keep(statement, format, bytes)
        return (statement, bytes)
    }

    // MARK: Diff

    /// What changed between `id` and `other`, or the figures now when `other` is nil.
    public func diff(_ id: String, other: String?, now: EpochMillis) throws(StatementError) -> StatementDiff {
        let old = try show(id)
        let new: Statement
        if let other {
            new = try show(other)
            guard new.month == old.month, new.scope == old.scope else { throw .differentScope(id, other) }
        } else {
            new = try build(month: old.month, scope: old.scope, version: old.version, now: now)
        }
        let (earlier, later) = old.createdAt <= new.createdAt ? (old, new) : (new, old)
        let names = Set(old.lines.map(\.esp32Name)).union(new.lines.map(\.esp32Name))
        let late = try Self.database {
            try lateReadings(month: old.month, names: names, after: earlier.createdAt, until: other == nil ? nil : later.createdAt)
        }
        var diff = StatementDiff.compare(earlier, later, lateReadings: late)
        if other == nil { diff.to = "current figures" }
        return diff
    }

    /// Per device, the readings of the month (by device time, a day either side: an interval that
    /// ends just after the month, or starts just before it, puts energy into it) received after `after`.
    func lateReadings(month: String, names: Set<String>, after: EpochMillis, until: EpochMillis?) throws -> [String: Int] {
        guard let (first, last) = Statement.dates(ofMonth: month), !names.isEmpty else { return [:] }
        let calendar = LocalCalendar(timeZone: timeZone)
        let from = calendar.startOfDay(CivilDate(daysSinceEpoch: first.daysSinceEpoch - 1))
        let before = calendar.startOfDay(CivilDate(daysSinceEpoch: last.daysSinceEpoch + 2))
        var counts: [String: Int] = [:]
        let sorted = names.sorted()
        // A bounded list of names per query.
        for start in stride(from: 0, to: sorted.count, by: 500) {
            let chunk = Array(sorted[start..<min(start + 500, sorted.count)])
            counts.merge(try storage.lateReadingCounts(esp32Names: chunk, deviceFrom: from, deviceBefore: before,
                                                       receivedAfter: after, receivedUntil: until)) { $1 }
        }
        return counts
    }

    // MARK: Scheduled drafts

    /// Drafts of `month` for the campus, each registry group and each registered classroom; a
    /// scope without figures is skipped, one that fails does not stop the others. Never freezes.
    public func generateMonthEnd(month: String, now: EpochMillis) -> (made: [Statement], failed: [(scope: StatementScope, error: StatementError)]) {
        let scopes: [StatementScope] = [.campus] + registry.groups.keys.sorted().map { .group($0) }
            + Set(registry.devices.values.map(\.classroom)).sorted().map { .classroom($0) }
        var made: [Statement] = []
        var failed: [(scope: StatementScope, error: StatementError)] = []
        for scope in scopes {
            do {
                made.append(try generate(month: month, scope: scope, now: now))
            } catch .noFigures {
                continue
            } catch {
                failed.append((scope, error))
            }
        }
        return (made, failed)
    }
}

