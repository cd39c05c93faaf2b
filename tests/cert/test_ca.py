"""The private CA: real keys, real certificates, verified by a real TLS handshake."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from natsync.cert import CAError, init_ca, load_ca, load_or_init_ca


def test_init_creates_a_p256_ca_with_a_private_key_file(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca")
    assert isinstance(ca.key, ec.EllipticCurvePrivateKey)
    assert ca.key.curve.name == "secp256r1"
    constraints = ca.cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca is True
    mode = stat.S_IMODE((tmp_path / "ca" / "ca.key").stat().st_mode)
    assert mode == 0o600
    loaded = load_ca(tmp_path / "ca")
    assert loaded.cert == ca.cert


def test_init_refuses_to_overwrite_an_existing_ca(tmp_path: Path) -> None:
    init_ca(tmp_path)
    with pytest.raises(CAError, match="already holds a CA"):
        init_ca(tmp_path)
    assert load_or_init_ca(tmp_path).cert == load_ca(tmp_path).cert


def test_load_names_the_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(CAError, match="no CA in"):
        load_ca(tmp_path / "nowhere")


def test_server_certificate_has_the_sans_and_server_auth(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca")
    cert_path, key_path = ca.issue_server_cert(
        ["localhost", "mail.example.test"], ["127.0.0.1", "::1"], tmp_path / "tls"
    )
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    chain = x509.load_pem_x509_certificates(cert_path.read_bytes())
    assert chain[1] == ca.cert  # the leaf is followed by the CA, the chain a server sends
    leaf = chain[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "mail.example.test"]
    assert sans.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    ]
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    leaf.verify_directly_issued_by(ca.cert)


def test_a_server_certificate_needs_a_name(tmp_path: Path) -> None:
    with pytest.raises(CAError, match="at least one"):
        init_ca(tmp_path).issue_server_cert([], [], tmp_path)


async def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, host: str) -> str:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=client_ctx, server_hostname=host
        )
        data = await reader.read()
        writer.close()
        return data.decode()
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("key_type", ["ec", "rsa"])
async def test_a_tls_client_trusting_the_ca_verifies_the_server(
    tmp_path: Path, key_type: str
) -> None:
    ca = init_ca(tmp_path / "ca")
    cert_path, key_path = ca.issue_server_cert(
        ["localhost"], ["127.0.0.1"], tmp_path, key_type=key_type
    )
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_path, key_path)
    client_ctx = ssl.create_default_context(cafile=str(ca.cert_path))
    assert await _handshake(server_ctx, client_ctx, "localhost") == "hello"
    assert await _handshake(server_ctx, client_ctx, "127.0.0.1") == "hello"
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(server_ctx, client_ctx, "other.example.test")


async def test_a_client_with_another_ca_refuses_the_server(tmp_path: Path) -> None:
    ca = init_ca(tmp_path / "ca")
    other = init_ca(tmp_path / "other")
    cert_path, key_path = ca.issue_server_cert(["localhost"], [], tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert_path, key_path)
    client_ctx = ssl.create_default_context(cafile=str(other.cert_path))
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(server_ctx, client_ctx, "localhost")
