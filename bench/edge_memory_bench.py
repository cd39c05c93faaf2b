#!/usr/bin/env python3
"""Memory per held bridged Ping: the natsync edge and HAProxy side by side, in one run (issue 27).

Both proxies bridge TLS both ways in front of the same holding TLS backend on loopback (it
answers nothing to a Ping, so every Ping stays held): the edge verifies the backend by pin,
HAProxy 2.6 by CA file and name (``ssl verify required ca-file … sni str(name)``, the way
bench/held_bench.py runs it), both with TLS session resumption toward the backend. Per round
and proxy: a fresh proxy (``--workers`` edge workers; as many HAProxy processes of one thread),
``--warm`` Pings held and let go (one-off allocations: TLS session caches, the first
handshakes), then ``--held`` Pings opened by ``--clients`` processes and held; per held Ping =
(after - before) / held, summed over the proxy's processes, for RSS, PSS and USS (private
pages: what the proxy alone would give back), from /proc/PID/smaps_rollup. Rounds alternate the
order (edge first, then HAProxy first). The load average is printed: above 1 a round is noisy.

    python bench/edge_memory_bench.py [--held 2000] [--rounds 2] [--workers 1] [--clients 2]
    python bench/edge_memory_bench.py breakdown [--held 1000]   # where the edge's bytes go

``breakdown`` measures one TLS connection at a time, not the edge: the process holding N idle
TLS connections (after one small request) on uvloop's TLS transport, on asyncio's, as a client
(the edge's server leg) with and without OpenSSL's buffers freed; and the edge's own Python
objects per held Ping (tracemalloc; edge_bench's hot-path harness, no sockets).

Needs HAProxy from Debian (`apt-get install haproxy`). Loopback only; every process it starts is
stopped by PID and its work directory removed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import edge_bench
from edge_bench import EdgeProxy, Proxy, free_port, raise_nofile, wait_port

from natsync.cert import init_ca
from natsync.edge.config import EdgeConfig, SiteCert
from natsync.edge.tls import fingerprint

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
#: Seconds after the last Ping is held before memory is read (allocator and kernel settle).
SETTLE = 2.0
#: Seconds the holding clients may take to open their connections.
CONNECT_TIMEOUT = 180.0
KINDS = ("Rss", "Pss", "Uss")


def memory(pids: list[int]) -> dict[str, int]:
    """RSS, PSS and USS (Private_Clean + Private_Dirty) in bytes, summed over *pids*."""
    total = dict.fromkeys(KINDS, 0)
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        fields = {}
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1]) * 1024
        total["Rss"] += fields.get("Rss", 0)
        total["Pss"] += fields.get("Pss", 0)
        total["Uss"] += fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return total


class HAProxyProxy(Proxy):
    """*count* HAProxy processes of one thread on one port (SO_REUSEPORT, its default)."""

    def __init__(
        self,
        workdir: Path,
        cert: Path,
        key: Path,
        ca: Path,
        name: str,
        backend_port: int,
        count: int,
    ) -> None:
        self.name = f"HAProxy ({count} process{'es' if count > 1 else ''})"
        self.port = free_port()
        pem = workdir / "haproxy.pem"
        pem.write_bytes(cert.read_bytes() + key.read_bytes())
        config = workdir / f"haproxy-{self.port}.cfg"
        config.write_text(
            f"""global
    maxconn 9000
    nbthread 1
defaults
    mode http
    timeout connect 5s
    timeout client 1h
    timeout server 1h
    timeout http-request 30s
    option forwardfor
frontend phones
    bind 127.0.0.1:{self.port} ssl crt {pem}
    default_backend holding
backend holding
    server s1 127.0.0.1:{backend_port} ssl verify required ca-file {ca} sni str({name})
"""
        )
        self.procs = [
            subprocess.Popen(
                [HAPROXY, "-db", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                preexec_fn=raise_nofile,  # noqa: PLW1509 (no threads here)
            )
            for _ in range(count)
        ]
        self.proc = self.procs[0]
        wait_port(self.port)
        time.sleep(0.5)  # every process bound

    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def hold(
    proxy: Proxy, count: int, clients: int, ca_file: Path, workdir: Path
) -> tuple[list[subprocess.Popen[bytes]], int]:
    """*count* Pings held through *proxy* by *clients* processes; the processes, Pings held."""
    per = max(1, count // clients)
    ready = [workdir / f"ready-{proxy.port}-{count}-{i}" for i in range(clients)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                edge_bench.__file__,
                "hold-clients",
                str(proxy.port),
                str(per),
                str(ca_file),
                str(path),
            ]
        )
        for path in ready
    ]
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while not all(path.exists() and path.read_text() for path in ready):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            release(procs)
            raise SystemExit(f"{proxy.name}: the holding clients did not finish connecting")
        time.sleep(0.2)
    opened = sum(int(path.read_text()) for path in ready)
    for path in ready:
        path.unlink()
    return procs, opened


def release(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.kill()
        proc.wait()


def per_held(
    proxy: Proxy, args: argparse.Namespace, ca_file: Path, workdir: Path
) -> dict[str, float]:
    """Bytes per held Ping (RSS, PSS, USS) through *proxy*, after a warm-up."""
    warm, _ = hold(proxy, args.warm, 1, ca_file, workdir)
    release(warm)
    time.sleep(SETTLE)
    before = memory(proxy.pids())
    procs, opened = hold(proxy, args.held, args.clients, ca_file, workdir)
    try:
        time.sleep(SETTLE)
        after = memory(proxy.pids())
    finally:
        release(procs)
    result = {kind: (after[kind] - before[kind]) / max(1, opened) for kind in KINDS}
    print(
        f"    {proxy.name}: {opened} held; per held Ping "
        + ", ".join(f"{kind.upper()} {result[kind] / 1024:.1f} KB" for kind in KINDS),
        flush=True,
    )
    return result


def compare(args: argparse.Namespace) -> None:
    if not Path(HAPROXY).exists():
        raise SystemExit(f"{HAPROXY} is missing: apt-get install haproxy")
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="edge-memory-bench-"))
    running: list[subprocess.Popen[bytes]] = []
    results: dict[str, list[dict[str, float]]] = {"edge": [], "haproxy": []}
    loads: list[float] = []
    try:
        ca = init_ca(workdir / "ca")
        s_cert, s_key = ca.issue_server_cert(
            ["backend.internal"], ["127.0.0.1"], workdir, basename="s"
        )
        e_cert, e_key = ca.issue_server_cert(
            ["mail.example.test"], ["127.0.0.1"], workdir, basename="e"
        )
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding

        leaf = x509.load_pem_x509_certificates(s_cert.read_bytes())[0]
        hold_port = free_port()
        running.append(
            subprocess.Popen(
                [
                    sys.executable,
                    edge_bench.__file__,
                    "hold-backend",
                    str(hold_port),
                    str(s_cert),
                    str(s_key),
                ]
            )
        )
        wait_port(hold_port)
        config = EdgeConfig(
            certificates=(SiteCert(("mail.example.test",), e_cert, e_key),),
            backend=f"127.0.0.1:{hold_port}",
            backend_name="backend.internal",
            backend_pin=fingerprint(leaf.public_bytes(Encoding.DER)),
            forwards=(),
            max_connections_per_ip=100_000,
        )

        def start(kind: str) -> Proxy:
            if kind == "edge":
                listen = f"127.0.0.1:{free_port()}"
                return EdgeProxy(replace(config, listen=listen), workdir, args.workers)
            return HAProxyProxy(
                workdir, e_cert, e_key, ca.cert_path, "backend.internal", hold_port, args.workers
            )

        for number in range(1, args.rounds + 1):
            order = ("edge", "haproxy") if number % 2 else ("haproxy", "edge")
            load = os.getloadavg()[0]
            loads.append(load)
            noisy = " (noisy)" if load > 1 else ""
            print(f"round {number}: {' then '.join(order)}; load {load:.2f}{noisy}", flush=True)
            for kind in order:
                proxy = start(kind)
                try:
                    results[kind].append(per_held(proxy, args, ca.cert_path, workdir))
                finally:
                    proxy.stop()
    finally:
        for proc in running:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    print()
    print(f"command: python {' '.join(sys.argv)}")
    print(
        f"{args.held:,} held Pings, {args.workers} edge worker(s) / HAProxy process(es), TLS 1.3 "
        f"both legs, median of {args.rounds} round(s); load {min(loads):.2f}-{max(loads):.2f}"
        + (" (noisy)" if max(loads) > 1 else "")
    )
    print()
    print("| KB per held Ping | natsync edge | HAProxy | edge / HAProxy |")
    print("|---|---:|---:|---:|")
    for kind in KINDS:
        edge = statistics.median(r[kind] for r in results["edge"]) / 1024
        peer = statistics.median(r[kind] for r in results["haproxy"]) / 1024
        print(f"| {kind.upper()} | {edge:.1f} | {peer:.1f} | {edge / peer:.0%} |")


# -- breakdown: one TLS connection at a time


def breakdown(args: argparse.Namespace) -> None:
    print("not yet")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="compare", choices=("compare", "breakdown"))
    parser.add_argument("--held", type=int, default=2000)
    parser.add_argument("--warm", type=int, default=50, help="Pings held and let go first")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="edge workers = HAProxy processes")
    parser.add_argument("--clients", type=int, default=2, help="holding client processes")
    args = parser.parse_args()
    if args.what == "breakdown":
        breakdown(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
