/// Every failure of the export libraries, with the library's own words.
public enum ExportError: Error, Sendable, CustomStringConvertible {
    /// libharu: its error and detail codes (hpdf_error.h), and what was being done.
    case pdf(what: String, code: UInt, detail: UInt)
    /// libxlsxwriter: `lxw_strerror`'s message.
    case xlsx(what: String, message: String)
    case fontMissing(path: String)
    case io(String)

    public var description: String {
        switch self {
        case .pdf(let what, let code, let detail):
            "PDF: \(what) failed (libharu error 0x\(String(code, radix: 16, uppercase: true)), detail \(detail))"
        case .xlsx(let what, let message): "XLSX: \(what) failed: \(message)"
        case .fontMissing(let path): "PDF: the font \(path) is missing (Debian: apt-get install fonts-dejavu-core)"
        case .io(let message): message
        }
    }
}

/// How statements show money and dates to people (the CSV keeps all four decimals).
enum Display {
    static func symbol(_ currency: String?) -> String {
        switch currency {
        case "INR": "₹"
        case "USD": "$"
        case "EUR": "€"
        case "GBP": "£"
        case let other?: other + " "
        case nil: ""
        }
    }
}
