#!/usr/bin/env bash
# Broker settings that shape the logs: --segment-bytes and --segment-ms (Kafka's log.segment.bytes and
# log.roll.ms). A broker rolling at 1 MiB takes 4 MiB of kcat records into several segments and reads
# every record back across them; DescribeConfigs reports the settings as the topic's segment.bytes and
# segment.ms, with the sources Kafka gives (STATIC_BROKER_CONFIG for a flag, DEFAULT_CONFIG otherwise);
# a broker rolling after 2 s starts a new segment for records produced after a pause; out of range
# values stop the broker with a message naming the setting. Woodpecker only.
. "$(dirname "$0")/../lib.sh"
require_python_modules confluent_kafka
[ "$BROKER_KIND" = woodpecker ] || skip_suite "woodpecker broker settings"
kcat_use deb || skip_suite "kcat is not installed (apt-get install kcat, or make setup-test)"

segments_of() { # topic -> number of segments of its partition-0 log (broker stopped: embedded metadata is single-process)
  "$WOODPECKER_BIN" wal list --data-dir "$BROKER_DATA" 2>>"$COMPAT_TMP/list.stderr" \
    | awk -v t="$1" '/^[^ ]/ {inlog = index($0, t) > 0} inlog && /^  segment / {n++} END {print n + 0}'
}

N=4000
in="$COMPAT_TMP/in.txt"
"$PYTHON" -c "
import sys
for i in range($N): sys.stdout.write('record-%05d-' % i + 'x' * 1000 + '\n')" >"$in"

broker_start --segment-bytes 1048576 --segment-ms 600000 || { fail "broker starts with --segment-bytes 1048576"; finish; }
T=$(topic_name seg)
check "kcat: -P of $N records of ~1 KiB to $T" kc -P -t "$T" -X linger.ms=5 -l "$in"
check "kcat: every record read back in order across the segments" \
  same_file "$in" <(kc -C -t "$T" -p 0 -o beginning -e -q -f '%s\n')
py describe_configs.py --topic "$T" >"$COMPAT_TMP/configs.txt"
check "DescribeConfigs: segment.bytes=1048576" grep -qx "segment.bytes=1048576" "$COMPAT_TMP/configs.txt"
check "DescribeConfigs: segment.ms=600000" grep -qx "segment.ms=600000" "$COMPAT_TMP/configs.txt"
py describe_configs.py --topic "$T" --sources >"$COMPAT_TMP/sources.txt"
check "DescribeConfigs: segment.bytes set by --segment-bytes is STATIC_BROKER_CONFIG" \
  grep -qx "segment.bytes=1048576 STATIC_BROKER_CONFIG" "$COMPAT_TMP/sources.txt"
check "DescribeConfigs: retention.ms, set nowhere, is DEFAULT_CONFIG" \
  grep -qx "retention.ms=604800000 DEFAULT_CONFIG" "$COMPAT_TMP/sources.txt"
check "confluent-kafka incremental_alter_configs: retention.ms=86400000 on $T" \
  py alter_configs.py --topic "$T" --client confluent retention.ms=86400000
check "DescribeConfigs after it: retention.ms=86400000" bash -c '"$@" | grep -qx retention.ms=86400000' _ \
  timeout -k 5 "$CLIENT_TIMEOUT" "$PYTHON" "$COMPAT_PY/describe_configs.py" --bootstrap "$BROKER" --topic "$T"
if "$PYTHON" -c "import kafka" 2>/dev/null; then
  check "kafka-python alter_configs (AlterConfigs): max.message.bytes=500000" \
    py alter_configs.py --topic "$T" --client kafka-python max.message.bytes=500000
  py describe_configs.py --topic "$T" >"$COMPAT_TMP/configs2.txt"
  check "DescribeConfigs after it: max.message.bytes=500000" grep -qx "max.message.bytes=500000" "$COMPAT_TMP/configs2.txt"
  check "DescribeConfigs after it: retention.ms=86400000 (kept: the client sends the topic's other configs along)" \
    grep -qx "retention.ms=86400000" "$COMPAT_TMP/configs2.txt"
else
  skip "kafka-python alter_configs (kafka-python not installed)"
fi
timeout -k 5 "$CLIENT_TIMEOUT" "$PYTHON" "$COMPAT_PY/alter_configs.py" --bootstrap "$BROKER" --topic "$T" \
  --client confluent segment.bytes=10 >"$COMPAT_TMP/refused.txt" 2>&1
check "confluent-kafka incremental_alter_configs of segment.bytes=10 is refused with INVALID_CONFIG naming it" \
  bash -c 'grep -q INVALID_CONFIG "$1" && grep -q "segment.bytes=10" "$1"' _ "$COMPAT_TMP/refused.txt"
broker_stop
segs=$(segments_of "$T")
log "    $T: $segs segments"
check "4 MiB at --segment-bytes 1048576 went into at least 3 segments (got $segs)" test "$segs" -ge 3

broker_start --segment-ms 2000 || { fail "broker restarts with --segment-ms 2000"; finish; }
T2=$(topic_name age)
check "kcat: first record to $T2" bash -c 'echo first | "$@"' _ "$KCAT" -b "$BROKER" -P -t "$T2"
sleep 3
check "kcat: second record to $T2, 3 s later" bash -c 'echo second | "$@"' _ "$KCAT" -b "$BROKER" -P -t "$T2"
check "kcat: both records read back" equals "first second" "$(kc -C -t "$T2" -p 0 -o beginning -e -q | xargs)" "records"
broker_stop
segs=$(segments_of "$T2")
check "a record produced after --segment-ms 2000 went into a new segment (got $segs segments)" test "$segs" -ge 2

for bad in "--segment-bytes 1000" "--segment-ms 10"; do
  out=$(timeout -k 5 20 "$WOODPECKER_BIN" broker --listen 127.0.0.1:0 --data-dir "$COMPAT_TMP/bad" $bad 2>&1)
  rc=$?
  check "broker $bad exits non-zero naming the setting and its range" \
    bash -c '[ "$1" != 0 ] && [ "$1" != 124 ] && grep -Eq -- "${2%% *}: .*must be" <<<"$3"' _ "$rc" "${bad#--}" "$out"
done
finish
