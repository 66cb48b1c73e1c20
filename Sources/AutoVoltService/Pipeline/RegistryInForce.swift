import AutoVoltCore
import Foundation
import Logging
import Synchronization

/// The device registry in force: the one loaded at start, replaced on SIGHUP. Each stage
/// compares `generation` with the one it last applied and takes the new registry at its next step.
final class RegistryInForce: Sendable {
    private let current: Mutex<(registry: DeviceRegistry, generation: Int)>

    init(_ registry: DeviceRegistry) { current = Mutex((registry, 0)) }

    var registry: DeviceRegistry { current.withLock { $0.registry } }
    var snapshot: (registry: DeviceRegistry, generation: Int) { current.withLock { $0 } }

    /// Reads `path` again. A file that does not parse is refused with one log line naming the
    /// problem, and the registry in force stays (nil). New readings use the new registry; the
    /// history keeps the classrooms it was stored with until `rebuild-ledger` and `recalculate`
    /// apply the new one.
    func reload(from path: String, logger: Logger) -> DeviceRegistry? {
        let loaded: DeviceRegistry
        do {
            loaded = try DeviceRegistry.parse(toml: String(contentsOfFile: path, encoding: .utf8))
        } catch let error as DeviceRegistry.ParseError {
            logger.error("device registry not reloaded; keeping the one in force", metadata: ["path": "\(path)", "error": "\(error.message)"])
            return nil
        } catch {
            logger.error("device registry not reloaded; keeping the one in force", metadata: ["path": "\(path)", "error": "\(error.localizedDescription)"])
            return nil
        }
        current.withLock { $0 = (loaded, $0.generation + 1) }
        logger.notice("device registry reloaded", metadata: ["path": "\(path)", "devices": "\(loaded.devices.count)"])
        return loaded
    }
}
