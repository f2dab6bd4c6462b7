#!/usr/bin/env python3
"""Prints "low high" for one partition, from confluent-kafka get_watermark_offsets (ListOffsets
earliest and latest, not cached). Exit 0 on success."""
import argparse

from kcommon import die


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partition", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=20)
    a = ap.parse_args()
    from confluent_kafka import Consumer, TopicPartition

    c = Consumer({"bootstrap.servers": a.bootstrap, "group.id": "compat-watermarks", "enable.auto.commit": False})
    try:
        lo, hi = c.get_watermark_offsets(TopicPartition(a.topic, a.partition), timeout=a.timeout, cached=False)
    except Exception as e:  # noqa: BLE001
        die(f"get_watermark_offsets {a.topic}[{a.partition}]: {e}")
    finally:
        c.close()
    print(lo, hi)


if __name__ == "__main__":
    main()
