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

    static func canonical(_ value: Double) -> String {
        value.description
    }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    static func hex(_ digest: SHA256.Digest) -> String {
        String(unsafeUninitializedCapacity: 64) { buffer in
            var i = 0
            for byte in digest {
                buffer[i] = hexDigits[Int(byte >> 4)]
                buffer[i + 1] = hexDigits[Int(byte & 0x0F)]
                i += 2
            }
            return 64
        }
    }
}
