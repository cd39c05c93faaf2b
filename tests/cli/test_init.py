"""`natsync init`: the file it writes in a clean directory passes `natsync check`; a local MTA on
port 25 is noticed and its two choices written as asked; it ends with the phone's settings."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from natsync.cli import main
from natsync.deployment import load_deployment
from natsync.lab.runner import NATSYNC
from tests.cli.test_run import free_ports


def _init(tmp_path: Path, *extra: str, stdin: str | None = None) -> str:
    edge, server, admin = free_ports(3)
    args = [
        "init", "mail.example.org", "-o", str(tmp_path / "natsync.toml"), "--data-dir",
        str(tmp_path / "data"), "--no-detect", "--listen", "127.0.0.1", "--https-port",
        str(edge), "--server-port", str(server), "--admin-listen", f"127.0.0.1:{admin}",
        "--edge-admin-listen", "127.0.0.1:0", *extra,
    ]  # fmt: skip
    result = CliRunner().invoke(main, args, input=stdin)
    assert result.exit_code == 0, result.output
    return result.output


def test_a_clean_directory_gets_a_file_check_accepts(tmp_path: Path) -> None:
    output = _init(tmp_path, "-y", "--cert", "private-ca", "--smtp-port", str(free_ports(1)[0]))
    assert f"wrote {tmp_path / 'natsync.toml'}" in output
    assert "server    mail.example.org" in output  # what to do on the phone
    assert f"install the CA {tmp_path / 'data' / 'ca' / 'ca.pem'}" in output
    check = CliRunner().invoke(main, ["check", "-c", str(tmp_path / "natsync.toml")])
    assert check.exit_code == 0, check.output
    text = (tmp_path / "natsync.toml").read_text()
    assert text.count("\n# ") > 20  # commented
    tables = set(tomllib.loads(text))
    assert tables == {"server", "edge", "cert", "admin", "run"}  # ddns/portmap: commented out


def test_acme_mode_with_dns_and_router_tables(tmp_path: Path) -> None:
    _init(
        tmp_path, "-y", "--cert", "acme", "--acme-directory", "https://127.0.0.1:14000/dir",
        "--email", "op@example.org", "--portmap", "--router", "127.0.0.1", "--dns-server",
        "127.0.0.1:5353", "--smtp-port", str(free_ports(1)[0]), "--http-port",
        str(free_ports(1)[0]),
    )  # fmt: skip
    deployment = load_deployment(tmp_path / "natsync.toml")
    assert deployment.cert is not None
    assert deployment.cert.mode == "acme"
    assert deployment.ddns.zone == "example.org"
    assert deployment.ddns.names == ("mail.example.org",)
    assert any(m.startswith("80:") for m in deployment.portmap.mappings)
    assert deployment.admin.email == "op@example.org"
    # The stand-in certificate lets the edge start until the ACME one arrives.
    assert (tmp_path / "data" / "tls" / "public.pem").is_file()


def test_an_existing_file_is_kept_without_force(tmp_path: Path) -> None:
    (tmp_path / "natsync.toml").write_text("# mine\n")
    result = CliRunner().invoke(
        main, ["init", "mail.example.org", "-o", str(tmp_path / "natsync.toml"), "-y"]
    )
    assert result.exit_code == 1
    assert "exists; --force replaces it" in result.output
    assert (tmp_path / "natsync.toml").read_text() == "# mine\n"


@pytest.fixture
def local_mta() -> Iterator[None]:
    """Something listening on port 25 (on loopback), as a local MTA would."""
    if os.geteuid() != 0:
        pytest.skip("port 25 is init's default only as root (CI runs as root)")
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", 25))
        except OSError:
            yield None  # a real MTA holds it already: the same situation
            return
        sock.listen()
        yield None


def test_a_local_mta_on_port_25_gives_two_choices(tmp_path: Path, local_mta: None) -> None:
    output = _init(tmp_path / "a", "--cert", "private-ca", stdin="2\n")
    assert "Port 25 is taken by a local mail server" in output
    via_mta = load_deployment(tmp_path / "a" / "natsync.toml").server
    assert via_mta.smarthost == "127.0.0.1:25"
    assert via_mta.smtp_listen == "127.0.0.1:2525"
    assert "smtp:[127.0.0.1]:2525" in output  # the MTA's relay line

    output = _init(tmp_path / "b", "--cert", "private-ca", "-y")  # -y: choice 1
    beside = load_deployment(tmp_path / "b" / "natsync.toml")
    assert beside.server.smtp_listen == "127.0.0.1:2525"
    assert beside.server.smarthost == ""
    assert "25  -> 2525" in output  # the router forward to set by hand


def test_it_prints_the_mail_domains_records_with_the_dkim_key_it_made(tmp_path: Path) -> None:
    """MX, SPF, DKIM (the key the relay signs with, as `natsync dkim create` makes it) and
    DMARC; the closing hint is a command that works as printed."""
    from natsync.mail.dkim import DkimSigner, load_key

    output = _init(tmp_path, "-y", "--cert", "private-ca", "--smtp-port", str(free_ports(1)[0]))
    key = load_key(tmp_path / "data", "example.org")
    assert key is not None
    signer = DkimSigner.from_data_dir(tmp_path / "data")  # what the server's relay signs with
    assert signer is not None
    assert signer.domains == ("example.org",)
    lines = [line.strip() for line in output.splitlines()]
    assert "example.org. 3600 IN MX 10 mail.example.org." in lines
    assert 'example.org. 3600 IN TXT "v=spf1 mx ~all"' in lines
    dkim = next(line for line in lines if line.startswith("natsync._domainkey.example.org. "))
    assert key.public_key_b64 == "".join(dkim.split('"')[1::2]).partition("p=")[2]
    assert any(line.startswith('_dmarc.example.org. 3600 IN TXT "v=DMARC1; p=') for line in lines)
    # Again: the same key (not a new one the published record would not match).
    again = _init(
        tmp_path, "-y", "--force", "--cert", "private-ca", "--smtp-port", str(free_ports(1)[0])
    )
    assert dkim in [line.strip() for line in again.splitlines()]
    # The closing hint, run as printed (with the password on stdin).
    hint = next(line for line in lines if line.startswith("natsync user add "))
    args = hint.split("(")[0].split()[1:]
    added = CliRunner().invoke(main, [*args, "--password-stdin"], input="a long password\n")
    assert added.exit_code == 0, added.output
    assert args[:4] == ["user", "add", "you", "--email"]


@pytest.fixture
def no_route_out() -> Iterator[str]:
    """A network namespace with loopback only (no route out, no IPv6 router), so wildcard
    listeners touch nothing of the host; a router on 127.0.0.1 refuses at once."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root (CI runs as root)")
    name = f"nsinit-{os.getpid()}"
    try:
        subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_ipv6_writes_a_dual_stack_deployment_check_accepts_and_run_serves(
    tmp_path: Path, no_route_out: str
) -> None:
    """`init --ipv6`: the edge and SMTP on both families, untranslated mappings (an IPv6
    pinhole cannot translate), pinholes asked for ([portmap] ipv6); `natsync check` accepts it
    and `natsync run` serves it on IPv4 and IPv6 (in a namespace: the public ports 443 and 25;
    no router answers there, and the portmap part keeps asking meanwhile)."""
    args = [
        "init", "mail.example.org", "-o", "natsync.toml", "--data-dir", "data", "--no-detect",
        "-y", "--cert", "private-ca", "--ipv6", "--portmap", "--router", "127.0.0.1",
        "--dns-server", "127.0.0.1:5353",
    ]  # fmt: skip
    done = subprocess.run(
        ["ip", "netns", "exec", no_route_out, *NATSYNC, *args],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    config = tmp_path / "natsync.toml"
    text = tomllib.loads(config.read_text())
    assert text["edge"]["listen"] == "*:443"
    assert text["server"]["smtp_listen"] == "[::]:25"
    assert text["portmap"]["mappings"] == ["443/tcp", "25/tcp"]
    assert text["portmap"]["ipv6"] == "auto"
    assert text["ddns"]["families"] == [4, 6]
    check = subprocess.run(
        ["ip", "netns", "exec", no_route_out, *NATSYNC, "check", "-c", str(config)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert check.returncode == 0, check.stdout + check.stderr
    assert "portmap" in check.stdout
    log = tmp_path / "run.log"
    with log.open("w") as err:
        run = subprocess.Popen(
            ["ip", "netns", "exec", no_route_out, *NATSYNC, "run", "-c", str(config), "--json"],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=err, text=True,
        )  # fmt: skip
    try:
        code = (
            "import socket, time\n"
            "deadline = time.monotonic() + 60\n"
            "for host in ('127.0.0.1', '::1'):\n"
            "    for port in (443, 25):\n"
            "        while True:\n"
            "            try:\n"
            "                socket.create_connection((host, port), timeout=3).close()\n"
            "                break\n"
            "            except OSError:\n"
            "                if time.monotonic() > deadline: raise\n"
            "                time.sleep(0.2)\n"
            "print('both families')\n"
        )
        reach = subprocess.run(
            ["ip", "netns", "exec", no_route_out, sys.executable, "-c", code],
            capture_output=True, text=True, timeout=90, check=False,
        )  # fmt: skip
        assert run.poll() is None, log.read_text()[-3000:]
        assert reach.stdout.strip() == "both families", reach.stderr + log.read_text()[-3000:]
    finally:
        run.send_signal(signal.SIGTERM)
        run.wait(60)
        if run.stdout is not None:
            run.stdout.close()


def test_ipv6_with_acme_puts_port_80_on_both_families_too(tmp_path: Path) -> None:
    args = [
        "init", "mail.example.org", "-o", str(tmp_path / "natsync.toml"), "--data-dir",
        str(tmp_path / "data"), "--no-detect", "-y", "--cert", "acme", "--email",
        "op@example.org", "--ipv6", "--portmap", "--smtp-via-mta",
    ]  # fmt: skip
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    text = tomllib.loads((tmp_path / "natsync.toml").read_text())
    assert text["edge"]["listen"] == "*:443"
    assert text["edge"]["http_listen"] == "*:80"  # ACME HTTP-01 over IPv6 as well
    assert text["portmap"]["mappings"] == ["443/tcp", "80/tcp"]
    assert text["server"]["smtp_listen"] == "127.0.0.1:2525"  # the local MTA's, unchanged
