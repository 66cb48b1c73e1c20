import AutoVoltMongo
import Foundation
import Testing

/// Encodes through libbson (`bson_t`) and decodes with `bson_iter_*`.
private func roundTrip(_ doc: BSONDocument) throws -> BSONDocument {
    try BSONDocument(bsonBytes: doc.toBSONBytes())
}

@Suite struct BSONTests {
    @Test func everyCaseRoundTrips() throws {
        let date = Date(timeIntervalSince1970: 1_730_822_400.123)
        let doc: BSONDocument = [
            "double": .double(3.25),
            "inf": .double(.infinity),
            "string": .string("héllo ⚡️"),
            "empty": .string(""),
            "nul": .string("a\u{0}b"),
            "document": .document(["x": .int32(1)]),
            "array": .array([.int32(1), .string("two"), .null]),
            "emptyArray": .array([]),
            "true": .bool(true),
            "false": .bool(false),
            "date": .datetime(date),
            "null": .null,
            "int32": .int32(Int32.min),
            "int64": .int64(Int64.max),
            "oid": .objectID("507f1f77bcf86cd799439011"),
            "binary": .binary(subtype: 0, data: [0, 1, 2, 255]),
            "uuid": .binary(subtype: 4, data: Array(repeating: 7, count: 16)),
            "emptyBinary": .binary(subtype: 0, data: []),
            "decimal": .decimal128String("1.50"),
        ]
        let back = try roundTrip(doc)
        #expect(back == doc)
        #expect(back.keys == doc.keys)
    }

    @Test func nestedDocumentsAndArrays() throws {
        let doc: BSONDocument = [
            "a": ["b": ["c": [1, 2, ["d": "deep"]]]],
            "list": [[1, 2], [], [["k": true]]],
        ]
        let back = try roundTrip(doc)
        #expect(back == doc)
        let c = back["a"]?.documentValue?["b"]?.documentValue?["c"]?.arrayValue
        #expect(c?.count == 3)
        #expect(c?[2].documentValue?["d"]?.stringValue == "deep")
    }

    @Test func keyOrderIsKept() throws {
        var doc: BSONDocument = ["z": 1, "a": 2, "m": 3]
        doc["b"] = 4        // new key appends
        doc["a"] = "two"    // existing key is replaced in place
        #expect(doc.keys == ["z", "a", "m", "b"])
        #expect(doc.count == 4)
        let back = try roundTrip(doc)
        #expect(back.keys == ["z", "a", "m", "b"])
        #expect(back["a"] == "two")
        doc["m"] = nil      // nil removes
        #expect(doc.keys == ["z", "a", "b"])
        #expect(!doc.isEmpty && BSONDocument().isEmpty)
        #expect(Array(doc.map(\.key)) == ["z", "a", "b"])
        // Equality is order-sensitive, like BSON.
        #expect((["a": 1, "b": 2] as BSONDocument) != (["b": 2, "a": 1] as BSONDocument))
    }

    @Test func datesHaveMillisecondPrecision() throws {
        let exact = Date(timeIntervalSince1970: 1_730_822_400.123)
        #expect(try roundTrip(["d": .datetime(exact)])["d"] == .datetime(exact))
        // Sub-millisecond digits are truncated towards the past.
        let fine = Date(timeIntervalSince1970: 1_730_822_400.1239)
        #expect(try roundTrip(["d": .datetime(fine)])["d"]?.dateValue == exact)
        let beforeEpoch = Date(timeIntervalSince1970: -0.0005)
        #expect(try roundTrip(["d": .datetime(beforeEpoch)])["d"]?.dateValue == Date(timeIntervalSince1970: -0.001))
        // Many whole-millisecond values survive the Double arithmetic.
        for ms in stride(from: Int64(1_700_000_000_000), to: 1_700_000_000_000 + 5_000, by: 7) {
            let d = Date(timeIntervalSince1970: Double(ms) / 1000)
            #expect(try roundTrip(["d": .datetime(d)])["d"]?.dateValue == d)
        }
    }

    @Test func literalsAndAccessors() {
        let doc: BSONDocument = ["i": 5, "d": 2.5, "s": "x", "b": true, "n": nil, "arr": [1, "a"]]
        #expect(doc["i"] == .int64(5))  // integer literals are int64
        #expect(doc["n"] == .null)
        #expect(BSON.int32(7).int64Value == 7)
        #expect(BSON.int32(7).doubleValue == 7)
        #expect(BSON.int64(8).doubleValue == 8)
        #expect(BSON.double(9).int64Value == 9)
        #expect(BSON.double(9.5).int64Value == nil)
        #expect(BSON.string("x").int64Value == nil)
        #expect(doc["s"]?.stringValue == "x")
        #expect(doc["b"]?.boolValue == true)
        #expect(doc["arr"]?.arrayValue == [.int64(1), .string("a")])
        #expect(doc["missing"] == nil)
    }

    @Test func extendedJSON() throws {
        let doc: BSONDocument = [
            "n": 1, "s": "x",
            "d": .datetime(Date(timeIntervalSince1970: 1_730_822_400.123)),
            "o": .objectID("507f1f77bcf86cd799439011"),
        ]
        let json = try doc.toExtendedJSON()
        #expect(json.contains(#""n" : 1"#))
        #expect(json.contains(#""s" : "x""#))
        #expect(json.contains(#""$date" : "2024-11-05T16:00:00.123Z""#))
        #expect(json.contains(#""$oid" : "507f1f77bcf86cd799439011""#))
        let parsed = try BSONDocument(extendedJSON: json)
        #expect(parsed["d"] == doc["d"])
        #expect(parsed["o"] == doc["o"])
        #expect(parsed["n"]?.int64Value == 1)
        #expect(doc.description == json)
    }

    @Test func unmodelledTypesDecodeWithoutCrashing() throws {
        let doc = try BSONDocument(extendedJSON: """
            {"ts": {"$timestamp": {"t": 5, "i": 6}},
             "re": {"$regularExpression": {"pattern": "^a", "options": "i"}},
             "min": {"$minKey": 1}, "max": {"$maxKey": 1},
             "code": {"$code": "function() {}"},
             "undef": {"$undefined": true}}
            """)
        #expect(doc["ts"] == .string("Timestamp(5, 6)"))
        #expect(doc["re"] == .string("/^a/i"))
        #expect(doc["min"] == .string("MinKey"))
        #expect(doc["max"] == .string("MaxKey"))
        #expect(doc["code"] == .string("function() {}"))
        #expect(doc["undef"] == .null)
    }

    @Test func badInputThrowsInsteadOfCrashing() {
        #expect(throws: MongoError.self) { try (["o": .objectID("nothex")] as BSONDocument).toBSONBytes() }
        #expect(throws: MongoError.self) { try (["x": .decimal128String("abc")] as BSONDocument).toBSONBytes() }
        #expect(throws: MongoError.self) { try (["a\u{0}b": 1] as BSONDocument).toBSONBytes() }
        #expect(throws: MongoError.self) { try BSONDocument(bsonBytes: [1, 2, 3]) }
        #expect(throws: MongoError.self) { try BSONDocument(bsonBytes: []) }
        #expect(throws: MongoError.self) { try BSONDocument(bsonBytes: [12, 0, 0, 0, 0x10, 0x61, 0, 1, 0, 0, 0]) }  // truncated
        #expect(throws: MongoError.self) { try BSONDocument(bsonBytes: [12, 0, 0, 0, 0x10, 0x61, 0x62, 1, 0, 0, 0, 0]) }  // bad key
        #expect(throws: MongoError.self) { try BSONDocument(extendedJSON: "{not json") }
        #expect(throws: MongoError.self) { try BSONDocument(extendedJSON: "") }
        do throws(MongoError) {
            _ = try (["o": .objectID("nothex")] as BSONDocument).toBSONBytes()
        } catch {
            #expect(error.kind == .invalidArgument)
        }
    }

    @Test func bytesMatchTheBSONSpec() throws {
        // {"a": int32 1} = 0c000000 10 6100 01000000 00
        let bytes = try (["a": .int32(1)] as BSONDocument).toBSONBytes()
        #expect(bytes == [12, 0, 0, 0, 0x10, 0x61, 0, 1, 0, 0, 0, 0])
        #expect(try BSONDocument(bsonBytes: bytes) == ["a": .int32(1)])
    }
}
