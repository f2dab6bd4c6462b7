import Foundation
import Testing
import Woodpecker
import WoodpeckerCore
import WoodpeckerIO
import WoodpeckerMetadata
import WoodpeckerStorage

#if canImport(Glibc)
import Glibc
#endif

/// A throwaway single-member etcd for WAL tests: free loopback ports, its own data dir. `pause()`/`resume()`
/// SIGSTOP/SIGCONT it (an etcd that hangs rather than refuses); `stop()` kills it and removes the data dir.
/// Tests using it are skipped when `etcd` is not on PATH, unless `WP_REQUIRE_ETCD` is set (then they fail).
final class WALEtcdServer: @unchecked Sendable {
    static let binary: String? = {
        let paths = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        return paths.map { "\($0)/etcd" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()
    static let enabled = binary != nil || ProcessInfo.processInfo.environment["WP_REQUIRE_ETCD"] != nil
    static let skipReason: Comment = "etcd is not installed (apt-get install etcd-server); set WP_REQUIRE_ETCD=1 to fail instead"

    let clientPort: Int
    let peerPort: Int
    let dataDir: String
    private let process = Process()

    var endpoint: String { "http://127.0.0.1:\(clientPort)" }

    init() async throws {
        guard let binary = Self.binary else {
            throw WoodpeckerError(.invalidArgument, "WP_REQUIRE_ETCD is set but no etcd binary is on PATH")
        }
        clientPort = try walFreePort()
        peerPort = try walFreePort()
        dataDir = NSTemporaryDirectory() + "wp-wal-etcd-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true)
        let peer = "http://127.0.0.1:\(peerPort)"
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--name", "t", "--data-dir", dataDir + "/data",
                             "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
                             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                             "--initial-cluster", "t=\(peer)", "--log-outputs", dataDir + "/etcd.log", "--logger", "zap"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        let deadline = Clock.monotonicMillis() + 20_000
        while !healthy() {
            guard process.isRunning, Clock.monotonicMillis() < deadline else {
                stop()
                throw WoodpeckerError(.timeout, "etcd on \(endpoint) not healthy within 20 s")
            }
            usleep(50_000)
        }
    }

    /// A GET of /health over a plain socket (no loop needed).
    private func healthy() -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        addr.sin_port = UInt16(clientPort).bigEndian
        let ok = withUnsafePointer(to: &addr) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard ok == 0 else { return false }
        var tv = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        let req = Array("GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".utf8)
        guard req.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == req.count else { return false }
        var buf = [UInt8](repeating: 0, count: 4096)
        var got: [UInt8] = []
        while true {
            let n = buf.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            got += buf.prefix(n)
        }
        return String(decoding: got, as: UTF8.self).contains("\"health\":\"true\"")
    }

    func pause() { kill(process.processIdentifier, SIGSTOP) }
    func resume() { kill(process.processIdentifier, SIGCONT) }

    func stop() {
        if process.isRunning {
            kill(process.processIdentifier, SIGCONT)
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try? FileManager.default.removeItem(atPath: dataDir)  // best effort: a temp dir
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
func walFreePort() throws -> Int {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw WoodpeckerError(.ioFailure, "socket() failed: errno \(errno)") }
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = 0
    let bound = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0 else { throw WoodpeckerError(.ioFailure, "bind(127.0.0.1:0) failed: errno \(errno)") }
    var len = socklen_t(MemoryLayout<sockaddr_in>.size)
    let named = withUnsafeMutablePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &len) }
    }
    guard named == 0 else { throw WoodpeckerError(.ioFailure, "getsockname failed: errno \(errno)") }
    return Int(UInt16(bigEndian: addr.sin_port))
}

/// One etcd, one loop and a segment directory; `client(ttl:)` makes a client with its own etcd connection (as a
/// separate process would have), all keys under `prefix`.
final class WALEtcdEnv: @unchecked Sendable {
    let server: WALEtcdServer
    let loop: EventLoop
    let dir: String
    let prefix = "wal-test/"
    private var stores: [EtcdMetadataStore] = []

    init(server: WALEtcdServer, loop: EventLoop) throws {
        self.server = server
        self.loop = loop
        dir = NSTemporaryDirectory() + "wp-wal-etcdenv-\(getpid())-\(UInt64.random(in: 0...UInt64.max))"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    /// A new etcd connection, closed with the env. Short request timeouts so a hung etcd fails calls quickly.
    func store(endpoint: String? = nil) -> EtcdMetadataStore {
        var o = EtcdMetadataStore.Options()
        o.requestTimeoutMs = 3_000
        let s = EtcdMetadataStore(endpoints: [endpoint ?? server.endpoint], loop: loop, options: o)
        stores.append(s)
        return s
    }

    func client(ttl: Int64 = 2, store: (any MetadataStore)? = nil) -> WoodpeckerClient {
        var c = WALConfig.test
        c.writerLeaseTTLSeconds = ttl
        return WoodpeckerClient(loop: loop, store: LocalFileStore(root: dir + "/objects", loop: loop),
                                metadata: store ?? self.store(), config: c, metadataRoot: prefix + "woodpecker",
                                segmentFilesRoot: dir + "/segments")
    }

    func close() async {
        for s in stores { await s.close() }
        try? FileManager.default.removeItem(atPath: dir)  // best effort: a temp dir
    }
}

/// Runs `body` on a fresh loop with a fresh etcd; stops everything afterwards.
func withEtcdWAL(_ body: @escaping @Sendable (WALEtcdEnv) async throws -> Void) async throws {
    let server = try await WALEtcdServer()
    defer { server.stop() }
    let loop = EventLoop(name: "wal-etcd-test")
    let env = try WALEtcdEnv(server: server, loop: loop)
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
    try result.get()
}
