#!/usr/bin/env python3
"""A fault-injecting HTTP proxy for S3 tests: forwards each request to the upstream S3 server unchanged (the Host
header is kept, so SigV4 signatures still verify) and, at random, injects a fault:
  - 503 SlowDown without forwarding          (--p503)
  - 500 InternalError without forwarding     (--p500)
  - forward, then drop the connection before answering (--pdrop): the write landed, the client does not know;
    its retry of a conditional PUT then meets a real 412, which the store must recognise as its own write
  - a slow response (--pslow, --slow-ms)
Every fault is counted; the counts are printed on SIGTERM and to --stats on exit.
"""
import argparse, http.client, json, random, signal, socketserver, sys, threading, time
from http.server import BaseHTTPRequestHandler

STATS = {"requests": 0, "503": 0, "500": 0, "drop": 0, "slow": 0}
LOCK = threading.Lock()


def count(k):
    with LOCK:
        STATS[k] += 1


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def _handle(self):
        count("requests")
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        r = random.random()
        a = self.server.args
        if r < a.p503:
            count("503"); return self._reply(503, b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>")
        r -= a.p503
        if r < a.p500:
            count("500"); return self._reply(500, b"<Error><Code>InternalError</Code><Message>injected</Message></Error>")
        r -= a.p500
        drop = r < a.pdrop
        r -= a.pdrop
        if r < a.pslow:
            count("slow"); time.sleep(a.slow_ms / 1000)
        conn = http.client.HTTPConnection(a.upstream_host, a.upstream_port, timeout=30)
        headers = {k: v for k, v in self.headers.items()}
        conn.request(self.command, self.path, body=body if body or self.command in ("PUT", "POST") else None, headers=headers)
        resp = conn.getresponse()
        data = resp.read()
        if drop:
            count("drop")
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() in ("transfer-encoding", "connection", "content-length"):
                continue
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        conn.close()

    def _reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


class Server(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--upstream", required=True, help="HOST:PORT")
    ap.add_argument("--p503", type=float, default=0.03)
    ap.add_argument("--p500", type=float, default=0.02)
    ap.add_argument("--pdrop", type=float, default=0.03)
    ap.add_argument("--pslow", type=float, default=0.02)
    ap.add_argument("--slow-ms", type=int, default=300)
    ap.add_argument("--stats", default=None)
    a = ap.parse_args()
    a.upstream_host, a.upstream_port = a.upstream.rsplit(":", 1)[0], int(a.upstream.rsplit(":", 1)[1])
    srv = Server(("127.0.0.1", a.listen), Handler)
    srv.args = a

    def stop(*_):
        if a.stats:
            with open(a.stats, "w") as f:
                json.dump(STATS, f)
        print(json.dumps(STATS), flush=True)
        threading.Thread(target=srv.shutdown).start()
    signal.signal(signal.SIGTERM, stop)
    srv.serve_forever()


if __name__ == "__main__":
    main()
