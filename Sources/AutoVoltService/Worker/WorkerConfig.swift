import AutoVoltCore
import AutoVoltJournal
import AutoVoltMQTT
import Foundation
import Logging
import TOMLKit

/// A configuration problem: names the variable and what is wrong. The CLI exits 78 (EX_CONFIG).
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public let variable: String
    public let message: String
    public init(_ variable: String, _ message: String) {
        self.variable = variable
        self.message = message
    }
    public var description: String { "configuration error: \(variable): \(message)" }
}

/// Everything the worker is configured with (contract section 2), validated.
public struct WorkerConfig: Sendable {
    public enum WriteConcernSetting: String, Sendable { case auto, majority, one = "1" }
    public enum LogFormat: String, Sendable { case text, json }

    public var mqtt: MQTTSettings
    public var mqttShareGroup: String?
    /// Which database `AUTOVOLT_DATABASE_URL` (or `AUTOVOLT_MONGODB_URI`) names (contract section 9).
    public enum DatabaseKind: String, Sendable { case mongodb, postgresql }
    public var databaseKind: DatabaseKind
    /// The MongoDB URI when `databaseKind` is `.mongodb`.
    public var mongoURI: String
    /// The `postgresql://` URL when `databaseKind` is `.postgresql`.
    public var postgresURL: String?
    public var writeConcern: WriteConcernSetting
    public var timeZone: TimeZone
    public var clockPolicy: ClockPolicy
    public var reconcileAt: (hour: Int, minute: Int)
    /// When the drafts of the previous month's statements are made on the 1st (AUTOVOLT_STATEMENT_AT).
    public var statementAt: (hour: Int, minute: Int)
    public var httpAddress: (host: String, port: Int)?
    public var apiToken: String?
    /// The shared secret of signed HTTP ingest (AUTOVOLT_INGEST_SECRET_FILE); boards may also
    /// have their own (`hmac_secret` in the registry).
    public var ingestSecret: String?
    /// Alarm rules (AUTOVOLT_ALARMS, default config/alarms.toml; none when the default is absent).
    public var alarmsPath: String
    public var alarmRules = AlarmRuleSet()
    /// Raises, clears and acks are POSTed here as JSON (AUTOVOLT_ALARM_WEBHOOK_URL), if set.
    public var alarmWebhookURL: URL?
    public var stateDirectory: String
    public var devicesPath: String
    public var devices: DeviceRegistry
    public var logLevel: Logger.Level
    public var logFormat: LogFormat
    public var journalMaxBytes: Int64
    public var journalSync: Journal.SyncMode
    public var batchSize: Int
    /// How long a dip waits for the next reading before it settles as a reset (ledger rule 3).
    public var dipTimeoutMillis: Int64
    /// HTTP read queries (`/api/power-analytics/...`): at most this many run at once,
    public var httpQueryConcurrency: Int = 4
    /// at most this many wait for a slot (beyond: 503 with Retry-After),
    public var httpQueryQueue: Int = 32
    /// and each answers within this deadline (queue wait included; maxTimeMS on the server).
    public var httpQueryTimeoutMillis: Int64 = 10_000
    /// Things worth a log line at start-up (e.g. a missing default registry).
    public var warnings: [String] = []

    public static let environmentPrefix = "AUTOVOLT_"

    /// Reads `--config FILE` (if any) and the environment; the environment wins.
    public static func load(environment: [String: String] = ProcessInfo.processInfo.environment,
                            configFile: String? = nil) throws(ConfigError) -> WorkerConfig {
        var values: [String: String] = [:]
        if let configFile {
            values = try tomlValues(path: configFile)
        }
        for (key, value) in environment where key.hasPrefix(environmentPrefix) {
            values[key] = value
        }
        return try WorkerConfig(values: values, readFile: { path in try String(contentsOfFile: path, encoding: .utf8) })
    }

    static func tomlValues(path: String) throws(ConfigError) -> [String: String] {
        let text: String
        do {
            text = try String(contentsOfFile: path, encoding: .utf8)
        } catch {
            throw ConfigError("--config", "cannot read \(path): \(error.localizedDescription)")
        }
        let table: TOMLTable
        do {
            table = try TOMLTable(string: text)
        } catch let error as TOMLParseError {
            throw ConfigError("--config", "\(path) line \(error.source.begin.line): \(error.description)")
        } catch {
            throw ConfigError("--config", "\(path): \(error)")
        }
        var values: [String: String] = [:]
        for key in table.keys {
            // `mqtt_url`, as documented, or the variable's own name `AUTOVOLT_MQTT_URL`.
            let upper = key.uppercased()
            let variable = upper.hasPrefix(environmentPrefix) ? upper : environmentPrefix + upper
            guard knownVariables.contains(variable) else {
                throw ConfigError("--config", "\(path): unknown setting \"\(key)\"")
            }
            guard values[variable] == nil else {
                throw ConfigError("--config", "\(path): \"\(key)\" sets \(variable) a second time")
            }
            guard let value = table[key] else { continue }
            if let s = value.string { values[variable] = s }
            else if let i = value.int { values[variable] = String(i) }
            else if let d = value.double { values[variable] = String(d) }
            else if let b = value.bool { values[variable] = String(b) }
            else { throw ConfigError("--config", "\(path): \"\(key)\" must be a string or a number") }
        }
        return values
    }

    /// A database URL fit for a log or an error: the password of `user:password@` and any
    /// `password=` option replaced by `***`.
    public static func masked(_ url: String) -> String {
        var text = url
        if let scheme = text.range(of: "://"), let at = text[scheme.upperBound...].firstIndex(of: "@"),
           let colon = text[scheme.upperBound..<at].firstIndex(of: ":") {
            text.replaceSubrange(text.index(after: colon)..<at, with: "***")
        }
        if let range = text.range(of: "password=") {
            let end = text[range.upperBound...].firstIndex(of: "&") ?? text.endIndex
            text.replaceSubrange(range.upperBound..<end, with: "***")
        }
        return text
    }

    public static let knownVariables: Set<String> = [
        "AUTOVOLT_MQTT_URL", "AUTOVOLT_MQTT_CA_FILE", "AUTOVOLT_MQTT_CERT_FILE", "AUTOVOLT_MQTT_KEY_FILE",
        "AUTOVOLT_MQTT_USERNAME", "AUTOVOLT_MQTT_PASSWORD_FILE", "AUTOVOLT_MQTT_CLIENT_ID", "AUTOVOLT_MQTT_SHARE_GROUP",
        "AUTOVOLT_MQTT_PROTOCOL", "AUTOVOLT_MQTT_KEEPALIVE", "AUTOVOLT_INGEST_SECRET_FILE", "AUTOVOLT_DATABASE_URL", "AUTOVOLT_MONGODB_URI", "AUTOVOLT_MONGODB_WRITE_CONCERN",
        "AUTOVOLT_TIMEZONE", "AUTOVOLT_MAX_CLOCK_LAG", "AUTOVOLT_RECONCILE_AT", "AUTOVOLT_STATEMENT_AT", "AUTOVOLT_HTTP_ADDR",
        "AUTOVOLT_API_TOKEN_FILE", "AUTOVOLT_STATE_DIR", "AUTOVOLT_DEVICES", "AUTOVOLT_ALARMS", "AUTOVOLT_ALARM_WEBHOOK_URL", "AUTOVOLT_LOG_LEVEL", "AUTOVOLT_LOG_FORMAT",
        "AUTOVOLT_JOURNAL_MAX_BYTES", "AUTOVOLT_JOURNAL_SYNC", "AUTOVOLT_BATCH_SIZE", "AUTOVOLT_DIP_TIMEOUT",
        "AUTOVOLT_HTTP_QUERY_CONCURRENCY", "AUTOVOLT_HTTP_QUERY_QUEUE", "AUTOVOLT_HTTP_QUERY_TIMEOUT",
    ]

    /// Validates `values` (variable name to text). `readFile` is injected so tests need no files.
    public init(values: [String: String], readFile: (String) throws -> String) throws(ConfigError) {
        func value(_ name: String) -> String? {
            guard let v = values[name]?.trimmingCharacters(in: .whitespaces), !v.isEmpty else { return nil }
            return v
        }
        func read(_ name: String, _ path: String) throws(ConfigError) -> String {
            do {
                return try readFile(path)
            } catch {
                throw ConfigError(name, "cannot read \(path): \((error as NSError).localizedDescription)")
            }
        }
        func requireReadable(_ name: String) throws(ConfigError) -> String? {
            guard let path = value(name) else { return nil }
            guard FileManager.default.isReadableFile(atPath: path) else { throw ConfigError(name, "cannot read \(path)") }
            return path
        }

        // MQTT
        let url = value("AUTOVOLT_MQTT_URL") ?? "mqtt://127.0.0.1:1883"
        let endpoint = try Self.parseMQTTURL(url)
        let caFile = try requireReadable("AUTOVOLT_MQTT_CA_FILE")
        let certFile = try requireReadable("AUTOVOLT_MQTT_CERT_FILE")
        let keyFile = try requireReadable("AUTOVOLT_MQTT_KEY_FILE")
        if (certFile == nil) != (keyFile == nil) {
            throw ConfigError(certFile == nil ? "AUTOVOLT_MQTT_CERT_FILE" : "AUTOVOLT_MQTT_KEY_FILE",
                              "a client certificate needs both AUTOVOLT_MQTT_CERT_FILE and AUTOVOLT_MQTT_KEY_FILE")
        }
        if !endpoint.tls, caFile != nil || certFile != nil {
            throw ConfigError("AUTOVOLT_MQTT_URL", "TLS files are set but the URL is not mqtts://")
        }
        var password: String?
        if let path = value("AUTOVOLT_MQTT_PASSWORD_FILE") {
            var text = try read("AUTOVOLT_MQTT_PASSWORD_FILE", path)
            while text.hasSuffix("\n") || text.hasSuffix("\r") { text.removeLast() }
            guard !text.isEmpty else { throw ConfigError("AUTOVOLT_MQTT_PASSWORD_FILE", "\(path) is empty") }
            password = text
        }
        let username = value("AUTOVOLT_MQTT_USERNAME")
        if password != nil, username == nil {
            throw ConfigError("AUTOVOLT_MQTT_USERNAME", "a password file is set but no username")
        }
        let clientID = value("AUTOVOLT_MQTT_CLIENT_ID") ?? "autovolt-worker"
        guard clientID.utf8.count <= 65535, !clientID.contains(where: { $0 == "/" || $0 == "+" || $0 == "#" }) else {
            throw ConfigError("AUTOVOLT_MQTT_CLIENT_ID", "\"\(clientID)\" is not a usable client id")
        }
        let shareGroup = value("AUTOVOLT_MQTT_SHARE_GROUP")
        if let shareGroup, shareGroup.contains(where: { "/+#".contains($0) }) {
            throw ConfigError("AUTOVOLT_MQTT_SHARE_GROUP", "\"\(shareGroup)\" must not contain '/', '+' or '#'")
        }
        let protocolText = value("AUTOVOLT_MQTT_PROTOCOL") ?? "3.1.1"
        guard let protocolVersion = MQTTSettings.ProtocolVersion(rawValue: protocolText == "5.0" ? "5" : protocolText) else {
            throw ConfigError("AUTOVOLT_MQTT_PROTOCOL", "\"\(protocolText)\" is not 3.1.1 or 5")
        }
        let keepalive = try Self.integer(value("AUTOVOLT_MQTT_KEEPALIVE") ?? "30", "AUTOVOLT_MQTT_KEEPALIVE", 5...65535)
        mqtt = MQTTSettings(host: endpoint.host, port: endpoint.port, useTLS: endpoint.tls, caFile: caFile,
                            certFile: certFile, keyFile: keyFile, username: username, password: password,
                            clientID: clientID, subscriptions: DeviceTopic.subscriptions(shareGroup: shareGroup),
                            keepaliveSeconds: keepalive, protocolVersion: protocolVersion)
        mqttShareGroup = shareGroup

        // The database: AUTOVOLT_DATABASE_URL, or its MongoDB alias AUTOVOLT_MONGODB_URI.
        let databaseURL = value("AUTOVOLT_DATABASE_URL")
        let mongoAlias = value("AUTOVOLT_MONGODB_URI")
        func isMongo(_ url: String) -> Bool { url.hasPrefix("mongodb://") || url.hasPrefix("mongodb+srv://") }
        if let databaseURL {
            if databaseURL.hasPrefix("postgresql://") || databaseURL.hasPrefix("postgres://") {
                if mongoAlias != nil {
                    throw ConfigError("AUTOVOLT_DATABASE_URL", "names PostgreSQL but AUTOVOLT_MONGODB_URI names MongoDB: set one of them")
                }
                databaseKind = .postgresql
                postgresURL = databaseURL
                mongoURI = ""
            } else if isMongo(databaseURL) {
                if let mongoAlias, mongoAlias != databaseURL {
                    throw ConfigError("AUTOVOLT_DATABASE_URL", "and AUTOVOLT_MONGODB_URI name different databases: set one of them")
                }
                databaseKind = .mongodb
                mongoURI = databaseURL
            } else {
                throw ConfigError("AUTOVOLT_DATABASE_URL", "\"\(WorkerConfig.masked(databaseURL))\" is not a postgresql://, postgres://, mongodb:// or mongodb+srv:// URL")
            }
        } else {
            databaseKind = .mongodb
            mongoURI = mongoAlias ?? "mongodb://127.0.0.1:27017/autovolt_power"
            guard isMongo(mongoURI) else {
                throw ConfigError("AUTOVOLT_MONGODB_URI", "\"\(WorkerConfig.masked(mongoURI))\" is not a mongodb:// or mongodb+srv:// URI")
            }
        }
        let wc = value("AUTOVOLT_MONGODB_WRITE_CONCERN") ?? "auto"
        guard let writeConcern = WriteConcernSetting(rawValue: wc) else {
            throw ConfigError("AUTOVOLT_MONGODB_WRITE_CONCERN", "\"\(wc)\" is not auto, majority or 1")
        }
        self.writeConcern = writeConcern

        // Time
        let zoneName = value("AUTOVOLT_TIMEZONE") ?? "Asia/Kolkata"
        guard let zone = TimeZone(identifier: zoneName) else {
            throw ConfigError("AUTOVOLT_TIMEZONE", "unknown time zone \"\(zoneName)\" (use an IANA name such as Asia/Kolkata)")
        }
        timeZone = zone
        let lagText = value("AUTOVOLT_MAX_CLOCK_LAG") ?? "7d"
        guard let lag = Self.parseDuration(lagText), lag > 0 else {
            throw ConfigError("AUTOVOLT_MAX_CLOCK_LAG", "\"\(lagText)\" is not a positive duration such as 7d, 12h, 30m or 90s")
        }
        clockPolicy = ClockPolicy(maxLagMillis: lag)
        func localTime(_ name: String, default fallback: String) throws(ConfigError) -> (hour: Int, minute: Int) {
            let at = value(name) ?? fallback
            let parts = at.split(separator: ":")
            guard parts.count == 2, parts[0].count == 2, parts[1].count == 2,
                  let hour = Int(parts[0]), let minute = Int(parts[1]), (0..<24).contains(hour), (0..<60).contains(minute) else {
                throw ConfigError(name, "\"\(at)\" is not a local time HH:MM")
            }
            return (hour, minute)
        }
        reconcileAt = try localTime("AUTOVOLT_RECONCILE_AT", default: "02:00")
        statementAt = try localTime("AUTOVOLT_STATEMENT_AT", default: "03:00")

        // HTTP
        let http = value("AUTOVOLT_HTTP_ADDR") ?? "127.0.0.1:9464"
        if http.lowercased() == "off" {
            httpAddress = nil
        } else {
            guard let colon = http.lastIndex(of: ":"), let port = Int(http[http.index(after: colon)...]),
                  (0...65535).contains(port) else {
                throw ConfigError("AUTOVOLT_HTTP_ADDR", "\"\(http)\" is not HOST:PORT or off")
            }
            var host = String(http[..<colon])
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            httpAddress = (host.isEmpty ? "0.0.0.0" : host, port)
        }
        if let path = value("AUTOVOLT_API_TOKEN_FILE") {
            let token = try read("AUTOVOLT_API_TOKEN_FILE", path).trimmingCharacters(in: .whitespacesAndNewlines)
            guard !token.isEmpty else { throw ConfigError("AUTOVOLT_API_TOKEN_FILE", "\(path) holds no token") }
            // A short token works (the contract sets no length) but is easy to guess: say so.
            if token.count < 16 {
                warnings.append("the API token in \(path) is shorter than 16 characters; `openssl rand -hex 24` makes a better one")
            }
            apiToken = token
        }
        if let path = value("AUTOVOLT_INGEST_SECRET_FILE") {
            let secret = try read("AUTOVOLT_INGEST_SECRET_FILE", path).trimmingCharacters(in: .whitespacesAndNewlines)
            guard secret.utf8.count >= 16 else {
                throw ConfigError("AUTOVOLT_INGEST_SECRET_FILE", "\(path) must hold a secret of at least 16 characters")
            }
            ingestSecret = secret
        }

        // State and registry
        stateDirectory = value("AUTOVOLT_STATE_DIR") ?? "/var/lib/autovolt"
        let explicitDevices = value("AUTOVOLT_DEVICES")
        devicesPath = explicitDevices ?? "config/devices.toml"
        if explicitDevices == nil, !FileManager.default.fileExists(atPath: devicesPath) {
            devices = DeviceRegistry()
            warnings.append("no device registry at \(devicesPath): every device is ingested as \"unassigned\" (set AUTOVOLT_DEVICES)")
        } else {
            let text = try read("AUTOVOLT_DEVICES", devicesPath)
            do {
                devices = try DeviceRegistry.parse(toml: text)
            } catch {
                throw ConfigError("AUTOVOLT_DEVICES", "\(devicesPath): \(error.message)")
            }
        }

        // Alarm rules: a bad file stops the worker with the rule and field named.
        let explicitAlarms = value("AUTOVOLT_ALARMS")
        alarmsPath = explicitAlarms ?? "config/alarms.toml"
        if explicitAlarms != nil || FileManager.default.fileExists(atPath: alarmsPath) {
            let text = try read("AUTOVOLT_ALARMS", alarmsPath)
            do {
                alarmRules = try AlarmRuleSet.parse(toml: text)
            } catch {
                throw ConfigError("AUTOVOLT_ALARMS", "\(alarmsPath): \(error.message)")
            }
        }
        if let text = value("AUTOVOLT_ALARM_WEBHOOK_URL") {
            guard let url = URL(string: text), ["http", "https"].contains(url.scheme?.lowercased() ?? ""), url.host != nil else {
                throw ConfigError("AUTOVOLT_ALARM_WEBHOOK_URL", "\"\(text)\" is not an http:// or https:// URL")
            }
            alarmWebhookURL = url
        }

        // Logging
        let levelText = (value("AUTOVOLT_LOG_LEVEL") ?? "info").lowercased()
        guard let level = Logger.Level(rawValue: levelText == "warn" ? "warning" : levelText) else {
            throw ConfigError("AUTOVOLT_LOG_LEVEL", "\"\(levelText)\" is not trace, debug, info, notice, warning, error or critical")
        }
        logLevel = level
        let formatText = (value("AUTOVOLT_LOG_FORMAT") ?? "text").lowercased()
        guard let format = LogFormat(rawValue: formatText) else {
            throw ConfigError("AUTOVOLT_LOG_FORMAT", "\"\(formatText)\" is not text or json")
        }
        logFormat = format

        // Journal and batching
        let maxText = value("AUTOVOLT_JOURNAL_MAX_BYTES") ?? "1073741824"
        guard let maxBytes = Self.parseBytes(maxText), maxBytes >= 1 << 20 else {
            throw ConfigError("AUTOVOLT_JOURNAL_MAX_BYTES", "\"\(maxText)\" is not a size of at least 1 MiB (e.g. 1073741824 or 1GiB)")
        }
        journalMaxBytes = maxBytes
        let syncText = (value("AUTOVOLT_JOURNAL_SYNC") ?? "normal").lowercased()
        guard let sync = Journal.SyncMode(rawValue: syncText) else {
            throw ConfigError("AUTOVOLT_JOURNAL_SYNC", "\"\(syncText)\" is not normal or full")
        }
        journalSync = sync
        batchSize = try Self.integer(value("AUTOVOLT_BATCH_SIZE") ?? "500", "AUTOVOLT_BATCH_SIZE", 1...10_000)
        let dipText = value("AUTOVOLT_DIP_TIMEOUT") ?? "5m"
        guard let dip = Self.parseDuration(dipText), dip >= 1000 else {
            throw ConfigError("AUTOVOLT_DIP_TIMEOUT", "\"\(dipText)\" is not a duration of at least 1s such as 5m")
        }
        dipTimeoutMillis = dip
        httpQueryConcurrency = try Self.integer(value("AUTOVOLT_HTTP_QUERY_CONCURRENCY") ?? "4", "AUTOVOLT_HTTP_QUERY_CONCURRENCY", 1...64)
        httpQueryQueue = try Self.integer(value("AUTOVOLT_HTTP_QUERY_QUEUE") ?? "32", "AUTOVOLT_HTTP_QUERY_QUEUE", 0...10_000)
        let queryTimeoutText = value("AUTOVOLT_HTTP_QUERY_TIMEOUT") ?? "10s"
        guard let queryTimeout = Self.parseDuration(queryTimeoutText), (100...600_000).contains(queryTimeout) else {
            throw ConfigError("AUTOVOLT_HTTP_QUERY_TIMEOUT", "\"\(queryTimeoutText)\" is not a duration between 100ms and 10m such as 10s")
        }
        httpQueryTimeoutMillis = queryTimeout
    }

    // MARK: Parsers

    static func parseMQTTURL(_ url: String) throws(ConfigError) -> (host: String, port: Int, tls: Bool) {
        let name = "AUTOVOLT_MQTT_URL"
        let tls: Bool
        let rest: Substring
        if url.hasPrefix("mqtt://") { tls = false; rest = url.dropFirst(7) }
        else if url.hasPrefix("mqtts://") { tls = true; rest = url.dropFirst(8) }
        else if url.hasPrefix("tcp://") { tls = false; rest = url.dropFirst(6) }
        else { throw ConfigError(name, "\"\(url)\" must start with mqtt:// or mqtts://") }
        var authority = rest
        if let slash = authority.firstIndex(of: "/") {
            guard authority[slash...].allSatisfy({ $0 == "/" }) else {
                throw ConfigError(name, "\"\(url)\" must not have a path")
            }
            authority = authority[..<slash]
        }
        guard !authority.contains("@") else {
            throw ConfigError(name, "put credentials in AUTOVOLT_MQTT_USERNAME and AUTOVOLT_MQTT_PASSWORD_FILE, not in the URL")
        }
        var host = String(authority)
        var port = tls ? 8883 : 1883
        if authority.hasPrefix("[") {
            guard let close = authority.firstIndex(of: "]") else { throw ConfigError(name, "\"\(url)\" has a bad IPv6 address") }
            host = String(authority[authority.index(after: authority.startIndex)..<close])
            let after = authority[authority.index(after: close)...]
            if after.hasPrefix(":") {
                guard let p = Int(after.dropFirst()), (1...65535).contains(p) else { throw ConfigError(name, "\"\(url)\" has a bad port") }
                port = p
            }
        } else if let colon = authority.lastIndex(of: ":") {
            host = String(authority[..<colon])
            guard let p = Int(authority[authority.index(after: colon)...]), (1...65535).contains(p) else {
                throw ConfigError(name, "\"\(url)\" has a bad port")
            }
            port = p
        }
        guard !host.isEmpty else { throw ConfigError(name, "\"\(url)\" has no host") }
        return (host, port, tls)
    }

    /// `7d`, `12h`, `30m`, `90s`, `500ms`, or plain seconds. Returns milliseconds.
    public static func parseDuration(_ text: String) -> Int64? { DurationText.millis(text) }

    /// Plain bytes or with a K/M/G (KiB/MiB/GiB) suffix.
    public static func parseBytes(_ text: String) -> Int64? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).uppercased()
        let units: [(String, Int64)] = [("KIB", 1 << 10), ("MIB", 1 << 20), ("GIB", 1 << 30), ("KB", 1 << 10), ("MB", 1 << 20),
                                        ("GB", 1 << 30), ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30)]
        for (suffix, factor) in units where trimmed.hasSuffix(suffix) {
            guard let n = Int64(trimmed.dropLast(suffix.count).trimmingCharacters(in: .whitespaces)) else { return nil }
            let (bytes, overflow) = n.multipliedReportingOverflow(by: factor)
            return overflow ? nil : bytes
        }
        return Int64(trimmed)
    }

    static func integer(_ text: String, _ name: String, _ range: ClosedRange<Int>) throws(ConfigError) -> Int {
        guard let n = Int(text), range.contains(n) else {
            throw ConfigError(name, "\"\(text)\" is not a whole number in \(range.lowerBound)...\(range.upperBound)")
        }
        return n
    }
}

import AutoVoltMongo

extension WorkerConfig.WriteConcernSetting {
    /// How long a majority write waits for the replica set before it fails with a write
    /// concern error (the write is applied on the primary; the worker retries it).
    static let majorityTimeoutMS = 10_000

    /// The write concern of every write the worker makes. The worker deletes its own copy of a
    /// message (the journal record) once MongoDB acknowledged it, so an acknowledgement must
    /// survive what can happen next:
    /// - `auto` on a replica set: `w: "majority", j: true`; only a majority survives a failover.
    /// - `auto` on a standalone: `w: 1, j: true`; there is no majority to wait for, and without
    ///   `j` the server answers before its journal, so a crash of mongod would lose batches it
    ///   acknowledged.
    /// - `majority`: `w: "majority", j: true` whatever the server says it is.
    /// - `1`: `w: 1` as asked (an operator's choice: a server crash can lose acknowledged writes).
    func resolve(isReplicaSet: Bool) -> WriteConcern {
        switch self {
        case .majority: return .majority(journal: true, timeoutMS: Self.majorityTimeoutMS)
        case .one: return .acknowledged
        case .auto: return isReplicaSet ? .majority(journal: true, timeoutMS: Self.majorityTimeoutMS) : .journaled
        }
    }

    /// `resolve(isReplicaSet:)` for the server `client` talks to (its `hello`, once).
    func resolve(for client: MongoClient) throws(MongoError) -> WriteConcern {
        switch self {
        case .majority, .one: return resolve(isReplicaSet: false)
        case .auto: return resolve(isReplicaSet: try client.isReplicaSet)
        }
    }
}

extension WorkerConfig {
    public var ledgerPolicy: LedgerPolicy {
        var policy = LedgerPolicy()
        policy.pendingDipTimeoutMillis = dipTimeoutMillis
        return policy
    }
}
