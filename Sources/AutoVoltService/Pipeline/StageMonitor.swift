import AutoVoltCore
import Synchronization

/// The worker's long-running stages and the last time each went round its loop. The systemd
/// watchdog is pinged only while every stage is alive: a stage stuck inside a call (a hung
/// socket, a deadlock) stops the pings and systemd restarts the worker.
public final class StageMonitor: Sendable {
    public enum Stage: String, Sendable, CaseIterable {
        case drain, ledger, aggregation, scheduler, alarms

        /// How long a stage may go without coming round. Generous where one step legitimately
        /// takes long (a backoff of 15 s, a nightly reconciliation of a campus day).
        var allowedSilenceMillis: EpochMillis {
            switch self {
            case .drain: 60_000
            case .ledger: 300_000
            case .aggregation: 300_000
            case .scheduler: 900_000
            case .alarms: 120_000
            }
        }
    }

    private let beats: Mutex<[Stage: EpochMillis]>
    private let silenceOverride: EpochMillis?

    /// `silenceOverride` replaces every stage's allowance (tests).
    public init(now: EpochMillis, silenceOverride: EpochMillis? = nil) {
        beats = Mutex(Dictionary(uniqueKeysWithValues: Stage.allCases.map { ($0, now) }))
        self.silenceOverride = silenceOverride
    }

    public func beat(_ stage: Stage, now: EpochMillis) {
        beats.withLock { $0[stage] = now }
    }

    public func lastBeat(_ stage: Stage) -> EpochMillis {
        beats.withLock { $0[stage] ?? 0 }
    }

    /// The stages silent for longer than they may be, with how long.
    public func stalled(now: EpochMillis) -> [(stage: Stage, silentMillis: EpochMillis)] {
        beats.withLock { beats in
            Stage.allCases.compactMap { stage in
                let silent = now - (beats[stage] ?? now)
                return silent > (silenceOverride ?? stage.allowedSilenceMillis) ? (stage, silent) : nil
            }
        }
    }
}
