import AutoVoltCore
import Foundation
import Synchronization
import Logging

/// One line per event, for `journalctl`: `LEVEL message key=value ...` (text) or a JSON object.
public struct WorkerLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    let label: String
    let json: Bool
    /// One line at a time on stderr, from every thread.
    private static let writing = Mutex(())

    public init(label: String, level: Logger.Level, json: Bool) {
        self.label = label
        self.logLevel = level
        self.json = json
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(level: Logger.Level, message: Logger.Message, metadata explicit: Logger.Metadata?,
                    source: String, file: String, function: String, line: UInt) {
        var all = metadata
        if let explicit { all.merge(explicit) { $1 } }
        let line: String
        if json {
            var object: [String: Any] = ["ts": Self.timestamp(), "level": level.rawValue, "msg": message.description]
            for (k, v) in all { object[k] = "\(v)" }
            let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data()
            line = String(decoding: data, as: UTF8.self)
        } else {
            let fields = all.sorted { $0.key < $1.key }.map { "\($0.key)=\(Self.quote("\($0.value)"))" }.joined(separator: " ")
            line = "\(Self.timestamp()) \(level.rawValue.uppercased()) \(message)\(fields.isEmpty ? "" : " " + fields)"
        }
        Self.writing.withLock { _ in StandardStreams.err(line + "\n") }
    }

    static func quote(_ value: String) -> String {
        value.contains(where: { $0 == " " || $0 == "\"" || $0 == "=" }) ? "\"" + value.replacingOccurrences(of: "\"", with: "\\\"") + "\"" : value
    }

    static func timestamp() -> String {
        let now = Date().timeIntervalSince1970
        return ISO8601.format(Int64((now * 1000).rounded()))
    }
}
