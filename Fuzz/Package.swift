// swift-tools-version: 6.1
import PackageDescription

// libFuzzer targets for the pure parsers, built by scripts/fuzz with
// `-sanitize=fuzzer,address -parse-as-library`. A package of its own, so that `swift build` of the
// root package is unaffected. Sources/AutoVoltCore is a symbolic link to the root's module, which
// holds every parser fuzzed here (the decoder, capture lines, the analytics parameters).
let package = Package(
    name: "autovolt-fuzz",
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
    ],
    targets: [
        .target(name: "AutoVoltCore", dependencies: [
            .product(name: "Crypto", package: "swift-crypto"),
            .product(name: "TOMLKit", package: "TOMLKit"),
        ]),
        .target(name: "CFuzzer"),
        .executableTarget(name: "FuzzDecoder", dependencies: ["AutoVoltCore", "CFuzzer"]),
        .executableTarget(name: "FuzzCaptureLine", dependencies: ["AutoVoltCore", "CFuzzer"]),
        .executableTarget(name: "FuzzAnalyticsParameters", dependencies: ["AutoVoltCore", "CFuzzer"]),
    ]
)
