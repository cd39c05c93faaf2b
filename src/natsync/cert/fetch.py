"""Getting what :mod:`natsync.cert.check` reasons about: chains from files or from a live
server (with SNI, as a phone sends it), and the trust stores a phone may use.

The server's whole presented chain is what matters (a phone does not fetch missing
intermediates), so the handshake is made *unverified* and the presented chain read with
``SSLSocket.get_unverified_chain()`` (public in Python 3.13, present on ``_sslobj`` since 3.10);
where neither exists, ``openssl s_client -showcerts`` gives the same list.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.utils import CryptographyDeprecationWarning

from natsync.cert.check import TrustStore
from natsync.config import port_of
from natsync.errors import NatsyncError

#: Seconds to wait for a TCP connection and the TLS handshake: a phone gives up about here too.
FETCH_TIMEOUT = 10.0
#: Largest certificate file we read (a system bundle is ~200 KB; anything far larger is not one).
MAX_CERT_FILE = 4 * 1024 * 1024
#: Where Debian / Ubuntu / Fedora keep the system bundle when Python's default path is empty.
SYSTEM_BUNDLES = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/cert.pem",
)


#: File name endings that mean "a certificate file", never a host name.
CERT_SUFFIXES = (".pem", ".crt", ".cer", ".der", ".p7b")


class CertFetchError(NatsyncError):
    """A certificate or chain could not be read or fetched."""


@dataclass(frozen=True, slots=True)
class Fetched:
    """A presented chain and how the handshake went."""

    chain: tuple[x509.Certificate, ...]
    tls_version: str | None
    cipher: str | None


def load_certificates(path: Path) -> tuple[x509.Certificate, ...]:
    """Certificates from a PEM (one or many) or DER file, in file order.

    cryptography's warnings about old encodings (a few system roots have negative serial
    numbers) are silenced: judging such certificates is this module's caller's job.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return _load_certificates(path)


def _load_certificates(path: Path) -> tuple[x509.Certificate, ...]:
    try:
        data = path.read_bytes()[: MAX_CERT_FILE + 1]
    except OSError as exc:
        raise CertFetchError(f"cannot read {path}: {exc.strerror}") from exc
    if len(data) > MAX_CERT_FILE:
        raise CertFetchError(f"{path} is larger than {MAX_CERT_FILE} bytes: not a certificate")
    try:
        if b"-----BEGIN CERTIFICATE-----" in data:
            return tuple(x509.load_pem_x509_certificates(data))
        return (x509.load_der_x509_certificate(data),)
    except ValueError as exc:
        raise CertFetchError(f"{path} holds no readable certificate: {exc}") from exc


def system_store() -> TrustStore:
    """The operating system's roots: a stand-in for a phone's (they largely agree)."""
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile, *SYSTEM_BUNDLES):
        if candidate and Path(candidate).is_file():
            return TrustStore(f"the system store ({candidate})", load_certificates(Path(candidate)))
    raise CertFetchError("no system certificate bundle found; pass --ca-file instead")


def file_store(path: Path, label: str | None = None) -> TrustStore:
    return TrustStore(label or f"the trust file {path}", load_certificates(path))


def split_host_port(target: str, default_port: int = 443) -> tuple[str, int] | None:
    """``host:port`` / ``[v6]:port`` / ``host`` → (host, port); None when it is a file path."""
    if "/" in target or Path(target).exists() or target.lower().endswith(CERT_SUFFIXES):
        return None
    if target.startswith("["):
        host, _, rest = target[1:].partition("]")
        port = rest.removeprefix(":")
        number = port_of(port)
        return host, default_port if number is None else number
    host, sep, port = target.rpartition(":")
    if sep and (number := port_of(port)) is not None and ":" not in host:
        return host, number
    if ":" in target:  # a bare IPv6 address
        return target, default_port
    return target, default_port


def fetch_chain(
    host: str, port: int, *, server_name: str | None, timeout: float = FETCH_TIMEOUT
) -> Fetched:
    """Connect to *host*:*port*, send *server_name* as SNI, return the presented chain."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # we judge the chain ourselves, with reasons
    sni = server_name if server_name and not _is_ip(server_name) else None
    try:
        with (
            socket.create_connection((host, port), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=sni) as tls,
        ):
            der = _presented_chain(tls)
            version, cipher = tls.version(), (tls.cipher() or (None,))[0]
    except (OSError, ssl.SSLError) as exc:
        raise CertFetchError(
            f"cannot get a certificate from {host}:{port}: {exc.strerror or exc}"
            if isinstance(exc, OSError) and exc.strerror
            else f"cannot get a certificate from {host}:{port}: {exc}"
        ) from exc
    if der is None:
        return _fetch_with_openssl(host, port, sni, timeout)
    chain = tuple(x509.load_der_x509_certificate(d) for d in der)
    if not chain:
        raise CertFetchError(f"{host}:{port} presented no certificate")
    return Fetched(chain, version, cipher)


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _presented_chain(tls: ssl.SSLSocket) -> list[bytes] | None:
    getter = getattr(tls, "get_unverified_chain", None)  # Python 3.13+
    if getter is None:
        sslobj = getattr(tls, "_sslobj", None)
        getter = getattr(sslobj, "get_unverified_chain", None)
    if getter is None:
        return None
    certs = getter() or []
    out: list[bytes] = []
    for cert in certs:
        if isinstance(cert, bytes):
            out.append(cert)
        else:
            out.append(cert.public_bytes(ssl._ssl.ENCODING_DER))  # type: ignore[attr-defined]
    return out


def _fetch_with_openssl(host: str, port: int, sni: str | None, timeout: float) -> Fetched:
    openssl = shutil.which("openssl")
    if openssl is None:
        raise CertFetchError("this Python cannot read the presented chain and openssl is missing")
    args = [openssl, "s_client", "-connect", f"{host}:{port}", "-showcerts"]
    args += ["-servername", sni] if sni else ["-noservername"]
    try:
        done = subprocess.run(  # noqa: S603 - fixed program, arguments are not a shell line
            args, input=b"", capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise CertFetchError(f"openssl s_client to {host}:{port} timed out") from exc
    try:
        chain = tuple(x509.load_pem_x509_certificates(done.stdout))
    except ValueError as exc:
        raise CertFetchError(f"{host}:{port} presented no certificate") from exc
    return Fetched(chain, None, None)


def chain_pem(chain: tuple[x509.Certificate, ...]) -> bytes:
    return b"".join(c.public_bytes(Encoding.PEM) for c in chain)
