#!/usr/bin/env bash
# QuorumBuffer with real processes (woodpecker only): three `woodpecker logstore` nodes and
# `woodpecker broker --mode quorum` on a shared file:// object store. An idempotent confluent-kafka acks=all
# producer streams records while, in turn: one LogStore is SIGKILLed (the producer keeps getting
# acknowledgements) and restarted; two are SIGKILLed (no acknowledgement while they are down, the broker
# answers a retryable error) and restarted (acknowledgements resume); the broker is SIGKILLed and
# restarted. Afterwards every acknowledged record is read back at its offset, intact, and only once.
. "$(dirname "$0")/../lib.sh"
[ "$BROKER_KIND" = woodpecker ] || skip_suite "QuorumBuffer is a woodpecker feature"
require_python_modules confluent_kafka
N=${QUORUM_COUNT:-24000}; RATE=${QUORUM_RATE:-1500}

for i in 0 1 2; do check "logstore $i starts" logstore_start $i || finish; done
STORE="file://$COMPAT_TMP/store"
check "broker starts in quorum mode on $(logstores_csv)" \
  broker_start --mode quorum --logstores "$(logstores_csv)" --storage "$STORE" --default-partitions 3 || finish

# Clients that reset their connection with answers still being written must not kill a process (SIGPIPE).
check "a LogStore survives clients that reset their connection before reading the answers" \
  "$PYTHON" "$COMPAT_PY/vanish.py" --port "${LS_PORTS[0]}" --kind logstore
check "... and is still alive" kill -0 "${LS_PIDS[0]}"
check "the broker survives Kafka clients that reset their connection before reading the answers" \
  "$PYTHON" "$COMPAT_PY/vanish.py" --port "$BROKER_PORT" --kind kafka
check "... and is still alive" kill -0 "$BROKER_PID"

T0=$(topic_name qsmoke)
kcat_use deb
seq 1 3000 | sed 's/^\(.*\)$/k\1:value-\1/' >"$COMPAT_TMP/in.txt"
check "kcat -P 3000 keyed records" kc -P -t "$T0" -K: -l "$COMPAT_TMP/in.txt"
kc -C -t "$T0" -e -o beginning -f '%k:%s\n' -q | sort >"$COMPAT_TMP/out.txt"
sort "$COMPAT_TMP/in.txt" >"$COMPAT_TMP/in.sorted"
check "kcat -C -e reads the same 3000 records back" same_file "$COMPAT_TMP/in.sorted" "$COMPAT_TMP/out.txt"

T=$(topic_name quorum)
acked="$COMPAT_TMP/acked.txt"; : >"$acked"
log "producing $N records at ~$RATE/s to $T (acks=all, idempotent)"
timeout -k 5 280 "$PYTHON" "$COMPAT_PY/crash_producer.py" --bootstrap "$BROKER" --topic "$T" --count "$N" \
  --rate "$RATE" --acked "$acked" --idempotent --message-timeout 200 --timeout 260 >"$COMPAT_TMP/producer.log" 2>&1 &
prod=$!; track $prod

acks() { wc -l <"$acked" | tr -d ' '; }
# more_acks N SECONDS: at least N more acknowledgements than now within SECONDS.
more_acks() {
  local target=$(( $(acks) + $1 )) i
  for ((i=0; i<$2*10; i++)); do
    [ "$(acks)" -ge "$target" ] && return 0
    kill -0 $prod 2>/dev/null || [ "$(acks)" -ge "$target" ] || return 1
    sleep 0.1
  done
  return 1
}

check "producer gets 3000 acknowledgements with all three LogStores up" more_acks 3000 60
logstore_kill9 2
check "with one LogStore killed the producer keeps getting acknowledgements (+3000)" more_acks 3000 60
check "the killed LogStore restarts on its data dir" logstore_start 2
check "acknowledgements continue after it rejoins (+2000)" more_acks 2000 60

logstore_kill9 1
logstore_kill9 2
sleep 1.5   # replies already on their way may still land
before=$(acks)
sleep 4
after=$(acks)
check "no acknowledgement while two of three LogStores are down ($before -> $after)" test "$before" = "$after"
check "the broker reports the missing quorum as a retryable error" \
  grep -qE "NOT_ENOUGH_REPLICAS|nodeUnavailable|LogStores" "$BROKER_LOG"
check "logstore 1 restarts" logstore_start 1
check "logstore 2 restarts" logstore_start 2
check "acknowledgements resume once a quorum is back (+2000)" more_acks 2000 90

broker_kill9
sleep 0.5
check "broker restarts after kill -9 and recovers its segments from the LogStores" broker_restart
wait $prod; prc=$?
grep -v '^%' "$COMPAT_TMP/producer.log" | tail -n 5 | sed 's/^/    producer: /'
check "producer finished: every record got a delivery report (exit $prc)" test $prc = 0
check "all $N records were eventually acknowledged" equals $N "$(acks)" "acknowledged records"
check "every acknowledged record is at its offset, intact, once, in order" \
  py verify_acked.py --topic "$T" --acked "$acked" --expect-acked "$N" --check-hwm --no-duplicates --timeout 120
check "SIGTERM stops the quorum broker cleanly (exit 0)" broker_stop
finish
