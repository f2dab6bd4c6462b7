#!/usr/bin/env bash
# The broker with its metadata in a real etcd (woodpecker only): topics, segments and producer ids under a prefix;
# kcat round trip; etcd killed during a produce stream: appends inside the current segment keep being
# acknowledged; etcd restarted on the same data dir; kill -9 of the broker; every acknowledged record read back.
. "$(dirname "$0")/../lib.sh"
[ "$BROKER_KIND" = woodpecker ] || skip_suite "etcd metadata is a woodpecker feature"
command -v etcd >/dev/null || { [ "${COMPAT_STRICT:-0}" = 1 ] && { fail "etcd is installed (apt-get install etcd-server)"; finish; }; skip_suite "etcd not installed"; }
require_python_modules confluent_kafka

EP=$(free_port); PP=$(free_port); ED="$COMPAT_TMP/etcd"
etcd_start() {
  etcd --name t --data-dir "$ED" --listen-client-urls "http://127.0.0.1:$EP" --advertise-client-urls "http://127.0.0.1:$EP" \
    --listen-peer-urls "http://127.0.0.1:$PP" --initial-advertise-peer-urls "http://127.0.0.1:$PP" \
    --initial-cluster "t=http://127.0.0.1:$PP" >>"$COMPAT_TMP/etcd.log" 2>&1 &
  ETCD_PID=$!; track $ETCD_PID
  for ((i=0; i<100; i++)); do curl -sf "http://127.0.0.1:$EP/health" >/dev/null 2>&1 && return 0; sleep 0.1; done
  return 1
}
check "etcd starts on 127.0.0.1:$EP" etcd_start
check "broker starts with --metadata etcd://127.0.0.1:$EP/wp-compat" broker_start --metadata "etcd://127.0.0.1:$EP/wp-compat"

T=$(topic_name etcd)
kcat_use deb
seq 1 3000 | sed 's/^\(.*\)$/k\1:v\1/' >"$COMPAT_TMP/in.txt"
check "kcat -P 3000 keyed records" kc -P -t "$T" -K: -l "$COMPAT_TMP/in.txt"
kc -C -t "$T" -e -o beginning -f '%k:%s\n' -q >"$COMPAT_TMP/out.txt"
check "kcat -C -e reads back the same records in order" same_file "$COMPAT_TMP/in.txt" "$COMPAT_TMP/out.txt"
check "the topic is recorded in etcd under the prefix" \
  bash -c "ETCDCTL_API=3 etcdctl --endpoints=127.0.0.1:$EP get --prefix wp-compat/kafka/topics/ --keys-only | grep -q '$T'"

# Metadata traffic per produced megabyte: etcd's own request counters around a steady produce.
etcd_ops() { curl -s "http://127.0.0.1:$EP/metrics" | awk '/^etcd_mvcc_(put|txn|range|delete)_total/ {s+=$2} END {print s+0}'; }
T3=$(topic_name etcdrate)
opsw=$(etcd_ops)
check "producer warm-up to $T3" py produce.py --topic "$T3" --count 10
ops0=$(etcd_ops); t0=$(date +%s.%N)
check "etcd's counters see the broker's metadata writes (topic creation, segment open: $opsw -> $ops0)" test "$ops0" -gt "$opsw"
check "steady produce of 20000 x 1 KiB records" timeout -k 5 120 "$PYTHON" "$COMPAT_PY/../bench/bench_produce.py" \
  --bootstrap "$BROKER" -n 20000 -s 1024 --no-consume --topic-name "$T3"
ops1=$(etcd_ops); t1=$(date +%s.%N)
log "etcd operations during the produce: $((ops1 - ops0)) for 20.5 MB in $(python3 -c "print(round($t1-$t0,1))") s"
check "no etcd operation per append: at most 5 etcd ops per produced MB (segment rolls only)" \
  test $((ops1 - ops0)) -le 100

T2=$(topic_name etcdfault)
acked="$COMPAT_TMP/acked.txt"; : >"$acked"
# Create the topic and open its partition before etcd goes away (creation needs etcd).
check "producer warm-up to $T2" py produce.py --topic "$T2" --count 10
timeout -k 5 240 "$PYTHON" "$COMPAT_PY/crash_producer.py" --bootstrap "$BROKER" --topic "$T2" --count 6000 \
  --rate 1500 --acked "$acked" --timeout 200 >"$COMPAT_TMP/producer.log" 2>&1 &
prod=$!; track $prod
for ((i=0; i<200; i++)); do [ "$(wc -l <"$acked")" -ge 1000 ] && break; sleep 0.1; done
before=$(wc -l <"$acked")
kill -KILL $ETCD_PID; wait $ETCD_PID 2>/dev/null
log "etcd killed at $before acknowledged records"
sleep 2
during=$(wc -l <"$acked")
check "appends inside the current segment are still acknowledged while etcd is down ($before -> $during)" test "$during" -gt "$before"
check "etcd restarts on the same data dir" etcd_start
wait $prod; prc=$?
check "producer finished with every record acknowledged (exit $prc)" test $prc = 0
broker_kill9
check "broker restarts after kill -9 with metadata in etcd" broker_restart
check "every acknowledged record is at its offset with identical key/value" \
  py verify_acked.py --topic "$T2" --acked "$acked" --expect-acked 6000 --check-hwm --timeout 100
check "SIGTERM stops the broker cleanly" broker_stop
finish
