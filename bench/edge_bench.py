#!/usr/bin/env python3
"""The natsync edge and nginx (with the config `natsync edge render nginx` writes), side by side,
in front of the same small TLS backends on loopback, in one run.

Figures (issue 5; CPU per request: issue 21):
  keep-alive req/s   wrk, 64 connections, GET on the published ActiveSync path, for --seconds;
                     backend: nginx answering 200 "ok" (so the backend is not the bottleneck);
                     --rounds rounds, edge and nginx taking turns (both running, the other
                     idle), so a change in the machine's load hits both; the median is kept
  CPU µs per req     user + system CPU time of the proxy's processes over each keep-alive
                     round / requests served; the median (it moves far less than req/s when
                     other work shares the machine)
  new TLS conn/s     wrk with "Connection: close": one phone-side TLS handshake per request
  KB per held Ping   --held TLS connections each holding a Ping (the backend never answers),
                     opened by --clients processes; (proxy RSS after - before) / held;
                     nginx: master + workers summed
Both proxies verify the backend (the edge by pin, nginx by CA file) and use TLS both ways.
Goals: keep-alive >= 80% of nginx; memory per held connection <= nginx.

Needs: nginx and wrk from Debian (`apt-get install nginx-light wrk`). The machine is shared:
run it more than once and read the ratios, not the absolute figures.

    python bench/edge_bench.py [--seconds 5] [--rounds 3] [--held 5000] [--clients 4]
                               [--nginx-workers auto]
    python bench/edge_bench.py hot-path [REQUESTS]   # the Python run alone: no TLS, no sockets
"""

from __future__ import annotations

import argparse
import asyncio
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
from dataclasses import replace
from pathlib import Path

from natsync.cert import init_ca
from natsync.edge.config import EdgeConfig, SiteCert
from natsync.edge.render import render_config, split_nginx
from natsync.edge.tls import fingerprint

NATSYNC = str(Path(sys.executable).with_name("natsync"))
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
WRK = shutil.which("wrk") or "/usr/bin/wrk"
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


def hold_clients(port: int, count: int, ca_file: str, ready_file: str) -> None:
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
    def __init__(self, config: EdgeConfig, workdir: Path, workers: int) -> None:
        self.name = f"natsync edge ({workers} workers)"
        cfg = workdir / "edge.toml"
        site = config.certificates[0]
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
[[edge.certificates]]
names = {list(site.names)!r}
cert = "{site.cert}"
key = "{site.key}"
""".replace("'", '"')
        )
        self.port = int(config.listen.rsplit(":", 1)[1])
        self.proc = subprocess.Popen(
            [NATSYNC, "edge", "run", "--config", str(cfg)],
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
        best = float("inf")
        for _ in range(5):
            started = time.process_time()
            for _ in range(requests):
                feed(client, HOT_REQUEST)
                feed(backend, HOT_RESPONSE)
            best = min(best, (time.process_time() - started) / requests)
        print(f"Python run per keep-alive request: {best * 1e6:.2f} µs (best of 5 x {requests})")
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3, help="keep-alive runs per proxy")
    parser.add_argument("--held", type=int, default=5000)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--nginx-workers", default="auto")
    parser.add_argument("--edge-workers", type=int, default=0, help="default: as nginx's")
    args = parser.parse_args()
    nginx_workers = os.cpu_count() or 1 if args.nginx_workers == "auto" else int(args.nginx_workers)
    edge_workers = args.edge_workers or nginx_workers
    for tool in (NGINX, WRK):
        if not Path(tool).exists():
            raise SystemExit(f"{tool} is missing: apt-get install nginx-light wrk")
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="edge-bench-"))
    ca = init_ca(workdir / "ca")
    s_cert, s_key = ca.issue_server_cert(["backend.internal"], ["127.0.0.1"], workdir, basename="s")
    e_cert, e_key = ca.issue_server_cert(
        ["mail.example.test"], ["127.0.0.1"], workdir, basename="e"
    )
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    leaf = x509.load_pem_x509_certificates(s_cert.read_bytes())[0]
    pin = fingerprint(leaf.public_bytes(Encoding.DER))
    running: list[subprocess.Popen[bytes]] = []
    proxies: list[Proxy] = []
    results: dict[str, dict[str, float]] = {}
    try:
        backend, backend_port = backend_nginx(workdir, s_cert, s_key)
        running.append(backend)
        base = EdgeConfig(
            certificates=(SiteCert(("mail.example.test",), e_cert, e_key),),
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
                return EdgeProxy(replace(config, backend_ca=None), workdir, edge_workers)
            return NginxProxy(config, workdir, args.nginx_workers)

        print(f"throughput (wrk -t2, {args.seconds} s each; backend: nginx, TLS)", flush=True)
        both = [make(kind, backend_port) for kind in ("edge", "nginx")]
        proxies.extend(both)
        rounds: dict[str, list[float]] = {proxy.name: [] for proxy in both}
        #: CPU µs of the proxy's processes per keep-alive request, per round: unlike req/s, it
        #: hardly moves when other work shares the CPUs.
        cpu: dict[str, list[float]] = {proxy.name: [] for proxy in both}
        for proxy in both:
            wrk(proxy.port, 1, 64, close=False)  # warm-up
        for round_number in range(1, args.rounds + 1):
            for proxy in both:
                pids = proxy.pids()
                used = cpu_seconds(pids)
                keep, served = wrk_run(proxy.port, args.seconds, 64, close=False)
                per = (cpu_seconds(pids) - used) * 1e6 / max(1, served)
                rounds[proxy.name].append(keep)
                cpu[proxy.name].append(per)
                print(f"    round {round_number}: {proxy.name}: {keep:,.0f} req/s keep-alive, "
                      f"{per:.1f} CPU µs per request", flush=True)  # fmt: skip
        for proxy in both:
            new = wrk(proxy.port, args.seconds, 16, close=True)
            keep = statistics.median(rounds[proxy.name])
            per = statistics.median(cpu[proxy.name])
            results[proxy.name] = {"keepalive": keep, "newtls": new, "cpu": per}
            print(
                f"    {proxy.name}: {keep:,.0f} req/s keep-alive (median), {per:.1f} CPU µs per "
                f"request (median), {new:,.0f} new TLS/s",
                flush=True,
            )
            proxy.stop()
        ratios = [e / n for e, n in zip(*rounds.values(), strict=True) if n]
        print("    keep-alive edge/nginx per round: " + ", ".join(f"{r:.0%}" for r in ratios))
        hold_port = free_port()
        holder = subprocess.Popen(
            [sys.executable, __file__, "hold-backend", str(hold_port), str(s_cert), str(s_key)]
        )
        running.append(holder)
        wait_port(hold_port)
        print(f"memory per held Ping ({args.held} held, {args.clients} client processes)")
        for kind in ("edge", "nginx"):
            proxy = make(kind, hold_port)
            proxies.append(proxy)
            per = held_memory(proxy, args.held, args.clients, ca.cert_path, workdir)
            results[proxy.name]["kb_per_held"] = per
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
    edge, nginx = (
        results[f"natsync edge ({edge_workers} workers)"],
        results[f"nginx ({args.nginx_workers} workers)"],
    )
    print()
    print(f"{'':28}{'natsync edge':>14}{'nginx':>14}{'edge/nginx':>12}")
    rows = [
        ("keep-alive req/s (64 conn)", "keepalive", "{:,.0f}"),
        ("CPU µs per keep-alive req", "cpu", "{:.1f}"),
        ("new TLS connections/s", "newtls", "{:,.0f}"),
        ("KB per held Ping", "kb_per_held", "{:.1f}"),
    ]
    for label, key, fmt in rows:
        ratio = edge[key] / nginx[key] if nginx.get(key) else float("nan")
        print(f"{label:28}{fmt.format(edge[key]):>14}{fmt.format(nginx[key]):>14}{ratio:>11.0%}")
    print(
        f"(nginx: worker_processes {args.nginx_workers}; edge: {edge_workers} process(es) on "
        f"uvloop; {os.cpu_count()} CPUs shared with wrk, the backend and other work; load "
        f"average now {os.getloadavg()[0]:.1f} — above ~1 the figures are noisy, read the ratios)"
    )


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "hold-backend":
        hold_backend(int(sys.argv[2]), sys.argv[3], sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == "hold-clients":
        hold_clients(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])
    elif len(sys.argv) > 1 and sys.argv[1] == "hot-path":
        logging.disable(logging.WARNING)  # the insecure-backend warning of the fake edge
        hot_path(int(sys.argv[2]) if len(sys.argv) > 2 else 50_000)
    else:
        main()
