"""The relay path next to the direct one: held Pings and push through `natsync relay`.

    sudo .venv/bin/python bench/relay_bench.py                    # 1,000 held Pings per path
    sudo .venv/bin/python bench/relay_bench.py --devices 2000 --messages 300

Needs root (network namespaces, wireguard-go). Everything runs on this machine in two network
namespaces the bench makes and removes (never bridged to the host, no route out) and stops by
itself (``--time-limit``, default 600 s; every child is stopped by its PID):

* **home**: the natsync server (bench/push_bench.py's server role: TLS, SMTP in, one SQLite
  store of ``--devices`` users), `natsync edge run` in front of it (TLS to phones, the server
  pinned; its ordinary listener on 127.0.0.1 and its relayed listener on the tunnel address),
  and `natsync relay dial` (the home's end of the WireGuard tunnel, Debian's wireguard-go);
* **vps**: `natsync relay run` (the tunnel's other end, forwarding TCP 443 through it with a
  PROXY v2 header per connection).

Two rounds, the same phones (push_bench's lean client: raw HTTP/1.1 over TLS, Sync twice, then a
held Ping): **direct** — the phones in *home* dial the edge's ordinary listener; **relay** — the
phones in *vps* dial the relay's public address, and every byte crosses the tunnel. Per round:
memory per held Ping of the edge (RSS and PSS deltas / N) and of the relay process; push latency
from the end of DATA (the sender's clock) to the Ping answer at the phone (CLOCK_MONOTONIC is one
clock for every namespace), p50 / p99 / max; every mail must arrive exactly once.
Setup shortcuts, said out loud: users are written straight into the store with a cheap scrypt
hash (ln=4), ``require_provisioning`` is off; the relay's per-address limit is lifted (every
bench phone comes from one address).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import tomlkit

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "bench"))

import push_bench  # noqa: E402  (bench/ is not a package)
from push_bench import DOMAIN, Child, Events, Smtp, pct  # noqa: E402

VPS_ADDRESS, HOME_ADDRESS = "203.0.113.10", "203.0.113.20"
#: The tunnel's ends and the edge's relayed port, as `natsync relay init` writes them.
TUNNEL_VPS, TUNNEL_HOME, RELAYED_PORT = "10.77.0.1", "10.77.0.2", 8443
#: Seconds to bring every phone of a round to a held Ping.
SETUP_TIMEOUT = 300.0
#: Seconds a process may take to come up (the server's ports, the tunnel, a listener).
START_TIMEOUT = 30.0
#: The edge's per-address limits: every bench phone comes from one address.
PER_IP = 1_000_000
#: Seconds to let the setup burst settle before memory is read (allocator, GC).
SETTLE = 3.0
_EDGE_BANNER = re.compile(r"listening on https://[^:/\s]+:(\d+)")


def natsync_argv(*args: str) -> list[str]:
    launcher = f"import sys; sys.path.insert(0, {str(ROOT / 'src')!r}); " + (
        "from natsync.cli import main; main()"
    )
    return [sys.executable, "-c", launcher, *args]


def pss(pid: int) -> int:
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    return 0


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * push_bench.PAGE


def in_ns(ns: str, argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_for(what: str, check: Any, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not come up: {log.read_text(errors='replace')[-800:]}")
        time.sleep(0.05)


def listening(ns: str | None, port: int) -> bool:
    prefix = ["ip", "netns", "exec", ns] if ns else []
    done = subprocess.run(
        [*prefix, "ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=False
    )
    return "LISTEN" in done.stdout


def start_dial(work: Path) -> subprocess.Popen[bytes]:
    """`natsync relay dial` here (the home); returns once the tunnel address is up."""
    log = work / "dial.log"
    with log.open("ab") as out:
        dial = subprocess.Popen(
            natsync_argv("relay", "dial", "-c", str(work / "home" / "home.toml")),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def tunnel_up() -> bool:
        shown = subprocess.run(["ip", "-4", "addr"], capture_output=True, text=True, check=False)
        return TUNNEL_HOME in shown.stdout

    wait_for("the home's tunnel", tunnel_up, dial, log)
    return dial


def start_relay(work: Path, vps_ns: str) -> subprocess.Popen[bytes]:
    log = work / "relay.log"
    relay = in_ns(vps_ns, natsync_argv("relay", "run", "-c", str(work / "relay" / "relay.toml")),
                  log)  # fmt: skip
    wait_for("the relay", lambda: listening(vps_ns, 443), relay, log)
    return relay


def start_edge(work: Path, cert: Path, key: Path, server_port: int) -> tuple[Any, int]:
    """`natsync edge run` here: the server pinned, its ordinary listener on loopback and its
    relayed listener on the tunnel address. (The process, its ordinary port.)"""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    from natsync.edge.tls import fingerprint

    leaf = x509.load_pem_x509_certificate(cert.read_bytes())
    settings = {
        "listen": "127.0.0.1:0",
        "relayed_listen": f"{TUNNEL_HOME}:{RELAYED_PORT}",
        "relayed_from": [TUNNEL_VPS],
        "backend": f"127.0.0.1:{server_port}",
        "backend_name": "localhost",
        "backend_pin": fingerprint(leaf.public_bytes(Encoding.DER)),
        "admin_listen": "",
        "access_log": "off",
        "forwards": [],
        "max_connections_per_ip": PER_IP,
        "requests_per_second_per_ip": PER_IP,
        "request_burst_per_ip": PER_IP,
        "certificates": [{"names": ["localhost"], "cert": str(cert), "key": str(key)}],
    }
    (work / "edge.toml").write_text(tomlkit.dumps({"edge": settings}))
    log = work / "edge.log"
    log.write_bytes(b"")
    with log.open("ab") as out:
        edge = subprocess.Popen(
            natsync_argv("edge", "run", "--config", str(work / "edge.toml")),
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    wait_for("the edge", lambda: _EDGE_BANNER.search(log.read_text()) is not None, edge, log)
    found = _EDGE_BANNER.search(log.read_text())
    assert found is not None
    wait_for("the relayed listener", lambda: listening(None, RELAYED_PORT), edge, log)
    return edge, int(found.group(1))


# --------------------------------------------------------------------------- the driver


async def round_(
    args: argparse.Namespace,
    name: str,
    where: tuple[str | None, str, int],
    server: Child,
    smtp_port: int,
    measured: dict[str, int],
    inbox: str,
    cert: Path,
) -> dict[str, Any]:
    """One path: N phones to a held Ping, dialling (namespace, host, port) *where*; memory of
    the *measured* processes and push."""
    ns, host, port = where
    n = args.devices
    before = {what: (rss(pid), pss(pid)) for what, pid in measured.items()}
    prefix = ["ip", "netns", "exec", ns] if ns else []
    procs = max(2, -(-n // push_bench.DEVICES_PER_PROC))
    share = -(-n // procs)
    children: list[Child] = []
    events = Events()
    try:
        for p in range(procs):
            first, count = p * share, min(share, n - p * share)
            if count <= 0:
                break
            proc = await asyncio.create_subprocess_exec(
                *prefix, sys.executable, str(ROOT / "bench" / "push_bench.py"),
                "--role", "client", "--host", host, "--port", str(port), "--cert", str(cert),
                "--inbox", inbox, "--first", str(first), "--count", str(count),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 20,
            )  # fmt: skip
            children.append(Child(proc))
        listeners = [asyncio.ensure_future(events.listen(c)) for c in children]
        started = time.monotonic()
        while (await server.ask("stat"))["waiting"] < n:
            if events.errors:
                raise RuntimeError(f"{len(events.errors)} device errors: {events.errors[0]}")
            if time.monotonic() - started > SETUP_TIMEOUT:
                raise RuntimeError(f"{name}: not all {n} phones held a Ping in time")
            await asyncio.sleep(0.5)
        setup_s = time.monotonic() - started
        await asyncio.sleep(SETTLE)
        held = {what: (rss(pid), pss(pid)) for what, pid in measured.items()}
        rng = random.Random(n)
        sent: dict[str, tuple[int, float]] = {}
        busy: set[int] = set()
        smtp = await Smtp.connect(smtp_port)
        t1 = time.monotonic()
        try:
            for k in range(args.messages):
                delay = t1 + k / args.rate - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                busy -= {u for s, (u, _) in sent.items() if s in events.arrivals}
                user = rng.choice([u for u in range(n) if u not in busy][:1000])
                subject = f"{name}-{k}"
                message = (
                    f"From: sender@elsewhere.test\r\nTo: u{user}@{DOMAIN}\r\n"
                    f"Subject: {subject}\r\nMessage-ID: <{subject}@bench>\r\n\r\nhello\r\n"
                )
                t_data, _ = await smtp.send(f"u{user}@{DOMAIN}", message)
                sent[subject] = (user, t_data)
                busy.add(user)
        finally:
            await smtp.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(s in events.arrivals for s in sent):  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await asyncio.sleep(0.5)
        latencies = [
            (events.arrivals[s][0] - t) * 1000 for s, (_, t) in sent.items() if s in events.arrivals
        ]
        for listener in listeners:
            listener.cancel()
        per_ping = {
            what: ((held[what][0] - before[what][0]) / n, (held[what][1] - before[what][1]) / n)
            for what in measured
        }
        return {
            "path": name,
            "n": n,
            "setup_s": setup_s,
            "per_ping": per_ping,
            "p50": statistics.median(latencies) if latencies else float("nan"),
            "p99": pct(latencies, 99) if latencies else float("nan"),
            "max": max(latencies) if latencies else float("nan"),
            "sent": len(sent),
            "once": sum(1 for s in sent if len(events.arrivals.get(s, ())) == 1),
            "dup": sum(1 for s in sent if len(events.arrivals.get(s, ())) > 1),
            "missing": sum(1 for s in sent if s not in events.arrivals),
        }
    finally:
        for child in children:
            await child.stop()


async def driver(args: argparse.Namespace) -> None:
    """Inside the home namespace: start everything, run both rounds, print the table."""

    from natsync.relay.service import initial_configuration
    from natsync.relay.wireguard import write_private_key

    push_bench.raise_nofile()
    work = Path(args.work)
    cert, key = push_bench.self_signed(work)
    inbox = push_bench.make_store(work / "store.db", args.devices)
    tag = args.tag
    init = initial_configuration(
        VPS_ADDRESS, tunnel_port=51820, relay_interface=f"nbr{tag}", home_interface=f"nbh{tag}"
    )
    (work / "relay").mkdir()
    (work / "home").mkdir()
    write_private_key(work / "relay" / "relay.key", init.relay_private_key)
    write_private_key(work / "home" / "tunnel.key", init.home_private_key)
    relay_toml = init.relay_toml.replace("max_connections_per_address = 20",
                                         f"max_connections_per_address = {PER_IP}")  # fmt: skip
    (work / "relay" / "relay.toml").write_text(relay_toml)
    (work / "home" / "home.toml").write_text(init.home_toml)
    processes: list[subprocess.Popen[bytes]] = []
    server_proc = await asyncio.create_subprocess_exec(
        sys.executable, str(ROOT / "bench" / "push_bench.py"), "--role", "server",
        "--db", str(work / "store.db"), "--cert", str(cert), "--key", str(key),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 20,
    )  # fmt: skip
    server = Child(server_proc)
    try:
        ports = await asyncio.wait_for(server.line(), START_TIMEOUT)
        processes.append(start_dial(work))
        relay = start_relay(work, args.vps_ns)
        processes.append(relay)
        rows = []
        load_before = os.getloadavg()
        for name in ("direct", "relay"):
            # a fresh edge per path: memory freed by the last round would be reused unseen
            edge, edge_port = start_edge(work, cert, key, ports["https"])
            try:
                if name == "direct":
                    where, measured = (None, "127.0.0.1", edge_port), {"edge": edge.pid}
                else:
                    where = (args.vps_ns, VPS_ADDRESS, 443)
                    measured = {"edge": edge.pid, "relay": relay.pid}
                row = await round_(args, name, where, server, ports["smtp"], measured, inbox, cert)
            finally:
                stop(edge)
            rows.append(row)
            print(f"{name}: {args.devices} held, setup {row['setup_s']:.1f} s", flush=True)
        load_after = os.getloadavg()
    finally:
        for proc in reversed(processes):
            stop(proc)
        await server.stop()
    print()
    print(f"command: sudo .venv/bin/python bench/relay_bench.py {args.shown}".rstrip())
    print(
        f"{os.cpu_count()} CPU(s); load average before {load_before[0]:.2f}, after "
        f"{load_after[0]:.2f} (1 min){' - noisy' if max(load_before[0], load_after[0]) > 1 else ''}"
    )
    print(
        f"TLS 1.3 phone-to-edge, edge-to-server pinned; {args.messages} mails at {args.rate}/s "
        "per path; push latency from the end of DATA to the Ping answer at the phone"
    )
    print(
        "| path | held Pings | edge KB per held Ping (RSS / PSS) | relay KB per held Ping "
        "(RSS / PSS) | push p50 / p99 / max ms | arrived once | dup | missing |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        edge_kb = r["per_ping"]["edge"]
        relay_kb = r["per_ping"].get("relay")
        relay_text = f"{relay_kb[0] / 1024:.1f} / {relay_kb[1] / 1024:.1f}" if relay_kb else "–"
        print(
            f"| {r['path']} | {r['n']:,} | {edge_kb[0] / 1024:.1f} / {edge_kb[1] / 1024:.1f} "
            f"| {relay_text} | {r['p50']:.1f} / {r['p99']:.1f} / {r['max']:.1f} "
            f"| {r['once']}/{r['sent']} | {r['dup']} | {r['missing']} |"
        )


def bench(args: argparse.Namespace) -> None:
    """On the host: the two namespaces and their link, then the driver inside *home*."""
    if os.geteuid() != 0:
        raise SystemExit("the relay bench needs root (network namespaces, wireguard-go)")
    missing = [tool for tool in ("ip", "ss", "wireguard-go", "wg") if shutil.which(tool) is None]
    if missing:
        raise SystemExit(f"missing {', '.join(missing)}: apt-get install wireguard-go "
                         "wireguard-tools iproute2")  # fmt: skip
    tag = uuid.uuid4().hex[:4]
    home, vps = f"nsrb-{tag}-home", f"nsrb-{tag}-vps"
    work = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    try:
        for ns in (home, vps):
            subprocess.run(["ip", "netns", "add", ns], check=True)
            subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True)
        for command in (
            ["ip", "link", "add", f"rbv{tag}", "netns", vps, "type", "veth",
             "peer", "name", f"rbh{tag}", "netns", home],
            ["ip", "-n", vps, "addr", "add", f"{VPS_ADDRESS}/24", "dev", f"rbv{tag}"],
            ["ip", "-n", home, "addr", "add", f"{HOME_ADDRESS}/24", "dev", f"rbh{tag}"],
            ["ip", "-n", vps, "link", "set", f"rbv{tag}", "up"],
            ["ip", "-n", home, "link", "set", f"rbh{tag}", "up"],
        ):  # fmt: skip
            subprocess.run(command, check=True)
        subprocess.run(
            ["ip", "netns", "exec", home, sys.executable, __file__, "--role", "driver",
             "--vps-ns", vps, "--tag", tag, "--work", str(work), f"--devices={args.devices}",
             f"--messages={args.messages}", f"--rate={args.rate}",
             f"--time-limit={args.time_limit}", f"--shown={' '.join(sys.argv[1:])}"],
            check=False, timeout=args.time_limit,
        )  # fmt: skip
    finally:
        for ns in (home, vps):
            subprocess.run(["ip", "netns", "del", ns], check=False)
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--devices", type=int, default=1000, help="held Pings per path")
    parser.add_argument("--messages", type=int, default=200, help="push mails per path")
    parser.add_argument("--rate", type=float, default=50.0, help="mails per second")
    parser.add_argument("--time-limit", type=float, default=600.0)
    parser.add_argument("--role", default="bench", choices=["bench", "driver"])
    for name in ("--vps-ns", "--tag", "--work", "--shown"):
        parser.add_argument(name, default="")
    args = parser.parse_args()
    if args.role == "driver":
        push_bench.run(asyncio.wait_for(driver(args), args.time_limit))
    else:
        bench(args)


if __name__ == "__main__":
    main()
