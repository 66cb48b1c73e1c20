import AutoVoltCore
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Synchronization

/// `POST /api/power-analytics/telemetry`: HTTP ingest for gateways that cannot keep an MQTT
/// session (README "HTTP ingest"). The body is one telemetry payload of the contract or an
/// array of at most `maxMessages`, each with `esp32_name` (it stands in for the topic). Every
/// message goes into the journal as `autovolt/<esp32_name>/telemetry`, so the drain decodes,
/// deduplicates and stores it exactly as one from the broker, refused ones into
/// `rejected_messages`.
///
/// Answers: 202 once the journal commit is on disk; 400 listing each refused message's reason
/// (the others are accepted and stored); 503 with Retry-After while the journal is full (nothing
/// written); 401/403 without valid credentials: `Authorization: Bearer <AUTOVOLT_API_TOKEN_FILE>`,
/// or `X-AutoVolt-Timestamp` + `X-AutoVolt-Signature` (HMAC-SHA256, `IngestSignature`) with the
/// board's `hmac_secret` or AUTOVOLT_INGEST_SECRET_FILE; a signed request seen before inside the
/// 5-minute window is 409.
enum HTTPIngestAPI {
    static let path = "/api/power-analytics/telemetry"
    static let maxMessages = 500
    /// 500 messages of up to 1 KiB each, with room for whitespace.
    static let maxBodyBytes = 1024 * 1024

    struct Refused: Encodable {
        var index: Int
        var esp32Name: String?
        var reason: String
        var detail: String
        enum CodingKeys: String, CodingKey { case index, esp32Name = "esp32_name", reason, detail }
    }

    struct Answer: Encodable {
        var accepted: Int
        var rejected: [Refused]
    }

    static func register(on router: Router<BasicRequestContext>, engine: Worker, logger: Logger) {
        let replays = SeenSignatures()
        // One thread for the journal commits of HTTP requests: they block on the disk.
        let journalQueue = DispatchQueue(label: "autovolt-http-ingest")
        let decoder = MessageDecoder(clockPolicy: engine.config.clockPolicy)

        router.post(.init(path)) { request, _ -> Response in
            var buffer: ByteBuffer
            do {
                buffer = try await request.body.collect(upTo: maxBodyBytes)
            } catch {
                return AccountingAPI.problem(.contentTooLarge, "request body larger than \(maxBodyBytes) bytes")
            }
            let body = buffer.readBytes(length: buffer.readableBytes) ?? []

            let items: [JSONValue]
            do {
                switch try JSONValue.parse(body) {
                case .array(let list): items = list
                case let single: items = [single]
                }
            } catch {
                return AccountingAPI.problem(.badRequest, "body is not JSON: \(error)")
            }
            guard !items.isEmpty else { return AccountingAPI.problem(.badRequest, "the array holds no messages") }
            guard items.count <= maxMessages else {
                return AccountingAPI.problem(.contentTooLarge, "\(items.count) messages in one request; at most \(maxMessages)")
            }
            let names = items.map { item -> String? in
                if case .string(let name)? = item.objectValue?["esp32_name"] { return name }
                return nil
            }

            if let refusal = authenticate(request, body: body, names: names, engine: engine, replays: replays) { return refusal }

            // The messages as the broker would have delivered them; the refused ones go into the
            // journal too, so the drain records them in rejected_messages as it does for MQTT.
            let now = engine.clock.now()
            var messages: [(topic: String, payload: [UInt8])] = []
            var refused: [Refused] = []
            for (index, item) in items.enumerated() {
                let payload = Array(item.jsonText.utf8)
                let name = names[index]
                let topic = "autovolt/\(name ?? "")/telemetry"
                messages.append((topic, payload))
                if name == nil {
                    refused.append(Refused(index: index, esp32Name: nil, reason: RejectReason.invalidDeviceName.rawValue,
                                           detail: "esp32_name (a string) is required over HTTP: it stands in for the topic"))
                } else if case .failure(let rejection) = decoder.decode(topic: topic, payload: payload, receivedAt: now) {
                    refused.append(Refused(index: index, esp32Name: name, reason: rejection.reason.rawValue, detail: rejection.detail))
                }
            }

            let batch = messages
            let outcome = await withCheckedContinuation { (continuation: CheckedContinuation<Worker.HTTPIngestOutcome, Never>) in
                journalQueue.async { continuation.resume(returning: engine.ingestHTTP(batch)) }
            }
            switch outcome {
            case .committed:
                let answer = Answer(accepted: items.count - refused.count, rejected: refused)
                if !refused.isEmpty {
                    logger.warning("HTTP ingest: messages refused", metadata: [
                        "refused": "\(refused.count)", "accepted": "\(answer.accepted)", "reason": "\(refused[0].reason)",
                    ])
                }
                return AccountingAPI.json(refused.isEmpty ? .accepted : .badRequest, answer)
            case .journalFull:
                var response = AccountingAPI.problem(.serviceUnavailable, "the journal is full until MongoDB takes the backlog; nothing was written")
                response.headers[.retryAfter] = "5"
                return response
            case .failed(let message):
                var response = AccountingAPI.problem(.serviceUnavailable, "cannot write to the journal: \(message)")
                response.headers[.retryAfter] = "5"
                return response
            }
        }
    }

    static let timestampHeader = HTTPField.Name("X-AutoVolt-Timestamp")!
    static let signatureHeader = HTTPField.Name("X-AutoVolt-Signature")!

    /// nil when the request may ingest: a valid bearer token, or a valid signature not seen before.
    static func authenticate(_ request: Request, body: [UInt8], names: [String?], engine: Worker,
                             replays: SeenSignatures) -> Response? {
        if let signature = request.headers[signatureHeader] {
            // A board's own secret signs only its own messages; the shared one signs anything.
            let distinct = Set(names.compactMap { $0 })
            let secrets = engine.ingestSecrets(forDevice: distinct.count == 1 && !names.contains(nil) ? distinct.first : nil)
            guard !secrets.isEmpty else {
                return AccountingAPI.problem(.forbidden, "signed ingest is disabled: set AUTOVOLT_INGEST_SECRET_FILE or hmac_secret in the registry")
            }
            let now = engine.clock.now()
            switch IngestSignature.verify(secrets: secrets, timestamp: request.headers[timestampHeader], signature: signature,
                                          body: body, now: now) {
            case .failure(let failure):
                return AccountingAPI.problem(.unauthorized, failure.description)
            case .success(let timestamp):
                guard replays.guarded.withLock({ $0.admit(signature.lowercased(), timestamp: timestamp, now: now) }) else {
                    return AccountingAPI.problem(.conflict, IngestSignature.Failure.replayed.description)
                }
                return nil
            }
        }
        guard request.headers[.authorization] != nil else {
            return AccountingAPI.problem(.unauthorized, "send Authorization: Bearer <token>, or X-AutoVolt-Timestamp and X-AutoVolt-Signature")
        }
        return AccountingAPI.authorize(request, engine.config)
    }
}

/// The replay guard of signed requests, shared by every request of the server.
final class SeenSignatures: Sendable {
    let guarded = Mutex(ReplayGuard())
}
