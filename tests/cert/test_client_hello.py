"""The ClientHello reader (natsync.cert.client_hello) on ClientHellos made by OpenSSL itself
(Python's ssl as the client): the name and the ALPN offer, a hello cut anywhere (more bytes
needed), a hello fragmented over two records, and what is not a ClientHello."""

from __future__ import annotations

import ssl

import pytest

from natsync.cert.client_hello import (
    INCOMPLETE,
    ClientHello,
    ClientHelloError,
    parse_client_hello,
)


def openssl_hello(name: str | None, alpn: list[str] | None) -> bytes:
    """What an OpenSSL client sends first, with this SNI and ALPN offer."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    if alpn:
        context.set_alpn_protocols(alpn)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = context.wrap_bio(incoming, outgoing, server_hostname=name)
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return outgoing.read()


def test_the_name_and_the_alpn_offer() -> None:
    hello = openssl_hello("Mail.Example.test", ["acme-tls/1"])
    assert parse_client_hello(hello) == ClientHello("mail.example.test", ("acme-tls/1",))
    phone = openssl_hello("mail.example.test", ["h2", "http/1.1"])
    assert parse_client_hello(phone) == ClientHello("mail.example.test", ("h2", "http/1.1"))
    assert parse_client_hello(openssl_hello(None, None)) == ClientHello(None, ())


def test_a_hello_cut_anywhere_needs_more_bytes() -> None:
    hello = openssl_hello("mail.example.test", ["acme-tls/1"])
    for cut in range(len(hello)):
        assert parse_client_hello(hello[:cut]) is INCOMPLETE
    # what follows the hello (the client's next record) does not matter
    assert isinstance(parse_client_hello(hello + b"\x17\x03\x03"), ClientHello)


def test_a_hello_fragmented_over_two_records() -> None:
    hello = openssl_hello("mail.example.test", ["acme-tls/1"])
    message = hello[5:]
    half = len(message) // 2
    records = b"".join(
        b"\x16\x03\x01" + len(part).to_bytes(2, "big") + part
        for part in (message[:half], message[half:])
    )
    assert parse_client_hello(records) == ClientHello("mail.example.test", ("acme-tls/1",))
    assert parse_client_hello(records[: 5 + half + 7]) is INCOMPLETE


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"GET / HTTP/1.1\r\n\r\n", "not a TLS handshake record"),
        (b"\x16\x02\x00\x00\x05hello", "not a TLS record version"),
        (b"\x16\x03\x01\x00\x00", "record length"),
        (b"\x16\x03\x01\x00\x04\x02\x00\x00\x00", "not a ClientHello"),
        (b"\x16\x03\x01\x00\x06\x01\x00\x00\x02\x03\x03", "ends inside a field"),
    ],
)
def test_what_is_not_a_client_hello(data: bytes, match: str) -> None:
    with pytest.raises(ClientHelloError, match=match):
        parse_client_hello(data)


def test_an_extension_twice_is_refused() -> None:
    hello = openssl_hello("mail.example.test", ["acme-tls/1"])
    # Rewrite the ALPN extension's type (16) as server_name (0): two server_name extensions.
    alpn = bytes([0x00, 0x10, 0x00, 0x0D, 0x00, 0x0B, 0x0A]) + b"acme-tls/1"
    assert alpn in hello
    twice = hello.replace(alpn, b"\x00\x00" + alpn[2:])
    with pytest.raises(ClientHelloError, match="appears twice"):
        parse_client_hello(twice)
