import AutoVoltCore
import Foundation
import Testing

/// Every example in firmware-contract/examples goes through the worker's decoder: valid ones
/// are accepted, invalid ones rejected with exactly the documented reason.
@Suite("firmware contract examples")
struct FirmwareContractTests {
    struct Example: Decodable, CustomTestStringConvertible {
        let file: String
        let topic: String
        let expect: String
        var testDescription: String { "\(file) -> \(expect)" }
    }

    static let examples: [Example] = {
        let url = packageRoot.appendingPathComponent("firmware-contract/examples/manifest.json")
        guard let data = try? Data(contentsOf: url) else { return [] }
        return (try? JSONDecoder().decode([Example].self, from: data)) ?? []
    }()

    @Test func manifestCoversEveryRejectReason() {
        #expect(Self.examples.count > 20)
        let covered = Set(Self.examples.map(\.expect))
        // conflict and store_refused depend on what the database holds, not on the payload.
        for reason in RejectReason.allCases where reason != .conflict && reason != .storeRefused {
            #expect(covered.contains(reason.rawValue), "no example for \(reason.rawValue)")
        }
    }

    @Test(arguments: examples)
    func exampleDecodesAsDocumented(example: Example) throws {
        let url = packageRoot.appendingPathComponent("firmware-contract/examples").appendingPathComponent(example.file)
        let bytes = try [UInt8](Data(contentsOf: url))
        // Receive time close to the examples' timestamps (November 2026).
        let result = MessageDecoder().decode(topic: example.topic, payload: bytes, receivedAt: 1_795_456_431_000)
        switch result {
        case .success:
            #expect(example.expect == "accept", "accepted, but the manifest expects \(example.expect)")
        case .failure(let rejection):
            #expect(example.expect == rejection.reason.rawValue, "rejected as \(rejection)")
        }
    }
}
