/// `autovolt/<esp32_name>/<kind>`; the `+` segment names the device.
public struct DeviceTopic: Sendable, Equatable {
    public let esp32Name: String
    public let kind: MessageKind

    public static let prefix = "autovolt"

    public static func parse(_ topic: String) -> Result<DeviceTopic, Rejection> {
        let parts = topic.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 3, parts[0] == prefix, let kind = MessageKind(rawValue: String(parts[2])) else {
            return .failure(Rejection(.invalidTopic, "topic \"\(topic)\" is not autovolt/<esp32_name>/telemetry|status|heartbeat"))
        }
        let name = String(parts[1])
        guard isValidDeviceName(name) else {
            return .failure(Rejection(.invalidDeviceName, "device name \"\(name)\" is not [A-Za-z0-9_.-]{1,64}"))
        }
        return .success(DeviceTopic(esp32Name: name, kind: kind))
    }

    public static func isValidDeviceName(_ name: String) -> Bool {
        let utf8 = name.utf8
        guard (1...64).contains(utf8.count) else { return false }
        return utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "."), UInt8(ascii: "-"):
                true
            default: false
            }
        }
    }

    /// The three subscriptions, optionally as a shared subscription group.
    public static func subscriptions(shareGroup: String?) -> [String] {
        MessageKind.allCases.map { kind in
            let filter = "\(prefix)/+/\(kind.rawValue)"
            if let group = shareGroup { return "$share/\(group)/\(filter)" }
            return filter
        }
    }
}
