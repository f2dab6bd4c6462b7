#!/usr/bin/env python3
"""Streams --count records with confluent-kafka (acks=all) at about --rate records/s and appends one
line per *acknowledged* record to --acked, as soon as its delivery report arrives:
    "partition offset key value_hex"
Meant to run while the broker is killed with SIGKILL and restarted: librdkafka keeps retrying the
unacknowledged records (message.timeout.ms = --message-timeout). Exit 0 once every record has a
delivery report (acknowledged or failed); the summary line says how many of each."""
import argparse
import time

from kcommon import Deadline, die, record, say


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=20000)
    ap.add_argument("--rate", type=float, default=2000, help="records per second")
    ap.add_argument("--acked", required=True)
    ap.add_argument("--idempotent", action="store_true")
    ap.add_argument("--message-timeout", type=float, default=60, help="seconds librdkafka retries a record")
    ap.add_argument("--timeout", type=float, default=180)
    a = ap.parse_args()
    from confluent_kafka import Producer

    dl = Deadline(a.timeout)
    p = Producer({"bootstrap.servers": a.bootstrap, "acks": "all", "linger.ms": 5,
                  "enable.idempotence": a.idempotent, "message.timeout.ms": int(a.message_timeout * 1000),
                  "reconnect.backoff.ms": 50, "reconnect.backoff.max.ms": 500,
                  "retry.backoff.ms": 100, "retry.backoff.max.ms": 500})
    acked = failed = 0
    first_error = None
    out = open(a.acked, "w", buffering=1)

    def cb(err, msg):
        nonlocal acked, failed, first_error
        if err is not None:
            failed += 1
            first_error = first_error or str(err)
            return
        acked += 1
        out.write(f"{msg.partition()} {msg.offset()} {msg.key().decode()} {msg.value().hex()}\n")

    start = time.monotonic()
    for i in range(a.count):
        k, v, h = record(i, "crash", binary=True)
        while True:
            try:
                p.produce(a.topic, key=k, value=v, headers=h, on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
            if dl.expired():
                die(f"local queue full until the deadline ({a.timeout}s) at record {i}")
        p.poll(0)
        ahead = start + (i + 1) / a.rate - time.monotonic()
        if ahead > 0:
            p.poll(ahead)
    left = p.flush(dl.remaining())
    out.close()
    say(f"crash_producer: produced {a.count}, acknowledged {acked}, failed {failed}, unresolved {left}"
        + (f", first error: {first_error}" if first_error else ""))
    if left:
        die(f"{left} records had no delivery report within {a.timeout}s")


if __name__ == "__main__":
    main()
