#!/usr/bin/env python3
"""Produce then consume with confluent-kafka (librdkafka) against one broker; prints one JSON line.

Produce: acks=all, linger.ms=5, batch.size=1 MiB, no compression. MB/s counts payload bytes (10^6) up to the final
flush. Latency runs from produce() to the delivery report; use --rate for latency at a fixed load (unthrottled
latency is dominated by client-side queueing). Consume: a fresh consumer assigned to every partition from the
beginning, timed from the assignment to the last message.
End-to-end (--e2e): a consumer thread in the same process, assigned to every partition before the first produce,
reads the perf_counter_ns stamp the producer wrote into each value's first 8 bytes; latency = consume time - stamp
(fetch.wait.max.ms 100, so a broker that does not answer a waiting fetch when data arrives shows it here).
"""
import argparse, json, struct, sys, threading, time, uuid

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic


def pct(sorted_vals, q):
    if not sorted_vals:
        return 0.0
    return sorted_vals[min(len(sorted_vals) - 1, int(len(sorted_vals) * q))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("-n", type=int, default=200000, help="records")
    ap.add_argument("-s", type=int, default=1024, help="record value bytes")
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--rate", type=float, default=0, help="records/s (0 = as fast as possible)")
    ap.add_argument("--no-consume", action="store_true")
    ap.add_argument("--timeout", type=float, default=300)
    ap.add_argument("--label", default="")
    ap.add_argument("--topic-name", default=None, help="use this (existing or auto-created) topic")
    ap.add_argument("--linger-ms", type=float, default=5, help="librdkafka linger.ms")
    ap.add_argument("--e2e", action="store_true", help="measure produce-to-consume latency with an in-process consumer")
    a = ap.parse_args()
    if a.e2e and a.s < 8:
        ap.error("--e2e needs -s >= 8 (the value carries an 8-byte timestamp)")

    topic = a.topic_name or f"bench-{uuid.uuid4().hex[:10]}"
    if not a.topic_name:
        admin = AdminClient({"bootstrap.servers": a.bootstrap})
        fs = admin.create_topics([NewTopic(topic, num_partitions=a.partitions, replication_factor=1)])
        for f in fs.values():
            f.result(timeout=30)

    p = Producer({"bootstrap.servers": a.bootstrap, "acks": "all", "linger.ms": a.linger_ms, "batch.size": 1048576,
                  "queue.buffering.max.messages": 1000000, "queue.buffering.max.kbytes": 2097151,
                  "message.max.bytes": 10485760})
    payload = bytes((i * 31) & 0xFF for i in range(a.s))
    lat = []
    errors = [0]
    sent_at = {}

    def report(err, msg):
        if err is not None:
            errors[0] += 1
            return
        lat.append(time.perf_counter() - msg.opaque_t)

    e2e = []
    e2e_stop = threading.Event()
    e2e_ready = threading.Event()

    def e2e_consumer():
        c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "bench-e2e-unused", "enable.auto.commit": False,
                      "fetch.wait.max.ms": 100, "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 10485760})
        c.assign([TopicPartition(topic, i, 0) for i in range(a.partitions)])
        e2e_ready.set()
        while not e2e_stop.is_set():
            m = c.poll(0.05)  # one at a time: consume(n, t) would hold early records until n arrive or t passes
            if m is not None and m.error() is None:
                e2e.append(time.perf_counter_ns() - struct.unpack_from(">q", m.value(), 0)[0])
        c.close()

    if a.e2e:
        ct = threading.Thread(target=e2e_consumer, daemon=True)
        ct.start()
        e2e_ready.wait(30)
        c_probe_deadline = time.perf_counter() + 1.0  # let the first fetch reach the broker
        while time.perf_counter() < c_probe_deadline:
            time.sleep(0.05)

    start = time.perf_counter()
    deadline = start + a.timeout
    for i in range(a.n):
        if a.rate > 0:
            due = start + i / a.rate
            while True:
                now = time.perf_counter()
                if now >= due:
                    break
                p.poll(0)
                if due - now > 0.0005:
                    time.sleep(min(due - now, 0.001))
        t = time.perf_counter()
        value = struct.pack(">q", time.perf_counter_ns()) + payload[8:] if a.e2e else payload
        while True:
            try:
                p.produce(topic, value, partition=i % a.partitions,
                          on_delivery=lambda err, msg, t=t: lat.append(time.perf_counter() - t) if err is None else errors.__setitem__(0, errors[0] + 1))
                break
            except BufferError:
                p.poll(0.01)
        if i % 1000 == 0:
            p.poll(0)
        if time.perf_counter() > deadline:
            break
    remaining = p.flush(a.timeout)
    elapsed = time.perf_counter() - start
    lat.sort()
    if a.e2e:
        edeadline = time.perf_counter() + 15
        while len(e2e) < len(lat) and time.perf_counter() < edeadline:
            time.sleep(0.01)
        e2e_stop.set()
        ct.join(10)
    out = {"label": a.label, "records": a.n, "size": a.s, "partitions": a.partitions, "rate": a.rate,
           "produce_mb_s": round(len(lat) * a.s / 1e6 / elapsed, 1), "produce_msgs_s": round(len(lat) / elapsed),
           "p50_ms": round(pct(lat, 0.5) * 1000, 2), "p99_ms": round(pct(lat, 0.99) * 1000, 2),
           "p999_ms": round(pct(lat, 0.999) * 1000, 2), "errors": errors[0] + remaining, "acked": len(lat)}
    if a.e2e:
        es = sorted(e2e)
        out.update({"e2e_records": len(es), "e2e_p50_ms": round(pct(es, 0.5) / 1e6, 2),
                    "e2e_p99_ms": round(pct(es, 0.99) / 1e6, 2), "e2e_p999_ms": round(pct(es, 0.999) / 1e6, 2)})

    if not a.no_consume:
        c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "bench-unused", "enable.auto.commit": False,
                      "fetch.max.bytes": 52428800, "max.partition.fetch.bytes": 10485760})
        c.assign([TopicPartition(topic, i, 0) for i in range(a.partitions)])
        got = 0
        first = time.perf_counter()  # from assignment: includes the first fetch round trip
        cdeadline = time.perf_counter() + a.timeout
        while got < len(lat) and time.perf_counter() < cdeadline:
            msgs = c.consume(10000, 1.0)
            for m in msgs:
                if m.error() is None:
                    got += 1
        celapsed = max(time.perf_counter() - first, 1e-9)
        c.close()
        out["consumed"] = got
        out["consume_mb_s"] = round(got * a.s / 1e6 / celapsed, 1)
    print(json.dumps(out))
    sys.stdout.flush()
    return 0 if out["errors"] == 0 and (a.no_consume or out.get("consumed") == len(lat)) else 1


if __name__ == "__main__":
    sys.exit(main())
