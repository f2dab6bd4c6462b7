import Foundation
import Woodpecker
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerLogStore
import WoodpeckerMetadata
import WoodpeckerStorage

#if canImport(Glibc)
import Glibc
#endif

/// The pieces a command runs on: one event loop, the object store and the metadata store under a data dir.
struct Runtime {
    let loop: EventLoop
    let store: any ObjectStore
    let metadata: any MetadataStore
    let client: WoodpeckerClient
    /// Prefix of every metadata key (empty for the embedded store).
    var metadataPrefix = ""

    /// `<dataDir>/segments` holds log data (one `data.log` per segment), `<dataDir>/meta` the embedded metadata
    /// journal, `<dataDir>/objects` anything stored as objects.
    /// `metadata` as in `openMetadata` (nil: embedded under `<dataDir>/meta`). On etcd, several processes may share
    /// the data dir and the prefix: a newer writer of a log fences the older one.
    static func local(dataDir: String, metadata: String? = nil, config: WALConfig = WALConfig()) async throws -> Runtime {
        try await open(dataDir: dataDir, storage: nil, metadata: metadata, config: config)
    }

    /// The metadata store chosen by URL: nil or `embedded` (a journal under `<dataDir>/meta`), or
    /// `etcd://[USER:PASS@]HOST:PORT[,HOST:PORT]/PREFIX`. Returns the store and the key prefix to use.
    static func openMetadata(_ url: String?, dataDir: String, loop: EventLoop) async throws -> (any MetadataStore, String) {
        guard let url, url != "embedded" else {
            return (try await EmbeddedMetadataStore(directory: dataDir + "/meta", loop: loop), "")
        }
        guard url.hasPrefix("etcd://") || url.hasPrefix("etcds://") else {
            throw WoodpeckerError(.invalidArgument, "--metadata \(url): use embedded or etcd://HOST:PORT[,HOST:PORT]/PREFIX")
        }
        let loc = try EtcdMetadataStore.parse(url: url)
        var options = EtcdMetadataStore.Options()
        options.username = loc.username
        options.password = loc.password
        let store = EtcdMetadataStore(endpoints: loc.endpoints, loop: loop, options: options)
        // Fail at startup, naming the endpoints, rather than on the first request. A store that failed is closed
        // before the error propagates: its connections must not outlive it on the loop.
        do {
            _ = try await onLoop(loop) { try await store.get(loc.prefix + "woodpecker/logidgen") }
        } catch {
            _ = try? await onLoop(loop) { await store.close() }
            throw error
        }
        return (store, loc.prefix)
    }

    /// The object store named by a storage URL: `file:///PATH` (objects under `PATH/objects`) or
    /// `s3://BUCKET/PREFIX?endpoint=URL&region=R[&create_bucket=true]` (checked to honour conditional writes, on
    /// which fencing and the LogStores' uploads rely).
    static func openObjectStore(_ storage: String, loop: EventLoop) async throws -> any ObjectStore {
        if storage.hasPrefix("file://") {
            let dir = String(storage.dropFirst("file://".count))
            try FileOps.makeDirectories(dir)
            return LocalFileStore(root: dir + "/objects", loop: loop)
        }
        guard storage.hasPrefix("s3://") else {
            throw WoodpeckerError(.invalidArgument, "--storage \(storage): use file:///PATH or s3://BUCKET/PREFIX?endpoint=URL")
        }
        let createBucket = storage.contains("create_bucket=true")
        let url = storage.replacingOccurrences(of: "&create_bucket=true", with: "").replacingOccurrences(of: "?create_bucket=true&", with: "?")
            .replacingOccurrences(of: "?create_bucket=true", with: "")
        let s3 = try S3Store(config: try S3Config.parse(url: url), loop: loop)
        try await onLoop(loop) {
            if createBucket { try await s3.createBucketIfMissing() }
            try await s3.verifyConditionalWrites()
        }
        return s3
    }

    /// Storage chosen by URL: `file:///PATH` (or nil: `<dataDir>/segments`, one data.log per segment) or
    /// `s3://BUCKET/PREFIX?endpoint=URL&region=R[&create_bucket=true]` (one object per block). With `logstores`
    /// (QuorumBuffer mode) blocks go to those LogStore nodes, which upload them to the same storage as objects
    /// (`file://` storage then holds objects under `PATH/objects`, shared with the nodes).
    static func open(dataDir: String, storage: String?, metadata metadataURL: String?,
                     config: WALConfig = WALConfig(), logstores: [String]? = nil) async throws -> Runtime {
        try FileOps.makeDirectories(dataDir)
        // libuv's threadpool runs every fsync; its default of 4 threads caps parallel block flushes.
        setenv("UV_THREADPOOL_SIZE", "16", 0)
        let loop = EventLoop(name: "wp-main")
        let url = storage ?? "file://\(dataDir)"
        let store = try await openObjectStore(url, loop: loop)
        let (metadata, prefix) = try await openMetadata(metadataURL, dataDir: dataDir, loop: loop)
        let client: WoodpeckerClient
        if let logstores {
            var settings = QuorumSettings(nodes: logstores) { loop, address in
                LogStoreClient(loop: loop, address: address)
            }
            // With etcd, nodes registered there (`woodpecker logstore --metadata etcd://...`) join the seed list.
            settings.discoverFromMetadata = metadata is EtcdMetadataStore
            if !settings.discoverFromMetadata {
                settings.ensembleSize = min(3, Set(logstores).count)
                settings.ackQuorum = settings.ensembleSize / 2 + 1
            }
            let quorumClient = try WoodpeckerClient(loop: loop, store: store, metadata: metadata, config: config,
                                                    metadataRoot: prefix + "woodpecker", quorum: settings)
            try await onLoop(loop) { try await quorumClient.startLogStoreDiscovery() }
            client = quorumClient
        } else if url.hasPrefix("file://") {
            let dir = String(url.dropFirst("file://".count))
            client = WoodpeckerClient(loop: loop, store: store, metadata: metadata, config: config,
                                      metadataRoot: prefix + "woodpecker", segmentFilesRoot: dir + "/segments")
        } else {
            // An object PUT costs tens of ms whatever its size: gather entries for a short interval into bigger
            // blocks (many in flight) instead of flushing each produce request as its own object.
            var s3Config = config
            s3Config.flushWhenIdle = false
            s3Config.flushIntervalMs = max(config.flushIntervalMs, 10)
            s3Config.flushBytes = max(config.flushBytes, 8 << 20)
            client = WoodpeckerClient(loop: loop, store: store, metadata: metadata, config: s3Config,
                                      metadataRoot: prefix + "woodpecker")
        }
        return Runtime(loop: loop, store: store, metadata: metadata, client: client, metadataPrefix: prefix)
    }

    func close() async {
        await client.closeNodes()
        await metadata.close()
        if let s3 = store as? S3Store { await s3.close() }
    }
}

/// Runs `body` as a task that prefers `loop` (so continuations resumed by libuv callbacks stay on the loop).
func onLoop<T: Sendable>(_ loop: EventLoop, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    try await Task(executorPreference: loop) { try await body() }.value
}

/// Unbuffered-enough stdout: collects text and writes it with one write(2).
struct StdoutWriter {
    var buffer: [UInt8] = []
    mutating func append(_ s: String) { buffer.append(contentsOf: s.utf8) }
    mutating func append(bytes: [UInt8]) { buffer.append(contentsOf: bytes) }
    mutating func flush() {
        var off = 0
        while off < buffer.count {
            let n = buffer.withUnsafeBytes { write(1, $0.baseAddress! + off, $0.count - off) }
            if n <= 0 { break }
            off += n
        }
        buffer.removeAll(keepingCapacity: true)
    }
}

func fail(_ message: String) -> Never {
    Diagnostics.error(message)
    exit(1)
}
