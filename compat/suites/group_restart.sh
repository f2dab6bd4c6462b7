#!/usr/bin/env bash
# A broker kill -9 + restart during a consumer group's life (woodpecker only: Tansu's memory:// forgets everything).
# For each Python client: two slow members work through a 1200-record backlog of a 4-partition topic, committing
# after each processed batch; while they are at it the broker is SIGKILLed and restarted on the same data dir; a
# second producer run writes 600 more.
# The members must rejoin (a new assignment each), and consume every acknowledged record: nothing skipped, and
# few duplicates (they resume from the committed offsets, not from the beginning). The group then describes as
# Stable with 2 members and its committed offsets equal the end of every partition.
# Last, the initial rebalance delay is configurable: with --group-initial-rebalance-delay-ms 1500 a lone consumer's
# first record comes after >= 1.5 s (and within 1 s with the default, checked in group_matrix.sh).
. "$(dirname "$0")/../lib.sh"
require_python_modules confluent_kafka kafka aiokafka
[ "$BROKER_KIND" = woodpecker ] || skip_suite "needs a broker that keeps committed offsets across kill -9 (woodpecker)"
broker_start || { fail "broker starts"; finish; }
# Each member may redeliver the batches it had processed but could not commit around the kill (20-60 seen); a
# restart from the beginning instead of the committed offsets would redeliver 400+.
MAXDUP=${GROUP_RESTART_MAX_DUPLICATES:-200}

mname() { case "$1" in confluent) echo confluent-kafka ;; *) echo "$1" ;; esac; }
member() { # NAME CLIENT GROUP TOPIC [ARGS...]; sets MPID
  local name=$1 client=$2 group=$3 topic=$4; shift 4
  timeout -k 5 120 "$PYTHON" "$COMPAT_PY/group_member.py" --bootstrap "$BROKER" --client "$client" --group "$group" \
    --topic "$topic" --name "$name" --out "$COMPAT_TMP/$name.out" --events "$COMPAT_TMP/$name.ev" --session-ms 6000 "$@" \
    >"$COMPAT_TMP/$name.log" 2>&1 &
  MPID=$!; track $MPID
}
lines() { cat "$@" 2>/dev/null | wc -l | tr -d ' '; }
wait_lines() { # N SECONDS FILE...
  local n=$1 secs=$2 i; shift 2
  for ((i=0; i<secs*10; i++)); do [ "$(lines "$@")" -ge "$n" ] && return 0; sleep 0.1; done
  log "    only $(lines "$@") of $n lines after $secs s"; return 1
}
assigns() { grep -c ' assign [0-9]' "$1" 2>/dev/null || echo 0; }
produce() { # TOPIC COUNT START ACKED [RATE]
  timeout -k 5 90 "$PYTHON" "$COMPAT_PY/keyed_producer.py" --bootstrap "$BROKER" --topic "$1" --count "$2" --start "$3" \
    --rate "${5:-500}" --acked "$4" --timeout 80 >>"$COMPAT_TMP/producer.log" 2>&1
}
end_offsets() { # ACKED -> "P:END,..." (END = last acknowledged offset + 1)
  awk '{if (!($1 in m) || $2+1 > m[$1]) m[$1]=$2+1} END {for (p in m) printf "%s:%s\n", p, m[p]}' "$1" | sort -n | paste -sd,
}

for c in confluent kafka-python aiokafka; do
  mc=$(mname "$c"); T=$(topic_name "grst-$c"); G="grst-$c-$$"; d="$COMPAT_TMP/$c"; mkdir -p "$d"
  acked="$d/acked"; : >"$acked"
  py create_topic.py --topic "$T" --partitions 4 >/dev/null || { fail "$mc: create $T"; continue; }
  # Slow members (batches of 20, 40 ms pause each) so the kill lands while they work through a backlog.
  member "$c-0" "$c" "$G" "$T" --stop-file "$d/stop" --timeout 110 --max-batch 20 --batch-sleep-ms 40; p0=$MPID
  member "$c-1" "$c" "$G" "$T" --stop-file "$d/stop" --timeout 110 --max-batch 20 --batch-sleep-ms 40; p1=$MPID
  produce "$T" 1200 0 "$acked" 5000 || fail "$mc: producer run 1 acknowledged everything"
  wait_lines 400 30 "$COMPAT_TMP/$c-0.out" "$COMPAT_TMP/$c-1.out" || fail "$mc: members consumed 400 records of run 1"
  a0=$(assigns "$COMPAT_TMP/$c-0.ev"); a1=$(assigns "$COMPAT_TMP/$c-1.ev")
  log "    kill -9 with $(lines "$COMPAT_TMP/$c-0.out" "$COMPAT_TMP/$c-1.out") of 1200 records consumed"
  broker_kill9
  sleep 0.3
  broker_restart || { fail "$mc: broker restarts after kill -9"; break; }
  produce "$T" 600 1200 "$acked" || fail "$mc: producer run 2 (after the restart) acknowledged everything"
  wait_lines 1800 60 "$COMPAT_TMP/$c-0.out" "$COMPAT_TMP/$c-1.out"
  rejoined() { local i; for ((i=0; i<200; i++)); do
      [ "$(assigns "$COMPAT_TMP/$c-0.ev")" -gt "$a0" ] && [ "$(assigns "$COMPAT_TMP/$c-1.ev")" -gt "$a1" ] && return 0; sleep 0.1; done
    log "    assignments before/after: $a0/$(assigns "$COMPAT_TMP/$c-0.ev") $a1/$(assigns "$COMPAT_TMP/$c-1.ev")"; return 1; }
  mcheck "$mc" "broker kill -9 + restart during a group's life" "both members rejoin the group after the restart" rejoined
  sleep 1
  mcheck "$mc" "broker kill -9 + restart during a group's life" \
    "the group describes as Stable, 2 members, committed offsets = end of each partition ($(end_offsets "$acked"))" \
    py group_admin.py --client kafka-python --group "$G" --topic "$T" --state Stable --members 2 --offsets "$(end_offsets "$acked")"
  touch "$d/stop"; wait $p0 $p1
  r=$("$PYTHON" "$COMPAT_PY/verify_once.py" --acked "$acked" --max-duplicates "$MAXDUP" "$COMPAT_TMP/$c-0.out" "$COMPAT_TMP/$c-1.out"); rc=$?
  log "    $r" | head -n 6
  mcheck "$mc" "broker kill -9 + restart during a group's life" \
    "nothing skipped, resumed from committed offsets ($(head -n 1 <<<"$r" | grep -o 'missing=[0-9]* duplicates=[0-9]*'), at most $MAXDUP duplicates)" test $rc = 0
done

# The initial rebalance delay is a broker setting.
broker_stop || fail "broker stops cleanly"
broker_start --group-initial-rebalance-delay-ms 1500 || { fail "broker starts with --group-initial-rebalance-delay-ms 1500"; finish; }
T=$(topic_name gdelay); G="gdelay-$$"
py create_topic.py --topic "$T" --partitions 1 >/dev/null && printf 'one\n' >"$COMPAT_TMP/one.txt" \
  && timeout -k 5 30 "$KCAT_DEB" -b "$BROKER" -P -t "$T" -p 0 -l "$COMPAT_TMP/one.txt" || fail "produce one record to $T"
member delay confluent "$G" "$T" --expect 1 --timeout 30; wait $MPID
s=$(sed -n 's/^first_record_s=//p' "$COMPAT_TMP/delay.log")
mcheck confluent-kafka "broker option --group-initial-rebalance-delay-ms" \
  "with a 1500 ms initial rebalance delay the first record comes after ${s:-none} s (expected 1.5 to 3 s)" \
  awk -v s="$s" 'BEGIN {exit !(s != "" && s >= 1.5 && s < 3.0)}'
finish
