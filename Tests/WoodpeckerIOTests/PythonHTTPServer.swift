import WoodpeckerCore

#if canImport(Glibc)
import Glibc
#endif

/// A real HTTP/1.1 server (Python's http.server, threaded, keep-alive) started for one test on a free loopback
/// port, and stopped by its PID.
final class PythonHTTPServer: Sendable {
    let pid: pid_t
    let port: Int
    let directory: String

    static let script = #"""
import sys, time, threading
from http.server import ThreadingHTTPServer, BaseHTTPRequestHandler
from urllib.parse import urlparse, parse_qs

lock = threading.Lock()
inflight = 0
peak = 0

class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass

    def send(self, code, body, headers=()):
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers: self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        global inflight, peak
        u = urlparse(self.path); q = parse_qs(u.query)
        if u.path == "/hello":
            self.send(200, b"hello world", [("X-Test", "yes")])
        elif u.path == "/port":
            self.send(200, str(self.client_address[1]).encode())
        elif u.path == "/slow":
            with lock:
                inflight += 1; peak = max(peak, inflight)
            time.sleep(int(q.get("ms", ["100"])[0]) / 1000.0)
            with lock: inflight -= 1
            self.send(200, q.get("id", [""])[0].encode())
        elif u.path == "/peak":
            with lock: p = peak
            self.send(200, str(p).encode())
        elif u.path == "/hang":
            time.sleep(30)
        elif u.path == "/big":
            self.send(200, bytes(i % 251 for i in range(int(q["bytes"][0]))))
        elif u.path == "/chunked":
            n = int(q.get("n", ["5"])[0]); ms = int(q.get("ms", ["30"])[0])
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for i in range(n):
                data = ("chunk-%d\n" % i).encode()
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data)); self.wfile.flush()
                time.sleep(ms / 1000.0)
            self.wfile.write(b"0\r\n\r\n"); self.wfile.flush()
        else:
            self.send(404, b"not found: " + u.path.encode())

    def echo(self):
        n = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(n)
        self.send(200, body, [("X-Method", self.command), ("X-Content-Type", self.headers.get("Content-Type", ""))])

    do_PUT = echo
    do_POST = echo
    def do_DELETE(self):
        self.send(204 if self.path != "/missing" else 404, b"")

class S(ThreadingHTTPServer):
    daemon_threads = True

srv = S(("127.0.0.1", 0), H)
with open(sys.argv[1] + ".tmp", "w") as f: f.write(str(srv.server_address[1]))
import os; os.rename(sys.argv[1] + ".tmp", sys.argv[1])
srv.serve_forever()
"""#

    private init(pid: pid_t, port: Int, directory: String) {
        self.pid = pid
        self.port = port
        self.directory = directory
    }

    static func start() async throws -> PythonHTTPServer {
        var template = Array("/tmp/wp-io-http-XXXXXX".utf8CString)
        guard let dirp = mkdtemp(&template) else { throw WoodpeckerError(.ioFailure, "mkdtemp failed") }
        let dir = String(cString: dirp)
        let scriptPath = dir + "/server.py"
        let portPath = dir + "/port"
        try writeFile(scriptPath, script)
        let argv: [String] = ["python3", scriptPath, portPath]
        var cargs: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        var cenv: [UnsafeMutablePointer<CChar>?] = currentEnvironment().map { strdup($0) } + [nil]
        defer {
            for p in cargs { free(p) }
            for p in cenv { free(p) }
        }
        var pid: pid_t = 0
        let rc = posix_spawnp(&pid, "python3", nil, nil, &cargs, &cenv)
        guard rc == 0 else { throw WoodpeckerError(.ioFailure, "spawn python3: \(rc)") }
        let deadline = Clock.monotonicMillis() + 10_000
        while Clock.monotonicMillis() < deadline {
            if let text = readFile(portPath), let port = Int(text) {
                return PythonHTTPServer(pid: pid, port: port, directory: dir)
            }
            try await Task.sleep(nanoseconds: 10_000_000)
        }
        kill(pid, SIGKILL)
        var st: Int32 = 0
        waitpid(pid, &st, 0)
        throw WoodpeckerError(.timeout, "python3 HTTP server did not start within 10 s")
    }

    var baseURL: String { "http://127.0.0.1:\(port)" }

    func stop() {
        kill(pid, SIGKILL)
        var st: Int32 = 0
        waitpid(pid, &st, 0)
        unlink(directory + "/server.py")
        unlink(directory + "/port")
        rmdir(directory)
    }
}

private func writeFile(_ path: String, _ text: String) throws {
    guard let f = fopen(path, "w") else { throw WoodpeckerError(.ioFailure, "open \(path)") }
    defer { fclose(f) }
    let bytes = Array(text.utf8)
    _ = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }
}

private func readFile(_ path: String) -> String? {
    guard let f = fopen(path, "r") else { return nil }
    defer { fclose(f) }
    var out = [UInt8]()
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buf.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, f) }
        if n <= 0 { break }
        out.append(contentsOf: buf[0..<n])
    }
    return String(decoding: out, as: UTF8.self)
}

/// This process's environment, read from /proc (Swift 6 forbids touching the global `environ`).
private func currentEnvironment() -> [String] {
    guard let text = readFile("/proc/self/environ") else { return [] }
    return text.split(separator: "\0").map(String.init)
}
