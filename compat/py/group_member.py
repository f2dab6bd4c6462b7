#!/usr/bin/env python3
"""One member of a consumer group, for any of the three Python clients (confluent-kafka, kafka-python, aiokafka).

It subscribes with group.id, and for every batch it receives it first "processes" the records (appends one
line "partition offset key value" per record to --out and flushes), then commits the position after the last
processed record of each partition synchronously (commit after processing). When partitions are revoked it
commits their processed positions synchronously before giving them up; lost partitions (cooperative protocol,
session lost) are not committed. So with a broker that keeps its group promises, the members of a group
together consume every record exactly once.

--events gets one line per event, with seconds since subscribe(): "T assign P..", "T revoke P..", "T lost P..",
"T commit_failed ERR", "T first_record", and the final "T close". Stops after --expect records, when
--stop-file exists, after --idle seconds without a record (once it had one), or at --timeout (then exit 1).
Prints first_record_s=S (subscribe() to first record) and consumed=N.
Exit 0 = stopped by --expect/--stop-file/--idle; 1 = timeout or fewer than --expect records; 2 = usage/missing client."""
import argparse
import asyncio
import os
import sys
import time

from kcommon import die, say


class Member:
    def __init__(self, a):
        self.a = a
        self.t0 = None
        self.out = open(a.out, "w")
        self.ev = open(a.events, "w") if a.events else None
        self.n = 0
        self.first = None
        self.last_rec = time.monotonic()
        self.processed = {}      # partition -> next offset to commit (last processed + 1)
        self.committed = {}      # partition -> offset committed
        self.assigned = set()
        self.commit_failures = 0
        self.end = time.monotonic() + a.timeout

    def event(self, what):
        t = 0.0 if self.t0 is None else time.monotonic() - self.t0
        if self.ev:
            self.ev.write(f"{t:.3f} {what}\n")
            self.ev.flush()

    def process(self, recs):
        """recs: iterable of (partition, offset, key bytes, value bytes). Writes and flushes them."""
        for p, o, k, v in recs:
            if self.first is None:
                self.first = time.monotonic() - self.t0
                self.event("first_record")
            self.out.write(f"{p} {o} {(k or b'').decode()} {(v or b'').decode()}\n")
            self.processed[p] = o + 1
            self.n += 1
            self.last_rec = time.monotonic()
        self.out.flush()

    def pace(self):
        """--batch-sleep-ms: a slow consumer (so a test can act while a backlog is being worked through)."""
        if self.a.batch_sleep_ms:
            time.sleep(self.a.batch_sleep_ms / 1000)

    def to_commit(self, parts=None):
        return {p: o for p, o in self.processed.items()
                if (parts is None or p in parts) and self.committed.get(p) != o}

    def note_commit(self, offs, err=None):
        if err is None:
            self.committed.update(offs)
        else:
            self.commit_failures += 1
            self.event(f"commit_failed {str(err).replace(chr(10), ' ')[:200]}")

    def forget(self, parts):
        for p in parts:
            self.processed.pop(p, None)
            self.committed.pop(p, None)

    def should_stop(self):
        a = self.a
        if a.expect and self.n >= a.expect:
            return "expect"
        if a.stop_file and os.path.exists(a.stop_file):
            return "stop-file"
        if a.idle and self.n > 0 and time.monotonic() - self.last_rec > a.idle:
            return "idle"
        if time.monotonic() >= self.end:
            return "timeout"
        return None

    def done(self, why):
        self.event(f"close {why}")
        self.out.close()
        if self.ev:
            self.ev.close()
        say(f"consumed={self.n} stop={why} commit_failures={self.commit_failures}")
        if self.first is not None:
            say(f"first_record_s={self.first:.3f}")
        if why == "timeout":
            die(f"timed out after {self.a.timeout} s with {self.n} records")
        if self.a.expect and self.n < self.a.expect:
            die(f"consumed {self.n} of {self.a.expect} records")


def run_confluent(a, m):
    from confluent_kafka import Consumer, KafkaException, TopicPartition
    conf = {"bootstrap.servers": a.bootstrap, "group.id": a.group, "auto.offset.reset": "earliest",
            "enable.auto.commit": False, "session.timeout.ms": a.session_ms, "heartbeat.interval.ms": 300,
            "partition.assignment.strategy": a.assignor or "range,roundrobin", "client.id": a.name}
    if a.instance_id:
        conf["group.instance.id"] = a.instance_id
    c = Consumer(conf)

    def commit(offs):
        if not offs:
            return
        try:
            c.commit(offsets=[TopicPartition(a.topic, p, o) for p, o in offs.items()], asynchronous=False)
            m.note_commit(offs)
        except KafkaException as e:
            m.note_commit(offs, e)

    def on_assign(_c, ps):
        m.assigned |= {p.partition for p in ps}
        m.event("assign " + " ".join(str(p.partition) for p in sorted(ps, key=lambda x: x.partition)))

    def on_revoke(_c, ps):
        parts = {p.partition for p in ps}
        commit(m.to_commit(parts))
        m.forget(parts)
        m.assigned -= parts
        m.event("revoke " + " ".join(str(p) for p in sorted(parts)))

    def on_lost(_c, ps):
        parts = {p.partition for p in ps}
        m.forget(parts)
        m.assigned -= parts
        m.event("lost " + " ".join(str(p) for p in sorted(parts)))

    m.t0 = time.monotonic()
    c.subscribe([a.topic], on_assign=on_assign, on_revoke=on_revoke, on_lost=on_lost)
    why = None
    try:
        while not (why := m.should_stop()):
            msgs = c.consume(num_messages=a.max_batch, timeout=0.2)
            recs = []
            for x in msgs:
                if x.error():
                    m.event(f"error {x.error()}")
                    continue
                recs.append((x.partition(), x.offset(), x.key(), x.value()))
            if recs:
                m.process(recs)
                commit(m.to_commit())
                m.pace()
    finally:
        c.close()   # revokes (on_revoke commits) and leaves the group
    m.done(why or "error")


def run_kafka_python(a, m):
    from kafka import KafkaConsumer, TopicPartition
    from kafka.errors import KafkaError
    from kafka.consumer.subscription_state import ConsumerRebalanceListener
    from kafka.structs import OffsetAndMetadata

    c = KafkaConsumer(bootstrap_servers=a.bootstrap, group_id=a.group, auto_offset_reset="earliest",
                      enable_auto_commit=False, session_timeout_ms=a.session_ms, heartbeat_interval_ms=300,
                      client_id=a.name)

    def commit(offs):
        if not offs:
            return
        try:
            c.commit({TopicPartition(a.topic, p): OffsetAndMetadata(o, "", -1) for p, o in offs.items()})
            m.note_commit(offs)
        except Exception as e:  # CommitFailedError and friends
            m.note_commit(offs, e)

    class L(ConsumerRebalanceListener):
        def on_partitions_revoked(self, revoked):
            parts = {tp.partition for tp in revoked}
            commit(m.to_commit(parts))
            m.forget(parts)
            m.assigned -= parts
            m.event("revoke " + " ".join(str(p) for p in sorted(parts)))

        def on_partitions_assigned(self, assigned):
            m.assigned |= {tp.partition for tp in assigned}
            m.event("assign " + " ".join(str(p) for p in sorted(tp.partition for tp in assigned)))

    m.t0 = time.monotonic()
    c.subscribe([a.topic], listener=L())
    why = None
    try:
        while not (why := m.should_stop()):
            try:
                batch = c.poll(timeout_ms=200, max_records=a.max_batch)
            except KafkaError as e:
                # kafka-python 3.x raises e.g. KafkaConnectionError from poll() while the coordinator is
                # unreachable (broker restarting); an application retries.
                m.event(f"poll_error {type(e).__name__}")
                time.sleep(0.2)
                continue
            recs = [(r.partition, r.offset, r.key, r.value) for msgs in batch.values() for r in msgs]
            if recs:
                m.process(recs)
                commit(m.to_commit())
                m.pace()
    finally:
        c.close()
    m.done(why or "error")


def run_aiokafka(a, m):
    from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
    from aiokafka.errors import KafkaError
    from aiokafka.structs import OffsetAndMetadata

    async def main():
        c = AIOKafkaConsumer(bootstrap_servers=a.bootstrap, group_id=a.group, auto_offset_reset="earliest",
                             enable_auto_commit=False, session_timeout_ms=a.session_ms, heartbeat_interval_ms=300,
                             client_id=a.name)

        async def commit(offs):
            if not offs:
                return
            try:
                await c.commit({TopicPartition(a.topic, p): OffsetAndMetadata(o, "") for p, o in offs.items()})
                m.note_commit(offs)
            except Exception as e:
                m.note_commit(offs, e)

        class L(ConsumerRebalanceListener):
            async def on_partitions_revoked(self, revoked):
                parts = {tp.partition for tp in revoked}
                await commit(m.to_commit(parts))
                m.forget(parts)
                m.assigned -= parts
                m.event("revoke " + " ".join(str(p) for p in sorted(parts)))

            async def on_partitions_assigned(self, assigned):
                m.assigned |= {tp.partition for tp in assigned}
                m.event("assign " + " ".join(str(p) for p in sorted(tp.partition for tp in assigned)))

        await asyncio.wait_for(c.start(), a.timeout)
        m.t0 = time.monotonic()
        c.subscribe([a.topic], listener=L())
        why = None
        try:
            while not (why := m.should_stop()):
                try:
                    batch = await c.getmany(timeout_ms=200, max_records=a.max_batch)
                except KafkaError as e:
                    m.event(f"poll_error {type(e).__name__}")
                    await asyncio.sleep(0.2)
                    continue
                recs = [(r.partition, r.offset, r.key, r.value) for msgs in batch.values() for r in msgs]
                if recs:
                    m.process(recs)
                    await commit(m.to_commit())
                    if a.batch_sleep_ms:
                        await asyncio.sleep(a.batch_sleep_ms / 1000)
        finally:
            await asyncio.wait_for(c.stop(), 20)
        return why

    why = asyncio.run(main())
    m.done(why or "error")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--client", choices=["confluent", "kafka-python", "aiokafka"], default="confluent")
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--name", default="member")
    ap.add_argument("--out", required=True)
    ap.add_argument("--events", default=None)
    ap.add_argument("--assignor", default=None, help="confluent: partition.assignment.strategy")
    ap.add_argument("--instance-id", default=None, help="confluent: group.instance.id (static membership)")
    ap.add_argument("--max-batch", type=int, default=500, help="records per poll at most")
    ap.add_argument("--batch-sleep-ms", type=int, default=0, help="pause after each processed and committed batch")
    ap.add_argument("--expect", type=int, default=0)
    ap.add_argument("--stop-file", default=None)
    ap.add_argument("--idle", type=float, default=0)
    ap.add_argument("--session-ms", type=int, default=6000)
    ap.add_argument("--timeout", type=float, default=60)
    a = ap.parse_args()
    mod = {"confluent": "confluent_kafka", "kafka-python": "kafka", "aiokafka": "aiokafka"}[a.client]
    try:
        __import__(mod)
    except ImportError:
        die(f"python module {mod} is not installed", 2)
    m = Member(a)
    {"confluent": run_confluent, "kafka-python": run_kafka_python, "aiokafka": run_aiokafka}[a.client](a, m)


if __name__ == "__main__":
    main()
