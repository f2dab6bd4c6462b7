#!/usr/bin/env bash
# Durability across kill -9 (woodpecker only): a confluent-kafka acks=all producer streams records and
# logs every acknowledged (partition, offset, key, value); the broker is SIGKILLed mid-stream and
# restarted on the same data dir; after the producer finishes, the broker is SIGKILLed once more and
# restarted; then every acknowledged record must be at its offset with identical key/value, and no
# acknowledged offset may have been reused. Finally SIGTERM must stop it cleanly (exit 0) and the data
# must still be there after another restart.
# On BROKER_KIND=tansu (memory://, nothing survives a restart) the kills are skipped and only the
# producer/verifier path runs, which validates the scripts. CRASH_KILL_ON_TANSU=1 does the kills on tansu
# anyway: everything is lost there, so the verifier must then FAIL (a check of the checker).
. "$(dirname "$0")/../lib.sh"
require_python_modules confluent_kafka
N=${CRASH_COUNT:-20000}; RATE=${CRASH_RATE:-2000}
IDEM=(); [ "${CRASH_IDEMPOTENT:-0}" = 1 ] && IDEM=(--idempotent)
if [ "$BROKER_KIND" = woodpecker ]; then broker_start --default-partitions 3 || { fail "broker starts"; finish; }
else broker_start || { fail "broker starts"; finish; }; fi

T=$(topic_name crash)
acked="$COMPAT_TMP/acked.txt"; : >"$acked"
CHECK_HWM=(); [ "$BROKER_KIND" = woodpecker ] && CHECK_HWM=(--check-hwm)
KILLS=0; { [ "$BROKER_KIND" = woodpecker ] || [ "${CRASH_KILL_ON_TANSU:-0}" = 1 ]; } && KILLS=1

log "producing $N records at ~$RATE/s to $T (acks=all${IDEM:+, idempotent})"
timeout -k 5 240 "$PYTHON" "$COMPAT_PY/crash_producer.py" --bootstrap "$BROKER" --topic "$T" --count "$N" \
  --rate "$RATE" --acked "$acked" --timeout 200 "${IDEM[@]}" >"$COMPAT_TMP/producer.log" 2>&1 &
prod=$!; track $prod

wait_acked() { # n seconds
  local i
  for ((i=0; i<$2*10; i++)); do
    [ "$(wc -l <"$acked")" -ge "$1" ] && return 0
    kill -0 $prod 2>/dev/null || return 1
    sleep 0.1
  done
  return 1
}

if check "producer gets $((N/3)) acknowledgements before the crash" wait_acked $((N/3)) 60; then
  if [ $KILLS = 1 ]; then
    log "kill -9 mid-stream at $(wc -l <"$acked") acknowledged records"
    broker_kill9
    sleep 0.5
    check "broker restarts on the same data dir after kill -9" broker_restart
  else
    skip "kill -9 mid-stream (tansu memory:// keeps nothing across a restart)"
  fi
fi
wait $prod; prc=$?
grep -v '^%' "$COMPAT_TMP/producer.log" | tail -n 5 | sed 's/^/    producer: /'
log "    producer: $(grep -c '^%' "$COMPAT_TMP/producer.log") librdkafka log lines (connection errors while the broker was down), see producer.log with COMPAT_KEEP=1"
check "producer finished: every record got a delivery report (exit $prc)" test $prc = 0
check "all $N records were eventually acknowledged" equals $N "$(wc -l <"$acked" | tr -d ' ')" "acknowledged records"

if [ $KILLS = 1 ]; then
  broker_kill9
  check "broker restarts after a second kill -9 (right after the last acknowledgement)" broker_restart
fi
check "every acknowledged record is present at its offset with identical key/value, no offset reused" \
  py verify_acked.py --topic "$T" --acked "$acked" --expect-acked "$N" "${CHECK_HWM[@]}" --timeout 100

if [ $KILLS = 1 ]; then
  check "SIGTERM stops the broker cleanly (exit status 0)" broker_stop
  check "broker restarts after the clean shutdown" broker_restart
  check "after the clean restart every acknowledged record is still there" \
    py verify_acked.py --topic "$T" --acked "$acked" --expect-acked "$N" --check-hwm --timeout 100
fi
finish
