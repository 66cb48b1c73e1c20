import AutoVoltCore
import AutoVoltPostgres
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import Testing

/// The OpenAPI document (issue 22 §4): every route the server has is in it, every operation in
/// it is a route, and every documented operation answers as documented (a status the document
/// lists, and for JSON the fields and types its schema says) on a running worker.
@Suite("the OpenAPI document against the server", .serialized)
struct OpenAPITests {
    static func document() throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(OpenAPIDocument.json.utf8)) as? [String: Any])
    }

    /// "GET /api/power-analytics/alarms/{id}/ack" for every operation of the document.
    static func operations(_ document: [String: Any]) -> Set<String> {
        let paths = document["paths"] as? [String: Any] ?? [:]
        var result: Set<String> = []
        for (path, item) in paths {
            for method in (item as? [String: Any] ?? [:]).keys where ["get", "post", "put", "delete", "patch"].contains(method) {
                result.insert("\(method.uppercased()) \(path)")
            }
        }
        return result
    }

    @Test("every route the server registers is documented, and every documented operation is a route")
    func routesAndDocumentAgree() throws {
        let document = try Self.document()
        #expect(document["openapi"] as? String == "3.1.0")
        let rig = try PostgresRig()
        try PostgresSchema.migrate(on: rig.sql)
        var values = rig.environment
        values["PATH"] = nil
        let config = try WorkerConfig(values: values, readFile: { try String(contentsOfFile: $0, encoding: .utf8) })
        let worker = try Worker(config: config, logger: Logger(label: "openapi-test"))
        guard case .postgresql(let pool) = worker.database else {
            Issue.record("the rig's worker is not on PostgreSQL")
            return
        }
        let queries = QueryRunner(source: .postgresql(pool), gate: AdmissionGate(maxConcurrent: 1, maxQueued: 1), timeout: .seconds(5))
        let router = HTTPServer.router(engine: worker, queries: queries, executor: nil, health: { nil }, registry: nil,
                                       logger: Logger(label: "openapi-test"))
        // Hummingbird's `:name` captures are OpenAPI's `{name}`.
        let routes = Set(router.routes.map { route in
            let path = "\(route.path)".split(separator: "/", omittingEmptySubsequences: false).map { part in
                part.hasPrefix(":") ? "{\(part.dropFirst())}" : String(part)
            }.joined(separator: "/")
            return "\(route.method.rawValue) \(path.isEmpty ? "/" : path)"
        })
        let documented = Self.operations(document)
        #expect(routes.subtracting(documented).isEmpty, "routes not in the document: \(routes.subtracting(documented).sorted())")
        #expect(documented.subtracting(routes).isEmpty, "documented but not routes: \(documented.subtracting(routes).sorted())")
        #expect(routes.count >= 20, "\(routes.sorted())")
    }

    // MARK: Answers as documented

    /// A value for a parameter: its example when the document gives one, else one of its
    /// format (the answers may be empty: what is checked is their shape).
    static func value(for parameter: [String: Any]) -> String {
        let schema = parameter["schema"] as? [String: Any] ?? [:]
        if let example = parameter["example"] ?? schema["example"] ?? (schema["examples"] as? [Any])?.first { return "\(example)" }
        if let values = schema["enum"] as? [Any], let first = values.first { return "\(first)" }
        switch schema["format"] as? String {
        case "date": return "2026-12-07"
        case "date-time": return "2026-12-07T00:00:00Z"
        default: break
        }
        switch parameter["name"] as? String {
        case "month": return "2026-12"
        case "date", "start", "end", "since": return "2026-12-07"
        case "classroom": return "CSE-301"
        case "esp32_name", "name": return "lab-101"
        default: return (schema["type"] as? String) == "integer" ? "1" : "unknown-\(UUID().uuidString.prefix(8))"
        }
    }

    /// Resolves a local `$ref` (`#/components/schemas/X`, `#/components/responses/Y`).
    static func resolve(_ schema: [String: Any], in document: [String: Any]) -> [String: Any] {
        guard let ref = schema["$ref"] as? String, ref.hasPrefix("#/") else { return schema }
        var node: Any? = document
        for key in ref.dropFirst(2).split(separator: "/") { node = (node as? [String: Any])?[String(key)] }
        return resolve(node as? [String: Any] ?? [:], in: document)
    }

    /// Where `value` breaks `schema` (types, required fields, properties, items, oneOf/anyOf),
    /// as paths; empty when it conforms.
    static func violations(_ value: Any, _ raw: [String: Any], in document: [String: Any], at path: String = "$") -> [String] {
        let schema = resolve(raw, in: document)
        if let choices = (schema["oneOf"] ?? schema["anyOf"]) as? [[String: Any]] {
            return choices.contains { violations(value, $0, in: document, at: path).isEmpty } ? [] : ["\(path): matches none of its choices"]
        }
        var types: [String] = []
        if let one = schema["type"] as? String { types = [one] } else if let many = schema["type"] as? [String] { types = many }
        func kind(_ v: Any) -> String {
            switch v {
            case is NSNull: return "null"
            case let n as NSNumber:
                if String(cString: n.objCType) == "c" { return "boolean" } // JSON's true and false
                return n.doubleValue.rounded() == n.doubleValue ? "integer" : "number"
            case is String: return "string"
            case is [Any]: return "array"
            case is [String: Any]: return "object"
            default: return "?"
            }
        }
        let actual = kind(value)
        if !types.isEmpty && !types.contains(actual) && !(actual == "integer" && types.contains("number")) {
            return ["\(path): \(actual), documented \(types)"]
        }
        var found: [String] = []
        if let object = value as? [String: Any] {
            for key in schema["required"] as? [String] ?? [] where object[key] == nil { found.append("\(path).\(key): missing") }
            for (key, sub) in schema["properties"] as? [String: Any] ?? [:] {
                if let v = object[key], let sub = sub as? [String: Any] { found += violations(v, sub, in: document, at: "\(path).\(key)") }
            }
        }
        if let array = value as? [Any], let items = schema["items"] as? [String: Any] {
            for (i, v) in array.prefix(20).enumerated() { found += violations(v, items, in: document, at: "\(path)[\(i)]") }
        }
        return found
    }

    @Test("the shape check finds a wrong type, a missing field, a null where none is allowed, through $ref")
    func theShapeCheckCatchesWhatItShould() throws {
        let document: [String: Any] = ["components": ["schemas": ["Row": [
            "type": "object", "required": ["n", "when"],
            "properties": ["n": ["type": "number"], "when": ["type": ["string", "null"]], "ok": ["type": "boolean"]],
        ]]]]
        let schema: [String: Any] = ["type": "array", "items": ["$ref": "#/components/schemas/Row"]]
        func check(_ json: String) throws -> [String] {
            Self.violations(try JSONSerialization.jsonObject(with: Data(json.utf8)), schema, in: document)
        }
        #expect(try check(#"[{"n": 1, "when": null, "ok": true}, {"n": 2.5, "when": "x"}]"#).isEmpty)
        #expect(try check(#"[{"n": "1", "when": null}]"#) == ["$[0].n: string, documented [\"number\"]"])
        #expect(try check(#"[{"when": "x"}]"#) == ["$[0].n: missing"])
        #expect(try check(#"[{"n": 1, "when": null, "ok": 1}]"#) == ["$[0].ok: integer, documented [\"boolean\"]"])
        #expect(try check(#"{"n": 1}"#).count == 1)
    }

    @Test("every documented operation answers with a documented status and body on a running worker")
    func operationsAnswerAsDocumented() async throws {
        let document = try Self.document()
        let rig = try PostgresRig()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("openapi-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let token = "token-\(UUID().uuidString)"
        let tokenFile = directory.appendingPathComponent("token")
        try token.write(to: tokenFile, atomically: true, encoding: .utf8)
        let port = freeTCPPort()
        let worker = try rig.startWorker(extra: ["AUTOVOLT_HTTP_ADDR": "127.0.0.1:\(port)", "AUTOVOLT_API_TOKEN_FILE": tokenFile.path])
        let base = "http://127.0.0.1:\(port)"

        func send(_ method: String, _ path: String, body: Data? = nil) async throws -> (status: Int, type: String, body: Data) {
            var request = URLRequest(url: try #require(URL(string: base + path)))
            request.httpMethod = method
            request.timeoutInterval = 20
            request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
            if let body {
                request.httpBody = body
                request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            }
            let (data, response) = try await URLSession.shared.data(for: request)
            let http = response as? HTTPURLResponse
            return (http?.statusCode ?? 0, http?.value(forHTTPHeaderField: "Content-Type") ?? "", data)
        }
        #expect(await HTTPHealthTests.waitForHTTP(URLSession.shared, port), "the worker's HTTP did not answer:\n\(worker.log)")

        // The served document is this one.
        let served = try await send("GET", "/api/power-analytics/openapi.json")
        #expect(served.status == 200 && served.type.hasPrefix("application/json"))
        let servedDocument = try JSONSerialization.jsonObject(with: served.body) as? NSDictionary
        #expect(servedDocument == (document as NSDictionary))

        let paths = document["paths"] as? [String: [String: Any]] ?? [:]
        var checked = 0
        for (template, item) in paths.sorted(by: { $0.key < $1.key }) {
            for (method, raw) in item.sorted(by: { $0.key < $1.key }) {
                guard let operation = raw as? [String: Any], let responses = operation["responses"] as? [String: Any] else { continue }
                let parameters = ((item["parameters"] as? [[String: Any]]) ?? []) + ((operation["parameters"] as? [[String: Any]]) ?? [])
                // The stream never ends: AlarmIntegrationTests reads its events.
                let produces = responses.values.compactMap { (($0 as? [String: Any])?["content"] as? [String: Any])?.keys }.joined()
                if produces.contains("text/event-stream") { continue }
                var path = template
                var query: [String] = []
                for parameter in parameters {
                    guard let name = parameter["name"] as? String else { continue }
                    let value = Self.value(for: parameter)
                    switch parameter["in"] as? String {
                    case "path": path = path.replacingOccurrences(of: "{\(name)}", with: value)
                    case "query" where parameter["required"] as? Bool == true:
                        query.append("\(name)=\(value.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) ?? value)")
                    default: break
                    }
                }
                if !query.isEmpty { path += "?" + query.joined(separator: "&") }
                // Writes get an empty object: the answer must be a documented refusal, never a 500.
                let answer = try await send(method.uppercased(), path, body: method == "post" ? Data("{}".utf8) : nil)
                // A response may be a `$ref` to components/responses: its content is there.
                let documented = (responses[String(answer.status)] as? [String: Any]).map { Self.resolve($0, in: document) }
                #expect(documented != nil, "\(method.uppercased()) \(path) answered \(answer.status), documented \(responses.keys.sorted()): \(String(decoding: answer.body.prefix(300), as: UTF8.self))")
                if let documented, let content = documented["content"] as? [String: Any] {
                    let mediaType = answer.type.split(separator: ";").first.map(String.init) ?? ""
                    #expect(content[mediaType] != nil, "\(method.uppercased()) \(path) \(answer.status) as \(answer.type), documented \(content.keys.sorted())")
                    if mediaType == "application/json", let schema = (content[mediaType] as? [String: Any])?["schema"] as? [String: Any] {
                        let body = try JSONSerialization.jsonObject(with: answer.body, options: [.fragmentsAllowed])
                        let problems = Self.violations(body, schema, in: document)
                        #expect(problems.isEmpty, "\(method.uppercased()) \(path) \(answer.status): \(problems.prefix(5))")
                    }
                }
                checked += 1
                print("openapi: \(method.uppercased()) \(path) -> \(answer.status)")
            }
        }
        #expect(checked >= 18, "only \(checked) operations checked")

        // What the fuzzer found: a method a documented path does not take is 405 with Allow (not
        // 404), a NUL in a parameter is the client's 400 (not the database's 500).
        let put = try await send("PUT", "/api/power-analytics/summary?date=2026-12-07", body: Data("{}".utf8))
        #expect(put.status == 405)
        let trace = try await send("TRACE", "/api/power-analytics/statements/some-id")
        #expect(trace.status == 405)
        #expect(try await send("GET", "/api/power-analytics/no-such-route").status == 404)
        let nul = try await send("GET", "/api/power-analytics/device-breakdown?date=2026-12-07&classroom=a%00b")
        #expect(nul.status == 400, "\(String(decoding: nul.body, as: UTF8.self))")
        #expect(try await send("GET", "/devices/lab%00101").status == 400)
    }
}
