import AutoVoltCore
import Foundation
import PropertyBased
import Testing

/// The aggregation folds a day's new entries into its stored sums instead of reading the whole
/// day again (`DayFold`). Billed figures must not depend on how the day was cut: folding in
/// parts, with the stored form in between, gives the figures of one fold of all the entries,
/// to the bit.
@Suite("aggregation fold")
struct AggregationFoldTests {
    /// A deterministic generator (SplitMix64): the property's input is a seed, so a failure
    /// names the one day that broke.
    struct Random {
        var state: UInt64
        mutating func next() -> UInt64 {
            state &+= 0x9E37_79B9_7F4A_7C15
            var z = state
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        mutating func int(_ range: ClosedRange<Int>) -> Int { range.lowerBound + Int(next() % UInt64(range.count)) }
        mutating func chance(_ percent: Int) -> Bool { int(0...99) < percent }
        mutating func double(_ range: ClosedRange<Double>) -> Double {
            range.lowerBound + Double(next() >> 11) / Double(1 << 53) * (range.upperBound - range.lowerBound)
        }
    }

    /// A day somewhere (a daylight-saving change on some of them), its entries in time order as
    /// the ledger stores them (some overlapping, some of no length, some across midnight, some
    /// not billable), and a tariff book that changes during the day (or leaves energy unpriced).
    struct Day {
        var date: CivilDate
        var zone: TimeZone
        var classroom: String
        var entries: [AggregateEntry]
        var book: TariffBook
    }

    static let zones = ["UTC", "Asia/Kolkata", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]
    static let dates = [CivilDate(year: 2026, month: 11, day: 3), CivilDate(year: 2026, month: 3, day: 29),
                        CivilDate(year: 2026, month: 3, day: 8), CivilDate(year: 2026, month: 11, day: 1),
                        CivilDate(year: 2026, month: 4, day: 5)]

    static func day(seed: Int64) -> Day {
        var random = Random(state: UInt64(bitPattern: seed))
        let which = random.int(0...(zones.count - 1))
        let zone = TimeZone(identifier: zones[which]) ?? .gmt
        let date = dates[random.int(0...(dates.count - 1))]
        var calendar = LocalCalendar(timeZone: zone)
        let dayStart = calendar.startOfDay(date)
        let dayEnd = calendar.startOfDay(CivilDate(daysSinceEpoch: date.daysSinceEpoch + 1))
        var entries: [AggregateEntry] = []
        var at = dayStart - Int64(random.int(0...120_000))
        for _ in 0..<random.int(1...400) {
            // Mostly readings every ~30 s; now and then a gap, an overlap or an instant.
            let start = random.chance(5) ? at - Int64(random.int(1...20_000)) : at + Int64(random.chance(5) ? random.int(60_000...3_600_000) : 0)
            let length = random.chance(3) ? 0 : Int64(random.int(1_000...90_000))
            entries.append(AggregateEntry(start: start, end: start + length, deltaWh: random.chance(2) ? 0 : random.double(0...25),
                                          billable: !random.chance(7), confidence: Confidence.allCases[random.int(0...2)]))
            at = max(at, start + length)
            if at > dayEnd + 60_000 { break }
        }
        entries.sort { ($0.start, $0.end) < ($1.start, $1.end) }
        var tariffs: [Tariff] = []
        for i in 0..<random.int(0...4) {
            let from = random.chance(30) ? dayStart - 86_400_000 : dayStart + Int64(random.int(-3_600_000...90_000_000))
            tariffs.append(Tariff(id: "tv-\(i)", costPerKwh: random.double(1...12), currency: "INR", effectiveFrom: from,
                                  classroom: random.chance(40) ? "CSE-301" : nil, createdAt: 1_700_000_000_000 + Int64(i), notes: nil))
        }
        return Day(date: date, zone: zone, classroom: random.chance(80) ? "CSE-301" : "EEE-102", entries: entries, book: TariffBook(tariffs))
    }

    @Test func foldingInPartsGivesTheFiguresOfOneFoldToTheBit() async {
        await propertyCheck(count: 400, input: Gen.int64(in: 0...Int64.max), Gen.int(in: 0...1000)) { seed, cutAt in
            let day = Self.day(seed: seed)
            var calendar = LocalCalendar(timeZone: day.zone)
            let whole = Aggregator.daily(date: day.date, esp32Name: "lab-1", classroom: day.classroom, entries: day.entries,
                                         tariffs: day.book, calendar: &calendar)
            let book = day.book.segments(classroom: day.classroom)
            // Cut where the ledger could have been when the day was last aggregated: after an
            // entry whose start is before the next one's (a mark's `changed_from` is strictly later).
            var cut = cutAt % (day.entries.count + 1)
            while cut > 0, cut < day.entries.count, day.entries[cut].start == day.entries[cut - 1].start { cut -= 1 }
            var first = DayFold(date: day.date, classroom: day.classroom, tariffs: day.book, book: book, calendar: &calendar)
            let firstOrdered = first.add(Array(day.entries[..<cut]), book: book)
            #expect(firstOrdered)
            guard let stored = DayFold(encoded: first.encoded, calendar: &calendar) else {
                Issue.record("stored form does not read back: \(first.encoded)")
                return
            }
            #expect(stored == first)
            var resumed = stored
            if cut > 0 {
                let continues = resumed.continues(date: day.date, tariffs: day.book, book: book, calendar: &calendar)
                #expect(continues)
            }
            let restOrdered = resumed.add(Array(day.entries[cut...]), book: book)
            #expect(restOrdered)
            let folded = resumed.figures(date: day.date, esp32Name: "lab-1", book: book)
            #expect(folded == whole, "seed \(seed), cut \(cut) of \(day.entries.count)")
        }
    }

    @Test func aFoldDoesNotContinueUnderAnotherBookOrZone() {
        let day = Self.day(seed: 42)
        var calendar = LocalCalendar(timeZone: day.zone)
        let book = day.book.segments(classroom: day.classroom)
        var fold = DayFold(date: day.date, classroom: day.classroom, tariffs: day.book, book: book, calendar: &calendar)
        let empty = fold.continues(date: day.date, tariffs: day.book, book: book, calendar: &calendar)
        #expect(!empty, "nothing folded yet")
        fold.add(day.entries, book: book)
        let same = fold.continues(date: day.date, tariffs: day.book, book: book, calendar: &calendar)
        #expect(same)
        let newer = TariffBook([Tariff(id: "tv-new", costPerKwh: 9, currency: "INR", effectiveFrom: 0, classroom: nil, createdAt: 1, notes: nil)])
        let otherBook = fold.continues(date: day.date, tariffs: newer, book: newer.segments(classroom: day.classroom), calendar: &calendar)
        #expect(!otherBook)
        var elsewhere = LocalCalendar(timeZone: TimeZone(identifier: day.zone.identifier == "Asia/Kolkata" ? "UTC" : "Asia/Kolkata") ?? .gmt)
        let otherZone = fold.continues(date: day.date, tariffs: day.book, book: book, calendar: &elsewhere)
        #expect(!otherZone)
        let otherDay = fold.continues(date: CivilDate(daysSinceEpoch: day.date.daysSinceEpoch + 1), tariffs: day.book, book: book,
                                     calendar: &calendar)
        #expect(!otherDay)
    }

    @Test func aDamagedStoredFoldIsNotRead() {
        var calendar = LocalCalendar(timeZone: .gmt)
        for text in ["", "f0;1", "f1;zz;0;0;;;0;0;0;0;0;0;0;0,0,0;;;;C", "f1;1;0;86400000;5;;1;0;0;0;0;0;0;0,0,0;;;;C"] {
            let read = DayFold(encoded: text, calendar: &calendar)
            #expect(read == nil, "\(text)")
        }
    }
}
