import Foundation
import Synchronization
import Testing
import Woodpecker
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerMetadata
import WoodpeckerStorage

/// Which storage a WAL test runs over: objects in memory, objects as files (`LocalFileStore`), or the local
/// layout of one `data.log` per segment (`FileSegmentStore`, what the CLI and the broker use by default).
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case memory, file, segments
    var testDescription: String { rawValue }
    /// Kinds that keep one object per block (tests that poke at block objects directly).
    static let objectLayouts: [StoreKind] = [.memory, .file]
}

/// One event loop, one object store and one metadata store (in memory or under a temp dir), plus the ability to
/// "restart the process": drop every client and open fresh store instances over the same data.
final class WALEnv: @unchecked Sendable {
    let loop: EventLoop
    let kind: StoreKind
    let dir: String
    private(set) var store: any ObjectStore
    private(set) var metadata: any MetadataStore
    /// The raw store under any test wrapper (for tests that poke at objects directly).
    private(set) var baseStore: any ObjectStore

    init(kind: StoreKind, loop: EventLoop) async throws {
        self.kind = kind
        self.loop = loop
        dir = NSTemporaryDirectory() + "wp-wal-test-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        switch kind {
        case .memory:
            store = MemoryStore(name: "wal-test")
            metadata = EmbeddedMetadataStore.inMemory()
        case .file, .segments:
            store = LocalFileStore(root: dir + "/objects", loop: loop)
            metadata = try await EmbeddedMetadataStore(directory: dir + "/meta", loop: loop)
        }
        baseStore = store
    }

    /// A client over the current stores, optionally through a wrapper of the object store.
    func client(_ config: WALConfig = .test, wrap: ((any ObjectStore) -> any ObjectStore)? = nil) -> WoodpeckerClient {
        let s = wrap?(store) ?? store
        return WoodpeckerClient(loop: loop, store: s, metadata: metadata, config: config,
                                segmentFilesRoot: kind == .segments ? dir + "/segments" : nil)
    }

    /// Simulates a process restart: every existing client is abandoned (nothing is closed or flushed) and fresh
    /// store instances are opened over the same data (files: a new `LocalFileStore` and the metadata journal
    /// reopened from disk; memory: the same instances, which is all a restart can keep).
    func restart() async throws {
        guard kind != .memory else { return }
        await (metadata as? EmbeddedMetadataStore)?.close()
        store = LocalFileStore(root: dir + "/objects", loop: loop)
        baseStore = store
        metadata = try await EmbeddedMetadataStore(directory: dir + "/meta", loop: loop)
    }

    func close() async {
        await (metadata as? EmbeddedMetadataStore)?.close()
    }

    func removeDirectory() { try? FileManager.default.removeItem(atPath: dir) }  // best effort
}

/// Runs `body` on a fresh loop (as a task preferring it), then closes the stores, stops the loop and removes the
/// temp dir.
func withWAL(_ kind: StoreKind, _ body: @escaping @Sendable (WALEnv) async throws -> Void) async throws {
    let loop = EventLoop(name: "wal-test")
    let env: WALEnv
    do {
        env = try await Task(executorPreference: loop) { try await WALEnv(kind: kind, loop: loop) }.value
    } catch {
        loop.shutdown()
        throw error
    }
    let result = await Task(executorPreference: loop) { () -> Result<Void, any Error> in
        do {
            try await body(env)
            return .success(())
        } catch {
            return .failure(error)
        }
    }.value
    await Task(executorPreference: loop) { await env.close() }.value
    loop.shutdown()
    env.removeDirectory()
    try result.get()
}

extension WALConfig {
    /// Defaults for tests: no background auditor (tests call audit steps explicitly).
    static var test: WALConfig {
        var c = WALConfig()
        c.auditIntervalMs = 0
        return c
    }

    func with(_ change: (inout WALConfig) -> Void) -> WALConfig {
        var c = self
        change(&c)
        return c
    }
}

func bytes(_ s: String) -> ByteBuffer { ByteBuffer(bytes: Array(s.utf8)) }
func text(_ b: ByteBuffer) -> String { String(decoding: b.readableBytesArray, as: UTF8.self) }

/// Every entry from `position` up to what is readable now.
func readAll(_ log: Log, from position: ReadPosition = .earliest) async throws -> [LogEntry] {
    let r = try await log.openReader(from: position)
    var out: [LogEntry] = []
    while true {
        let batch = try await r.next(maxEntries: 500, waitMs: 0)
        if batch.isEmpty { break }
        out += batch
    }
    await r.close()
    return out
}

/// Checks that ids are in order with no gaps within a segment and no duplicates.
func expectDenseOrder(_ entries: [LogEntry], sourceLocation: SourceLocation = #_sourceLocation) {
    for (a, b) in zip(entries, entries.dropFirst()) {
        let ok = (b.id.segmentId == a.id.segmentId && b.id.entryId == a.id.entryId + 1)
            || (b.id.segmentId > a.id.segmentId && b.id.entryId == 0)
        #expect(ok, "ids out of order or with a gap: \(a.id) then \(b.id)", sourceLocation: sourceLocation)
        if !ok { return }
    }
}

func expectWoodpeckerError(_ code: WoodpeckerError.Code, sourceLocation: SourceLocation = #_sourceLocation,
                           _ body: () async throws -> Void) async -> WoodpeckerError? {
    do {
        try await body()
        Issue.record("expected \(code), but the call succeeded", sourceLocation: sourceLocation)
        return nil
    } catch let e as WoodpeckerError {
        #expect(e.code == code, "expected \(code), got \(e)", sourceLocation: sourceLocation)
        return e
    } catch {
        Issue.record("expected WoodpeckerError \(code), got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// Polls `condition` on the loop every few ms until it holds or `timeoutMs` passes; returns whether it held.
func eventually(_ loop: EventLoop, timeoutMs: UInt64 = 5000, _ condition: () async throws -> Bool) async rethrows -> Bool {
    let deadline = Clock.monotonicMillis() + timeoutMs
    while Clock.monotonicMillis() < deadline {
        if try await condition() { return true }
        await loop.sleep(ms: 5)
    }
    return try await condition()
}

/// An object store wrapper for fault injection: delays and failures per operation and key, switchable at run time.
final class FaultStore: ObjectStore, @unchecked Sendable {
    struct Faults: Sendable {
        /// Delay (ms) before a put or putIfAbsent of a key runs.
        var putDelayMs: @Sendable (String) -> UInt64 = { _ in 0 }
        /// Error thrown instead of a put or putIfAbsent of a key.
        var putError: @Sendable (String) -> WoodpeckerError? = { _ in nil }
        var deleteError: @Sendable (String) -> WoodpeckerError? = { _ in nil }
    }

    let base: any ObjectStore
    let loop: EventLoop
    private let faults = Mutex(Faults())
    /// Puts running right now and the most ever running at once (bytes).
    private let counters = Mutex((running: 0, runningBytes: 0, peakRunningBytes: 0, puts: 0))
    var description: String { base.description }

    init(_ base: any ObjectStore, loop: EventLoop) {
        self.base = base
        self.loop = loop
    }

    func setFaults(_ change: (inout Faults) -> Void) { faults.withLock { change(&$0) } }
    var peakRunningPutBytes: Int { counters.withLock { $0.peakRunningBytes } }
    var putCount: Int { counters.withLock { $0.puts } }
    /// Lookups (head and get) so far.
    var lookupCount: Int { lookups.withLock { $0 } }
    private let lookups = Mutex(0)

    private func beforePut(_ key: String, _ size: Int) async throws {
        let f = faults.withLock { $0 }
        let delay = f.putDelayMs(key)
        counters.withLock {
            $0.running += 1
            $0.runningBytes += size
            $0.peakRunningBytes = max($0.peakRunningBytes, $0.runningBytes)
            $0.puts += 1
        }
        if delay > 0 { await loop.sleep(ms: delay) }
        if let e = faults.withLock({ $0.putError(key) }) {
            afterPut(size)
            throw e
        }
    }

    private func afterPut(_ size: Int) {
        counters.withLock {
            $0.running -= 1
            $0.runningBytes -= size
        }
    }

    func put(_ key: String, _ data: ByteBuffer) async throws {
        try await beforePut(key, data.readableBytes)
        defer { afterPut(data.readableBytes) }
        try await base.put(key, data)
    }

    func putIfAbsent(_ key: String, _ data: ByteBuffer) async throws {
        try await beforePut(key, data.readableBytes)
        defer { afterPut(data.readableBytes) }
        try await base.putIfAbsent(key, data)
    }

    func get(_ key: String, range: Range<Int>?) async throws -> ByteBuffer {
        lookups.withLock { $0 += 1 }
        return try await base.get(key, range: range)
    }
    func head(_ key: String) async throws -> ObjectInfo? {
        lookups.withLock { $0 += 1 }
        return try await base.head(key)
    }
    func list(prefix: String, continuationToken: String?, limit: Int) async throws -> ObjectListPage {
        try await base.list(prefix: prefix, continuationToken: continuationToken, limit: limit)
    }
    func delete(_ key: String) async throws {
        if let e = faults.withLock({ $0.deleteError(key) }) { throw e }
        try await base.delete(key)
    }
    func delete(keys: [String]) async throws {
        for k in keys { try await delete(k) }
    }
}

/// Collects results of appends started as child tasks, in completion order.
final class Recorder<T: Sendable>: @unchecked Sendable {
    private let items = Mutex<[T]>([])
    func add(_ t: T) { items.withLock { $0.append(t) } }
    var all: [T] { items.withLock { $0 } }
    var count: Int { items.withLock { $0.count } }
}
