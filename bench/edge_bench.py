#!/usr/bin/env python3
"""The natsync edge, nginx and HAProxy side by side (each with the config `natsync edge render`
writes), in front of the same small TLS backend on loopback, in one run.

Figures (issue 5; CPU per request: issue 21; HAProxy, interleaving, handshakes: issue 27):
  keep-alive req/s   wrk -t2 -c64, GET on the published ActiveSync path, for --seconds;
                     backend: nginx answering 200 "ok" (so the backend is not the bottleneck)
  CPU µs per req     user + system CPU time of the proxy's processes over the run / requests
                     served (it moves far less than req/s when other work shares the machine)
  new TLS conn/s     wrk -t2 -c16 with "Connection: close": one phone-side TLS handshake per
                     request. wrk offers the session of its last connection on every reconnect
                     (TLS 1.2 here): the proxies' session resumption is in this figure, and the
                     run prints how often each proxy resumed a reconnecting client's session
  full handshakes/s  `openssl s_time -new` (TLS 1.3, no request, never resuming), --stime
                     processes at once: the certificate signature and key exchange every time
  KB per held Ping   --held TLS connections each holding a Ping (the backend never answers),
                     opened by --clients processes; (proxy RSS after - before) / held
Rounds (--rounds): every figure but the memory is measured once per proxy per round, the
proxies taking turns (all running, the others idle), the order reversed every other round, so
a change in the machine's load hits them alike; each round's ratios are printed and the medians
kept. The same worker count for all: the edge's workers, nginx's worker_processes and
HAProxy's nbthread (one process: its threads share one TLS session cache and ticket key, as
nginx's workers do). All three verify the backend (the edge by pin, the peers by CA file), use
TLS both ways and serve the same two certificates for the phones' name, ECDSA P-256 first and
RSA 2048 to clients without ECDSA (wrk and s_time get ECDSA).
The load average is printed when the run starts and per round, with the CPU the machine spent
on work other than the bench's own processes during the round: a run that starts above load 1
is marked noisy, and so is a round with more than NOISY_CORES of other work.
Goals (issue 27): keep-alive >= 1.0x nginx and >= 1.0x HAProxy, new TLS connections >= 0.8x the
faster peer (medians of the per-round ratios); memory per held Ping <= HAProxy's.

Needs: nginx, HAProxy, wrk and openssl from Debian (`apt-get install nginx-light haproxy wrk`).
Bounded: wrk and s_time run --seconds each; every process it starts is stopped by its PID and
the work directory removed.

    python bench/edge_bench.py [--seconds 5] [--rounds 5] [--held 5000] [--clients 4]
                               [--workers 2] [--stime 4]
    python bench/edge_bench.py hot-path [REQUESTS]   # the Python run alone (no TLS, no sockets),
                                                     # with the C steady path and without, and
                                                     # its floor (no machine state)
    python bench/edge_bench.py split [SECONDS]       # a new connection's CPU by shared object
                                                     # (perf; edge and nginx, one worker each)
                                                     # and its system calls (strace -c)
    python bench/edge_bench.py compare SRC [ROUNDS]  # CPU per new TLS connection and per full
                                                     # handshake: this tree's edge and SRC's
                                                     # (another checkout's src/), in turns
    python bench/edge_bench.py split-keepalive [SECONDS] [--baseline SRC] [--rounds 3]
                              # a keep-alive request's CPU: perf by shared object and symbol,
                              # syscalls per request (strace); edge, nginx, HAProxy, 1 worker
                              # each; --baseline: also the edge of another checkout's src
                              # (before/after); then --rounds of CPU µs per request, in turns
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from peers import HAPROXY, NGINX, HAProxyProcesses, haproxy_version

from natsync.cert import init_ca
from natsync.edge.config import EdgeConfig, SiteCert
from natsync.edge.render import render_config, split_nginx
from natsync.edge.tls import fingerprint

if TYPE_CHECKING:
    from natsync.edge.proxy import Edge

NATSYNC = str(Path(sys.executable).with_name("natsync"))
WRK = shutil.which("wrk") or "/usr/bin/wrk"
OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"
#: A round with more CPU than this (in cores) spent on work other than the bench's own
#: processes is marked noisy.
NOISY_CORES = 0.3
#: Load average (1 min) above which a run is marked noisy when it starts (issue 27's rule).
NOISY_LOAD = 1.0
#: Reconnects per proxy and TLS version of the resumption probe.
PROBE_RECONNECTS = 10
PATH = "/Microsoft-Server-ActiveSync"
PING = (
    b"POST /Microsoft-Server-ActiveSync?Cmd=Ping&User=u&DeviceId=D&DeviceType=T HTTP/1.1\r\n"
    b"Host: mail.example.test\r\nContent-Length: 0\r\n\r\n"
)


def raise_nofile() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


def rss_kb(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmRSS:\s+(\d+) kB", text)
        total += int(match.group(1)) if match else 0
    return total


def children(pid: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(pid)], check=False, capture_output=True, text=True
    ).stdout
    return [int(p) for p in out.split()]


# -- the floor (a subprocess): a bare uvloop TLS server with the edge's phone-side context, which
# answers nothing (s_time only handshakes and closes): what any edge on uvloop pays per handshake


def bare_tls(port: int, cert: str, key: str) -> None:
    import uvloop

    from natsync.edge.tickets import share
    from natsync.edge.tls import SiteContexts

    sites = SiteContexts([SiteCert(("mail.example.test",), Path(cert), Path(key))])
    share(sites.listening)

    class Nothing(asyncio.BufferedProtocol):
        buffer = bytearray(65536)

        def get_buffer(self, sizehint: int) -> bytearray:
            return self.buffer

        def buffer_updated(self, nbytes: int) -> None:
            pass

    async def main() -> None:
        server = await asyncio.get_running_loop().create_server(
            Nothing, "127.0.0.1", port, ssl=sites.listening, ssl_handshake_timeout=10, backlog=4096
        )
        async with server:
            await server.serve_forever()

    uvloop.run(main())


# -- the holding backend (a subprocess): answers everything at once except Ping, which it holds


def hold_backend(port: int, cert: str, key: str) -> None:
    import uvloop

    raise_nofile()

    class Hold(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport = transport
            self.buf = b""

        def data_received(self, data: bytes) -> None:
            self.buf += data
            while b"\r\n\r\n" in self.buf:
                head, _, self.buf = self.buf.partition(b"\r\n\r\n")
                if b"Cmd=Ping" in head:
                    return  # held until the client goes away
                self.transport.write(  # type: ignore[attr-defined]
                    b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nok\n"
                )

    async def main() -> None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        server = await asyncio.get_running_loop().create_server(
            Hold, "127.0.0.1", port, ssl=context, backlog=8192
        )
        async with server:
            await server.serve_forever()

    uvloop.run(main())


def write_ready(path: str, count: int) -> None:
    Path(path).write_text(str(count))


# -- the holding clients (subprocesses): open N TLS connections, send a Ping on each, wait


#: What a holding client sends before its Ping when asked to (``syncs``): a small Sync.
SYNC = (
    b"POST /Microsoft-Server-ActiveSync?Cmd=Sync&User=u&DeviceId=D&DeviceType=T HTTP/1.1\r\n"
    b"Host: mail.example.test\r\nContent-Type: application/vnd.ms-sync.wbxml\r\n"
    b"Content-Length: 32\r\n\r\n" + bytes(32)
)


def hold_clients(port: int, count: int, ca_file: str, ready_file: str, syncs: int = 0) -> None:
    """*count* TLS connections to *port*, each sending *syncs* Syncs (reading each answer, as a
    phone does before it waits) and then a Ping that stays held."""
    import uvloop

    raise_nofile()

    async def main() -> None:
        context = ssl.create_default_context(cafile=ca_file)
        held = []
        sem = asyncio.Semaphore(50)

        async def one() -> None:
            async with sem:
                for _ in range(5):
                    try:
                        reader, writer = await asyncio.open_connection(
                            "127.0.0.1", port, ssl=context, server_hostname="mail.example.test"
                        )
                        break
                    except OSError:
                        await asyncio.sleep(0.2)
                else:
                    return
                for _ in range(syncs):
                    writer.write(SYNC)
                    head = await reader.readuntil(b"\r\n\r\n")
                    length = re.search(rb"(?i)content-length: *(\d+)", head)
                    await reader.readexactly(int(length.group(1)) if length else 0)
                writer.write(PING)
                await writer.drain()
                held.append((reader, writer))

        await asyncio.gather(*(one() for _ in range(count)))
        write_ready(ready_file, len(held))
        await asyncio.sleep(3600)

    uvloop.run(main())


# -- the proxies


class Proxy:
    name: str
    port: int
    proc: subprocess.Popen[bytes]

    def pids(self) -> list[int]:
        return [self.proc.pid, *children(self.proc.pid)]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class EdgeProxy(Proxy):
    def __init__(
        self, config: EdgeConfig, workdir: Path, workers: int, source: str | None = None
    ) -> None:
        """*source*: another checkout's ``src`` to run the edge from (a before/after run)."""
        self.name = f"natsync edge ({workers} workers)" + (f" from {source}" if source else "")
        cfg = workdir / "edge.toml"
        cfg.write_text(
            f"""[edge]
listen = "{config.listen}"
backend = "{config.backend}"
backend_name = "{config.backend_name}"
backend_pin = "{config.backend_pin}"
admin_listen = ""
forwards = []
access_log = "off"
workers = {workers}
max_connections_per_ip = 100000
requests_per_second_per_ip = 10000000.0
request_burst_per_ip = 10000000
""".replace("'", '"')
            + "".join(
                f'[[edge.certificates]]\nnames = {list(site.names)!r}\ncert = "{site.cert}"\n'
                f'key = "{site.key}"\n'.replace("'", '"')
                for site in config.certificates
            )
        )
        self.port = int(config.listen.rsplit(":", 1)[1])
        env = os.environ | {"PYTHONPATH": source} if source else None
        self.proc = subprocess.Popen(
            [NATSYNC, "edge", "run", "--config", str(cfg)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=raise_nofile,  # noqa: PLW1509 (no threads here)
        )
        wait_port(self.port)


class NginxProxy(Proxy):
    def __init__(self, config: EdgeConfig, workdir: Path, workers: str) -> None:
        self.name = f"nginx ({workers} workers)"
        rt = workdir / f"nginx-{workers}"
        rt.mkdir(exist_ok=True)
        main, include = split_nginx(render_config("nginx", config, runtime_dir=rt))
        main = main.replace("worker_processes auto;", f"worker_processes {workers};")
        # the benchmark's clients all come from 127.0.0.1: lift the per-address limits
        main = re.sub(r"\n    limit_(conn|req) .*;", "", main)
        (rt / "nginx.conf").write_text(main)
        (rt / "natsync-proxy.inc").write_text(include)
        self.port = int(config.listen.rsplit(":", 1)[1])
        self.proc = subprocess.Popen(
            [NGINX, "-p", str(rt), "-c", str(rt / "nginx.conf"), "-e", str(rt / "error.log"),
             "-g", "daemon off;"],
            preexec_fn=raise_nofile,  # noqa: PLW1509 (no threads here)
        )  # fmt: skip
        wait_port(self.port)


class HAProxyProxy(Proxy):
    """HAProxy on `natsync edge render haproxy`'s configuration: one process, *threads* threads."""

    def __init__(self, config: EdgeConfig, workdir: Path, threads: int) -> None:
        self.name = f"HAProxy ({threads} threads)"
        self.port = int(config.listen.rsplit(":", 1)[1])
        rt = workdir / f"haproxy-{self.port}"
        rt.mkdir()
        text = render_config("haproxy", config)
        text = re.sub(r"(?m)^global\n", f"global\n    nbthread {threads}\n", text, count=1)
        # the benchmark's clients all come from 127.0.0.1: lift the per-address limits
        text = re.sub(
            r"\n    (stick-table |tcp-request connection track-sc0|http-request return status 503 "
            r"[^\n]* sc_)[^\n]*",
            "",
            text,
        )
        (rt / "haproxy.cfg").write_text(text)
        self.procs = HAProxyProcesses(rt / "haproxy.cfg", rt, self.port)
        self.proc = self.procs.procs[0]


def backend_nginx(workdir: Path, cert: Path, key: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    rt = workdir / "backend-nginx"
    rt.mkdir()
    (rt / "nginx.conf").write_text(
        f"""worker_processes 1;
pid {rt}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {rt}/cb; proxy_temp_path {rt}/p; fastcgi_temp_path {rt}/f;
    uwsgi_temp_path {rt}/u; scgi_temp_path {rt}/s;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port} ssl;
        ssl_certificate {cert};
        ssl_certificate_key {key};
        location / {{ return 200 "ok\\n"; }}
    }}
}}
"""
    )
    proc = subprocess.Popen(
        [NGINX, "-p", str(rt), "-c", str(rt / "nginx.conf"), "-e", str(rt / "error.log"),
         "-g", "daemon off;"]
    )  # fmt: skip
    wait_port(port)
    return proc, port


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of *pids* so far (fields 14 and 15 of /proc/PID/stat)."""
    ticks = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def wrk(port: int, seconds: int, connections: int, close: bool) -> float:
    return wrk_run(port, seconds, connections, close)[0]


def wrk_run(port: int, seconds: int, connections: int, close: bool) -> tuple[float, int]:
    """Requests per second and requests served."""
    cmd = [WRK, "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "5s"]
    if close:
        cmd += ["-H", "Connection: close"]
    out = subprocess.run(
        [*cmd, f"https://127.0.0.1:{port}{PATH}"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    served = re.search(r"(\d+) requests in ", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        print(f"    warning: {non2xx.group(1)} non-2xx answers", flush=True)
    return (float(match.group(1)) if match else 0.0), (int(served.group(1)) if served else 0)


def full_handshakes(port: int, seconds: int, processes: int) -> tuple[float, int]:
    """Full TLS handshakes per second by *processes* ``openssl s_time -new`` at once (each
    connects, handshakes, closes, again: no request, no session offered), and how many."""
    procs = [
        subprocess.Popen(
            [OPENSSL, "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(seconds)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(processes)
    ]
    done = 0
    for proc in procs:
        try:
            out, _ = proc.communicate(timeout=seconds + 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        match = re.search(r"(\d+) connections in \d+ real seconds", out)
        done += int(match.group(1)) if match else 0
    return done / seconds, done


def resumed_reconnects(port: int, version: ssl.TLSVersion) -> int:
    """Of PROBE_RECONNECTS reconnects that each offer the last session, as wrk's do, how many
    the proxy resumed (each a request with "Connection: close"; SO_REUSEPORT spreads them over
    the workers, so this says whether every worker accepts every worker's sessions)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.maximum_version = version
    session = None
    resumed = 0
    request = (
        f"GET {PATH} HTTP/1.1\r\nHost: mail.example.test\r\nConnection: close\r\n\r\n".encode()
    )
    for attempt in range(PROBE_RECONNECTS + 1):
        with (
            socket.create_connection(("127.0.0.1", port), 5) as raw,
            context.wrap_socket(raw, server_hostname="mail.example.test", session=session) as tls,
        ):
            tls.sendall(request)
            while tls.recv(65536):  # to the end: TLS 1.3 tickets come after the handshake
                pass
            resumed += attempt > 0 and bool(tls.session_reused)
            session = tls.session
    return resumed


def machine_busy() -> float:
    """CPU seconds the whole machine spent busy so far (/proc/stat: all but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields) - fields[3] - fields[4] - sum(fields[8:])  # guest time is in user already
    return busy / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    """User + system CPU of this process's finished children (wrk, s_time)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def held_memory(proxy: Proxy, held: int, clients: int, ca_file: Path, workdir: Path) -> float:
    time.sleep(1.0)
    before = rss_kb(proxy.pids())
    procs = []
    per = held // clients
    ready = [workdir / f"ready-{proxy.port}-{i}" for i in range(clients)]
    for i in range(clients):
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "hold-clients",
                    str(proxy.port),
                    str(per),
                    str(ca_file),
                    str(ready[i]),
                ]
            )
        )
    try:
        deadline = time.monotonic() + 180
        while not all(r.exists() for r in ready):
            if time.monotonic() > deadline:
                raise SystemExit("the holding clients did not finish connecting")
            time.sleep(0.5)
        opened = sum(int(r.read_text()) for r in ready)
        time.sleep(2.0)
        after = rss_kb(proxy.pids())
        print(f"    {proxy.name}: {opened} held, RSS {before} → {after} kB", flush=True)
        return (after - before) / max(1, opened)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        for r in ready:
            r.unlink(missing_ok=True)


# -- the Python run per request, without TLS or sockets (issue 21)


class _FakeTransport:
    """What the edge's protocols call on a transport; counts what is written."""

    def __init__(self) -> None:
        self.written = 0
        self.closing = False

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = True

    def is_closing(self) -> bool:
        return self.closing

    def get_extra_info(self, name: str, default: object = None) -> object:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def set_write_buffer_limits(self, high: int) -> None:
        pass


HOT_REQUEST = (
    b"POST /Microsoft-Server-ActiveSync?Cmd=Sync&User=u&DeviceId=D&DeviceType=T HTTP/1.1\r\n"
    b"Host: mail.example.test\r\nContent-Type: application/vnd.ms-sync.wbxml\r\n"
    b"MS-ASProtocolVersion: 16.1\r\nContent-Length: 3\r\n\r\nabc"
)
HOT_RESPONSE = (
    b"HTTP/1.1 200 OK\r\nServer: x\r\nContent-Type: application/vnd.ms-sync.wbxml\r\n"
    b"Content-Length: 3\r\n\r\nok\n"
)


def hot_path(requests: int) -> None:
    """One request and its response through a pooled server connection, *requests* times, best
    of five by process CPU time; then the Python heap per held Ping (tracemalloc, 5,000)."""
    import gc
    import tracemalloc
    from typing import Any

    from natsync.edge import proxy
    from natsync.edge.tls import BackendTrust

    def feed(conn: Any, data: bytes) -> None:
        proxy._READ_VIEW[: len(data)] = data
        conn.buffer_updated(len(data))

    async def run() -> None:
        config = EdgeConfig(
            insecure_backend=True, forwards=(), admin_listen="", max_connections_per_ip=10**6,
            requests_per_second_per_ip=1e9, request_burst_per_ip=10**9,
        )  # fmt: skip
        edge = proxy.Edge(config, None, BackendTrust(config))  # type: ignore[arg-type]
        upstream = next(iter(edge.upstreams.values()))
        client = proxy.ClientConn(edge)
        client.connection_made(_FakeTransport())  # type: ignore[arg-type]
        backend = proxy.BackendConn(edge, upstream)
        backend.connection_made(_FakeTransport())  # type: ignore[arg-type]
        upstream.pool.append(backend)
        for _ in range(2000):
            feed(client, HOT_REQUEST)
            feed(backend, HOT_RESPONSE)
        # with the machine's C steady moves (natsync.edge._steady) and without, in turns
        best = {True: float("inf"), False: float("inf")}
        for _ in range(5):
            for with_c in (True, False):
                with contextlib.nullcontext() if with_c else proxy.python_shell():
                    started = time.process_time()
                    for _ in range(requests):
                        feed(client, HOT_REQUEST)
                        feed(backend, HOT_RESPONSE)
                    spent = (time.process_time() - started) / requests
                best[with_c] = min(best[with_c], spent)
        steady = "with the C steady path" if proxy.C_READS else "(C steady path not built)"
        print(
            f"Python run per keep-alive request {steady}: {best[True] * 1e6:.2f} µs; the "
            f"shell's reads and the machine's moves in Python alone: {best[False] * 1e6:.2f} µs "
            f"(best of 5 x {requests} each, in turns)"
        )
        best = _python_floor(edge, requests)
        print(
            f"Python floor per keep-alive request (the same bytes through the C parsers, the "
            f"policy's judge and rate limit, the pool and both writes; no machine state): "
            f"{best * 1e6:.2f} µs (best of 5 x {requests})"
        )
        closing = HOT_REQUEST.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n", 1)
        best = float("inf")
        for _ in range(5):
            started = time.process_time()
            for _ in range(requests // 5):
                phone = proxy.ClientConn(edge)
                phone.connection_made(_FakeTransport())  # type: ignore[arg-type]
                feed(phone, closing)
                feed(backend, HOT_RESPONSE)
                phone.connection_lost(None)
            best = min(best, (time.process_time() - started) / (requests // 5))
        print(
            f"Python run per new connection with one request (Connection: close; no TLS, no "
            f"accept): {best * 1e6:.2f} µs (best of 5 x {requests // 5})"
        )
        gc.collect()
        tracemalloc.start()
        held = []
        for _ in range(5000):
            phone = proxy.ClientConn(edge)
            phone.connection_made(_FakeTransport())  # type: ignore[arg-type]
            server = proxy.BackendConn(edge, upstream)
            server.connection_made(_FakeTransport())  # type: ignore[arg-type]
            upstream.pool.append(server)
            feed(phone, PING)
            held.append((phone, server))
        heap = sum(stat.size for stat in tracemalloc.take_snapshot().statistics("filename"))
        tracemalloc.stop()
        print(f"Python heap per held Ping (both protocols and what they keep): {heap / 5000:.0f} B")

    asyncio.run(run())


def _python_floor(edge: Edge, requests: int) -> float:
    """The least Python a keep-alive request through the edge could cost: the steps no relay
    can skip (take the head, judge its path, count it against the rate limit, take a pooled
    connection, forward the head, take the answer's head, forward it, pool the
    connection again), with none of the connection machines' state, deadlines or commands.
    What fusing the machines' transitions could at most win (docs/edge.md)."""
    from natsync.edge import http, proxy

    read_bytes = proxy._read_bytes
    c_request, c_response = http.c_take_request, http.c_take_response
    python_request, python_response = http.python_take_request, http.python_take_response
    backend_request, client_response = http.backend_request, http.client_response
    policy = edge.policy
    phone, server, pool = _FakeTransport(), _FakeTransport(), [0]
    ip = "192.0.2.7"
    view = proxy._READ_VIEW

    def request(nbytes: int) -> tuple[bytes, bool]:
        data = read_bytes(nbytes)
        taken = c_request(data, 1 << 20) or python_request(data, 1 << 20)
        assert taken is not None
        head, body = taken
        policy.judge(head, False)
        policy.limits.allow_request(ip, time.monotonic())
        pool.pop()  # no poll: the run above has fake transports, with no socket to poll
        server.write(backend_request(head, ip) + body)
        return head.method, head.keep_alive

    def answer(nbytes: int, method: bytes, keep_alive: bool) -> None:
        data = read_bytes(nbytes)
        taken = c_response(data, method) or python_response(data, method)
        assert taken is not None
        head, rest = taken
        phone.write(client_response(head, keep_alive) + rest)
        policy.metrics.count_request("Sync", head.status)
        pool.append(0)

    best = float("inf")
    for _ in range(5):
        started = time.process_time()
        for _ in range(requests):
            view[: len(HOT_REQUEST)] = HOT_REQUEST
            method, keep_alive = request(len(HOT_REQUEST))
            view[: len(HOT_RESPONSE)] = HOT_RESPONSE
            answer(len(HOT_RESPONSE), method, keep_alive)
        best = min(best, (time.process_time() - started) / requests)
    return best


PERF = shutil.which("perf") or "/usr/bin/perf"
#: Symbols (dso and function) printed per proxy by ``split-keepalive``, the busiest first.
SPLIT_SYMBOLS = 25


def split(
    seconds: int, keepalive: bool = False, baseline: str | None = None, rounds: int = 0
) -> None:
    """Where a new connection's CPU goes, by shared object (perf record): the edge and nginx with
    one worker each, in turn, under wrk with "Connection: close" (one resumed handshake and one
    request per connection). *keepalive*: a keep-alive request's instead (wrk -c64, HAProxy with
    one thread too), and the system calls per request (strace); *baseline*: another checkout's
    ``src`` whose edge runs too (before/after in one run); then *rounds* of CPU per request
    alone (:func:`cpu_rounds`)."""
    if not Path(PERF).exists():
        raise SystemExit(f"{PERF} is missing: apt-get install linux-perf")
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="edge-split-"))
    ca = init_ca(workdir / "ca")
    s_cert, s_key = ca.issue_server_cert(["backend.internal"], ["127.0.0.1"], workdir, basename="s")
    e_cert, e_key = ca.issue_server_cert(["mail.example.test"], ["127.0.0.1"], workdir)
    Path(f"{e_cert}.key").symlink_to(e_key)  # where HAProxy's config looks for it
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    leaf = x509.load_pem_x509_certificates(s_cert.read_bytes())[0]
    backend, backend_port = backend_nginx(workdir, s_cert, s_key)
    proxies: list[Proxy] = []
    try:
        config = EdgeConfig(
            certificates=(SiteCert(("mail.example.test",), e_cert, e_key),),
            backend=f"127.0.0.1:{backend_port}", backend_name="backend.internal",
            backend_pin=fingerprint(leaf.public_bytes(Encoding.DER)), backend_ca=ca.cert_path,
            forwards=(), max_connections_per_ip=100_000,
        )  # fmt: skip
        edge = EdgeProxy(
            replace(config, listen=f"127.0.0.1:{free_port()}", backend_ca=None), workdir, 1
        )
        proxies.append(edge)
        if baseline:
            proxies.append(
                EdgeProxy(
                    replace(config, listen=f"127.0.0.1:{free_port()}", backend_ca=None),
                    workdir,
                    1,
                    baseline,
                )
            )
        proxies.append(NginxProxy(replace(config, listen=f"127.0.0.1:{free_port()}"), workdir, "1"))
        if keepalive:
            proxies.append(
                HAProxyProxy(replace(config, listen=f"127.0.0.1:{free_port()}"), workdir, 1)
            )
        close, connections, what = (False, 64, "request") if keepalive else (True, 16, "connection")
        for proxy in proxies:
            wrk(proxy.port, 1, connections, close=close)  # warm-up
            # the worker: nginx's is its master's child, HAProxy's the one process
            pids = children(proxy.proc.pid) if isinstance(proxy, NginxProxy) else proxy.pids()
            data = workdir / "perf.data"
            perf = subprocess.Popen(
                [PERF, "record", "-F", "1999", "-o", str(data), "-p", ",".join(map(str, pids)),
                 "--", "sleep", str(seconds + 1)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            time.sleep(0.5)
            used = cpu_seconds(pids)
            rate, served = wrk_run(proxy.port, seconds, connections, close=close)
            per = (cpu_seconds(pids) - used) * 1e6 / max(1, served)
            perf.wait(seconds + 60)
            report = subprocess.run(
                [PERF, "report", "-i", str(data), "--no-children", "--sort", "dso", "-g", "none",
                 "--stdio"],
                check=False, capture_output=True, text=True,
            ).stdout  # fmt: skip
            shares = [line.split() for line in report.splitlines() if line.strip()[:1].isdigit()]
            parts = "; ".join(
                f"{name} {pct} (≈{float(pct.rstrip('%')) * per / 100:.0f} µs)"
                for pct, name, *_ in shares[:7]
            )
            label = "keep-alive req/s" if keepalive else "new TLS conn/s"
            print(f"{proxy.name}: {rate:,.0f} {label}, {per:.1f} CPU µs per {what}; "
                  f"{parts}", flush=True)  # fmt: skip
            if keepalive:
                symbols = subprocess.run(
                    [PERF, "report", "-i", str(data), "--no-children", "--sort", "dso,sym",
                     "-g", "none", "--stdio"],
                    check=False, capture_output=True, text=True,
                ).stdout  # fmt: skip
                top = [line.split(None, 1) for line in symbols.splitlines()
                       if line.strip()[:1].isdigit()][:SPLIT_SYMBOLS]  # fmt: skip
                for pct, rest in top:
                    share = float(pct.rstrip("%")) * per / 100
                    print(f"    {pct:>7} ≈{share:4.1f} µs  {' '.join(rest.split())}")
                calls = syscalls(pids, proxy.port, 2, connections, close, "requests")
                print(f"    syscalls per request: {calls}", flush=True)
            else:
                print(f"    syscalls per connection: {syscalls(pids, proxy.port)}", flush=True)
        if keepalive:
            cpu_rounds(proxies, seconds, rounds)
    finally:
        for proxy in proxies:
            proxy.stop()
        backend.terminate()
        backend.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"(load average {os.getloadavg()[0]:.2f}; above 1 the shares hold, the µs are noisy)")


STRACE = shutil.which("strace") or "/usr/bin/strace"


def syscalls(
    pids: list[int],
    port: int,
    seconds: int = 2,
    connections: int = 16,
    close: bool = True,
    what: str = "connections",
) -> str:
    """System calls per new TLS connection of *pids* (strace -c over a short wrk run with
    "Connection: close"; strace slows the process, the counts per connection hold); with
    *close* False, per keep-alive request (*what* names them)."""
    if not Path(STRACE).exists():
        return "(strace missing: apt-get install strace)"
    out = Path(tempfile.mkstemp(prefix="edge-strace-")[1])
    tracer = subprocess.Popen(
        [STRACE, "-c", "-f", "-o", str(out), *(f"-p{pid}" for pid in pids)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    _rate, served = wrk_run(port, seconds, connections, close=close)
    tracer.send_signal(signal.SIGINT)
    tracer.wait(30)
    counts: list[tuple[int, str]] = []
    for line in out.read_text().splitlines():
        fields = line.split()
        if len(fields) >= 5 and fields[0][:1].isdigit() and fields[-1] != "total":
            counts.append((int(fields[3]), fields[-1]))
    out.unlink()
    counts.sort(reverse=True)
    total = sum(n for n, _ in counts)
    return (
        f"{total / max(1, served):.1f} ("
        + ", ".join(f"{name} {n / max(1, served):.2f}" for n, name in counts if n >= served / 20)
        + f"; {served} {what})"
    )


def compare(other_src: str, rounds: int, seconds: int = 3) -> None:
    """The edge of this tree and the edge of *other_src* (another checkout's ``src``, its C
    modules built in place), one worker each, taking turns: CPU µs per new TLS connection (wrk,
    resumed, one request) and per full handshake (s_time), medians of *rounds* rounds."""
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="edge-compare-"))
    ca = init_ca(workdir / "ca")
    s_cert, s_key = ca.issue_server_cert(["backend.internal"], ["127.0.0.1"], workdir, basename="s")
    e_cert, e_key = ca.issue_server_cert(
        ["mail.example.test"], ["127.0.0.1"], workdir, key_type="ec"
    )
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    leaf = x509.load_pem_x509_certificates(s_cert.read_bytes())[0]
    backend, backend_port = backend_nginx(workdir, s_cert, s_key)
    edges: dict[str, Proxy] = {}
    figures: dict[str, dict[str, list[float]]] = {}
    try:
        for name, src in (("other", other_src), ("this", "")):
            config = EdgeConfig(
                certificates=(SiteCert(("mail.example.test",), e_cert, e_key),),
                backend=f"127.0.0.1:{backend_port}", backend_name="backend.internal",
                backend_pin=fingerprint(leaf.public_bytes(Encoding.DER)), forwards=(),
                max_connections_per_ip=100_000, listen=f"127.0.0.1:{free_port()}",
            )  # fmt: skip
            (workdir / name).mkdir()
            edges[name] = EdgeProxy(config, workdir / name, 1, source=src or None)
            figures[name] = {"new": [], "full": []}
            wrk(edges[name].port, 1, 16, close=True)  # warm-up
        for number in range(rounds):
            order = list(edges) if number % 2 else list(reversed(edges))
            for figure in ("new", "full"):
                for name in order:
                    pids, port = edges[name].pids(), edges[name].port
                    used = cpu_seconds(pids)
                    if figure == "new":
                        _rate, done = wrk_run(port, seconds, 16, close=True)
                    else:
                        _rate, done = full_handshakes(port, seconds, 4)
                    figures[name][figure].append((cpu_seconds(pids) - used) * 1e6 / max(1, done))
            print(f"round {number + 1} (load {os.getloadavg()[0]:.2f}): " + "; ".join(
                f"{name} {figures[name]['new'][-1]:.0f} / {figures[name]['full'][-1]:.0f}"
                for name in edges), flush=True)  # fmt: skip
    finally:
        for proxy in edges.values():
            proxy.stop()
        backend.terminate()
        backend.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    for name, label in (("other", other_src), ("this", "this tree")):
        new, full = median(figures[name]["new"]), median(figures[name]["full"])
        print(f"{label}: CPU µs per new TLS connection {new:.0f}, per full handshake {full:.0f}")
    print(f"(medians of {rounds} rounds, one edge worker each, taking turns; load average "
          f"{os.getloadavg()[0]:.2f})")  # fmt: skip


def cpu_rounds(proxies: list[Proxy], seconds: int, rounds: int) -> None:
    """CPU µs per keep-alive request (wrk -c64) of each proxy, *rounds* times, the proxies
    taking turns in an order reversed every other round; each round's figures and the medians
    (what a before/after with --baseline is read by: the noise hits all alike)."""
    per: dict[str, list[float]] = {proxy.name: [] for proxy in proxies}
    for number in range(1, rounds + 1):
        order = proxies if number % 2 else proxies[::-1]
        load = os.getloadavg()[0]
        for proxy in order:
            pids = children(proxy.proc.pid) if isinstance(proxy, NginxProxy) else proxy.pids()
            used = cpu_seconds(pids)
            _rate, served = wrk_run(proxy.port, seconds, 64, close=False)
            per[proxy.name].append((cpu_seconds(pids) - used) * 1e6 / max(1, served))
        print(f"round {number} (load {load:.2f}): " + "; ".join(
            f"{name} {values[-1]:.1f}" for name, values in per.items()), flush=True)  # fmt: skip
    print("CPU µs per keep-alive request, median of the rounds: " + "; ".join(
        f"{name} {median(values):.1f}" for name, values in per.items()), flush=True)  # fmt: skip


KINDS = ("edge", "nginx", "haproxy")
LABELS = {"edge": "natsync edge", "nginx": "nginx", "haproxy": "HAProxy"}


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=5, help="per measurement")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of every measurement")
    parser.add_argument("--held", type=int, default=5000, help="held Pings (0: no memory part)")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="edge workers = nginx worker_processes = HAProxy nbthread",
    )
    parser.add_argument("--stime", type=int, default=4, help="s_time processes at once")
    args = parser.parse_args()
    workers = args.workers
    for tool in (NGINX, HAPROXY, WRK, OPENSSL):
        if not Path(tool).exists():
            raise SystemExit(f"{tool} is missing: apt-get install nginx-light haproxy wrk openssl")
    raise_nofile()
    load_at_start = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    ca = init_ca(workdir / "ca")
    s_cert, s_key = ca.issue_server_cert(["backend.internal"], ["127.0.0.1"], workdir, basename="s")
    # ECDSA-first, for all three: an ECDSA and an RSA certificate for the phones' name, the
    # client's signature algorithms choosing (wrk and s_time take ECDSA)
    sites = tuple(
        SiteCert(("mail.example.test",), *ca.issue_server_cert(
            ["mail.example.test"], ["127.0.0.1"], workdir, basename=name, key_type=key_type))
        for name, key_type in (("e", "ec"), ("r", "rsa"))
    )  # fmt: skip
    for site in sites:
        Path(f"{site.cert}.key").symlink_to(site.key)  # where HAProxy's config looks for it
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    leaf = x509.load_pem_x509_certificates(s_cert.read_bytes())[0]
    pin = fingerprint(leaf.public_bytes(Encoding.DER))
    running: list[subprocess.Popen[bytes]] = []
    proxies: list[Proxy] = []
    #: figure -> kind -> one value per round
    per_round: dict[str, dict[str, list[float]]] = {}
    noisy_rounds = 0
    held: dict[str, float] = {}
    resumption: dict[str, dict[str, int]] = {}
    #: CPU µs per full handshake of the bare uvloop TLS server, per round
    floor_cpu: list[float] = []

    def record(figure: str, kind: str, value: float) -> None:
        per_round.setdefault(figure, {k: [] for k in KINDS})[kind].append(value)

    try:
        backend, backend_port = backend_nginx(workdir, s_cert, s_key)
        running.append(backend)
        base = EdgeConfig(
            certificates=sites,
            backend=f"127.0.0.1:{backend_port}",
            backend_name="backend.internal",
            backend_pin=pin,
            backend_ca=ca.cert_path,
            forwards=(),
            max_connections_per_ip=100_000,
        )

        def make(kind: str, backend_port: int) -> Proxy:
            config = replace(
                base, listen=f"127.0.0.1:{free_port()}", backend=f"127.0.0.1:{backend_port}"
            )
            if kind == "edge":
                return EdgeProxy(replace(config, backend_ca=None), workdir, workers)
            if kind == "nginx":
                return NginxProxy(config, workdir, str(workers))
            return HAProxyProxy(config, workdir, workers)

        print(
            f"load average at the start: {load_at_start:.2f}"
            + (" (above 1: the run is noisy)" if load_at_start > NOISY_LOAD else ""),
            flush=True,
        )
        live = {kind: make(kind, backend_port) for kind in KINDS}
        proxies.extend(live.values())
        print(
            f"resumption: reconnects (of {PROBE_RECONNECTS}) whose offered session the proxy "
            "resumed",
            flush=True,
        )
        for kind, proxy in live.items():
            wrk(proxy.port, 1, 64, close=False)  # warm-up
            resumption[kind] = {
                name: resumed_reconnects(proxy.port, version)
                for name, version in (
                    ("TLS 1.2", ssl.TLSVersion.TLSv1_2),
                    ("TLS 1.3", ssl.TLSVersion.TLSv1_3),
                )
            }
            found = ", ".join(f"{k} {v}" for k, v in resumption[kind].items())
            print(f"    {proxy.name}: {found}", flush=True)
        floor_port = free_port()  # one process: compare with the proxies' per-process CPU
        floor = subprocess.Popen([sys.executable, __file__, "bare-tls", str(floor_port),
                                  str(sites[0].cert), str(sites[0].key)])  # fmt: skip
        running.append(floor)
        wait_port(floor_port)
        bench_pids = [backend.pid, floor.pid]
        for round_number in range(1, args.rounds + 1):
            order = list(KINDS) if round_number % 2 else list(reversed(KINDS))
            load = os.getloadavg()[0]
            busy, ours = machine_busy(), cpu_seconds(bench_pids) + children_cpu()
            ours += sum(cpu_seconds(p.pids()) for p in live.values())
            started = time.monotonic()
            # (rate's name, CPU figure's name, the load: port -> (rate, operations done))
            measures: list[tuple[str, str, Callable[[int], tuple[float, int]]]] = [
                ("keepalive", "cpu", lambda port: wrk_run(port, args.seconds, 64, close=False)),
                ("newtls", "cpu_newtls", lambda port: wrk_run(port, args.seconds, 16, close=True)),
                ("full", "cpu_full", lambda port: full_handshakes(port, args.seconds, args.stime)),
            ]
            for name, cpu_name, measure in measures:
                for kind in order:
                    proxy = live[kind]
                    pids = proxy.pids()
                    used = cpu_seconds(pids)
                    rate, done = measure(proxy.port)
                    record(name, kind, rate)
                    record(cpu_name, kind, (cpu_seconds(pids) - used) * 1e6 / max(1, done))
            used = cpu_seconds([floor.pid])
            rate, done = full_handshakes(floor_port, args.seconds, args.stime)
            floor_cpu.append((cpu_seconds([floor.pid]) - used) * 1e6 / max(1, done))
            elapsed = time.monotonic() - started
            ours = cpu_seconds(bench_pids) + children_cpu() - ours
            ours += sum(cpu_seconds(p.pids()) for p in live.values())
            other = max(0.0, (machine_busy() - busy - ours) / elapsed)
            noisy = other > NOISY_CORES
            noisy_rounds += noisy
            print(f"round {round_number} (order {', '.join(LABELS[k] for k in order)}; load "
                  f"{load:.2f}; other work {other:.2f} cores{'; NOISY' if noisy else ''})",
                  flush=True)  # fmt: skip
            for figure, label, fmt in (
                ("keepalive", "keep-alive req/s", "{:,.0f}"),
                ("cpu", "CPU µs per keep-alive req", "{:.1f}"),
                ("newtls", "new TLS conn/s (wrk)", "{:,.0f}"),
                ("cpu_newtls", "CPU µs per new TLS conn", "{:.0f}"),
                ("full", "full handshakes/s (s_time)", "{:,.0f}"),
                ("cpu_full", "CPU µs per full handshake", "{:.0f}"),
            ):
                values = {k: per_round[figure][k][-1] for k in KINDS}
                print(f"    {label:28}" + "".join(
                    f"{LABELS[k]} {fmt.format(values[k])}   " for k in KINDS)
                    + f"edge/nginx {ratio(values, 'nginx'):.0%}, "
                    f"edge/HAProxy {ratio(values, 'haproxy'):.0%}", flush=True)  # fmt: skip
        for kind in KINDS:
            live[kind].stop()
        if args.held:
            hold_port = free_port()
            holder = subprocess.Popen(
                [sys.executable, __file__, "hold-backend", str(hold_port), str(s_cert), str(s_key)]
            )
            running.append(holder)
            wait_port(hold_port)
            print(f"memory per held Ping ({args.held} held, {args.clients} client processes)")
            for kind in KINDS:
                proxy = make(kind, hold_port)
                proxies.append(proxy)
                held[kind] = held_memory(proxy, args.held, args.clients, ca.cert_path, workdir)
                proxy.stop()
    finally:
        for proxy in proxies:
            proxy.stop()
        for proc in running:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(workdir, ignore_errors=True)
    report(args, per_round, held, resumption, load_at_start, noisy_rounds)
    print(
        f"floor: a bare uvloop TLS server (the edge's phone-side context, no HTTP, 1 process): "
        f"{median(floor_cpu):.0f} CPU µs per full handshake (median; rounds: "
        + ", ".join(f"{v:.0f}" for v in floor_cpu)
        + ")"
    )


def percents(values: list[float]) -> str:
    return ", ".join(f"{v:.0%}" for v in values)


def ratio(values: dict[str, float], peer: str) -> float:
    return values["edge"] / values[peer] if values[peer] else float("nan")


def report(
    args: argparse.Namespace,
    per_round: dict[str, dict[str, list[float]]],
    held: dict[str, float],
    resumption: dict[str, dict[str, int]],
    load_at_start: float,
    noisy_rounds: int,
) -> None:
    def round_ratios(figure: str, peer: str) -> list[float]:
        rows = zip(per_round[figure]["edge"], per_round[figure][peer], strict=True)
        return [edge / other for edge, other in rows if other]

    def faster_peer_ratios(figure: str) -> list[float]:
        rows = zip(*(per_round[figure][k] for k in KINDS), strict=True)
        return [edge / max(nginx, haproxy) for edge, nginx, haproxy in rows if max(nginx, haproxy)]

    print()
    print(f"medians of {args.rounds} interleaved rounds ({args.seconds} s each; the ratio columns: "
          "median of the per-round ratios)")  # fmt: skip
    print(f"{'':30}{'natsync edge':>14}{'nginx':>12}{'HAProxy':>12}{'edge/nginx':>12}"
          f"{'edge/HAProxy':>14}")  # fmt: skip
    for figure, label, fmt in (
        ("keepalive", "keep-alive req/s (64 conn)", "{:,.0f}"),
        ("cpu", "CPU µs per keep-alive req", "{:.1f}"),
        ("newtls", "new TLS conn/s (wrk, resumes)", "{:,.0f}"),
        ("cpu_newtls", "CPU µs per new TLS conn", "{:.0f}"),
        ("full", "full handshakes/s (s_time)", "{:,.0f}"),
        ("cpu_full", "CPU µs per full handshake", "{:.0f}"),
    ):
        meds = {k: median(per_round[figure][k]) for k in KINDS}
        print(f"{label:30}" + "".join(f"{fmt.format(meds[k]):>{12 if k != 'edge' else 14}}"
                                       for k in KINDS)
              + f"{median(round_ratios(figure, 'nginx')):>12.0%}"
              f"{median(round_ratios(figure, 'haproxy')):>14.0%}")  # fmt: skip
    if held:
        print(f"{'KB per held Ping (RSS)':30}{held['edge']:>14.1f}{held['nginx']:>12.1f}"
              f"{held['haproxy']:>12.1f}{held['edge'] / held['nginx']:>12.0%}"
              f"{held['edge'] / held['haproxy']:>14.0%}")  # fmt: skip
    for figure, label in (("keepalive", "keep-alive"), ("newtls", "new TLS (wrk)"),
                          ("full", "full handshakes")):  # fmt: skip
        print(
            f"per-round edge/nginx {label}: {percents(round_ratios(figure, 'nginx'))}; "
            f"edge/HAProxy: {percents(round_ratios(figure, 'haproxy'))}; "
            f"edge/faster peer: {percents(faster_peer_ratios(figure))}"
        )
    keep_nginx = median(round_ratios("keepalive", "nginx"))
    keep_haproxy = median(round_ratios("keepalive", "haproxy"))
    new = median(faster_peer_ratios("newtls"))
    full = median(faster_peer_ratios("full"))
    print(
        f"goal keep-alive >= 1.0x nginx and HAProxy: {keep_nginx:.2f}x / {keep_haproxy:.2f}x "
        f"{'met' if min(keep_nginx, keep_haproxy) >= 1.0 else 'NOT met'}; new TLS >= 0.8x the "
        f"faster peer: {new:.2f}x {'met' if new >= 0.8 else 'NOT met'} (full handshakes "
        f"{full:.2f}x)"
    )
    print("clients resuming: wrk offers its last session on each reconnect; resumed of "
          f"{PROBE_RECONNECTS} reconnects: " + "; ".join(
              f"{LABELS[k]} " + ", ".join(f"{v} {n}" for v, n in resumption[k].items())
              for k in KINDS))  # fmt: skip
    print(
        f"(workers: edge {args.workers}, nginx worker_processes {args.workers}, HAProxy "
        f"{haproxy_version()} nbthread {args.workers}; {os.cpu_count()} CPUs shared with wrk, "
        f"s_time, the backend and other work; load average at the start {load_at_start:.2f}"
        f"{' — NOISY' if load_at_start > NOISY_LOAD else ''}, now {os.getloadavg()[0]:.2f}; "
        f"{noisy_rounds} of {args.rounds} rounds with more than {NOISY_CORES} cores of other "
        "work)"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "bare-tls":
        bare_tls(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == "hold-backend":
        hold_backend(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == "hold-clients":
        syncs = int(sys.argv[6]) if len(sys.argv) > 6 else 0
        hold_clients(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5], syncs)
    elif len(sys.argv) > 1 and sys.argv[1] == "split":
        split(int(sys.argv[2]) if len(sys.argv) > 2 else 8)
    elif len(sys.argv) > 2 and sys.argv[1] == "compare":
        compare(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 6)
    elif len(sys.argv) > 1 and sys.argv[1] == "split-keepalive":
        baseline = sys.argv[sys.argv.index("--baseline") + 1] if "--baseline" in sys.argv else None
        rounds = int(sys.argv[sys.argv.index("--rounds") + 1]) if "--rounds" in sys.argv else 3
        seconds = int(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2].isdigit() else 8
        split(seconds, keepalive=True, baseline=baseline, rounds=rounds)
    elif len(sys.argv) > 1 and sys.argv[1] == "hot-path":
        logging.disable(logging.WARNING)  # the insecure-backend warning of the fake edge
        hot_path(int(sys.argv[2]) if len(sys.argv) > 2 else 50_000)
    else:
        main()
