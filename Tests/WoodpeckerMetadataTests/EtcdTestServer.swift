import Foundation
import Glibc
import Testing
import WoodpeckerCore
import WoodpeckerIO

/// A throwaway single-member etcd on free loopback ports with its own data directory.
///
/// `start()` waits until `/health` answers; `kill()` stops it with SIGKILL (the data dir stays, so `restart()`
/// brings the same cluster back on the same ports); `stop()` kills it and removes the data dir. Tests that use it
/// are skipped when the `etcd` binary is missing, unless `WP_REQUIRE_ETCD` is set (then they fail).
final class EtcdTestServer: @unchecked Sendable {
    static let binary: String? = {
        let paths = (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":")
        return paths.map { "\($0)/etcd" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }()
    static let required = ProcessInfo.processInfo.environment["WP_REQUIRE_ETCD"] != nil
    /// Whether etcd tests run: etcd is installed, or it is required (and a missing binary fails the test).
    static let enabled = binary != nil || required
    static let skipReason: Comment = "etcd is not installed (apt-get install etcd-server, or scripts/setup.sh test); set WP_REQUIRE_ETCD=1 to fail instead of skipping"

    let clientPort: Int
    let peerPort: Int
    let dataDir: TempDir
    let extraArgs: [String]
    private var process: Process?

    var endpoint: String { "http://127.0.0.1:\(clientPort)" }
    var peerEndpoint: String { "http://127.0.0.1:\(peerPort)" }

    private init(extraArgs: [String]) throws {
        clientPort = try freePort()
        peerPort = try freePort()
        dataDir = TempDir("etcd")
        self.extraArgs = extraArgs
    }

    static func start(extraArgs: [String] = []) async throws -> EtcdTestServer {
        let s = try EtcdTestServer(extraArgs: extraArgs)
        do {
            try await s.restart()
        } catch {
            s.stop()
            throw error
        }
        return s
    }

    /// Starts etcd (again) on the same ports and data dir and waits up to 20 s for `/health`.
    func restart() async throws {
        guard let binary = Self.binary else {
            throw WoodpeckerError(.invalidArgument, "WP_REQUIRE_ETCD is set but no etcd binary is on PATH")
        }
        precondition(process == nil, "etcd is already running")
        let p = Process()
        p.executableURL = URL(fileURLWithPath: binary)
        p.arguments = ["--name", "t", "--data-dir", dataDir.path + "/data",
                       "--listen-client-urls", endpoint, "--advertise-client-urls", endpoint,
                       "--listen-peer-urls", peerEndpoint, "--initial-advertise-peer-urls", peerEndpoint,
                       "--initial-cluster", "t=\(peerEndpoint)", "--log-outputs", dataDir.path + "/etcd.log",
                       "--logger", "zap"] + extraArgs
        p.standardOutput = FileHandle.nullDevice
        p.standardError = FileHandle.nullDevice
        try p.run()
        process = p
        let loop = EventLoop(name: "etcd-health")
        let http = HTTPClient(loop: loop)
        defer { _ = loop.shutdown() }
        let deadline = Clock.monotonicMillis() + 20_000
        while true {
            if let r = try? await http.execute(HTTPRequest(url: endpoint + "/health", timeoutMs: 1_000)),
               r.status == 200, String(decoding: r.body.readableBytesArray, as: UTF8.self).contains("true")
            {
                break
            }
            guard p.isRunning, Clock.monotonicMillis() < deadline else {
                await http.close()
                let log = (try? String(contentsOfFile: dataDir.path + "/etcd.log", encoding: .utf8)) ?? ""
                throw WoodpeckerError(.timeout, "etcd on \(endpoint) not healthy within 20 s; log tail: \(log.suffix(2_000))")
            }
            try await Task.sleep(nanoseconds: 50_000_000)
        }
        await http.close()
    }

    /// SIGKILL, and waits until the process is gone. The data dir stays.
    func kill() {
        guard let p = process else { return }
        Glibc.kill(p.processIdentifier, SIGKILL)
        p.waitUntilExit()
        process = nil
    }

    /// Kills etcd and removes its data dir.
    func stop() {
        kill()
        dataDir.remove()
    }

    /// POSTs a raw JSON body to this etcd (bypassing the store), returning the response body.
    func post(_ path: String, _ json: String, loop: EventLoop) async throws -> String {
        let http = HTTPClient(loop: loop)
        let result: Result<HTTPResponse, any Error>
        do {
            result = .success(try await http.execute(HTTPRequest(method: "POST", url: endpoint + path,
                                                                 headers: ["Content-Type": "application/json"],
                                                                 body: ByteBuffer(string: json), timeoutMs: 10_000)))
        } catch {
            result = .failure(error)
        }
        await http.close()
        return String(decoding: try result.get().body.readableBytesArray, as: UTF8.self)
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
func freePort() throws -> Int {
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
