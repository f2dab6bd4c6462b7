#!/usr/bin/env python3
"""Prints `name=value` for each config of a topic, from confluent-kafka's AdminClient.describe_configs
(DescribeConfigs). Exit 1 when the request fails."""
import argparse

from kcommon import die


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--timeout", type=float, default=30)
    a = ap.parse_args()
    from confluent_kafka.admin import AdminClient, ConfigResource

    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, a.topic)
    try:
        configs = admin.describe_configs([res], request_timeout=a.timeout)[res].result(timeout=a.timeout)
    except Exception as e:  # noqa: BLE001 - report whatever the client raised
        die(f"DescribeConfigs {a.topic}: {e}")
    for name in sorted(configs):
        print(f"{name}={configs[name].value}")


if __name__ == "__main__":
    main()
