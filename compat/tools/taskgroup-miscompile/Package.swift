// swift-tools-version:6.0
// A Swift miscompile in release builds (-O), reduced from QuorumSegmentStore.fence: README.md.
import PackageDescription

let package = Package(
    name: "taskgroup-miscompile",
    targets: [.executableTarget(name: "Repro")]
)
