import Foundation
import Testing
import WoodpeckerCore
import WoodpeckerMetadata

/// A fresh temporary directory, removed by `remove()`.
struct TempDir: Sendable {
    let path: String
    init(_ name: String = "meta") {
        path = NSTemporaryDirectory() + "wp-\(name)-\(getpid())-\(UUID().uuidString.prefix(8))"
        try? FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    }
    func remove() { try? FileManager.default.removeItem(atPath: path) }  // best effort: it is a temp dir
}

enum StoreKind: String, CaseIterable, Sendable, CustomStringConvertible {
    case inMemory, onDisk
    var description: String { rawValue }

    /// Runs a conformance check against fresh stores of this kind (a new directory per store when on disk).
    func run(_ check: (MetadataStoreConformance) async throws -> Void) async throws {
        let dir = TempDir("conf")
        defer { dir.remove() }
        let kind = self
        let conformance = MetadataStoreConformance { () async throws -> any MetadataStore in
            switch kind {
            case .inMemory: return EmbeddedMetadataStore.inMemory()
            case .onDisk: return try await EmbeddedMetadataStore(directory: dir.path + "/" + UUID().uuidString)
            }
        }
        try await check(conformance)
    }
}

@Suite struct EmbeddedConformanceTests {
    @Test(arguments: StoreKind.allCases) func revisions(_ kind: StoreKind) async throws {
        try await kind.run { try await $0.revisions() }
    }
    @Test(arguments: StoreKind.allCases) func compareAndSwap(_ kind: StoreKind) async throws {
        try await kind.run { try await $0.compareAndSwap() }
    }
    @Test(arguments: StoreKind.allCases) func createIfAbsentRace(_ kind: StoreKind) async throws {
        try await kind.run { try await $0.createIfAbsentRace() }
    }
    @Test(arguments: StoreKind.allCases) func prefixRangeAndLimit(_ kind: StoreKind) async throws {
        try await kind.run { try await $0.prefixRangeAndLimit() }
    }
    @Test(arguments: StoreKind.allCases) func deleteKeysAndPrefix(_ kind: StoreKind) async throws {
        try await kind.run { try await $0.deleteKeysAndPrefix() }
    }
    @Test(arguments: StoreKind.allCases) func txnBranchesAndGets(_ kind: StoreKind) async throws {
        try await kind.run { try await $0.txnBranchesAndGets() }
    }
    @Test(arguments: StoreKind.allCases) func leaseExpiryRemovesKeys(_ kind: StoreKind) async throws {
        try await kind.run { try await $0.leaseExpiryRemovesKeys() }
    }
    @Test(arguments: StoreKind.allCases) func keepAlivePreventsExpiry(_ kind: StoreKind) async throws {
        try await kind.run { try await $0.keepAlivePreventsExpiry() }
    }
    @Test(arguments: StoreKind.allCases) func revokeDeletesKeys(_ kind: StoreKind) async throws {
        try await kind.run { try await $0.revokeDeletesKeys() }
    }
    @Test(arguments: StoreKind.allCases) func watchEventsInOrder(_ kind: StoreKind) async throws {
        try await kind.run { try await $0.watchEventsInOrder() }
    }
    @Test(arguments: StoreKind.allCases) func watchReplaysFromPastRevision(_ kind: StoreKind) async throws {
        try await kind.run { try await $0.watchReplaysFromPastRevision() }
    }
    @Test(arguments: StoreKind.allCases) func watchDeleteEvents(_ kind: StoreKind) async throws {
        try await kind.run { try await $0.watchDeleteEvents() }
    }
    @Test(arguments: StoreKind.allCases) func watchCancelEndsStream(_ kind: StoreKind) async throws {
        try await kind.run { try await $0.watchCancelEndsStream() }
    }
}
