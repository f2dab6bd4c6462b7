#!/usr/bin/env python3
"""Creates a topic with N partitions through confluent-kafka's AdminClient (CreateTopics), then waits
until Metadata reports that many partitions. Exit 0 on success, 1 on failure."""
import argparse
import time

from kcommon import die, say


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, required=True)
    ap.add_argument("--timeout", type=float, default=30)
    a = ap.parse_args()
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    fut = admin.create_topics([NewTopic(a.topic, num_partitions=a.partitions, replication_factor=1)],
                              request_timeout=a.timeout, operation_timeout=a.timeout)[a.topic]
    try:
        fut.result(timeout=a.timeout)
    except Exception as e:  # noqa: BLE001 - report whatever the client raised
        die(f"CreateTopics {a.topic} partitions={a.partitions}: {e}")
    end = time.monotonic() + a.timeout
    n = -1
    while time.monotonic() < end:
        md = admin.list_topics(topic=a.topic, timeout=max(1.0, end - time.monotonic()))
        t = md.topics.get(a.topic)
        if t is not None and t.error is None:
            n = len(t.partitions)
            if n == a.partitions:
                say(f"created {a.topic} with {n} partitions")
                return
        time.sleep(0.2)
    die(f"topic {a.topic}: metadata shows {n} partitions, expected {a.partitions}")


if __name__ == "__main__":
    main()
