#!/usr/bin/env bash
# High watermark right after multi-record batches: 3 batches of 5 records (confluent-kafka, linger),
# then the HWM must be 15 (kcat -Q and get_watermark_offsets) and -o end must deliver nothing old.
. "$(dirname "$0")/../lib.sh"
require_python_modules confluent_kafka
BUG="high watermark = base offset of the last batch + 1"
broker_start || { fail "broker starts"; finish; }

produce_late() { echo "late:one more" | kc -P -t "$1" -p 0 -K:; }

variant() {
  local T out="$COMPAT_TMP/out.txt" hw
  T=$(topic_name hwm)
  check "$KCAT_NAME: confluent-kafka produces 3 batches of 5 records to $T[0]" \
    py produce.py --topic "$T" --partition 0 --count 15 --batch 5 --linger-ms 200 --prefix hw --out "$COMPAT_TMP/delivered.txt"
  check "delivery reports carry offsets 0..14" \
    same_file <(seq 0 14) <(awk '{print $2}' "$COMPAT_TMP/delivered.txt" | sort -n)
  hw=$(kc -Q -t "$T:0:-1" | awk '/offset/ {print $NF}')
  check_known_tansu_bug "$BUG" "$KCAT_NAME: -Q $T:0:-1 (high watermark) = 15" equals 15 "$hw" "high watermark"
  hw=$(py watermarks.py --topic "$T" --partition 0)
  check_known_tansu_bug "$BUG" "confluent-kafka get_watermark_offsets = (0, 15)" equals "0 15" "$hw" "watermarks"
  kc -C -t "$T" -p 0 -o end -e -q -f '%o\n' >"$out"
  check_known_tansu_bug "$BUG" "$KCAT_NAME: -C -o end -e consumes nothing old" equals "" "$(cat "$out")" "offsets consumed from end"
  kc -C -t "$T" -p 0 -o beginning -e -q -f '%o %k\n' >"$out"
  check "$KCAT_NAME: -C -o beginning -e consumes all 15 with their keys" \
    same_file <(for i in $(seq 0 14); do printf '%d hw-k%07d\n' $i $i; done) "$out"
  # One more single-record batch: HWM 16, -o -1 is exactly that record.
  check "$KCAT_NAME: one more record (single-record batch)" produce_late "$T"
  hw=$(kc -Q -t "$T:0:-1" | awk '/offset/ {print $NF}')
  check_known_tansu_bug "$BUG" "$KCAT_NAME: high watermark = 16 after it" equals 16 "$hw" "high watermark"
  kc -C -t "$T" -p 0 -o -1 -e -q -f '%o %k:%s\n' >"$out"
  check_known_tansu_bug "$BUG" "$KCAT_NAME: -o -1 consumes exactly offset 15 'late'" equals "15 late:one more" "$(cat "$out")" "record at -o -1"
}

kcat_variants_run variant
finish
