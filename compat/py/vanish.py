#!/usr/bin/env python3
"""Connects to a server, pipelines many requests, then resets the connection (SO_LINGER 0) without reading the
answers, several rounds. A server that does not ignore SIGPIPE dies writing its answers to the reset socket.
Exit 0 once the rounds are done (the caller then checks the server is alive)."""
import argparse, socket, struct, time


def logstore_health(i):
    # u32 length | u16 version | u16 opcode (7 = health) | u64 request id, no body
    return struct.pack(">IHHQ", 12, 1, 7, i)


def kafka_api_versions(i):
    client = b"vanish"
    body = struct.pack(">hhih", 18, 0, i, len(client)) + client
    return struct.pack(">i", len(body)) + body


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--kind", choices=["logstore", "kafka"], required=True)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--requests", type=int, default=20000)
    a = ap.parse_args()
    make = logstore_health if a.kind == "logstore" else kafka_api_versions
    payload = b"".join(make(i) for i in range(a.requests))
    for _ in range(a.rounds):
        s = socket.create_connection(("127.0.0.1", a.port), timeout=5)
        s.sendall(payload)
        time.sleep(0.2)  # let the server fill both socket buffers with answers
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    print(f"vanish: {a.rounds} rounds of {a.requests} {a.kind} requests, each connection reset unread")


if __name__ == "__main__":
    main()
