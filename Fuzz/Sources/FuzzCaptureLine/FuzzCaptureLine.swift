import CFuzzer
#if canImport(Glibc)
import Glibc
#endif
import AutoVoltCore

/// Input: capture text; split at newlines like `autovolt-worker replay`, each line parsed.
/// Checked: a parsed line's payload is the line's own tail, byte for byte (without a final CR).
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzCaptureLine(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    for line in bytes.split(separator: 0x0A, omittingEmptySubsequences: false) {
        guard case .success(let parsed?) = CaptureLine.parse(line, now: 1_795_456_431_000) else { continue }
        let body = line.last == UInt8(ascii: "\r") ? line.dropLast() : line
        guard body.suffix(parsed.payload.count).elementsEqual(parsed.payload) else {
            fatalError("the payload is not the tail of its line")
        }
        guard !parsed.topic.isEmpty, !parsed.topic.contains(" ") else { fatalError("topic \"\(parsed.topic)\"") }
    }
    return 0
}

@main
enum FuzzCaptureLine {
    static func main() {
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzCaptureLine(data, size) })
    }
}
