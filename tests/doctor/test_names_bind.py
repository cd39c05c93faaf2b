"""Stale DNS for real: BIND as the zone's primary and a second BIND as the phone's caching
resolver (forwarding to it). The resolver caches the old address; natsync.ddns moves the
record on the primary; the doctor sees the resolver lag behind the authoritative server."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.resolver
import pytest

from natsync.ddns.update import publish_once
from natsync.doctor import Check, Options, Severity, diagnose
from tests.ddns.servers import Named, free_port, run_named, stop
from tests.doctor.conftest import TEST_TIMEOUT

pytestmark = pytest.mark.skipif(
    shutil.which("named") is None, reason="BIND 9 (named) is not installed: make apt-test"
)

NAME = "eas.example.test"
#: Loopback addresses stand for the old and the new public address (traffic stays local).
OLD, NEW = "127.0.0.2", "127.0.0.1"
LONG_TTL = 3600


@contextmanager
def run_resolver(directory: Path, primary: Named | int) -> Iterator[str]:
    """A caching BIND that forwards everything to *primary* (a Named, or a port on
    127.0.0.1): the phone's resolver."""
    host, upstream = (
        ("127.0.0.1", primary) if isinstance(primary, int) else (primary.host, primary.port)
    )
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (directory / "named.conf").write_text(f"""
options {{
  directory "{directory}";
  pid-file "{directory}/named.pid";
  session-keyfile "{directory}/session.key";
  managed-keys-directory "{directory}";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion yes;
  allow-recursion {{ 127.0.0.1; }};
  forwarders {{ {host} port {upstream}; }};
  forward only;
  dnssec-validation no;
}};
controls {{ }};
""")
    log = directory / "named.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["named", "-g", "-c", str(directory / "named.conf")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        from tests.ddns.servers import _wait_dns

        _wait_dns("127.0.0.1", port, proc, None, log)
        yield f"127.0.0.1:{port}"
    finally:
        stop(proc)


def ask(resolver: str, name: str) -> list[str]:
    host, _, port = resolver.partition(":")
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = [host]
    res.port = int(port)
    res.lifetime = 3
    return [r.to_text() for r in res.resolve(name, "A")]


def test_stale_record_in_the_phones_resolver(tmp_path: Path) -> None:
    with (
        run_named(tmp_path / "primary") as primary,
        run_resolver(tmp_path / "resolver", primary) as resolver,
    ):
        publish_once(primary.server(), NAME, "A", OLD, LONG_TTL)
        assert ask(resolver, NAME) == [OLD]  # the phone's resolver caches the old address
        publish_once(primary.server(), NAME, "A", NEW, LONG_TTL)  # the ISP changed it
        options = Options(
            url=f"https://{NAME}",
            resolver=resolver,
            authoritative=(primary.address,),
            heartbeat=0,
            timeout=TEST_TIMEOUT,
        )
        import asyncio

        report = asyncio.run(diagnose(options))
    names = [f for f in report.findings if f.check == Check.NAMES]
    stale = next(f for f in names if f.title.startswith("Stale DNS"))
    assert stale.severity == Severity.FAIL
    assert stale.title == f"Stale DNS: the phone's resolver still hands out {OLD}"
    assert f"The zone now says {NEW}" in stale.cause
    assert "cached before the address changed" in stale.cause
    assert any(
        e.startswith(f"the resolver {resolver} (what the phone asks) answers {OLD}")
        for e in stale.evidence
    )
    assert f"authoritative {primary.address} answers {NEW}" in stale.evidence
    assert "[ddns] ttl = 60" in stale.fix
    ttl = next(f for f in names if f.title.startswith("TTL "))
    assert ttl.severity == Severity.WARN
    assert ttl.title == f"TTL {LONG_TTL} s is too long for an address that can change"
    # The old address is loopback with nothing listening: the phone cannot connect either.
    reach = next(f for f in report.findings if f.check == Check.REACH)
    assert reach.severity == Severity.FAIL
    assert f"{OLD} port 443: refused" in reach.evidence[0]


def test_fresh_record_agrees(tmp_path: Path) -> None:
    with (
        run_named(tmp_path / "primary") as primary,
        run_resolver(tmp_path / "resolver", primary) as resolver,
    ):
        publish_once(primary.server(), NAME, "A", NEW, 60)
        # The MX target must be on loopback too: the doctor connects to its port 25.
        publish_once(primary.server(), "mail.example.test", "A", NEW, 60)
        options = Options(
            url=f"https://{NAME}:{free_port()}",
            resolver=resolver,
            authoritative=(primary.address,),
            email="alice@example.test",
            heartbeat=0,
            timeout=TEST_TIMEOUT,
        )
        import asyncio

        report = asyncio.run(diagnose(options))
    names = {f.title: f for f in report.findings if f.check == Check.NAMES}
    assert f"{NAME}: the resolver agrees with the authoritative servers" in names
    assert "TTL 60 s suits an address that can change" in names
    # The zone's MX names mail.example.test, which has an address in the zone file.
    assert names["MX of example.test resolves"].severity == Severity.OK
    smtp = next(f for f in report.findings if f.title.startswith("SMTP port 25"))
    assert smtp.severity == Severity.WARN  # nothing listens on 127.0.0.1:25 here
    assert "natsync portmap add 25/tcp" in smtp.fix


@contextmanager
def run_zone(directory: Path, records: str) -> Iterator[int]:
    """A BIND primary for example.test on 127.0.0.1 whose NS record names 127.0.0.1 itself,
    so the doctor can find the zone's servers through the resolver as it does on the internet."""
    directory.mkdir(parents=True, exist_ok=True)
    port = free_port()
    (directory / "named.conf").write_text(f"""
options {{
  directory "{directory}";
  pid-file "{directory}/named.pid";
  session-keyfile "{directory}/session.key";
  managed-keys-directory "{directory}";
  listen-on port {port} {{ 127.0.0.1; }};
  listen-on-v6 {{ none; }};
  recursion no;
  dnssec-validation no;
  notify no;
}};
controls {{ }};
zone "example.test" {{ type primary; file "{directory}/zone"; }};
""")
    (directory / "zone").write_text(f"""$TTL 60
@ IN SOA ns1.example.test. hostmaster.example.test. 1 3600 600 86400 60
@ IN NS ns1.example.test.
ns1 IN A 127.0.0.1
{records}
""")
    log = directory / "named.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            ["named", "-g", "-c", str(directory / "named.conf")],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        from tests.ddns.servers import _wait_dns

        _wait_dns("127.0.0.1", port, proc, None, log)
        yield port
    finally:
        stop(proc)


def test_authoritative_servers_found_through_ns_records(tmp_path: Path) -> None:
    import asyncio

    with (
        run_zone(tmp_path / "zone", f"eas IN A {NEW}") as port,
        run_resolver(tmp_path / "resolver", port) as resolver,
    ):
        options = Options(
            url=f"https://{NAME}:{free_port()}",
            resolver=resolver,
            heartbeat=0,
            timeout=TEST_TIMEOUT,
            ns_port=port,
        )
        report = asyncio.run(diagnose(options))
    agree = next(
        f for f in report.findings if f.title.endswith("agrees with the authoritative servers")
    )
    assert f"authoritative ns1.example.test (127.0.0.1:{port}) answers {NEW}" in agree.evidence
    assert "TTL 60 s suits an address that can change" in {f.title for f in report.findings}


def test_printed_ddns_update_works_as_printed(tmp_path: Path) -> None:
    """Inside-out, the address moved (the echo source sees a new one, the zone says OLD): the doctor
    prints `natsync ddns update --config <the user's file>`; run as printed, it publishes NEW,
    and the doctor run again finds DNS on the current public address."""
    import asyncio
    import shlex
    import sys

    from natsync.doctor.gather import gather_names_sync, parse_target
    from natsync.doctor.names import check_names
    from tests.doctor.test_inside import commands, echo_server

    #: The new public address as the echo source reports it (never connected to: the first
    #: run connects to the old, loopback address DNS still names).
    PUBLIC = "93.184.216.34"

    with run_named(tmp_path / "primary") as primary, echo_server(PUBLIC) as echo:
        publish_once(primary.server(), NAME, "A", OLD, 60)
        config = tmp_path / "my home.toml"
        config.write_text(f"""
[ddns]
server = "{primary.address}"
zone = "example.test"
names = ["{NAME}"]
key_file = "{primary.key_file}"
sources = ["echo"]
families = [4]
echo_urls = ["{echo}"]
timeout = 1.0
""")
        options = Options(
            url=f"https://{NAME}:{free_port()}",
            resolver=primary.address,
            authoritative=(primary.address,),
            heartbeat=0,
            timeout=TEST_TIMEOUT,
            config=config,
        )
        report = asyncio.run(diagnose(options))
        moved = next(f for f in report.findings if f.title.startswith("DNS does not point"))
        assert moved.title == f"DNS does not point at the current public address {PUBLIC}"
        update = next(c for c in commands([moved]) if c.startswith("natsync ddns update"))
        assert update == f"natsync ddns update --config {shlex.quote(str(config))}"
        done = subprocess.run(
            [sys.executable, "-c", "from natsync.cli import main; main()",
             *shlex.split(update)[1:]],
            capture_output=True, text=True, timeout=60, check=False, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        assert ask(primary.address, NAME) == [PUBLIC]
        # the names check again (not the whole run: it would connect to the public address)
        names = check_names(
            gather_names_sync(
                parse_target(options.url),
                resolver=primary.address,
                authoritative=(primary.address,),
                public=(PUBLIC,),
                timeout=TEST_TIMEOUT,
            )
        )
    assert not any(f.severity == Severity.FAIL for f in names), names
