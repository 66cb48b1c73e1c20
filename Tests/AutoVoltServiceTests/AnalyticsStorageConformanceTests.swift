@testable import AutoVoltCore
import AutoVoltMongo
import AutoVoltPostgres
@testable import AutoVoltService
import AutoVoltTestSupport
import Foundation
import Testing

/// The contract of `AnalyticsStorage` (issue 21 §3): the same data, written on MongoDB
/// (dev-mongo) and on PostgreSQL (a server of the test's own) through the other stages' own
/// storages (ledger entries, events, aggregates, statuses, rejects, tickets, tariffs), gives the
/// same documents on both: summary, timeline, device-breakdown and monthly results, the
/// dashboard and a device's page. Each answer is also checked against figures worked by hand
/// (the seed is QueryTests' fixture), so "equal" never means "equally wrong".
@Suite("analytics storage conformance: MongoDB and PostgreSQL", .serialized)
struct AnalyticsStorageConformanceTests {
    static func at(_ text: String) -> EpochMillis { ISO8601.parseMillis(text) ?? 0 }
    static let seededAt = at("2026-11-03T09:00:00+05:30")

    /// One backend's database (the shared `BackendDatabase`), the other stages' storages to
    /// write it with, and the storage under test.
    final class AnalyticsDB: Sendable {
        let fixture: BackendDatabase
        let analytics: any AnalyticsStorage
        let ledger: any LedgerStorage
        let ingest: any IngestStorage
        let aggregation: any AggregationStorage

        init(_ backend: StorageBackend) throws {
            fixture = try BackendDatabase(backend, name: "analytics")
            let database = fixture.database
            analytics = database.analyticsStorage()
            ledger = database.ledgerStorage(writeConcern: .acknowledged)
            ingest = database.ingestStorage(writeConcern: .acknowledged)
            aggregation = database.aggregationStorage(writeConcern: .acknowledged)
        }

        var backend: StorageBackend { fixture.backend }
        var pool: PostgresPool? { fixture.pool }

        // MARK: Writing

        func writeDaily(_ figures: [AggregateFigures]) throws {
            let stored = try aggregation.aggregates(.daily, ids: figures.map(\.id))
            let writes = figures.map { AggregateWrite(figures: $0, replacing: stored[$0.id], keepsHistory: false) }
            let applied = try aggregation.writeAggregates(.daily, writes, now: seededAt, writeID: UUID().uuidString)
            #expect(applied.count == figures.count, "\(backend): daily aggregates written")
        }

        func writeMonthly(_ figures: [AggregateFigures]) throws {
            let applied = try aggregation.writeAggregates(.monthly, figures.map { AggregateWrite(figures: $0, replacing: nil, keepsHistory: false) },
                                                          now: seededAt, writeID: UUID().uuidString)
            #expect(applied.count == figures.count, "\(backend): monthly aggregates written")
        }

        func writeEntries(_ entries: [LedgerEntry]) throws {
            var index = 0
            while index < entries.count {
                let batch = Array(entries[index..<min(index + 1000, entries.count)])
                #expect(try ledger.insertEntries(batch, createdAt: seededAt).isEmpty, "\(backend): none was stored already")
                index += 1000
            }
        }

        func supersede(_ entry: LedgerEntry, by replacement: String) throws {
            try ledger.supersede([LedgerChange.Supersession(
                entry: StoredLedgerEntry(id: entry.id, esp32Name: entry.esp32Name, start: entry.start, end: entry.end,
                                         dateText: entry.date.description, sourceEvents: entry.sourceEvents),
                replacement: replacement)], at: seededAt)
        }

        func writeEvents(_ events: [IngestEvent]) throws {
            for result in try ingest.insertEvents(events) {
                if case .failed(let error) = result { Issue.record("\(backend): event not stored: \(error)") }
            }
        }

        /// The seed of QueryTests' fixture: aggregates, entries (one superseded, one unbillable,
        /// one across local midnight split in two), events in both switch forms (one days before
        /// its interval), and a device with entries but no aggregate yet.
        func seed() throws {
            try writeDaily([
                Seed.daily("2026-11-01", "lab-101", "CSE-301", energy: 1000, cost: 7.5),
                Seed.daily("2026-11-01", "lab-102", "CSE-301", energy: 3000, cost: 22.5, coverage: 0.5),
                Seed.daily("2026-11-01", "lab-103", "EEE-105", energy: 2000, cost: nil, unpriced: 2000),
                Seed.daily("2026-11-02", "lab-101", "CSE-301", energy: 500, cost: 3.75),
                Seed.daily("2026-10-15", "lab-101", "CSE-301", energy: 800, cost: 6),
            ])
            try writeMonthly([
                Seed.monthly("2026-11", "lab-101", "CSE-301", energy: 4500, cost: 33.75),
                Seed.monthly("2026-11", "lab-102", "CSE-301", energy: 3000, cost: 22.5),
                Seed.monthly("2026-11", "lab-103", "EEE-105", energy: 2000, cost: nil),
                Seed.monthly("2026-10", "lab-101", "CSE-301", energy: 5000, cost: 37.5),
                Seed.monthly("2026-10", "lab-103", "EEE-105", energy: 0, cost: 0),
                Seed.monthly("2026-10", "mech-210-a", "MECH-210", energy: 1000, cost: 7.5),
                Seed.monthly("2026-09", "lab-101", "CSE-301", energy: 9999, cost: 99),
            ])
            try writeEntries(Seed.entries)
            try supersede(Seed.entries[2], by: "e2")
            try writeEvents(Seed.events)
        }

        /// Presence, rejects, tickets and tariffs for the dashboard and the device page.
        func seedDashboard() throws {
            try ingest.writeStatus(StatusChange(esp32Name: "lab-101", classroom: "CSE-301", online: true, at: at("2026-11-02T08:00:00+05:30")))
            try ingest.writeStatus(StatusChange(esp32Name: "ghost-1", classroom: "LAB-X", online: false, at: at("2026-11-02T08:00:00+05:30")))
            var presence = PresenceUpdate(esp32Name: "lab-101", classroom: "CSE-301")
            presence.lastSeenAt = at("2026-11-02T11:59:00+05:30")
            presence.lastTelemetryAt = at("2026-11-02T11:59:00+05:30")
            for error in try ingest.upsertPresence([presence]) where error != nil { Issue.record("\(backend): presence: \(String(describing: error))") }
            let rejects = (0..<3).map { i in
                RejectedMessageRecord(id: "r\(i)", topic: "autovolt/devices/lab-101/telemetry", payload: "{bad \(i)", payloadBytes: 6,
                                      reason: "invalid_json", detail: "unexpected end \(i)",
                                      receivedAt: at("2026-11-01T10:0\(i):00+05:30"), esp32Name: "lab-101")
            }
            for error in try ingest.recordRejections(rejects) where error != nil { Issue.record("\(backend): reject: \(String(describing: error))") }
            try ledger.openReviewTickets([
                LedgerReviewTicket(esp32Name: "lab-101", date: "2026-10-30", kind: "implausible_power", detail: "older", createdAt: seededAt, runID: "a"),
                LedgerReviewTicket(esp32Name: "lab-101", date: "2026-11-01", kind: "implausible_power", detail: "newest", createdAt: seededAt, runID: "a"),
                LedgerReviewTicket(esp32Name: "ghost-1", date: "2026-10-31", kind: "implausible_power", detail: "ghost's", createdAt: seededAt, runID: "a"),
                LedgerReviewTicket(esp32Name: "lab-102", date: "2026-11-01", kind: "glitch", detail: "1 glitch reading(s) skipped", createdAt: seededAt,
                                   runID: "a"),
            ])
            try aggregation.insertTariff(Tariff(id: "v1", costPerKwh: 7.5, currency: "INR", effectiveFrom: at("2026-01-01T00:00:00+05:30"),
                                                classroom: nil, createdAt: at("2026-01-01T00:00:00+05:30"), notes: "campus"))
            try aggregation.insertTariff(Tariff(id: "v2", costPerKwh: 8, currency: "INR", effectiveFrom: at("2026-12-01T00:00:00+05:30"),
                                                classroom: "CSE-301", createdAt: at("2026-11-02T00:00:00+05:30"), notes: nil))
        }
    }

    /// The seeded figures, written alike on both backends.
    enum Seed {
        static func daily(_ date: String, _ device: String, _ classroom: String, energy: Double, cost: Double?, coverage: Double = 1,
                          unpriced: Double = 0, hourly: [Double] = []) -> AggregateFigures {
            AggregateFigures(kind: .daily, key: date, esp32Name: device, classroom: classroom, energyWh: energy, cost: cost,
                             currency: cost == nil ? nil : "INR",
                             day: DayDetail(costVersionIDs: cost == nil ? [] : ["v1"], coverage: coverage,
                                            confidence: [.high: 10, .medium: 2, .low: 1], entries: 13, unpricedWh: unpriced,
                                            overlapMillis: 0, hourlyWh: hourly, costSegments: [], complete: coverage >= 1))
        }

        static func monthly(_ month: String, _ device: String, _ classroom: String, energy: Double, cost: Double?) -> AggregateFigures {
            AggregateFigures(kind: .monthly, key: month, esp32Name: device, classroom: classroom, energyWh: energy, cost: cost,
                             currency: cost == nil ? nil : "INR", days: 30)
        }

        static func entry(_ id: String, _ device: String, _ classroom: String, _ start: String, _ end: String, date: String, wh: Double,
                          billable: Bool = true, confidence: Confidence = .high, startEvent: String) -> LedgerEntry {
            LedgerEntry(id: id, esp32Name: device, classroom: classroom, start: at(start), end: at(end), date: CivilDate(date) ?? CivilDate(daysSinceEpoch: 0),
                        deltaWh: wh, isResetMarker: false, billable: billable, confidence: confidence, reasons: [],
                        sourceEvents: [startEvent, "end-of-\(id)"], part: 0, parts: 1)
        }

        static let entries: [LedgerEntry] = [
            entry("e1", "lab-101", "CSE-301", "2026-11-01T10:50:00+05:30", "2026-11-01T11:10:00+05:30", date: "2026-11-01", wh: 20, startEvent: "hA"),
            entry("e2", "lab-101", "CSE-301", "2026-11-01T11:10:00+05:30", "2026-11-01T11:40:00+05:30", date: "2026-11-01", wh: 30, startEvent: "hB"),
            entry("e3", "lab-101", "CSE-301", "2026-11-01T11:10:00+05:30", "2026-11-01T11:40:00+05:30", date: "2026-11-01", wh: 99, startEvent: "hB"),
            entry("e4", "lab-101", "CSE-301", "2026-11-01T11:40:00+05:30", "2026-11-01T11:41:00+05:30", date: "2026-11-01", wh: 500, billable: false,
                  confidence: .low, startEvent: "hX"),
            entry("e5", "lab-101", "CSE-301", "2026-11-01T23:30:00+05:30", "2026-11-02T00:00:00+05:30", date: "2026-11-01", wh: 30,
                  confidence: .medium, startEvent: "hC"),
            entry("e6", "lab-101", "CSE-301", "2026-11-02T00:00:00+05:30", "2026-11-02T00:30:00+05:30", date: "2026-11-02", wh: 30,
                  confidence: .medium, startEvent: "hC"),
            entry("f1", "lab-102", "CSE-301", "2026-11-01T09:00:00+05:30", "2026-11-01T09:30:00+05:30", date: "2026-11-01", wh: 40, startEvent: "hE"),
            entry("f2", "lab-102", "CSE-301", "2026-11-01T09:30:00+05:30", "2026-11-01T10:00:00+05:30", date: "2026-11-01", wh: 10, startEvent: "nowhere"),
            entry("g1", "lab-103", "EEE-105", "2026-11-01T10:00:00+05:30", "2026-11-01T10:30:00+05:30", date: "2026-11-01", wh: 100, startEvent: "hD"),
            entry("m1", "mech-210-b", "MECH-210", "2026-11-01T08:00:00+05:30", "2026-11-01T09:00:00+05:30", date: "2026-11-01", wh: 50,
                  confidence: .medium, startEvent: "hM"),
        ]

        static func event(_ hash: String, _ device: String, _ classroom: String, _ time: String, _ state: String, powerW: Double? = nil) -> IngestEvent {
            let stateValue = (try? JSONValue.parse(state)) ?? .null
            let millis = at(time)
            return IngestEvent(reading: TelemetryReading(
                esp32Name: device, deviceTime: millis, receivedAt: millis + 1500, clock: .device, clockNote: nil,
                timestampAsSent: ISO8601.format(millis), energyWhTotal: 1000, switchState: stateValue, powerW: powerW, bootID: "b1",
                seq: 1, uptimeS: 10, fwVersion: "1.0", payloadClassroom: nil, extra: JSONObject(), eventHash: hash), classroom: classroom)
        }

        static let events: [IngestEvent] = [
            // hA lies days before its interval (found by event_hash, not by the day's window).
            event("hA", "lab-101", "CSE-301", "2026-10-29T10:50:00+05:30", "[1, 0, 1, 0]"),
            event("hB", "lab-101", "CSE-301", "2026-11-01T11:10:00+05:30", "[true, true, false, false]", powerW: 240),
            event("hC", "lab-101", "CSE-301", "2026-11-01T23:30:00+05:30", "[0, 0, 0, 1]", powerW: 350),
            event("hE", "lab-102", "CSE-301", "2026-11-01T09:00:00+05:30", #"{"relay_16": true, "relay_17": 0}"#),
            event("hD", "lab-103", "EEE-105", "2026-11-01T10:00:00+05:30", "[1, 1]"),
            event("hM", "mech-210-b", "MECH-210", "2026-11-01T08:00:00+05:30", "[1]"),
        ]
    }

    static let config: WorkerConfig? = try? WorkerConfig(values: [
        "AUTOVOLT_MONGODB_URI": "mongodb://127.0.0.1:1/unused",
        "AUTOVOLT_DEVICES": packageRoot.appendingPathComponent("config/devices.toml").path,
        "AUTOVOLT_TIMEZONE": "Asia/Kolkata",
    ], readFile: { try String(contentsOfFile: $0, encoding: .utf8) })

    /// Both backends, seeded alike.
    static func pair(dashboard: Bool = false) throws -> (config: WorkerConfig, mongo: AnalyticsDB, postgres: AnalyticsDB) {
        let config = try #require(config)
        let mongo = try AnalyticsDB(.mongo), postgres = try AnalyticsDB(.postgres)
        for db in [mongo, postgres] {
            try db.seed()
            if dashboard { try db.seedDashboard() }
        }
        return (config, mongo, postgres)
    }

    // MARK: summary, monthly

    @Test func summaryAndMonthlyAreTheSameOnBothBackends() throws {
        let (config, mongo, postgres) = try Self.pair()
        func summary(_ db: AnalyticsDB, _ classroom: String?, _ date: String, now: String? = nil) throws -> SummaryResult {
            try AnalyticsQueries.summary(storage: db.analytics, config: config,
                                         parameters: AnalyticsQueries.summaryParameters(classroom: classroom, date: date),
                                         now: now.map(Self.at))
        }
        let asks: [(String?, String, String?)] = [
            (nil, "2026-11-01", nil), ("CSE-301", "2026-11-01", nil), ("CSE-301", "2026-11", "2026-11-02T12:00:00+05:30"),
            (nil, "2026-11", "2026-11-02T12:00:00+05:30"), (nil, "2026-10", nil), ("NOPE-1", "2026-11-01", nil), (nil, "2027-02", nil),
        ]
        for ask in asks {
            let m = try summary(mongo, ask.0, ask.1, now: ask.2), p = try summary(postgres, ask.0, ask.1, now: ask.2)
            #expect(m == p, "summary \(ask)")
            #expect(AnalyticsQueries.json(m) == AnalyticsQueries.json(p), "summary \(ask): the same JSON")
        }
        // QueryTests' hand-worked figures, on PostgreSQL.
        let day = try summary(postgres, nil, "2026-11-01")
        #expect(day.energyWh == 6000 && day.cost == nil && day.currency == "INR" && day.devices == 3 && day.days == 1)
        #expect(abs(day.coverage - 2.5 / 3) < 1e-3)
        #expect(day.byClassroom?.map(\.classroom) == ["CSE-301", "EEE-105"])
        #expect(day.byClassroom?.first?.cost == 30 && day.byClassroom?.first?.coverage == 0.75)
        let month = try summary(postgres, "CSE-301", "2026-11", now: "2026-11-02T12:00:00+05:30")
        #expect(month.energyWh == 4500 && month.cost == 33.75 && month.devices == 2 && month.days == 2 && month.daysElapsed == 2)
        #expect(month.coverage == 0.625)
        let empty = try summary(postgres, "NOPE-1", "2026-11-01")
        #expect(empty.energyWh == 0 && empty.devices == 0 && empty.cost == 0 && empty.coverage == 0 && empty.currency == nil)

        func monthly(_ db: AnalyticsDB, _ classroom: String?, _ month: String) throws -> MonthlyResult {
            try AnalyticsQueries.monthly(storage: db.analytics, config: config,
                                         parameters: AnalyticsQueries.monthlyParameters(classroom: classroom, month: month))
        }
        for ask: (String?, String) in [(nil, "2026-11"), ("CSE-301", "2026-11"), ("EEE-105", "2026-11"), (nil, "2026-10"), ("CSE-301", "2027-01")] {
            let m = try monthly(mongo, ask.0, ask.1), p = try monthly(postgres, ask.0, ask.1)
            #expect(m == p, "monthly \(ask)")
            #expect(AnalyticsQueries.json(m) == AnalyticsQueries.json(p), "monthly \(ask): the same JSON")
        }
        let result = try monthly(postgres, nil, "2026-11")
        #expect(result.classrooms.map(\.classroom) == ["CSE-301", "EEE-105", "MECH-210"])
        let cse = result.classrooms[0]
        #expect(cse.current.energyWh == 7500 && cse.previous.energyWh == 5000 && cse.current.devices == 2)
        #expect(cse.change.energyPercent == 50 && cse.change.cost == 18.75 && cse.change.costPercent == 50)
        #expect(result.classrooms[1].change.energyPercent == nil && result.classrooms[1].current.cost == nil)
        #expect(result.classrooms[2].current.energyWh == 0 && result.classrooms[2].change.energyPercent == -100 && result.classrooms[2].change.cost == -7.5)
        #expect(result.total.current.energyWh == 9500 && result.total.previous.energyWh == 6000 && result.total.current.devices == 3)
        #expect(result.total.previous.devices == 3 && result.total.change.energyPercent == 58.33 && result.total.current.cost == nil)
    }

    // MARK: timeline

    @Test func timelineBucketsAreTheSameAcrossLocalMidnight() throws {
        let (config, mongo, postgres) = try Self.pair()
        func timeline(_ db: AnalyticsDB, _ classroom: String?, _ start: String, _ end: String, _ bucket: String?) throws -> TimelineResult {
            try AnalyticsQueries.timeline(storage: db.analytics, config: config, parameters: AnalyticsQueries.timelineParameters(
                classroom: classroom, start: start, end: end, bucket: bucket, timeZone: config.timeZone))
        }
        let asks: [(String?, String, String, String?)] = [
            (nil, "2026-11-01T10:00:00+05:30", "2026-11-01T12:00:00+05:30", nil),
            ("CSE-301", "2026-11-01T10:00:00+05:30", "2026-11-01T12:00:00+05:30", nil),
            ("CSE-301", "2026-11-01T23:00:00+05:30", "2026-11-02T01:00:00+05:30", nil),
            (nil, "2026-11-01T10:30:00+05:30", "2026-11-02T00:15:00+05:30", "hour"),
            (nil, "2026-11-01", "2026-11-02", "day"),
            (nil, "2026-11-01T11:00:00+05:30", "2026-11-02", "day"),
            ("CSE-301", "2026-11-01T23:45:00+05:30", "2026-11-02T00:15:00+05:30", "day"),
            (nil, "2026-10-30", "2026-11-05", nil),
        ]
        func all(_ db: AnalyticsDB) throws -> [TimelineResult] { try asks.map { try timeline(db, $0.0, $0.1, $0.2, $0.3) } }
        let ledgerOnly = try all(mongo)
        #expect(try all(postgres) == ledgerOnly, "the ledger answers alike")
        #expect(ledgerOnly[0].buckets.map(\.energyWh) == [110, 40])
        #expect(ledgerOnly[2].buckets.map(\.label) == ["2026-11-01T23:00+05:30", "2026-11-02T00:00+05:30"])
        #expect(ledgerOnly[2].buckets.map(\.energyWh) == [30, 30], "the split entry lands on each side of midnight")
        #expect(ledgerOnly[4].buckets.map(\.energyWh) == [280, 30])
        #expect(ledgerOnly[5].buckets.map(\.energyWh) == [70, 30])
        #expect(ledgerOnly[6].buckets.map(\.energyWh) == [15, 15], "partial days either side of midnight")
        #expect(ledgerOnly[7].energyWh == 310 && ledgerOnly[7].buckets.count == 7)

        // The aggregates' hourly_wh (what the ledger gives, hour by hour) answer alike ...
        func hours(_ values: [Int: Double]) -> [Double] { (0..<24).map { values[$0] ?? 0 } }
        let hourly = [
            Seed.daily("2026-11-01", "lab-101", "CSE-301", energy: 1000, cost: 7.5, hourly: hours([10: 10, 11: 40, 23: 30])),
            Seed.daily("2026-11-01", "lab-102", "CSE-301", energy: 3000, cost: 22.5, coverage: 0.5, hourly: hours([9: 50])),
            Seed.daily("2026-11-01", "lab-103", "EEE-105", energy: 2000, cost: nil, unpriced: 2000, hourly: hours([10: 100])),
            Seed.daily("2026-11-02", "lab-101", "CSE-301", energy: 500, cost: 3.75, hourly: hours([0: 30])),
        ]
        for db in [mongo, postgres] { try db.writeDaily(hourly) }
        #expect(try all(mongo) == ledgerOnly)
        #expect(try all(postgres) == ledgerOnly)
        // ... a changed hour shows on both ...
        var changed = hourly
        changed[0] = Seed.daily("2026-11-01", "lab-101", "CSE-301", energy: 2000, cost: 7.5, hourly: hours([10: 1010, 11: 40, 23: 30]))
        for db in [mongo, postgres] { try db.writeDaily([changed[0]]) }
        let shown = try timeline(postgres, nil, asks[0].1, asks[0].2, nil)
        #expect(shown.buckets.map(\.energyWh) == [1110, 40])
        #expect(try timeline(mongo, nil, asks[0].1, asks[0].2, nil) == shown)
        #expect(try all(mongo) == all(postgres))
        // ... until the ledger marks the device-day dirty; and hours that do not fit the day are not used.
        for db in [mongo, postgres] {
            try db.ledger.markDirtyDays([LedgerDirtyDay(esp32Name: "lab-101", date: "2026-11-01", classroom: "CSE-301")], at: Self.seededAt)
            try db.writeDaily([Seed.daily("2026-11-01", "lab-102", "CSE-301", energy: 3000, cost: 22.5, coverage: 0.5, hourly: [1, 2, 3])])
        }
        #expect(try all(mongo) == ledgerOnly)
        #expect(try all(postgres) == ledgerOnly)
    }

    // MARK: device-breakdown

    @Test func deviceBreakdownIsTheSameOnBothBackends() throws {
        let (config, mongo, postgres) = try Self.pair()
        func breakdown(_ db: AnalyticsDB, _ classroom: String?, _ date: String) throws -> DeviceBreakdownResult {
            try AnalyticsQueries.deviceBreakdown(storage: db.analytics, config: config,
                                                 parameters: AnalyticsQueries.deviceBreakdownParameters(classroom: classroom, date: date))
        }
        for ask: (String?, String) in [(nil, "2026-11-01"), ("CSE-301", "2026-11-01"), ("MECH-210", "2026-11-01"), (nil, "2026-11-02"), (nil, "2026-12-01")] {
            let m = try breakdown(mongo, ask.0, ask.1), p = try breakdown(postgres, ask.0, ask.1)
            #expect(m == p, "device-breakdown \(ask)")
            #expect(AnalyticsQueries.json(m) == AnalyticsQueries.json(p), "device-breakdown \(ask): the same JSON")
        }
        let result = try breakdown(postgres, nil, "2026-11-01")
        #expect(result.devices.map(\.esp32Name) == ["lab-101", "lab-102", "lab-103", "mech-210-b"])
        #expect(result.cost == nil && result.energyWh == 6050)
        let lab101 = result.devices[0]
        #expect(lab101.confidence == ConfidenceCounts(high: 10, medium: 2, low: 1) && lab101.entries == 13 && lab101.complete == true)
        #expect(lab101.ledgerWh == 80 && lab101.unattributed.energyWh == 0)
        let byName = Dictionary(uniqueKeysWithValues: lab101.switches.map { ($0.name, $0) })
        #expect(abs((byName["lights-front"]?.energyWh ?? 0) - (20.0 * 120 / 420 + 15)) < 1e-3, "hA found by its hash, days before")
        #expect(byName["projector"]?.energyWh == 30)
        // Unattributed energy: f2's start event is nowhere; the object form of lab-102's switches.
        let lab102 = result.devices[1]
        #expect(lab102.switches.map(\.energyWh) == [40, 0])
        #expect(lab102.unattributed.energyWh == 10 && lab102.unattributed.share == 0.2)
        // No aggregate yet: the ledger's figures and confidence counts.
        let mech = result.devices[3]
        #expect(mech.source == "ledger" && mech.energyWh == 50 && mech.cost == nil && mech.classroom == "MECH-210")
        #expect(mech.confidence == ConfidenceCounts(high: 0, medium: 1, low: 0) && mech.entries == 1 && mech.unattributed.share == 1)
        #expect(try breakdown(postgres, "CSE-301", "2026-11-01").cost == 30)
    }

    /// device-breakdown reads entries and events in batches (2,000 a batch; 20 devices at a
    /// time): a device-day of 4,500 entries adds up alike on both backends.
    @Test func manyEntriesAreReadInBatchesAlike() throws {
        let (config, mongo, postgres) = try Self.pair()
        let dayStart = Self.at("2026-11-03T00:00:00+05:30")
        let date = try #require(CivilDate("2026-11-03"))
        let entries: [LedgerEntry] = (0..<4500).map { (i: Int) -> LedgerEntry in
            let start: EpochMillis = dayStart + Int64(i) * 19_000
            let energy: Double = 0.5 + Double(i % 7) * 0.125
            let confidence: Confidence = i % 3 == 0 ? .medium : .high
            return LedgerEntry(id: "many-\(i)", esp32Name: "lab-103", classroom: "EEE-105", start: start, end: start + 19_000, date: date,
                               deltaWh: energy, isResetMarker: false, billable: i % 10 != 0, confidence: confidence, reasons: [],
                               sourceEvents: ["many-h\(i % 50)", "many-h\(i % 50 + 1)"], part: 0, parts: 1)
        }
        let events = (0..<50).map { i in
            Seed.event("many-h\(i)", "lab-103", "EEE-105", ISO8601.format(dayStart + Int64(i) * 60_000), i % 2 == 0 ? "[1, 0]" : "[0, 1]")
        }
        for db in [mongo, postgres] {
            try db.writeEntries(entries)
            try db.writeEvents(events)
        }
        let billable = entries.filter { $0.billable }
        let expectedWh = billable.reduce(0.0) { $0 + $1.deltaWh }
        var batches: [Int] = []
        try postgres.analytics.forEachLiveBillableInterval(LiveIntervalQuery(
            dates: .list(["2026-11-03"]), startBefore: dayStart + 86_400_000, endFrom: dayStart, classroom: nil)) { batches.append($0.count) }
        #expect(batches.count == 3 && batches.allSatisfy { $0 <= 2000 } && batches.reduce(0, +) == billable.count)
        let m = try AnalyticsQueries.deviceBreakdown(storage: mongo.analytics, config: config,
                                                     parameters: AnalyticsQueries.deviceBreakdownParameters(classroom: nil, date: "2026-11-03"))
        let p = try AnalyticsQueries.deviceBreakdown(storage: postgres.analytics, config: config,
                                                     parameters: AnalyticsQueries.deviceBreakdownParameters(classroom: nil, date: "2026-11-03"))
        #expect(m == p)
        #expect(abs((p.devices.first?.ledgerWh ?? 0) - expectedWh) < 1e-3 && p.devices.first?.unattributed.energyWh == 0)
        #expect(p.devices.first?.confidence == ConfidenceCounts(high: 3000, medium: 1500, low: 0))
        for (start, end, bucket) in [("2026-11-03", "2026-11-03", "hour"), ("2026-11-02T22:00:00+05:30", "2026-11-03T03:30:00+05:30", "hour"),
                                     ("2026-11-01", "2026-11-04", "day")] {
            let parameters = try AnalyticsQueries.timelineParameters(classroom: "EEE-105", start: start, end: end, bucket: bucket,
                                                                     timeZone: config.timeZone)
            let tm = try AnalyticsQueries.timeline(storage: mongo.analytics, config: config, parameters: parameters)
            let tp = try AnalyticsQueries.timeline(storage: postgres.analytics, config: config, parameters: parameters)
            #expect(tm == tp, "\(start)...\(end) by \(bucket)")
        }
    }

    // MARK: dashboard, device page

    @Test func dashboardAndDevicePageAreTheSameOnBothBackends() throws {
        let (config, mongo, postgres) = try Self.pair(dashboard: true)
        // Yesterday so far comes from the aggregates' hourly_wh.
        let hourly = (0..<24).map { Double($0) * 10 }
        for db in [mongo, postgres] {
            try db.writeDaily([Seed.daily("2026-11-01", "lab-101", "CSE-301", energy: 2760, cost: 7.5, hourly: hourly),
                               Seed.daily("2026-11-01", "lab-103", "EEE-105", energy: 2000, cost: nil, unpriced: 2000, hourly: [1, 2, 3])])
        }
        let now = Self.at("2026-11-02T12:30:00+05:30")
        let date = try #require(CivilDate("2026-11-02"))
        let m = try DashboardData.load(storage: mongo.analytics, config: config, registry: config.devices, date: date, now: now)
        let p = try DashboardData.load(storage: postgres.analytics, config: config, registry: config.devices, date: date, now: now)
        #expect(m.day == p.day && m.month == p.month && m.isToday && p.isToday)
        #expect(m.hourly == p.hourly && m.devices == p.devices && m.presence == p.presence)
        #expect(m.registered == p.registered && m.classroomOf == p.classroomOf && m.tickets == p.tickets)
        #expect(m.alarms.isEmpty && p.alarms.isEmpty, "no alarms were raised (and PostgreSQL has none yet)")
        #expect(AnalyticsQueries.json(m.tariffs) == AnalyticsQueries.json(p.tariffs) && p.tariffs.map(\.id) == ["v1", "v2"])
        // 0 + 10 + ... + 110 through 11:00, and half of 12:00's 120 (yesterday's 12:30), plus lab-103's 1 + 2 + 3.
        let expected = (Double((0..<12).reduce(0, +)) * 10 + 60 + 6) / 1000
        #expect(abs((m.yesterdaySoFarKwh ?? 0) - expected) < 1e-9 && abs((p.yesterdaySoFarKwh ?? 0) - expected) < 1e-9)
        #expect(p.devices.map(\.esp32Name) == ["lab-101"] && p.day.energyWh == 500)
        #expect(p.presence["lab-101"]?.online == true && p.presence["lab-101"]?.sessions == 1)
        #expect(p.presence["lab-101"]?.lastTelemetryAt == Self.at("2026-11-02T11:59:00+05:30"))
        #expect(p.presence["ghost-1"]?.online == false && p.classroomOf["ghost-1"] == "LAB-X")
        #expect(p.tickets.total == 4 && p.tickets.byClassroom == ["CSE-301": 3, "LAB-X": 1])
        let power = try #require(p.tickets.groups.first { $0.kind == "implausible_power" })
        #expect(power.count == 3 && power.oldestDate == "2026-10-30" && power.boards.map(\.esp32Name) == ["lab-101", "ghost-1"])
        #expect(power.boards.first?.detail == "newest" && power.boards.first?.newestDate == "2026-11-01" && power.boards.first?.count == 2)

        // A day that is not today: no yesterday.
        let past = try DashboardData.load(storage: postgres.analytics, config: config, registry: config.devices,
                                          date: try #require(CivilDate("2026-11-01")), now: now)
        #expect(past.yesterdaySoFarKwh == nil && !past.isToday)
        #expect(past.hourly["CSE-301"] == hourly && past.hourly["EEE-105"] == [1, 2, 3])

        func page(_ db: AnalyticsDB) throws -> [String] {
            let page = try DevicePageData.load(storage: db.analytics, config: config, registry: config.devices, esp32Name: "lab-101",
                                               date: try #require(CivilDate("2026-11-01")))
            return [page.classroom, "\(String(describing: page.presence))", "\(page.entriesTruncated)"]
                + page.readings.map { "\($0.deviceTime) \($0.receivedAt) \($0.energyWh) \(String(describing: $0.powerW)) \($0.clock)" }
                + page.entries.map { "\($0.start) \($0.end) \($0.deltaWh) \($0.confidence) \($0.reasons) \($0.billable)" }
                + page.rejects.map { "\($0.receivedAt) \($0.reason) \($0.detail)" }
                + page.alarms.map(\.id)
        }
        let pm = try page(mongo), pp = try page(postgres)
        #expect(pm == pp)
        let shown = try DevicePageData.load(storage: postgres.analytics, config: config, registry: config.devices, esp32Name: "lab-101",
                                            date: try #require(CivilDate("2026-11-01")))
        #expect(shown.readings.map(\.deviceTime) == [Self.at("2026-11-01T23:30:00+05:30"), Self.at("2026-11-01T11:10:00+05:30"),
                                                     Self.at("2026-10-29T10:50:00+05:30")])
        #expect(shown.readings.first?.powerW == 350 && shown.readings.first?.clock == "device")
        #expect(shown.entries.map(\.deltaWh) == [20, 30, 99, 500, 30], "superseded entries too, by start then id")
        #expect(shown.entries[3].confidence == "low" && !shown.entries[3].billable)
        #expect(shown.rejects.map(\.detail) == ["unexpected end 2", "unexpected end 1", "unexpected end 0"])
        #expect(shown.presence?.online == true)
        let unknown = try DevicePageData.load(storage: postgres.analytics, config: config, registry: config.devices, esp32Name: "nobody-1",
                                              date: try #require(CivilDate("2026-11-01")))
        #expect(unknown.presence == nil && unknown.readings.isEmpty && unknown.entries.isEmpty && unknown.classroom == DeviceInfo.unassignedClassroom)
    }

    // MARK: deadline (PostgreSQL)

    /// An HTTP request's deadline: each statement's `statement_timeout` is the time left, so a
    /// read held up (here by a lock) is stopped by the server at the deadline, and none is sent
    /// once it has passed; both are SQLSTATE 57014. Without a deadline nothing is limited.
    @Test func aDeadlineStopsPostgreSQLReads() throws {
        let db = try AnalyticsDB(.postgres)
        try db.seed()
        let pool = try #require(db.pool)
        let first = try #require(CivilDate("2026-11-01"))
        let passed = PostgresAnalyticsStorage(pool: pool, deadline: .now - .seconds(1))
        #expect(throws: PostgresError.self) { _ = try passed.dailyTotals(from: first, to: first, classroom: nil) }
        do {
            _ = try passed.tariffs()
            Issue.record("a passed deadline read nothing")
        } catch {
            #expect(PostgresAnalyticsStorage.isDeadlineExceeded(error))
        }

        let holder = try PostgresConnection(url: db.fixture.url, applicationName: "lock-holder")
        try holder.execute("BEGIN")
        try holder.execute("LOCK TABLE daily_aggregates IN ACCESS EXCLUSIVE MODE")
        let began = ContinuousClock.now
        let soon = PostgresAnalyticsStorage(pool: pool, deadline: .now + .milliseconds(400))
        do {
            _ = try soon.dailyTotals(from: first, to: first, classroom: nil)
            Issue.record("a read behind a lock returned before the lock was released")
        } catch {
            #expect(PostgresAnalyticsStorage.isDeadlineExceeded(error), "\(error)")
        }
        let waited = ContinuousClock.now - began
        #expect(waited >= .milliseconds(300) && waited < .seconds(5), "stopped at the deadline, not later: \(waited)")
        try holder.execute("ROLLBACK")
        holder.close()

        // The pool's connection came back usable, and an ample deadline reads as without one.
        let ample = PostgresAnalyticsStorage(pool: pool, deadline: .now + .seconds(30))
        #expect(try ample.dailyTotals(from: first, to: first, classroom: nil) == db.analytics.dailyTotals(from: first, to: first, classroom: nil))
        var intervals = 0
        try ample.forEachLiveBillableInterval(LiveIntervalQuery(dates: .range("2026-11-01", "2026-11-02"), startBefore: Self.at("2027-01-01T00:00:00Z"),
                                                                endFrom: 0, classroom: nil)) { intervals += $0.count }
        #expect(intervals == 8, "e1, e2, e5, e6, f1, f2, g1, m1: not the superseded e3 nor the unbillable e4")
    }
}
