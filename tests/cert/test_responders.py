"""The edge's port 80 (HTTP-01 answers, a redirect for everything else), the challenge spool
shared between processes, the edge's TLS-ALPN-01 by SNI, and the edge settings for them."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import ssl
from pathlib import Path

import pytest
from cryptography import x509

from natsync.cert import jose
from natsync.cert.acme_responders import ChallengeStore, https_redirect, start_http01_responder
from natsync.cert.manager import ensure_placeholder, is_placeholder
from natsync.edge import EdgeConfig, start_edge
from natsync.edge.config import SiteCert
from natsync.errors import ConfigError, NatsyncError
from tests.cert.test_client_hello import openssl_hello

NOW = dt.datetime.now(dt.UTC)
TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"


@pytest.mark.parametrize(
    ("head", "port", "location"),
    [
        (b"GET /x?y=1 HTTP/1.1\r\nHost: mail.example.test\r\n\r\n", 443,
         "https://mail.example.test/x?y=1"),
        (b"GET / HTTP/1.1\r\nhost: mail.example.test:80\r\n\r\n", 8443,
         "https://mail.example.test:8443/"),
        (b"GET /a HTTP/1.1\r\nHost: [2001:db8::1]:80\r\n\r\n", 443, "https://[2001:db8::1]/a"),
        (b"GET /a HTTP/1.1\r\n\r\n", 443, None),  # no Host: nothing to redirect to
        (b"GET /a HTTP/1.1\r\nHost: evil.test/\r\n\r\n", 443, None),  # not a host name
        (b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n", 443, None),  # not origin-form
    ],
)  # fmt: skip
def test_https_redirect(head: bytes, port: int, location: str | None) -> None:
    assert https_redirect(head, port) == location


async def exchange(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(request)
    answer = await reader.read()
    writer.close()
    return answer


async def test_port_80_serves_challenges_and_redirects_the_rest(tmp_path: Path) -> None:
    store = ChallengeStore()
    store.put(TOKEN, TOKEN + ".thumb")
    server = await start_http01_responder(store, "127.0.0.1", 0, redirect_port=443)
    port = server.sockets[0].getsockname()[1]
    try:
        ok = await exchange(port, f"GET /.well-known/acme-challenge/{TOKEN} HTTP/1.1\r\n"
                            "Host: a.example.test\r\n\r\n".encode())  # fmt: skip
        assert ok.startswith(b"HTTP/1.1 200 OK")
        assert ok.endswith(b"\r\n\r\n" + TOKEN.encode() + b".thumb")
        missing = await exchange(port, b"GET /.well-known/acme-challenge/nope HTTP/1.1\r\n"
                                 b"Host: a.example.test\r\n\r\n")  # fmt: skip
        assert missing.startswith(b"HTTP/1.1 404 ")  # a challenge path is never redirected
        moved = await exchange(port, b"POST /Microsoft-Server-ActiveSync HTTP/1.1\r\n"
                               b"Host: a.example.test\r\n\r\n")  # fmt: skip
        assert moved.startswith(b"HTTP/1.1 301 ")
        assert b"Location: https://a.example.test/Microsoft-Server-ActiveSync\r\n" in moved
        bad = await exchange(port, b"GET / HTTP/1.0\r\n\r\n")
        assert bad.startswith(b"HTTP/1.1 400 ")
    finally:
        server.close()
        await server.wait_closed()


def test_the_spool_carries_challenges_to_another_store(tmp_path: Path) -> None:
    writer, reader = ChallengeStore(spool=tmp_path), ChallengeStore(spool=tmp_path)
    writer.put(TOKEN, TOKEN + ".thumb")
    assert reader.get(TOKEN) == TOKEN + ".thumb"
    assert (tmp_path / "http-01" / TOKEN).stat().st_mode & 0o077 == 0
    assert reader.get("../../etc/passwd") is None  # only tokens name files
    writer.remove(TOKEN)
    assert reader.get(TOKEN) is None

    assert reader.alpn_context_for("a.example.test") is None
    writer.put_alpn("a.example.test", "key-auth", NOW)
    assert reader.alpn_context_for("A.example.test.") is not None
    cert_pem, _ = reader.alpn_certificate_for("a.example.test") or (b"", b"")
    served = x509.load_pem_x509_certificate(cert_pem)
    assert served.extensions.get_extension_for_oid(jose.ACME_IDENTIFIER_OID).critical
    writer.remove_alpn("a.example.test")
    assert reader.alpn_context_for("a.example.test") is None
    with pytest.raises(NatsyncError, match="token that is not base64url"):
        writer.put("../x", "y")


async def test_the_edge_presents_the_validation_certificate_only_for_the_pending_name(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    assert ensure_placeholder(cert, key, ["a.example.test"], NOW)
    assert not ensure_placeholder(cert, key, ["a.example.test"], NOW)  # kept
    assert is_placeholder(x509.load_pem_x509_certificate(cert.read_bytes()))
    store = ChallengeStore()
    config = EdgeConfig(
        listen="127.0.0.1:0",
        certificates=(SiteCert(("a.example.test", "b.example.test"), cert, key),),
        backend="127.0.0.1:9",
        insecure_backend=True,
        admin_listen="",
        forwards=(),
    )
    edge = await start_edge(config, challenges=store)
    try:
        store.put_alpn("a.example.test", "key-auth", NOW)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols([jose.ACME_TLS_ALPN])
        for name, challenged in (("a.example.test", True), ("b.example.test", False)):
            _, writer = await asyncio.open_connection(
                "127.0.0.1", edge.port, ssl=context, server_hostname=name
            )
            tls = writer.get_extra_info("ssl_object")
            leaf = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
            writer.close()
            oids = [ext.oid for ext in leaf.extensions]
            assert (jose.ACME_IDENTIFIER_OID in oids) is challenged
            assert tls.selected_alpn_protocol() == (jose.ACME_TLS_ALPN if challenged else None)
        # RFC 8737 section 3: only a handshake offering acme-tls/1 gets the validation
        # certificate; a phone naming the same host during the validation gets the real one.
        for offer in (["http/1.1"], ["h2", "http/1.1"], None):
            phone = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            phone.check_hostname = False
            phone.verify_mode = ssl.CERT_NONE
            if offer:
                phone.set_alpn_protocols(offer)
            _, writer = await asyncio.open_connection(
                "127.0.0.1", edge.port, ssl=phone, server_hostname="a.example.test"
            )
            tls = writer.get_extra_info("ssl_object")
            leaf = x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))
            writer.close()
            assert is_placeholder(leaf), offer
            assert tls.selected_alpn_protocol() == ("http/1.1" if offer else None)
        # A ClientHello arriving in pieces (two TCP segments) is read whole.
        hello = openssl_hello("a.example.test", [jose.ACME_TLS_ALPN])
        caplog.set_level(logging.INFO, logger="natsync.edge")
        caplog.clear()
        reader, writer = await asyncio.open_connection("127.0.0.1", edge.port)
        writer.write(hello[:40])
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.write(hello[40:])
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(16384), 5)
        writer.close()
        assert answer[:1] == b"\x16"  # a ServerHello
        assert edge_log_line(caplog) == "TLS-ALPN-01: presenting the ACME validation certificate"
    finally:
        await edge.close()


def edge_log_line(caplog: pytest.LogCaptureFixture) -> str:
    """The last TLS-ALPN-01 line of the edge's log, without the name."""
    lines = [r.getMessage() for r in caplog.records if "TLS-ALPN-01" in r.getMessage()]
    return lines[-1].rsplit(" for ", 1)[0] if lines else ""


def test_edge_http_listen_is_checked() -> None:
    with pytest.raises(ConfigError, match=r"edge\.http_listen must be host:port"):
        EdgeConfig(http_listen="80")
