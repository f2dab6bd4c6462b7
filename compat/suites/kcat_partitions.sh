#!/usr/bin/env bash
# Several partitions: a 3-partition topic made with confluent-kafka AdminClient.create_topics, keyed
# kcat produce (librdkafka's default partitioner), every partition consumed, total = produced, each key
# in exactly one partition and in produce order there. On woodpecker the broker also runs with
# --default-partitions 4 and an auto-created topic must get 4 partitions.
. "$(dirname "$0")/../lib.sh"
require_python_modules confluent_kafka
N=3000; KEYS=300; P=3
if [ "$BROKER_KIND" = woodpecker ]; then broker_start --default-partitions 4 || { fail "broker starts"; finish; }
else broker_start || { fail "broker starts"; finish; }; fi

in="$COMPAT_TMP/in.txt"
for ((i=0; i<N; i++)); do printf 'key-%03d:value-%05d\n' $((i % KEYS)) $i; done >"$in"

partitions_of() { # topic -> partition count from kcat -L
  kc -L -t "$1" | sed -n "s/.*topic \"$1\" with \([0-9]*\) partitions.*/\1/p"
}

keys_in_one_partition() { # file of "partition key:value" lines
  awk '{split($2, kv, ":"); k=kv[1]; if (k in p && p[k] != $1) {print "    key " k " in partitions " p[k] " and " $1; bad=1} p[k]=$1} END {exit bad}' "$1"
}

per_key_order_kept() { # within a partition, values of one key must increase (produce order)
  awk '{split($2, kv, ":"); k=kv[1]; v=kv[2]; if (k in last && last[k] >= v) {print "    key " k ": " v " after " last[k]; bad=1} last[k]=v} END {exit bad}' "$1"
}

variant() {
  local T all="$COMPAT_TMP/all.txt" p cnt total=0 nonempty=1 hwsum=0 hw
  T=$(topic_name parts)
  check "AdminClient.create_topics($T, num_partitions=$P)" py create_topic.py --topic "$T" --partitions $P
  check "$KCAT_NAME: -L shows $T with $P partitions" equals $P "$(partitions_of "$T")" "partition count"
  check "$KCAT_NAME: keyed -P of $N records ($KEYS keys), partitioner picks the partition" \
    kc -P -t "$T" -K: -X linger.ms=20 -l "$in"
  : >"$all"
  for ((p=0; p<P; p++)); do
    kc -C -t "$T" -p $p -o beginning -e -q -f "$p %k:%s\n" >"$COMPAT_TMP/p$p.txt"
    cnt=$(wc -l <"$COMPAT_TMP/p$p.txt" | tr -d ' ')
    log "    partition $p: $cnt records"
    [ "$cnt" -gt 0 ] || nonempty=0
    total=$((total + cnt))
    cat "$COMPAT_TMP/p$p.txt" >>"$all"
    hw=$(kc -Q -t "$T:$p:-1" | awk '/offset/ {print $NF}')
    hwsum=$((hwsum + ${hw:-0}))
  done
  check "$KCAT_NAME: every one of the $P partitions got records" test $nonempty = 1
  check "$KCAT_NAME: consumed total = produced ($N)" equals $N $total "total consumed"
  check "$KCAT_NAME: the consumed records are exactly the produced ones" \
    same_file <(sort "$in") <(cut -d' ' -f2- "$all" | sort)
  check "$KCAT_NAME: each key lives in exactly one partition" keys_in_one_partition "$all"
  check "$KCAT_NAME: per key, records keep produce order" per_key_order_kept "$all"
  check_known_tansu_bug "high watermark = base offset of the last batch + 1" \
    "$KCAT_NAME: sum of the partitions' high watermarks = $N" equals $N $hwsum "sum of high watermarks"

  if [ "$BROKER_KIND" = woodpecker ]; then
    local TA; TA=$(topic_name auto)
    check "$KCAT_NAME: produce to a new topic $TA (auto-creation)" bash -c 'echo "a:b" | "$@"' _ "$KCAT" -b "$BROKER" -P -t "$TA" -K:
    check "$KCAT_NAME: auto-created $TA has --default-partitions 4 partitions" equals 4 "$(partitions_of "$TA")" "partition count"
  fi
}

kcat_variants_run variant
finish
