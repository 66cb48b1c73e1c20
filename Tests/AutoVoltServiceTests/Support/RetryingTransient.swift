@testable import AutoVoltService
import Foundation

/// A test's own reads and writes across a crash of its server: the same retry as a stage's. A
/// transient failure (a connection that died with the server) is tried again after 0.2 s, up to
/// ten times; anything else is thrown at once.
func retryingTransient<T>(_ body: () throws -> T) throws -> T {
    for _ in 0..<10 {
        do {
            return try body()
        } catch {
            guard storageDisposition(of: error) == .transient else { throw error }
            Thread.sleep(forTimeInterval: 0.2)
        }
    }
    return try body()
}
