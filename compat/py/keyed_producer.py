#!/usr/bin/env python3
"""Writes --count keyed records at about --rate records/s with confluent-kafka (acks=all, idempotent by default):
record i has key "kNN" (NN = i mod --keys) and value "kNN-SSSSSS" (SSSSSS = its sequence number within the key),
so a consumer's output can be checked per key for gaps and duplicates. Appends one line per acknowledged record
to --acked: "partition offset key value". Exit 0 only if every record was acknowledged."""
import argparse
import time

from kcommon import Deadline, die, say


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--keys", type=int, default=24)
    ap.add_argument("--start", type=int, default=0, help="sequence offset (continue an earlier run)")
    ap.add_argument("--acked", required=True)
    ap.add_argument("--timeout", type=float, default=120)
    a = ap.parse_args()
    from confluent_kafka import Producer

    dl = Deadline(a.timeout)
    p = Producer({"bootstrap.servers": a.bootstrap, "acks": "all", "enable.idempotence": True, "linger.ms": 5,
                  "message.timeout.ms": int(a.timeout * 1000)})
    out = open(a.acked, "a")
    errors = []

    def cb(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            out.write(f"{msg.partition()} {msg.offset()} {msg.key().decode()} {msg.value().decode()}\n")

    t0 = time.monotonic()
    for j in range(a.count):
        i = a.start + j
        k = i % a.keys
        p.produce(a.topic, key=f"k{k:02d}".encode(), value=f"k{k:02d}-{i // a.keys:06d}".encode(), on_delivery=cb)
        p.poll(0)
        lag = t0 + (j + 1) / a.rate - time.monotonic()
        if lag > 0:
            p.poll(lag)
        if dl.expired():
            break
    left = p.flush(dl.remaining())
    out.close()
    if left or errors:
        die(f"{left} records undelivered, {len(errors)} errors, first: {errors[:1]}")
    say(f"acknowledged {a.count} records in {time.monotonic() - t0:.1f} s")


if __name__ == "__main__":
    main()
