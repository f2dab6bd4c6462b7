#!/usr/bin/env python3
"""Verifies that every acknowledged record (lines "partition offset key value_hex" in --acked, as
written by crash_producer.py) is in the log at its offset with the same key and value, that no
offset was acknowledged twice (an offset reused after a crash means an acknowledged record was lost),
and that each partition's log has strictly increasing offsets. Reads every partition from the
beginning with assign() (no consumer group). Exit 0 only if all of that holds."""
import argparse
import collections
import time

from kcommon import Deadline, die, say


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--acked", required=True)
    ap.add_argument("--expect-acked", type=int, default=None, help="fail unless exactly this many were acknowledged")
    ap.add_argument("--check-hwm", action="store_true", help="high watermark must be > every acknowledged offset")
    ap.add_argument("--timeout", type=float, default=120)
    ap.add_argument("--no-duplicates", action="store_true",
                    help="fail if any key is in the log more than once (idempotent producers: each record once)")
    a = ap.parse_args()
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

    dl = Deadline(a.timeout)
    problems = []
    acked = {}
    dup_acks = 0
    lines = 0
    with open(a.acked) as f:
        for line in f:
            lines += 1
            part, off, key, vhex = line.rstrip("\n").split(" ")
            k = (int(part), int(off))
            if k in acked and acked[k] != (key, vhex):
                dup_acks += 1
                if dup_acks <= 3:
                    problems.append(f"offset {k} acknowledged twice for different records: {acked[k][0]} and {key}")
            acked[k] = (key, vhex)
    say(f"verify: {len(acked)} acknowledged (partition, offset) pairs in {a.acked}")
    if dup_acks:
        problems.append(f"{dup_acks} acknowledged offsets were acknowledged again for another record (offset reuse)")
    if a.expect_acked is not None and lines != a.expect_acked:
        problems.append(f"{lines} records acknowledged, expected {a.expect_acked}")

    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "compat-verify", "enable.auto.commit": False,
                  "enable.partition.eof": True, "fetch.wait.max.ms": 100})
    md = c.list_topics(a.topic, timeout=min(20, dl.remaining()))
    t = md.topics.get(a.topic)
    if t is None or t.error is not None:
        problems.append(f"topic {a.topic} not in metadata: {t.error if t else 'absent'}")
        die("; ".join(problems))
    parts = sorted(t.partitions)
    max_acked = collections.defaultdict(lambda: -1)
    for (part, off) in acked:
        max_acked[part] = max(max_acked[part], off)
    hwm = {}
    for part in parts:
        lo, hi = c.get_watermark_offsets(TopicPartition(a.topic, part), timeout=min(20, dl.remaining()), cached=False)
        hwm[part] = hi
        say(f"verify: partition {part}: watermarks ({lo}, {hi}), highest acknowledged offset {max_acked[part]}")
        if a.check_hwm and hi <= max_acked[part]:
            problems.append(f"partition {part}: high watermark {hi} <= acknowledged offset {max_acked[part]}")
    c.assign([TopicPartition(a.topic, part, OFFSET_BEGINNING) for part in parts])
    log = {}
    last = collections.defaultdict(lambda: -1)
    done = set()
    stuck = {}
    non_monotonic = 0
    while len(done) < len(parts) and not dl.expired():
        m = c.poll(0.5)
        for part, (at, since) in stuck.items():
            if last[part] == at and time.monotonic() - since > 5:
                done.add(part)
        if m is None:
            continue
        part = m.partition()
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                # Done at the end of the log once past every acknowledged offset; if the log ends
                # short of them, give it 5 s without progress, then report what is missing.
                if last[part] >= max(max_acked[part], hwm.get(part, 0) - 1):
                    done.add(part)
                else:
                    stuck[part] = (last[part], time.monotonic())
                continue
            die(f"consume error on partition {part}: {m.error()}")
        off = m.offset()
        if off <= last[part]:
            non_monotonic += 1
        last[part] = max(last[part], off)
        log[(part, off)] = (m.key().decode() if m.key() is not None else None, (m.value() or b"").hex())
    c.close()
    if len(done) < len(parts):
        problems.append(f"read timed out: partitions done {sorted(done)} of {parts}, last offsets {dict(last)}")
    if non_monotonic:
        problems.append(f"{non_monotonic} records came back with an offset not above the previous one")
    missing = [k for k in acked if k not in log]
    wrong = [k for k in acked if k in log and log[k] != acked[k]]
    say(f"verify: read {len(log)} records; acknowledged and missing: {len(missing)}; at their offset but different: {len(wrong)}")
    for k in sorted(missing)[:5]:
        problems.append(f"acknowledged record {acked[k][0]} at partition {k[0]} offset {k[1]} is missing")
    for k in sorted(wrong)[:5]:
        what = "value differs" if log[k][0] == acked[k][0] else f"log has key {log[k][0]}"
        problems.append(f"partition {k[0]} offset {k[1]}: acknowledged {acked[k][0]}, {what}")
    keys_in_log = collections.Counter(v[0] for v in log.values())
    dup_keys = sum(1 for n in keys_in_log.values() if n > 1)
    say(f"verify: keys written more than once (allowed for retries of unacknowledged sends): {dup_keys}")
    if a.no_duplicates and dup_keys:
        problems.append(f"{dup_keys} keys are in the log more than once (an idempotent producer's record was written twice)")
    if problems:
        die("; ".join(problems))
    say("verify: every acknowledged record is present, intact, at its offset")


if __name__ == "__main__":
    main()
