#!/usr/bin/env python3
"""A client's admin API against a live consumer group: the group is listed, its description has the expected
state, member count, protocol type "consumer" and assignor (protocol name), and its committed offsets for
--topic are exactly --offsets ("P:OFFSET,P:OFFSET").

  kafka-python:    KafkaAdminClient.list_groups / describe_groups / list_group_offsets (3.x names; the 2.x
                   list_consumer_groups / describe_consumer_groups / list_consumer_group_offsets when those exist)
  aiokafka:        AIOKafkaAdminClient.list_consumer_groups / describe_consumer_groups / list_consumer_group_offsets
  confluent:       AdminClient.list_consumer_groups / describe_consumer_groups / list_consumer_group_offsets
Exit 0 when everything matches, 1 otherwise (with what differed)."""
import argparse
import asyncio
import sys

from kcommon import die, say


def parse_offsets(s):
    return {int(p): int(o) for p, o in (x.split(":") for x in s.split(",") if x)}


def kafka_python(a):
    from kafka import TopicPartition
    from kafka.admin import KafkaAdminClient
    ad = KafkaAdminClient(bootstrap_servers=a.bootstrap, request_timeout_ms=20000)
    try:
        lister = getattr(ad, "list_groups", None) or ad.list_consumer_groups
        groups = lister()
        ids = [g["group_id"] if isinstance(g, dict) else g[0] for g in groups]
        describer = getattr(ad, "describe_groups", None) or ad.describe_consumer_groups
        d = describer([a.group])
        if isinstance(d, dict):
            d = d[a.group]
            state, ptype, proto, members = d["group_state"], d["protocol_type"], d["protocol_data"], d["members"]
        else:
            d = d[0]
            state, ptype, proto, members = d.state, d.protocol_type, d.protocol, d.members
        if hasattr(ad, "list_group_offsets"):
            offs = ad.list_group_offsets({a.group: None})
            offs = offs.get(a.group, offs) if isinstance(offs, dict) and a.group in offs else offs
        else:
            offs = ad.list_consumer_group_offsets(a.group)
        got = {tp.partition: om.offset for tp, om in offs.items() if tp.topic == a.topic}
        return ids, state, ptype, proto, len(members), got
    finally:
        ad.close()


def aiokafka(a):
    from aiokafka.admin import AIOKafkaAdminClient

    async def run():
        ad = AIOKafkaAdminClient(bootstrap_servers=a.bootstrap, request_timeout_ms=20000)
        await asyncio.wait_for(ad.start(), 20)
        try:
            groups = await ad.list_consumer_groups()
            ids = [g[0] for g in groups]
            resp = (await ad.describe_consumer_groups([a.group]))[0]
            g = resp.groups[0]
            # DescribeGroups response tuples: (error_code, group_id, state, protocol_type, protocol, members[, ops])
            state, ptype, proto, members = g[2], g[3], g[4], g[5]
            offs = await ad.list_consumer_group_offsets(a.group)
            got = {tp.partition: om.offset for tp, om in offs.items() if tp.topic == a.topic}
            return ids, state, ptype, proto, len(members), got
        finally:
            await ad.close()

    return asyncio.run(run())


def confluent(a):
    from confluent_kafka import ConsumerGroupTopicPartitions
    from confluent_kafka.admin import AdminClient
    ad = AdminClient({"bootstrap.servers": a.bootstrap})
    listed = ad.list_consumer_groups(request_timeout=20).result(timeout=30)
    ids = [g.group_id for g in listed.valid]
    d = ad.describe_consumer_groups([a.group], request_timeout=20)[a.group].result(timeout=30)
    state = d.state.name if hasattr(d.state, "name") else str(d.state)
    state = {"STABLE": "Stable", "EMPTY": "Empty", "PREPARING_REBALANCING": "PreparingRebalance",
             "COMPLETING_REBALANCING": "CompletingRebalance"}.get(state, state)
    f = ad.list_consumer_group_offsets([ConsumerGroupTopicPartitions(a.group)], request_timeout=20)[a.group]
    r = f.result(timeout=30)
    got = {tp.partition: tp.offset for tp in r.topic_partitions if tp.topic == a.topic}
    return ids, state, "consumer", d.partition_assignor, len(d.members), got


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--client", choices=["kafka-python", "aiokafka", "confluent"], required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--state", default="Stable")
    ap.add_argument("--members", type=int, default=1)
    ap.add_argument("--protocol", default=None)
    ap.add_argument("--offsets", required=True)
    a = ap.parse_args()
    ids, state, ptype, proto, nmembers, got = {"kafka-python": kafka_python, "aiokafka": aiokafka,
                                               "confluent": confluent}[a.client](a)
    want = parse_offsets(a.offsets)
    say(f"{a.client}: listed {len(ids)} groups; {a.group}: state={state} protocol_type={ptype} protocol={proto} "
        f"members={nmembers} offsets={dict(sorted(got.items()))}")
    errs = []
    if a.group not in ids:
        errs.append(f"{a.group} not among the listed groups {ids[:10]}")
    if state != a.state:
        errs.append(f"state {state}, expected {a.state}")
    if ptype != "consumer":
        errs.append(f"protocol type {ptype!r}, expected 'consumer'")
    if a.protocol and proto != a.protocol:
        errs.append(f"protocol {proto!r}, expected {a.protocol!r}")
    if nmembers != a.members:
        errs.append(f"{nmembers} members, expected {a.members}")
    if got != want:
        errs.append(f"committed offsets {got}, expected {want}")
    if errs:
        die("; ".join(errs))


if __name__ == "__main__":
    try:
        main()
    except ImportError as e:
        die(f"client library missing: {e}", 2)
