"""Real servers for the DDNS tests: BIND 9 (named -g) and coturn's STUN, started by PID and
stopped by PID, optionally inside a network namespace."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

from natsync.ddns.update import DnsServer, TsigKey

ZONE = "example.test"
KEY_NAME = "natsync-ddns"
#: Names the key may update (the update-policy grants exactly these).
UPDATABLE = ("eas.example.test", "mail.example.test")
INITIAL_MAIL = "192.0.2.1"
#: How long a real server may take to start before the test fails.
START_TIMEOUT = 15.0

needs_named = shutil.which("named") is None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Stop a process we started, by its PID: TERM, then KILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


def key_file_text(name: str, secret: bytes) -> str:
    encoded = base64.b64encode(secret).decode()
    return f'key "{name}" {{\n\talgorithm hmac-sha256;\n\tsecret "{encoded}";\n}};\n'


@dataclass
class Named:
    host: str
    port: int
    directory: Path
    key: TsigKey
    key_file: Path
    proc: subprocess.Popen[bytes]
    netns: str | None = None

    def server(self, key: TsigKey | None = None, timeout: float = 2.0) -> DnsServer:
        return DnsServer(self.host, self.port, ZONE, key or self.key, timeout)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _wait_dns(
    host: str, port: int, proc: subprocess.Popen[bytes], netns: str | None, log: Path
) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"named exited: {log.read_text()[-2000:]}")
        if netns:
            done = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    netns,
                    "dig",
                    "+short",
                    "+norec",
                    "+time=1",
                    "+tries=1",
                    "-p",
                    str(port),
                    f"@{host}",
                    "SOA",
                    ZONE,
                ],
                capture_output=True,
                text=True,
                check=False,
            )
            if done.returncode == 0 and done.stdout.strip():
                return
        else:
            try:
                answer = dns.query.tcp(
                    dns.message.make_query(ZONE, "SOA"), host, port=port, timeout=1
                )
                if answer.rcode() == dns.rcode.NOERROR and answer.answer:
                    return
            except (OSError, dns.exception.DNSException):
                pass
        time.sleep(0.05)
    raise RuntimeError(f"named did not answer within {START_TIMEOUT} s: {log.read_text()[-2000:]}")


@contextmanager
def run_named(
    directory: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    netns: str | None = None,
    mx_target: str = "mail",
) -> Iterator[Named]:
    """BIND 9 in the foreground, primary for example.test, updates by TSIG for UPDATABLE."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    secret = os.urandom(32)
    key_file = directory / "ddns.key"
    key_file.write_text(key_file_text(KEY_NAME, secret))
    key_file.chmod(0o600)
    grants = "\n".join(f"    grant {KEY_NAME} name {n}. A AAAA;" for n in UPDATABLE)
    (directory / "named.conf").write_text(f"""
options {{
  directory "{directory}";
  pid-file "{directory}/named.pid";
  session-keyfile "{directory}/session.key";
  managed-keys-directory "{directory}";
  listen-on port {port} {{ {host}; }};
  listen-on-v6 {{ none; }};
  recursion no;
  allow-query {{ any; }};
  dnssec-validation no;
  notify no;
}};
controls {{ }};
include "{key_file}";
zone "{ZONE}" {{
  type primary;
  file "{directory}/{ZONE}.zone";
  update-policy {{
{grants}
  }};
}};
""")
    (directory / f"{ZONE}.zone").write_text(f"""$TTL 300
@ IN SOA ns1.{ZONE}. hostmaster.{ZONE}. 1 3600 600 86400 60
@ IN NS ns1.{ZONE}.
@ IN MX 10 {mx_target}.{ZONE}.
ns1 IN A 192.0.2.53
mail IN A {INITIAL_MAIL}
www IN A 192.0.2.80
""")
    log = directory / "named.log"
    prefix = ["ip", "netns", "exec", netns] if netns else []
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*prefix, "named", "-g", "-c", str(directory / "named.conf")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_dns(host, port, proc, netns, log)
        from natsync.ddns.update import parse_key

        yield Named(host, port, directory, parse_key(key_file.read_text()), key_file, proc, netns)
    finally:
        stop(proc)


def dig(named: Named, name: str, rdtype: str = "A") -> list[str]:
    """Ask the authoritative server with BIND's own dig: an independent confirmation."""
    prefix = ["ip", "netns", "exec", named.netns] if named.netns else []
    done = subprocess.run(
        [
            *prefix,
            "dig",
            "+noall",
            "+answer",
            "+norec",
            "+tcp",
            "-p",
            str(named.port),
            f"@{named.host}",
            name,
            rdtype,
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    )
    return [line for line in done.stdout.splitlines() if line.strip()]


def dig_values(named: Named, name: str, rdtype: str = "A") -> set[str]:
    return {line.split()[-1] for line in dig(named, name, rdtype)}


@contextmanager
def run_stun(
    directory: Path,
    host: str = "127.0.0.1",
    port: int = 3478,
    netns: str | None = None,
    host6: str | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """coturn as a plain STUN server (no TURN, no TLS), in the foreground."""
    directory.mkdir(parents=True, exist_ok=True)
    log = directory / "turnserver.log"
    prefix = ["ip", "netns", "exec", netns] if netns else []
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                *prefix,
                "turnserver",
                "-n",
                "--stun-only",
                "--no-cli",
                "--no-tls",
                "--no-dtls",
                "--listening-ip",
                host,
                *(["--listening-ip", host6] if host6 else []),
                "--listening-port",
                str(port),
                "--pidfile",
                str(directory / "turnserver.pid"),
                "--userdb",
                str(directory / "turndb"),
                "--log-file",
                "stdout",
                "--simple-log",
                "--no-stdout-log",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while b"Total General servers" not in log.read_bytes():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"turnserver did not start: {log.read_text()[-2000:]}")
            time.sleep(0.05)
        yield proc
    finally:
        stop(proc)
