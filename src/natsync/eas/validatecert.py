"""ValidateCert (MS-ASCMD 2.2.1.22): the phone sends S/MIME certificates (``Certificates``, with
optional intermediates in ``CertificateChain``) and learns, per certificate, whether it can be
trusted — before it encrypts to or trusts a signature from that address.

Each certificate is checked, in this order, with the first failure as its Status (MS-ASCMD
2.2.3.177.18):

* 2 — not base64 DER of an X.509 certificate (protocol error);
* 7 — outside its validity period at ``now``;
* 6 — its ExtendedKeyUsage (when present) allows neither email protection nor any purpose, or
  its KeyUsage (when present) allows neither signatures nor key encipherment: not for S/MIME;
* 3 / 4 / 5 — path validation by ``cryptography``'s verifier (RFC 5280 through
  ``cryptography.x509.verification``) against the trust store (the system's roots plus natsync's
  own CA): a bad signature is 3, no path to a trusted root 4 (untrusted source), any other chain
  fault 5 (the chain is not correctly built);
* 1 — valid.

Revocation is not checked (no CRL or OCSP fetch: the server reaches no network but the mail
path); a ``CheckCRL`` request is answered on the same checks. The top Status is 1 when the
request was understood, 2 when it was not (MS-ASCMD: 1 success, 17 an unexpected failure).

:func:`validate` is pure (certificates, roots and ``now`` in, statuses out);
:func:`trust_roots` reads the roots once per file version.
"""

from __future__ import annotations

import base64
import binascii
import enum
import functools
import ssl
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.utils import CryptographyDeprecationWarning
from cryptography.x509 import verification
from cryptography.x509.oid import ExtendedKeyUsageOID

from natsync.eas.context import Context, Response
from natsync.eas.errors import EasError
from natsync.wbxml import E

NS = "ValidateCert"
#: Certificates one request may ask about (Exchange's own limit is not published; a phone asks
#: about the recipients of one message).
MAX_CERTIFICATES = 100
#: Largest certificate taken (a real S/MIME certificate is 1-3 KB).
MAX_CERTIFICATE_BYTES = 64 * 1024
#: Longest chain the verifier builds (intermediates between the certificate and a root).
MAX_CHAIN_DEPTH = 8
#: Where Debian keeps the system's roots when OpenSSL names no file.
SYSTEM_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class CertStatus(enum.IntEnum):
    """MS-ASCMD 2.2.3.177.18 Status (ValidateCert)."""

    SUCCESS = 1
    PROTOCOL_ERROR = 2
    BAD_SIGNATURE = 3
    UNTRUSTED_SOURCE = 4
    BAD_CHAIN = 5
    NOT_FOR_EMAIL = 6
    EXPIRED = 7
    SERVER_ERROR = 17


def _load(text: str | bytes | None) -> x509.Certificate | None:
    if text is None:
        return None
    raw = text if isinstance(text, bytes) else text.encode("ascii", "replace")
    try:
        der = base64.b64decode(b"".join(raw.split()), validate=True)
    except (binascii.Error, ValueError):
        der = raw  # some clients send the DER itself as opaque data
    if len(der) > MAX_CERTIFICATE_BYTES:
        return None
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        return None


def _for_email(cert: x509.Certificate) -> bool:
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        if (
            ExtendedKeyUsageOID.EMAIL_PROTECTION not in eku
            and ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE not in eku
        ):
            return False
    except x509.ExtensionNotFound:
        pass
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
        if not (usage.digital_signature or usage.content_commitment or usage.key_encipherment):
            return False
    except x509.ExtensionNotFound:
        pass
    return True


def _verifier(roots: verification.Store, now: datetime) -> verification.ClientVerifier:
    # The client verifier's end-entity defaults demand the clientAuth EKU; an S/MIME certificate
    # carries emailProtection instead (checked in _for_email), so the EKU is left to us.
    ee_policy = verification.ExtensionPolicy.webpki_defaults_ee().may_be_present(
        x509.ExtendedKeyUsage, verification.Criticality.AGNOSTIC, None
    )
    return (
        verification.PolicyBuilder()
        .store(roots)
        .time(now)
        .max_chain_depth(MAX_CHAIN_DEPTH)
        .extension_policies(
            ca_policy=verification.ExtensionPolicy.webpki_defaults_ca(), ee_policy=ee_policy
        )
        .build_client_verifier()
    )


def _chain_status(exc: verification.VerificationError) -> CertStatus:
    message = str(exc).lower()
    if "signature" in message:
        return CertStatus.BAD_SIGNATURE
    if "candidates exhausted" in message or "no issuer" in message or "not found" in message:
        return CertStatus.UNTRUSTED_SOURCE
    return CertStatus.BAD_CHAIN


def validate(
    certificates: Sequence[str | bytes | None],
    chain: Sequence[str | bytes | None],
    roots: verification.Store,
    now: datetime,
) -> list[CertStatus]:
    """The Status of each of *certificates* (base64 DER), with *chain* as intermediates."""
    intermediates = [c for c in (_load(t) for t in chain) if c is not None]
    verifier = _verifier(roots, now)
    statuses: list[CertStatus] = []
    for text in certificates:
        try:
            statuses.append(_status(_load(text), verifier, intermediates, now))
        except ValueError:  # an extension cryptography cannot read: not a usable certificate
            statuses.append(CertStatus.PROTOCOL_ERROR)
    return statuses


def _status(
    cert: x509.Certificate | None,
    verifier: verification.ClientVerifier,
    intermediates: list[x509.Certificate],
    now: datetime,
) -> CertStatus:
    if cert is None:
        return CertStatus.PROTOCOL_ERROR
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        return CertStatus.EXPIRED
    if not _for_email(cert):
        return CertStatus.NOT_FOR_EMAIL
    try:
        verifier.verify(cert, intermediates)
    except verification.VerificationError as exc:
        return _chain_status(exc)
    return CertStatus.SUCCESS


@functools.lru_cache(maxsize=4)
def _roots_from(files: tuple[tuple[str, float], ...]) -> verification.Store:
    certs: list[x509.Certificate] = []
    for name, _mtime in files:
        try:
            with warnings.catch_warnings():
                # The system bundle holds old roots (a zero serial ...) that cryptography warns
                # about; they are the operating system's to keep, not an error here.
                warnings.simplefilter("ignore", CryptographyDeprecationWarning)
                certs.extend(x509.load_pem_x509_certificates(Path(name).read_bytes()))
        except (OSError, ValueError):
            continue
    return verification.Store(certs)


def trust_roots(data_dir: Path) -> verification.Store:
    """The system's roots and natsync's CA (``<data_dir>/ca/ca.pem``), read again only when a
    file changes."""
    candidates = [
        ssl.get_default_verify_paths().cafile,
        str(SYSTEM_BUNDLE),
        str(data_dir / "ca" / "ca.pem"),
    ]
    files: list[tuple[str, float]] = []
    for name in dict.fromkeys(c for c in candidates if c):
        try:
            files.append((name, Path(name).stat().st_mtime))
        except OSError:
            continue
    return _roots_from(tuple(files))


def handle(ctx: Context) -> Response:
    body = ctx.body
    if body is None or body.tag != "ValidateCert" or body.namespace != NS:
        raise EasError("ValidateCert needs a ValidateCert body", status=CertStatus.PROTOCOL_ERROR)
    certs_el = body.find("Certificates", NS)
    certificates = (
        [c.value for c in certs_el.findall("Certificate", NS)] if certs_el is not None else []
    )
    chain_el = body.find("CertificateChain", NS)
    chain = [c.value for c in chain_el.findall("Certificate", NS)] if chain_el is not None else []
    if not certificates or len(certificates) > MAX_CERTIFICATES or len(chain) > MAX_CERTIFICATES:
        root = E(NS, "ValidateCert", E(NS, "Status", CertStatus.PROTOCOL_ERROR))
        return Response.of(root, status=CertStatus.PROTOCOL_ERROR)
    statuses = validate(certificates, chain, trust_roots(ctx.config.data_dir), ctx.now)
    root = E(NS, "ValidateCert", E(NS, "Status", CertStatus.SUCCESS))
    for status in statuses:
        root.append(E(NS, "Certificate", E(NS, "Status", status)))
    return Response.of(root, status=CertStatus.SUCCESS)
