"""The HTTPS echo source over real TLS on loopback: the certificate is verified (a private CA
given through SSL_CERT_FILE here, a public CA in real life) and an untrusted one is refused."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from natsync.ddns.sources import Source, from_echo
from tests.ddns.fake_http import Reply, Request, self_signed, serve


@dataclass
class EchoService:
    """An HTTPS "what is my IP" service: answers every request with the address."""

    requests: list[Request] = field(default_factory=list)

    def handle(self, request: Request) -> Reply:
        return Reply(200, "192.0.3.10\n")


@pytest.fixture
def tls_echo(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with serve(EchoService(), tmp_path / "tls") as running:
        assert running.ca_file is not None
        yield running.url + "/", running.ca_file


def test_trusted_https_echo_gives_the_address(
    tls_echo: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, ca = tls_echo
    monkeypatch.setenv("SSL_CERT_FILE", str(ca))
    observation = from_echo(url)
    assert observation.source == Source.ECHO
    assert str(observation.address) == "192.0.3.10"


def test_untrusted_certificate_is_refused(
    tls_echo: tuple[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    url, _ = tls_echo
    other, _ = self_signed(tmp_path / "other")  # a CA that did not sign the server's certificate
    monkeypatch.setenv("SSL_CERT_FILE", str(other))
    observation = from_echo(url)
    assert observation.address is None
    assert "CERTIFICATE_VERIFY_FAILED" in observation.error
