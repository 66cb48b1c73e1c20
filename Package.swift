// swift-tools-version: 6.1
import PackageDescription

// Dependency direction: CLI -> Service -> (MQTT, Mongo, Journal) -> Core.
// AutoVoltCore does no I/O; the adapters are thin wrappers over the C libraries.
let package = Package(
    name: "autovolt-ingest",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "autovolt-worker", targets: ["autovolt-worker"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    ],
    targets: [
        .systemLibrary(name: "CMosquitto", pkgConfig: "libmosquitto",
                       providers: [.apt(["libmosquitto-dev"])]),
        .systemLibrary(name: "CMongoc", pkgConfig: "libmongoc-1.0",
                       providers: [.apt(["libmongoc-dev", "libbson-dev"])]),
        .systemLibrary(name: "CLibpq", pkgConfig: "libpq", providers: [.apt(["libpq-dev"])]),
        .systemLibrary(name: "CSQLite", pkgConfig: "sqlite3",
                       providers: [.apt(["libsqlite3-dev"])]),
        // Statement exports. libhpdf-dev has no pkg-config file; its header is in /usr/include.
        .systemLibrary(name: "CHaru", providers: [.apt(["libhpdf-dev"])]),
        .systemLibrary(name: "CXlsxWriter", pkgConfig: "xlsxwriter",
                       providers: [.apt(["libxlsxwriter-dev"])]),

        .target(name: "AutoVoltCore", dependencies: [
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "TOMLKit", package: "TOMLKit"),
        ]),
        .target(name: "AutoVoltJournal", dependencies: ["CSQLite"]),
        .target(name: "AutoVoltMQTT", dependencies: [
            "CMosquitto",
            .product(name: "Logging", package: "swift-log"),
        ]),
        .target(name: "AutoVoltMongo", dependencies: [
            "CMongoc",
            .product(name: "NIOPosix", package: "swift-nio"),
        ]),
        // PostgreSQL through libpq (blocking, like libmongoc): the stages call it from their own threads.
        .target(name: "AutoVoltPostgres", dependencies: ["CLibpq"]),
        // Statements as PDF (libharu, DejaVu Sans embedded for the rupee sign) and XLSX (libxlsxwriter).
        .target(name: "AutoVoltExport", dependencies: ["AutoVoltCore", "CHaru", "CXlsxWriter"]),
        // Helpers for tests only: start real mosquitto and scripts/dev-mongo on free ports.
        .target(name: "AutoVoltTestSupport", dependencies: ["AutoVoltMQTT", "AutoVoltMongo", "AutoVoltPostgres"], path: "Tests/Support"),
        // Ledger sequences both the pure and the store's regression tests run (issue 20 §4).
        .target(name: "AutoVoltLedgerCases", dependencies: ["AutoVoltCore"], path: "Tests/LedgerCases"),
        .target(name: "AutoVoltService", dependencies: [
            "AutoVoltCore", "AutoVoltJournal", "AutoVoltMQTT", "AutoVoltMongo", "AutoVoltPostgres", "AutoVoltExport",
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "TOMLKit", package: "TOMLKit"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
            .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            .product(name: "Hummingbird", package: "hummingbird"),
            .product(name: "HummingbirdCore", package: "hummingbird"),
            .product(name: "NIOCore", package: "swift-nio"),
            .product(name: "NIOHTTP1", package: "swift-nio"),
        ]),
        .executableTarget(name: "autovolt-worker", dependencies: [
            "AutoVoltService", "AutoVoltMongo", "AutoVoltPostgres", "AutoVoltMQTT", "AutoVoltCore",
            .product(name: "ArgumentParser", package: "swift-argument-parser"),
            .product(name: "Logging", package: "swift-log"),
            .product(name: "Metrics", package: "swift-metrics"),
            .product(name: "Prometheus", package: "swift-prometheus"),
        ]),
        // Benchmarks and load generation (scripts/bench-ingest); not installed.
        .executableTarget(name: "autovolt-bench", dependencies: ["AutoVoltCore", "AutoVoltJournal", "CMosquitto"]),

        .testTarget(name: "AutoVoltCoreTests", dependencies: [
            "AutoVoltCore", "AutoVoltLedgerCases",
            .product(name: "PropertyBased", package: "swift-property-based"),
        ]),
        .testTarget(name: "AutoVoltJournalTests", dependencies: ["AutoVoltJournal"]),
        .testTarget(name: "AutoVoltExportTests", dependencies: ["AutoVoltExport"]),
        .testTarget(name: "AutoVoltMQTTTests", dependencies: ["AutoVoltMQTT", "AutoVoltTestSupport"]),
        .testTarget(name: "AutoVoltPostgresTests", dependencies: ["AutoVoltPostgres", "AutoVoltTestSupport"]),
        .testTarget(name: "AutoVoltMongoTests", dependencies: ["AutoVoltMongo", "AutoVoltTestSupport"]),
        .testTarget(name: "AutoVoltServiceTests", dependencies: ["AutoVoltService", "AutoVoltTestSupport", "AutoVoltLedgerCases"]),
    ]
)
