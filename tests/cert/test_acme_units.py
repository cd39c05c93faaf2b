"""The sans-I/O parts of ACME: JWS and key authorizations, challenge answers, renewal timing,
and the hot reload of a TLS server's certificate while a connection stays open."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from hypothesis import given, settings
from hypothesis import strategies as st

from natsync.cert import jose
from natsync.cert.acme import renew_at, renewal_due
from natsync.cert.acme_responders import (
    ChallengeStore,
    alpn_server_name,
    http01_answer,
    start_http01_responder,
    start_tls_alpn01_responder,
)
from natsync.cert.ca import init_ca
from natsync.cert.reload import CertReloader, ReloadError
from tests.cert.factory import NOW, make_ca, make_leaf


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def test_jws_es256_verifies_and_carries_jwk_or_kid() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jws = jose.sign(key, {"a": 1}, url="https://acme/x", nonce="n1", kid=None)
    protected = json.loads(unb64(jws["protected"]))
    assert protected["alg"] == "ES256"
    assert protected["jwk"] == jose.jwk(key.public_key())
    assert "kid" not in protected
    raw = unb64(jws["signature"])
    assert len(raw) == 64  # r || s, not DER (RFC 7518 section 3.4)
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    key.public_key().verify(
        der, f"{jws['protected']}.{jws['payload']}".encode(), ec.ECDSA(hashes.SHA256())
    )
    get = jose.sign(key, None, url="https://acme/y", nonce="n2", kid="https://acme/acct/1")
    assert get["payload"] == ""  # POST-as-GET
    assert json.loads(unb64(get["protected"]))["kid"] == "https://acme/acct/1"


def test_thumbprint_and_challenge_values() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    members = jose.jwk(key.public_key())
    canonical = f'{{"crv":"P-256","kty":"EC","x":"{members["x"]}","y":"{members["y"]}"}}'.encode()
    assert jose.thumbprint(key.public_key()) == jose.b64u(hashlib.sha256(canonical).digest())
    auth = jose.key_authorization("tok", key.public_key())
    assert auth == "tok." + jose.thumbprint(key.public_key())
    assert unb64(jose.dns01_value(auth)) == hashlib.sha256(auth.encode()).digest()
    assert jose.dns01_name("*.example.test") == "_acme-challenge.example.test."


def test_other_curves_are_refused() -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(jose.JoseError, match="P-256"):
        jose.jwk(key.public_key())


def test_alpn_certificate_has_the_critical_acme_identifier() -> None:
    cert, _ = jose.alpn_certificate("mail.example.test", "tok.thumb", NOW)
    ext = cert.extensions.get_extension_for_oid(jose.ACME_IDENTIFIER_OID)
    assert ext.critical
    assert ext.value.value == b"\x04\x20" + hashlib.sha256(b"tok.thumb").digest()
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["mail.example.test"]
    assert alpn_server_name("127.0.0.1") == "1.0.0.127.in-addr.arpa"


def test_http01_answer_serves_only_known_tokens() -> None:
    store = ChallengeStore()
    store.put("abc_-1", "abc_-1.thumb")
    assert http01_answer(store, "/.well-known/acme-challenge/abc_-1") == b"abc_-1.thumb"
    assert http01_answer(store, "/.well-known/acme-challenge/other") is None
    assert http01_answer(store, "/.well-known/acme-challenge/../etc") is None
    assert http01_answer(store, "/Microsoft-Server-ActiveSync") is None
    store.remove("abc_-1")
    assert http01_answer(store, "/.well-known/acme-challenge/abc_-1") is None


async def test_responders_over_real_sockets() -> None:
    store = ChallengeStore()
    store.put("tok", "tok.thumb")
    store.put_alpn("mail.example.test", "tok.thumb", dt.datetime.now(dt.UTC))
    http = await start_http01_responder(store, "127.0.0.1", 0)
    tls = await start_tls_alpn01_responder(store, "127.0.0.1", 0)
    try:
        port = http.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /.well-known/acme-challenge/tok HTTP/1.1\r\nHost: x\r\n\r\n")
        response = await reader.read()
        writer.close()
        assert response.startswith(b"HTTP/1.1 200 OK")
        assert response.endswith(b"\r\n\r\ntok.thumb")

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols([jose.ACME_TLS_ALPN])
        port = tls.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=context, server_hostname="mail.example.test"
        )
        tls_object = writer.get_extra_info("ssl_object")
        assert tls_object.selected_alpn_protocol() == "acme-tls/1"
        der = tls_object.getpeercert(binary_form=True)
        writer.close()
        served = x509.load_der_x509_certificate(der)
        assert served.extensions.get_extension_for_oid(jose.ACME_IDENTIFIER_OID).critical
        # No challenge for this name: the handshake is refused (an alert, or a reset).
        with pytest.raises(OSError):  # ssl.SSLError is an OSError too
            await asyncio.open_connection(
                "127.0.0.1", port, ssl=context, server_hostname="unknown.example.test"
            )
    finally:
        for server in (http, tls):
            server.close()
            await server.wait_closed()


def test_renewal_when_a_third_of_the_lifetime_is_left() -> None:
    root = make_ca()
    start = NOW
    leaf, _ = make_leaf(root, not_before=start, not_after=start + dt.timedelta(days=90))
    assert renew_at(leaf) == start + dt.timedelta(days=60)
    assert not renewal_due(leaf, start + dt.timedelta(days=59, hours=23))
    assert renewal_due(leaf, start + dt.timedelta(days=60))
    assert renewal_due(leaf, start + dt.timedelta(days=100))  # expired: certainly due


async def test_hot_reload_keeps_a_held_connection(tmp_path: Path) -> None:
    """Swap the certificate while a TLS connection is open: the open one goes on working,
    new ones get the new certificate."""
    ca = init_ca(tmp_path / "ca")
    cert, key = ca.issue_server_cert(["mail.example.test"], ["127.0.0.1"], tmp_path / "tls")
    reloader = CertReloader(cert, key)

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.readline():
            writer.write(data)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=reloader.context)
    port = server.sockets[0].getsockname()[1]
    client = ssl.create_default_context(cafile=str(ca.cert_path))

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter, int]:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client, server_hostname="mail.example.test"
        )
        der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return reader, writer, x509.load_der_x509_certificate(der).serial_number

    try:
        held_r, held_w, first_serial = await connect()
        held_w.write(b"before\n")
        assert await held_r.readline() == b"before\n"

        new_cert, new_key = ca.issue_server_cert(
            ["mail.example.test"], ["127.0.0.1"], tmp_path / "tls"
        )
        reloader.reload(new_cert, new_key)

        held_w.write(b"after reload\n")
        assert await held_r.readline() == b"after reload\n"  # the held connection survived
        new_r, new_w, second_serial = await connect()
        assert second_serial != first_serial
        new_w.write(b"new\n")
        assert await new_r.readline() == b"new\n"
        new_w.close()

        (tmp_path / "tls" / "server.key").write_bytes(b"half-written")
        with pytest.raises(ReloadError, match="old certificate stays"):
            reloader.reload()
        _, other_w, third_serial = await connect()
        assert third_serial == second_serial
        other_w.close()
        held_w.write(b"still\n")
        assert await held_r.readline() == b"still\n"
        held_w.close()
    finally:
        server.close()
        await server.wait_closed()


@settings(max_examples=300, deadline=None)
@given(path=st.text(max_size=80))
def test_http01_answer_never_raises(path: str) -> None:
    store = ChallengeStore()
    store.put("tok", "tok.thumb")
    answer = http01_answer(store, "/.well-known/acme-challenge/" + path)
    assert answer is None or answer == b"tok.thumb"
