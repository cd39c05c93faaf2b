"""`natsync cert acme` and `natsync cert renew` against pebble: the standalone responder, the
saved settings, renewal timing with --now, and the SIGHUP reload hook."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import types
import uuid
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509

from natsync.cli import main
from tests.cert.acme_servers import Bind, Pebble


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["cert", *args])
    return result.exit_code, result.output


def test_acme_http01_then_renew_with_reload(pebble: Pebble, tmp_path: Path) -> None:
    data = tmp_path / "data"
    name = f"cli-{uuid.uuid4().hex[:8]}.example.test"
    pid_file = tmp_path / "edge.pid"
    pid_file.write_text(f"{os.getpid()}\n")
    hups: list[int] = []

    def on_hup(signum: int, frame: types.FrameType | None) -> None:
        hups.append(signum)

    previous = signal.signal(signal.SIGHUP, on_hup)
    try:
        code, out = run(
            "acme",
            "--data-dir",
            str(data),
            "--directory",
            pebble.directory_url,
            "--name",
            name,
            "--challenge",
            "http-01",
            "--ca-file",
            str(pebble.ca_file),
            "--listen",
            "127.0.0.1",
            "--http-port",
            str(pebble.http_port),
            "--reload-pid-file",
            str(pid_file),
            "--json",
        )
        assert code == 0, out
        first = json.loads(out)
        assert first["status"] == "issued"
        assert first["challenges_answered"] == 1
        assert hups == [signal.SIGHUP]
        root = tmp_path / "pebble-root.pem"
        root.write_bytes(pebble.root_pem())
        code, out = run("check", first["cert"], "--ca-file", str(root), "--name", name)
        assert code == 0, out

        code, out = run("renew", "--data-dir", str(data), "--json")
        assert code == 0, out
        assert json.loads(out)["status"] == "not-due"
        leaf = x509.load_pem_x509_certificates(Path(first["cert"]).read_bytes())[0]
        later = leaf.not_valid_before_utc + dt.timedelta(days=61)  # 90-day certificate
        code, out = run("renew", "--data-dir", str(data), "--now", later.isoformat(), "--json")
        assert code == 0, out
        second = json.loads(out)
        assert second["status"] == "issued"
        assert second["authorizations_reused"] == 1
        assert hups == [signal.SIGHUP, signal.SIGHUP]
        renewed = x509.load_pem_x509_certificates(Path(second["cert"]).read_bytes())[0]
        assert renewed.serial_number != leaf.serial_number
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_acme_dns01_from_the_command_line(pebble: Pebble, bind: Bind, tmp_path: Path) -> None:
    name = f"clidns-{uuid.uuid4().hex[:8]}.example.test"
    code, out = run(
        "acme",
        "--data-dir",
        str(tmp_path / "data"),
        "--directory",
        pebble.directory_url,
        "--name",
        name,
        "--challenge",
        "dns-01",
        "--ca-file",
        str(pebble.ca_file),
        "--dns-server",
        f"127.0.0.1:{bind.port}",
        "--dns-zone",
        "example.test",
        "--tsig-key-file",
        str(bind.key_file),
        "--json",
    )
    assert code == 0, out
    assert json.loads(out)["challenges_answered"] == 1


def test_acme_failure_exits_nonzero_with_the_reason(pebble: Pebble, tmp_path: Path) -> None:
    name = f"clibad-{uuid.uuid4().hex[:8]}.example.test"
    code, out = run(
        "acme",
        "--data-dir",
        str(tmp_path / "data"),
        "--directory",
        pebble.directory_url,
        "--name",
        name,
        "--challenge",
        "tls-alpn-01",
        "--ca-file",
        str(pebble.ca_file),
        "--listen",
        "127.0.0.1",
        "--tls-port",
        "0",
        "--json",
    )
    assert code == 1
    error = json.loads(out)["error"]
    assert f"could not validate tls-alpn-01 for {name}" in error


def test_renew_without_settings_says_what_to_do(tmp_path: Path) -> None:
    code, out = run("renew", "--data-dir", str(tmp_path))
    assert code == 1
    assert "natsync cert acme first" in out
