import Crypto
import Foundation

/// The HMAC-SHA256 signature of an HTTP ingest request (README "HTTP ingest"):
/// `X-AutoVolt-Signature: sha256=<hex>` over `<X-AutoVolt-Timestamp>.<body>`, where the timestamp
/// is epoch seconds and must lie within `window` of the server's clock. Pure: the caller keeps the
/// signatures it has seen (`ReplayGuard`) so one request cannot be sent twice inside the window.
public enum IngestSignature {
    public static let windowMillis: EpochMillis = 5 * 60_000

    public enum Failure: Error, Equatable, Sendable, CustomStringConvertible {
        case missingTimestamp, badTimestamp, outsideWindow, badSignature, replayed
        public var description: String {
            switch self {
            case .missingTimestamp: "X-AutoVolt-Signature needs X-AutoVolt-Timestamp (epoch seconds)"
            case .badTimestamp: "X-AutoVolt-Timestamp must be whole epoch seconds"
            case .outsideWindow: "X-AutoVolt-Timestamp is more than 5 minutes from the server's clock"
            case .badSignature: "X-AutoVolt-Signature does not match the body"
            case .replayed: "this signed request was already received"
            }
        }
    }

    /// `sha256=` and the hex HMAC of `timestamp.body`.
    public static func sign(secret: String, timestamp: String, body: some Collection<UInt8>) -> String {
        var mac = HMAC<SHA256>(key: SymmetricKey(data: Array(secret.utf8)))
        mac.update(data: Array(timestamp.utf8))
        mac.update(data: [UInt8(ascii: ".")])
        mac.update(data: Array(body))
        return "sha256=" + Data(mac.finalize()).map { String(format: "%02x", $0) }.joined()
    }

    /// Checks the timestamp window and the signature against each candidate secret (constant
    /// time per comparison). Returns the timestamp in milliseconds.
    public static func verify(secrets: [String], timestamp: String?, signature: String, body: some Collection<UInt8>,
                              now: EpochMillis) -> Result<EpochMillis, Failure> {
        guard let timestamp else { return .failure(.missingTimestamp) }
        guard let seconds = Int64(timestamp), timestamp.utf8.count <= 12 else { return .failure(.badTimestamp) }
        let millis = seconds * 1000
        guard abs(millis - now) <= windowMillis else { return .failure(.outsideWindow) }
        let given = signature.lowercased()
        for secret in secrets where constantTimeEquals(sign(secret: secret, timestamp: timestamp, body: body), given) {
            return .success(millis)
        }
        return .failure(.badSignature)
    }
}

/// Signatures seen inside the window: a second request with one of them is a replay. Bounded:
/// entries leave when their timestamp falls out of the window, and at `capacity` (over 600
/// signed requests a second for five minutes) the oldest go first. A replay that slips through
/// then still changes nothing: its messages hash to the events already stored.
public struct ReplayGuard: Sendable {
    public let capacity: Int
    private var seen: [String: EpochMillis] = [:]
    private var order: [(signature: String, timestamp: EpochMillis)] = []
    private var head = 0

    public init(capacity: Int = 200_000) { self.capacity = max(1, capacity) }

    public var count: Int { seen.count }

    /// Records the signature; false when it was already there.
    public mutating func admit(_ signature: String, timestamp: EpochMillis, now: EpochMillis) -> Bool {
        // Forget what the window no longer accepts (in arrival order, which is close to timestamp order).
        while head < order.count, order[head].timestamp < now - IngestSignature.windowMillis || seen.count >= capacity {
            let old = order[head]
            if seen[old.signature] == old.timestamp { seen[old.signature] = nil }
            head += 1
        }
        if head > 4_096 && head * 2 > order.count {
            order.removeFirst(head)
            head = 0
        }
        guard seen[signature] == nil else { return false }
        seen[signature] = timestamp
        order.append((signature, timestamp))
        return true
    }
}

/// Compares two secrets in time that depends on their lengths only, not on where they differ.
public func constantTimeEquals(_ a: some StringProtocol, _ b: some StringProtocol) -> Bool {
    let x = Array(a.utf8), y = Array(b.utf8)
    var difference = UInt8(truncatingIfNeeded: x.count ^ y.count) | (x.count == y.count ? 0 : 1)
    for i in 0..<max(x.count, y.count) {
        difference |= (i < x.count ? x[i] : 0) ^ (i < y.count ? y[i] : 0)
    }
    return difference == 0
}
