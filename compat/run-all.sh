#!/usr/bin/env bash
# Runs every compat suite (real clients and real processes) against the given woodpecker binary, then renders
# the client matrix (compat/MATRIX.md, or $COMPAT_MATRIX_OUT) from the rows the suites' matrix checks recorded.
set -euo pipefail
bin=$(realpath "${1:-.build/release/woodpecker}")
here=$(cd "$(dirname "$0")" && pwd)
export WOODPECKER_BIN="$bin"
export COMPAT_RESULTS
COMPAT_RESULTS=$(mktemp "${TMPDIR:-/tmp}/compat-results.XXXXXX.tsv")
trap 'rm -f "$COMPAT_RESULTS"' EXIT
passed=0; failed=0; t0=$(date +%s)
for suite in "$here"/suites/*.sh; do
  [ -e "$suite" ] || continue
  name=$(basename "$suite" .sh)
  if [ -n "${COMPAT_SUITES:-}" ] && ! grep -qw "$name" <<<"$COMPAT_SUITES"; then continue; fi
  echo "=== compat: $name"
  s0=$(date +%s)
  if bash "$suite"; then passed=$((passed+1)); echo "--- ok: $name ($(( $(date +%s) - s0 )) s)"
  else failed=$((failed+1)); echo "--- FAILED: $name ($(( $(date +%s) - s0 )) s)"; fi
done
out=${COMPAT_MATRIX_OUT:-$here/MATRIX.md}
if [ -s "$COMPAT_RESULTS" ]; then
  python3 "$here/py/render_matrix.py" "$COMPAT_RESULTS" "$out" || echo "compat: rendering $out failed"
fi
echo "compat: $passed passed, $failed failed ($(( $(date +%s) - t0 )) s)"
[ "$failed" = 0 ]
