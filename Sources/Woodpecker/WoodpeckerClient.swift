import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerMetadata
import WoodpeckerStorage

#if canImport(Glibc)
import Glibc
#endif

/// Entry point of the WAL: creates, opens, lists and deletes logs over one object store and one metadata store.
/// All logs opened through one client share its event loop; a `Log` object is unique per name within a client,
/// so that its writer wakes its readers directly.
public final class WoodpeckerClient: Sendable {
    public let loop: EventLoop
    public let store: any ObjectStore
    public let metadata: any MetadataStore
    public let config: WALConfig
    /// Object keys are `<objectPrefix><logId>/<segmentId>/...`.
    public let objectPrefix: String
    /// When set, segments are `data.log` files under this directory (local mode) instead of objects in `store`.
    public let segmentFilesRoot: String?
    /// QuorumBuffer mode when set: blocks go to LogStore nodes, which upload them to `store`.
    public let quorum: QuorumSettings?
    let pool: LogStorePool?
    let discoveryTask = TaskHolder()
    let keys: MetaKeys
    /// Identifies this process in segment metadata (diagnostics only).
    let writerName: String
    private let registry: LogRegistry
    /// Bounds the tail caches of all this client's logs together.
    let tailBudget: TailBudget
    /// Bounds the compactions running at once (`WALConfig.maxConcurrentCompactions`).
    /// At most `maxConcurrentCompactions` compactions at once (one unit each).
    let compactionSlots: LoopBudget

    /// Bytes of decoded blocks the logs of this client cache for tail readers now (at most
    /// `config.tailCacheBytes`). Call on the client's loop.
    public var tailCacheBytesInUse: Int {
        loop.preconditionInLoop()
        return tailBudget.bytes
    }

    /// A client whose segments are objects in `store` (one object per block; S3, or files via `LocalFileStore`).
    public convenience init(loop: EventLoop, store: any ObjectStore, metadata: any MetadataStore, config: WALConfig = WALConfig(),
                            metadataRoot: String = "woodpecker", objectPrefix: String = "") {
        self.init(loop: loop, store: store, metadata: metadata, config: config, metadataRoot: metadataRoot,
                  objectPrefix: objectPrefix, segmentFilesRoot: nil)
    }

    /// A client in local mode: each segment is one `data.log` under `segmentFilesRoot` (one fdatasync per block).
    /// `store` is still used for anything stored as objects (none today besides segments).
    public convenience init(loop: EventLoop, store: any ObjectStore, metadata: any MetadataStore, config: WALConfig = WALConfig(),
                metadataRoot: String = "woodpecker", objectPrefix: String = "", segmentFilesRoot: String?) {
        self.init(loop: loop, store: store, metadata: metadata, config: config, metadataRoot: metadataRoot,
                  objectPrefix: objectPrefix, segmentFilesRoot: segmentFilesRoot, quorum: nil)
    }

    /// A client in QuorumBuffer mode: each block is acknowledged once `quorum.ackQuorum` LogStore nodes hold it;
    /// the nodes upload it to `store` (segments then read as objects, as in MemoryBuffer mode).
    public convenience init(loop: EventLoop, store: any ObjectStore, metadata: any MetadataStore, config: WALConfig = WALConfig(),
                            metadataRoot: String = "woodpecker", objectPrefix: String = "", quorum: QuorumSettings) throws {
        try quorum.validate()
        self.init(loop: loop, store: store, metadata: metadata, config: config, metadataRoot: metadataRoot,
                  objectPrefix: objectPrefix, segmentFilesRoot: nil, quorum: quorum)
    }

    private init(loop: EventLoop, store: any ObjectStore, metadata: any MetadataStore, config: WALConfig,
                 metadataRoot: String, objectPrefix: String, segmentFilesRoot: String?, quorum: QuorumSettings?) {
        self.quorum = quorum
        self.pool = quorum.map { LogStorePool(loop: loop, settings: $0) }
        self.segmentFilesRoot = segmentFilesRoot
        self.loop = loop
        self.store = store
        self.metadata = metadata
        self.config = config
        self.objectPrefix = objectPrefix
        self.keys = MetaKeys(root: metadataRoot)
        var host = [CChar](repeating: 0, count: 256)
        gethostname(&host, 255)
        self.writerName = "\(String(cChars: host))/\(getpid())"
        self.registry = LogRegistry(loop: loop)
        self.tailBudget = TailBudget(limit: config.tailCacheBytes, loop: loop)
        self.compactionSlots = LoopBudget(limit: max(1, config.maxConcurrentCompactions), loop: loop)
    }

    /// Creates a log; `.logAlreadyExists` if the name is taken. Log names are non-empty and contain no `/`.
    @discardableResult
    public func createLog(_ name: String) async throws -> Log {
        try Self.validate(name)
        for _ in 0..<max(1, config.controlRetries) {
            let gen = try await metadata.get(keys.logIdGen)
            let current = try gen.map { try decodeLogIdGen($0) } ?? 0
            let logId = current + 1
            let meta = LogMeta(logId: logId, name: name, createTimeMs: Clock.wallMillis())
            let genGuard: Compare = gen.map { .unchanged(keys.logIdGen, modRevision: $0.modRevision) } ?? .absent(keys.logIdGen)
            let r = try await metadata.txn(
                compare: [genGuard, .absent(keys.log(name))],
                then: [.put(key: keys.logIdGen, value: Array(String(logId).utf8)),
                       .put(key: keys.log(name), value: MetaCodec.encode(meta))],
                else: [.get(key: keys.log(name))])
            if r.succeeded { return await registry.log(name: name, logId: logId, client: self) }
            if r.gets.first ?? nil != nil {
                throw WoodpeckerError(.logAlreadyExists, "log \(name) already exists")
            }
            // The id counter moved under us: another log was created concurrently. Retry.
        }
        throw WoodpeckerError(.revisionConflict, "creating log \(name) kept racing with other creations; retry")
    }

    /// Closes the connections to LogStore nodes (QuorumBuffer mode). Logs must not be used afterwards.
    public func closeNodes() async {
        discoveryTask.cancel()
        await pool?.close()
    }

    /// Opens an existing log; `.logNotFound` if there is none by that name.
    public func openLog(_ name: String) async throws -> Log {
        try Self.validate(name)
        guard let kv = try await metadata.get(keys.log(name)) else {
            throw WoodpeckerError(.logNotFound, "log \(name) does not exist; create it first")
        }
        let meta = try decodeLogMeta(kv, name: name)
        return await registry.log(name: name, logId: meta.logId, client: self)
    }

    /// Opens the log, creating it when missing.
    public func openOrCreateLog(_ name: String) async throws -> Log {
        do {
            return try await openLog(name)
        } catch let e as WoodpeckerError where e.code == .logNotFound {
            do {
                return try await createLog(name)
            } catch let e as WoodpeckerError where e.code == .logAlreadyExists {
                return try await openLog(name)
            }
        }
    }

    public func logExists(_ name: String) async throws -> Bool {
        try await metadata.get(keys.log(name)) != nil
    }

    /// Names of all logs, sorted.
    public func listLogs() async throws -> [String] {
        let prefix = keys.logsPrefix
        return try await metadata.range(prefix: prefix).compactMap { kv -> String? in
            let rest = kv.key.dropFirst(prefix.count)
            return rest.contains("/") ? nil : String(rest)
        }
    }

    /// Deletes a log: its objects first, then its metadata. Idempotent.
    public func deleteLog(_ name: String) async throws {
        guard let kv = try await metadata.get(keys.log(name)) else { return }
        let meta = try decodeLogMeta(kv, name: name)
        let log = await registry.log(name: name, logId: meta.logId, client: self)
        for s in try await log.segmentMetas() {
            try await log.segmentStore(s.value.segmentId).deleteAll()
        }
        let objects = try await store.listAll(prefix: "\(objectPrefix)\(meta.logId)/").map(\.key)
        try await store.delete(keys: objects)
        _ = try await metadata.txn(compare: [.unchanged(keys.log(name), modRevision: kv.modRevision)],
                                   then: [.deletePrefix(keys.segmentsPrefix(name)), .delete(key: keys.writerLock(name)),
                                          .delete(key: keys.log(name))])
        await log.dropAllCached()
        await registry.forget(name)
    }

    /// A log record that decodes and belongs at this key; anything else is `.metadataCorrupted` naming the key and
    /// the store (never silently reused: a wrong log id would mix two logs' data).
    func decodeLogMeta(_ kv: KeyValue, name: String) throws -> LogMeta {
        let meta = try MetaCodec.decode(LogMeta.self, kv, in: metadata.description)
        guard meta.name == name, meta.logId > 0 else {
            throw WoodpeckerError(.metadataCorrupted,
                "\(metadata.description): metadata key \(kv.key) holds log \(meta.name.debugDescription) with id \(meta.logId), not log \(name.debugDescription); the prefix holds keys not written by this version of Woodpecker (a foreign key layout?): use another prefix or inspect the key")
        }
        return meta
    }

    /// The log id counter: a positive decimal integer. Anything else would hand out ids already in use.
    func decodeLogIdGen(_ kv: KeyValue) throws -> Int64 {
        guard let v = Int64(kv.stringValue), v >= 0 else {
            throw WoodpeckerError(.metadataCorrupted,
                "\(metadata.description): metadata key \(kv.key) must hold the last log id as a decimal integer, but holds \(MetaCodec.preview(kv.value)); creating logs would reuse ids of existing logs: restore the key or use another prefix")
        }
        return v
    }

    static func validate(_ name: String) throws {
        guard !name.isEmpty, name.utf8.count <= 249, !name.contains("/"), !name.contains(".."),
              name.unicodeScalars.allSatisfy({ $0.value > 0x20 && $0.value != 0x7f })
        else {
            throw WoodpeckerError(.invalidArgument, "invalid log name \(name.debugDescription): use 1-249 printable characters without '/' or spaces")
        }
    }
}

/// Unique `Log` objects per name, on the client's loop.
actor LogRegistry {
    nonisolated let loop: EventLoop
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    private var logs: [String: Log] = [:]

    init(loop: EventLoop) { self.loop = loop }

    func log(name: String, logId: Int64, client: WoodpeckerClient) -> Log {
        if let l = logs[name], l.logId == logId { return l }
        let l = Log(name: name, logId: logId, client: client)
        logs[name] = l
        return l
    }

    func forget(_ name: String) { logs[name] = nil }
}
