"""DKIM (RFC 6376): one signing key per mail domain, kept in the data directory, and the signer
the outbound relay runs over every message before it leaves.

Why: the big mail providers accept mail from a small server only when it is authenticated
(SPF and DKIM aligned with the From domain, DMARC published — see
:mod:`natsync.mail.dns_records`). Replies written on a phone leave through the relay
(:mod:`natsync.mail.relay`), so the relay signs them, whether it hands them to a smarthost or
sends them directly.

Keys live in ``DATA_DIR/dkim/<domain>/<selector>.key``: RSA (RFC 6376 3.3: rsa-sha256 is what
every verifier implements; RFC 8301 asks for at least 1024 bits, 2048 is today's norm), PKCS#1
PEM as dkimpy reads it, mode 0600 in a 0700 directory. The public half is published as a TXT
record at ``<selector>._domainkey.<domain>``. When a domain has several selectors (a rotation in
progress), the newest key signs.

The signature itself is made by dkimpy (a maintained implementation, also used to verify in the
tests); dkimpy reads the clock for the ``t=`` tag, which is why :class:`DkimSigner` belongs to the
relay's I/O side and not to a sans-I/O core.
"""

from __future__ import annotations

import base64
import logging
import os
import re
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from natsync.mime.errors import MailError

log = logging.getLogger(__name__)

#: RSA modulus for new keys: RFC 8301 3.2 requires >= 1024 and recommends 2048 at least; 2048 is
#: what providers' own keys use and still fits one DNS TXT record (as several strings).
KEY_BITS = 2048
#: The selector ``natsync dkim create`` uses unless told: names the key, not the domain.
DEFAULT_SELECTOR = "natsync"
#: Directory under the data directory holding one sub-directory of keys per domain.
DKIM_DIR = "dkim"
#: relaxed/relaxed survives the header refolding and whitespace changes of relays on the way.
CANONICALIZE = (b"relaxed", b"relaxed")

_SELECTOR = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


class DkimError(MailError):
    """A DKIM key cannot be made, read or used; the message says which file and what to do."""

    http_status = 500


@dataclass(frozen=True, slots=True)
class DkimKey:
    """One domain's signing key: where it is and its public half for DNS."""

    domain: str
    selector: str
    path: Path
    private_pem: bytes

    @property
    def record_name(self) -> str:
        """Where the public key is published (RFC 6376 3.6.2.1)."""
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def public_key_b64(self) -> str:
        """The ``p=`` value: the SubjectPublicKeyInfo DER, base64 (RFC 6376 3.6.1)."""
        return public_key_b64(self.private_pem)

    @property
    def record_text(self) -> str:
        """The TXT record's text (one string; zone files split it, see dns_records)."""
        return f"v=DKIM1; k=rsa; p={self.public_key_b64}"


def public_key_b64(private_pem: bytes) -> str:
    key = serialization.load_pem_private_key(private_pem, password=None)
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode("ascii")


def check_domain(domain: str) -> str:
    """*domain* lower-cased, or DkimError when it cannot be a mail domain."""
    name = domain.strip().rstrip(".").lower()
    if not _DOMAIN.match(name):
        raise DkimError(f"{domain!r} is not a domain name: give the mail domain, e.g. example.org")
    return name


def check_selector(selector: str) -> str:
    if not _SELECTOR.match(selector):
        raise DkimError(
            f"{selector!r} is not a DKIM selector: use letters, digits and '-' (e.g. natsync2026)"
        )
    return selector


def key_dir(data_dir: Path, domain: str) -> Path:
    return data_dir / DKIM_DIR / check_domain(domain)


def create_key(data_dir: Path, domain: str, selector: str = DEFAULT_SELECTOR) -> DkimKey:
    """Generate a key for *domain* under *selector*; refuses to replace an existing one (a key
    already published would stop verifying)."""
    directory = key_dir(data_dir, domain)
    path = directory / f"{check_selector(selector)}.key"
    if path.exists():
        raise DkimError(
            f"{path} exists: its public key may be published already; choose another "
            "--selector to rotate, or delete the file first"
        )
    private = rsa.generate_private_key(public_exponent=65537, key_size=KEY_BITS)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,  # RFC 8017 RSAPrivateKey: dkimpy's form
        serialization.NoEncryption(),
    )
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        directory.chmod(0o700)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
    except OSError as exc:
        raise DkimError(f"cannot write the DKIM key {path}: {exc.strerror}") from exc
    return DkimKey(check_domain(domain), selector, path, pem)


def _read_key(path: Path, domain: str) -> DkimKey:
    try:
        pem = path.read_bytes()
        public_key_b64(pem)
    except OSError as exc:
        raise DkimError(f"cannot read the DKIM key {path}: {exc.strerror}") from exc
    except ValueError as exc:
        raise DkimError(
            f"{path} is not a PEM private key: delete it and run natsync dkim create {domain}"
        ) from exc
    return DkimKey(domain, path.stem, path, pem)


def load_key(data_dir: Path, domain: str, selector: str | None = None) -> DkimKey | None:
    """*domain*'s key (the given selector, else the newest), or None when it has none."""
    directory = key_dir(data_dir, domain)
    if selector is not None:
        path = directory / f"{check_selector(selector)}.key"
        return _read_key(path, check_domain(domain)) if path.exists() else None
    keys = sorted(directory.glob("*.key"), key=lambda p: (p.stat().st_mtime, p.name))
    return _read_key(keys[-1], check_domain(domain)) if keys else None


def load_keys(data_dir: Path) -> dict[str, DkimKey]:
    """Every domain's signing key under *data_dir* (newest selector per domain)."""
    root = data_dir / DKIM_DIR
    if not root.is_dir():
        return {}
    found: dict[str, DkimKey] = {}
    for directory in sorted(root.iterdir()):
        if directory.is_dir():
            key = load_key(data_dir, directory.name)
            if key is not None:
                found[key.domain] = key
    return found


def from_domain(raw: bytes) -> str | None:
    """The domain of the message's single From address (what DMARC aligns the signature with),
    or None for none or several (RFC 5322 allows a From list; nothing honest to sign for)."""
    headers = BytesHeaderParser(policy=compat32).parsebytes(raw)
    values = headers.get_all("From") or []
    addresses = [a for _, a in getaddresses([str(v) for v in values]) if "@" in a]
    if len(values) != 1 or len(addresses) != 1:
        return None
    return addresses[0].rpartition("@")[2].lower()


class DkimSigner:
    """Signs outbound messages with the key of their From domain (``Relay(dkim=...)``).

    A message whose From domain has no key leaves unsigned (logged once per domain): mail of
    a domain the operator has not set up yet still flows, and ``natsync check`` names the gap.
    """

    def __init__(self, keys: dict[str, DkimKey]) -> None:
        self._keys = {domain.lower(): key for domain, key in keys.items()}
        self._warned: set[str] = set()

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> DkimSigner | None:
        """The signer for every key under *data_dir*, or None when there is none."""
        keys = load_keys(data_dir)
        return cls(keys) if keys else None

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(sorted(self._keys))

    def sign(self, raw: bytes) -> bytes:
        """*raw* with a DKIM-Signature header in front, or *raw* itself when it cannot be signed
        (no key for its From domain, no single From address)."""
        domain = from_domain(raw)
        key = self._keys.get(domain) if domain else None
        if key is None:
            if domain not in self._warned:
                self._warned.add(domain or "")
                log.warning(
                    "outbound mail from %s leaves unsigned: no DKIM key (natsync dkim create %s)",
                    domain or "(no single From address)",
                    domain or "DOMAIN",
                )
            return raw
        message = raw if b"\r\n" in raw else raw.replace(b"\n", b"\r\n")
        try:
            header: bytes = dkim.sign(
                message,
                key.selector.encode("ascii"),
                key.domain.encode("ascii"),
                key.private_pem,
                canonicalize=CANONICALIZE,
            )
        except dkim.DKIMException as exc:
            log.warning("outbound mail from %s leaves unsigned: %s", domain, exc)
            return raw
        return header + message
