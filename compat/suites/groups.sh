#!/usr/bin/env bash
# Consumer groups (classic protocol): a confluent-kafka group consumer gets its first record within a few
# seconds, commits and closes; a second consumer of the same group resumes at the committed offset; two
# consumers of one group split a 3-partition topic and together consume every record exactly once; Debian
# kcat -G consumes; kafka-python KafkaConsumer with group_id consumes and commits.
. "$(dirname "$0")/../lib.sh"
require_python_modules confluent_kafka kafka
[ -n "$KCAT_DEB" ] || skip_suite "kcat is not installed (apt-get install kcat, or make setup-test)"
kcat_use deb
broker_start || { fail "broker starts"; finish; }

gen() { local prefix=$1 n=$2 i; for ((i=0; i<n; i++)); do printf '%s-%05d\n' "$prefix" $i; done; }
produce() { # topic file [partition]
  if [ $# -ge 3 ]; then kc -P -t "$1" -p "$3" -l "$2"; else kc -P -t "$1" -l "$2"; fi
}
pylog() { local out=$1; shift; py "$@" >"$out" 2>&1; } # LOGFILE SCRIPT ARGS...: py with its output in LOGFILE
first_within() { # logfile seconds
  local s; s=$(sed -n 's/^first_record_s=//p' "$1")
  [ -n "$s" ] || { log "    no first record time in $1"; return 1; }
  log "    first record after $s s"
  awk -v s="$s" -v m="$2" 'BEGIN {exit !(s < m)}'
}

# 1. first record quickly, commit, close; 2. the next consumer resumes at the committed offset.
T=$(topic_name grp1); G=g1-$$
check "create $T (1 partition)" py create_topic.py --topic "$T" --partitions 1
gen a 20 >"$COMPAT_TMP/in1.txt"
check "kcat: produce 20 records to $T" produce "$T" "$COMPAT_TMP/in1.txt"
check "confluent-kafka: group consumer reads 10 records, commits, closes" \
  pylog "$COMPAT_TMP/c1.log" group_consume.py --group "$G" --topic "$T" --expect 10 --out "$COMPAT_TMP/c1.txt"
# Kafka and Tansu wait group.initial.rebalance.delay.ms (3 s) before the first generation; woodpecker 100 ms.
FIRST_MAX=3; [ "$BROKER_KIND" = woodpecker ] || FIRST_MAX=10
check "confluent-kafka: first record within $FIRST_MAX s of start" first_within "$COMPAT_TMP/c1.log" $FIRST_MAX
check "confluent-kafka: the first 10 records in order" same_file <(head -n 10 "$COMPAT_TMP/in1.txt") <(cut -d' ' -f3 "$COMPAT_TMP/c1.txt")
check "confluent-kafka: a new consumer in group $G resumes at the committed offset 10" \
  pylog "$COMPAT_TMP/c2.log" group_consume.py --group "$G" --topic "$T" --expect 10 --out "$COMPAT_TMP/c2.txt"
check "confluent-kafka: it starts at offset 10" equals 10 "$(head -n 1 "$COMPAT_TMP/c2.txt" | cut -d' ' -f2)" "first offset"
check "confluent-kafka: it reads records 10..19" same_file <(tail -n 10 "$COMPAT_TMP/in1.txt") <(cut -d' ' -f3 "$COMPAT_TMP/c2.txt")

# Committed offsets are durable: after a broker restart the group resumes where it left off (woodpecker only:
# the Tansu peer runs on memory:// storage, which a restart empties).
if [ "$BROKER_KIND" = woodpecker ]; then
check "broker restarts (SIGTERM, same data dir)" broker_stop
broker_start || { fail "broker restarts"; finish; }
G1=$G; T1=$T
gen c 5 >"$COMPAT_TMP/in1b.txt"
check "kcat: produce 5 more records to $T1 after the restart" produce "$T1" "$COMPAT_TMP/in1b.txt"
check "confluent-kafka: after the restart group $G1 resumes at offset 20" \
  pylog "$COMPAT_TMP/c3.log" group_consume.py --group "$G1" --topic "$T1" --expect 5 --out "$COMPAT_TMP/c3.txt"
check "confluent-kafka: it reads exactly the 5 new records" same_file "$COMPAT_TMP/in1b.txt" <(cut -d' ' -f3 "$COMPAT_TMP/c3.txt")
fi

# 3. two consumers in one group split a 3-partition topic; every record exactly once.
T=$(topic_name grp3); G=g3-$$
check "create $T (3 partitions)" py create_topic.py --topic "$T" --partitions 3
py group_consume.py --group "$G" --topic "$T" --idle 6 --timeout 60 --out "$COMPAT_TMP/s1.txt" \
  --assignments "$COMPAT_TMP/s1.asg" >"$COMPAT_TMP/s1.log" 2>&1 & P1=$!; track $P1
py group_consume.py --group "$G" --topic "$T" --idle 6 --timeout 60 --out "$COMPAT_TMP/s2.txt" \
  --assignments "$COMPAT_TMP/s2.asg" >"$COMPAT_TMP/s2.log" 2>&1 & P2=$!; track $P2
split_ready() { # both consumers hold a non-empty assignment and together all 3 partitions, disjoint
  local a1 a2; a1=$(tail -n 1 "$COMPAT_TMP/s1.asg" 2>/dev/null); a2=$(tail -n 1 "$COMPAT_TMP/s2.asg" 2>/dev/null)
  [ -n "$a1" ] && [ -n "$a2" ] && [ "$(echo $a1 $a2 | tr ' ' '\n' | sort -u | wc -l)" = 3 ] \
    && [ "$(echo $a1 $a2 | wc -w)" = 3 ]
}
ok=0; for ((i=0; i<300; i++)); do split_ready && { ok=1; break; }; sleep 0.1; done
check "two consumers of $G split the 3 partitions between them (after $((i/10)) s)" test $ok = 1
log "    assignments: [$(tail -n 1 "$COMPAT_TMP/s1.asg" 2>/dev/null)] [$(tail -n 1 "$COMPAT_TMP/s2.asg" 2>/dev/null)]"
gen b 3000 >"$COMPAT_TMP/in3.txt"
for p in 0 1 2; do sed -n "$((p*1000+1)),$((p*1000+1000))p" "$COMPAT_TMP/in3.txt" >"$COMPAT_TMP/in3.$p"; done
check "kcat: produce 1000 records to each of the 3 partitions" \
  bash -c 'for p in 0 1 2; do "$@" -P -t "'"$T"'" -p $p -l "'"$COMPAT_TMP"'/in3.$p" || exit 1; done' _ "$KCAT" -b "$BROKER"
wait $P1; r1=$?; wait $P2; r2=$?
check "both group consumers finished cleanly" test "$r1$r2" = 00
check "each consumer received records" test -s "$COMPAT_TMP/s1.txt" -a -s "$COMPAT_TMP/s2.txt"
check "together they consumed every record exactly once" \
  same_file <(sort "$COMPAT_TMP/in3.txt") <(cat "$COMPAT_TMP/s1.txt" "$COMPAT_TMP/s2.txt" | cut -d' ' -f3 | sort)
check "no partition was read by both consumers" \
  test -z "$(comm -12 <(cut -d' ' -f1 "$COMPAT_TMP/s1.txt" | sort -u) <(cut -d' ' -f1 "$COMPAT_TMP/s2.txt" | sort -u))"

# A consumer killed with SIGKILL never leaves: its session (10 s) expires and the survivor takes every partition.
T=$(topic_name grpx); G=gx-$$
check "create $T (2 partitions)" py create_topic.py --topic "$T" --partitions 2
py group_consume.py --group "$G" --topic "$T" --expect 200 --timeout 60 --out "$COMPAT_TMP/x1.txt" \
  --assignments "$COMPAT_TMP/x1.asg" >"$COMPAT_TMP/x1.log" 2>&1 & X1=$!; track $X1
py group_consume.py --group "$G" --topic "$T" --timeout 60 --out "$COMPAT_TMP/x2.txt" \
  --assignments "$COMPAT_TMP/x2.asg" >"$COMPAT_TMP/x2.log" 2>&1 & X2=$!; track $X2
both_assigned() { [ -n "$(tail -n 1 "$COMPAT_TMP/x1.asg" 2>/dev/null)" ] && [ -n "$(tail -n 1 "$COMPAT_TMP/x2.asg" 2>/dev/null)" ]; }
ok=0; for ((i=0; i<300; i++)); do both_assigned && { ok=1; break; }; sleep 0.1; done
check "two consumers of $G each hold a partition" test $ok = 1
_kill_tree $X2 KILL; wait $X2 2>/dev/null
took_over() { [ "$(tail -n 1 "$COMPAT_TMP/x1.asg" 2>/dev/null)" = "0 1" ]; }
ok=0; for ((i=0; i<300; i++)); do took_over && { ok=1; break; }; sleep 0.1; done
check "after the SIGKILL the survivor is assigned both partitions (after $((i/10)) s; session timeout 10 s)" test $ok = 1
gen x 200 >"$COMPAT_TMP/inx.txt"
head -n 100 "$COMPAT_TMP/inx.txt" >"$COMPAT_TMP/inx.0"; tail -n 100 "$COMPAT_TMP/inx.txt" >"$COMPAT_TMP/inx.1"
produce_both() { produce "$T" "$COMPAT_TMP/inx.0" 0 && produce "$T" "$COMPAT_TMP/inx.1" 1; }
check "kcat: produce 100 records to each partition after the SIGKILL" produce_both
wait $X1; rx=$?
check "the survivor reads all 200 records" test $rx = 0
check "  ... each record once" same_file <(sort "$COMPAT_TMP/inx.txt") <(cut -d' ' -f3 "$COMPAT_TMP/x1.txt" | sort)

# 4. Debian kcat -G (librdkafka 2.0.2 high-level consumer).
T=$(topic_name grpk); G=gk-$$
gen k 50 >"$COMPAT_TMP/ink.txt"
check "kcat: produce 50 records to $T" produce "$T" "$COMPAT_TMP/ink.txt"
check "$KCAT_NAME -G $G $T consumes all 50 records" \
  same_file "$COMPAT_TMP/ink.txt" <(kc -G "$G" -X auto.offset.reset=earliest -c 50 -q -f '%s\n' "$T")

# 5. kafka-python KafkaConsumer with group_id.
T=$(topic_name grpp); G=gp-$$
gen p 30 >"$COMPAT_TMP/inp.txt"
check "kcat: produce 30 records to $T" produce "$T" "$COMPAT_TMP/inp.txt"
check "kafka-python: KafkaConsumer(group_id) reads 20 records and commits" \
  pylog "$COMPAT_TMP/p1.log" group_consume.py --client kafka-python --group "$G" --topic "$T" --expect 20 --out "$COMPAT_TMP/p1.txt"
check "kafka-python: records 0..19 in order" same_file <(head -n 20 "$COMPAT_TMP/inp.txt") <(cut -d' ' -f3 "$COMPAT_TMP/p1.txt")
check "kafka-python: the next consumer of $G resumes at offset 20" \
  pylog "$COMPAT_TMP/p2.log" group_consume.py --client kafka-python --group "$G" --topic "$T" --expect 10 --out "$COMPAT_TMP/p2.txt"
check "kafka-python: it reads records 20..29" same_file <(tail -n 10 "$COMPAT_TMP/inp.txt") <(cut -d' ' -f3 "$COMPAT_TMP/p2.txt")

finish
