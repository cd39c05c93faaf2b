"""Inside-out: the deployment's config adds the edge's pinned backend against the real server."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import click
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from natsync.doctor import Check, Finding, Options, Report, Severity, diagnose
from natsync.doctor.evidence import Connect, MappingEvidence, NatEvidence
from natsync.doctor.gather import fingerprint
from natsync.doctor.inside import check_mappings
from natsync.store.api import Store
from tests.doctor.conftest import DOCTOR_STORE, ServeFactory

WRONG_PIN = "sha256:" + ":".join(["AB"] * 32)


def server_table(path: Path, port: int) -> str:
    """The [server] table of a config at *path* (in the test's tmp_path) for the served server:
    its port and its store."""
    return f'[server]\nhost = "127.0.0.1"\nport = {port}\nstore = "{path.parent / DOCTOR_STORE}"\n'


def write_config(path: Path, port: int, pin: str) -> Path:
    path.write_text(
        f"""
{server_table(path, port)}

[edge]
backend = "127.0.0.1:{port}"
backend_name = "localhost"
backend_pin = "{pin}"
""",
        encoding="utf-8",
    )
    return path


async def test_edge_pin_no_longer_matches_the_server(serve: ServeFactory, tmp_path: Path) -> None:
    served = await serve()
    config = write_config(tmp_path / "natsync.toml", served.port, WRONG_PIN)
    report = await diagnose(served.options(config=config))
    assert report.mode == "inside"
    pin = next(f for f in report.findings if f.check == Check.INSIDE)
    assert pin.severity == Severity.FAIL
    assert pin.title == "The edge's pinned backend certificate no longer matches the server's"
    assert f"[edge] backend_pin = {WRONG_PIN}" in pin.evidence
    assert "second TLS session" in pin.cause
    assert f"`natsync edge trust-backend 127.0.0.1:{served.port} --name localhost --config " in (
        pin.fix
    )


async def test_edge_pin_matches(serve: ServeFactory, tmp_path: Path) -> None:
    served = await serve()
    leaf = x509.load_pem_x509_certificates(served.server_cert.read_bytes())[0]
    pin = fingerprint(leaf.public_bytes(Encoding.DER))
    config = write_config(tmp_path / "natsync.toml", served.port, pin)
    report = await diagnose(served.options(config=config))
    found = next(f for f in report.findings if f.check == Check.INSIDE)
    assert found.severity == Severity.OK, found
    assert report.exit_status == 0


def test_missing_router_mapping_names_the_command() -> None:
    ev = MappingEvidence(
        wanted=("443->8443/tcp", "25->25/tcp"),
        present=("25->192.168.1.10:25/tcp",),
    )
    [finding] = check_mappings(ev)
    assert finding.severity == Severity.FAIL
    assert finding.title == "Router port mapping missing: 443->8443/tcp"
    assert "`natsync portmap add 443:8443/tcp --config natsync.toml`" in finding.fix
    ok = check_mappings(MappingEvidence(("443->8443/tcp",), ("443->10.0.0.2:8443/tcp",)))
    assert ok[0].severity == Severity.OK


@contextmanager
def echo_server(answer: str) -> Iterator[str]:
    """An address echo service on loopback (what [ddns] echo_urls asks), answering *answer*."""

    class Echo(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = answer.encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Echo)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def ddns_config(path: Path, port: int, echo: str) -> Path:
    path.write_text(
        f"""
{server_table(path, port)}

[ddns]
sources = ["echo"]
families = [4]
echo_urls = ["{echo}"]
""",
        encoding="utf-8",
    )
    return path


async def test_carrier_grade_nat_seen_from_inside(serve: ServeFactory, tmp_path: Path) -> None:
    served = await serve()
    with echo_server("100.64.12.34") as echo:
        config = ddns_config(tmp_path / "natsync.toml", served.port, echo)
        report = await diagnose(served.options(config=config))
    nat = next(f for f in report.findings if f.check == Check.INSIDE)
    assert nat.severity == Severity.FAIL
    assert nat.title == "Carrier-grade NAT: phones cannot reach this network"
    assert any("100.64.12.34" in e for e in nat.evidence)
    assert "Port forwards on your router end at that second NAT" in nat.cause
    assert "public IPv4 address" in nat.fix


async def test_dns_behind_the_current_public_address(serve: ServeFactory, tmp_path: Path) -> None:
    served = await serve()
    with echo_server("93.184.216.34") as echo:  # the ISP's new address, as the internet sees it
        config = ddns_config(tmp_path / "natsync.toml", served.port, echo)
        report = await diagnose(served.options(config=config))
    nat = next(f for f in report.findings if f.check == Check.INSIDE)
    assert nat.severity == Severity.OK
    moved = next(f for f in report.findings if f.title.startswith("DNS does not point"))
    assert moved.severity == Severity.FAIL
    assert moved.title == "DNS does not point at the current public address 93.184.216.34"
    assert "DNS publishes 127.0.0.1" in moved.evidence
    assert f"natsync ddns update --config {config}" in moved.fix
    assert_commands_parse(report.findings)


# -- the commands the doctor prints work as printed, with the file name the user gave

#: A config file name as users write them: not natsync.toml, and with a space to quote.
USER_FILE = "my home.toml"


def commands(findings: list[Finding]) -> list[str]:
    """Every `natsync ...` command written in the findings."""
    found = []
    for f in findings:
        for text in (f.cause, f.fix):
            found.extend(c for c in text.split("`")[1::2] if c.startswith("natsync "))
    return found


def assert_commands_parse(findings: list[Finding]) -> None:
    """Each command is accepted by natsync's own command line as printed: the command and
    subcommand exist, every argument and option is one it takes, named files exist."""
    from natsync.cli import main

    for command in commands(findings):
        args = shlex.split(command)[1:]
        ctx = main.make_context("natsync", list(args))
        group: click.Command = main
        while isinstance(group, click.Group):
            name, sub, rest = group.resolve_command(ctx, [*ctx._protected_args, *ctx.args])
            assert sub is not None, command
            ctx = sub.make_context(name or "", rest, parent=ctx)
            group = sub


def natsync(*args: str, stdin: str = "", cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from natsync.cli import main; main()", *args],
        input=stdin, capture_output=True, text=True, timeout=60, cwd=cwd, check=False,
    )  # fmt: skip


async def run_printed(command: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a printed command verbatim (the server runs in this loop: not blocking it)."""
    return await asyncio.to_thread(natsync, *shlex.split(command)[1:], stdin="y\n", cwd=cwd)


def edge_only(path: Path, port: int, **extra: str) -> Path:
    lines = [
        f'backend = "127.0.0.1:{port}"',
        'backend_name = "localhost"',
        'listen = "127.0.0.1:9"',
    ]
    lines += [f'{k} = "{v}"' for k, v in extra.items()]
    path.write_text("[edge]\n" + "\n".join(lines) + "\n", encoding="utf-8")
    return path


def inside(report: Report) -> Finding:
    return next(f for f in report.findings if f.check == Check.INSIDE)


async def test_backend_ca_that_verifies_is_not_a_missing_pin(
    serve: ServeFactory, tmp_path: Path
) -> None:
    served = await serve()
    config = edge_only(tmp_path / USER_FILE, served.port, backend_ca=str(served.ca_file))
    report = await diagnose(served.options(config=config))
    found = inside(report)
    assert found.severity == Severity.OK, found
    assert (
        found.title
        == f"The edge verifies its backend 127.0.0.1:{served.port} with [edge] backend_ca"
    )
    assert not any("pins no backend certificate" in f.title for f in report.findings)


async def test_backend_ca_that_does_not_verify(serve: ServeFactory, tmp_path: Path) -> None:
    from natsync.cert.ca import init_ca

    served = await serve()
    other = init_ca(tmp_path / "other-ca")
    config = edge_only(tmp_path / USER_FILE, served.port, backend_ca=str(other.cert_path))
    found = inside(await diagnose(served.options(config=config)))
    assert found.severity == Severity.FAIL
    assert found.title == "The server's certificate does not verify against [edge] backend_ca"
    assert any("(for the name localhost)" in e for e in found.evidence), found.evidence


async def test_backend_that_refuses_connections(tmp_path: Path) -> None:
    from tests.doctor.conftest import TEST_TIMEOUT, free_port

    port = free_port()
    config = edge_only(tmp_path / USER_FILE, port)
    report = await diagnose(Options(url="https://localhost:9", config=config, timeout=TEST_TIMEOUT))
    found = inside(report)
    assert found.severity == Severity.FAIL
    assert found.title == f"The edge's backend 127.0.0.1:{port} does not accept connections"
    assert "connecting to it: refused (nothing listens)" in found.evidence
    assert f"`natsync server --config {shlex.quote(str(config))}`" in found.fix
    assert_commands_parse(report.findings)


def test_edge_only_file_checks_that_edge_not_a_default_url(tmp_path: Path) -> None:
    from natsync.cli.doctor import _inside_url

    config = edge_only(tmp_path / USER_FILE, 9443)
    assert _inside_url(config) == "https://localhost:9"  # the edge's listener, not :8443
    config.write_text('[edge]\nlisten = "192.168.1.2:443"\nbackend = "127.0.0.1:9443"\n')
    assert _inside_url(config) == "https://192.168.1.2"
    config.write_text('[edge]\nbackend = "127.0.0.1:9443"\n')  # the edge's default: '*:443'
    assert _inside_url(config) == "https://localhost"


async def test_printed_trust_backend_commands_work_as_printed(
    serve: ServeFactory, tmp_path: Path
) -> None:
    """The edge pins nothing, then a stale pin: each time the doctor's printed command, run
    as printed (with the user's file name), fixes what the doctor found."""
    served = await serve()
    config = edge_only(tmp_path / USER_FILE, served.port, insecure_backend="true")
    config.write_text(config.read_text().replace('"true"', "true"))
    unpinned = inside(await diagnose(served.options(config=config)))
    assert unpinned.title == "The edge pins no backend certificate"
    assert_commands_parse([unpinned])
    [command] = commands([unpinned])
    assert command.endswith(f"--config {shlex.quote(str(config))}")
    done = await run_printed(command, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    pinned = inside(await diagnose(served.options(config=config)))
    assert pinned.title == "The edge's pinned backend certificate matches the server's"

    stale = config.read_text().replace(pinned.evidence[0].removeprefix("pin "), WRONG_PIN)
    config.write_text(stale)
    mismatch = inside(await diagnose(served.options(config=config)))
    assert mismatch.severity == Severity.FAIL
    [command] = commands([mismatch])
    done = await run_printed(command, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert inside(await diagnose(served.options(config=config))).severity == Severity.OK


def test_every_printed_command_names_the_users_file() -> None:
    """Findings of every check family that print a command with --config, rewritten for the
    user's file: each parses as natsync's command line (the file must exist for click)."""
    from natsync.doctor.evidence import ReachEvidence
    from natsync.doctor.inside import check_nat
    from natsync.doctor.reach import check_reach

    findings = [
        *check_mappings(MappingEvidence(("443->8443/tcp",), ())),
        *check_mappings(MappingEvidence(("443->8443/tcp",), error="no router")),
        *check_nat(NatEvidence("no-address", "none")),
        *check_reach(
            ReachEvidence((Connect("192.0.2.1", 443, False, "refused"),), server_port=8443)
        ),
        *check_reach(ReachEvidence((), (Connect("192.0.2.1", 25, False, "refused"),))),
    ]
    given = [f.for_config(USER_FILE) for f in findings]
    printed = commands(given)
    assert len(printed) >= 6
    assert all("natsync.toml" not in c for c in printed)
    assert "natsync portmap add 443:8443/tcp --config 'my home.toml'" in printed
    old = Path.cwd()
    with tempfile.TemporaryDirectory() as where:
        os.chdir(where)
        try:
            Path(USER_FILE).write_text("[server]\n")
            assert_commands_parse(given)
        finally:
            os.chdir(old)


# -- the doctor's test device leaves nothing behind


def devices(store_file: Path, *extra: str) -> list[dict[str, str]]:
    done = natsync("device", "list", "--store", str(store_file), "--json", *extra, cwd=Path.cwd())
    assert done.returncode == 0, done.stderr
    found: list[dict[str, str]] = json.loads(done.stdout)
    return found


async def test_doctor_device_is_marked_hidden_and_removed_inside_out(
    serve: ServeFactory, doctor_store: Store, tmp_path: Path
) -> None:
    from natsync.doctor.device import DOCTOR_DEVICE_ID, DOCTOR_DEVICE_TYPE

    served = await serve()
    store_file = tmp_path / DOCTOR_STORE
    # outside: the device stays (the doctor cannot reach the store), marked and not listed
    report = await diagnose(served.options())
    assert report.exit_status == 0, [f.title for f in report.findings]
    listed = await asyncio.to_thread(devices, store_file)
    assert not any(d["device_id"] == DOCTOR_DEVICE_ID for d in listed)
    everything = await asyncio.to_thread(devices, store_file, "--all")
    [mine] = [d for d in everything if d["device_id"] == DOCTOR_DEVICE_ID]
    assert mine["device_type"] == DOCTOR_DEVICE_TYPE
    # inside-out with the server's config: removed from the account when the run is done
    config = tmp_path / USER_FILE
    config.write_text(f'[server]\nstore = "{store_file}"\nport = {served.port}\n')
    report = await diagnose(served.options(config=config))
    removed = next(f for f in report.findings if f.title.startswith("The doctor's test device"))
    assert removed.severity == Severity.OK
    assert removed.title == "The doctor's test device was removed again"
    everything = await asyncio.to_thread(devices, store_file, "--all")
    assert not any(d["device_id"] == DOCTOR_DEVICE_ID for d in everything)


async def test_every_backend_of_the_edge_is_checked(serve: ServeFactory, tmp_path: Path) -> None:
    """[edge] backends (several servers): each is checked, not the default backend."""
    from tests.doctor.conftest import free_port

    served = await serve()
    down = free_port()
    config = tmp_path / USER_FILE
    config.write_text(
        f'[edge]\nbackends = ["127.0.0.1:{served.port}", "127.0.0.1:{down}"]\n'
        f'backend_name = "localhost"\nbackend_ca = "{served.ca_file}"\nlisten = "127.0.0.1:9"\n'
    )
    report = await diagnose(served.options(config=config))
    found = [f for f in report.findings if f.check == Check.INSIDE]
    assert [(f.severity, f.title) for f in found] == [
        (
            Severity.OK,
            f"The edge verifies its backend 127.0.0.1:{served.port} with [edge] backend_ca",
        ),
        (Severity.FAIL, f"The edge's backend 127.0.0.1:{down} does not accept connections"),
    ]
    assert not any("8443" in e for f in found for e in f.evidence)  # not the default backend


async def test_edge_without_backend_checks_the_server_port_natsync_run_gives_it(
    serve: ServeFactory, tmp_path: Path
) -> None:
    """Under `natsync run` an [edge] without a backend forwards to [server]'s port: the inside
    check looks there (the same derivation, natsync.run.derive.edge_for, which `natsync doctor
    -c` and run's console hand to the doctor), not at [edge]'s own default 127.0.0.1:8443 (a
    false "does not accept connections" on any other port)."""
    from natsync.cli.doctor import _edge_as_run

    served = await serve()
    assert served.port != 8443
    leaf = x509.load_pem_x509_certificates(served.server_cert.read_bytes())[0]
    pin = fingerprint(leaf.public_bytes(Encoding.DER))
    config = tmp_path / "natsync.toml"
    config.write_text(
        f"{server_table(config, served.port)}\n"
        f'[edge]\nbackend_name = "localhost"\nbackend_pin = "{pin}"\n',
        encoding="utf-8",
    )
    report = await diagnose(served.options(config=config, edge=_edge_as_run(config)))
    found = inside(report)
    assert found.severity == Severity.OK, found
    assert not any("8443" in f.title for f in report.findings), report.findings
