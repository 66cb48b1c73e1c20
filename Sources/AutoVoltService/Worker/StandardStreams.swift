#if canImport(Glibc)
import Glibc
#endif
import Foundation

/// Writes to stdout/stderr with write(2). FileHandle.write traps in corelibs Foundation when the
/// write fails (a pipe closed by `head`, a full disk); output must never take the worker down.
public enum StandardStreams {
    public static func out(_ text: String) { write(text, to: 1) }
    public static func err(_ text: String) { write(text, to: 2) }
    public static func out(_ data: Data) { data.withUnsafeBytes { write($0, to: 1) } }

    static func write(_ text: String, to fd: Int32) {
        var text = text
        text.withUTF8 { write(UnsafeRawBufferPointer($0), to: fd) }
    }

    static func write(_ bytes: UnsafeRawBufferPointer, to fd: Int32) {
        guard var pointer = bytes.baseAddress else { return }
        var left = bytes.count
        while left > 0 {
            let n = Glibc.write(fd, pointer, left)
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { return } // EPIPE and friends: drop the output, keep running
            pointer += n
            left -= n
        }
    }
}
