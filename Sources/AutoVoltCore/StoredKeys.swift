/// Keys that come from devices are untrusted input: MongoDB refuses (or, depending on the server
/// version and the operation, mis-reads) a field name that holds a NUL, starts with `$` or holds a
/// `.`, and a document with the same key twice is undefined behaviour. The unknown keys of a
/// payload are kept in the event's `extra` under a stored form that every MongoDB version accepts
/// and that maps back to the key as sent.
///
/// The rule (firmware-contract/README.md, "Unknown keys"):
/// `%`, `.` and NUL anywhere, and `$` as the first character, are written as `%` and two
/// upper-case hex digits (`%25`, `%2E`, `%00`, `%24`); every other character is kept; the empty
/// key (libmongoc refuses it on insert) is stored as `%`. So `mac`,
/// `rssi` or `relay_16` are stored as sent, `$where` as `%24where`, `a.b` as `a%2Eb`. Nested
/// objects and arrays are stored the same way, to any depth the JSON reader allows. The mapping is
/// one to one, and the JSON reader refuses an object with a key twice, so stored keys are unique.
public enum StoredKeys {
    /// The stored form of one key (without the duplicate suffix).
    public static func escape(_ key: String) -> String {
        if key.isEmpty { return "%" }
        var needsEscape = false
        for (offset, byte) in key.utf8.enumerated() where mustEscape(byte, first: offset == 0) {
            needsEscape = true
            break
        }
        guard needsEscape else { return key }
        var out: [UInt8] = []
        out.reserveCapacity(key.utf8.count + 8)
        for (offset, byte) in key.utf8.enumerated() {
            if mustEscape(byte, first: offset == 0) {
                out.append(UInt8(ascii: "%"))
                out.append(hexDigit(byte >> 4))
                out.append(hexDigit(byte & 0xF))
            } else {
                out.append(byte)
            }
        }
        // Only ASCII bytes were replaced by ASCII, so the result is valid UTF-8.
        return String(decoding: out, as: UTF8.self)
    }

    /// The key as sent, from its stored form (the inverse of `escape`); nil for text that
    /// `escape` cannot have produced.
    public static func unescape(_ stored: String) -> String? {
        if stored == "%" { return "" }
        let bytes = Array(stored.utf8)
        guard !bytes.isEmpty else { return nil }
        var out: [UInt8] = []
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "%") {
                guard index + 2 < bytes.count,
                      let high = hexValue(bytes[index + 1]), let low = hexValue(bytes[index + 2]) else { return nil }
                let decoded = high << 4 | low
                guard mustEscape(decoded, first: out.isEmpty) else { return nil }
                out.append(decoded)
                index += 3
            } else {
                guard !mustEscape(byte, first: out.isEmpty) else { return nil }
                out.append(byte)
                index += 1
            }
        }
        return String(validating: out, as: UTF8.self)
    }

    /// An object with every key in stored form, nested values likewise.
    public static func storable(_ object: JSONObject) -> JSONObject {
        JSONObject(object.members.map { (escape($0.key), storable($0.value)) })
    }

    public static func storable(_ value: JSONValue) -> JSONValue {
        switch value {
        case .object(let object): .object(storable(object))
        case .array(let items): .array(items.map(storable))
        default: value
        }
    }

    /// True when `key` is already in stored form and needs no change (used to check switch names).
    public static func isStoredAsSent(_ key: String) -> Bool { escape(key) == key }

    private static func mustEscape(_ byte: UInt8, first: Bool) -> Bool {
        switch byte {
        case 0, UInt8(ascii: "%"), UInt8(ascii: "."): true
        case UInt8(ascii: "$"): first
        default: false
        }
    }

    private static func hexDigit(_ nibble: UInt8) -> UInt8 {
        nibble < 10 ? UInt8(ascii: "0") + nibble : UInt8(ascii: "A") + nibble - 10
    }

    private static func hexValue(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}
