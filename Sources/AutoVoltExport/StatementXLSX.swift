import AutoVoltCore
import CXlsxWriter
import Foundation

/// A statement as an XLSX workbook through libxlsxwriter: sheets Statement (facts, lines,
/// total), Tariffs, Days and Tickets. Figures are numbers (kWh, Wh and money with four decimals,
/// as stored), so finance can sum them; the document's dates are the statement's own, not the
/// time of export.
public enum StatementXLSX {
    public static func render(_ statement: Statement, temporaryDirectory: URL = FileManager.default.temporaryDirectory) throws(ExportError) -> [UInt8] {
        // libxlsxwriter 1.1 writes to a file only: a private one, read back and removed.
        let file = temporaryDirectory.appendingPathComponent("autovolt-statement-\(UUID().uuidString).xlsx")
        defer { try? FileManager.default.removeItem(at: file) }
        guard let workbook = workbook_new(file.path) else { throw .xlsx(what: "create \(file.path)", message: "workbook_new returned nothing") }
        var closed = false
        defer { if !closed { _ = workbook_close(workbook) } }
        let book = Book(workbook: workbook)
        try book.properties(statement)
        try book.statementSheet(statement)
        try book.tariffSheet(statement)
        try book.daySheet(statement)
        try book.ticketSheet(statement)
        closed = true
        let status = workbook_close(workbook)
        guard status == LXW_NO_ERROR else { throw .xlsx(what: "write \(file.path)", message: String(cString: lxw_strerror(status))) }
        do {
            return Array(try Data(contentsOf: file))
        } catch {
            throw .io("XLSX: reading \(file.path) back failed: \(error.localizedDescription)")
        }
    }

    final class Book {
        let workbook: UnsafeMutablePointer<lxw_workbook>
        let bold: UnsafeMutablePointer<lxw_format>?
        let energy: UnsafeMutablePointer<lxw_format>?
        let money: UnsafeMutablePointer<lxw_format>?
        let percent: UnsafeMutablePointer<lxw_format>?
        let boldMoney: UnsafeMutablePointer<lxw_format>?
        let boldEnergy: UnsafeMutablePointer<lxw_format>?

        init(workbook: UnsafeMutablePointer<lxw_workbook>) {
            self.workbook = workbook
            func format(_ numbers: String?, bold isBold: Bool) -> UnsafeMutablePointer<lxw_format>? {
                let f = workbook_add_format(workbook)
                if let numbers { format_set_num_format(f, numbers) }
                if isBold { format_set_bold(f) }
                return f
            }
            bold = format(nil, bold: true)
            energy = format("0.000", bold: false)
            money = format("0.0000", bold: false)
            percent = format("0.0%", bold: false)
            boldMoney = format("0.0000", bold: true)
            boldEnergy = format("0.000", bold: true)
        }

        func check(_ status: lxw_error, _ what: String) throws(ExportError) {
            guard status == LXW_NO_ERROR else { throw .xlsx(what: what, message: String(cString: lxw_strerror(status))) }
        }

        func sheet(_ name: String) throws(ExportError) -> UnsafeMutablePointer<lxw_worksheet> {
            guard let sheet = workbook_add_worksheet(workbook, name) else { throw .xlsx(what: "add the sheet \(name)", message: "no sheet") }
            return sheet
        }

        func string(_ sheet: UnsafeMutablePointer<lxw_worksheet>, _ row: Int, _ column: Int, _ value: String,
                    _ format: UnsafeMutablePointer<lxw_format>? = nil) throws(ExportError) {
            try check(worksheet_write_string(sheet, lxw_row_t(row), lxw_col_t(column), value, format), "write a cell")
        }

        func number(_ sheet: UnsafeMutablePointer<lxw_worksheet>, _ row: Int, _ column: Int, _ value: Double,
                    _ format: UnsafeMutablePointer<lxw_format>?) throws(ExportError) {
            try check(worksheet_write_number(sheet, lxw_row_t(row), lxw_col_t(column), value, format), "write a cell")
        }

        func header(_ sheet: UnsafeMutablePointer<lxw_worksheet>, _ row: Int, _ titles: [String], widths: [Double]) throws(ExportError) {
            for (column, title) in titles.enumerated() { try string(sheet, row, column, title, bold) }
            for (column, width) in widths.enumerated() {
                try check(worksheet_set_column(sheet, lxw_col_t(column), lxw_col_t(column), width, nil), "size a column")
            }
        }

        static func kwh(_ units: Int64) -> Double { Double(units) / Double(FixedPoint.energyScale * 1000) }
        static func wh(_ units: Int64) -> Double { Double(units) / Double(FixedPoint.energyScale) }
        static func amount(_ units: Int64) -> Double { Double(units) / Double(FixedPoint.moneyScale) }

        func properties(_ s: Statement) throws(ExportError) {
            let title = strdup("Electricity statement \(s.id)"), subject = strdup("\(s.scope), \(s.month), version \(s.version)")
            let author = strdup("autovolt-worker"), status = strdup(s.status.rawValue)
            defer { free(title); free(subject); free(author); free(status) }
            var properties = lxw_doc_properties()
            properties.title = title
            properties.subject = subject
            properties.author = author
            properties.status = status
            // The statement's own time, so that the same statement gives the same document.
            properties.created = time_t((s.frozenAt ?? s.createdAt) / 1000)
            try check(workbook_set_properties(workbook, &properties), "set the document properties")
        }

        func statementSheet(_ s: Statement) throws(ExportError) {
            let sheet = try sheet("Statement")
            let facts: [(String, String)] = [
                ("Statement number", s.id), ("Month", s.month), ("Scope", s.scope.description), ("Version", String(s.version)),
                ("Status", s.status.rawValue), ("Frozen by", s.frozenBy ?? ""),
                ("Currency", s.currency ?? ""), ("Time zone", s.timeZone),
                ("Classrooms", s.classrooms.joined(separator: ", ")),
                ("Open review tickets", String(s.tickets.count)),
            ]
            var row = 0
            for (key, value) in facts {
                try string(sheet, row, 0, key, bold)
                try string(sheet, row, 1, value)
                row += 1
            }
            try string(sheet, row, 0, "Coverage (mean)", bold)
            try number(sheet, row, 1, s.coverage.mean, percent)
            row += 2
            try header(sheet, row, ["Device", "Classroom", "kWh", "Wh", "Cost", "Unpriced Wh", "Days", "Coverage", "Tariffs"],
                       widths: [22, 16, 12, 14, 12, 12, 6, 10, 60])
            row += 1
            for line in s.lines {
                try string(sheet, row, 0, line.esp32Name)
                try string(sheet, row, 1, line.classroom)
                try number(sheet, row, 2, Self.kwh(line.energy), energy)
                try number(sheet, row, 3, Self.wh(line.energy), energy)
                if let cost = line.cost { try number(sheet, row, 4, Self.amount(cost), money) } else { try string(sheet, row, 4, "unknown") }
                try number(sheet, row, 5, Self.wh(line.unpriced), energy)
                try number(sheet, row, 6, Double(line.days), nil)
                try number(sheet, row, 7, line.coverage, percent)
                try string(sheet, row, 8, line.segments.map(StatementCSV.tariffText).joined(separator: "; "))
                row += 1
            }
            try string(sheet, row, 0, "Total", bold)
            try number(sheet, row, 2, Self.kwh(s.energy), boldEnergy)
            try number(sheet, row, 3, Self.wh(s.energy), boldEnergy)
            if let cost = s.cost { try number(sheet, row, 4, Self.amount(cost), boldMoney) } else { try string(sheet, row, 4, "unknown", bold) }
            try number(sheet, row, 5, Self.wh(s.unpriced), boldEnergy)
        }

        func tariffSheet(_ s: Statement) throws(ExportError) {
            let sheet = try sheet("Tariffs")
            try header(sheet, 0, ["Tariff version", "Rate per kWh", "From", "To", "kWh", "Cost"], widths: [30, 12, 12, 12, 12, 12])
            for (index, segment) in s.segments.enumerated() {
                let row = index + 1
                try string(sheet, row, 0, segment.costVersionID)
                if let rate = segment.costPerKwh { try number(sheet, row, 1, rate, nil) } else { try string(sheet, row, 1, "?") }
                try string(sheet, row, 2, segment.from.description)
                try string(sheet, row, 3, segment.to.description)
                try number(sheet, row, 4, Self.kwh(segment.energy), energy)
                try number(sheet, row, 5, Self.amount(segment.cost), money)
            }
        }

        func daySheet(_ s: Statement) throws(ExportError) {
            let sheet = try sheet("Days")
            try header(sheet, 0, ["Date", "kWh", "Cost", "Devices"], widths: [12, 12, 12, 8])
            for (index, day) in s.days.enumerated() {
                let row = index + 1
                try string(sheet, row, 0, day.date.description)
                try number(sheet, row, 1, Self.kwh(day.energy), energy)
                if let cost = day.cost { try number(sheet, row, 2, Self.amount(cost), money) } else { try string(sheet, row, 2, "unknown") }
                try number(sheet, row, 3, Double(day.devices), nil)
            }
        }

        func ticketSheet(_ s: Statement) throws(ExportError) {
            let sheet = try sheet("Tickets")
            try header(sheet, 0, ["Date", "Device", "Kind", "Detail", "Ticket"], widths: [12, 22, 24, 60, 30])
            for (index, ticket) in s.tickets.enumerated() {
                for (column, value) in [ticket.date, ticket.esp32Name, ticket.kind, ticket.detail, ticket.id].enumerated() {
                    try string(sheet, index + 1, column, value)
                }
            }
        }
    }
}
