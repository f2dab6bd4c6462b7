// swift-tools-version:6.0
// Woodpecker for Swift: a zero-disk write-ahead log on object storage and a Kafka-protocol broker facade.
// Layering (lower never imports higher): C → WoodpeckerCore → WoodpeckerIO → Storage/Metadata → Woodpecker → Kafka → app.
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("NonisolatedNonsendingByDefault"),
]

let package = Package(
    name: "woodpecker",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "woodpecker", targets: ["woodpecker"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // C libraries from Debian, each with a module map and a tiny shim header.
        .systemLibrary(name: "CLibUV", pkgConfig: "libuv", providers: [.apt(["libuv1-dev"])]),
        .systemLibrary(name: "CCurl", pkgConfig: "libcurl", providers: [.apt(["libcurl4-openssl-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CSnappy", providers: [.apt(["libsnappy-dev"])]),
        .systemLibrary(name: "CCompression", providers: [.apt(["zlib1g-dev", "liblz4-dev", "libzstd-dev"])]),
        .target(name: "CWoodpeckerShims"),

        .target(name: "WoodpeckerCore", dependencies: ["CWoodpeckerShims"], swiftSettings: swiftSettings),
        .target(name: "WoodpeckerIO", dependencies: ["WoodpeckerCore", "CLibUV", "CCurl", "CWoodpeckerShims"],
                swiftSettings: swiftSettings),
        .target(name: "WoodpeckerStorage", dependencies: ["WoodpeckerCore", "WoodpeckerIO", "COpenSSL", "CCurl"],
                swiftSettings: swiftSettings),
        .target(name: "WoodpeckerMetadata", dependencies: ["WoodpeckerCore", "WoodpeckerIO"],
                swiftSettings: swiftSettings),
        .target(name: "WoodpeckerLogStore", dependencies: ["WoodpeckerCore", "WoodpeckerIO", "WoodpeckerStorage"],
                swiftSettings: swiftSettings),
        .target(name: "Woodpecker",
                dependencies: ["WoodpeckerCore", "WoodpeckerIO", "WoodpeckerStorage", "WoodpeckerMetadata",
                               "WoodpeckerLogStore"],
                swiftSettings: swiftSettings),
        .target(name: "KafkaProtocol", dependencies: ["WoodpeckerCore", "CSnappy", "CCompression"],
                swiftSettings: swiftSettings),
        .target(name: "KafkaBroker",
                dependencies: ["Woodpecker", "KafkaProtocol", "WoodpeckerIO", "WoodpeckerCore",
                               "WoodpeckerStorage", "WoodpeckerMetadata"],
                swiftSettings: swiftSettings),
        .executableTarget(name: "woodpecker",
                          dependencies: ["KafkaBroker", "Woodpecker", "WoodpeckerIO", "WoodpeckerStorage",
                                         "WoodpeckerMetadata", "WoodpeckerCore", "KafkaProtocol", "WoodpeckerLogStore",
                                         .product(name: "ArgumentParser", package: "swift-argument-parser")],
                          swiftSettings: swiftSettings),
        // Development tool, not shipped: regenerates Sources/KafkaProtocol/Generated from ../shared/kafka-messages.
        .executableTarget(name: "KafkaCodegen", swiftSettings: swiftSettings),

        .testTarget(name: "WoodpeckerCoreTests", dependencies: ["WoodpeckerCore"], swiftSettings: swiftSettings),
        .testTarget(name: "WoodpeckerIOTests", dependencies: ["WoodpeckerIO", "WoodpeckerCore"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "WoodpeckerStorageTests",
                    dependencies: ["WoodpeckerStorage", "WoodpeckerIO", "WoodpeckerCore"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "WoodpeckerMetadataTests",
                    dependencies: ["WoodpeckerMetadata", "WoodpeckerIO", "WoodpeckerCore"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "WoodpeckerTests",
                    dependencies: ["Woodpecker", "WoodpeckerStorage", "WoodpeckerMetadata", "WoodpeckerIO",
                                   "WoodpeckerCore", "WoodpeckerLogStore"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "WoodpeckerLogStoreTests",
                    dependencies: ["WoodpeckerLogStore", "WoodpeckerStorage", "WoodpeckerIO", "WoodpeckerCore"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "KafkaProtocolTests", dependencies: ["KafkaProtocol", "WoodpeckerCore"],
                    swiftSettings: swiftSettings),
        .testTarget(name: "KafkaBrokerTests",
                    dependencies: ["KafkaBroker", "KafkaProtocol", "Woodpecker", "WoodpeckerIO", "WoodpeckerCore",
                                   "WoodpeckerStorage", "WoodpeckerMetadata", "WoodpeckerLogStore"],
                    swiftSettings: swiftSettings),
    ]
)
