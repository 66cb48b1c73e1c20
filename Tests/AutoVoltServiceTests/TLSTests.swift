import AutoVoltTestSupport
import Foundation
import Testing

/// A CA, a server certificate for 127.0.0.1 and a client certificate, made with the openssl CLI.
struct TestCertificates {
    let directory: URL
    var ca: String { directory.appendingPathComponent("ca.crt").path }
    var serverCert: String { directory.appendingPathComponent("server.crt").path }
    var serverKey: String { directory.appendingPathComponent("server.key").path }
    var clientCert: String { directory.appendingPathComponent("client.crt").path }
    var clientKey: String { directory.appendingPathComponent("client.key").path }

    init() throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("autovolt-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try openssl(["req", "-x509"] + ec + ["-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=AutoVolt test CA"])
        for (name, extensions) in [("server", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth"),
                                   ("client", "extendedKeyUsage=clientAuth")] {
            try openssl(["req"] + ec + ["-keyout", "\(name).key", "-out", "\(name).csr", "-subj", "/CN=autovolt-\(name)"])
            try extensions.write(to: directory.appendingPathComponent("\(name).ext"), atomically: true, encoding: .utf8)
            try openssl(["x509", "-req", "-in", "\(name).csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                         "-days", "2", "-extfile", "\(name).ext", "-out", "\(name).crt"])
        }
        // mosquitto may drop privileges; the files must be readable whoever it runs as.
        for file in try FileManager.default.contentsOfDirectory(atPath: directory.path) {
            try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: directory.appendingPathComponent(file).path)
        }
    }

    func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        process.currentDirectoryURL = directory
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        try process.run()
        let text = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw HarnessError("openssl \(arguments.joined(separator: " ")): \(text)")
        }
    }
}

// In the serialized integration suite: each of these blocks a thread of the 2-core cooperative
// pool while it waits, and running them beside the other suites starved the HTTP timing tests.
extension IntegrationTests {
    @Test func aReadingPublishedOverTLSIsStored() throws {
        let certificates = try TestCertificates()
        let rig = try Rig(brokerTLS: .init(caFile: certificates.ca, certFile: certificates.serverCert,
                                           keyFile: certificates.serverKey, requireClientCertificate: true))
        let worker = try rig.startWorker(extra: [
            "AUTOVOLT_MQTT_URL": "mqtts://127.0.0.1:\(rig.broker.port)",
            "AUTOVOLT_MQTT_CA_FILE": certificates.ca,
            "AUTOVOLT_MQTT_CERT_FILE": certificates.clientCert,
            "AUTOVOLT_MQTT_KEY_FILE": certificates.clientKey,
        ])
        let tls = TLSClientFiles(caFile: certificates.ca, certFile: certificates.clientCert, keyFile: certificates.clientKey)
        try TestPublisher(port: rig.broker.port, tls: tls).publish([reading("lab-101", 1), reading("lab-101", 2)])
        #expect(rig.waitForCount("telemetry_events", 2), "\(worker.log.suffix(2000))\n\(rig.broker.log.suffix(2000))")
        #expect(worker.isRunning)
    }
}
