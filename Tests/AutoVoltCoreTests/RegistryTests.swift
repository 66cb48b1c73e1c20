import AutoVoltCore
import Foundation
import Testing

@Suite("device registry")
struct RegistryTests {
    @Test func parsesDevicesWithDefaultsAndSwitches() throws {
        let registry = try DeviceRegistry.parse(toml: """
            [[device]]
            esp32_name = "lab-101"
            classroom = "CSE-301"
            max_power_w = 5000
            [[device.switch]]
            name = "relay_16"
            rated_w = 60.5
            [[device.switch]]
            name = "fan"

            [[device]]
            esp32_name = "lab-102"
            classroom = "CSE-302"
            rollback_tolerance_wh = 20.5
            """)
        let a = try #require(registry.device("lab-101"))
        #expect(a.maxPowerW == 5000)
        #expect(a.rollbackToleranceWh == 50)
        #expect(a.switches == [.init(name: "relay_16", ratedW: 60.5), .init(name: "fan", ratedW: nil)])
        let b = try #require(registry.device("lab-102"))
        #expect(b.maxPowerW == 20000)
        #expect(b.rollbackToleranceWh == 20.5)
        #expect(registry.resolve("ghost").classroom == "unassigned")
    }

    @Test(arguments: [
        ("[[device]]\nclassroom = \"A\"", "esp32_name"),
        ("[[device]]\nesp32_name = \"x\"", "classroom"),
        ("[[device]]\nesp32_name = \"bad name\"\nclassroom = \"A\"", "esp32_name must match"),
        ("[[device]]\nesp32_name = \"x\"\nclassroom = \"A\"\n[[device]]\nesp32_name = \"x\"\nclassroom = \"B\"", "listed twice"),
        ("[[device]]\nesp32_name = \"x\"\nclassroom = \"A\"\nmax_power_w = -1", "max_power_w"),
        ("[[device]]\nesp32_name = \"x\"\nclassroom = \"A\"\nmax_power_w = \"lots\"", "max_power_w"),
        ("[[device]]\nesp32_name = \"x\"\nclassroom = \"A\"\ncolour = \"red\"", "unknown key"),
        ("[[device]\nesp32_name = 1", "line"),
    ])
    func errorsNameTheProblem(text: String, fragment: String) {
        do {
            _ = try DeviceRegistry.parse(toml: text)
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.message.contains(fragment), "\(error.message)")
        }
    }

    @Test func shippedExampleRegistryParses() throws {
        let text = try String(contentsOf: packageRoot.appendingPathComponent("config/devices.toml"), encoding: .utf8)
        let registry = try DeviceRegistry.parse(toml: text)
        #expect(registry.devices.count >= 3)
    }

    @Test func classroomSchedulesParseAndMistakesNameTheClassroom() throws {
        let registry = try DeviceRegistry.parse(toml: """
            [[device]]
            esp32_name = "lab-101"
            classroom = "CSE-301"

            [[schedule]]
            classroom = "CSE-301"
            weekdays = [1, 2, 3, 4, 5, 6]
            hours = "07:30-21:00"
            holidays = ["2026-12-25"]
            """)
        let schedule = try #require(registry.schedules["CSE-301"])
        #expect(schedule.weekdays == [1, 2, 3, 4, 5, 6] && schedule.fromMinute == 450 && schedule.toMinute == 1260)
        #expect(schedule.holidays == [try #require(CivilDate("2026-12-25"))])
        let mistakes: [(String, String)] = [
            ("[[schedule]]\nhours = \"08:00-18:00\"\n", "schedule #1: classroom"),
            ("[[schedule]]\nclassroom = \"A\"\n[[schedule]]\nclassroom = \"A\"\n", "schedule of \"A\" is listed twice"),
            ("[[schedule]]\nclassroom = \"A\"\nhours = \"18:00-08:00\"\n", "schedule of \"A\": hours"),
            ("[[schedule]]\nclassroom = \"A\"\nopen = true\n", "schedule of \"A\": unknown field \"open\""),
            ("[[room]]\nname = \"A\"\n", "expected [[device]] or [[schedule]] or [[group]] tables"),
        ]
        for (text, expected) in mistakes {
            #expect(throws: DeviceRegistry.ParseError.self) { try DeviceRegistry.parse(toml: text) }
            do {
                _ = try DeviceRegistry.parse(toml: text)
            } catch {
                #expect(error.message.contains(expected), "\(error.message)")
            }
        }
    }

    @Test func groupsNameClassroomsForStatementsAndMistakesNameTheGroup() throws {
        let registry = try DeviceRegistry.parse(toml: """
            [[device]]
            esp32_name = "lab-101"
            classroom = "CSE-301"

            [[group]]
            name = "CSE"
            classrooms = ["CSE-301", "CSE-302", "CSE-301"]
            """)
        #expect(registry.groups == ["CSE": ["CSE-301", "CSE-302"]])
        let mistakes: [(String, String)] = [
            ("[[group]]\nclassrooms = [\"A\"]\n", "group #1: name"),
            ("[[group]]\nname = \"G\"\nclassrooms = []\n", "group \"G\": classrooms must be a non-empty array"),
            ("[[group]]\nname = \"G\"\nclassrooms = [1]\n", "group \"G\": classrooms must be a non-empty array"),
            ("[[group]]\nname = \"G\"\nclassrooms = [\"A\"]\nowner = \"x\"\n", "group \"G\": unknown key \"owner\""),
            ("[[group]]\nname = \"G\"\nclassrooms = [\"A\"]\n[[group]]\nname = \"G\"\nclassrooms = [\"B\"]\n", "group \"G\" is listed twice"),
        ]
        for (text, expected) in mistakes {
            do {
                _ = try DeviceRegistry.parse(toml: text)
                Issue.record("no error for \(text)")
            } catch {
                #expect(error.message.contains(expected), "\(error.message)")
            }
        }
    }
}

let packageRoot: URL = {
    var url = URL(fileURLWithPath: #filePath)
    while url.path != "/" {
        url.deleteLastPathComponent()
        if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url }
    }
    return URL(fileURLWithPath: FileManager.default.currentDirectoryPath)
}()
