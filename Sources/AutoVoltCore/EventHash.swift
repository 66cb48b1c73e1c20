import Crypto

/// `event_hash`: SHA-256 (lowercase hex) over the device name, the timestamp exactly as sent and
/// the counter value, joined by newlines:
///
///     "<esp32_name>\n<timestamp as sent, or empty>\n<energy_wh_total, shortest round-trip form>"
///
/// The counter is written in its canonical shortest form (`12345.5`, `100.0`) so `100` and `100.0`
/// are the same reading. The same message delivered twice always has the same hash; `seq` is not
/// part of it because it repeats after a reboot.
public enum EventHash {
    public static func compute(esp32Name: String, timestampAsSent: String?, energyWhTotal: Double) -> String {
        var input = esp32Name
        input.reserveCapacity(esp32Name.utf8.count + 48)
        input += "\n"
        input += timestampAsSent ?? ""
        input += "\n"
        input += canonical(energyWhTotal)
        let digest = SHA256.hash(data: Array(input.utf8))
        return hex(digest)
    }

    /// SHA-256 of a string, lowercase hex.
    public static func sha256Hex(_ text: String) -> String {
        hex(SHA256.hash(data: Array(text.utf8)))
    }

    /// SHA-256 of bytes, lowercase hex (statement exports).
    public static func sha256Hex(bytes: [UInt8]) -> String {
        hex(SHA256.hash(data: bytes))
    }

    static func canonical(_ value: Double) -> String {
        value.description
    }

    static func hex(_ digest: SHA256.Digest) -> String {
        // Digits by arithmetic, not a table: no global access or bounds check per nibble.
        @inline(__always) func digit(_ nibble: UInt8) -> UInt8 { nibble < 10 ? 48 + nibble : 87 + nibble }
        return String(unsafeUninitializedCapacity: 64) { buffer in
            digest.withUnsafeBytes { bytes in
                for (i, byte) in bytes.enumerated() {
                    buffer[2 * i] = digit(byte >> 4)
                    buffer[2 * i + 1] = digit(byte & 0x0F)
                }
            }
            return 64
        }
    }
}
