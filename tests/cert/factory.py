"""Certificates made to order for the check tests: a root, an intermediate, and leaves with
exactly the defect a test wants (wrong names, expired, wrong EKU, SHA-1, small keys ...)."""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
Key = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass
class Issuer:
    cert: x509.Certificate
    key: Key


def make_ca(cn: str = "Test Root", parent: Issuer | None = None, now: dt.datetime = NOW) -> Issuer:
    key = ec.generate_private_key(ec.SECP256R1())
    signer_key = parent.key if parent else key
    issuer_name = parent.cert.subject if parent else _name(cn)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=30))
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if parent:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(parent.key.public_key()), False
        )
    return Issuer(builder.sign(signer_key, hashes.SHA256()), key)


def make_leaf(
    issuer: Issuer,
    dns: Sequence[str] = ("mail.example.com",),
    ips: Sequence[str] = (),
    *,
    cn: str | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    eku: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.SERVER_AUTH,),
    key: Key | None = None,
    hash_alg: hashes.HashAlgorithm | None = None,
    with_san: bool = True,
) -> tuple[x509.Certificate, Key]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn or (list(dns) + list(ips))[0]))
        .issuer_name(issuer.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(days=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=90))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), False
        )
    )
    if with_san and sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    return builder.sign(issuer.key, hash_alg or hashes.SHA256()), key
