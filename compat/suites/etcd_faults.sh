#!/usr/bin/env bash
# The broker on etcd while etcd hangs (SIGSTOP) and while it is down (SIGKILL + restart), each shorter than the
# writer lease TTL (10 s), during a sustained acks=all produce: appends inside the current segment keep being
# acknowledged; CreateTopics, which needs etcd, fails while it is gone and works once it is back; every
# acknowledged record reads back. Also prints etcd requests per second during a steady produce (all gRPC
# requests etcd handled, lease keep-alives included).
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
# Every request etcd served (KV, lease, auth...; the JSON gateway goes through gRPC).
etcd_requests() { curl -s "http://127.0.0.1:$EP/metrics" | awk '/^grpc_server_handled_total/ {s+=$2} END {print s+0}'; }
etcd_mvcc_ops() { curl -s "http://127.0.0.1:$EP/metrics" | awk '/^etcd_mvcc_(put|txn|range|delete)_total/ {s+=$2} END {print s+0}'; }
acked_count() { wc -l <"$1"; }

check "etcd starts on 127.0.0.1:$EP" etcd_start
check "broker starts with --metadata etcd://127.0.0.1:$EP/wp-faults" broker_start --metadata "etcd://127.0.0.1:$EP/wp-faults"

# Steady produce: etcd traffic per second and per MB (no etcd call per append).
TR=$(topic_name rate)
check "producer warm-up to $TR" py produce.py --topic "$TR" --count 10
r0=$(etcd_requests); m0=$(etcd_mvcc_ops); t0=$(date +%s.%N)
check "steady produce of 75000 x 1 KiB records at 5000/s" timeout -k 5 180 "$PYTHON" "$COMPAT_PY/../bench/bench_produce.py" \
  --bootstrap "$BROKER" -n 75000 -s 1024 --rate 5000 --no-consume --topic-name "$TR"
r1=$(etcd_requests); m1=$(etcd_mvcc_ops); t1=$(date +%s.%N)
secs=$(python3 -c "print(round($t1-$t0,2))")
log "etcd during the steady produce: $((r1 - r0)) requests ($((m1 - m0)) KV ops) in $secs s for 76.8 MB:" \
    "$(python3 -c "print(round(($r1-$r0)/($t1-$t0),2))") requests/s, $(python3 -c "print(round(($r1-$r0)/76.8,2))") requests/MB"
check "etcd saw the broker's lease keep-alives during the produce" test $((r1 - r0)) -gt 0
check "etcd requests stay bounded by time, not appends: at most 5/s + 1/MB" \
  test $((r1 - r0)) -le $(python3 -c "print(int(5*($t1-$t0) + 76.8))")

T=$(topic_name faults)
acked="$COMPAT_TMP/acked.txt"; : >"$acked"
check "producer warm-up to $T" py produce.py --topic "$T" --count 10
timeout -k 5 300 "$PYTHON" "$COMPAT_PY/crash_producer.py" --bootstrap "$BROKER" --topic "$T" --count 20000 \
  --rate 1500 --acked "$acked" --timeout 240 >"$COMPAT_TMP/producer.log" 2>&1 &
prod=$!; track $prod
for ((i=0; i<200; i++)); do [ "$(acked_count "$acked")" -ge 1000 ] && break; sleep 0.1; done

# 1. etcd hangs (SIGSTOP) for 5 s: requests to it neither fail fast nor answer.
before=$(acked_count "$acked")
kill -STOP $ETCD_PID
log "etcd stopped (SIGSTOP) at $before acknowledged records"
TC=$(topic_name created)
if py create_topic.py --topic "$TC" --partitions 1 --timeout 3 >"$COMPAT_TMP/create_down.log" 2>&1; then
  fail "CreateTopics fails while etcd hangs"
else
  check "CreateTopics fails while etcd hangs: $(tail -c 300 "$COMPAT_TMP/create_down.log" | tr '\n' ' ')" true
fi
sleep 1.5
during=$(acked_count "$acked")
check "appends inside the current segment are acknowledged while etcd hangs ($before -> $during)" test "$during" -gt "$before"
kill -CONT $ETCD_PID
log "etcd resumed (SIGCONT) after about 5 s"
# The create that timed out on the client may still complete once etcd answers (its outcome was unknown).
TC2=$(topic_name created)
check "CreateTopics works again once etcd is back" py create_topic.py --topic "$TC2" --partitions 1 --timeout 20
check "the new topic takes records" py produce.py --topic "$TC2" --count 10

# 2. etcd killed and restarted 4 s later on the same data dir.
before=$(acked_count "$acked")
kill -KILL $ETCD_PID; wait $ETCD_PID 2>/dev/null
log "etcd killed at $before acknowledged records"
TD=$(topic_name created2)
if py create_topic.py --topic "$TD" --partitions 1 --timeout 3 >"$COMPAT_TMP/create_dead.log" 2>&1; then
  fail "CreateTopics fails while etcd is down"
else
  check "CreateTopics fails while etcd is down: $(tail -c 300 "$COMPAT_TMP/create_dead.log" | tr '\n' ' ')" true
fi
sleep 1
during=$(acked_count "$acked")
check "appends inside the current segment are acknowledged while etcd is down ($before -> $during)" test "$during" -gt "$before"
check "etcd restarts on the same data dir" etcd_start
check "CreateTopics works after the restart" py create_topic.py --topic "$TD" --partitions 1 --timeout 20

wait $prod; prc=$?
check "producer finished with every record acknowledged (exit $prc; $(tail -n 1 "$COMPAT_TMP/producer.log"))" test $prc = 0
check "every acknowledged record is at its offset with identical key/value" \
  py verify_acked.py --topic "$T" --acked "$acked" --expect-acked 20000 --check-hwm --timeout 100
check "the broker log names etcd when it is unreachable" grep -q "127.0.0.1:$EP" "$BROKER_LOG"

# 3. etcd hangs longer than the writers' lease TTL (10 s): the writers stop (no acknowledgement past the lease),
# then the broker reopens them once etcd answers again, without a restart.
T3=$(topic_name lapse)
acked3="$COMPAT_TMP/acked3.txt"; : >"$acked3"
check "producer warm-up to $T3" py produce.py --topic "$T3" --count 10
timeout -k 5 200 "$PYTHON" "$COMPAT_PY/crash_producer.py" --bootstrap "$BROKER" --topic "$T3" --count 36000 \
  --rate 1500 --acked "$acked3" --message-timeout 120 --timeout 180 >"$COMPAT_TMP/producer3.log" 2>&1 &
prod3=$!; track $prod3
for ((i=0; i<200; i++)); do [ "$(acked_count "$acked3")" -ge 1500 ] && break; sleep 0.1; done
kill -STOP $ETCD_PID
log "etcd stopped (SIGSTOP) for 13 s at $(acked_count "$acked3") acknowledged records"
sleep 13
kill -CONT $ETCD_PID
resumed_at=$(acked_count "$acked3")
log "etcd resumed at $resumed_at acknowledged records"
resumed=1
for ((i=0; i<600; i++)); do [ "$(acked_count "$acked3")" -ge $((resumed_at + 3000)) ] && { resumed=0; break; }; sleep 0.1; done
check "after a lease lapse the partition takes records again without a broker restart" test $resumed = 0
wait $prod3; prc3=$?
check "producer finished with every record acknowledged (exit $prc3)" test $prc3 = 0
check "every acknowledged record of the lapse run is at its offset" \
  py verify_acked.py --topic "$T3" --acked "$acked3" --expect-acked 36000 --check-hwm --timeout 100
check "SIGTERM stops the broker cleanly" broker_stop
finish
