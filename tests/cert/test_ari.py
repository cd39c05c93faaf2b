"""RFC 9773 pieces without a server: the certificate identifier (section 4.1, the RFC's own
example), the renewalInfo answer (section 4.2) and Retry-After bounds (section 4.3)."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from natsync.cert.ari import (
    DEFAULT_RETRY_AFTER,
    MAX_RETRY_AFTER,
    MIN_RETRY_AFTER,
    AriError,
    cert_id,
    parse_renewal_info,
    parse_retry_after,
)

NOW = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)


def cert_with(aki: bytes | None, serial: int) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ari.example.test")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(serial)
        .not_valid_before(NOW)
        .not_valid_after(NOW + dt.timedelta(days=90))
    )
    if aki is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier(aki, None, None), critical=False
        )
    return builder.sign(key, hashes.SHA256())


def test_cert_id_is_the_rfc_example() -> None:
    # RFC 9773 section 4.1: keyIdentifier 69:88:5B:6B:87:46:40:41:E1:B3:7B:84:7B:A0:AE:2C:
    # DE:01:C8:D4 and serial 0x87654321 (DER content 00 87 65 43 21: its top bit is set).
    aki = bytes.fromhex("69885B6B87464041E1B37B847BA0AE2CDE01C8D4")
    assert cert_id(cert_with(aki, 0x87654321)) == "aYhba4dGQEHhs3uEe6CuLN4ByNQ.AIdlQyE"


def test_cert_id_serial_without_a_leading_zero() -> None:
    assert cert_id(cert_with(b"\x01\x02", 0x7F01)).endswith(".fwE")


def test_cert_id_needs_an_authority_key_identifier() -> None:
    with pytest.raises(AriError, match="no Authority Key Identifier"):
        cert_id(cert_with(None, 5))


def test_renewal_info_is_decoded() -> None:
    body = (
        b'{"suggestedWindow": {"start": "2026-12-20T00:00:00Z", "end": "2026-12-22T00:00:00Z"},'
        b' "explanationURL": "https://ca.example/why"}'
    )
    info = parse_renewal_info(body, "3600", NOW)
    assert info.start == dt.datetime(2026, 12, 20, tzinfo=dt.UTC)
    assert info.end == dt.datetime(2026, 12, 22, tzinfo=dt.UTC)
    assert info.retry_after == dt.timedelta(hours=1)
    assert info.explanation_url == "https://ca.example/why"


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"not json", "not JSON"),
        (b"[]", "not a JSON object"),
        (b"{}", "no suggestedWindow"),
        (b'{"suggestedWindow": {"start": "2026-12-20T00:00:00Z"}}', "end"),
        (b'{"suggestedWindow": {"start": "yesterday", "end": "2026-12-20T00:00:00Z"}}', "start"),
        (
            b'{"suggestedWindow": {"start": "2026-12-20T00:00:00", "end": "2026-12-21T00:00:00Z"}}',
            "no UTC offset",
        ),
        # Section 4.2: end not after start is invalid, treated as no answer.
        (
            b'{"suggestedWindow": {"start": "2026-12-20T00:00:00Z", '
            b'"end": "2026-12-20T00:00:00Z"}}',
            "before it starts",
        ),
    ],
)
def test_unusable_answers_raise_our_error(body: bytes, match: str) -> None:
    with pytest.raises(AriError, match=match):
        parse_renewal_info(body, None, NOW)


def test_retry_after_is_clamped_and_defaulted() -> None:
    assert parse_retry_after(None, NOW) == DEFAULT_RETRY_AFTER
    assert parse_retry_after("5", NOW) == MIN_RETRY_AFTER
    assert parse_retry_after("999999", NOW) == MAX_RETRY_AFTER
    assert parse_retry_after("Tue, 01 Dec 2026 14:00:00 GMT", NOW) == dt.timedelta(hours=2)
    assert parse_retry_after("garbage", NOW) == DEFAULT_RETRY_AFTER
    assert parse_retry_after("\u00b221", NOW) == DEFAULT_RETRY_AFTER  # found by fuzz_ari
