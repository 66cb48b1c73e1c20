import Foundation

/// Up to `size` connections to one database, lent to one thread at a time. Borrowing blocks
/// while all are lent: call from dedicated threads (the stages', the HTTP executor's), never
/// from Swift's cooperative pool. A connection that broke is dropped, not lent again; the next
/// borrower connects afresh, so a restarted server is waited out by the callers' retries.
// @unchecked: `idle` and `open` are read and written under `condition`.
public final class PostgresPool: @unchecked Sendable {
    public let url: String
    public let size: Int
    let applicationName: String
    private let condition = NSCondition()
    private var idle: [PostgresConnection] = []
    private var open = 0
    private var closed = false

    /// Connects once to check the URL and the server (throws what connecting throws).
    public init(url: String, size: Int = 4, applicationName: String = "autovolt-worker") throws(PostgresError) {
        self.url = url
        self.size = max(1, size)
        self.applicationName = applicationName
        let first = try PostgresConnection(url: url, applicationName: applicationName)
        idle.append(first)
        open = 1
    }

    public func withConnection<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        let connection = try borrow()
        do {
            let value = try body(connection)
            giveBack(connection, broken: connection.inTransaction)
            return value
        } catch {
            let broken = (error as? PostgresError)?.kind == .connection || connection.inTransaction
            giveBack(connection, broken: broken)
            throw error
        }
    }

    private func borrow() throws -> PostgresConnection {
        condition.lock()
        while true {
            if closed {
                condition.unlock()
                throw PostgresError(kind: .connection, message: "the connection pool is closed")
            }
            if let connection = idle.popLast() {
                condition.unlock()
                return connection
            }
            if open < size {
                open += 1
                condition.unlock()
                do {
                    return try PostgresConnection(url: url, applicationName: applicationName)
                } catch {
                    condition.lock()
                    open -= 1
                    condition.signal()
                    condition.unlock()
                    throw error
                }
            }
            condition.wait()
        }
    }

    /// A connection left in a transaction (a body that returned inside one) or broken is closed.
    private func giveBack(_ connection: PostgresConnection, broken: Bool) {
        condition.lock()
        if broken || closed {
            open -= 1
            connection.close()
        } else {
            idle.append(connection)
        }
        condition.signal()
        condition.unlock()
    }

    /// Closes the idle connections; lent ones close when given back.
    public func close() {
        condition.lock()
        closed = true
        let connections = idle
        idle.removeAll()
        open -= connections.count
        condition.broadcast()
        condition.unlock()
        connections.forEach { $0.close() }
    }
}
