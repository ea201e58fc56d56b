// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "Hypervisor",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "hypervisord", targets: ["hypervisord"]),
        .executable(name: "hvctl", targets: ["hvctl"]),
    ],
    targets: [
        .systemLibrary(name: "CFastCGI", path: "Sources/CFastCGI"),
        .systemLibrary(name: "CPostgres", path: "Sources/CPostgres"),
        .systemLibrary(name: "CHiredis", path: "Sources/CHiredis"),
        .systemLibrary(name: "COpenSSL", path: "Sources/COpenSSL"),
        .systemLibrary(name: "CSystem", path: "Sources/CSystem"),
        .target(name: "Domain", exclude: ["README.md"]),
        .target(
            name: "HVFastCGI",
            dependencies: ["Domain", "CFastCGI", "CPostgres", "CHiredis", "COpenSSL", "CSystem"],
            resources: [.copy("openapi.json")]
        ),
        .executableTarget(name: "hypervisord", dependencies: ["HVFastCGI"]),
        .executableTarget(name: "hvctl", dependencies: ["HVFastCGI"]),
        .executableTarget(name: "SchedulerBenchmark", dependencies: ["Domain"], path: "bench/SchedulerBenchmark"),
        .testTarget(name: "DomainTests", dependencies: ["Domain"]),
        .testTarget(name: "HVFastCGITests", dependencies: ["HVFastCGI", "Domain"]),
        .testTarget(name: "IntegrationTests", dependencies: ["HVFastCGI", "Domain"]),
    ],
    swiftLanguageModes: [.v6]
)
