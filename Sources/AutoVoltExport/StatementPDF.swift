import AutoVoltCore
import CHaru
import Foundation

/// A statement as an A4 PDF through libharu: number, scope, month, version, status, totals,
/// tariff segments, a line per device, the per-day annex and the open review tickets. DejaVu
/// Sans is embedded (it has the rupee sign); the output depends only on the statement (no
/// creation date, no random ID), so the same statement gives the same bytes.
public enum StatementPDF {
    public static let defaultFont = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
    public static let defaultBoldFont = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf"

    public static func render(_ statement: Statement, font: String = defaultFont, boldFont: String = defaultBoldFont) throws(ExportError) -> [UInt8] {
        for path in [font, boldFont] where !FileManager.default.isReadableFile(atPath: path) { throw .fontMissing(path: path) }
        guard let pdf = HPDF_New(nil, nil) else { throw .pdf(what: "HPDF_New", code: 0, detail: 0) }
        defer { HPDF_Free(pdf) }
        let document = Document(pdf: pdf)
        try document.check("set up the document") {
            _ = HPDF_SetCompressionMode(pdf, UInt32(HPDF_COMP_ALL))
            _ = HPDF_UseUTFEncodings(pdf)
            _ = HPDF_SetCurrentEncoder(pdf, "UTF-8")
            _ = HPDF_SetInfoAttr(pdf, HPDF_INFO_TITLE, "Electricity statement \(statement.id)")
            _ = HPDF_SetInfoAttr(pdf, HPDF_INFO_CREATOR, "autovolt-worker")
        }
        try document.loadFonts(regular: font, bold: boldFont)
        try Layout(statement: statement, document: document).write()
        try document.check("save") { _ = HPDF_SaveToStream(pdf) }
        let size = HPDF_GetStreamSize(pdf)
        var bytes = [UInt8](repeating: 0, count: Int(size))
        var read = size
        try document.check("read the saved document") {
            _ = bytes.withUnsafeMutableBufferPointer { HPDF_ReadFromStream(pdf, $0.baseAddress, &read) }
        }
        return Array(bytes.prefix(Int(read)))
    }

    /// libharu's document with its error state: every call is followed by a look at it.
    final class Document {
        let pdf: HPDF_Doc
        var regular: HPDF_Font?
        var bold: HPDF_Font?

        init(pdf: HPDF_Doc) { self.pdf = pdf }

        func check(_ what: String, _ body: () -> Void) throws(ExportError) {
            body()
            let code = HPDF_GetError(pdf)
            guard code == HPDF_OK else {
                let detail = HPDF_GetErrorDetail(pdf)
                HPDF_ResetError(pdf)
                throw .pdf(what: what, code: UInt(code), detail: UInt(detail))
            }
        }

        func loadFonts(regular path: String, bold boldPath: String) throws(ExportError) {
            var names: [String] = []
            for file in [path, boldPath] {
                var name: String?
                try check("load the font \(file)") {
                    name = HPDF_LoadTTFontFromFile(pdf, file, HPDF_TRUE).map { String(cString: $0) }
                }
                guard let name else { throw .pdf(what: "load the font \(file)", code: 0, detail: 0) }
                names.append(name)
            }
            try check("select the fonts") {
                regular = HPDF_GetFont(pdf, names[0], "UTF-8")
                bold = HPDF_GetFont(pdf, names[1], "UTF-8")
            }
            guard regular != nil, bold != nil else { throw .pdf(what: "select the fonts", code: 0, detail: 0) }
        }
    }

    enum Align { case left, right }

    struct Column {
        let title: String
        let width: Float
        let align: Align
    }

    /// Writes top to bottom, starting a page when the next row would not fit.
    final class Layout {
        static let margin: Float = 42
        static let width: Float = 595.276, height: Float = 841.89
        let statement: Statement
        let document: Document
        var page: HPDF_Page?
        var y: Float = 0
        var pageNumber = 0

        init(statement: Statement, document: Document) {
            self.statement = statement
            self.document = document
        }

        var money: String { Display.symbol(statement.currency) }

        func write() throws(ExportError) {
            try newPage()
            let s = statement
            try text(s.status == .frozen ? "Electricity statement" : "Electricity statement (DRAFT)", size: 17, bold: true)
            try text("\(s.scope) · \(Self.monthName(s.month))", size: 12)
            y -= 6
            let frozen = s.frozenAt.map { "frozen \(Self.local($0, s.timeZone))" + (s.frozenBy.map { " by \($0)" } ?? "") }
            let facts: [(String, String)] = [
                ("Statement number", s.id), ("Month", s.month), ("Scope", s.scope.name.map { "\(s.scope.kind) \($0)" } ?? s.scope.kind),
                ("Version", String(s.version)),
                ("Status", s.status == .frozen ? "FROZEN, \(frozen ?? "")" : "DRAFT: not for payment; figures may still change"),
                ("Generated", Self.local(s.createdAt, s.timeZone) + " (\(s.timeZone))"),
            ] + (s.classrooms.isEmpty || s.scope == .campus ? [] : [("Classrooms", s.classrooms.joined(separator: ", "))])
            for (key, value) in facts { try pair(key, value) }
            y -= 8
            try text("Totals", size: 12, bold: true)
            try pair("Energy", "\(FixedPoint.kwh(s.energy)) kWh")
            try pair("Cost", s.cost.map { "\(money)\(FixedPoint.moneyText($0, decimals: 2))" } ?? "unknown: some energy had no tariff")
            if s.unpriced > 0 { try pair("Without a tariff", "\(FixedPoint.kwh(s.unpriced)) kWh") }
            try pair("Devices", "\(s.lines.count) (\(s.coverage.deviceDays) device-days with readings in a month of \(s.coverage.daysInMonth) days)")
            try pair("Coverage", String(format: "mean %.1f %%, lowest %.1f %%", s.coverage.mean * 100, s.coverage.lowest * 100))
            let confidence = Confidence.allCases.map { "\($0.rawValue) \(s.coverage.confidence[$0] ?? 0)" }.joined(separator: ", ")
            try pair("Ledger entries", confidence)
            try pair("Open review tickets", String(s.tickets.count))

            try section("Tariff segments")
            try table([Column(title: "Tariff version", width: 150, align: .left), Column(title: "Rate / kWh", width: 70, align: .right),
                       Column(title: "From", width: 70, align: .left), Column(title: "To", width: 70, align: .left),
                       Column(title: "kWh", width: 75, align: .right), Column(title: "Cost", width: 76, align: .right)],
                      s.segments.map { seg in
                          [seg.costVersionID, seg.costPerKwh.map { "\(money)\($0)" } ?? "?", seg.from.description, seg.to.description,
                           FixedPoint.kwh(seg.energy), "\(money)\(FixedPoint.moneyText(seg.cost, decimals: 2))"]
                      })
            try section("Lines")
            try table([Column(title: "Device", width: 140, align: .left), Column(title: "Classroom", width: 110, align: .left),
                       Column(title: "kWh", width: 80, align: .right), Column(title: "Cost", width: 85, align: .right),
                       Column(title: "Days", width: 40, align: .right), Column(title: "Coverage", width: 56, align: .right)],
                      s.lines.map { line in
                          [line.esp32Name, line.classroom, FixedPoint.kwh(line.energy),
                           line.cost.map { "\(money)\(FixedPoint.moneyText($0, decimals: 2))" } ?? "unknown",
                           String(line.days), String(format: "%.1f %%", line.coverage * 100)]
                      } + [["Total", "", FixedPoint.kwh(s.energy), s.cost.map { "\(money)\(FixedPoint.moneyText($0, decimals: 2))" } ?? "unknown",
                            "", ""]], boldLast: true)
            try section("Annex: per day")
            try table([Column(title: "Date", width: 110, align: .left), Column(title: "kWh", width: 110, align: .right),
                       Column(title: "Cost", width: 110, align: .right), Column(title: "Devices", width: 70, align: .right)],
                      s.days.map { day in
                          [day.date.description, FixedPoint.kwh(day.energy),
                           day.cost.map { "\(money)\(FixedPoint.moneyText($0, decimals: 2))" } ?? "unknown", String(day.devices)]
                      })
            if !s.tickets.isEmpty {
                try section("Open review tickets")
                try table([Column(title: "Date", width: 70, align: .left), Column(title: "Device", width: 120, align: .left),
                           Column(title: "Kind", width: 120, align: .left), Column(title: "Detail", width: 201, align: .left)],
                          s.tickets.map { [$0.date, $0.esp32Name, $0.kind, $0.detail] })
            }
        }

        func newPage() throws(ExportError) {
            let pdf = document.pdf
            var added: HPDF_Page?
            try document.check("add a page") {
                added = HPDF_AddPage(pdf)
                if let added { _ = HPDF_Page_SetSize(added, HPDF_PAGE_SIZE_A4, HPDF_PAGE_PORTRAIT) }
            }
            guard let added else { throw .pdf(what: "add a page", code: 0, detail: 0) }
            page = added
            pageNumber += 1
            y = Self.height - Self.margin
            let footer = "\(statement.id) · \(statement.status == .frozen ? "frozen" : "draft") · page \(pageNumber)"
            try draw(footer, x: Self.margin, y: Self.margin / 2, size: 7.5, bold: false)
        }

        func ensure(_ needed: Float) throws(ExportError) {
            if y - needed < Self.margin { try newPage() }
        }

        func text(_ value: String, size: Float, bold: Bool = false) throws(ExportError) {
            try ensure(size + 4)
            y -= size + 4
            try draw(value, x: Self.margin, y: y, size: size, bold: bold)
        }

        func pair(_ key: String, _ value: String) throws(ExportError) {
            try ensure(14)
            y -= 14
            try draw(key, x: Self.margin, y: y, size: 9.5, bold: true)
            try draw(value, x: Self.margin + 120, y: y, size: 9.5, bold: false)
        }

        func section(_ title: String) throws(ExportError) {
            try ensure(60)
            y -= 10
            try text(title, size: 12, bold: true)
        }

        func table(_ columns: [Column], _ rows: [[String]], boldLast: Bool = false) throws(ExportError) {
            func header() throws(ExportError) {
                y -= 14
                try row(columns.map(\.title), columns, bold: true)
                try rule(y - 3)
            }
            try ensure(30)
            try header()
            for (index, cells) in rows.enumerated() {
                if y - 13 < Self.margin {
                    try newPage()
                    try header()
                }
                y -= 13
                try row(cells, columns, bold: boldLast && index == rows.count - 1)
            }
            if rows.isEmpty {
                y -= 13
                try draw("none", x: Self.margin, y: y, size: 8.5, bold: false)
            }
        }

        func row(_ cells: [String], _ columns: [Column], bold: Bool) throws(ExportError) {
            var x = Self.margin
            for (cell, column) in zip(cells, columns) {
                let fitted = try fit(cell, width: column.width - 6, size: 8.5, bold: bold)
                let offset = column.align == .right ? column.width - 6 - (try width(fitted, size: 8.5, bold: bold)) : 0
                try draw(fitted, x: x + offset, y: y, size: 8.5, bold: bold)
                x += column.width
            }
        }

        func rule(_ at: Float) throws(ExportError) {
            guard let page else { return }
            try document.check("draw a rule") {
                _ = HPDF_Page_SetLineWidth(page, 0.5)
                _ = HPDF_Page_MoveTo(page, Self.margin, at)
                _ = HPDF_Page_LineTo(page, Self.width - Self.margin, at)
                _ = HPDF_Page_Stroke(page)
            }
        }

        func font(_ bold: Bool) -> HPDF_Font? { bold ? document.bold : document.regular }

        func width(_ value: String, size: Float, bold: Bool) throws(ExportError) -> Float {
            guard let page else { return 0 }
            var result: Float = 0
            try document.check("measure text") {
                _ = HPDF_Page_SetFontAndSize(page, font(bold), size)
                result = HPDF_Page_TextWidth(page, value)
            }
            return result
        }

        /// Shortens a cell that does not fit its column, with an ellipsis.
        func fit(_ value: String, width limit: Float, size: Float, bold: Bool) throws(ExportError) -> String {
            guard try width(value, size: size, bold: bold) > limit else { return value }
            var shortened = value
            while !shortened.isEmpty, try width(shortened + "…", size: size, bold: bold) > limit { shortened.removeLast() }
            return shortened + "…"
        }

        func draw(_ value: String, x: Float, y: Float, size: Float, bold: Bool) throws(ExportError) {
            guard let page else { return }
            try document.check("write text") {
                _ = HPDF_Page_BeginText(page)
                _ = HPDF_Page_SetFontAndSize(page, font(bold), size)
                _ = HPDF_Page_TextOut(page, x, y, value)
                _ = HPDF_Page_EndText(page)
            }
        }

        static func monthName(_ month: String) -> String {
            guard let (year, number) = Statement.parseMonth(month) else { return month }
            let names = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
                         "November", "December"]
            return "\(names[number - 1]) \(year)"
        }

        static func local(_ millis: EpochMillis, _ zone: String) -> String {
            let offset = TimeZone(identifier: zone)?.secondsFromGMT(for: Date(timeIntervalSince1970: Double(millis) / 1000)) ?? 0
            return String(ISO8601.format(millis, offsetSeconds: offset).prefix(16)).replacingOccurrences(of: "T", with: " ")
                + " " + Self.offsetText(offset)
        }

        static func offsetText(_ seconds: Int) -> String {
            let sign = seconds < 0 ? "-" : "+"
            let minutes = abs(seconds) / 60
            return String(format: "%@%02d:%02d", sign, minutes / 60, minutes % 60)
        }
    }
}
