/// The in-process scheduler's decisions, pure: which jobs are due at an instant, given the ones
/// already done. Time is an input, so a whole night can be simulated in a test.
public struct ScheduledJob: Sendable, Hashable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case dayClose = "day_close", reconcile
        /// Drafts of the statements of the month before `date` (a 1st); never a freeze.
        case statements
    }
    public var kind: Kind
    public var date: CivilDate
    /// When it becomes due.
    public var dueAt: EpochMillis

    public var id: String { "\(kind.rawValue):\(date)" }
    public var description: String { id }
}

public struct Schedule: Sendable {
    public var reconcileAt: (hour: Int, minute: Int)
    /// When the previous month's statement drafts are made on the 1st.
    public var statementAt: (hour: Int, minute: Int)
    /// Minutes after local midnight when yesterday is closed.
    public var dayCloseDelayMinutes: Int
    /// How many past days a worker that was down catches up on.
    public var lookbackDays: Int

    public init(reconcileAt: (hour: Int, minute: Int) = (2, 0), statementAt: (hour: Int, minute: Int) = (3, 0),
                dayCloseDelayMinutes: Int = 5, lookbackDays: Int = 7) {
        self.reconcileAt = reconcileAt
        self.statementAt = statementAt
        self.dayCloseDelayMinutes = dayCloseDelayMinutes
        self.lookbackDays = lookbackDays
    }

    /// Jobs due at `now` and not in `done`, oldest first; each day's close before its
    /// reconciliation, and the last day of a month closed and reconciled before the 1st makes
    /// its statements (when the statement time is after the reconciliation's).
    public func due(now: EpochMillis, calendar: inout LocalCalendar, done: Set<String>) -> [ScheduledJob] {
        let today = calendar.date(of: now)
        var jobs: [ScheduledJob] = []
        for back in stride(from: lookbackDays, through: 1, by: -1) {
            let date = CivilDate(daysSinceEpoch: today.daysSinceEpoch - back)
            let nextMidnight = calendar.startOfDay(CivilDate(daysSinceEpoch: date.daysSinceEpoch + 1))
            let close = ScheduledJob(kind: .dayClose, date: date, dueAt: nextMidnight + Int64(dayCloseDelayMinutes) * 60_000)
            let reconcile = ScheduledJob(kind: .reconcile, date: date,
                                         dueAt: nextMidnight + Int64(reconcileAt.hour * 60 + reconcileAt.minute) * 60_000)
            var candidates = [close, reconcile]
            let next = CivilDate(daysSinceEpoch: date.daysSinceEpoch + 1)
            if next.day == 1 {
                candidates.append(ScheduledJob(kind: .statements, date: next,
                                               dueAt: nextMidnight + Int64(statementAt.hour * 60 + statementAt.minute) * 60_000))
            }
            for job in candidates where job.dueAt <= now && !done.contains(job.id) { jobs.append(job) }
        }
        return jobs
    }
}
