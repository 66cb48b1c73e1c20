import AutoVoltCore
import Foundation
import Testing

@Suite("HTTP ingest signatures")
struct IngestSignatureTests {
    let body = Array(#"{"esp32_name":"lab-101","energy_wh_total":5}"#.utf8)
    let now: EpochMillis = 1_796_300_000_000

    @Test func aSignatureIsTheHMACOfTimestampDotBody() {
        // Against an independent value: printf '1.x' | openssl dgst -sha256 -hmac key
        #expect(IngestSignature.sign(secret: "key", timestamp: "1", body: Array("x".utf8))
                == "sha256=fc4913c41a7bf793267e2a384f3261c9436ec2cd097bd745e7b0d99113f510ec")
        let signature = IngestSignature.sign(secret: "s3cret-s3cret-s3cret", timestamp: "1796300000", body: body)
        #expect(signature.hasPrefix("sha256=") && signature.count == 7 + 64)
        #expect(IngestSignature.verify(secrets: ["other-other-other", "s3cret-s3cret-s3cret"], timestamp: "1796300000",
                                       signature: signature.uppercased(), body: body, now: now) == .success(1_796_300_000_000))
    }

    @Test func theWindowTheTimestampAndTheBodyAreChecked() {
        let signature = IngestSignature.sign(secret: "s3cret-s3cret-s3cret", timestamp: "1796300000", body: body)
        func verify(_ timestamp: String?, _ body: [UInt8], now: EpochMillis) -> Result<EpochMillis, IngestSignature.Failure> {
            IngestSignature.verify(secrets: ["s3cret-s3cret-s3cret"], timestamp: timestamp, signature: signature, body: body, now: now)
        }
        #expect(verify("1796300000", body, now: now + 300_000) == .success(1_796_300_000_000))
        #expect(verify("1796300000", body, now: now + 300_001) == .failure(.outsideWindow))
        #expect(verify("1796300000", body, now: now - 300_001) == .failure(.outsideWindow))
        #expect(verify(nil, body, now: now) == .failure(.missingTimestamp))
        #expect(verify("1796300000.5", body, now: now) == .failure(.badTimestamp))
        #expect(verify("1796300000", body + [32], now: now) == .failure(.badSignature))
        #expect(verify("1796300001", body, now: now) == .failure(.badSignature))
    }

    @Test func aReplayInsideTheWindowIsRefusedAndTheGuardStaysBounded() {
        var guardian = ReplayGuard(capacity: 100)
        let first = guardian.admit("a", timestamp: now, now: now)
        let again = guardian.admit("a", timestamp: now, now: now + 1_000)
        #expect(first && !again)
        // Out of the window it is forgotten (the window itself refuses such a request then).
        let later = guardian.admit("a", timestamp: now + 400_000, now: now + 400_000)
        #expect(later)
        var admitted = 0
        for i in 0..<1_000 where guardian.admit("s\(i)", timestamp: now + 400_000, now: now + 400_000) { admitted += 1 }
        #expect(admitted == 1_000)
        #expect(guardian.count <= 100)
    }
}
