#!/usr/bin/env python3
"""Whole-path load harness: real Envoy 1.40 in front of each authz setup,
measured in one run, interleaved round by round, so a noisy shared machine
affects every setup alike.

Setups (each its own Envoy, --concurrency 1, answering with a direct
response so no upstream adds noise):
  noauthz       no ext_authz at all (the baseline)
  rbac          Envoy's in-process RBAC filter enforcing the equivalent rule
  floor         ext_authz -> a do-nothing server answering OK at once (TCP)
  floor-shaped  the same server answering with what every sidecar allow
                carries (docs/sidecar-api.md): the decision-id header and
                dynamic metadata (constants)
  floor-hyper   a do-nothing server on bare hyper HTTP/2, the transport the
                sidecar uses: the least any server on it costs
  sidecar-tcp   ext_authz -> sentinelnet serve, 20-policy bundle, TCP
  sidecar-uds   ext_authz -> sentinelnet serve, same bundle, Unix socket
  sidecar-tls   as sidecar-tcp over mutual TLS (--grpc-tls-*, Envoy's
                UpstreamTlsContext as in envoy/envoy-mtls.yaml)
  sidecar-http  as sidecar-tcp, shipping records to a real central's HTTP
                ingest (plain HTTP, development mode, SQLite)
  sidecar-nats  as sidecar-tcp, publishing records to NATS JetStream
                (nats-server -js, plain), consumed by the same central
  sidecar-signed  as sidecar-http, signing checkpoint records with a key
                file (--record-signing-key; central verifies, --record-keys)
  sidecar-hsm   as sidecar-signed, the key in a SoftHSM2 token (pkcs11: URI)
  inprocess     the same 20-policy bundle decided inside Envoy by the
                dynamic module (target/release/libsentinelnet_envoy.so),
                decision events sent to a sidecar's --record-socket
  inprocess-norec  the module without records (what deciding costs alone)
  sidecar-hung  as sidecar-tcp, shipping records to an audit service that
                accepts connections and never answers
  sidecar-9     as sidecar-tcp with the demo bundle (policies/: 9 evaluated)
  sidecar-1k    as sidecar-tcp with a generated 1,004-policy bundle
                (bench/bundlegen.rs: 100 services × 10 policies + 4 global;
                the policy index narrows each check to ~15 candidates)
  sidecar-10k   the same with 10,004 policies (1,000 services)

Loads: one connection (wrk -c1), fixed rates of 1k and 5k req/s (h2load
--rps, per-request log for percentiles), and saturation (wrk -c16).

Printed: req/s, p50/p99/p99.9, authz-server CPU µs per Check (from
/proc/PID/task/*/schedstat, all threads, so audit work is included; the
next column is the part of it on the audit thread, `sentinel-audit`), Envoy's
CPU µs per request (all its threads), and ratios to the no-authz baseline
and to the floor (the stock-tonic one, as the targets are stated). Then the
10,004-policy bundle: resident memory, and bundle swaps under load (failed
requests, time until the new revision is live, which includes reading and
compiling every policy).

Environment: ROUNDS (3), DURATION seconds per run (5), OUT (a JSON file),
SETUPS and LOADS (comma-separated subsets; noauthz and floor are needed
for the ratios), LARGE=0 to skip the 10,004-policy checks,
BASELINE_BIN=PATH to add a `baseline-tcp` setup: the same sidecar setup
run by another build (e.g. the previous commit's release binary), so a
change is measured against what it replaces in the same run;
BASELINE_MODULE=DIR (a directory holding another build's
libsentinelnet_envoy.so) does the same for the in-process setups, as
`baseline-inprocess` and `baseline-inprocess-norec`. PIN=1 runs every
Envoy on CPU 1 and the load tool on CPU 0 (`taskset`): steadier numbers
for in-process A/B runs on a shared 2-core machine (authz servers stay
unpinned, so leave it off for ext_authz rows).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUNDS = int(os.environ.get("ROUNDS", "3"))
DURATION = int(os.environ.get("DURATION", "5"))
ENVOY = os.environ.get("ENVOY_BIN", str(ROOT / "target/envoy-venv/bin/envoy"))
SENTINEL = Path(os.environ.get("SENTINEL_BIN", ROOT / "target/release/sentinelnet"))
FLOOR = ROOT / "target/release/examples/authz-floor"
FLOOR_HYPER = ROOT / "target/release/examples/authz-floor-hyper"
GEN_BUNDLE = ROOT / "target/release/examples/gen-bundle"
BUNDLE = ROOT / "bench/bundles/kernel-20"
DEMO_BUNDLE = ROOT / "policies"
PATH = "/v1/kernels?limit=10"
HEADERS = ["x-user: spiffe://cluster/ns/app/sa/bench", "x-roles: reader"]
BASELINE = os.environ.get("BASELINE_BIN")
SETUPS = os.environ.get("SETUPS", "noauthz,rbac,floor,floor-shaped,floor-hyper,sidecar-tcp,sidecar-uds,sidecar-hung").split(",")
if BASELINE and "baseline-tcp" not in SETUPS:
    SETUPS.append("baseline-tcp")
BASELINE_MODULE = os.environ.get("BASELINE_MODULE")
if BASELINE_MODULE:
    SETUPS += [f"baseline-{s}" for s in ("inprocess", "inprocess-norec")
               if s in SETUPS and f"baseline-{s}" not in SETUPS]
LOADS = os.environ.get("LOADS", "1conn,1k,5k,saturation").split(",")
PIN = os.environ.get("PIN", "0") == "1"
ENVOY_CPU = ["taskset", "-c", "1"] if PIN else []
LOAD_CPU = ["taskset", "-c", "0"] if PIN else []
AUTHZ_SERVERS = {"floor", "floor-hyper", "floor-shaped", "sidecar-tcp", "sidecar-uds", "sidecar-hung", "baseline-tcp",
                 "sidecar-noinput", "sidecar-tls", "sidecar-http", "sidecar-nats", "sidecar-9", "sidecar-1k",
                 "sidecar-10k", "sidecar-signed", "sidecar-hsm", "inprocess", "baseline-inprocess"}

procs = []


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spawn(args, log):
    p = subprocess.Popen([str(a) for a in args], stdout=open(log, "w"), stderr=subprocess.STDOUT)
    procs.append(p)
    return p


def wait_http(url, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except Exception:
            time.sleep(0.05)
    sys.exit(f"timed out waiting for {url}")


def cpu_ns(pid):
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def audit_cpu_ns(pid):
    """CPU of the authz server's audit thread (`sentinel-audit`): what
    records cost, apart from the checks themselves."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            if (task / "comm").read_text().strip() == "sentinel-audit":
                total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            pass
    return total


def generated_bundle(tmp, services):
    """A bench/bundlegen.rs bundle directory of services × 10 + 4 policies."""
    out = Path(tmp) / f"generated-{services}"
    if not out.exists():
        subprocess.run([GEN_BUNDLE, str(services), out], check=True, stdout=subprocess.DEVNULL)
    return out


def rss_kib(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


# ---------------------------------------------------------------- Envoy configs

def envoy_config(port, admin, filters, authz_cluster=None, tls_dir=None):
    """An Envoy bootstrap: one listener, direct 200 response, the given HTTP
    filters before the router, and optionally the ext_authz cluster (over
    mutual TLS with the dev-pki files in tls_dir)."""
    clusters = []
    if authz_cluster:
        clusters.append({
            "name": "authz", "type": "STATIC", "connect_timeout": "0.25s",
            "typed_extension_protocol_options": {
                "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                    "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                    "explicit_http_config": {"http2_protocol_options": {}}}},
            "load_assignment": {"cluster_name": "authz", "endpoints": [{"lb_endpoints": [
                {"endpoint": {"address": authz_cluster}}]}]},
        })
    if authz_cluster and tls_dir:
        clusters[0]["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": "localhost",
                "common_tls_context": {
                    "alpn_protocols": ["h2"],
                    "tls_certificates": [{
                        "certificate_chain": {"filename": f"{tls_dir}/sidecar.crt"},
                        "private_key": {"filename": f"{tls_dir}/sidecar.key"}}],
                    "validation_context": {"trusted_ca": {"filename": f"{tls_dir}/ca.pem"}},
                }}}
    return {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{
                "name": "bench",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "bench",
                        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                            {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": "ok"}}}]}]},
                        "http_filters": filters + [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
                    }}]}],
            }],
            "clusters": clusters,
        },
    }


EXT_AUTHZ = {
    "name": "envoy.filters.http.ext_authz",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "transport_api_version": "V3",
        "failure_mode_allow": False,
        "status_on_error": {"code": "ServiceUnavailable"},
        "grpc_service": {"envoy_grpc": {"cluster_name": "authz"}, "timeout": "1s"},
    },
}

# The RBAC equivalent of the allow path the load exercises (kernel.read):
# GET on /v1/kernels* by a caller that presents x-user.
def inprocess_filter(records=None):
    config = {"bundle": str(BUNDLE), "principalFrom": "header:x-user", "rolesFrom": "header:x-roles"}
    if records:
        config["records"] = f"unix:{records}"
    return {
        "name": "sentinelnet",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": "sentinelnet_envoy"},
            "filter_name": "sentinelnet",
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue",
                              "value": json.dumps(config)},
        },
    }


RBAC = {
    "name": "envoy.filters.http.rbac",
    "typed_config": {
        "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
        "rules": {"action": "ALLOW", "policies": {"kernel-read": {
            "permissions": [{"and_rules": {"rules": [
                {"header": {"name": ":method", "string_match": {"exact": "GET"}}},
                {"url_path": {"path": {"prefix": "/v1/kernels"}}}]}}],
            "principals": [{"header": {"name": "x-user", "present_match": True}}],
        }}},
    },
}


# ---------------------------------------------------------------- load tools

WRK_LUA = """
done = function(summary, latency, requests)
  local errors = summary.errors.connect + summary.errors.read + summary.errors.write
               + summary.errors.status + summary.errors.timeout
  io.write(string.format("RESULT %d %d %d %d %d %d %d\\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), errors, latency.max))
end
"""


def run_wrk(url, connections, lua, duration=None):
    args = LOAD_CPU + ["wrk", "-t1", f"-c{connections}", f"-d{duration or DURATION}s", "-s", lua, url]
    for h in HEADERS:
        args += ["-H", h]
    out = subprocess.run(args, capture_output=True, text=True).stdout
    line = next(l for l in out.splitlines() if l.startswith("RESULT"))
    n, dur_us, p50, p99, p999, errors, worst = map(int, line.split()[1:])
    return {"requests": n, "rps": n / (dur_us / 1e6), "p50": p50, "p99": p99, "p999": p999, "errors": errors,
            "max": worst}


def run_h2load(url, rate, tmp):
    clients = 16
    log = Path(tmp) / "h2load.log"
    log.unlink(missing_ok=True)  # h2load appends
    args = LOAD_CPU + ["h2load", "--h1", "-c", str(clients), "-D", str(DURATION), f"--rps={rate // clients}",
            f"--log-file={log}", url]
    for h in HEADERS:
        args += ["-H", h]
    subprocess.run(args, capture_output=True, text=True)
    latencies, ok, failed = [], 0, 0
    for row in log.read_text().splitlines():
        cols = row.split("\t")
        if len(cols) < 3:
            continue
        if cols[1].startswith("2"):
            ok += 1
            latencies.append(int(cols[2]))
        else:
            failed += 1
    latencies.sort()
    pct = lambda q: latencies[min(len(latencies) - 1, int(len(latencies) * q))] if latencies else 0
    return {"requests": ok + failed, "rps": ok / DURATION, "p50": pct(0.5), "p99": pct(0.99),
            "p999": pct(0.999), "errors": failed}


def hung_receiver():
    """Accepts connections and never answers."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(128)
    held = []

    def loop():
        while True:
            conn, _ = srv.accept()
            held.append(conn)
    threading.Thread(target=loop, daemon=True).start()
    return srv.getsockname()[1]


# ---------------------------------------------------------------- the run

def main():
    for tool in ("wrk", "h2load"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: run bench/run.sh (it installs wrk and nghttp2-client)")
    tmp = tempfile.mkdtemp(prefix="sentinel-bench-")
    lua = Path(tmp) / "report.lua"
    lua.write_text(WRK_LUA)
    servers, envoys = {}, {}

    floor_port, shaped_port = free_port(), free_port()
    servers["floor"] = spawn([FLOOR, f"127.0.0.1:{floor_port}"], f"{tmp}/floor.log")
    hyper_port = free_port()
    if "floor-hyper" in SETUPS:
        servers["floor-hyper"] = spawn([FLOOR_HYPER, f"127.0.0.1:{hyper_port}"], f"{tmp}/floor-hyper.log")
    if "floor-shaped" in SETUPS:
        servers["floor-shaped"] = spawn([FLOOR, f"127.0.0.1:{shaped_port}", "shaped"], f"{tmp}/floor-shaped.log")
    common = [SENTINEL, "serve", "--bundle", BUNDLE, "--principal-from", "header:x-user",
              "--roles-from", "header:x-roles"]
    sidecar_tcp, uds = free_port(), f"{tmp}/authz.sock"
    hung_port = hung_receiver()
    admins = {}
    hung_grpc = f"127.0.0.1:{free_port()}"
    baseline_port, noinput_port, tls_port = free_port(), free_port(), free_port()
    size_ports = {"sidecar-9": free_port(), "sidecar-1k": free_port(), "sidecar-10k": free_port()}
    size_bundles = {"sidecar-9": lambda: DEMO_BUNDLE, "sidecar-1k": lambda: generated_bundle(tmp, 100),
                    "sidecar-10k": lambda: generated_bundle(tmp, 1000)}
    # The TLS setup's files: dev-pki's central.crt (localhost) serves as
    # the listener's certificate, its sidecar.crt as Envoy's client one.
    tls_dir = f"{tmp}/pki"
    if "sidecar-tls" in SETUPS:
        subprocess.run([SENTINEL, "dev-pki", "--out", tls_dir], check=True, stdout=subprocess.DEVNULL)
    tls_flags = ["--grpc-tls-cert", f"{tls_dir}/central.crt", "--grpc-tls-key", f"{tls_dir}/central.key",
                 "--grpc-client-ca", f"{tls_dir}/ca.pem"]
    # Record destinations: one central taking HTTP ingest and consuming the
    # stream, and a nats-server with JetStream.
    http_port, nats_port = free_port(), free_port()
    http_grpc, nats_grpc = free_port(), free_port()
    signed_grpc, hsm_grpc = free_port(), free_port()
    record_keys, hsm_uri = f"{tmp}/record-keys", None
    if "sidecar-signed" in SETUPS:
        subprocess.run([SENTINEL, "keygen", "--out", record_keys, "--name", "bench-node"], check=True,
                       stdout=subprocess.DEVNULL)
    if "sidecar-hsm" in SETUPS:
        hsm_uri = softhsm_key(tmp, record_keys)
    if {"sidecar-http", "sidecar-nats", "sidecar-signed", "sidecar-hsm"} & set(SETUPS):
        os.environ["DEV_SKIP_MTLS"] = "true"
        servers["nats-server"] = spawn(["nats-server", "-a", "127.0.0.1", "-p", str(nats_port), "-js",
                                        "-sd", f"{tmp}/nats-store"], f"{tmp}/nats.log")
        subprocess.run([SENTINEL, "keygen", "--out", f"{tmp}/keys", "--name", "central"], check=True,
                       stdout=subprocess.DEVNULL)
        servers["central"] = spawn([SENTINEL, "central", "--addr", f"127.0.0.1:{http_port}",
                                    "--db", f"sqlite://{tmp}/central.db", "--signing-key", f"{tmp}/keys/central.key",
                                    "--rate-limit", "0", "--ingest-rate-limit", "0",
                                    "--decision-stream", f"nats://127.0.0.1:{nats_port}"]
                                   + (["--record-keys", record_keys] if os.path.isdir(record_keys) else []),
                                   f"{tmp}/central.log")
        wait_http(f"http://127.0.0.1:{http_port}/healthz")
    for name, grpc, extra in [
        ("sidecar-tcp", f"127.0.0.1:{sidecar_tcp}", []),
        ("sidecar-uds", f"unix:{uds}", []),
        ("sidecar-hung", hung_grpc, ["--audit-url", f"http://127.0.0.1:{hung_port}/v1/audit/decisions"]),
        ("baseline-tcp", f"127.0.0.1:{baseline_port}", []),
        ("sidecar-noinput", f"127.0.0.1:{noinput_port}", ["--record-input", "0"]),
        ("sidecar-tls", f"127.0.0.1:{tls_port}", tls_flags),
        ("sidecar-http", f"127.0.0.1:{http_grpc}",
         ["--audit-url", f"http://127.0.0.1:{http_port}/v1/audit/decisions"]),
        ("sidecar-nats", f"127.0.0.1:{nats_grpc}", ["--audit-url", f"nats://127.0.0.1:{nats_port}"]),
        ("sidecar-signed", f"127.0.0.1:{signed_grpc}",
         ["--audit-url", f"http://127.0.0.1:{http_port}/v1/audit/decisions",
          "--record-signing-key", f"{record_keys}/bench-node.key"]),
        ("sidecar-hsm", f"127.0.0.1:{hsm_grpc}",
         ["--audit-url", f"http://127.0.0.1:{http_port}/v1/audit/decisions",
          "--record-signing-key", hsm_uri or ""]),
    ] + [(name, f"127.0.0.1:{port}", []) for name, port in size_ports.items()]:
        if name not in SETUPS:
            continue
        admins[name] = free_port()
        binary = [BASELINE] if name == "baseline-tcp" else [SENTINEL]
        args = common[1:]
        if name in size_bundles:
            args = [size_bundles[name]() if a == BUNDLE else a for a in args]
        env_args = binary + args + ["--grpc-addr", grpc, "--admin-addr", f"127.0.0.1:{admins[name]}"] + extra
        os.environ["DEV_SKIP_MTLS"] = "true"
        servers[name] = spawn(env_args, f"{tmp}/{name}.log")
        wait_http(f"http://127.0.0.1:{admins[name]}/readyz")

    clusters = {
        "floor": {"socket_address": {"address": "127.0.0.1", "port_value": floor_port}},
        "floor-hyper": {"socket_address": {"address": "127.0.0.1", "port_value": hyper_port}},
        "floor-shaped": {"socket_address": {"address": "127.0.0.1", "port_value": shaped_port}},
        "sidecar-tcp": {"socket_address": {"address": "127.0.0.1", "port_value": sidecar_tcp}},
        "sidecar-uds": {"pipe": {"path": uds}},
        "sidecar-hung": {"socket_address": {"address": "127.0.0.1", "port_value": int(hung_grpc.split(":")[1])}},
        "baseline-tcp": {"socket_address": {"address": "127.0.0.1", "port_value": baseline_port}},
        "sidecar-noinput": {"socket_address": {"address": "127.0.0.1", "port_value": noinput_port}},
        "sidecar-tls": {"socket_address": {"address": "127.0.0.1", "port_value": tls_port}},
        "sidecar-http": {"socket_address": {"address": "127.0.0.1", "port_value": http_grpc}},
        "sidecar-nats": {"socket_address": {"address": "127.0.0.1", "port_value": nats_grpc}},
        "sidecar-signed": {"socket_address": {"address": "127.0.0.1", "port_value": signed_grpc}},
        "sidecar-hsm": {"socket_address": {"address": "127.0.0.1", "port_value": hsm_grpc}},
    }
    for name, port in size_ports.items():
        clusters[name] = {"socket_address": {"address": "127.0.0.1", "port_value": port}}
    # The in-process module's records go to a sidecar of their own (which
    # decides nothing; its CPU is reported as the setup's "authz" CPU).
    records_sock = f"{tmp}/records.sock"
    if "inprocess" in SETUPS:
        admins["inprocess"] = free_port()
        servers["inprocess"] = spawn(common + ["--grpc-addr", f"127.0.0.1:{free_port()}",
                                               "--admin-addr", f"127.0.0.1:{admins['inprocess']}",
                                               "--record-socket", f"unix:{records_sock}"],
                                     f"{tmp}/inprocess-sidecar.log")
        wait_http(f"http://127.0.0.1:{admins['inprocess']}/readyz")
        # The baseline module's records go to the same sidecar (setups run
        # one at a time, so its CPU is still measured per setup).
        servers["baseline-inprocess"] = servers["inprocess"]
    for name in SETUPS:
        port, admin = free_port(), free_port()
        if name == "noauthz":
            cfg = envoy_config(port, admin, [])
        elif name in ("inprocess", "baseline-inprocess"):
            cfg = envoy_config(port, admin, [inprocess_filter(records_sock)])
        elif name in ("inprocess-norec", "baseline-inprocess-norec"):
            cfg = envoy_config(port, admin, [inprocess_filter()])
        elif name == "rbac":
            cfg = envoy_config(port, admin, [RBAC])
        else:
            cfg = envoy_config(port, admin, [EXT_AUTHZ], clusters[name],
                               tls_dir if name == "sidecar-tls" else None)
        path = Path(tmp) / f"envoy-{name}.json"
        path.write_text(json.dumps(cfg))
        os.environ["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] = (
            BASELINE_MODULE if name.startswith("baseline-inprocess") else str(ROOT / "target/release"))
        envoy = spawn(ENVOY_CPU + [ENVOY, "-c", path, "--concurrency", "1", "--disable-hot-restart", "-l", "error"],
                      f"{tmp}/envoy-{name}.log")
        wait_http(f"http://127.0.0.1:{admin}/ready")
        envoys[name] = (f"http://127.0.0.1:{port}{PATH}", envoy)

    results = {(s, l): [] for s in SETUPS for l in LOADS}
    for r in range(ROUNDS):
        for load in LOADS:
            for setup in SETUPS:
                url, envoy = envoys[setup]
                server = servers.get(setup)
                before = cpu_ns(server.pid) if server else 0
                audit_before = audit_cpu_ns(server.pid) if server else 0
                envoy_before = cpu_ns(envoy.pid)
                if load == "1conn":
                    res = run_wrk(url, 1, lua)
                elif load == "saturation":
                    res = run_wrk(url, 16, lua)
                else:
                    res = run_h2load(url, 1000 if load == "1k" else 5000, tmp)
                if server:
                    res["cpu_us_per_check"] = (cpu_ns(server.pid) - before) / 1000 / max(res["requests"], 1)
                    res["audit_us_per_check"] = (audit_cpu_ns(server.pid) - audit_before) / 1000 / max(
                        res["requests"], 1)
                res["envoy_cpu_us"] = (cpu_ns(envoy.pid) - envoy_before) / 1000 / max(res["requests"], 1)
                results[(setup, load)].append(res)
                print(f"round {r + 1}/{ROUNDS} {load:<10} {setup:<12} {res['rps']:>9.0f} req/s  "
                      f"p50 {res['p50']:>6} µs  p99 {res['p99']:>6} µs  errors {res['errors']}", flush=True)

    report(results)
    # THOUSAND is the old name (earlier runs in bench/README.md use it).
    large = os.environ.get("LARGE", os.environ.get("THOUSAND", "1")) != "0"
    extra = large_bundle_checks(tmp, lua) if large else None
    if os.environ.get("OUT"):
        Path(os.environ["OUT"]).write_text(json.dumps({
            "results": {f"{s}/{l}": v for (s, l), v in results.items()}, "large": extra}, indent=2))


def softhsm_key(tmp, record_keys):
    """A SoftHSM2 token in tmp with an Ed25519 key made by `keygen --pkcs11`;
    its pkcs11: URI (SOFTHSM2_CONF is set for every process started after)."""
    module = "/usr/lib/softhsm/libsofthsm2.so"
    if not shutil.which("softhsm2-util") or not os.path.exists(module):
        sys.exit("softhsm2 is missing: apt-get install softhsm2")
    os.makedirs(f"{tmp}/tokens")
    Path(f"{tmp}/softhsm2.conf").write_text(f"directories.tokendir = {tmp}/tokens\nobjectstore.backend = file\n")
    os.environ["SOFTHSM2_CONF"] = f"{tmp}/softhsm2.conf"
    subprocess.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--pin", "1234",
                    "--so-pin", "12345678"], check=True, stdout=subprocess.DEVNULL)
    uri = f"pkcs11:token=bench;object=bench-hsm?module-path={module}&pin-value=1234"
    subprocess.run([SENTINEL, "keygen", "--pkcs11", uri, "--out", record_keys, "--name", "bench-hsm"], check=True,
                   stdout=subprocess.DEVNULL)
    return uri


def median(values):
    values = sorted(values)
    return values[len(values) // 2] if values else 0


def report(results):
    print(f"\nMedians over {ROUNDS} interleaved rounds of {DURATION} s "
          "(latencies in µs; ratios are req/s against the same load's baseline)\n")
    print(f"| load | setup | req/s | p50 | p99 | p99.9 | authz CPU µs/Check | of it audit thread | "
          "Envoy CPU µs/req | × no-authz | × floor |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for load in LOADS:
        # A ratio column stays empty when its baseline was not run (a
        # report, not a crash, after minutes of load).
        base = median([r["rps"] for r in results.get(("noauthz", load), [])])
        floor = median([r["rps"] for r in results.get(("floor", load), [])])
        for setup in SETUPS:
            runs = results[(setup, load)]
            rps = median([r["rps"] for r in runs])
            cpu = median([r.get("cpu_us_per_check", 0) for r in runs]) if setup in AUTHZ_SERVERS else None
            audit = median([r.get("audit_us_per_check", 0) for r in runs]) if setup in AUTHZ_SERVERS else 0
            errors = sum(r["errors"] for r in runs)
            print(f"| {load} | {setup}{' (' + str(errors) + ' errors)' if errors else ''} | {rps:.0f} | "
                  f"{median([r['p50'] for r in runs])} | {median([r['p99'] for r in runs])} | "
                  f"{median([r['p999'] for r in runs])} | {'' if cpu is None else f'{cpu:.1f}'} | "
                  f"{f'{audit:.1f}' if audit else ''} | "
                  f"{median([r['envoy_cpu_us'] for r in runs]):.1f} | "
                  f"{f'{rps / base:.2f}' if base else ''} | {f'{rps / floor:.2f}' if floor else ''} |")


def large_bundle_checks(tmp, lua):
    """RSS of a sidecar holding 10,004 policies, and swaps under load."""
    bundle = generated_bundle(tmp, 1000)
    base = json.loads((bundle / "bundle.json").read_text())
    grpc, admin = free_port(), free_port()
    sidecar = spawn([SENTINEL, "serve", "--bundle", bundle, "--grpc-addr", f"127.0.0.1:{grpc}",
                     "--admin-addr", f"127.0.0.1:{admin}", "--principal-from", "header:x-user",
                     "--roles-from", "header:x-roles"], f"{tmp}/large.log")
    wait_http(f"http://127.0.0.1:{admin}/readyz")
    port, eadmin = free_port(), free_port()
    cfg = envoy_config(port, eadmin, [EXT_AUTHZ], {"socket_address": {"address": "127.0.0.1", "port_value": grpc}})
    (Path(tmp) / "envoy-large.json").write_text(json.dumps(cfg))
    spawn([ENVOY, "-c", Path(tmp) / "envoy-large.json", "--concurrency", "1", "--disable-hot-restart", "-l", "error"],
          f"{tmp}/envoy-large.log")
    wait_http(f"http://127.0.0.1:{eadmin}/ready")
    rss_idle = rss_kib(sidecar.pid)

    # Swap while wrk runs: rewrite bundle.json with a new revision and time
    # until /v1/status shows it.
    swaps = []
    result = {}

    def load():
        # Long enough for five swaps of ~1 s each, spaced by 0.5 s.
        result.update(run_wrk(f"http://127.0.0.1:{port}{PATH}", 16, lua, duration=max(DURATION, 12)))
    worker = threading.Thread(target=load)
    worker.start()
    time.sleep(1)
    for n in range(1, 6):
        base["revision"] = f"swap-{n}"
        tmpfile = bundle / "bundle.json.tmp"
        tmpfile.write_text(json.dumps(base))
        start = time.perf_counter()
        os.rename(tmpfile, bundle / "bundle.json")
        while True:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/v1/status") as r:
                if json.load(r)["bundle"]["revision"] == base["revision"]:
                    break
            time.sleep(0.002)
        swaps.append((time.perf_counter() - start) * 1000)
        time.sleep(0.5)
    worker.join()
    rss_loaded = rss_kib(sidecar.pid)
    print(f"\n10,004-policy bundle: RSS {rss_idle / 1024:.1f} MiB idle, {rss_loaded / 1024:.1f} MiB after load and swaps")
    print(f"swap under saturation load: {result.get('requests', 0)} requests, {result.get('errors', 0)} failed, "
          f"{result.get('rps', 0):.0f} req/s, p99 {result.get('p99', 0)} µs, slowest {result.get('max', 0)} µs; "
          "new revision live after "
          + ", ".join(f"{s:.0f}" for s in swaps) + " ms (includes the watch debounce of 20 ms)")
    return {"rss_mib": rss_loaded / 1024, "swap_ms": swaps, "swap_load": result}


if __name__ == "__main__":
    try:
        main()
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
