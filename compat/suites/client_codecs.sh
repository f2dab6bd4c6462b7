#!/usr/bin/env bash
# Compression from every Python client: confluent-kafka, kafka-python and aiokafka each produce records with
# gzip, snappy, lz4 and zstd (acks=all, offsets contiguous); the same client reads them back (assign, from the
# beginning: offsets, keys, binary values, headers identical), and so does confluent-kafka for the other two
# clients' batches (cross-client decompression). A codec whose Python module is missing is a SKIP row naming the
# pip package (kafka-python: python-snappy, lz4, zstandard; aiokafka: cramjam).
. "$(dirname "$0")/../lib.sh"
require_python_modules confluent_kafka kafka aiokafka
N=${CLIENT_CODECS_COUNT:-300}
broker_start || { fail "broker starts"; finish; }

codec_module() { # client codec -> python module needed ("" = none)
  case "$1/$2" in
    confluent/*|*/gzip) echo "" ;;
    kafka-python/snappy) echo snappy ;;
    kafka-python/lz4) echo lz4.frame ;;
    kafka-python/zstd) echo zstandard ;;
    aiokafka/*) echo cramjam ;;
  esac
}
pip_name() { case "$1" in snappy) echo python-snappy ;; lz4.frame) echo lz4 ;; *) echo "$1" ;; esac; }

for c in confluent kafka-python aiokafka; do
  mc=$c; [ $c = confluent ] && mc=confluent-kafka
  for z in gzip snappy lz4 zstd; do
    mod=$(codec_module $c $z)
    if [ -n "$mod" ] && ! "$PYTHON" -c "import $mod" 2>/dev/null; then
      mskip "$mc" "produce compressed: $z" "python module $mod missing: pip install $(pip_name "$mod")"; continue
    fi
    T=$(topic_name "z-$c-$z")
    mcheck "$mc" "produce compressed: $z" "produces $N records with $z, offsets contiguous" \
      py clients.py produce --client $c --topic "$T" --count $N --compression $z || continue
    mcheck "$mc" "produce compressed: $z" "reads its $z records back identical" \
      py clients.py consume --client $c --topic "$T" --count $N
    [ $c = confluent ] || mcheck "$mc" "produce compressed: $z" "confluent-kafka reads the $z records back identical" \
      py clients.py consume --client confluent --topic "$T" --count $N
  done
done
finish
