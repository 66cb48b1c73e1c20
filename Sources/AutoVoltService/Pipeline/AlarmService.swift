import AutoVoltCore
import AutoVoltMongo
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import Metrics
import Synchronization

/// Alarms in the running worker. The drain tells it what each batch stored (`observe`, cheap:
/// the evaluation is in memory); its own thread (`run`) stores the raises and clears, checks
/// presence for `offline` on a timer, and reads back the active alarms so the book agrees with
/// the database (a restart, a second worker in the share group). Ingestion never waits for it.
///
/// One piece of logic for every backend: it reads and writes through an `AlarmStorage`
/// (MongoDB or PostgreSQL), made by `makeStorage` once the write concern is known.
///
/// `@unchecked Sendable`: every mutable property (the book, the registry, the pending changes,
/// the gauges, `stopping`) is read and written only with `lock` held; the rest is immutable or
/// Sendable (the storage factory, Logger, Wakeup).
final class AlarmService: @unchecked Sendable {
    let makeStorage: @Sendable (WriteConcern) -> any AlarmStorage
    let logger: Logger
    private let lock = NSLock()
    private var book: AlarmBook
    private var registry: DeviceRegistry
    /// Raises and clears the book decided, not yet stored.
    private var pending: [AlarmBook.Change] = []
    private let wakeup = Wakeup()
    private var stopping = false
    private let webhook: AlarmWebhook?
    private var gauges: [String: Gauge] = [:]
    private var gaugeValues: [String: Int] = [:]
    /// The timer's evaluations completed so far and the clock of the last one: what a test
    /// waits for to know the loop has judged a moment (e.g. a device silent past a duration).
    private let evaluations = Mutex<(count: Int, lastAt: EpochMillis?)>((0, nil))

    /// `storage`: the alarms' storage with the write concern resolved at the first contact
    /// (MongoDB's; PostgreSQL's storage ignores it).
    init(config: WorkerConfig, storage: @escaping @Sendable (WriteConcern) -> any AlarmStorage, logger: Logger, startedAt: EpochMillis) {
        makeStorage = storage
        self.logger = logger
        book = AlarmBook(rules: config.alarmRules.rules, calendar: LocalCalendar(timeZone: config.timeZone), startedAt: startedAt)
        registry = config.devices
        book.schedules = config.devices.schedules
        webhook = config.alarmWebhookURL.map { AlarmWebhook(url: $0, logger: logger) }
        for rule in config.alarmRules.rules { setGauge(rule: rule.name, severity: rule.severity.rawValue, 0) }
    }

    /// On MongoDB.
    convenience init(config: WorkerConfig, client: MongoClient, logger: Logger, startedAt: EpochMillis) {
        self.init(config: config, storage: { MongoAlarmStorage(client: client, writeConcern: $0) }, logger: logger, startedAt: startedAt)
    }

    // MARK: Fed by the drain

    func observe(readings: [TelemetryReading], rejects: [(esp32Name: String, at: EpochMillis)]) {
        let changes: [AlarmBook.Change] = lock.withLock {
            guard book.hasRules else { return [] }
            var changes: [AlarmBook.Change] = []
            for reading in readings {
                changes += book.observe(AlarmBook.Reading(reading), device: registry.resolve(reading.esp32Name))
            }
            for reject in rejects {
                changes += book.observeReject(device: registry.resolve(reject.esp32Name), at: reject.at)
            }
            pending += changes
            return changes
        }
        if !changes.isEmpty { wakeup.signal() }
    }

    /// SIGHUP: the registry (and the rule file) in force from now on. A rule file that does not
    /// parse keeps the rules in force, with one log line naming the rule and field.
    func reload(registry newRegistry: DeviceRegistry, rulesPath: String?) {
        var rules: [AlarmRule]?
        if let rulesPath, FileManager.default.fileExists(atPath: rulesPath) {
            do {
                rules = try AlarmRuleSet.parse(toml: String(contentsOfFile: rulesPath, encoding: .utf8)).rules
            } catch let error as AlarmRuleSet.ParseError {
                logger.error("alarm rules not reloaded; keeping the ones in force", metadata: ["path": "\(rulesPath)", "error": "\(error.message)"])
            } catch {
                logger.error("alarm rules not reloaded; keeping the ones in force", metadata: ["path": "\(rulesPath)", "error": "\(error.localizedDescription)"])
            }
        } else if let rulesPath {
            // A file gone for a moment (a deploy that replaces it) must not clear every alarm:
            // rules are removed by emptying the file.
            logger.error("alarm rules not reloaded; keeping the ones in force", metadata: ["path": "\(rulesPath)", "error": "the file does not exist"])
        }
        lock.withLock {
            registry = newRegistry
            book.schedules = newRegistry.schedules
            if let rules {
                pending += book.replaceRules(rules, registry: newRegistry, now: SystemClock.nowMillis())
                for rule in rules { setGauge(rule: rule.name, severity: rule.severity.rawValue, gaugeValues[Self.gaugeKey(rule.name, rule.severity.rawValue)] ?? 0) }
            }
        }
        if let rules, let rulesPath { logger.notice("alarm rules reloaded", metadata: ["path": "\(rulesPath)", "rules": "\(rules.count)"]) }
        wakeup.signal()
    }

    // MARK: Its own thread

    func requestStop() {
        lock.withLock { stopping = true }
        wakeup.signal()
        webhook?.stop()
    }

    private var isStopping: Bool { lock.withLock { stopping } }

    /// How many timer evaluations (`tick`: presence, reject windows, the active alarms read
    /// back) have completed, and the clock the last one judged at. Read-only.
    var completedEvaluations: (count: Int, lastAt: EpochMillis?) { evaluations.withLock { $0 } }

    /// Until `requestStop`: stores changes as they come, and every tick checks presence, lets
    /// reject windows pass, and reads back the active alarms. `beat` is called each round.
    func run(schemaReady: () -> Bool, writeConcern: () throws -> WriteConcern, beat: () -> Void) {
        var store: AlarmStore?
        var synced = false
        var nextTick: EpochMillis = 0
        var nextExpiry: EpochMillis = 0
        var backoff = 0.5
        while !isStopping {
            beat()
            // Without rules it still syncs once: alarms of rules removed while no worker ran are cleared.
            guard schemaReady(), lock.withLock({ book.hasRules || !pending.isEmpty }) || !synced else {
                wakeup.wait(seconds: 1)
                continue
            }
            do {
                let active: AlarmStore
                if let store { active = store } else {
                    active = AlarmStore(storage: makeStorage(try writeConcern()))
                    store = active
                }
                if !synced {
                    try syncActive(active)
                    synced = true
                }
                try storePending(active)
                let now = SystemClock.nowMillis()
                if now >= nextTick {
                    try tick(active, now: now)
                    nextTick = now + tickInterval
                }
                if now >= nextExpiry {
                    // The stream's log keeps 30 days (MongoDB's TTL index needs no call).
                    let expired = try active.storage.expireEvents(before: now - AlarmStore.eventRetentionMillis)
                    if expired > 0 { logger.debug("alarm events expired", metadata: ["deleted": "\(expired)"]) }
                    nextExpiry = now + 3_600_000
                }
                backoff = 0.5
                wakeup.wait(seconds: min(1, Double(tickInterval) / 1000))
            } catch {
                logger.warning("alarms: cannot reach the database; retrying", metadata: ["error": "\(error)", "retry_in_s": "\(backoff)"])
                wakeup.wait(seconds: backoff)
                backoff = min(backoff * 2, 15)
            }
        }
    }

    /// Often enough that an offline alarm raises within a few seconds of its duration.
    private var tickInterval: EpochMillis {
        let shortest = lock.withLock { book.shortestOfflineDuration } ?? 60_000
        return min(15_000, max(1000, shortest / 4))
    }

    private func storePending(_ store: AlarmStore) throws {
        while true {
            guard let change = lock.withLock({ pending.isEmpty ? nil : pending.removeFirst() }) else { return }
            do {
                try apply(change, store)
            } catch {
                lock.withLock { pending.insert(change, at: 0) }
                throw error
            }
        }
    }

    private func apply(_ change: AlarmBook.Change, _ store: AlarmStore) throws {
        guard let record = change.kind == .raise ? try store.raise(change) : try store.clear(change) else {
            // Raised before a restart or by another worker; or cleared by another worker.
            logger.debug(change.kind == .raise ? "alarm active already" : "alarm cleared already",
                         metadata: ["rule": "\(change.rule.name)", "esp32_name": "\(change.esp32Name)"])
            return
        }
        announce(try store.publish(alarmID: record.id), value: change.value)
    }

    /// The log line and the webhook call of each event stored (by this worker: another one's
    /// events are its own to announce).
    func announce(_ published: [PublishedAlarmEvent], value: Double? = nil) {
        for event in published {
            let alarm = event.alarm
            var metadata: Logger.Metadata = [
                "rule": "\(alarm.rule)", "kind": "\(alarm.kind)", "esp32_name": "\(alarm.esp32Name)", "classroom": "\(alarm.classroom)",
                "severity": "\(alarm.severity)", "alarm_id": "\(alarm.id)",
            ]
            if let shown = value ?? alarm.lastValue { metadata["value"] = "\(Self.format(shown))" }
            switch event.type {
            case "raise": logger.warning("alarm raised", metadata: metadata)
            case "clear": logger.notice("alarm cleared", metadata: metadata)
            default:
                metadata["by"] = "\(alarm.acknowledgedBy ?? "-")"
                logger.notice("alarm acknowledged", metadata: metadata)
            }
            webhook?.send(type: event.type, alarm)
        }
    }

    /// Events a stopped worker or a failed write left unpublished (bounded per tick).
    private func publishLeftovers(_ store: AlarmStore) throws {
        for id in try store.unpublishedAlarmIDs(limit: 100) { announce(try store.publish(alarmID: id)) }
    }

    private func tick(_ store: AlarmStore, now: EpochMillis) throws {
        let (offlineRules, devices) = lock.withLock { (book.rules.contains { $0.kind == .offline }, registry) }
        if offlineRules {
            // Presence from the database, which every worker of a share group writes: a device
            // whose messages all go to the other worker is not silent.
            var seen: Set<String> = []
            try store.storage.forEachPresence(batchSize: 1000) { batch in
                lock.withLock {
                    for presence in batch {
                        seen.insert(presence.esp32Name)
                        pending += book.checkPresence(presence, device: devices.resolve(presence.esp32Name), now: now)
                    }
                }
            }
            lock.withLock {
                for name in devices.devices.keys.sorted() where !seen.contains(name) {
                    let presence = AlarmBook.Presence(esp32Name: name, online: nil, lastStatusAt: nil, lastTelemetryAt: nil)
                    pending += book.checkPresence(presence, device: devices.resolve(name), now: now)
                }
            }
        }
        // Rejects as the database counts them: in a share group each worker stores only its share
        // of a device's messages, and the count is the device's, not this worker's (and after a
        // restart, the book knows none of them).
        let (rejectRules, noisy) = lock.withLock { (book.rules.filter { $0.kind == .rejects }, book.devicesWithRecentRejects) }
        if !rejectRules.isEmpty {
            let longest = rejectRules.compactMap(\.windowMillis).max() ?? 0
            let keep = (rejectRules.compactMap(\.count).max() ?? 0) + 1
            for name in noisy {
                let times = try store.storage.recentRejects(of: name, since: now - longest, keep: keep)
                lock.withLock { book.learnRejects(of: name, times: times) }
            }
        }
        lock.withLock { pending += book.tickRejects(now: now, registry: devices) }
        try storePending(store)
        try publishLeftovers(store)
        try syncActive(store)
        evaluations.withLock { $0 = ($0.count + 1, now) }
        logger.debug("alarm timer ran", metadata: ["active": "\(lock.withLock { book.activeKeys.count })"])
    }

    /// The database is the truth of which alarms are active: the book takes it (unless changes
    /// of ours are still on their way), and the gauge shows it. An active alarm of a rule that
    /// is gone, or no longer covers its device (the file changed while no worker ran), is cleared.
    private func syncActive(_ store: AlarmStore) throws {
        var active = try store.activeAlarms()
        let (rules, devices) = lock.withLock { (book.rules, registry) }
        let orphans = active.filter { alarm in
            !(rules.first { $0.name == alarm.rule }.map { $0.kind.rawValue == alarm.kind && $0.applies(to: devices.resolve(alarm.esp32Name)) } ?? false)
        }
        if !orphans.isEmpty {
            let now = SystemClock.nowMillis()
            for alarm in orphans {
                if let cleared = try store.clear(rule: alarm.rule, esp32Name: alarm.esp32Name, at: max(now, ISO8601.parseMillis(alarm.raisedAt) ?? now),
                                                 value: alarm.lastValue ?? 0) {
                    announce(try store.publish(alarmID: cleared.id))
                }
            }
            active = try store.activeAlarms()
        }
        var counts: [String: Int] = [:]
        for alarm in active { counts[Self.gaugeKey(alarm.rule, alarm.severity), default: 0] += 1 }
        lock.withLock {
            if pending.isEmpty { book.assume(active: Set(active.map { AlarmBook.Key(rule: $0.rule, esp32Name: $0.esp32Name) })) }
            for rule in book.rules { counts[Self.gaugeKey(rule.name, rule.severity.rawValue), default: 0] += 0 }
            for key in Set(gaugeValues.keys).union(counts.keys) {
                let parts = key.split(separator: "\u{0}", omittingEmptySubsequences: false).map(String.init)
                guard parts.count == 2 else { continue }
                setGauge(rule: parts[0], severity: parts[1], counts[key] ?? 0)
            }
        }
    }

    private static func gaugeKey(_ rule: String, _ severity: String) -> String { "\(rule)\u{0}\(severity)" }

    /// Called with the lock held.
    private func setGauge(rule: String, severity: String, _ value: Int) {
        let key = Self.gaugeKey(rule, severity)
        let gauge = gauges[key] ?? Gauge(label: "autovolt_alarms_active", dimensions: [("rule", rule), ("severity", severity)])
        gauges[key] = gauge
        gaugeValues[key] = value
        gauge.record(value)
    }

    static func format(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(format: "%.3f", value)
    }
}

/// `AUTOVOLT_ALARM_WEBHOOK_URL`: each raise, clear and ack POSTed as JSON, in order, from a
/// thread and queue of its own, retried with backoff (1 s doubling to 60 s, for up to an hour)
/// while the receiver fails. The queue is bounded: past it the oldest waiting event is dropped,
/// with an error log line (the alarm itself is in the database and the stream regardless).
final class AlarmWebhook: @unchecked Sendable {
    static let capacity = 1000
    static let giveUpAfter: TimeInterval = 3600
    let url: URL
    let logger: Logger
    private let condition = NSCondition()
    private var queue: [Data] = []
    private var stopped = false

    init(url: URL, logger: Logger) {
        self.url = url
        self.logger = logger
        let thread = Thread { [self] in loop() }
        thread.name = "autovolt-alarm-webhook"
        thread.start()
    }

    struct Body: Encodable {
        let event: String
        let alarm: AlarmRecord
    }

    func send(type: String, _ record: AlarmRecord) {
        let data = AnalyticsQueries.json(Body(event: type, alarm: record))
        condition.withLock {
            if queue.count >= Self.capacity {
                queue.removeFirst()
                logger.error("alarm webhook queue full; dropped its oldest event", metadata: ["url": "\(url)"])
            }
            queue.append(data)
            condition.signal()
        }
    }

    func stop() {
        condition.withLock {
            stopped = true
            condition.broadcast()
        }
    }

    /// Takes the oldest waiting event off the queue: a full queue then drops the next oldest
    /// waiting one, never the one being sent.
    private func next() -> Data? {
        condition.withLock {
            while queue.isEmpty && !stopped { condition.wait() }
            return stopped ? nil : queue.removeFirst()
        }
    }

    private func loop() {
        while let body = next() {
            var delay: TimeInterval = 1
            let started = Date()
            while true {
                let result = post(body)
                if result == nil { break }
                if Date().timeIntervalSince(started) > Self.giveUpAfter || condition.withLock({ stopped }) {
                    logger.error("alarm webhook: giving up on an event", metadata: ["url": "\(url)", "error": "\(result ?? "")"])
                    break
                }
                logger.warning("alarm webhook failed; retrying", metadata: ["url": "\(url)", "error": "\(result ?? "")", "retry_in_s": "\(delay)"])
                condition.withLock { _ = condition.wait(until: Date().addingTimeInterval(delay)) }
                delay = min(delay * 2, 60)
            }
        }
    }

    /// Nil on a 2xx answer, else what went wrong.
    private func post(_ body: Data) -> String? {
        var request = URLRequest(url: url, timeoutInterval: 10)
        request.httpMethod = "POST"
        request.setValue("application/json", forHTTPHeaderField: "Content-Type")
        request.httpBody = body
        let done = DispatchSemaphore(value: 0)
        let outcome = Mutex<String?>("no answer")
        URLSession.shared.dataTask(with: request) { _, response, error in
            if let error {
                outcome.withLock { $0 = error.localizedDescription }
            } else if let http = response as? HTTPURLResponse {
                outcome.withLock { $0 = (200..<300).contains(http.statusCode) ? nil : "HTTP \(http.statusCode)" }
            }
            done.signal()
        }.resume()
        done.wait()
        return outcome.withLock { $0 }
    }
}
