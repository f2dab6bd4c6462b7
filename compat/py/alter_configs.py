#!/usr/bin/env python3
"""Changes a topic's configs with a real admin client, then exits 0; exit 1 when the client reports an error.
--client confluent uses AdminClient.incremental_alter_configs (IncrementalAlterConfigs, SET per config);
--client kafka-python uses KafkaAdminClient.alter_configs (AlterConfigs: the listed configs replace the topic's own)."""
import argparse

from kcommon import die


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--client", choices=["confluent", "kafka-python"], default="confluent")
    ap.add_argument("--timeout", type=float, default=30)
    ap.add_argument("configs", nargs="+", help="name=value")
    a = ap.parse_args()
    configs = dict(c.split("=", 1) for c in a.configs)
    if a.client == "confluent":
        from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource

        admin = AdminClient({"bootstrap.servers": a.bootstrap})
        res = ConfigResource(ConfigResource.Type.TOPIC, a.topic, incremental_configs=[
            ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in configs.items()])
        try:
            admin.incremental_alter_configs([res], request_timeout=a.timeout)[res].result(timeout=a.timeout)
        except Exception as e:  # noqa: BLE001 - report whatever the client raised
            die(f"IncrementalAlterConfigs {a.topic} {configs}: {e}")
    else:
        from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=a.bootstrap, request_timeout_ms=int(a.timeout * 1000))
        try:
            # kafka-python 3 prefers IncrementalAlterConfigs; force the legacy AlterConfigs here (the confluent
            # variant covers the incremental one). The client fills in the topic's other dynamic configs itself.
            kwargs = {"incremental": False} if "incremental" in admin.alter_configs.__code__.co_varnames else {}
            resp = admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, a.topic, configs=configs)], **kwargs)
        except Exception as e:  # noqa: BLE001
            die(f"AlterConfigs {a.topic} {configs}: {e}")
        finally:
            admin.close()
        results = ([r for per_type in resp.values() for r in per_type.values()] if isinstance(resp, dict)
                   else [r[0] for r in resp.resources])
        for r in results:
            if isinstance(r, str):
                failed = r != "OK"
            elif isinstance(r, int):
                failed = r != 0
            else:
                failed = getattr(r, "errno", 0) not in (0, None) or isinstance(r, Exception)
            if failed:
                die(f"AlterConfigs {a.topic} {configs}: {r}")
        print(f"AlterConfigs {a.topic} {configs}: {results}")

if __name__ == "__main__":
    main()
