#!/bin/bash
# usage: compat/tools/quorum_s3_restart_repro.sh embedded|etcd
# Reproduces the crash in NOTES.md (session 6): a QuorumBuffer broker on SeaweedFS S3 (metadata embedded or in
# etcd on :23790), three LogStores on :18080-18082, broker on :9092; produce 3 s, kill -9 the broker, restart it,
# fetch both partitions with kcat. Prints the records read per partition and how often the restarted broker
# crashed; its log is kept as /tmp/crash-broker2.log. B=path picks the binary (default: the release build).
MODE=$1
B=${B:-$(cd "$(dirname "$0")/../.." && pwd)/.build/release/woodpecker}
R=$(mktemp -d /tmp/crash.XXXX)
export AWS_ACCESS_KEY_ID=key AWS_SECRET_ACCESS_KEY=secret AWS_REGION=us-east-1
ST="s3://woodpecker/data?endpoint=http://127.0.0.1:8333&region=us-east-1&create_bucket=true"
PIDS=()
echo '{"identities":[{"name":"admin","credentials":[{"accessKey":"key","secretKey":"secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}' >"$R/s3.json"
weed mini -dir="$R/weed" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.config="$R/s3.json" -webdav=false -admin.ui=false -master.telemetry=false >"$R/weed.log" 2>&1 & PIDS+=($!)
META=""
if [ "$MODE" = etcd ]; then
  etcd --name local --data-dir "$R/etcd" --listen-client-urls http://127.0.0.1:23790 --advertise-client-urls http://127.0.0.1:23790 --listen-peer-urls http://127.0.0.1:23800 --initial-advertise-peer-urls http://127.0.0.1:23800 --initial-cluster local=http://127.0.0.1:23800 >"$R/etcd.log" 2>&1 & PIDS+=($!)
  META="--metadata etcd://127.0.0.1:23790/woodpecker"
fi
for _ in $(seq 300); do (echo >/dev/tcp/127.0.0.1/8333) 2>/dev/null && break; sleep 0.1; done; sleep 2
for i in 0 1 2; do $B logstore --listen 127.0.0.1:$((18080+i)) --storage "$ST" --data-dir $R/ls$i > $R/ls$i.log 2>&1 & PIDS+=($!); done
sleep 1
start_broker() { $B broker --listen 127.0.0.1:9092 --data-dir $R/broker $META --storage "$ST" --mode quorum --logstores 127.0.0.1:18080,127.0.0.1:18081,127.0.0.1:18082 > $R/broker$1.log 2>&1 & BP=$!; for _ in $(seq 100); do grep -q "listening on" $R/broker$1.log 2>/dev/null && break; sleep 0.1; done; }
start_broker 1
$B bench kafka --bootstrap 127.0.0.1:9092 --topic runs --partitions 2 --record-bytes 10240 --records-per-batch 1 --in-flight 16 --seconds 3 2>&1 | grep -v "^{" | head -1
kill -9 $BP; sleep 0.5
start_broker 2
for p in 0 1; do timeout 30 kcat -C -b 127.0.0.1:9092 -t runs -p $p -o beginning -e -q -f '%o\n' 2>/dev/null | wc -l; done
echo "crashes: $(grep -c 'Program crashed' $R/broker2.log)"
kill $BP 2>/dev/null; kill ${PIDS[@]} 2>/dev/null; sleep 1; kill -9 ${PIDS[@]} 2>/dev/null
cp $R/broker2.log /tmp/crash-broker2.log; rm -rf $R
