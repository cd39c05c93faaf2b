"""Inside-out: the deployment's config adds the edge's pinned backend against the real server."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
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
[server]
host = "127.0.0.1"
port = {port}

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
    assert "natsync ddns update --config natsync.toml" in moved.fix
