#!/usr/bin/env bash
# Python clients, no consumer group: confluent-kafka, kafka-python and aiokafka each produce 1000
# records (binary values, headers) to partition 0 of their own topic, idempotent and not; every topic is
# then read back by all three clients with an explicit assign(), verifying offsets, keys, values, headers.
. "$(dirname "$0")/../lib.sh"
require_python_modules confluent_kafka kafka aiokafka
N=${PY_CLIENTS_COUNT:-1000}
broker_start || { fail "broker starts"; finish; }

topics=()
for producer in confluent kafka-python aiokafka; do
  for idem in plain idempotent; do
    T=$(topic_name "py-$producer-$idem")
    args=(); [ $idem = idempotent ] && args=(--idempotent)
    mc=$producer; [ $producer = confluent ] && mc=confluent-kafka
    checker=(mcheck "$mc" "produce ($idem)")
    # Tansu 0.6.0 answers aiokafka's InitProducerId v0 (transaction_timeout_ms=2147483647) with
    # UNKNOWN_SERVER_ERROR (-1), so aiokafka cannot be idempotent against it.
    [ $producer/$idem/$BROKER_KIND = aiokafka/idempotent/tansu ] && checker=(check_known_tansu_bug "InitProducerId v0 answers UNKNOWN_SERVER_ERROR")
    if "${checker[@]}" "$producer produces $N records ($idem) to $T[0], offsets contiguous" \
        py clients.py produce --client $producer --topic "$T" --count $N "${args[@]}"; then
      topics+=("$T")
    fi
  done
done
for T in "${topics[@]}"; do
  for consumer in confluent kafka-python aiokafka; do
    mc=$consumer; [ $consumer = confluent ] && mc=confluent-kafka
    mcheck "$mc" "consume (assign, no group)" "reads $T[0] back (assign, from beginning): $N identical records" \
      py clients.py consume --client $consumer --topic "$T" --count $N
  done
done
finish
