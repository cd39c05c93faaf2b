"""What OpenSSL keeps per server TLS connection, as the server's front runs it (``ssl.SSLObject``
over two ``ssl.MemoryBIO``), idle and once held (natsync.server.front gives a parked request's
buffers back with natsync.edge.memory.release_buffers).

    .venv/bin/python bench/tls_memory_bench.py                 # 3,000 connections per case
    .venv/bin/python bench/tls_memory_bench.py --connections 1000

No sockets: per case, one process (a fresh interpreter, so that one case's freed memory does not
serve the next) makes ``--connections`` server connections under natsync's TLS policy
(natsync.cert.policy, a P-256 certificate) and, for each, a client over memory BIOs that does
the handshake and the exchanges of the case, then goes; the server ends are kept. Memory per
connection = (RSS after - RSS before) / N. The exchanges: "small" is a phone's Syncs then a
Ping (400 / 1,200, 400 / 300 bytes, then a 350-byte request that waits); "large" is one 200 KB
answer (a Sync window of mail) before the waiting request. Each case is measured as it is left
(idle) and with the buffers given back (held). Bounded: a few seconds per case.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import ssl
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

#: (request bytes, answer bytes) of each case's exchanges; the last request is the held one.
EXCHANGES = {
    "small": ((400, 1200), (400, 300), (350, 0)),
    "large": ((400, 200_000), (350, 0)),
}
#: Connections made before the measure starts (the allocator's and OpenSSL's first allocations).
WARM = 200


def rss() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _drain(source: ssl.MemoryBIO, sink: ssl.MemoryBIO) -> None:
    data = source.read()
    if data:
        sink.write(data)


def _read_all(end: ssl.SSLObject, buffer: bytearray) -> None:
    with contextlib.suppress(ssl.SSLWantReadError):
        while end.read(len(buffer), buffer):
            pass


def connection(
    server: ssl.SSLContext, client: ssl.SSLContext, case: str, held: bool
) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    """One server end after the case's exchanges (its client is gone)."""
    from natsync.edge.memory import release_buffers

    s_in, s_out, c_in, c_out = (ssl.MemoryBIO() for _ in range(4))
    s_end = server.wrap_bio(s_in, s_out, server_side=True)
    c_end = client.wrap_bio(c_in, c_out, server_hostname="localhost")
    for _ in range(10):
        for end in (c_end, s_end):
            with contextlib.suppress(ssl.SSLWantReadError):
                end.do_handshake()
        _drain(c_out, s_in)
        _drain(s_out, c_in)
    buffer = bytearray(64 * 1024)
    for request, answer in EXCHANGES[case]:
        c_end.write(b"q" * request)
        _drain(c_out, s_in)
        _read_all(s_end, buffer)
        if answer:
            s_end.write(b"a" * answer)
            _drain(s_out, c_in)
            _read_all(c_end, buffer)
    if held:
        release_buffers(s_end)
    return s_end, s_in, s_out


def measure(case: str, held: bool, count: int, cert: Path, key: Path) -> float:
    """Bytes of RSS per kept server connection."""
    from natsync.cert.policy import server_context

    server = server_context()
    server.load_cert_chain(str(cert), str(key))
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.load_verify_locations(str(cert))
    kept = [connection(server, client, case, held) for _ in range(WARM)]
    gc.collect()
    before = rss()
    kept += [connection(server, client, case, held) for _ in range(count)]
    gc.collect()
    return (rss() - before) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--case", help=argparse.SUPPRESS)  # one measurement (a child process)
    parser.add_argument("--held", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cert", help=argparse.SUPPRESS)
    parser.add_argument("--key", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:
        per = measure(args.case, args.held, args.connections, Path(args.cert), Path(args.key))
        print(json.dumps({"per": per}))
        return
    from push_bench import self_signed

    from natsync.edge.memory import available

    print(f"load average before: {os.getloadavg()}; {ssl.OPENSSL_VERSION}", flush=True)
    print(f"buffers can be given back here: {available()}")
    with tempfile.TemporaryDirectory(prefix="tls-memory-bench-") as work:
        cert, key = self_signed(Path(work))
        print("| exchanges | connections | KB per server connection, idle | held |")
        print("|---|---:|---:|---:|")
        for case in EXCHANGES:
            row = []
            for held in (False, True):
                argv = [sys.executable, __file__, "--case", case, "--cert", str(cert)]
                argv += ["--key", str(key), "--connections", str(args.connections)]
                out = subprocess.run(
                    argv + (["--held"] if held else []), capture_output=True, text=True,
                    check=True, timeout=600,
                )  # fmt: skip
                row.append(json.loads(out.stdout.splitlines()[-1])["per"] / 1000)
            print(f"| {case} | {args.connections:,} | {row[0]:.1f} | {row[1]:.1f} |", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
