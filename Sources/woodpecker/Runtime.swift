import Foundation
import Woodpecker
import WoodpeckerCore
import WoodpeckerIO
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

    /// `<dataDir>/segments` holds log data (one `data.log` per segment), `<dataDir>/meta` the embedded metadata
    /// journal, `<dataDir>/objects` anything stored as objects.
    static func local(dataDir: String, config: WALConfig = WALConfig()) async throws -> Runtime {
        try makeDirectories(dataDir)
        // libuv's threadpool runs every fsync; its default of 4 threads caps parallel block flushes.
        setenv("UV_THREADPOOL_SIZE", "16", 0)
        let loop = EventLoop(name: "wp-main")
        let store = LocalFileStore(root: dataDir + "/objects", loop: loop)
        let metadata = try await EmbeddedMetadataStore(directory: dataDir + "/meta", loop: loop)
        let client = WoodpeckerClient(loop: loop, store: store, metadata: metadata, config: config,
                                      segmentFilesRoot: dataDir + "/segments")
        return Runtime(loop: loop, store: store, metadata: metadata, client: client)
    }

    /// Storage chosen by URL: `file:///PATH` (or nil: `<dataDir>/segments`, one data.log per segment) or
    /// `s3://BUCKET/PREFIX?endpoint=URL&region=R[&create_bucket=true]` (one object per block). Metadata is embedded
    /// under `<dataDir>/meta` either way.
    static func open(dataDir: String, storage: String?, config: WALConfig = WALConfig()) async throws -> Runtime {
        guard let storage, storage.hasPrefix("s3://") else {
            var dir = dataDir
            if let storage {
                guard storage.hasPrefix("file://") else {
                    throw WoodpeckerError(.invalidArgument, "--storage \(storage): use file:///PATH or s3://BUCKET/PREFIX?endpoint=URL")
                }
                dir = String(storage.dropFirst("file://".count))
            }
            return try await local(dataDir: dir, config: config)
        }
        try makeDirectories(dataDir)
        setenv("UV_THREADPOOL_SIZE", "16", 0)
        let createBucket = storage.contains("create_bucket=true")
        let url = storage.replacingOccurrences(of: "&create_bucket=true", with: "").replacingOccurrences(of: "?create_bucket=true&", with: "?")
            .replacingOccurrences(of: "?create_bucket=true", with: "")
        let loop = EventLoop(name: "wp-main")
        let s3 = try S3Store(config: try S3Config.parse(url: url), loop: loop)
        try await onLoop(loop) {
            if createBucket { try await s3.createBucketIfMissing() }
            // Fencing relies on put-if-absent: refuse to run on a store that does not honour it.
            try await s3.verifyConditionalWrites()
        }
        let metadata = try await EmbeddedMetadataStore(directory: dataDir + "/meta", loop: loop)
        let client = WoodpeckerClient(loop: loop, store: s3, metadata: metadata, config: config)
        return Runtime(loop: loop, store: s3, metadata: metadata, client: client)
    }

    func close() async {
        await metadata.close()
        if let s3 = store as? S3Store { await s3.close() }
    }
}

func makeDirectories(_ path: String) throws {
    var built = path.hasPrefix("/") ? "" : "."
    for part in path.split(separator: "/") {
        built += "/" + part
        if mkdir(built, 0o755) != 0 && errno != EEXIST {
            throw ioError("mkdir", path: built, errno: errno)
        }
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
