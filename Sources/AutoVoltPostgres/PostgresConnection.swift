import CLibpq
import Foundation

/// One row of a result, its cells as the server's text (nil for NULL).
public struct PostgresRow: Sendable {
    let columns: [String: Int]
    let cells: [String?]

    public subscript(_ column: String) -> String? {
        guard let i = columns[column] else { return nil }
        return cells[i]
    }

    /// The cells in the order of the query's columns.
    public var columnsInOrder: [String?] { cells }

    public func string(_ column: String) -> String? { self[column] }
    public func int64(_ column: String) -> Int64? { self[column].flatMap { Int64($0) } }
    public func int(_ column: String) -> Int? { self[column].flatMap { Int($0) } }
    public func double(_ column: String) -> Double? {
        guard let text = self[column] else { return nil }
        switch text {
        case "NaN": return .nan
        case "Infinity": return .infinity
        case "-Infinity": return -.infinity
        default: return Double(text)
        }
    }
    public func bool(_ column: String) -> Bool? { self[column].map { $0 == "t" || $0 == "true" } }
    /// A `timestamptz` cell as epoch milliseconds.
    public func millis(_ column: String) -> Int64? { self[column].flatMap(PostgresTime.parse) }
    /// A `json`/`jsonb` cell's text.
    public func json(_ column: String) -> String? { self[column] }
}

/// One libpq connection, used by one thread at a time (a stage's own thread, or a pool's
/// borrower). Every call blocks: never call it from Swift's cooperative pool.
///
/// A broken connection is noticed by the call that breaks (it throws `.connection`) and
/// re-established by the next call (`PQreset`), so a stage's retry loop is all it takes to
/// wait out a restarted server.
public final class PostgresConnection {
    private var conn: OpaquePointer?
    private var cursorNumber = 0

    /// `url`: a `postgresql://` or `postgres://` URI (libpq's syntax, any of its parameters).
    /// The session always runs in UTC with ISO dates (what `PostgresRow.millis` reads).
    public init(url: String, applicationName: String = "autovolt-worker", connectTimeoutSeconds: Int = 10) throws(PostgresError) {
        // libpq reads keywords in order, later ones winning, and expands the first `dbname`
        // that is a URI into its parts: defaults first, then the URI, then what we require.
        let keywords = ["application_name", "connect_timeout", "keepalives", "keepalives_idle", "dbname", "options", "client_encoding"]
        let values = [applicationName, String(connectTimeoutSeconds), "1", "30", url, "-c TimeZone=UTC -c DateStyle=ISO", "UTF8"]
        let connection: OpaquePointer? = withCStrings(keywords) { k in
            withCStrings(values) { v in PQconnectdbParams(k, v, 1) }
        }
        guard let connection else { throw PostgresError(kind: .connection, message: "out of memory creating a connection") }
        guard PQstatus(connection) == CONNECTION_OK else {
            let message = String(cString: PQerrorMessage(connection))
            PQfinish(connection)
            let invalid = message.contains("invalid") && (message.contains("URI") || message.contains("connection option"))
            throw PostgresError(kind: invalid ? .invalidURL : .connection, message: message)
        }
        // Notices ("relation already exists, skipping") are not errors; libpq would print them to stderr.
        PQsetNoticeProcessor(connection, { _, _ in }, nil)
        conn = connection
    }

    deinit { close() }

    public func close() {
        if let conn { PQfinish(conn) }
        conn = nil
    }

    /// The server's version number (150018 for 15.18).
    public var serverVersion: Int { conn.map { Int(PQserverVersion($0)) } ?? 0 }

    /// True between BEGIN and COMMIT/ROLLBACK.
    public var inTransaction: Bool {
        guard let conn else { return false }
        let status = PQtransactionStatus(conn)
        return status == PQTRANS_INTRANS || status == PQTRANS_INERROR
    }

    private func ready() throws(PostgresError) -> OpaquePointer {
        guard let conn else { throw PostgresError(kind: .connection, message: "connection closed") }
        if PQstatus(conn) != CONNECTION_OK {
            PQreset(conn)
            guard PQstatus(conn) == CONNECTION_OK else {
                throw PostgresError(kind: .connection, message: String(cString: PQerrorMessage(conn)))
            }
            PQsetNoticeProcessor(conn, { _, _ in }, nil)
        }
        return conn
    }

    /// Runs a statement; returns the rows it returned.
    public func query(_ sql: String, _ params: [any PostgresBindable] = []) throws(PostgresError) -> [PostgresRow] {
        let (result, _) = try run(sql, params, wantRows: true)
        return result
    }

    /// Runs a statement; returns the number of rows it inserted, updated or deleted.
    @discardableResult
    public func execute(_ sql: String, _ params: [any PostgresBindable] = []) throws(PostgresError) -> Int {
        try run(sql, params, wantRows: false).affected
    }

    /// Several statements in one round trip, without parameters (DDL, migrations).
    public func executeScript(_ sql: String) throws(PostgresError) {
        let conn = try ready()
        guard let result = PQexec(conn, sql) else { throw connectionError(conn) }
        defer { PQclear(result) }
        try check(result, conn)
    }

    private func run(_ sql: String, _ params: [any PostgresBindable], wantRows: Bool) throws(PostgresError) -> ([PostgresRow], affected: Int) {
        let conn = try ready()
        let texts = params.map(\.postgresText)
        if texts.contains(where: { $0?.utf8.contains(0) == true }) { throw PostgresError.nulCharacter }
        let result: OpaquePointer? = withOptionalCStrings(texts) { values in
            PQexecParams(conn, sql, Int32(texts.count), nil, values, nil, nil, 0)
        }
        guard let result else { throw connectionError(conn) }
        defer { PQclear(result) }
        try check(result, conn)
        let affected = Int(String(cString: PQcmdTuples(result))) ?? 0
        guard wantRows, PQresultStatus(result) == PGRES_TUPLES_OK else { return ([], affected) }
        return (Self.rows(result), affected)
    }

    static func rows(_ result: OpaquePointer) -> [PostgresRow] {
        let n = Int(PQntuples(result)), width = Int(PQnfields(result))
        var columns: [String: Int] = [:]
        for c in 0..<width { columns[String(cString: PQfname(result, Int32(c))), default: c] = c }
        var rows: [PostgresRow] = []
        rows.reserveCapacity(n)
        for r in 0..<n {
            var cells: [String?] = []
            cells.reserveCapacity(width)
            for c in 0..<width {
                if PQgetisnull(result, Int32(r), Int32(c)) == 1 { cells.append(nil) } else {
                    cells.append(String(cString: PQgetvalue(result, Int32(r), Int32(c))))
                }
            }
            rows.append(PostgresRow(columns: columns, cells: cells))
        }
        return rows
    }

    private func check(_ result: OpaquePointer, _ conn: OpaquePointer) throws(PostgresError) {
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_TUPLES_OK, PGRES_EMPTY_QUERY, PGRES_COPY_IN:
            return
        default:
            let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
            let message = PQresultErrorField(result, Int32(UInt8(ascii: "M"))).map { String(cString: $0) }
                ?? String(cString: PQresultErrorMessage(result))
            if PQstatus(conn) != CONNECTION_OK || state == nil {
                // An error the server did not send (no SQLSTATE) is libpq's own: the server went
                // away mid-statement ("server closed the connection unexpectedly"), sometimes
                // before libpq marks the connection bad. Transient: the next call reconnects.
                throw PostgresError(kind: .connection, sqlState: state, message: message)
            }
            throw PostgresError(kind: .server, sqlState: state, message: message)
        }
    }

    private func connectionError(_ conn: OpaquePointer) -> PostgresError {
        PostgresError(kind: .connection, message: String(cString: PQerrorMessage(conn)))
    }

    /// Runs `body` in a transaction: COMMIT when it returns, ROLLBACK when it throws. Inside a
    /// transaction already, it just runs `body` (no nesting). A serialization failure or a
    /// deadlock is thrown as it is (transient): the caller's retry runs the whole step again.
    public func transaction<T>(_ isolation: String? = nil, _ body: () throws -> T) throws -> T {
        if inTransaction { return try body() }
        try execute(isolation.map { "BEGIN ISOLATION LEVEL \($0)" } ?? "BEGIN")
        do {
            let value = try body()
            try execute("COMMIT")
            return value
        } catch {
            if conn.map({ PQstatus($0) == CONNECTION_OK }) == true { _ = try? execute("ROLLBACK") }
            throw error
        }
    }

    /// Reads a query's rows `batchSize` at a time through a server-side cursor, so memory holds
    /// one batch whatever the result's size. Runs in a transaction (its own, or the caller's).
    public func forEachBatch(_ sql: String, _ params: [any PostgresBindable] = [], batchSize: Int = 1000,
                             _ body: ([PostgresRow]) throws -> Void) throws {
        try transaction {
            cursorNumber += 1
            let cursor = "autovolt_cursor_\(cursorNumber)"
            try execute("DECLARE \(cursor) NO SCROLL CURSOR FOR \(sql)", params)
            while true {
                let rows = try query("FETCH \(batchSize) FROM \(cursor)")
                if rows.isEmpty { break }
                try body(rows)
                if rows.count < batchSize { break }
            }
            try execute("CLOSE \(cursor)")
        }
    }

    /// `COPY table (columns) FROM STDIN` in text format: the fastest way in for many rows.
    /// nil cells are NULL. Returns the rows copied.
    @discardableResult
    public func copyIn(table: String, columns: [String], rows: [[String?]]) throws(PostgresError) -> Int {
        if rows.contains(where: { $0.contains { $0?.utf8.contains(0) == true } }) { throw PostgresError.nulCharacter }
        let conn = try ready()
        guard let start = PQexec(conn, "COPY \(table) (\(columns.joined(separator: ", "))) FROM STDIN") else { throw connectionError(conn) }
        let startStatus = PQresultStatus(start)
        defer { PQclear(start) }
        guard startStatus == PGRES_COPY_IN else {
            try check(start, conn)
            throw PostgresError(kind: .protocolError, message: "COPY did not start")
        }
        var buffer = ""
        buffer.reserveCapacity(64 * 1024)
        func flush() -> Bool {
            guard !buffer.isEmpty else { return true }
            let ok = buffer.withCString { PQputCopyData(conn, $0, Int32(strlen($0))) } == 1
            buffer.removeAll(keepingCapacity: true)
            return ok
        }
        var sent = true
        for row in rows where sent {
            for (i, cell) in row.enumerated() {
                if i > 0 { buffer += "\t" }
                if let cell { Self.appendCopyText(cell, to: &buffer) } else { buffer += "\\N" }
            }
            buffer += "\n"
            if buffer.utf8.count >= 60_000 { sent = flush() }
        }
        if sent { sent = flush() }
        let ended = PQputCopyEnd(conn, sent ? nil : "client failed to send COPY data") == 1
        var failure: PostgresError?
        var copied = 0
        while let result = PQgetResult(conn) {
            if PQresultStatus(result) == PGRES_COMMAND_OK {
                copied = Int(String(cString: PQcmdTuples(result))) ?? 0
            } else if failure == nil {
                do throws(PostgresError) { try check(result, conn) } catch { failure = error }
            }
            PQclear(result)
        }
        if let failure { throw failure }
        guard ended, sent else { throw connectionError(conn) }
        return copied
    }

    static func appendCopyText(_ value: String, to out: inout String) {
        for scalar in value.unicodeScalars {
            switch scalar {
            case "\\": out += "\\\\"
            case "\t": out += "\\t"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            default: out.unicodeScalars.append(scalar)
            }
        }
    }
}

private func withCStrings<R>(_ strings: [String], _ body: (UnsafePointer<UnsafePointer<CChar>?>) -> R) -> R {
    let copies = strings.map { strdup($0) }
    defer { copies.forEach { free($0) } }
    var pointers: [UnsafePointer<CChar>?] = copies.map { UnsafePointer($0) }
    pointers.append(nil)
    return pointers.withUnsafeBufferPointer { body($0.baseAddress!) }
}

private func withOptionalCStrings<R>(_ strings: [String?], _ body: (UnsafePointer<UnsafePointer<CChar>?>?) -> R) -> R {
    let copies = strings.map { $0.map { strdup($0) } ?? nil }
    defer { copies.forEach { free($0) } }
    let pointers: [UnsafePointer<CChar>?] = copies.map { $0.map { UnsafePointer($0) } }
    return pointers.withUnsafeBufferPointer { body($0.baseAddress) }
}
