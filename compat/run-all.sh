#!/usr/bin/env bash
# Runs every compat suite (real clients and real processes) against the given woodpecker binary.
set -euo pipefail
bin=$(realpath "${1:-.build/release/woodpecker}")
here=$(cd "$(dirname "$0")" && pwd)
export WOODPECKER_BIN="$bin"
passed=0; failed=0
for suite in "$here"/suites/*.sh; do
  [ -e "$suite" ] || continue
  name=$(basename "$suite" .sh)
  echo "=== compat: $name"
  if bash "$suite"; then passed=$((passed+1)); echo "--- ok: $name"; else failed=$((failed+1)); echo "--- FAILED: $name"; fi
done
echo "compat: $passed passed, $failed failed"
[ "$failed" = 0 ]
