import CFuzzer
#if canImport(Glibc)
import Glibc
#endif
import AutoVoltCore

/// Input: `TOPIC\nPAYLOAD` when it starts with `autovolt/` and has a newline, else the whole
/// input is the payload of `autovolt/lab-101/telemetry`. Any crash, trap or sanitizer report is
/// a bug; every input must give an event or a rejection.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzDecoder(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = data.map { Array(UnsafeBufferPointer(start: $0, count: size)) } ?? []
    var topic = "autovolt/lab-101/telemetry"
    var payload = bytes[...]
    if bytes.starts(with: "autovolt/".utf8), let newline = bytes.firstIndex(of: 0x0A) {
        topic = String(decoding: bytes[..<newline], as: UTF8.self)
        payload = bytes[(newline + 1)...]
    }
    let decoder = MessageDecoder()
    let first = decoder.decode(topic: topic, payload: payload, receivedAt: 1_795_456_431_000)
    // Pure: the same input decodes the same way (and through the non-contiguous path too).
    let again = decoder.decode(topic: topic, payload: Array(payload).lazy.map { $0 }, receivedAt: 1_795_456_431_000)
    switch (first, again) {
    case (.success, .success), (.failure, .failure): break
    default: fatalError("decode is not deterministic for this input")
    }
    return 0
}

@main
enum FuzzDecoder {
    static func main() {
        var argc = CommandLine.argc
        var argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>? = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in fuzzDecoder(data, size) })
    }
}
