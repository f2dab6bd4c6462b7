#!/usr/bin/env python3
"""TCP proxy for validating the compat suites against Tansu with Debian's kcat (librdkafka 2.0.2).

librdkafka 2.0.2 mis-parses the tagged fields Tansu 0.6.0 puts at the end of its ApiVersions v3+
response body (SupportedFeatures, FinalizedFeaturesEpoch, FinalizedFeatures, ZkMigrationReady).
This proxy forwards every byte unchanged except those responses, whose trailing tagged-field section
it replaces by an empty one (all four fields are optional). Start Tansu with its advertised listener
set to this proxy's address so that every client connection goes through it.

Usage: apiversions_proxy.py --listen PORT --upstream HOST:PORT. Runs until killed.
"""
import argparse
import asyncio
import struct
import sys


def read_uvarint(b, i):
    shift = value = 0
    while True:
        x = b[i]
        i += 1
        value |= (x & 0x7F) << shift
        if not x & 0x80:
            return value, i
        shift += 7


def strip_apiversions_tags(body: bytes) -> bytes:
    """body = correlation id + ApiVersions v3+ response body; returns it with no top-level tags."""
    i = 4 + 2  # correlation id, error_code
    n, i = read_uvarint(body, i)
    for _ in range(max(n - 1, 0)):
        i += 6  # api_key, min_version, max_version
        ntag, i = read_uvarint(body, i)
        for _ in range(ntag):
            _, i = read_uvarint(body, i)
            size, i = read_uvarint(body, i)
            i += size
    i += 4  # throttle_time_ms
    return body[:i] + b"\x00"


async def pump_requests(reader, writer, pending):
    while True:
        hdr = await reader.readexactly(4)
        size = struct.unpack(">i", hdr)[0]
        body = await reader.readexactly(size)
        key, ver, corr = struct.unpack(">hhi", body[:8])
        pending[corr] = (key, ver)
        writer.write(hdr + body)
        await writer.drain()


async def pump_responses(reader, writer, pending):
    while True:
        hdr = await reader.readexactly(4)
        size = struct.unpack(">i", hdr)[0]
        body = await reader.readexactly(size)
        corr = struct.unpack(">i", body[:4])[0]
        key, ver = pending.pop(corr, (None, None))
        if key == 18 and ver is not None and ver >= 3:
            try:
                body = strip_apiversions_tags(body)
            except (IndexError, struct.error) as e:
                print(f"apiversions_proxy: cannot parse ApiVersions v{ver} response: {e}", file=sys.stderr)
        writer.write(struct.pack(">i", len(body)) + body)
        await writer.drain()


async def handle(client_r, client_w, upstream):
    host, port = upstream.rsplit(":", 1)
    try:
        up_r, up_w = await asyncio.open_connection(host, int(port))
    except OSError as e:
        print(f"apiversions_proxy: upstream {upstream}: {e}", file=sys.stderr)
        client_w.close()
        return
    pending = {}
    tasks = [asyncio.create_task(pump_requests(client_r, up_w, pending)),
             asyncio.create_task(pump_responses(up_r, client_w, pending))]
    await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    for t in tasks:
        t.cancel()
    for w in (client_w, up_w):
        w.close()


async def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--listen", type=int, required=True)
    ap.add_argument("--upstream", required=True)
    a = ap.parse_args()
    server = await asyncio.start_server(lambda r, w: handle(r, w, a.upstream), "127.0.0.1", a.listen)
    print(f"apiversions_proxy listening on 127.0.0.1:{a.listen} -> {a.upstream}", file=sys.stderr, flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
