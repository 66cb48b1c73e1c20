import AutoVoltCore

/// Faults the integration tests inject into a running worker (docs/delivery.md, the watchdog
/// and write concern tests). Production code never reads them from the environment: the CLI's
/// `run` does, from `AUTOVOLT_TEST_*`, and hands them in; an empty value injects nothing.
public struct FaultInjection: Sendable {
    /// The process exits (86) inside the MQTT callback, before journaling, when this many
    /// messages have arrived.
    public var exitAtMessage: Int?
    /// The process exits (87) in the MQTT thread's flush, before committing, at the N-th
    /// non-empty flush.
    public var exitAtFlush: Int?
    /// This stage stops going round its loop (the watchdog test).
    public var stalledStage: StageMonitor.Stage?
    /// Replaces every stage's allowed silence (the watchdog test).
    public var stageSilenceMillis: EpochMillis?
    /// How often the unsatisfiable write concern error is repeated (default 60 s).
    public var writeConcernRepeatMillis: EpochMillis?

    public init() {}

    /// The `AUTOVOLT_TEST_*` variables of `environment`.
    public static func from(environment: [String: String]) -> FaultInjection {
        var hooks = FaultInjection()
        hooks.exitAtMessage = environment["AUTOVOLT_TEST_EXIT_AT_MESSAGE"].flatMap(Int.init)
        hooks.exitAtFlush = environment["AUTOVOLT_TEST_EXIT_AT_FLUSH"].flatMap(Int.init)
        hooks.stalledStage = environment["AUTOVOLT_TEST_STALL_STAGE"].flatMap(StageMonitor.Stage.init(rawValue:))
        hooks.stageSilenceMillis = environment["AUTOVOLT_TEST_STAGE_SILENCE_MS"].flatMap(EpochMillis.init)
        hooks.writeConcernRepeatMillis = environment["AUTOVOLT_TEST_WRITE_CONCERN_REPEAT_MS"].flatMap(EpochMillis.init)
        return hooks
    }
}
