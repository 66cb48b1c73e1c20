import CFuzzer
import AutoVoltCore
import Foundation

let zones = ["Asia/Kolkata", "UTC", "America/New_York", "Australia/Lord_Howe", "Pacific/Kiritimati"]
    .compactMap { TimeZone(identifier: $0) }

/// Input: a time-zone selector byte, then up to four newline-separated fields (classroom, then
/// date/start, end, bucket); a missing field is an absent parameter. Every parser must return
/// parameters or an AnalyticsParameterError; a timeline's range is checked.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzAnalyticsParameters(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    guard let selector = bytes.first else { return 0 }
    let zone = zones[Int(selector) % zones.count]
    let fields = bytes.dropFirst().split(separator: 0x0A, maxSplits: 3, omittingEmptySubsequences: false)
        .map { String(decoding: $0, as: UTF8.self) }
    func field(_ i: Int) -> String? { i < fields.count ? fields[i] : nil }
    _ = try? AnalyticsQueries.summaryParameters(classroom: field(0), date: field(1))
    _ = try? AnalyticsQueries.deviceBreakdownParameters(classroom: field(0), date: field(1))
    _ = try? AnalyticsQueries.monthlyParameters(classroom: field(0), month: field(1))
    if let t = try? AnalyticsQueries.timelineParameters(classroom: field(0), start: field(1), end: field(2),
                                                         bucket: field(3), timeZone: zone) {
        let limit = t.bucket == .hour ? AnalyticsQueries.maxHourlyTimelineDays : AnalyticsQueries.maxTimelineDays
        guard t.start < t.end, t.end - t.start <= EpochMillis(limit) * 86_400_000 + 3_600_000 else {
            fatalError("timeline range \(t.start)..<\(t.end) accepted")
        }
    }
    return 0
}

@main
enum FuzzAnalyticsParameters {
    static func main() {
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzAnalyticsParameters(data, size) })
    }
}
