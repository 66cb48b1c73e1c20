import AutoVoltMongo
import Hummingbird
import Logging

/// `/api/power-analytics/...` (contract section 7).
enum PowerAnalyticsAPI {
    static func register(on router: Router<BasicRequestContext>, executor: MongoExecutor, config: WorkerConfig, logger: Logger) {
    }
}
