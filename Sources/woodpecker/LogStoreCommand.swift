import ArgumentParser
import Foundation
import WoodpeckerCore
import WoodpeckerIO
import Woodpecker
import WoodpeckerLogStore
import WoodpeckerMetadata
import WoodpeckerStorage

#if canImport(Glibc)
import Glibc
#endif

/// `woodpecker logstore`: one LogStore node of QuorumBuffer mode.
struct LogStoreCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "logstore",
        abstract: "Run a LogStore node: buffers QuorumBuffer segment blocks and uploads confirmed ones to object storage.")
    @Option(help: "HOST:PORT to listen on.") var listen: String
    @Option(help: "Object storage: file:///PATH (objects under PATH/objects) or s3://BUCKET/PREFIX?endpoint=URL&region=R[&create_bucket=true].")
    var storage: String
    @Option(help: "Directory of per-segment files: held blocks survive a restart of the node.") var dataDir: String?
    @Option(help: "Bytes of held blocks before appends are refused with bufferFull (default 256 MiB).") var maxBufferBytes: Int?
    @Flag(help: "fdatasync every append before replying.") var sync = false
    @Option(help: "Register this node in etcd (etcd://HOST:PORT[,HOST:PORT]/PREFIX, the brokers' --metadata) under a lease, so that brokers in quorum mode find it.")
    var metadata: String?
    @Option(help: "HOST:PORT brokers use to reach this node (default: the --listen address).") var advertise: String?
    @Flag(help: "Log debug lines.") var verbose = false

    func run() async throws {
        Diagnostics.verbose = verbose
        guard let colon = listen.lastIndex(of: ":"), let port = Int(listen[listen.index(after: colon)...]),
              port >= 0, port < 65536 else { throw ValidationError("--listen: expected HOST:PORT, got \(listen)") }
        let host = String(listen[..<colon])
        setenv("UV_THREADPOOL_SIZE", "16", 0)
        let loop = EventLoop(name: "wp-logstore")
        let store = try await Runtime.openObjectStore(storage, loop: loop)
        var options = LogStoreNodeOptions()
        if let m = maxBufferBytes { options.maxBufferedBytes = m }
        options.syncWrites = sync
        // Uploads to a local filesystem fsync on the thread pool, which the data-directory writes also use: keep
        // a few threads free for those (S3 uploads run on the loop and keep the default).
        if storage.hasPrefix("file://") { options.maxParallelUploads = 8 }
        if let d = dataDir { try FileOps.makeDirectories(d) }
        let node = LogStoreNode(loop: loop, store: store, dataDirectory: dataDir, options: options)
        try await onLoop(loop) { try await node.start(host: host, port: port) }
        let releaser = MemoryReleaser(loop: loop)
        loop.execute { releaser.start() }
        let bound = await node.port
        var out = StdoutWriter()
        out.append("logstore listening on \(host):\(bound)\n")
        out.flush()
        var registration: LogStoreRegistration?
        var registry: (any MetadataStore)?
        if let metadata {
            guard metadata.hasPrefix("etcd") else { throw ValidationError("--metadata \(metadata): LogStores register in etcd only (etcd://HOST:PORT/PREFIX)") }
            let address = advertise ?? "\(host == "0.0.0.0" ? "127.0.0.1" : host):\(bound)"
            let (store, prefix) = try await Runtime.openMetadata(metadata, dataDir: dataDir ?? ".", loop: loop)
            registry = store
            registration = try await onLoop(loop) {
                try await LogStoreRegistration.start(metadata: store, metadataRoot: prefix + "woodpecker", address: address, loop: loop)
            }
            Diagnostics.info("logstore registered as \(address) in \(metadata)")
        }
        let stop = AsyncStream<Int32>.makeStream()
        let watcher = await SignalWatcher(loop: loop, signals: [SIGTERM, SIGINT]) { stop.continuation.yield($0) }
        for await sig in stop.stream {
            Diagnostics.info("signal \(sig): stopping the LogStore node")
            break
        }
        if let registration { try await onLoop(loop) { await registration.stop() } }
        if let registry { await registry.close() }
        try await onLoop(loop) {
            releaser.stop()
            await node.stop()
        }
        await watcher.close()
        if let s3 = store as? S3Store { await s3.close() }
        Diagnostics.info("logstore stopped")
    }
}
