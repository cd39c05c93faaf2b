"""The JOSE pieces ACME needs, sans-I/O: JWK (RFC 7517), its thumbprint (RFC 7638), flattened
JWS with ES256 (RFC 7515, RFC 7518 section 3.4), key authorizations (RFC 8555 section 8.1) and
what each challenge type publishes: the HTTP-01 body (8.3), the DNS-01 TXT value (8.4) and the
TLS-ALPN-01 certificate (RFC 8737 section 3).

Only ES256 account keys (ECDSA P-256): every ACME server accepts them, they are small, and
one algorithm means one code path.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID, ObjectIdentifier

from natsync.errors import NatsyncError

#: RFC 8737 section 3: the acmeIdentifier certificate extension (id-pe-acmeIdentifier).
ACME_IDENTIFIER_OID = ObjectIdentifier("1.3.6.1.5.5.7.1.31")
#: RFC 8737 section 4: the ALPN protocol name of TLS-ALPN-01.
ACME_TLS_ALPN = "acme-tls/1"
#: RFC 8555 section 8.4: the DNS-01 record's owner prefix.
DNS01_PREFIX = "_acme-challenge."
#: Lifetime of a TLS-ALPN-01 challenge certificate: only the validation handshake sees it.
ALPN_CERT_VALIDITY = dt.timedelta(days=7)
#: P-256 coordinates and signature halves are 32 bytes each (RFC 7518 section 3.4).
P256_BYTES = 32


class JoseError(NatsyncError):
    """An ACME account key cannot be used (wrong type or curve)."""


def b64u(data: bytes) -> str:
    """base64url without padding (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _p256(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> None:
    if not isinstance(key.curve, ec.SECP256R1):
        raise JoseError(f"ACME account keys must be ECDSA P-256 (ES256), not {key.curve.name}")


def jwk(key: ec.EllipticCurvePublicKey) -> dict[str, str]:
    """The public JWK of an ES256 key, members in RFC 7638's lexicographic order."""
    _p256(key)
    numbers = key.public_numbers()
    return {
        "crv": "P-256",
        "kty": "EC",
        "x": b64u(numbers.x.to_bytes(P256_BYTES, "big")),
        "y": b64u(numbers.y.to_bytes(P256_BYTES, "big")),
    }


def thumbprint(key: ec.EllipticCurvePublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256), base64url."""
    canonical = json.dumps(jwk(key), separators=(",", ":"), sort_keys=True).encode()
    return b64u(hashlib.sha256(canonical).digest())


def sign(
    key: ec.EllipticCurvePrivateKey,
    payload: dict[str, Any] | None,
    *,
    url: str,
    nonce: str,
    kid: str | None,
) -> dict[str, str]:
    """A flattened JWS for an ACME POST (RFC 8555 section 6.2).

    *payload* None is POST-as-GET (an empty payload, section 6.3). With *kid* None the
    protected header carries the JWK instead (newAccount, section 7.3).
    """
    _p256(key)
    protected: dict[str, Any] = {"alg": "ES256", "nonce": nonce, "url": url}
    if kid is None:
        protected["jwk"] = jwk(key.public_key())
    else:
        protected["kid"] = kid
    protected_b64 = b64u(json.dumps(protected, separators=(",", ":")).encode())
    payload_b64 = "" if payload is None else b64u(json.dumps(payload).encode())
    der = key.sign(f"{protected_b64}.{payload_b64}".encode(), ec.ECDSA(hashes.SHA256()))
    r, s = decode_dss_signature(der)
    raw = r.to_bytes(P256_BYTES, "big") + s.to_bytes(P256_BYTES, "big")
    return {"protected": protected_b64, "payload": payload_b64, "signature": b64u(raw)}


def key_authorization(token: str, account_key: ec.EllipticCurvePublicKey) -> str:
    """RFC 8555 section 8.1: token "." base64url(thumbprint)."""
    return f"{token}.{thumbprint(account_key)}"


def dns01_value(key_auth: str) -> str:
    """RFC 8555 section 8.4: the TXT value is base64url(SHA-256(key authorization))."""
    return b64u(hashlib.sha256(key_auth.encode("ascii")).digest())


def dns01_name(identifier: str) -> str:
    """The owner name of the DNS-01 TXT record (a wildcard's "*." is dropped, section 8.4)."""
    return DNS01_PREFIX + identifier.removeprefix("*.").rstrip(".") + "."


def self_signed_builder(
    subject: x509.Name, key: ec.EllipticCurvePrivateKey, start: dt.datetime, end: dt.datetime
) -> x509.CertificateBuilder:
    """A self-signed certificate builder for *key*, valid from *start* to *end*."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def alpn_certificate(
    name: str, key_auth: str, now: dt.datetime
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """RFC 8737 section 3: a self-signed certificate for *name* with a critical acmeIdentifier
    extension holding SHA-256 of the key authorization (a DER OCTET STRING)."""
    key = ec.generate_private_key(ec.SECP256R1())
    digest = hashlib.sha256(key_auth.encode("ascii")).digest()
    octet_string = bytes([0x04, len(digest)]) + digest
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "ACME TLS-ALPN-01 challenge")])
    general: x509.GeneralName
    try:
        import ipaddress

        general = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        general = x509.DNSName(name)
    cert = (
        self_signed_builder(subject, key, now - dt.timedelta(hours=1), now + ALPN_CERT_VALIDITY)
        .add_extension(x509.SubjectAlternativeName([general]), critical=False)
        .add_extension(x509.UnrecognizedExtension(ACME_IDENTIFIER_OID, octet_string), True)
        .sign(key, hashes.SHA256())
    )
    return cert, key
