#!/usr/bin/env python3
"""Broker memory over a long steady run (make bench MEMORY=1): one `woodpecker broker` (local files by default),
the native generator producing 1 KiB records at a fixed rate into 8 partitions for --minutes, and a confluent-kafka
consumer tailing every partition in this process (so fetch caches are exercised too). The broker's RSS is sampled
every --interval seconds.

With --quorum the broker runs in QuorumBuffer mode over three `woodpecker logstore` nodes (data directories, objects
as local files), and each node's RSS is sampled too.

Writes compat/bench/results/memory.csv (t_s, rss_mib, consumed[, node RSS]), memory.md (min / median / max / last, the
median of the first and last minute, per process) and memory.png when matplotlib is installed; with --quorum the
files are memory-quorum.*.
"""
import argparse, csv, os, shutil, signal, statistics, subprocess, sys, tempfile, threading, time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from run import RESULTS, free_port, wait_port, rss_mib, log, last_json  # noqa: E402


def broker_pid(pid, wrap):
    """The broker's pid: the wrapper's youngest descendant when the broker runs under one."""
    if not wrap:
        return pid
    while True:
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                kids = f.read().split()
        except OSError:
            return pid
        if not kids:
            return pid
        pid = int(kids[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--woodpecker", required=True)
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--rate", type=int, default=10000, help="records/s of 1 KiB")
    ap.add_argument("--interval", type=float, default=5, help="seconds between RSS samples")
    ap.add_argument("--storage", default=None, help="broker --storage (default: local files)")
    ap.add_argument("--quorum", action="store_true", help="QuorumBuffer mode: three LogStore nodes, each sampled")
    ap.add_argument("--broker-arg", action="append", default=[], help="extra broker argument (repeatable), e.g. --broker-arg=--segment-bytes=33554432")
    ap.add_argument("--wrap", default="", help="command the broker runs under, e.g. 'heaptrack -o /tmp/broker' (RSS is then the wrapper's child's)")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir (process logs) and print its path")
    ap.add_argument("--name", default=None, help="results file name (default memory, or memory-quorum with --quorum)")
    a = ap.parse_args()
    os.makedirs(RESULTS, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="wp-mem-")
    port = free_port(); topic = "memory"
    args = [a.woodpecker, "broker", "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(tmp, "data")]
    nodes = []
    if a.quorum:
        objects = a.storage or f"file://{os.path.join(tmp, 'objects')}"
        addrs = []
        for i in range(3):
            p = free_port(); addrs.append(f"127.0.0.1:{p}")
            nodes.append(subprocess.Popen([a.woodpecker, "logstore", "--listen", addrs[-1], "--storage", objects,
                                           "--data-dir", os.path.join(tmp, f"ls{i}")],
                                          stdout=open(os.path.join(tmp, f"ls{i}.log"), "w"), stderr=subprocess.STDOUT))
        for ad in addrs:
            if not wait_port(int(ad.split(":")[1])):
                sys.exit(f"memory: logstore {ad} did not start")
        args += ["--mode", "quorum", "--logstores", ",".join(addrs), "--storage", objects]
    elif a.storage:
        args += ["--storage", a.storage]
    args += a.broker_arg
    broker = subprocess.Popen(a.wrap.split() + args, stdout=open(os.path.join(tmp, "broker.log"), "w"), stderr=subprocess.STDOUT)
    samples, consumed, stop = [], [0], threading.Event()
    gen = None
    try:
        if not wait_port(port):
            sys.exit("memory: broker did not start")
        seconds = a.minutes * 60
        gen = subprocess.Popen([a.woodpecker, "bench", "kafka", "--bootstrap", f"127.0.0.1:{port}", "--topic", topic,
                                "--partitions", "8", "--record-bytes", "1024", "--records-per-batch", "10",
                                "--rate", str(a.rate), "--in-flight", "256", "--seconds", str(seconds), "--label", "memory"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

        def tail():
            from confluent_kafka import Consumer, TopicPartition
            time.sleep(2)  # the generator creates the topic
            c = Consumer({"bootstrap.servers": f"127.0.0.1:{port}", "group.id": "memory-unused", "enable.auto.commit": False})
            c.assign([TopicPartition(topic, i, 0) for i in range(8)])
            while not stop.is_set():
                for m in c.consume(1000, 0.5):
                    if m.error() is None:
                        consumed[0] += 1
            c.close()
        th = threading.Thread(target=tail, daemon=True); th.start()
        start = time.time()
        log(f"memory: {a.minutes:g} min at {a.rate} x 1 KiB records/s into 8 partitions, RSS every {a.interval:g} s")
        while gen.poll() is None and broker.poll() is None:
            t = time.time() - start
            samples.append((round(t, 1), rss_mib(broker_pid(broker.pid, a.wrap)), consumed[0]) + tuple(rss_mib(n.pid) for n in nodes))
            if len(samples) % 12 == 1:
                extra = f" logstores={list(samples[-1][3:])} MiB" if nodes else ""
                log(f"  t={t:5.0f}s rss={samples[-1][1]} MiB consumed={consumed[0]}{extra}")
            time.sleep(a.interval)
        out = gen.stdout.read()
        res = last_json(out) or {}
        stop.set(); th.join(10)
    except KeyboardInterrupt:
        res = {}
    finally:
        if gen and gen.poll() is None:
            gen.terminate(); gen.wait()
        if a.wrap and broker.poll() is None:
            # A wrapper (heaptrack) may not pass SIGTERM on: stop the broker itself, the wrapper then ends.
            real = broker_pid(broker.pid, a.wrap)
            if real != broker.pid:
                try:
                    os.kill(real, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for p in [broker] + nodes:
            p.send_signal(signal.SIGTERM)
        for p in [broker] + nodes:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill(); p.wait()
        if a.keep:
            log(f"memory: logs kept in {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if not samples:
        sys.exit("memory: no samples")
    name = a.name or ("memory-quorum" if a.quorum else "memory")
    names = ["broker"] + [f"logstore {i}" for i in range(len(nodes))]
    with open(os.path.join(RESULTS, f"{name}.csv"), "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t_s", "rss_mib", "consumed"] + [f"logstore{i}_rss_mib" for i in range(len(nodes))])
        w.writerows(samples)
    per_min = max(1, int(60 / a.interval))
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    where = ("QuorumBuffer (three LogStores with data directories, objects as local files)" if a.quorum
             else "local files" if not a.storage else a.storage.split('?')[0])
    md = [f"Memory, measured {stamp} on {os.uname().nodename} ({os.cpu_count()} cores, shared), `make bench MEMORY=1"
          f"{' QUORUM=1' if a.quorum else ''}`: woodpecker broker on {where}, {a.minutes:g} min of "
          f"{a.rate} x 1 KiB records/s (acks=all, native generator, 8 partitions) with a tailing consumer; RSS every {a.interval:g} s.",
          "", "| process | samples | min MiB | median MiB | max MiB | last MiB | first-minute median | last-minute median |",
          "|---|---|---|---|---|---|---|---|"]
    for k, who in enumerate(names):
        rss = [s[1] if k == 0 else s[2 + k] for s in samples]
        first, last = statistics.median(rss[:per_min]), statistics.median(rss[-per_min:])
        md.append(f"| {who} | {len(rss)} | {min(rss)} | {statistics.median(rss):g} | {max(rss)} | {rss[-1]} | {first:g} | {last:g} |")
    md += ["", f"Produced {res.get('acked', '-')} records ({res.get('errors', '-')} errors); the consumer read {consumed[0]}."]
    with open(os.path.join(RESULTS, f"{name}.md"), "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(md))
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 3))
        for k, who in enumerate(names):
            ax.plot([s[0] / 60 for s in samples], [s[1] if k == 0 else s[2 + k] for s in samples], label=who)
        ax.set_xlabel("minutes"); ax.set_ylabel("RSS MiB"); ax.set_ylim(bottom=0)
        if nodes:
            ax.legend(fontsize=7)
        ax.set_title(f"woodpecker {'QuorumBuffer ' if nodes else ''}RSS, {a.rate} x 1 KiB records/s, acks=all", fontsize=9)
        fig.tight_layout(); fig.savefig(os.path.join(RESULTS, f"{name}.png"), dpi=90)
    except ImportError:
        print("memory: matplotlib not installed: no chart")


if __name__ == "__main__":
    main()
