#!/usr/bin/env bash
# kcat -z gzip|snappy|lz4|zstd: 1000 keyed records produced compressed, consumed back identical,
# once per kcat build (Debian librdkafka 2.0.2 and the wheel's 2.16).
. "$(dirname "$0")/../lib.sh"
require_python_modules confluent_kafka
N=1000
broker_start || { fail "broker starts"; finish; }

variant() {
  local codec T in expect out
  for codec in gzip snappy lz4 zstd; do
    T=$(topic_name "codec-$codec")
    in="$COMPAT_TMP/in.$codec.txt"; expect="$COMPAT_TMP/expect.$codec.txt"; out="$COMPAT_TMP/out.$codec.txt"
    "$PYTHON" "$COMPAT_PY/gen_lines.py" --count $N --prefix "z$codec" --out "$in" --expect "$expect" --headers "codec=$codec"
    mcheck "$(kcat_client)" "produce compressed: $codec" "-P -z $codec $N records to $T[0]" \
      kc -P -t "$T" -p 0 -K: -H "codec=$codec" -z "$codec" -X linger.ms=50 -l "$in"
    kc -C -t "$T" -p 0 -o beginning -e -q -f '%k:%s:%h\n' >"$out"
    mcheck "$(kcat_client)" "produce compressed: $codec" "-C reads the $N $codec records back identical" same_file "$expect" "$out"
    kc -C -t "$T" -p 0 -o beginning -e -q -f '%o\n' >"$out"
    mcheck "$(kcat_client)" "produce compressed: $codec" "$codec records have offsets 0..$((N-1))" same_file <(seq 0 $((N-1))) "$out"
  done
}

kcat_variants_run variant
finish
