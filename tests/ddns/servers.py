"""Real servers for the DDNS tests: BIND 9 (named -g) and coturn's STUN, started by PID and
stopped by PID, optionally inside a network namespace."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from natsync.ddns.update import DnsServer, TsigKey
from natsync.lab.services import (
    key_file_text,
    named_argv,
    named_conf,
    stop,
    stun_argv,
    wait_dns,
    wait_log,
    zone_text,
)

ZONE = "example.test"
KEY_NAME = "natsync-ddns"
#: Names the key may update (the update-policy grants exactly these).
UPDATABLE = ("eas.example.test", "mail.example.test")
INITIAL_MAIL = "192.0.2.1"
#: The DNS-01 owner the TXT tests write (granted TXT by the ``named_txt`` fixture).
ACME_OWNER = "_acme-challenge.eas.example.test"

needs_named = shutil.which("named") is None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Named:
    host: str
    port: int
    directory: Path
    key: TsigKey
    key_file: Path
    proc: subprocess.Popen[bytes]
    netns: str | None = None
    zone: str = ZONE

    def server(self, key: TsigKey | None = None, timeout: float = 2.0) -> DnsServer:
        return DnsServer(self.host, self.port, self.zone, key or self.key, timeout)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _wait_dns(
    host: str, port: int, proc: subprocess.Popen[bytes], netns: str | None, log: Path
) -> None:
    """Until the example.test SOA answers (the doctor's BIND tests start their own named)."""
    wait_dns(host, port, ZONE, proc, log, netns)


@contextmanager
def run_named(
    directory: Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    netns: str | None = None,
    mx_target: str = "mail",
    *,
    zone: str = ZONE,
    updatable: tuple[str, ...] = UPDATABLE,
    txt: bool = False,
    ns_address: str = "192.0.2.53",
) -> Iterator[Named]:
    """BIND 9 in the foreground, primary for *zone* (example.test), updates by TSIG for
    *updatable* (A and AAAA, and TXT with *txt*); ns1's address is *ns_address*."""
    directory.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    secret = os.urandom(32)
    key_file = directory / "ddns.key"
    key_file.write_text(key_file_text(KEY_NAME, secret))
    key_file.chmod(0o600)
    conf = named_conf(directory, host, port, zone, KEY_NAME, updatable)
    if txt:
        conf = conf.replace(". A AAAA;", ". A AAAA TXT;")
    (directory / "named.conf").write_text(conf)
    (directory / f"{zone}.zone").write_text(
        zone_text(
            zone,
            [
                f"@ IN MX 10 {mx_target}.{zone}.",
                f"ns1 IN A {ns_address}",
                f"mail IN A {INITIAL_MAIL}",
                "www IN A 192.0.2.80",
            ],
        )
    )
    log = directory / "named.log"
    prefix = ["ip", "netns", "exec", netns] if netns else []
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*prefix, *named_argv(directory)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        wait_dns(host, port, zone, proc, log, netns)
        from natsync.ddns.update import parse_key

        key = parse_key(key_file.read_text())
        yield Named(host, port, directory, key, key_file, proc, netns, zone)
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
            [*prefix, *stun_argv(directory, host, port, host6)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_log(proc, log, b"Total General servers", "turnserver")
        yield proc
    finally:
        stop(proc)


class Echo:
    """The address an echo service started by :func:`run_echo` answers (tests change it)."""

    address = "192.0.3.10"


@contextmanager
def run_echo() -> Iterator[str]:
    """An address echo service on loopback (answers with whatever Echo.address says)."""
    from tests.ddns.fake_http import Reply, Request, serve

    class Service:
        def __init__(self) -> None:
            self.requests: list[Request] = []

        def handle(self, request: Request) -> Reply:
            return Reply(200, Echo.address)

    Echo.address = "192.0.3.10"
    with serve(Service()) as running:
        yield running.url + "/"
