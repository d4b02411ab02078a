#!/usr/bin/env python3
"""What `kill -9` of a sidecar under load loses: decision records of checks
it answered that never reached the spool file.

Each round starts the release sidecar with a spool (and an audit URL that
nothing answers, so every record stays in the spool), drives Checks at it
directly over gRPC with h2load (the message is a real encoded CheckRequest
for the 20-policy bench bundle), kills it with SIGKILL at a random moment
1-2 s into the load, then counts:

  answered  Checks h2load saw completed (HTTP/2 200 with the gRPC answer)
  spooled   records in the spool's segment files with a valid checksum
  torn      a partly written last line (recovery reports and skips it)

A check's record is queued before hyper writes its answer, so every answered
check had a record in memory; loss = answered - spooled, at least. Records
of checks whose answers were still in flight when the process died count
on the spooled side, so the loss can be up to the in-flight window
(connections x streams) larger than measured; both are printed.

Then the sidecar is started again on the same spool and must report the
torn line (if any) and keep every complete record.

Loads: RATES, comma-separated total Checks/s (h2load --rps per
connection); `max` is as fast as the sidecar answers. Just before each kill
the harness reads the sidecar's audit queue depth and drop counter: past
what the audit thread can write, the queue (16,384 records) fills and new
records are dropped and counted instead of queued, so the crash loss is
bounded by the queue, not by the drain interval.

Environment: ROUNDS (10 per rate), RATES (5000,max), CONNECTIONS (4),
STREAMS (8).
"""
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SENTINEL = ROOT / "target/release/sentinelnet"
BUNDLE = ROOT / "bench/bundles/kernel-20"
ROUNDS = int(os.environ.get("ROUNDS", "10"))
RATES = os.environ.get("RATES", "5000,max").split(",")
CONNECTIONS = int(os.environ.get("CONNECTIONS", "4"))
STREAMS = int(os.environ.get("STREAMS", "8"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------- a CheckRequest, by hand

def varint(n):
    out = b""
    while True:
        b, n = n & 0x7F, n >> 7
        if n:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])


def field(tag, payload):
    if isinstance(payload, str):
        payload = payload.encode()
    return varint(tag << 3 | 2) + varint(len(payload)) + payload


def check_request():
    """GET /v1/kernels?limit=10 by a reader: allowed by kernel-20."""
    headers = {"x-user": "spiffe://cluster/ns/app/sa/bench", "x-roles": "reader",
               ":authority": "kernel.local", "user-agent": "crash-loss"}
    http = field(2, "GET") + field(4, "/v1/kernels?limit=10") + field(5, "kernel.local")
    http += b"".join(field(3, field(1, k) + field(2, v)) for k, v in headers.items())
    attributes = field(4, field(2, http))
    message = field(1, attributes)
    return b"\x00" + struct.pack(">I", len(message)) + message


# ------------------------------------------------------------------ a round

def spool_records(spool):
    """(complete records, torn or corrupt lines) in the spool's segments."""
    records, torn = 0, 0
    for segment in sorted(spool.glob("seg-*.log")):
        data = segment.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()  # after the last newline: empty unless torn
        if tail:
            torn += 1
        for line in lines:
            if len(line) > 9 and line[8:9] == b" " and \
                    int(line[:8], 16) == zlib.crc32(line[9:]):
                records += 1
            else:
                torn += 1
    return records, torn


def wait_ready(admin, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.05)
    sys.exit("sidecar not ready")


def start_sidecar(tmp, spool, grpc, admin):
    env = dict(os.environ, DEV_SKIP_MTLS="true", POD_NAME="crash-loss")
    return subprocess.Popen(
        [SENTINEL, "serve", "--bundle", BUNDLE, "--grpc-addr", f"127.0.0.1:{grpc}",
         "--admin-addr", f"127.0.0.1:{admin}", "--principal-from", "header:x-user",
         "--roles-from", "header:x-roles", "--spool-dir", spool,
         "--audit-url", "http://127.0.0.1:9/v1/audit/decisions"],
        env=env, stdout=subprocess.DEVNULL, stderr=open(f"{tmp}/sidecar.log", "a"))


def metric(admin, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/metrics", timeout=2) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def one_round(tmp, body, index, rate):
    spool = Path(tmp) / f"spool-{index}"
    grpc, admin = free_port(), free_port()
    sidecar = start_sidecar(tmp, spool, grpc, admin)
    wait_ready(admin)
    pace = [] if rate == "max" else ["--rps", str(max(1, int(rate) // CONNECTIONS))]
    load = subprocess.Popen(
        ["h2load", "-n", "100000000", "-c", str(CONNECTIONS), "-m", str(STREAMS), "-t", "1", *pace,
         "-d", body, "-H", "content-type: application/grpc", "-H", "te: trailers",
         f"http://127.0.0.1:{grpc}/envoy.service.auth.v3.Authorization/Check"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1 + random.random())
    queued = metric(admin, "sentinel_audit_queue_depth")
    dropped = metric(admin, "sentinel_audit_dropped_total")
    sidecar.send_signal(signal.SIGKILL)
    sidecar.wait()
    out, _ = load.communicate(timeout=60)
    answered = 0
    for line in out.splitlines():
        if line.startswith("status codes:"):
            answered = int(line.split()[2])  # "status codes: N 2xx, ..."
    records, torn = spool_records(spool)
    # Recovery: the same spool, a new process.
    sidecar = start_sidecar(tmp, spool, grpc, admin)
    wait_ready(admin)
    time.sleep(0.5)  # gauges are refreshed by the audit thread's loop
    corrupt = metric(admin, "sentinel_audit_spool_corrupt_records_total")
    backlog = metric(admin, "sentinel_audit_backlog_records")
    sidecar.send_signal(signal.SIGKILL)
    sidecar.wait()
    return answered, records, torn, corrupt, backlog, queued, dropped


def main():
    if not SENTINEL.exists():
        sys.exit("build the release binary first: cargo build --release")
    if subprocess.run(["which", "h2load"], capture_output=True).returncode != 0:
        sys.exit("h2load is missing: apt-get install nghttp2-client")
    tmp = tempfile.mkdtemp(prefix="sentinel-crash-")
    body = Path(tmp) / "check.bin"
    body.write_bytes(check_request())
    inflight = CONNECTIONS * STREAMS
    print(f"{ROUNDS} rounds per rate, h2load -c{CONNECTIONS} -m{STREAMS} "
          f"(at most {inflight} Checks in flight)\n")
    print("| rate | round | answered | spooled | lost (at least) | lost (at most) | "
          "queued before the kill | dropped (queue full) | torn lines | after restart: corrupt / backlog |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    summary = []
    for rate in RATES:
        losses = []
        for i in range(ROUNDS):
            answered, records, torn, corrupt, backlog, queued, dropped = one_round(
                tmp, body, f"{rate}-{i}", rate)
            # Dropped records never had a place in the queue: not crash loss.
            low = max(0, answered - records - int(dropped))
            losses.append(low)
            recovered = corrupt == torn and backlog == records
            print(f"| {rate} | {i + 1} | {answered} | {records} | {low} | {low + inflight} | "
                  f"{queued:.0f} | {dropped:.0f} | {torn} | {corrupt:.0f} / {backlog:.0f}"
                  f"{'' if recovered else ' (mismatch)'} |", flush=True)
        losses.sort()
        summary.append((rate, losses[len(losses) // 2], losses[-1]))
    print()
    for rate, median, worst in summary:
        print(f"rate {rate}: records lost by kill -9, median {median}, worst {worst} "
              f"(+ up to {inflight} in flight)")


if __name__ == "__main__":
    main()
