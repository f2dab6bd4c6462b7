#!/usr/bin/env bash
# Consumer groups across the client matrix (every check is a row of compat/MATRIX.md):
#  - confluent-kafka, kafka-python, aiokafka: a new consumer in an empty group gets its first record within 1 s of
#    subscribe(); it commits and closes; the next consumer of the group resumes at the committed offset;
#  - each client: two members, the second joining while a producer writes; the members commit after processing
#    and synchronously on revoke, so together they consume every acknowledged record exactly once (per-key gaps
#    and duplicates counted);
#  - confluent-kafka: three members (join, join, leave) while a producer writes, eager (range) and
#    cooperative-sticky (incremental: a member keeps partitions through a rebalance), exactly once;
#  - confluent-kafka static membership: a member restarting with its group.instance.id gets its partitions back and
#    the other member is not revoked;
#  - admin clients (kafka-python, aiokafka, confluent-kafka) list the group, describe it (Stable, its member,
#    protocol) and list its committed offsets;
#  - kcat -G on Debian's librdkafka and on the wheel's: two balanced consumers split a topic, and a later one
#    resumes at the offsets they auto-committed.
. "$(dirname "$0")/../lib.sh"
require_python_modules confluent_kafka kafka aiokafka
[ -n "$KCAT_DEB" ] || skip_suite "kcat is not installed (apt-get install kcat, or make setup-test)"
kcat_use deb
broker_start || { fail "broker starts"; finish; }

CLIENTS=(confluent kafka-python aiokafka)
# Kafka and Tansu wait group.initial.rebalance.delay.ms (3 s) before a new group's first generation; woodpecker 100 ms.
FIRST_MAX=1.0; [ "$BROKER_KIND" = woodpecker ] || FIRST_MAX=10
mname() { case "$1" in confluent) echo confluent-kafka ;; *) echo "$1" ;; esac; }

# member NAME CLIENT GROUP TOPIC [ARGS...]: starts group_member.py in the background; sets MPID.
member() {
  local name=$1 client=$2 group=$3 topic=$4; shift 4
  timeout -k 5 90 "$PYTHON" "$COMPAT_PY/group_member.py" --bootstrap "$BROKER" --client "$client" --group "$group" \
    --topic "$topic" --name "$name" --out "$COMPAT_TMP/$name.out" --events "$COMPAT_TMP/$name.ev" "$@" \
    >"$COMPAT_TMP/$name.log" 2>&1 &
  MPID=$!; track $MPID
}
lines() { cat "$@" 2>/dev/null | wc -l | tr -d ' '; }
# wait_lines N SECONDS FILE...: true once the files hold N lines together.
wait_lines() {
  local n=$1 secs=$2 i; shift 2
  for ((i=0; i<secs*10; i++)); do [ "$(lines "$@")" -ge "$n" ] && return 0; sleep 0.1; done
  log "    only $(lines "$@") of $n lines after $secs s"; return 1
}
# wait_event FILE REGEX SECONDS
wait_event() {
  local i; for ((i=0; i<$3*10; i++)); do grep -q -E "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  log "    no '$2' in $1 after $3 s"; return 1
}
first_s() { sed -n 's/^first_record_s=//p' "$1"; }
lt() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a != "" && a < b)}'; }
ge() { awk -v a="$1" -v b="$2" 'BEGIN {exit !(a != "" && a >= b)}'; }
wait_ok() { wait "$1"; local rc=$?; [ $rc = 0 ] || { log "    pid $1 exited $rc: $(tail -n 2 "$2" | tr '\n' ' ')"; return 1; }; }
# same_nonempty EXPECTED ACTUAL: same_file, and the expectation is not empty (no vacuous pass).
same_nonempty() {
  local e="$COMPAT_TMP/.expected"; cat "$1" >"$e"
  [ -s "$e" ] || { log "    the expected side is empty (a precondition failed)"; return 1; }
  same_file "$e" "$2"
}
gen() { local prefix=$1 n=$2 i; for ((i=0; i<n; i++)); do printf '%s-%05d\n' "$prefix" $i; done; }

# ------------------------------------------------------------------------------------------------------------
# 1. join + first record within 1 s of subscribe(); commit, close; resume at the committed offset.
for c in "${CLIENTS[@]}"; do
  mc=$(mname "$c"); T=$(topic_name "g1-$c"); G="g1-$c-$$"
  py create_topic.py --topic "$T" --partitions 1 >/dev/null || { fail "$mc: create $T"; continue; }
  gen a 10 >"$COMPAT_TMP/$c.in"
  kc -P -t "$T" -p 0 -l <(head -n 5 "$COMPAT_TMP/$c.in") || { fail "$mc: produce to $T"; continue; }
  member "$c-a" "$c" "$G" "$T" --expect 5 --timeout 30
  wait_ok $MPID "$COMPAT_TMP/$c-a.log"; rc=$?
  s=$(first_s "$COMPAT_TMP/$c-a.log")
  mcheck "$mc" "group: join, first record < 1 s after subscribe" "first record ${s:-none} s after subscribe() (limit $FIRST_MAX s)" \
    bash -c "[ $rc = 0 ] && awk -v s='$s' 'BEGIN {exit !(s != \"\" && s < $FIRST_MAX)}'"
  kc -P -t "$T" -p 0 -l <(tail -n 5 "$COMPAT_TMP/$c.in") || fail "$mc: produce 5 more to $T"
  member "$c-b" "$c" "$G" "$T" --expect 5 --timeout 30
  wait_ok $MPID "$COMPAT_TMP/$c-b.log"
  mcheck "$mc" "group: commit, close, resume at committed offset" "a new member resumes at offset 5 and reads records 5..9 once" \
    same_nonempty <(printf '0 %d a-%05d\n' 5 5 6 6 7 7 8 8 9 9) <(cut -d' ' -f1,2,4 "$COMPAT_TMP/$c-b.out")
done

# ------------------------------------------------------------------------------------------------------------
# 2. two members, the second joining while a producer writes: exactly once across members.
# run_members NAME CLIENT PARTITIONS COUNT RATE PLAN [member args]: PLAN is a list of "+SEC" (a member joins SEC s
# after the producer starts) and "-SEC:I" (member I leaves then); every member still present leaves at the end.
run_members() {
  local name=$1 client=$2 parts=$3 count=$4 rate=$5 plan=$6; shift 6
  RUN_T=$(topic_name "$name"); RUN_G="$name-$$"; RUN_DIR="$COMPAT_TMP/$name"; mkdir -p "$RUN_DIR"
  py create_topic.py --topic "$RUN_T" --partitions "$parts" >/dev/null || return 1
  local acked="$RUN_DIR/acked" n=0 step t=0 sec i
  : >"$acked"; RUN_PIDS=(); RUN_NAMES=()
  member "$name-m0" "$client" "$RUN_G" "$RUN_T" --stop-file "$RUN_DIR/stop.0" --timeout 80 "$@"
  RUN_PIDS+=($MPID); RUN_NAMES+=("$name-m0"); n=1
  wait_event "$COMPAT_TMP/$name-m0.ev" "assign [0-9]" 20 || return 1
  timeout -k 5 60 "$PYTHON" "$COMPAT_PY/keyed_producer.py" --bootstrap "$BROKER" --topic "$RUN_T" --count "$count" \
    --rate "$rate" --acked "$acked" --timeout 50 >"$RUN_DIR/producer.log" 2>&1 &
  local prod=$!; track $prod
  for step in $plan; do
    sec=${step:1}; sec=${sec%%:*}
    sleep "$(awk -v a="$sec" -v b="$t" 'BEGIN {d=a-b; print (d>0?d:0)}')"; t=$sec
    if [ "${step:0:1}" = + ]; then
      member "$name-m$n" "$client" "$RUN_G" "$RUN_T" --stop-file "$RUN_DIR/stop.$n" --timeout 80 "$@"
      RUN_PIDS+=($MPID); RUN_NAMES+=("$name-m$n"); n=$((n+1))
    else
      i=${step##*:}; touch "$RUN_DIR/stop.$i"
    fi
  done
  wait_ok $prod "$RUN_DIR/producer.log" || return 1
  local outs=(); for i in "${RUN_NAMES[@]}"; do outs+=("$COMPAT_TMP/$i.out"); done
  wait_lines "$(lines "$acked")" 40 "${outs[@]}"
  sleep 1   # let a duplicate, if any, arrive before the members stop
  for ((i=0; i<n; i++)); do touch "$RUN_DIR/stop.$i"; done
  local ok=0; for i in "${!RUN_PIDS[@]}"; do wait_ok "${RUN_PIDS[$i]}" "$COMPAT_TMP/${RUN_NAMES[$i]}.log" || ok=1; done
  RUN_OUTS=("${outs[@]}")
  return $ok
}
verify_run() { # max-duplicates
  local r; r=$("$PYTHON" "$COMPAT_PY/verify_once.py" --acked "$RUN_DIR/acked" --max-duplicates "$1" "${RUN_OUTS[@]}")
  local rc=$?; log "    $(head -n 1 <<<"$r")"; tail -n +2 <<<"$r" | sed 's/^/    /'; RUN_SUMMARY=$(head -n 1 <<<"$r"); return $rc
}
every_member_consumed() { local f; for f in "${RUN_OUTS[@]}"; do [ -s "$f" ] || { log "    $f is empty"; return 1; }; done; }

for c in "${CLIENTS[@]}"; do
  mc=$(mname "$c")
  if ! run_members "g2-$c" "$c" 4 1200 400 "+1"; then fail "$mc: two-member run completes"; continue; fi
  mcheck "$mc" "group: 2 members rebalancing while producing, exactly once" "every acknowledged record consumed exactly once by 2 members" verify_run 0
  mcheck "$mc" "group: 2 members rebalancing while producing, exactly once" "both members consumed records" every_member_consumed
done

# ------------------------------------------------------------------------------------------------------------
# 3. confluent-kafka, three members: join at 1 s and 2 s, the first leaves at 3 s; eager and cooperative-sticky.
if run_members g3-eager confluent 6 2000 400 "+1 +2 -3:0" --assignor range; then
  mcheck confluent-kafka "group: 3 members (eager, range) join/leave while producing, exactly once" \
    "every acknowledged record consumed exactly once across 3 members" verify_run 0
  mcheck confluent-kafka "group: 3 members (eager, range) join/leave while producing, exactly once" \
    "all 3 members consumed records" every_member_consumed
else fail "confluent-kafka: three-member eager run completes"; fi

# incremental: some revoke left its member holding partitions (eager revokes everything at every rebalance).
incremental() {
  local f
  for f in "$@"; do
    awk '$2=="assign" {for (i=3;i<=NF;i++) held[$i]=1}
         $2=="revoke" {for (i=3;i<=NF;i++) delete held[$i]; n=0; for (p in held) n++; if (n>0) found=1}
         END {exit !found}' "$f.ev" && return 0
  done
  log "    no member kept a partition through a revoke"; return 1
}
if run_members g3-coop confluent 6 2000 400 "+1 +2 -3:0" --assignor cooperative-sticky; then
  mcheck confluent-kafka "group: cooperative-sticky, 3 members join/leave while producing, exactly once" \
    "every acknowledged record consumed exactly once across 3 members" verify_run 0
  mcheck confluent-kafka "group: cooperative-sticky, 3 members join/leave while producing, exactly once" \
    "incremental rebalance: a member keeps partitions while others are revoked" incremental "${RUN_NAMES[@]/#/$COMPAT_TMP/}"
  for f in "${RUN_NAMES[@]}"; do log "    $f: $(grep -E 'assign|revoke|lost' "$COMPAT_TMP/$f.ev" | tr '\n' ';' | cut -c1-300)"; done
else fail "confluent-kafka: three-member cooperative-sticky run completes"; fi

# ------------------------------------------------------------------------------------------------------------
# 3b. confluent-kafka static membership (group.instance.id): a member that restarts within its session timeout gets
# its partitions back without a rebalance; the other member is not revoked (KIP-345).
T=$(topic_name gstatic); G="gstatic-$$"
if py create_topic.py --topic "$T" --partitions 4 >/dev/null; then
  member st-a confluent "$G" "$T" --instance-id "inst-a-$$" --session-ms 10000 --stop-file "$COMPAT_TMP/st-a.stop" --timeout 60; STA=$MPID
  member st-b confluent "$G" "$T" --instance-id "inst-b-$$" --session-ms 10000 --stop-file "$COMPAT_TMP/st-b.stop" --timeout 60; STB=$MPID
  settled() { # both hold a non-empty assignment of 2 partitions
    local a b
    a=$(grep ' assign [0-9]' "$COMPAT_TMP/st-a.ev" 2>/dev/null | tail -n 1 | cut -d' ' -f3-)
    b=$(grep ' assign [0-9]' "$COMPAT_TMP/st-b.ev" 2>/dev/null | tail -n 1 | cut -d' ' -f3-)
    [ "$(wc -w <<<"$a")" = 2 ] && [ "$(wc -w <<<"$b")" = 2 ] && [ "$(tail -n 1 "$COMPAT_TMP/st-a.ev" | cut -d' ' -f2)" = assign ]
  }
  ok=1; for ((i=0; i<150; i++)); do settled && { ok=0; break; }; sleep 0.1; done
  sleep 1
  before_b=$(grep ' assign [0-9]' "$COMPAT_TMP/st-b.ev" | tail -n 1 | cut -d' ' -f3-)
  revokes_a=$(grep -c ' revoke' "$COMPAT_TMP/st-a.ev")
  touch "$COMPAT_TMP/st-b.stop"; wait $STB
  member st-b2 confluent "$G" "$T" --instance-id "inst-b-$$" --session-ms 10000 --stop-file "$COMPAT_TMP/st-b.stop2" --timeout 60; STB2=$MPID
  wait_event "$COMPAT_TMP/st-b2.ev" "assign [0-9]" 15
  sleep 2
  after_b=$(grep ' assign [0-9]' "$COMPAT_TMP/st-b2.ev" | tail -n 1 | cut -d' ' -f3-)
  mcheck confluent-kafka "group: static membership (group.instance.id) restart without rebalance" \
    "a restarted static member gets its partitions back ([$before_b] -> [$after_b])" \
    bash -c "[ $ok = 0 ] && [ -n '$before_b' ] && [ '$before_b' = '$after_b' ]"
  mcheck confluent-kafka "group: static membership (group.instance.id) restart without rebalance" \
    "the other static member is not revoked while it restarts (revokes $revokes_a -> $(grep -c ' revoke' "$COMPAT_TMP/st-a.ev"))" \
    equals "$revokes_a" "$(grep -c ' revoke' "$COMPAT_TMP/st-a.ev")" "revokes of the other member"
  touch "$COMPAT_TMP/st-a.stop" "$COMPAT_TMP/st-b.stop2"; wait $STA $STB2
else fail "create $T"; fi

# ------------------------------------------------------------------------------------------------------------
# 4. admin clients: list groups, describe a Stable group with one member, list its committed offsets.
T=$(topic_name gadm); G="gadm-$$"
py create_topic.py --topic "$T" --partitions 2 >/dev/null || fail "create $T"
gen d 20 >"$COMPAT_TMP/adm.in"
kc -P -t "$T" -p 0 -l <(head -n 12 "$COMPAT_TMP/adm.in") && kc -P -t "$T" -p 1 -l <(tail -n 8 "$COMPAT_TMP/adm.in") \
  || fail "produce to $T"
member adm confluent "$G" "$T" --stop-file "$COMPAT_TMP/adm.stop" --assignor roundrobin --timeout 60
ADM=$MPID
wait_lines 20 20 "$COMPAT_TMP/adm.out" && sleep 0.5
for c in kafka-python aiokafka confluent; do
  mc=$(mname "$c")
  mcheck "$mc" "admin: list, describe groups, list group offsets" \
    "lists $G, describes it (Stable, 1 member, consumer/roundrobin), its offsets are 0:12 1:8" \
    py group_admin.py --client "$c" --group "$G" --topic "$T" --state Stable --members 1 --protocol roundrobin --offsets 0:12,1:8
done
touch "$COMPAT_TMP/adm.stop"; wait_ok $ADM "$COMPAT_TMP/adm.log" || fail "admin group member stops cleanly"

# ------------------------------------------------------------------------------------------------------------
# 5. kcat -G (balanced consumer) on both librdkafka builds: two members split a 2-partition topic; after they
# close (auto-commit), a third resumes where they stopped.
kcat_group() {
  local kcl; kcl=$(kcat_client)
  local T G d="$COMPAT_TMP/kg-$kcl"; T=$(topic_name "gk-$kcl"); G="gk-$kcl-$$"; mkdir -p "$d"
  py create_topic.py --topic "$T" --partitions 2 >/dev/null || { fail "$kcl: create $T"; return; }
  local k1 k2
  timeout -k 5 60 "$KCAT" -b "$BROKER" -G "$G" -X auto.offset.reset=earliest -X heartbeat.interval.ms=300 \
    -u -f '%p %o %s\n' "$T" >"$d/k1.out" 2>"$d/k1.err" & k1=$!; track $k1
  timeout -k 5 60 "$KCAT" -b "$BROKER" -G "$G" -X auto.offset.reset=earliest -X heartbeat.interval.ms=300 \
    -u -f '%p %o %s\n' "$T" >"$d/k2.out" 2>"$d/k2.err" & k2=$!; track $k2
  split() { # each kcat's latest assignment holds one partition, different ones
    local a b
    a=$(grep -o 'assigned: .*' "$d/k1.err" 2>/dev/null | tail -n 1); b=$(grep -o 'assigned: .*' "$d/k2.err" 2>/dev/null | tail -n 1)
    [ -n "$a" ] && [ -n "$b" ] && [ "$(grep -o '\[[0-9]*\]' <<<"$a" | wc -l)" = 1 ] && [ "$(grep -o '\[[0-9]*\]' <<<"$b" | wc -l)" = 1 ] && [ "$a" != "$b" ]
  }
  local i ok=1; for ((i=0; i<200; i++)); do split && { ok=0; break; }; sleep 0.1; done
  mcheck "$kcl" "kcat -G balanced consumer: 2 members split, resume after close" \
    "two kcat -G members each get one of 2 partitions (after $((i/10)) s)" test $ok = 0
  gen "$kcl" 200 >"$d/in"
  kc -P -t "$T" -p 0 -l <(head -n 100 "$d/in") && kc -P -t "$T" -p 1 -l <(sed -n 101,200p "$d/in") || fail "$kcl: produce to $T"
  wait_lines 200 20 "$d/k1.out" "$d/k2.out"
  sleep 1.5   # > auto.commit.interval.ms would be 5 s; close commits the stored offsets anyway
  kill -TERM $k1 $k2 2>/dev/null; wait $k1 $k2 2>/dev/null
  mcheck "$kcl" "kcat -G balanced consumer: 2 members split, resume after close" \
    "together they consume all 200 records exactly once, each member one partition" \
    bash -c '[ -s "$1" ] && [ -s "$2" ] && [ "$(cut -d" " -f1 "$1" | sort -u | wc -l)" = 1 ] && [ "$(cut -d" " -f1 "$2" | sort -u | wc -l)" = 1 ] && diff <(sort "$3") <(cat "$1" "$2" | cut -d" " -f3 | sort) >/dev/null' \
    _ "$d/k1.out" "$d/k2.out" "$d/in"
  gen "$kcl-more" 10 >"$d/in2"
  kc -P -t "$T" -p 0 -l <(head -n 5 "$d/in2") && kc -P -t "$T" -p 1 -l <(tail -n 5 "$d/in2") || fail "$kcl: produce more to $T"
  mcheck "$kcl" "kcat -G balanced consumer: 2 members split, resume after close" \
    "a new kcat -G member resumes at the auto-committed offsets (exactly the 10 new records)" \
    same_nonempty <(sort "$d/in2") <(kc -G "$G" -X auto.offset.reset=earliest -c 10 -q -f '%s\n' "$T" | sort)
}
kcat_variants_run kcat_group

finish
