#!/usr/bin/env python3
"""A group consumer (confluent-kafka or kafka-python) that subscribes with group.id, consumes, commits the
position of the last record it processed and closes. Writes one "partition offset value" line per record to
--out and its assignments to --assignments (one line per change). Prints the time from start to the first
record. Exit 0 when it consumed --expect records (or, without --expect, when it went --idle seconds without
a record after consuming at least one); 1 otherwise."""
import argparse
import sys
import time

from kcommon import die, say


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--client", choices=["confluent", "kafka-python"], default="confluent")
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--assignments", default=None)
    ap.add_argument("--expect", type=int, default=0, help="stop after this many records (0 = until idle)")
    ap.add_argument("--idle", type=float, default=6.0)
    ap.add_argument("--timeout", type=float, default=45)
    a = ap.parse_args()
    start = time.monotonic()
    end = start + a.timeout
    out = open(a.out, "w")
    asg = open(a.assignments, "w") if a.assignments else None
    n = 0
    first = None
    last_rec = time.monotonic()

    def note_assign(parts):
        if asg:
            asg.write(" ".join(str(p) for p in sorted(parts)) + "\n")
            asg.flush()

    if a.client == "confluent":
        from confluent_kafka import Consumer, TopicPartition

        c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": a.group, "auto.offset.reset": "earliest",
                      "enable.auto.commit": False, "session.timeout.ms": 10000, "heartbeat.interval.ms": 500})
        c.subscribe([a.topic], on_assign=lambda _c, ps: note_assign([p.partition for p in ps]),
                    on_revoke=lambda _c, ps: note_assign([]))
        last = {}
        while time.monotonic() < end and (a.expect == 0 or n < a.expect):
            m = c.poll(0.2)
            if m is None:
                if a.expect == 0 and n > 0 and time.monotonic() - last_rec > a.idle:
                    break
                continue
            if m.error():
                say(f"consumer error: {m.error()}")
                continue
            if first is None:
                first = time.monotonic() - start
            last_rec = time.monotonic()
            out.write(f"{m.partition()} {m.offset()} {m.value().decode()}\n")
            last[m.partition()] = m.offset()
            n += 1
        if last:
            c.commit(offsets=[TopicPartition(a.topic, p, o + 1) for p, o in last.items()], asynchronous=False)
        c.close()
    else:
        from kafka import KafkaConsumer, TopicPartition
        from kafka.consumer.subscription_state import ConsumerRebalanceListener
        from kafka.structs import OffsetAndMetadata

        class L(ConsumerRebalanceListener):
            def on_partitions_assigned(self, assigned):
                note_assign([p.partition for p in assigned])

            def on_partitions_revoked(self, revoked):
                note_assign([])

        c = KafkaConsumer(bootstrap_servers=a.bootstrap, group_id=a.group, auto_offset_reset="earliest",
                          enable_auto_commit=False, session_timeout_ms=10000, heartbeat_interval_ms=500)
        c.subscribe([a.topic], listener=L())
        last = {}
        while time.monotonic() < end and (a.expect == 0 or n < a.expect):
            batch = c.poll(timeout_ms=200, max_records=max(1, a.expect - n) if a.expect else 500)
            if not batch:
                if a.expect == 0 and n > 0 and time.monotonic() - last_rec > a.idle:
                    break
                continue
            for tp, msgs in batch.items():
                for m in msgs:
                    if first is None:
                        first = time.monotonic() - start
                    last_rec = time.monotonic()
                    out.write(f"{m.partition} {m.offset} {m.value.decode()}\n")
                    last[m.partition] = m.offset
                    n += 1
        if last:
            c.commit({TopicPartition(a.topic, p): OffsetAndMetadata(o + 1, "", -1) for p, o in last.items()})
        c.close()
    out.close()
    say(f"consumed {n} records; first after {first if first is None else round(first, 3)} s")
    if first is not None:
        say(f"first_record_s={first:.3f}")
    if a.expect and n < a.expect:
        die(f"consumed {n} of {a.expect} records within {a.timeout} s")
    if n == 0 and a.expect == 0:
        die("consumed nothing")


if __name__ == "__main__":
    try:
        main()
    except ImportError as e:
        print(f"client library missing: {e}", file=sys.stderr)
        sys.exit(2)
