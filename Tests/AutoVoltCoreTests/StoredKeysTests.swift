import AutoVoltCore
import PropertyBased
import Testing

@Suite("stored keys")
struct StoredKeysTests {
    @Test func ordinaryKeysAreStoredAsSent() {
        for key in ["mac", "rssi", "heap", "classroom", "relay_16", "a$b", "naïve", "x y"] {
            #expect(StoredKeys.escape(key) == key)
        }
    }

    @Test func keysADatabaseMightRefuseAreEscaped() {
        #expect(StoredKeys.escape("\u{0}") == "%00")
        #expect(StoredKeys.escape("$where") == "%24where")
        #expect(StoredKeys.escape("") == "%")
        #expect(StoredKeys.escape("a.b") == "a%2Eb")
        #expect(StoredKeys.escape("100%") == "100%25")
        #expect(StoredKeys.escape("$a$.b\u{0}") == "%24a$%2Eb%00")
    }

    @Test func nestedKeysAreEscaped() throws {
        let value = try JSONValue.parse(#"{"a": 1, "$x": {"b.c": null}, "list": [{"\u0000": true}]}"#)
        let object = try #require(value.objectValue)
        let stored = StoredKeys.storable(object)
        #expect(stored.members.map(\.key) == ["a", "%24x", "list"])
        #expect(stored["%24x"]?.objectValue?.members.map(\.key) == ["b%2Ec"])
        if case .array(let items)? = stored["list"] { #expect(items.first?.objectValue?.members.map(\.key) == ["%00"]) } else { Issue.record("list is not an array") }
        #expect(stored.members.map { StoredKeys.unescape($0.key) } == ["a", "$x", "list"])
    }

    @Test func textEscapeCannotProduceIsNotUnescaped() {
        for text in ["", "%2", "%zz", "%41", "a.b", "$x", "\u{0}", "%2e"] {
            #expect(StoredKeys.unescape(text) == nil, "\(text.debugDescription)")
        }
    }

    /// Whatever a device sends as a key, the stored form holds no NUL, no `.`, does not start
    /// with `$`, and maps back to the key as sent (so distinct keys stay distinct).
    @Test func escapeIsSafeAndReversible() async {
        let alphabet: [Character] = ["a", "Z", "0", "$", ".", "%", "#", "\u{0}", "é", "😀", " ", "_", "#"]
        let gen = Gen.int(in: 0...(alphabet.count - 1)).array(of: 0...12).map { String($0.map { alphabet[$0] }) }
        await propertyCheck(count: 2000, input: gen) { key in
            let stored = StoredKeys.escape(key)
            #expect(!stored.utf8.contains(0))
            #expect(!stored.contains("."))
            #expect(!stored.hasPrefix("$"))
            #expect(!stored.isEmpty)
            #expect(StoredKeys.unescape(stored) == key)
        }
    }
}
