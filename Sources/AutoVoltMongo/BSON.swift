import CMongoc
import Foundation

/// A BSON value.
///
/// Integer literals become `.int64` (always, whatever their size), so a document written from
/// Swift literals has one consistent integer type; use `.int32(...)` explicitly when a field must
/// be a 32-bit integer. Decoded documents keep the type the server sent; the `int64Value` and
/// `doubleValue` accessors widen, so readers need not care.
///
/// `.datetime` has millisecond precision on the wire: encoding truncates a `Date` to the
/// millisecond (towards the past). A `Date` with sub-millisecond digits therefore does not compare
/// equal to its round trip.
///
/// BSON types this enum does not model (timestamp, regex, JavaScript code, symbol, DBPointer,
/// min/max key, undefined) decode to `.string` with a short description (`.null` for
/// undefined); they are never written by this module.
public enum BSON: Sendable, Hashable {
    case double(Double)
    case string(String)
    case document(BSONDocument)
    case array([BSON])
    case bool(Bool)
    /// A UTC datetime, millisecond precision.
    case datetime(Date)
    case null
    case int32(Int32)
    case int64(Int64)
    /// An ObjectId as 24 hexadecimal characters (lowercase when decoded).
    case objectID(String)
    case binary(subtype: UInt8, data: [UInt8])
    /// A Decimal128 in its canonical string form, e.g. `"1.50"`.
    case decimal128String(String)
}

extension BSON {
    /// The value as a `Double`, widening `.int32` and `.int64` (and `.decimal128String`).
    public var doubleValue: Double? {
        switch self {
        case .double(let v): return v
        case .int32(let v): return Double(v)
        case .int64(let v): return Double(v)
        case .decimal128String(let s): return Double(s)
        default: return nil
        }
    }

    public var stringValue: String? {
        if case .string(let v) = self { return v }
        return nil
    }

    /// The value as an `Int64`, widening `.int32`; a `.double` with an integral value that fits is
    /// converted too (the server may return counts as doubles).
    public var int64Value: Int64? {
        switch self {
        case .int64(let v): return v
        case .int32(let v): return Int64(v)
        case .double(let v): return Int64(exactly: v)
        default: return nil
        }
    }

    /// `int64Value` as an `Int`.
    public var intValue: Int? { int64Value.flatMap { Int(exactly: $0) } }

    public var boolValue: Bool? {
        if case .bool(let v) = self { return v }
        return nil
    }

    public var dateValue: Date? {
        if case .datetime(let v) = self { return v }
        return nil
    }

    public var documentValue: BSONDocument? {
        if case .document(let v) = self { return v }
        return nil
    }

    public var arrayValue: [BSON]? {
        if case .array(let v) = self { return v }
        return nil
    }

    public var objectIDValue: String? {
        if case .objectID(let v) = self { return v }
        return nil
    }

    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }
}

extension BSON: ExpressibleByStringLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
}

extension BSON: ExpressibleByIntegerLiteral {
    /// Integer literals are always `.int64`.
    public init(integerLiteral value: Int64) { self = .int64(value) }
}

extension BSON: ExpressibleByFloatLiteral {
    public init(floatLiteral value: Double) { self = .double(value) }
}

extension BSON: ExpressibleByBooleanLiteral {
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}

extension BSON: ExpressibleByArrayLiteral {
    public init(arrayLiteral elements: BSON...) { self = .array(elements) }
}

extension BSON: ExpressibleByDictionaryLiteral {
    public init(dictionaryLiteral elements: (String, BSON)...) {
        var doc = BSONDocument()
        for (k, v) in elements { doc[k] = v }
        self = .document(doc)
    }
}

extension BSON: ExpressibleByNilLiteral {
    public init(nilLiteral: ()) { self = .null }
}

/// An ordered BSON document. Keys keep their insertion order (as on the wire); equality is
/// order-sensitive, like BSON's. Lookup is linear, which is what small documents want.
public struct BSONDocument: Sendable, Hashable, Sequence, ExpressibleByDictionaryLiteral {
    public typealias Element = (key: String, value: BSON)

    private struct Field: Sendable, Hashable {
        var key: String
        var value: BSON
    }

    private var fields: [Field] = []

    public init() {}

    public init(_ pairs: [(String, BSON)]) {
        for (k, v) in pairs { self[k] = v }
    }

    public init(dictionaryLiteral elements: (String, BSON)...) {
        for (k, v) in elements { self[k] = v }
    }

    /// The first value stored under `key`. Setting replaces that value in place, or appends the
    /// key when it is new; setting `nil` removes the key.
    public subscript(key: String) -> BSON? {
        get { fields.first(where: { $0.key == key })?.value }
        set {
            if let i = fields.firstIndex(where: { $0.key == key }) {
                if let newValue { fields[i].value = newValue } else { fields.remove(at: i) }
            } else if let newValue {
                fields.append(Field(key: key, value: newValue))
            }
        }
    }

    public var keys: [String] { fields.map(\.key) }
    public var values: [BSON] { fields.map(\.value) }
    public var count: Int { fields.count }
    public var isEmpty: Bool { fields.isEmpty }

    public func makeIterator() -> AnyIterator<Element> {
        var it = fields.makeIterator()
        return AnyIterator { it.next().map { (key: $0.key, value: $0.value) } }
    }

    /// Appends a field even when the key already exists (decoding keeps duplicate keys as sent).
    mutating func appendRaw(_ key: String, _ value: BSON) {
        fields.append(Field(key: key, value: value))
    }
}

extension BSONDocument: CustomStringConvertible {
    /// Relaxed extended JSON, or a fallback description when the document cannot be encoded.
    public var description: String {
        (try? toExtendedJSON()) ?? String(describing: fields.map { ($0.key, $0.value) })
    }
}

// MARK: - bson_t conversion

// Swift cannot import libbson's `bson_t` and `bson_iter_t` layouts (they are declared 128-byte
// aligned), so they arrive as `OpaquePointer`. Storage we own is allocated raw: libbson asserts
// `sizeof(bson_t) == 128`; `bson_iter_t` is 80 bytes. Both get 128 bytes, 128-aligned.
private let libbsonStructSize = 128
private let libbsonStructAlignment = 128

/// An owned, heap-allocated `bson_t` (from `bson_new`), destroyed on deinit.
final class OwnedBSON {
    let pointer: OpaquePointer
    init(_ pointer: OpaquePointer) { self.pointer = pointer }
    deinit { bson_destroy(pointer) }
}

/// Storage for a `bson_t` that libmongoc initialises itself (the `reply` out-parameters, which
/// are "always initialised", even on failure, overwriting whatever was there). Initialised empty
/// here too, so destroying it is correct whether or not libmongoc wrote to it.
final class ReplyBSON {
    private let raw: UnsafeMutableRawPointer
    let pointer: OpaquePointer
    init() {
        raw = .allocate(byteCount: libbsonStructSize, alignment: libbsonStructAlignment)
        raw.initializeMemory(as: UInt8.self, repeating: 0, count: libbsonStructSize)
        pointer = OpaquePointer(raw)
        bson_init(pointer)
    }
    deinit {
        bson_destroy(pointer)  // frees a heap buffer, not the struct (bson_init marks it static)
        raw.deallocate()
    }
    /// The reply decoded; an undecodable reply becomes an empty document.
    var document: BSONDocument { (try? BSONDocument(copying: pointer)) ?? BSONDocument() }
}

/// Runs `body` with a zeroed `bson_iter_t`.
private func withIterator<R>(_ body: (OpaquePointer) throws(MongoError) -> R) throws(MongoError) -> R {
    let raw = UnsafeMutableRawPointer.allocate(byteCount: libbsonStructSize, alignment: libbsonStructAlignment)
    raw.initializeMemory(as: UInt8.self, repeating: 0, count: libbsonStructSize)
    defer { raw.deallocate() }
    return try body(OpaquePointer(raw))
}

extension BSON {
    /// Milliseconds since the epoch, truncated towards the past. Rounds to the microsecond first,
    /// so a `Date` built from whole milliseconds survives the Double arithmetic.
    static func milliseconds(_ date: Date) -> Int64 {
        let micros = (date.timeIntervalSince1970 * 1_000_000).rounded()
        let millis = (micros / 1000).rounded(.down)
        guard millis.isFinite else { return millis < 0 ? Int64.min : Int64.max }
        if millis >= 9.2e18 { return Int64.max }
        if millis <= -9.2e18 { return Int64.min }
        return Int64(millis)
    }
}

private func invalid(_ message: String) -> MongoError {
    MongoError(kind: .invalidArgument, code: 0, domain: 0, message: message)
}

extension BSONDocument {
    /// Encodes into a new `bson_t`. Fails (never crashes) on an invalid ObjectId or Decimal128
    /// string, a key containing NUL, or a document over libbson's size limit.
    func makeBSON() throws(MongoError) -> OwnedBSON {
        guard let raw = bson_new() else { throw invalid("bson_new failed") }
        let owned = OwnedBSON(raw)
        for field in self {
            try Self.append(field.value, key: field.key, to: raw)
        }
        return owned
    }

    /// Encodes an array as a BSON array document (keys "0", "1", ...).
    static func makeBSONArray(_ values: [BSON]) throws(MongoError) -> OwnedBSON {
        guard let raw = bson_new() else { throw invalid("bson_new failed") }
        let owned = OwnedBSON(raw)
        for (i, v) in values.enumerated() {
            try append(v, key: String(i), to: raw)
        }
        return owned
    }

    private static func append(_ value: BSON, key: String, to b: OpaquePointer) throws(MongoError) {
        let keyLen = Int32(key.utf8.count)
        if key.utf8.contains(0) { throw invalid("BSON key contains a NUL byte: \(key.debugDescription)") }
        let ok: Bool
        switch value {
        case .double(let d):
            ok = bson_append_double(b, key, keyLen, d)
        case .string(let s):
            var s = s
            // Pass the length so strings with embedded NUL bytes survive.
            ok = s.withUTF8 { buf in
                buf.withMemoryRebound(to: CChar.self) { chars in
                    guard let base = chars.baseAddress else { return bson_append_utf8(b, key, keyLen, "", 0) }
                    return bson_append_utf8(b, key, keyLen, base, Int32(chars.count))
                }
            }
        case .document(let doc):
            let child = try doc.makeBSON()
            ok = bson_append_document(b, key, keyLen, child.pointer)
        case .array(let values):
            let child = try makeBSONArray(values)
            ok = bson_append_array(b, key, keyLen, child.pointer)
        case .bool(let v):
            ok = bson_append_bool(b, key, keyLen, v)
        case .datetime(let date):
            ok = bson_append_date_time(b, key, keyLen, BSON.milliseconds(date))
        case .null:
            ok = bson_append_null(b, key, keyLen)
        case .int32(let v):
            ok = bson_append_int32(b, key, keyLen, v)
        case .int64(let v):
            ok = bson_append_int64(b, key, keyLen, v)
        case .objectID(let hex):
            guard hex.utf8.count == 24, bson_oid_is_valid(hex, 24) else {
                throw invalid("invalid ObjectId \(hex.debugDescription): expected 24 hex characters")
            }
            var oid = bson_oid_t()
            bson_oid_init_from_string(&oid, hex)
            ok = bson_append_oid(b, key, keyLen, &oid)
        case .binary(let subtype, let data):
            ok = data.withUnsafeBufferPointer { buf in
                bson_append_binary(b, key, keyLen, bson_subtype_t(UInt32(subtype)),
                                   buf.baseAddress, UInt32(buf.count))
            }
        case .decimal128String(let s):
            var dec = bson_decimal128_t()
            guard bson_decimal128_from_string(s, &dec) else {
                throw invalid("invalid Decimal128 \(s.debugDescription)")
            }
            ok = bson_append_decimal128(b, key, keyLen, &dec)
        }
        if !ok {
            throw invalid("cannot append field \(key.debugDescription) to BSON (document too large?)")
        }
    }

    /// Decodes a `bson_t` (copying everything; the pointer is not retained). libmongoc validates
    /// replies; `init(bsonBytes:)` validates raw bytes before they get here.
    init(copying bson: OpaquePointer) throws(MongoError) {
        self = try withIterator { (iter) throws(MongoError) -> BSONDocument in
            guard bson_iter_init(iter, bson) else {
                throw MongoError(kind: .protocolError, code: 0, domain: 0, message: "corrupt BSON document")
            }
            return try Self.decodeDocument(iter)
        }
    }

    private static func decodeDocument(_ iter: OpaquePointer) throws(MongoError) -> BSONDocument {
        var doc = BSONDocument()
        while bson_iter_next(iter) {
            let key = String(cString: bson_iter_key(iter))
            doc.appendRaw(key, try decodeValue(iter))
        }
        return doc
    }

    private static func decodeChild(_ iter: OpaquePointer) throws(MongoError) -> BSONDocument {
        try withIterator { (child) throws(MongoError) -> BSONDocument in
            guard bson_iter_recurse(iter, child) else { return BSONDocument() }
            return try decodeDocument(child)
        }
    }

    private static func decodeValue(_ iter: OpaquePointer) throws(MongoError) -> BSON {
        let type = bson_iter_type(iter)
        switch type {
        case BSON_TYPE_DOUBLE:
            return .double(bson_iter_double(iter))
        case BSON_TYPE_UTF8:
            var len: UInt32 = 0
            guard let p = bson_iter_utf8(iter, &len) else { return .string("") }
            let bytes = UnsafeRawBufferPointer(start: p, count: Int(len))
            return .string(String(decoding: bytes, as: UTF8.self))
        case BSON_TYPE_DOCUMENT:
            return .document(try decodeChild(iter))
        case BSON_TYPE_ARRAY:
            return .array(try decodeChild(iter).values)
        case BSON_TYPE_BOOL:
            return .bool(bson_iter_bool(iter))
        case BSON_TYPE_DATE_TIME:
            let ms = bson_iter_date_time(iter)
            return .datetime(Date(timeIntervalSince1970: Double(ms) / 1000))
        case BSON_TYPE_NULL:
            return .null
        case BSON_TYPE_INT32:
            return .int32(bson_iter_int32(iter))
        case BSON_TYPE_INT64:
            return .int64(bson_iter_int64(iter))
        case BSON_TYPE_OID:
            guard let oid = bson_iter_oid(iter) else { return .null }
            var buf = [CChar](repeating: 0, count: 25)
            bson_oid_to_string(oid, &buf)
            return .objectID(String(decoding: buf.prefix(24).map { UInt8(bitPattern: $0) }, as: UTF8.self))
        case BSON_TYPE_BINARY:
            var subtype = bson_subtype_t(0)
            var len: UInt32 = 0
            var ptr: UnsafePointer<UInt8>? = nil
            bson_iter_binary(iter, &subtype, &len, &ptr)
            let data = ptr.map { Array(UnsafeBufferPointer(start: $0, count: Int(len))) } ?? []
            return .binary(subtype: UInt8(truncatingIfNeeded: subtype.rawValue), data: data)
        case BSON_TYPE_DECIMAL128:
            var dec = bson_decimal128_t()
            guard bson_iter_decimal128(iter, &dec) else { return .null }
            var buf = [CChar](repeating: 0, count: 64)  // BSON_DECIMAL128_STRING is 43
            bson_decimal128_to_string(&dec, &buf)
            return .decimal128String(String(decoding: buf.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self))
        case BSON_TYPE_TIMESTAMP:
            var t: UInt32 = 0, i: UInt32 = 0
            bson_iter_timestamp(iter, &t, &i)
            return .string("Timestamp(\(t), \(i))")
        case BSON_TYPE_REGEX:
            var options: UnsafePointer<CChar>? = nil
            let pattern = bson_iter_regex(iter, &options).map { String(cString: $0) } ?? ""
            return .string("/\(pattern)/\(options.map { String(cString: $0) } ?? "")")
        case BSON_TYPE_UNDEFINED:
            return .null
        case BSON_TYPE_MINKEY:
            return .string("MinKey")
        case BSON_TYPE_MAXKEY:
            return .string("MaxKey")
        case BSON_TYPE_SYMBOL:
            var len: UInt32 = 0
            return .string(bson_iter_symbol(iter, &len).map { String(cString: $0) } ?? "")
        case BSON_TYPE_CODE:
            var len: UInt32 = 0
            return .string(bson_iter_code(iter, &len).map { String(cString: $0) } ?? "")
        default:
            return .string("<unsupported BSON type 0x\(String(type.rawValue, radix: 16))>")
        }
    }
}

// MARK: - Public byte and JSON forms

extension BSONDocument {
    /// The document as raw BSON bytes.
    public func toBSONBytes() throws(MongoError) -> [UInt8] {
        let b = try makeBSON()
        guard let data = bson_get_data(b.pointer) else { return [] }
        // The first four bytes of a BSON document are its little-endian total length.
        let length = UnsafeRawPointer(data).loadUnaligned(as: UInt32.self)
        return Array(UnsafeBufferPointer(start: data, count: Int(UInt32(littleEndian: length))))
    }

    /// Decodes raw BSON bytes; corrupt input throws `.protocolError`.
    public init(bsonBytes: [UInt8]) throws(MongoError) {
        let raw = bsonBytes.withUnsafeBufferPointer { buf -> OpaquePointer? in
            guard let base = buf.baseAddress else { return nil }
            return bson_new_from_data(base, buf.count)
        }
        guard let raw else {
            throw MongoError(kind: .protocolError, code: 0, domain: 0, message: "invalid BSON bytes")
        }
        let owned = OwnedBSON(raw)
        var offset = 0
        guard bson_validate(owned.pointer, BSON_VALIDATE_NONE, &offset) else {
            throw MongoError(kind: .protocolError, code: 0, domain: 0,
                             message: "invalid BSON bytes (at offset \(offset))")
        }
        try self.init(copying: owned.pointer)
    }

    /// Relaxed extended JSON (`bson_as_relaxed_extended_json`), for logs and debugging.
    public func toExtendedJSON() throws(MongoError) -> String {
        let b = try makeBSON()
        var len = 0
        guard let cstr = bson_as_relaxed_extended_json(b.pointer, &len) else {
            throw invalid("document cannot be rendered as extended JSON")
        }
        defer { bson_free(cstr) }
        let bytes = UnsafeRawBufferPointer(start: cstr, count: len)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Parses (canonical or relaxed) extended JSON (`bson_new_from_json`).
    public init(extendedJSON json: String) throws(MongoError) {
        var error = bson_error_t()
        var json = json
        if json.isEmpty { throw invalid("empty extended JSON") }
        let raw = json.withUTF8 { buf in
            bson_new_from_json(buf.baseAddress, buf.count, &error)
        }
        guard let raw else {
            throw MongoError(kind: .invalidArgument, bsonError: error)
        }
        let owned = OwnedBSON(raw)
        try self.init(copying: owned.pointer)
    }
}
