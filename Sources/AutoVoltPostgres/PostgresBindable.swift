/// A value sent as a statement parameter. Everything goes as text and the server casts it
/// (`$1::jsonb`, `$2::timestamptz`): one code path, and no binary formats to get wrong.
public protocol PostgresBindable {
    /// The parameter's text, nil for SQL NULL.
    var postgresText: String? { get }
}

extension String: PostgresBindable { public var postgresText: String? { self } }
extension Int: PostgresBindable { public var postgresText: String? { String(self) } }
extension Int64: PostgresBindable { public var postgresText: String? { String(self) } }
extension Int32: PostgresBindable { public var postgresText: String? { String(self) } }
extension Bool: PostgresBindable { public var postgresText: String? { self ? "t" : "f" } }
extension Double: PostgresBindable {
    /// Swift's shortest text that reads back as the same double; PostgreSQL's float8 input
    /// reads it exactly (extra_float_digits does not matter for input).
    public var postgresText: String? {
        if isNaN { return "NaN" }
        if isInfinite { return self < 0 ? "-Infinity" : "Infinity" }
        return String(self)
    }
}
extension Optional: PostgresBindable where Wrapped: PostgresBindable {
    public var postgresText: String? { self?.postgresText }
}

/// SQL NULL of any type, for a parameter list.
public struct PostgresNull: PostgresBindable, Sendable {
    public init() {}
    public var postgresText: String? { nil }
}

/// A UTC instant in epoch milliseconds, for a `timestamptz` parameter.
public struct PostgresTimestamp: PostgresBindable, Sendable, Hashable {
    public let millis: Int64
    public init(millis: Int64) { self.millis = millis }
    public var postgresText: String? { PostgresTime.format(millis) }
}

/// JSON text for a `jsonb` parameter (write `$n::jsonb`).
public struct PostgresJSON: PostgresBindable, Sendable, Hashable {
    public let text: String
    public init(_ text: String) { self.text = text }
    public var postgresText: String? { text }
}

/// A text array parameter (write `$n::text[]`, e.g. `WHERE id = ANY($1::text[])`).
public struct PostgresTextArray: PostgresBindable, Sendable, Hashable {
    public let values: [String]
    public init(_ values: [String]) { self.values = values }
    public init<S: Sequence>(_ values: S) where S.Element == String { self.values = Array(values) }
    /// The array literal: every element double-quoted, with `"` and `\` escaped.
    public var postgresText: String? {
        var out = "{"
        for (i, value) in values.enumerated() {
            if i > 0 { out += "," }
            out += "\""
            for ch in value.unicodeScalars {
                if ch == "\"" || ch == "\\" { out += "\\" }
                out.unicodeScalars.append(ch)
            }
            out += "\""
        }
        return out + "}"
    }
}

/// `timestamptz` text, both ways, without Foundation's formatters (the drain writes thousands a
/// second). The session runs with `TimeZone=UTC` and `DateStyle=ISO`, so the server's output
/// is `2026-12-07 10:00:00.123+00`.
public enum PostgresTime {
    /// `2026-12-07T10:00:00.123Z`
    public static func format(_ millis: Int64) -> String {
        let days = floorDiv(millis, 86_400_000)
        let msOfDay = millis - days * 86_400_000
        let (y, m, d) = civil(fromDays: days)
        let h = msOfDay / 3_600_000, mi = msOfDay / 60_000 % 60, s = msOfDay / 1000 % 60, ms = msOfDay % 1000
        return "\(pad(y, 4))-\(pad(m, 2))-\(pad(d, 2))T\(pad(h, 2)):\(pad(mi, 2)):\(pad(s, 2)).\(pad(ms, 3))Z"
    }

    /// Reads the server's `timestamptz` output (any offset, fraction of up to 6 digits) to epoch
    /// milliseconds, rounded to the nearest; nil for text it does not understand (`infinity`).
    public static func parse(_ text: String) -> Int64? {
        let u = Array(text.utf8)
        func num(_ from: Int, _ count: Int) -> Int64? {
            guard from + count <= u.count else { return nil }
            var v: Int64 = 0
            for i in from..<(from + count) {
                let c = u[i]
                guard c >= 48 && c <= 57 else { return nil }
                v = v * 10 + Int64(c - 48)
            }
            return v
        }
        guard u.count >= 19, let y = num(0, 4), u[4] == 45, let mo = num(5, 2), u[7] == 45, let d = num(8, 2),
              u[10] == 32 || u[10] == 84, let h = num(11, 2), let mi = num(14, 2), let s = num(17, 2) else { return nil }
        var i = 19
        var micros: Int64 = 0
        if i < u.count, u[i] == 46 {
            i += 1
            var digits = 0
            while i < u.count, u[i] >= 48, u[i] <= 57 {
                if digits < 6 { micros = micros * 10 + Int64(u[i] - 48) }
                digits += 1
                i += 1
            }
            if digits < 6 { for _ in digits..<6 { micros *= 10 } }
        }
        var offsetSeconds: Int64 = 0
        if i < u.count {
            let sign: Int64 = u[i] == 45 ? -1 : 1
            guard u[i] == 43 || u[i] == 45, let oh = num(i + 1, 2) else { return nil }
            var om: Int64 = 0
            if i + 3 < u.count, u[i + 3] == 58, let m = num(i + 4, 2) { om = m }
            offsetSeconds = sign * (oh * 3600 + om * 60)
        }
        let days = days(fromCivil: y, mo, d)
        let seconds = days * 86_400 + h * 3600 + mi * 60 + s - offsetSeconds
        return seconds * 1000 + (micros + 500) / 1000
    }

    static func floorDiv(_ a: Int64, _ b: Int64) -> Int64 { a >= 0 ? a / b : -((-a + b - 1) / b) }

    static func pad(_ v: Int64, _ width: Int) -> String {
        let s = String(v)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }

    // Howard Hinnant's days-from-civil and its inverse (proleptic Gregorian calendar).
    static func days(fromCivil y0: Int64, _ m: Int64, _ d: Int64) -> Int64 {
        let y = m <= 2 ? y0 - 1 : y0
        let era = floorDiv(y, 400)
        let yoe = y - era * 400
        let doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy
        return era * 146_097 + doe - 719_468
    }

    static func civil(fromDays z0: Int64) -> (Int64, Int64, Int64) {
        let z = z0 + 719_468
        let era = floorDiv(z, 146_097)
        let doe = z - era * 146_097
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100)
        let mp = (5 * doy + 2) / 153
        let d = doy - (153 * mp + 2) / 5 + 1
        let m = mp < 10 ? mp + 3 : mp - 9
        return (m <= 2 ? yoe + era * 400 + 1 : yoe + era * 400, m, d)
    }
}
