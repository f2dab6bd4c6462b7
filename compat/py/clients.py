#!/usr/bin/env python3
"""Produce or consume with one of the Python Kafka clients, without a consumer group.

  clients.py produce --client C --topic T --count N [--idempotent]
      sends N records (binary values, 2 headers) to partition 0 and checks that the acknowledged
      offsets are exactly base..base+N-1 in send order.
  clients.py consume --client C --topic T --count N --prefix P
      assigns partition 0 explicitly, reads from the beginning, and checks that exactly N records come
      back with the offsets, keys, values and headers that `produce --prefix P` sent.

C is one of: confluent (confluent-kafka / librdkafka), kafka-python, aiokafka.
Exit 0 when the check holds, 1 when it does not, 2 on bad usage or a missing client."""
import argparse
import asyncio
import sys

from kcommon import Deadline, die, norm_headers, record, say

CLIENTS = ("confluent", "kafka-python", "aiokafka")


def expected(prefix, n):
    return [record(i, prefix, binary=True) for i in range(n)]


# ---------------------------------------------------------------- produce

def produce_confluent(a, recs, dl):
    from confluent_kafka import Producer
    p = Producer({"bootstrap.servers": a.bootstrap, "acks": "all", "linger.ms": 5,
                  "enable.idempotence": a.idempotent, "message.timeout.ms": int(a.timeout * 1000),
                  "compression.type": a.compression or "none"})
    offsets = [None] * len(recs)
    errors = []

    def cb_for(i):
        def cb(err, msg):
            if err is not None:
                errors.append(str(err))
            else:
                offsets[i] = msg.offset()
        return cb

    for i, (k, v, h) in enumerate(recs):
        p.produce(a.topic, key=k, value=v, headers=h, partition=0, on_delivery=cb_for(i))
        p.poll(0)
    left = p.flush(dl.remaining())
    if left or errors:
        die(f"confluent: {left} undelivered, {len(errors)} errors, first: {errors[:1]}")
    return offsets


def produce_kafka_python(a, recs, dl):
    from kafka import KafkaProducer
    p = KafkaProducer(bootstrap_servers=a.bootstrap, acks="all", linger_ms=5, enable_idempotence=a.idempotent,
                      request_timeout_ms=int(min(a.timeout, 30) * 1000), compression_type=a.compression)
    try:
        futs = [p.send(a.topic, key=k, value=v, headers=h, partition=0) for k, v, h in recs]
        p.flush(timeout=dl.remaining())
        return [f.get(timeout=max(dl.remaining(), 0.1)).offset for f in futs]
    finally:
        p.close(timeout=5)


def produce_aiokafka(a, recs, dl):
    from aiokafka import AIOKafkaProducer

    async def run():
        p = AIOKafkaProducer(bootstrap_servers=a.bootstrap, acks="all", linger_ms=5,
                             enable_idempotence=a.idempotent, request_timeout_ms=int(min(a.timeout, 30) * 1000),
                             compression_type=a.compression)
        try:
            await asyncio.wait_for(p.start(), dl.remaining())
            futs = [await p.send(a.topic, key=k, value=v, headers=h, partition=0) for k, v, h in recs]
            mds = await asyncio.wait_for(asyncio.gather(*futs), dl.remaining())
            return [m.offset for m in mds]
        finally:
            await asyncio.wait_for(p.stop(), 10)

    return asyncio.run(run())


# ---------------------------------------------------------------- consume
# Each returns a list of (offset, key, value, headers) for partition 0, stopping after `count`
# records or at the deadline.

def consume_confluent(a, dl):
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "compat-clients", "enable.auto.commit": False})
    out = []
    try:
        c.assign([TopicPartition(a.topic, 0, OFFSET_BEGINNING)])
        while len(out) < a.count + a.extra and not dl.expired():
            m = c.poll(min(0.5, dl.remaining()))
            if m is None:
                if len(out) >= a.count:
                    break
                continue
            if m.error():
                die(f"confluent consume error: {m.error()}")
            out.append((m.offset(), m.key(), m.value(), norm_headers(m.headers())))
    finally:
        c.close()
    return out


def consume_kafka_python(a, dl):
    from kafka import KafkaConsumer, TopicPartition
    c = KafkaConsumer(bootstrap_servers=a.bootstrap, group_id=None, enable_auto_commit=False,
                      auto_offset_reset="earliest", request_timeout_ms=30000)
    out = []
    try:
        tp = TopicPartition(a.topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        idle = 0
        while len(out) < a.count + a.extra and not dl.expired():
            batch = c.poll(timeout_ms=500)
            recs = batch.get(tp, [])
            if not recs:
                idle += 1
                if len(out) >= a.count:
                    break
                continue
            for r in recs:
                out.append((r.offset, r.key, r.value, norm_headers(r.headers)))
    finally:
        c.close()
    return out


def consume_aiokafka(a, dl):
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run():
        c = AIOKafkaConsumer(bootstrap_servers=a.bootstrap, group_id=None, enable_auto_commit=False,
                             auto_offset_reset="earliest")
        out = []
        try:
            await asyncio.wait_for(c.start(), dl.remaining())
            tp = TopicPartition(a.topic, 0)
            c.assign([tp])
            await c.seek_to_beginning(tp)
            while len(out) < a.count + a.extra and not dl.expired():
                batch = await c.getmany(tp, timeout_ms=500)
                recs = batch.get(tp, [])
                if not recs:
                    if len(out) >= a.count:
                        break
                    continue
                for r in recs:
                    out.append((r.offset, r.key, r.value, norm_headers(r.headers)))
        finally:
            await asyncio.wait_for(c.stop(), 10)
        return out

    return asyncio.run(run())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("produce", "consume"))
    ap.add_argument("--client", choices=CLIENTS, required=True)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--prefix", default=None, help="record content seed (default: the topic name)")
    ap.add_argument("--idempotent", action="store_true")
    ap.add_argument("--compression", choices=("gzip", "snappy", "lz4", "zstd"), default=None,
                    help="produce: the producer's compression codec")
    ap.add_argument("--extra", type=int, default=1, help="consume: also wait for this many unexpected extra records")
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()
    prefix = a.prefix or a.topic
    dl = Deadline(a.timeout)
    recs = expected(prefix, a.count)
    mod = {"confluent": "confluent_kafka", "kafka-python": "kafka", "aiokafka": "aiokafka"}[a.client]
    try:
        __import__(mod)
    except ImportError:
        die(f"python module {mod} is not installed (pip install {a.client if a.client != 'confluent' else 'confluent-kafka'})", 2)

    if a.mode == "produce":
        fn = {"confluent": produce_confluent, "kafka-python": produce_kafka_python, "aiokafka": produce_aiokafka}[a.client]
        offsets = fn(a, recs, dl)
        base = offsets[0]
        want = list(range(base, base + a.count))
        if offsets != want:
            bad = next(i for i, (x, y) in enumerate(zip(offsets, want)) if x != y)
            die(f"{a.client}: acknowledged offsets are not contiguous in send order: record {bad} got {offsets[bad]}, expected {want[bad]}")
        say(f"{a.client}: produced {a.count} records{' (idempotent)' if a.idempotent else ''}"
            f"{' (' + a.compression + ')' if a.compression else ''}, offsets {base}..{base + a.count - 1}")
        return

    fn = {"confluent": consume_confluent, "kafka-python": consume_kafka_python, "aiokafka": consume_aiokafka}[a.client]
    got = fn(a, dl)
    if len(got) != a.count:
        die(f"{a.client}: consumed {len(got)} records from {a.topic}[0], expected {a.count}")
    for i, ((off, k, v, h), (ek, ev, eh)) in enumerate(zip(got, recs)):
        if off != i:
            die(f"{a.client}: record {i} has offset {off}")
        if k != ek or v != ev:
            die(f"{a.client}: record {i} (offset {off}) differs: key {k!r} vs {ek!r}, value {len(v or b'')} B vs {len(ev)} B")
        if h != norm_headers(eh):
            die(f"{a.client}: record {i} headers {h!r}, expected {eh!r}")
    say(f"{a.client}: consumed {len(got)} records from {a.topic}[0], offsets, keys, values and headers identical")


if __name__ == "__main__":
    sys.exit(main())
