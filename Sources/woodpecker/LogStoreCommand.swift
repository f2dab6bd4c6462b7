import ArgumentParser
import Foundation
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerLogStore
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
        if storage.hasPrefix("file://") { options.maxParallelUploads = 4 }
        if let d = dataDir { try FileOps.makeDirectories(d) }
        let node = LogStoreNode(loop: loop, store: store, dataDirectory: dataDir, options: options)
        try await onLoop(loop) { try await node.start(host: host, port: port) }
        let bound = await node.port
        var out = StdoutWriter()
        out.append("logstore listening on \(host):\(bound)\n")
        out.flush()
        let stop = AsyncStream<Int32>.makeStream()
        let watcher = await SignalWatcher(loop: loop, signals: [SIGTERM, SIGINT]) { stop.continuation.yield($0) }
        for await sig in stop.stream {
            Diagnostics.info("signal \(sig): stopping the LogStore node")
            break
        }
        try await onLoop(loop) { await node.stop() }
        await watcher.close()
        if let s3 = store as? S3Store { await s3.close() }
        Diagnostics.info("logstore stopped")
    }
}
