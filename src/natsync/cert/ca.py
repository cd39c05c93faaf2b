"""A minimal private certificate authority: one CA key and certificate in a directory.

The article's server presents a certificate that names what the server *is*; the edge and the
phones need one that names what they connect to. Until ACME is in place, `natsync up` and the
tests issue server certificates from this CA so TLS is real and verified (never "insecure").

Layout of the directory: ``ca.pem`` (the CA certificate, what clients trust), ``ca.key`` (its
private key, mode 0600). Issued certificates go where the caller says, key files mode 0600.
ECDSA P-256 by default: every TLS stack phones use accepts it, and it is fast to generate.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from natsync.errors import NatsyncError

CA_CERT_FILE = "ca.pem"
CA_KEY_FILE = "ca.key"
#: CA lifetime: long enough that a home deployment never meets its expiry unawares (10 years).
CA_VALIDITY = dt.timedelta(days=3650)
#: Server certificate lifetime: Apple platforms refuse TLS server certificates valid for more
#: than 825 days, counted from notBefore, which is backdated by CLOCK_SKEW: so 824 days ahead
#: (825 days + 1 hour in total was refused by `natsync cert check`, as an iPhone would).
SERVER_VALIDITY = dt.timedelta(days=824)
#: Backdating of notBefore, so a client whose clock is a little behind still accepts it.
CLOCK_SKEW = dt.timedelta(hours=1)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


class CAError(NatsyncError):
    """The private CA cannot be created, loaded or used as asked."""


#: Key types by name. ECDSA P-256 is the default; RSA for old clients that lack ECDSA (some
#: ActiveSync clients on old Android and Windows Mobile). 2048 bits is the floor every current
#: platform accepts; 3072 for deployments whose policy asks for it. "ec" and "rsa" are the
#: short names `natsync up` has always used.
KEY_TYPES: dict[str, tuple[str, int]] = {
    "ec": ("ec", 256),
    "ecdsa-p256": ("ec", 256),
    "rsa": ("rsa", 2048),
    "rsa2048": ("rsa", 2048),
    "rsa3072": ("rsa", 3072),
}


def new_key(key_type: str = "ec") -> PrivateKey:
    """A fresh private key of a type named in :data:`KEY_TYPES`."""
    try:
        family, size = KEY_TYPES[key_type]
    except KeyError:
        raise CAError(
            f"unknown key type {key_type!r}; use one of {', '.join(sorted(KEY_TYPES))}"
        ) from None
    if family == "ec":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=size)


def _new_key(key_type: str) -> PrivateKey:
    return new_key(key_type)


def write_key(path: Path, key: PrivateKey) -> None:
    """Write *key* as unencrypted PKCS#8 PEM, readable by its owner only (mode 0600)."""
    _write_key(path, key)


def _write_key(path: Path, key: PrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


@dataclass(frozen=True, slots=True)
class CA:
    """A loaded CA: its directory, certificate and key."""

    directory: Path
    cert: x509.Certificate
    key: PrivateKey

    @property
    def cert_path(self) -> Path:
        return self.directory / CA_CERT_FILE

    def issue_server_cert(
        self,
        names: Iterable[str],
        ips: Iterable[str],
        directory: str | Path,
        *,
        basename: str = "server",
        key_type: str = "ec",
        now: dt.datetime | None = None,
    ) -> tuple[Path, Path]:
        """Issue a TLS server certificate for DNS *names* and IP addresses *ips*.

        Writes ``<basename>.pem`` (the leaf followed by the CA certificate, the chain a TLS
        server sends) and ``<basename>.key`` into *directory*; returns their paths.
        """
        dns = [n for n in names if n]
        addrs = [ipaddress.ip_address(i) for i in ips]
        if not dns and not addrs:
            raise CAError("a server certificate needs at least one DNS name or IP address")
        now = now or dt.datetime.now(dt.UTC)
        key = _new_key(key_type)
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
        sans += [x509.IPAddress(a) for a in addrs]
        common_name = dns[0] if dns else str(addrs[0])
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - CLOCK_SKEW)
            .not_valid_after(now + SERVER_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=isinstance(key, rsa.RSAPrivateKey),
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), False
            )
        )
        cert = builder.sign(self.key, hashes.SHA256())
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        cert_path = out / f"{basename}.pem"
        key_path = out / f"{basename}.key"
        _write_key(key_path, key)
        cert_path.write_bytes(
            cert.public_bytes(serialization.Encoding.PEM)
            + self.cert.public_bytes(serialization.Encoding.PEM)
        )
        return cert_path, key_path


def init_ca(
    directory: str | Path,
    *,
    common_name: str = "natsync private CA",
    key_type: str = "ec",
    now: dt.datetime | None = None,
) -> CA:
    """Create a CA in *directory*; refuses to overwrite one (phones may already trust it)."""
    path = Path(directory)
    if (path / CA_CERT_FILE).exists() or (path / CA_KEY_FILE).exists():
        raise CAError(f"{path} already holds a CA; load it with load_ca() instead")
    path.mkdir(parents=True, exist_ok=True)
    now = now or dt.datetime.now(dt.UTC)
    key = _new_key(key_type)
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "natsync"),
        ]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - CLOCK_SKEW)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .sign(key, hashes.SHA256())
    )
    _write_key(path / CA_KEY_FILE, key)
    (path / CA_CERT_FILE).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CA(directory=path, cert=cert, key=key)


def load_ca(directory: str | Path) -> CA:
    """Load the CA kept in *directory*."""
    path = Path(directory)
    try:
        cert = x509.load_pem_x509_certificate((path / CA_CERT_FILE).read_bytes())
        key = serialization.load_pem_private_key((path / CA_KEY_FILE).read_bytes(), None)
    except FileNotFoundError as exc:
        raise CAError(f"no CA in {path}: create one with init_ca()") from exc
    except ValueError as exc:
        raise CAError(f"the CA files in {path} cannot be read: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise CAError(f"the CA key in {path} is neither ECDSA nor RSA")
    if cert.public_key() != key.public_key():
        raise CAError(f"the CA certificate and key in {path} do not belong together")
    return CA(directory=path, cert=cert, key=key)


def load_or_init_ca(directory: str | Path) -> CA:
    """The CA in *directory*, created on first use (what `natsync up` wants)."""
    path = Path(directory)
    if (path / CA_CERT_FILE).exists():
        return load_ca(path)
    return init_ca(path)
