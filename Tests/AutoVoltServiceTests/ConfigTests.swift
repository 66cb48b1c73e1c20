import AutoVoltMongo
@testable import AutoVoltService
import Foundation
import Testing

func config(_ values: [String: String], files: [String: String] = [:]) throws(ConfigError) -> WorkerConfig {
    var all = ["AUTOVOLT_DEVICES": "/registry.toml"]
    all.merge(values) { $1 }
    var fileContents = ["/registry.toml": "[[device]]\nesp32_name = \"lab-101\"\nclassroom = \"CSE-301\"\n"]
    fileContents.merge(files) { $1 }
    return try WorkerConfig(values: all, readFile: { path in
        guard let text = fileContents[path] else { throw CocoaError(.fileReadNoSuchFile) }
        return text
    })
}

func configError(_ values: [String: String], files: [String: String] = [:]) -> ConfigError? {
    do {
        _ = try config(values, files: files)
        return nil
    } catch {
        return error
    }
}

@Suite("configuration")
struct ConfigTests {
    @Test func defaultsFollowTheContract() throws {
        let c = try config([:])
        #expect(c.mqtt.host == "127.0.0.1")
        #expect(c.mqtt.port == 1883)
        #expect(!c.mqtt.useTLS)
        #expect(c.mqtt.clientID == "autovolt-worker")
        #expect(c.mqtt.subscriptions == ["autovolt/+/telemetry", "autovolt/+/status", "autovolt/+/heartbeat"])
        #expect(c.mongoURI == "mongodb://127.0.0.1:27017/autovolt_power")
        #expect(c.timeZone.identifier == "Asia/Kolkata")
        #expect(c.clockPolicy.maxLagMillis == 7 * 86_400_000)
        #expect(c.reconcileAt == (2, 0))
        #expect(c.statementAt == (3, 0))
        #expect(c.httpAddress?.host == "127.0.0.1" && c.httpAddress?.port == 9464)
        #expect(c.stateDirectory == "/var/lib/autovolt")
        #expect(c.logLevel == .info)
        #expect(c.journalMaxBytes == 1 << 30)
        #expect(c.devices.device("lab-101")?.classroom == "CSE-301")
    }

    /// Issue 20 §4: the worker deletes its journal record once MongoDB acknowledged a batch, so
    /// on a standalone the `auto` write concern asks for the server's journal (`j: true`), not
    /// just `w: 1`; on a replica set a majority with the journal.
    @Test func autoWriteConcernJournalsOnAStandaloneAndWaitsForAMajorityOnAReplicaSet() throws {
        #expect(try config([:]).writeConcern == .auto)
        #expect(WorkerConfig.WriteConcernSetting.auto.resolve(isReplicaSet: false) == .journaled)
        #expect(WorkerConfig.WriteConcernSetting.auto.resolve(isReplicaSet: true) == .majority(journal: true, timeoutMS: 10_000))
        #expect(WorkerConfig.WriteConcernSetting.majority.resolve(isReplicaSet: false) == .majority(journal: true, timeoutMS: 10_000))
        #expect(WorkerConfig.WriteConcernSetting.one.resolve(isReplicaSet: true) == .acknowledged)
        let sent = try WorkerConfig.WriteConcernSetting.auto.resolve(isReplicaSet: false).document
        #expect(sent["j"]?.boolValue == true, "\(sent)")
    }

    @Test func shareGroupPrefixesEverySubscription() throws {
        let c = try config(["AUTOVOLT_MQTT_SHARE_GROUP": "workers"])
        #expect(c.mqtt.subscriptions.allSatisfy { $0.hasPrefix("$share/workers/autovolt/+/") })
    }

    @Test func tlsURLAndCredentials() throws {
        let c = try config(["AUTOVOLT_MQTT_URL": "mqtts://broker.campus:8884", "AUTOVOLT_MQTT_USERNAME": "worker",
                            "AUTOVOLT_MQTT_PASSWORD_FILE": "/pw"], files: ["/pw": "s3cret\n"])
        #expect(c.mqtt.useTLS && c.mqtt.host == "broker.campus" && c.mqtt.port == 8884)
        #expect(c.mqtt.password == "s3cret")
    }

    @Test func aShortAPITokenWorksWithAWarning() throws {
        let c = try config(["AUTOVOLT_API_TOKEN_FILE": "/token"], files: ["/token": "test-token\n"])
        #expect(c.apiToken == "test-token")
        #expect(c.warnings.contains { $0.contains("shorter than 16 characters") })
        let long = try config(["AUTOVOLT_API_TOKEN_FILE": "/token"], files: ["/token": String(repeating: "x", count: 32)])
        #expect(!long.warnings.contains { $0.contains("token") })
    }

    @Test func durationsAndSizes() throws {
        #expect(try config(["AUTOVOLT_MAX_CLOCK_LAG": "12h"]).clockPolicy.maxLagMillis == 43_200_000)
        #expect(try config(["AUTOVOLT_MAX_CLOCK_LAG": "90s"]).clockPolicy.maxLagMillis == 90_000)
        #expect(try config(["AUTOVOLT_JOURNAL_MAX_BYTES": "2GiB"]).journalMaxBytes == 2 << 30)
        #expect(try config(["AUTOVOLT_HTTP_ADDR": "off"]).httpAddress == nil)
        let defaults = try config([:])
        #expect(defaults.httpQueryConcurrency == 4 && defaults.httpQueryQueue == 32 && defaults.httpQueryTimeoutMillis == 10_000)
        #expect(try config(["AUTOVOLT_HTTP_QUERY_TIMEOUT": "1500ms"]).httpQueryTimeoutMillis == 1500)
    }

    @Test(arguments: [
        (["AUTOVOLT_MQTT_URL": "http://x"], "AUTOVOLT_MQTT_URL"),
        (["AUTOVOLT_MQTT_URL": "mqtt://host:99999"], "AUTOVOLT_MQTT_URL"),
        (["AUTOVOLT_MQTT_URL": "mqtt://user:pw@host"], "AUTOVOLT_MQTT_URL"),
        (["AUTOVOLT_MQTT_PASSWORD_FILE": "/missing", "AUTOVOLT_MQTT_USERNAME": "u"], "AUTOVOLT_MQTT_PASSWORD_FILE"),
        (["AUTOVOLT_MQTT_SHARE_GROUP": "a/b"], "AUTOVOLT_MQTT_SHARE_GROUP"),
        (["AUTOVOLT_MQTT_PROTOCOL": "4"], "AUTOVOLT_MQTT_PROTOCOL"),
        (["AUTOVOLT_MONGODB_URI": "postgres://x"], "AUTOVOLT_MONGODB_URI"),
        (["AUTOVOLT_DATABASE_URL": "mysql://x/y"], "AUTOVOLT_DATABASE_URL"),
        (["AUTOVOLT_DATABASE_URL": "postgresql://pg/db", "AUTOVOLT_MONGODB_URI": "mongodb://m/db"], "AUTOVOLT_DATABASE_URL"),
        (["AUTOVOLT_DATABASE_URL": "mongodb://a/db", "AUTOVOLT_MONGODB_URI": "mongodb://b/db"], "AUTOVOLT_DATABASE_URL"),
        (["AUTOVOLT_TIMEZONE": "Mars/Olympus"], "AUTOVOLT_TIMEZONE"),
        (["AUTOVOLT_MAX_CLOCK_LAG": "soon"], "AUTOVOLT_MAX_CLOCK_LAG"),
        (["AUTOVOLT_RECONCILE_AT": "25:00"], "AUTOVOLT_RECONCILE_AT"),
        (["AUTOVOLT_STATEMENT_AT": "3am"], "AUTOVOLT_STATEMENT_AT"),
        (["AUTOVOLT_HTTP_ADDR": "localhost"], "AUTOVOLT_HTTP_ADDR"),
        (["AUTOVOLT_API_TOKEN_FILE": "/missing"], "AUTOVOLT_API_TOKEN_FILE"),
        (["AUTOVOLT_API_TOKEN_FILE": "/empty"], "AUTOVOLT_API_TOKEN_FILE"),
        (["AUTOVOLT_DEVICES": "/missing.toml"], "AUTOVOLT_DEVICES"),
        (["AUTOVOLT_DEVICES": "/bad.toml"], "AUTOVOLT_DEVICES"),
        (["AUTOVOLT_LOG_LEVEL": "loud"], "AUTOVOLT_LOG_LEVEL"),
        (["AUTOVOLT_LOG_FORMAT": "xml"], "AUTOVOLT_LOG_FORMAT"),
        (["AUTOVOLT_JOURNAL_MAX_BYTES": "12"], "AUTOVOLT_JOURNAL_MAX_BYTES"),
        (["AUTOVOLT_JOURNAL_SYNC": "sometimes"], "AUTOVOLT_JOURNAL_SYNC"),
        (["AUTOVOLT_MAX_CLOCK_LAG": "1e300d"], "AUTOVOLT_MAX_CLOCK_LAG"),
        (["AUTOVOLT_JOURNAL_MAX_BYTES": "9999999999999G"], "AUTOVOLT_JOURNAL_MAX_BYTES"),
        (["AUTOVOLT_DIP_TIMEOUT": "0s"], "AUTOVOLT_DIP_TIMEOUT"),
        (["AUTOVOLT_HTTP_QUERY_CONCURRENCY": "0"], "AUTOVOLT_HTTP_QUERY_CONCURRENCY"),
        (["AUTOVOLT_HTTP_QUERY_QUEUE": "-1"], "AUTOVOLT_HTTP_QUERY_QUEUE"),
        (["AUTOVOLT_HTTP_QUERY_TIMEOUT": "10ms"], "AUTOVOLT_HTTP_QUERY_TIMEOUT"),
    ])
    func badValuesNameTheirVariable(values: [String: String], variable: String) {
        let error = configError(values, files: ["/bad.toml": "[[device]]\nesp32_name = 3\n", "/empty": " \n"])
        #expect(error?.variable == variable, "\(String(describing: error))")
        #expect(error?.description.hasPrefix("configuration error: \(variable): ") == true)
    }

    @Test func theDatabaseURLNamesTheBackendAndTheMongoDBVariableStaysItsAlias() throws {
        #expect(try config([:]).databaseKind == .mongodb)
        let pg = try config(["AUTOVOLT_DATABASE_URL": "postgresql://autovolt@db.campus:5432/autovolt_power"])
        #expect(pg.databaseKind == .postgresql && pg.postgresURL == "postgresql://autovolt@db.campus:5432/autovolt_power")
        #expect(try config(["AUTOVOLT_DATABASE_URL": "postgres://h/db"]).databaseKind == .postgresql)
        let mongo = try config(["AUTOVOLT_DATABASE_URL": "mongodb://m:27017/autovolt_power"])
        #expect(mongo.databaseKind == .mongodb && mongo.mongoURI == "mongodb://m:27017/autovolt_power")
        // Both set to the same MongoDB URI is not a conflict.
        let same = try config(["AUTOVOLT_DATABASE_URL": "mongodb://m/db", "AUTOVOLT_MONGODB_URI": "mongodb://m/db"])
        #expect(same.mongoURI == "mongodb://m/db")
        #expect(try config(["AUTOVOLT_MONGODB_URI": "mongodb://alias/db"]).mongoURI == "mongodb://alias/db")
        // A refused URL is shown without its password.
        let error = configError(["AUTOVOLT_DATABASE_URL": "mysql://admin:hunter2@db/x?password=hunter2"])
        #expect(error?.description.contains("hunter2") == false)
    }

    @Test func alarmRulesAreLoadedAndABadRuleNamesTheRuleAndField() throws {
        let good = #"[[rule]]\#nname = "lab-over-power"\#nkind = "over_power"\#nthreshold_w = 2000\#nhysteresis_w = 200"#
        let c = try config(["AUTOVOLT_ALARMS": "/alarms.toml"], files: ["/alarms.toml": good])
        #expect(c.alarmRules.rules.map(\.name) == ["lab-over-power"] && c.alarmRules.rules.first?.thresholdW == 2000)
        let bad = #"[[rule]]\#nname = "lab-over-power"\#nkind = "over_power"\#nthreshold_w = "high""#
        let error = configError(["AUTOVOLT_ALARMS": "/alarms.toml"], files: ["/alarms.toml": bad])
        #expect(error?.variable == "AUTOVOLT_ALARMS")
        #expect(error?.description.contains(#"/alarms.toml: rule "lab-over-power": threshold_w must be a number"#) == true, "\(String(describing: error))")
        #expect(configError(["AUTOVOLT_ALARMS": "/missing.toml"])?.variable == "AUTOVOLT_ALARMS")
        #expect(try config([:]).alarmRules.rules.isEmpty, "no rules when the default file is absent")
    }

    @Test func tomlFileIsReadAndTheEnvironmentWins() throws {
        let path = NSTemporaryDirectory() + "autovolt-\(UUID().uuidString).toml"
        try "mqtt_url = \"mqtt://file-broker:1884\"\ntimezone = \"Europe/London\"\ndevices = \"/nonexistent\"\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        let values = try WorkerConfig.tomlValues(path: path)
        #expect(values["AUTOVOLT_MQTT_URL"] == "mqtt://file-broker:1884")
        let env = ["AUTOVOLT_TIMEZONE": "UTC", "AUTOVOLT_DEVICES": NSTemporaryDirectory() + "none-\(UUID()).toml"]
        #expect(throws: ConfigError.self) { try WorkerConfig.load(environment: env, configFile: path) }
        // The variable's own name works too.
        try "AUTOVOLT_MQTT_URL = \"mqtt://other:1885\"\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try WorkerConfig.tomlValues(path: path)["AUTOVOLT_MQTT_URL"] == "mqtt://other:1885")
        try "AUTOVOLT_MQTT_URL = \"mqtt://a\"\nmqtt_url = \"mqtt://b\"\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: ConfigError.self) { try WorkerConfig.tomlValues(path: path) }
        try "bogus_key = 1\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(throws: ConfigError.self) { try WorkerConfig.tomlValues(path: path) }
    }
}
