#!/usr/bin/env bash
# kcat -X enable.idempotence=true: InitProducerId + sequence numbers; each record lands exactly once.
# Two producer runs (two producer IDs) into one partition, read back exactly once, offsets contiguous.
. "$(dirname "$0")/../lib.sh"
require_python_modules confluent_kafka
N=${KCAT_IDEMPOTENT_COUNT:-20000}
broker_start || { fail "broker starts"; finish; }

variant() {
  local T in1 in2 exp out
  T=$(topic_name idem)
  in1="$COMPAT_TMP/in1.txt"; in2="$COMPAT_TMP/in2.txt"; exp="$COMPAT_TMP/expect.txt"; out="$COMPAT_TMP/out.txt"
  "$PYTHON" "$COMPAT_PY/gen_lines.py" --count $N --prefix ida --out "$in1" --expect "$exp.1" --headers "run=1"
  "$PYTHON" "$COMPAT_PY/gen_lines.py" --count $N --prefix idb --out "$in2" --expect "$exp.2" --headers "run=2"
  cat "$exp.1" "$exp.2" >"$exp"
  : >"$COMPAT_TMP/kcat.stderr"   # only this variant's kcat log is searched for idempotence errors
  mcheck "$(kcat_client)" "produce (idempotent)" "idempotent producer #1 sends $N records to $T[0]" \
    kc -P -t "$T" -p 0 -K: -H run=1 -X enable.idempotence=true -X linger.ms=10 -X max.in.flight=5 -l "$in1"
  mcheck "$(kcat_client)" "produce (idempotent)" "idempotent producer #2 sends $N more records" \
    kc -P -t "$T" -p 0 -K: -H run=2 -X enable.idempotence=true -X linger.ms=10 -X max.in.flight=5 -l "$in2"
  if grep -q -i -E "fatal|OUT_OF_ORDER|DUPLICATE_SEQ" "$COMPAT_TMP/kcat.stderr"; then
    _matrix_row "$(kcat_client)" "produce (idempotent)" FAIL "idempotence errors in kcat's log"
    fail "$KCAT_NAME: no idempotence errors in kcat's log ($(grep -i -m1 -E 'fatal|OUT_OF_ORDER|DUPLICATE_SEQ' "$COMPAT_TMP/kcat.stderr"))"
  else
    mcheck "$(kcat_client)" "produce (idempotent)" "no idempotence errors in kcat's log" true
  fi
  kc -C -t "$T" -p 0 -o beginning -e -q -f '%k:%s:%h\n' >"$out"
  mcheck "$(kcat_client)" "produce (idempotent)" "read back exactly once, in order, byte for byte ($((2*N)) records)" same_file "$exp" "$out"
  kc -C -t "$T" -p 0 -o beginning -e -q -f '%o\n' >"$out"
  mcheck "$(kcat_client)" "produce (idempotent)" "offsets are exactly 0..$((2*N-1))" same_file <(seq 0 $((2*N-1))) "$out"
  local hw; hw=$(kc -Q -t "$T:0:-1" | awk '/offset/ {print $NF}')
  check_known_tansu_bug "high watermark = base offset of the last batch + 1" \
    "$KCAT_NAME: high watermark is $((2*N))" equals $((2*N)) "$hw" "high watermark"
}

kcat_variants_run variant
finish
