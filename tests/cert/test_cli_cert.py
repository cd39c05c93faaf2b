"""`natsync cert init-ca / issue / export-ca / check` through click, on real files and a real
TLS server."""

from __future__ import annotations

import json
import plistlib
from pathlib import Path

from click.testing import CliRunner
from cryptography import x509

from natsync.cli import main
from tests.cert.tls_server import serve_tls


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["cert", *args])
    return result.exit_code, result.output


def test_init_issue_export_check(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    code, out = run("init-ca", "--data-dir", data, "--key", "rsa2048")
    assert code == 0, out
    code, out = run("init-ca", "--data-dir", data)
    assert code == 1
    assert "already holds a CA" in out
    code, out = run(
        "issue",
        "--data-dir",
        data,
        "--name",
        "mail.example.com",
        "--name",
        "autodiscover.example.com",
        "--ip",
        "203.0.113.5",
        "--json",
    )
    assert code == 0, out
    issued = json.loads(out)
    leaf = x509.load_pem_x509_certificates(Path(issued["cert"]).read_bytes())[0]
    assert leaf.public_key().key_size == 256  # leaf is P-256 by default even with an RSA CA
    for fmt in ("pem", "der", "mobileconfig"):
        target = tmp_path / f"ca.{fmt}"
        code, out = run("export-ca", "--data-dir", data, "--format", fmt, "-o", str(target))
        assert code == 0, out
    assert plistlib.loads((tmp_path / "ca.mobileconfig").read_bytes())["PayloadContent"]
    code, out = run(
        "check",
        issued["cert"],
        "--data-dir",
        data,
        "--name",
        "mail.example.com",
        "--ip",
        "203.0.113.5",
    )
    assert code == 0, out
    assert "a phone will accept this certificate" in out
    code, out = run(
        "check",
        issued["cert"],
        "--ca-file",
        str(tmp_path / "ca.pem"),
        "--name",
        "mail.example.com",
        "--ip",
        "198.51.100.7",
        "--json",
    )
    assert code == 2
    doc = json.loads(out)
    assert doc["status"] == "fail"
    assert [f["code"] for f in doc["findings"] if f["severity"] == "fail"] == ["ip.mismatch"]


def test_check_a_live_server_warns_for_a_later_san(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    assert run("init-ca", "--data-dir", data)[0] == 0
    code, out = run(
        "issue",
        "--data-dir",
        data,
        "--name",
        "exchange.corp.local",
        "--name",
        "mail.example.com",
        "--json",
    )
    issued = json.loads(out)
    with serve_tls(Path(issued["cert"]), Path(issued["key"])) as (port, seen):
        code, out = run(
            "check", f"127.0.0.1:{port}", "--data-dir", data, "--name", "mail.example.com"
        )
    assert seen == ["mail.example.com"]
    assert code == 1, out
    assert "WARN" in out
    assert "old" in out


def test_check_reports_an_unreachable_server_as_failure(tmp_path: Path) -> None:
    code, out = run("check", "127.0.0.1:1", "--system", "--name", "x.example", "--json")
    assert code == 2
    assert json.loads(out)["status"] == "error"


def test_default_trust_tries_natsync_ca_then_the_system(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    assert run("init-ca", "--data-dir", data)[0] == 0
    other = str(tmp_path / "other")
    assert run("init-ca", "--data-dir", other)[0] == 0
    code, out = run("issue", "--data-dir", other, "--name", "mail.example.com", "--json")
    foreign = json.loads(out)["cert"]
    code, out = run("check", foreign, "--data-dir", data, "--name", "mail.example.com", "--json")
    assert code == 2
    [finding] = [f for f in json.loads(out)["findings"] if f["code"] == "chain.untrusted-root"]
    assert "the system store" in finding["message"]
    code, out = run("check", foreign, "--data-dir", other, "--name", "mail.example.com")
    assert code == 0, out
    assert "natsync's CA" in out
