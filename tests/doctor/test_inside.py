"""Inside-out: the deployment's config adds the edge's pinned backend against the real server."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from natsync.doctor import Check, Severity, diagnose
from natsync.doctor.evidence import MappingEvidence
from natsync.doctor.gather import fingerprint
from natsync.doctor.inside import check_mappings
from tests.doctor.conftest import ServeFactory

WRONG_PIN = "sha256:" + ":".join(["AB"] * 32)


def write_config(path: Path, port: int, pin: str) -> Path:
    path.write_text(
        f"""
[server]
host = "127.0.0.1"
port = {port}

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
    assert "natsync edge trust-backend" in pin.fix


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
