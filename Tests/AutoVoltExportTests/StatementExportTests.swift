import AutoVoltCore
import Foundation
import Testing
@testable import AutoVoltExport

/// The PDF read back with poppler's `pdftotext`, the XLSX with openpyxl (Debian's python3), and
/// both made twice, a clock second apart, to the same bytes.
@Suite("exports: PDF (libharu) and XLSX (libxlsxwriter)")
struct StatementExportTests {
    static func sample(status: StatementStatus = .frozen, devices: Int = 3) -> Statement {
        var builder = StatementBuilder(month: "2026-11")
        for day in 1...3 {
            for d in 0..<devices {
                let energy = 1000.0 + Double(d) * 123.4567 + Double(day)
                builder.add(StatementDay(
                    aggregateID: "2026-11-0\(day)|esp-\(d)", version: 1, date: CivilDate(year: 2026, month: 11, day: day),
                    esp32Name: "esp-\(d)", classroom: d % 2 == 0 ? "CSE-301" : "EEE-101, \"annex\"", energyWh: energy,
                    cost: energy / 1000 * 7.5, currency: "INR", coverage: 0.98, confidence: [.high: 2880],
                    segments: [CostSegment(costVersionID: "v-base", costPerKwh: 7.5, energyWh: energy, cost: energy / 1000 * 7.5)]))
            }
        }
        var statement = builder.finish(id: "2026-11.campus.v1", scope: .campus, classrooms: [], version: 1, timeZone: "Asia/Kolkata",
                                       createdAt: 1_764_547_200_000,
                                       tickets: [.init(id: "t1", esp32Name: "esp-1", date: "2026-11-02", kind: "counter_reset", detail: "reset")])
        statement.status = status
        if status == .frozen {
            statement.frozenAt = 1_764_550_800_000
            statement.frozenBy = "finance"
        }
        return statement
    }

    static func run(_ executable: String, _ arguments: [String]) throws -> (status: Int32, output: String) {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let out = Pipe()
        process.standardOutput = out
        process.standardError = out
        try process.run()
        let data = out.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    static func temporaryFile(_ suffix: String, _ bytes: [UInt8]) throws -> URL {
        let url = FileManager.default.temporaryDirectory.appendingPathComponent("statement-test-\(UUID().uuidString).\(suffix)")
        try Data(bytes).write(to: url)
        return url
    }

    /// Waits for the wall clock to tick into the next second (a signal, not a guess): a library
    /// that stamped the time into its output would then write other bytes.
    static func nextSecond() {
        let now = Int(Date().timeIntervalSince1970)
        while Int(Date().timeIntervalSince1970) == now { usleep(10_000) }
    }

    @Test func pdfShowsTheStatementWithTheRupeeSignAndIsTheSameEveryTime() throws {
        let statement = Self.sample()
        let first = try StatementPDF.render(statement)
        Self.nextSecond()
        let second = try StatementPDF.render(statement)
        #expect(first == second, "the same statement must give the same PDF bytes")
        #expect(first.starts(with: Array("%PDF-".utf8)))
        let file = try Self.temporaryFile("pdf", first)
        defer { try? FileManager.default.removeItem(at: file) }
        let fonts = try Self.run("/usr/bin/pdffonts", [file.path])
        #expect(fonts.output.contains("DejaVuSans"), "\(fonts.output)")
        let text = try Self.run("/usr/bin/pdftotext", ["-layout", file.path, "-"])
        #expect(text.status == 0, "\(text.output)")
        for expected in ["2026-11.campus.v1", "November 2026", "FROZEN", "finance", "Version", "Campus",
                         "\(FixedPoint.kwh(statement.energy)) kWh", "₹\(FixedPoint.moneyText(statement.cost ?? -1, decimals: 2))",
                         "esp-0", "esp-2", "v-base", "2026-11-03", "counter_reset"] {
            #expect(text.output.contains(expected), "missing \(expected) in:\n\(text.output)")
        }
    }

    @Test func aDraftSaysSoAndManyLinesGoOnManyPages() throws {
        let statement = Self.sample(status: .draft, devices: 150)
        let bytes = try StatementPDF.render(statement)
        let file = try Self.temporaryFile("pdf", bytes)
        defer { try? FileManager.default.removeItem(at: file) }
        let text = try Self.run("/usr/bin/pdftotext", ["-layout", file.path, "-"])
        #expect(text.output.contains("DRAFT"))
        #expect(text.output.contains("esp-149"))
        let pages = text.output.split(separator: "\u{0C}").count
        #expect(pages >= 4, "150 lines and 3 days should need several pages, got \(pages)")
        #expect(text.output.contains("page 4"))
    }

    @Test func aMissingFontIsAClearError() {
        #expect(throws: ExportError.self) { try StatementPDF.render(Self.sample(), font: "/nonexistent/DejaVuSans.ttf") }
        do {
            _ = try StatementPDF.render(Self.sample(), font: "/nonexistent/DejaVuSans.ttf")
        } catch {
            #expect(error.description.contains("fonts-dejavu-core"))
        }
    }

    @Test func xlsxReadsBackWithTheTotalsAndIsTheSameEveryTime() throws {
        let statement = Self.sample()
        let first = try StatementXLSX.render(statement)
        Self.nextSecond()
        let second = try StatementXLSX.render(statement)
        #expect(first == second, "the same statement must give the same XLSX bytes")
        let file = try Self.temporaryFile("xlsx", first)
        defer { try? FileManager.default.removeItem(at: file) }
        let script = """
        import json, sys, openpyxl
        wb = openpyxl.load_workbook(sys.argv[1])
        ws = wb["Statement"]
        rows = [[c.value for c in r] for r in ws.iter_rows()]
        total = next(r for r in rows if r[0] == "Total")
        lines = [r for r in rows if r[0] and str(r[0]).startswith("esp-")]
        print(json.dumps({"sheets": wb.sheetnames, "number": rows[0][1], "total_kwh": total[2], "total_wh": total[3],
                          "total_cost": total[4], "lines": len(lines), "sum_cost": round(sum(r[4] for r in lines), 4),
                          "days": wb["Days"].max_row - 1, "tickets": wb["Tickets"].max_row - 1, "title": wb.properties.title}))
        """
        let result = try Self.run("/usr/bin/python3", ["-c", script, file.path])
        #expect(result.status == 0, "\(result.output)")
        let json = try #require(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any], "\(result.output)")
        #expect(json["sheets"] as? [String] == ["Statement", "Tariffs", "Days", "Tickets"])
        #expect(json["number"] as? String == statement.id)
        #expect(json["total_wh"] as? Double == Double(statement.energy) / 1000)
        #expect(json["total_cost"] as? Double == Double(statement.cost ?? -1) / 10_000)
        #expect(json["sum_cost"] as? Double == Double(statement.cost ?? -1) / 10_000)
        #expect(json["lines"] as? Int == 3)
        #expect(json["days"] as? Int == 3)
        #expect(json["tickets"] as? Int == 1)
        #expect(json["title"] as? String == "Electricity statement 2026-11.campus.v1")
    }
}
