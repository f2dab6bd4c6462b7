#!/usr/bin/env python3
"""Prints `name=value` for each config of a topic, from confluent-kafka's AdminClient.describe_configs
(DescribeConfigs); with --sources, `name=value SOURCE` (e.g. DEFAULT_CONFIG, STATIC_BROKER_CONFIG,
DYNAMIC_TOPIC_CONFIG). Exit 1 when the request fails."""
import argparse

from kcommon import die


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("--sources", action="store_true", help="append where each value comes from")
    a = ap.parse_args()
    from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource

    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, a.topic)
    try:
        configs = admin.describe_configs([res], request_timeout=a.timeout)[res].result(timeout=a.timeout)
    except Exception as e:  # noqa: BLE001 - report whatever the client raised
        die(f"DescribeConfigs {a.topic}: {e}")
    for name in sorted(configs):
        entry = configs[name]
        if a.sources:
            source = entry.source if hasattr(entry.source, "name") else ConfigSource(entry.source)
            source = source.name
            print(f"{name}={entry.value} {source}")
        else:
            print(f"{name}={entry.value}")


if __name__ == "__main__":
    main()
