"""ValidateCert (MS-ASCMD 2.2.1.22): real certificates from a CA made here (and natsync's own CA
from data_dir), checked by cryptography's verifier; one Status per certificate
(MS-ASCMD 2.2.3.177.18). Every answer is decoded by libwbxml too."""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from natsync.eas.validatecert import CertStatus, validate
from natsync.store.api import Store
from natsync.wbxml import E, Element, decode
from tests.eas.helpers import CONFIG, NOW, Phone
from tests.libwbxml import assert_libwbxml_decodes

NS = "ValidateCert"
Key = ec.EllipticCurvePrivateKey


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _ca(cn: str, key: Key, issuer: tuple[x509.Certificate, Key] | None = None) -> x509.Certificate:
    signer_name, signer_key = (issuer[0].subject, issuer[1]) if issuer else (_name(cn), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(signer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - dt.timedelta(days=30))
        .not_valid_after(NOW + dt.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if issuer:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer_key.public_key()), False
        )
    return builder.sign(signer_key, hashes.SHA256())


def _leaf(
    issuer: x509.Certificate,
    issuer_key: Key,
    *,
    eku: list[x509.ObjectIdentifier] | None = None,
    days: tuple[int, int] = (-1, 365),
    at: dt.datetime = NOW,
) -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name("alice"))
        .issuer_name(issuer.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(at + dt.timedelta(days=days[0]))
        .not_valid_after(at + dt.timedelta(days=days[1]))
        .add_extension(
            x509.SubjectAlternativeName([x509.RFC822Name("alice@example.test")]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), False
        )
        .add_extension(
            x509.ExtendedKeyUsage(eku or [ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False
        )
    )
    return builder.sign(issuer_key, hashes.SHA256())


def _b64(cert: x509.Certificate) -> str:
    return base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()


@dataclass
class Pki:
    root: x509.Certificate
    root_key: Key
    mid: x509.Certificate
    mid_key: Key
    stranger: x509.Certificate
    stranger_key: Key


@pytest.fixture(scope="module")
def pki() -> Pki:
    root_key = ec.generate_private_key(ec.SECP256R1())
    root = _ca("Test Root", root_key)
    mid_key = ec.generate_private_key(ec.SECP256R1())
    mid = _ca("Test Intermediate", mid_key, (root, root_key))
    stranger_key = ec.generate_private_key(ec.SECP256R1())
    return Pki(root, root_key, mid, mid_key, _ca("Stranger Root", stranger_key), stranger_key)


def test_statuses_per_certificate(pki: Pki) -> None:
    from cryptography.x509.verification import Store as Roots

    mid, mid_key = pki.mid, pki.mid_key
    tls_only = _leaf(mid, mid_key, eku=[ExtendedKeyUsageOID.SERVER_AUTH])
    cases = {
        "valid via the intermediate": (_leaf(mid, mid_key), CertStatus.SUCCESS),
        "valid, issued by the root": (_leaf(pki.root, pki.root_key), CertStatus.SUCCESS),
        "expired": (_leaf(mid, mid_key, days=(-30, -1)), CertStatus.EXPIRED),
        "not yet valid": (_leaf(mid, mid_key, days=(2, 30)), CertStatus.EXPIRED),
        "TLS only": (tls_only, CertStatus.NOT_FOR_EMAIL),
        "unknown root": (_leaf(pki.stranger, pki.stranger_key), CertStatus.UNTRUSTED_SOURCE),
        # The intermediate's name, signed by another key.
        "bad signature": (_leaf(mid, pki.stranger_key), CertStatus.BAD_SIGNATURE),
    }
    names = [*cases, "garbage", "not DER"]
    texts = [_b64(cert) for cert, _ in cases.values()]
    texts += ["not base64!", base64.b64encode(b"junk").decode()]
    statuses = validate(texts, [_b64(mid)], Roots([pki.root]), NOW)
    expected = [status for _, status in cases.values()] + [CertStatus.PROTOCOL_ERROR] * 2
    assert dict(zip(names, statuses, strict=True)) == dict(zip(names, expected, strict=True))
    # Without the intermediate no path reaches the root.
    alone = validate([_b64(_leaf(mid, mid_key))], [], Roots([pki.root]), NOW)
    assert alone == [CertStatus.UNTRUSTED_SOURCE]


def test_over_the_protocol_with_natsyncs_ca(store: Store, tmp_path: Path) -> None:
    """The handler trusts natsync's own CA from data_dir (plus the system roots)."""
    from natsync.cert import init_ca

    ca = init_ca(tmp_path / "ca")
    ca_cert = x509.load_pem_x509_certificate(ca.cert_path.read_bytes())
    ca_key = serialization.load_pem_private_key((tmp_path / "ca" / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, Key)
    phone = Phone(store, config=replace(CONFIG, data_dir=tmp_path))
    phone.now = dt.datetime.now(dt.UTC)
    phone.provision()
    ours = _leaf(ca_cert, ca_key, days=(0, 30), at=phone.now)
    body = E(
        NS, "ValidateCert",
        E(NS, "Certificates", E(NS, "Certificate", _b64(ours)), E(NS, "Certificate", "AAAA")),
        E(NS, "CheckCRL", "1"),
    )  # fmt: skip
    response = phone.call("ValidateCert", body)
    assert response.http_status == 200
    assert_libwbxml_decodes(response.body)
    tree = decode(response.body)
    assert tree.child_text("Status") == "1"
    assert [c.child_text("Status") for c in tree.findall("Certificate")] == ["1", "2"]
    empty = phone.call("ValidateCert", E(NS, "ValidateCert", Element(NS, "Certificates")))
    assert decode(empty.body).child_text("Status") == "2"
