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
                                       [--syncs 0]  # Syncs answered before each Ping
    python bench/edge_memory_bench.py breakdown [--held 1000]   # where the edge's bytes go

``breakdown`` measures one TLS connection at a time, not the edge: the process holding N idle
TLS connections (after one small request) on the edge's own TLS transport
(natsync.edge.transport), on uvloop's and on asyncio's, as a server (the phone leg) and as a
client (the server leg), with and without OpenSSL's buffers freed and the session resumed; and
the edge's own Python objects per held Ping (tracemalloc; edge_bench's hot-path harness).

Needs HAProxy from Debian (`apt-get install haproxy`). Loopback only; every process it starts is
stopped by PID and its work directory removed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import cast

sys.path.insert(0, str(Path(__file__).resolve().parent))

import edge_bench
from edge_bench import EdgeProxy, Proxy, free_port, raise_nofile, wait_port
from peers import HAPROXY, HAProxyProcesses

from natsync.cert import init_ca
from natsync.edge.config import EdgeConfig, SiteCert
from natsync.edge.tls import fingerprint

#: Seconds after the last Ping is held before memory is read (allocator and kernel settle).
SETTLE = 2.0
#: Seconds between two counts the holding backend writes.
COUNT_EVERY = 0.2
#: Seconds the holding clients may take to open their connections.
CONNECT_TIMEOUT = 300.0
KINDS = ("Rss", "Pss", "Uss")
#: The holding backend's answer to anything but a Ping (a Sync, with --syncs): a small WBXML
#: body, the size of a Sync answer with a new SyncKey and nothing to send.
SYNC_ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.ms-sync.wbxml\r\n"
    b"MS-Server-ActiveSync: 16.1\r\nContent-Length: 48\r\n\r\n" + bytes(48)
)


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
        self.processes = HAProxyProcesses(config, workdir, self.port, count)
        self.proc = self.processes.procs[0]

    def pids(self) -> list[int]:
        return self.processes.pids()

    def stop(self) -> None:
        self.processes.stop()


def counting_backend(port: int, cert: str, key: str, count_file: str) -> None:
    """The holding TLS backend (a process of its own): a Ping is never answered; how many it
    holds is written to *count_file* every COUNT_EVERY seconds, so a figure is read only once
    every Ping really reached it (the proxy's server leg is up, not only the phone's)."""
    import uvloop

    raise_nofile()
    held = [0]

    class Backend(asyncio.Protocol):
        def __init__(self) -> None:
            self.head, self.holding = b"", False

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = cast(asyncio.Transport, transport)

        def data_received(self, data: bytes) -> None:
            self.head += data
            while b"\r\n\r\n" in self.head and not self.holding:
                line, _, self.head = self.head.partition(b"\r\n\r\n")
                if b"Cmd=Ping" in line:
                    self.holding = True
                    held[0] += 1
                else:
                    self.transport.write(SYNC_ANSWER)

        def connection_lost(self, exc: Exception | None) -> None:
            held[0] -= self.holding

    async def main() -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        loop = asyncio.get_running_loop()
        await loop.create_server(Backend, "127.0.0.1", port, ssl=context, backlog=8192)
        while True:
            _write_count(count_file, held[0])
            await asyncio.sleep(COUNT_EVERY)

    uvloop.run(main())


def _write_count(path: str, count: int) -> None:
    Path(path + ".tmp").write_text(str(count))
    os.replace(path + ".tmp", path)


def backend_holds(count_file: Path, target: int, timeout: float = CONNECT_TIMEOUT) -> int:
    """Wait until the backend holds *target* Pings (at most *timeout*); what it holds."""
    deadline = time.monotonic() + timeout
    while True:
        held = int(count_file.read_text() or 0) if count_file.exists() else -1
        if held == target or time.monotonic() > deadline:
            return held
        time.sleep(COUNT_EVERY)


def hold(
    proxy: Proxy, count: int, clients: int, ca_file: Path, workdir: Path, syncs: int = 0
) -> tuple[list[subprocess.Popen[bytes]], int]:
    """*count* Pings held through *proxy* by *clients* processes, each Ping after *syncs* Syncs
    on its connection; the processes, Pings held."""
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
                str(syncs),
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
    """Bytes per held Ping (RSS, PSS, USS) through *proxy*, after a warm-up; measured once the
    backend holds every Ping (else the run stops: a figure over half-bridged Pings is wrong)."""
    counted = workdir / "held"
    warm, _ = hold(proxy, args.warm, 1, ca_file, workdir, args.syncs)
    backend_holds(counted, args.warm)
    release(warm)
    # the edge drops a Ping's server leg when its phone goes; HAProxy (without abortonclose)
    # keeps it until an answer: what is left is part of "before"
    base = backend_holds(counted, 0, timeout=SETTLE)
    time.sleep(SETTLE)
    before = memory(proxy.pids())
    procs, opened = hold(proxy, args.held, args.clients, ca_file, workdir, args.syncs)
    try:
        reached = backend_holds(counted, base + opened) - base
        if reached != opened:
            raise SystemExit(f"{proxy.name}: {opened} Pings sent, {reached} reached the backend")
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
                    __file__,
                    "backend",
                    str(hold_port),
                    str(s_cert),
                    str(s_key),
                    str(workdir / "held"),
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

#: The variants of `breakdown`: how the measured process holds its TLS connections.
SERVER_LEG = {
    "uvloop": "uvloop's TLS transport (the edge's phone leg before issue 27)",
    "uvloop-released": "the same, OpenSSL's buffers released (natsync.edge.memory)",
    "asyncio": "asyncio's own TLS transport",
    "edge": "the edge's own TLS transport (natsync.edge.transport: OpenSSL reads the socket)",
    "edge-released": "the same, OpenSSL's buffers released (the edge now)",
}
CLIENT_LEG = {
    "uvloop": "uvloop's TLS transport (the edge's server leg before issue 27)",
    "uvloop-released": "the same, OpenSSL's buffers released (natsync.edge.memory)",
    "uvloop-resumed-released": "the same, every connection resuming one TLS session",
    "edge": "the edge's own TLS transport (natsync.edge.transport)",
    "edge-released": "the same, OpenSSL's buffers released",
    "edge-resumed-released": "the same, every connection resuming one TLS session (the edge now)",
}
#: Seconds a breakdown process waits after its connections are up (session tickets arrive)
#: before releasing buffers.
TICKETS_IN = 0.5
_ARRAY = bytearray(64 * 1024)
_BUFFER = memoryview(_ARRAY)


class _Idle(asyncio.BufferedProtocol):
    """Holds a connection; reads into one shared buffer (as the edge's protocols do)."""

    def get_buffer(self, sizehint: int) -> memoryview:
        return _BUFFER

    def buffer_updated(self, nbytes: int) -> None:
        pass


def _leg(kind: str, port: int, cert: str, key: str, count: int) -> None:
    """The measured process of `breakdown`: *kind* is "server-VARIANT" (accept connections on
    *port*) or "client-VARIANT" (open *count* of them to *port* after a line on stdin)."""
    import uvloop

    from natsync.edge.memory import release_buffers, trim_heap, tune_malloc
    from natsync.edge.tls import _SessionContext
    from natsync.edge.transport import TLSServer, connect_tls, listen_sockets

    tune_malloc()  # as the edge runs
    raise_nofile()
    role, variant = kind.split("-", 1)
    loop = asyncio.new_event_loop() if variant == "asyncio" else uvloop.new_event_loop()
    held: list[object] = []
    # the client's is the edge's: it offers its cached_session to every new connection
    context = _SessionContext(
        ssl.PROTOCOL_TLS_SERVER if role == "server" else ssl.PROTOCOL_TLS_CLIENT
    )
    if role == "server":
        context.load_cert_chain(cert, key)
    else:
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE

    class Kept(_Idle):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            held.append(transport.get_extra_info("ssl_object"))

    async def dial() -> None:
        if variant.startswith("uvloop"):
            transport, _ = await loop.create_connection(
                _Idle, "127.0.0.1", port, ssl=context, server_hostname="backend.internal"
            )
        else:  # the edge's own transport, as natsync.edge.tls.open_backend uses it
            sock = socket.socket()
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            transport = await connect_tls(
                _Idle, sock, context, "backend.internal", 5.0, context.cached_session
            )
        transport.write(edge_bench.PING)
        held.append(transport.get_extra_info("ssl_object"))

    async def main() -> None:
        if role == "server":
            if variant.startswith("edge"):
                sockets = listen_sockets("127.0.0.1", port, 4096)
                TLSServer(sockets, context, Kept, 10.0).start()
            else:
                await loop.create_server(Kept, "127.0.0.1", port, ssl=context, backlog=4096)
        else:
            gate = asyncio.Semaphore(50)
            if "resumed" in variant:  # a session with its tickets in, from one connection
                await dial()
                await asyncio.sleep(TICKETS_IN)
                context.cached_session = cast(ssl.SSLSocket, held[0]).session

            async def one() -> None:
                async with gate:
                    await dial()

            await asyncio.gather(*(one() for _ in range(count)))
            print(count, flush=True)  # to `breakdown`: all connected
        released = 0
        while True:
            await asyncio.sleep(TICKETS_IN)
            if variant.endswith("released"):
                for item in held[released:]:
                    release_buffers(item)
                released = len(held)
                trim_heap()

    if role == "client":
        sys.stdin.readline()  # `breakdown` says go once it measured this process idle
    loop.run_until_complete(main())


def _settled(pid: int) -> dict[str, int]:
    time.sleep(SETTLE + TICKETS_IN)
    return memory([pid])


def _print_leg(label: str, before: dict[str, int], after: dict[str, int], count: int) -> None:
    per = {kind: (after[kind] - before[kind]) / max(1, count) / 1024 for kind in KINDS}
    print(f"| {label} | " + " | ".join(f"{per[kind]:.1f}" for kind in KINDS) + " |", flush=True)


def breakdown(args: argparse.Namespace) -> None:
    """Where a held Ping's bytes go: one TLS leg at a time, in a process of its own."""
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="edge-memory-breakdown-"))
    procs: list[subprocess.Popen[bytes]] = []
    me = [sys.executable, __file__, "leg"]
    try:
        ca = init_ca(workdir / "ca")
        cert, key = ca.issue_server_cert(["mail.example.test"], ["127.0.0.1"], workdir,
                                         basename="e")  # fmt: skip
        print(f"command: python {' '.join(sys.argv)}; load {os.getloadavg()[0]:.2f}")
        print(f"\nphone leg: a process holding {args.held} accepted TLS 1.3 connections, one Ping "
              "read on each (KB per connection)\n")  # fmt: skip
        print("| how | RSS | PSS | USS |\n|---|---:|---:|---:|")
        for variant, label in SERVER_LEG.items():
            port = free_port()
            leg = subprocess.Popen([*me, f"server-{variant}", str(port), str(cert), str(key),
                                    "0"])  # fmt: skip
            procs.append(leg)
            wait_port(port)
            warm = Proxy()
            warm.port, warm.name = port, label
            clients, _ = hold(warm, 50, 1, ca.cert_path, workdir)
            before = _settled(leg.pid)
            more, opened = hold(warm, args.held, args.clients, ca.cert_path, workdir)
            _print_leg(label, before, _settled(leg.pid), opened)
            release([*clients, *more, leg])
        print(f"\nserver leg: a process with {args.held} TLS 1.3 connections it opened, one Ping "
              "sent on each, to a server that never answers (KB per connection)\n")  # fmt: skip
        print("| how | RSS | PSS | USS |\n|---|---:|---:|---:|")
        s_cert, s_key = ca.issue_server_cert(["backend.internal"], ["127.0.0.1"], workdir,
                                             basename="s")  # fmt: skip
        for variant, label in CLIENT_LEG.items():
            port = free_port()
            counted = str(workdir / "held")
            backend = subprocess.Popen(
                [sys.executable, __file__, "backend", str(port), str(s_cert), str(s_key), counted]
            )
            procs.append(backend)
            wait_port(port)
            leg = subprocess.Popen([*me, f"client-{variant}", str(port), "", "", str(args.held)],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
            procs.append(leg)
            assert leg.stdin is not None
            assert leg.stdout is not None
            time.sleep(1.0)
            before = _settled(leg.pid)
            leg.stdin.write(b"go\n")
            leg.stdin.flush()
            opened = int(leg.stdout.readline() or 0)  # all connected (or it died: 0)
            _print_leg(label, before, _settled(leg.pid), opened)
            release([leg, backend])
        print("\nthe edge's own Python objects (edge_bench.py hot-path: no TLS, no sockets):")
        subprocess.run([sys.executable, edge_bench.__file__, "hot-path", "2000"], check=False)
    finally:
        release([p for p in procs if p.poll() is None])
        shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", default="compare", choices=("compare", "breakdown"))
    parser.add_argument("--held", type=int, default=2000)
    parser.add_argument("--warm", type=int, default=50, help="Pings held and let go first")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="edge workers = HAProxy processes")
    parser.add_argument("--clients", type=int, default=2, help="holding client processes")
    parser.add_argument(
        "--syncs", type=int, default=0, help="Syncs each phone sends (and reads) before its Ping"
    )
    if len(sys.argv) > 1 and sys.argv[1] == "backend":
        counting_backend(int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "leg":
        _leg(sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5], int(sys.argv[6]))
        return
    args = parser.parse_args()
    if args.what == "breakdown":
        breakdown(args)
    else:
        compare(args)


if __name__ == "__main__":
    main()
