#!/usr/bin/env python3
"""Produces records with confluent-kafka (librdkafka) in batches of --batch records: each batch is
produce()d back to back and then flushed, so with linger.ms it travels as one multi-record batch.
Optional explicit timestamps (--ts-start/--ts-step ms). Writes one line per delivered record to --out:
"partition offset timestamp key value" (key/value as text). Exit 0 only if all were delivered."""
import argparse

from kcommon import Deadline, die, record, say


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, required=True, help="records in total")
    ap.add_argument("--batch", type=int, default=1, help="records per flushed batch")
    ap.add_argument("--linger-ms", type=int, default=50)
    ap.add_argument("--ts-start", type=int, default=None, help="timestamp (ms) of the first record")
    ap.add_argument("--ts-step", type=int, default=1000)
    ap.add_argument("--prefix", default="p")
    ap.add_argument("--partition", type=int, default=None)
    ap.add_argument("--idempotent", action="store_true")
    ap.add_argument("--out", default=None)
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()
    from confluent_kafka import Producer

    dl = Deadline(a.timeout)
    p = Producer({"bootstrap.servers": a.bootstrap, "acks": "all", "linger.ms": a.linger_ms,
                  "batch.num.messages": max(a.batch, 1), "enable.idempotence": a.idempotent,
                  "message.timeout.ms": int(a.timeout * 1000)})
    delivered, errors = [], []

    def cb(err, msg):
        if err is not None:
            errors.append(str(err))
        else:
            delivered.append((msg.partition(), msg.offset(), msg.timestamp()[1], msg.key(), msg.value()))

    i = 0
    while i < a.count:
        for _ in range(min(a.batch, a.count - i)):
            k, v, h = record(i, a.prefix)
            kw = {"key": k, "value": v, "headers": h, "on_delivery": cb}
            if a.ts_start is not None:
                kw["timestamp"] = a.ts_start + i * a.ts_step
            if a.partition is not None:
                kw["partition"] = a.partition
            p.produce(a.topic, **kw)
            i += 1
        left = p.flush(dl.remaining())
        if left:
            die(f"{left} records still undelivered after {a.timeout}s")
    if errors:
        die(f"{len(errors)} delivery errors, first: {errors[0]}")
    if a.out:
        with open(a.out, "w") as f:
            for part, off, ts, k, v in delivered:
                f.write(f"{part} {off} {ts} {k.decode()} {v.decode()}\n")
    say(f"delivered {len(delivered)} records to {a.topic} in batches of {a.batch}")


if __name__ == "__main__":
    main()
