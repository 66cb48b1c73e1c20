@testable import AutoVoltMongo
import Foundation
import Testing

/// libmongoc's /dev/shm/mongoc-<pid> counter files left by killed processes are removed, so the
/// next process with that pid does not print a warning while libmongoc loads.
@Suite("libmongoc counter files")
struct CounterFileTests {
    @Test func filesOfDeadProcessesGoOthersStay() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("shm-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // A pid that has just exited (the kernel does not hand it out again at once).
        let finished = Process()
        finished.executableURL = URL(fileURLWithPath: "/bin/true")
        try finished.run()
        finished.waitUntilExit()
        let dead = finished.processIdentifier
        let names = ["mongoc-\(dead)", "mongoc-\(getpid())", "mongoc-\(getppid())", "mongoc-notapid", "other-\(dead)"]
        for name in names { FileManager.default.createFile(atPath: directory + "/" + name, contents: nil) }
        removeStaleCounterFiles(directory: directory)
        let left = Set(try FileManager.default.contentsOfDirectory(atPath: directory))
        #expect(left == Set(names.dropFirst()))
    }
}
