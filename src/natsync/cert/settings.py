"""The ``[cert]`` table: one set of keys, one parser, for `natsync run` and `natsync cert acme -c`.

A home user writes the public name and nothing else::

    [cert]
    name = "mail.example.com"

Everything else has a default (docs/cert.md lists the keys). :func:`parse_cert_table` checks
the table's shape (keys, types, old names) and returns :class:`CertSettings`, which refuses a
value that cannot work when it is constructed (``__post_init__``);
:meth:`CertSettings.manager_settings` turns it into what
:class:`natsync.cert.manager.CertificateManager` runs on. `natsync run`'s cert part, `natsync
check`, `natsync init` (which writes these keys) and `natsync cert acme -c FILE` all go through
here, so the table means the same everywhere.

Keys of the first `natsync run` table are still read under their old names
(:data:`RENAMED`: ``acme_directory``, ``acme_email``, ``acme_ca``); giving an old and its new
name together is refused, naming the new key.

Light on purpose (no cryptography import at load): natsync.deployment imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from natsync.config import port_of, scalar_setting
from natsync.errors import ConfigError

#: Where the certificate manager keeps its files under the data directory.
ACME_DIR = "acme"

#: Where the public certificate comes from: an ACME CA (renewed by natsync run), natsync's
#: private CA, or files someone else renews.
CERT_MODES = ("acme", "private-ca", "files")
CHALLENGE_CHOICES = ("auto", "http-01", "tls-alpn-01", "dns-01")
#: Old key -> new key (the keys of `natsync run`'s first [cert] table).
RENAMED = {"acme_directory": "directory", "acme_email": "email", "acme_ca": "ca_file"}
#: Scalar keys and their defaults (a home user writes ``name`` and nothing else).
DEFAULTS: dict[str, Any] = {
    "mode": "acme",
    "email": "",
    "directory": "production",
    "challenge": "auto",
    "ports_open": "unknown",
    "key": "ec",
    "dns_provider": "",
    "http_listen": "",
}
#: Every key the table takes (old names included, so the loader's unknown-key check passes them).
CERT_KEYS = frozenset({"name", "names", "ips", "ca_file", *DEFAULTS, *RENAMED})
#: Key types of the certificate (natsync.cert.ca.KEY_TYPES; repeated here to stay light).
KEYS = ("ec", "ecdsa-p256", "rsa", "rsa2048", "rsa3072")
#: ddns providers whose protocol cannot write TXT records (dyndns2 knows only addresses).
NO_TXT = frozenset({"dyndns2"})


def parse_ports_open(text: str) -> tuple[bool | None, bool | None]:
    """``unknown`` / ``none`` / ``80`` / ``443`` / ``80,443`` → (80 reachable, 443 reachable)."""
    if text.strip() == "unknown":
        return None, None
    ports = {p.strip() for p in text.split(",") if p.strip()} - {"none"}
    if not ports <= {"80", "443"}:
        raise ConfigError(f"ports_open {text!r}: use unknown, none, 80, 443 or 80,443")
    return "80" in ports, "443" in ports


@dataclass(frozen=True, slots=True)
class CertSettings:
    """The checked ``[cert]`` table."""

    mode: str = "acme"
    names: tuple[str, ...] = ()
    ips: tuple[str, ...] = ()
    email: str = ""
    #: ``production`` / ``staging`` (Let's Encrypt) or an ACME directory https:// URL.
    directory: str = "production"
    challenge: str = "auto"
    #: Which of ports 80 and 443 the router forwards here (what ``auto`` goes by until the
    #: router's own answers to natsync's port mapping are known).
    ports_open: str = "unknown"
    key: str = "ec"
    #: The [ddns] provider that publishes DNS-01 TXT records ("" = ddns.provider).
    dns_provider: str = ""
    #: host:port of the cert part's own HTTP-01 responder, when the edge has no port 80
    #: (edge.http_listen); "" = none.
    http_listen: str = ""
    #: Roots of the ACME server's own TLS certificate (test CAs such as pebble); None: system.
    ca_file: Path | None = None
    #: Old key names found in the table (still read; `natsync check` names the new ones).
    renamed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        """A value that cannot work is refused here, when the settings are made (ConfigError
        naming the key), whoever makes them: the table's parser or a caller's ``replace``."""
        if self.mode not in CERT_MODES:
            raise ConfigError(
                f"cert.mode must be one of {', '.join(CERT_MODES)}, not {self.mode!r}"
            )
        if self.mode == "acme" and not self.names and not self.ips:
            raise ConfigError(
                'cert.name: the public name to certify, e.g. name = "mail.example.com"'
            )
        _check_directory(self.directory)
        if self.challenge not in CHALLENGE_CHOICES:
            raise ConfigError(
                f"cert.challenge must be one of {', '.join(CHALLENGE_CHOICES)}, "
                f"not {self.challenge!r}"
            )
        try:
            parse_ports_open(self.ports_open)
        except ConfigError as exc:
            raise ConfigError(f"cert.{exc.message}") from None
        if self.key not in KEYS:
            raise ConfigError(f"cert.key must be one of {', '.join(KEYS)}, not {self.key!r}")
        if self.http_listen:
            host, sep, port = self.http_listen.rpartition(":")
            if not sep or not host.strip("[]") or port_of(port) is None:
                raise ConfigError(f"cert.http_listen must be host:port, not {self.http_listen!r}")

    @property
    def reachable(self) -> tuple[bool | None, bool | None]:
        """(port 80, port 443) reachable from outside, as ``ports_open`` says."""
        return parse_ports_open(self.ports_open)

    def manager_settings(
        self,
        data_dir: Path,
        *,
        cert_dir: Path | None = None,
        basename: str = "server",
        email: str = "",
    ) -> ManagerSettings:
        """The :class:`ManagerSettings` of this table (*email*: the
        contact when the table names none, e.g. admin.email)."""
        http_open, tls_open = self.reachable
        return ManagerSettings(
            names=self.names,
            ips=self.ips,
            data_dir=data_dir,
            directory=self.directory,
            challenge=self.challenge,
            email=self.email or email,
            cert_dir=cert_dir,
            basename=basename,
            key_type=self.key,
            ca_file=self.ca_file,
            http_reachable=http_open,
            tls_reachable=tls_open,
        )


def _strings(table: dict[str, Any], key: str) -> list[str]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"cert.{key} must be a list of strings")
    return list(value)


def parse_cert_table(table: dict[str, Any], base: Path | None = None) -> CertSettings:
    """Check the ``[cert]`` table (relative paths from *base*, the file's directory)."""
    if not isinstance(table, dict):
        raise ConfigError("cert must be a table ([cert])")
    unknown = set(table) - CERT_KEYS
    if unknown:
        raise ConfigError(f"unknown cert setting(s): {', '.join(sorted(unknown))}")
    table = dict(table)
    renamed = tuple(sorted(k for k in RENAMED if k in table))
    for old in renamed:
        new = RENAMED[old]
        if new in table:
            raise ConfigError(f"cert.{old} is the old name of cert.{new}: keep only {new}")
        table[new] = table.pop(old)
    if "name" in table and "names" in table:
        raise ConfigError("give cert.name (one name) or cert.names (a list), not both")
    if "name" in table:
        if not isinstance(table["name"], str) or not table["name"]:
            raise ConfigError('cert.name must be the public name, e.g. "mail.example.com"')
        names = [table["name"]]
    else:
        names = _strings(table, "names")
    ips = _strings(table, "ips")
    values = {
        key: scalar_setting("cert", key, default, table.get(key, default))
        for key, default in DEFAULTS.items()
    }
    ca_file = None
    if "ca_file" in table:
        raw = table["ca_file"]
        if not isinstance(raw, str) or not raw:
            raise ConfigError("cert.ca_file must be a path (a non-empty string)")
        ca_file = Path(raw)
        if not ca_file.is_absolute() and base is not None:
            ca_file = base / ca_file
    return CertSettings(
        mode=values["mode"],
        names=tuple(n.lower().rstrip(".") for n in names),
        ips=tuple(ips),
        email=values["email"],
        directory=values["directory"],
        challenge=values["challenge"],
        ports_open=values["ports_open"],
        key=values["key"],
        dns_provider=values["dns_provider"],
        http_listen=values["http_listen"],
        ca_file=ca_file,
        renamed=renamed,
    )


def _check_directory(value: str) -> None:
    from natsync.cert.acme import AcmeError, resolve_directory

    try:
        resolve_directory(value)
    except AcmeError as exc:
        raise ConfigError(f"cert.directory: {exc.message}") from None


def dns_provider(cert: CertSettings, ddns: Any) -> tuple[str | None, str]:
    """The [ddns] provider that publishes DNS-01 TXT records, or (None, why there is none).

    *ddns* is the deployment's DdnsSettings (None without a [ddns] table)."""
    if ddns is None:
        return None, "no [ddns] table: dns-01 needs a DNS updater"
    provider = cert.dns_provider or ddns.provider
    if provider in NO_TXT:
        return None, (
            f"ddns.provider {provider} cannot set TXT records; name one that can in "
            'cert.dns_provider (e.g. "rfc2136" with ddns.server/zone/key_file, or a provider '
            "table such as [ddns.cloudflare])"
        )
    return provider, ""


def check_with_ddns(cert: CertSettings, ddns: Any) -> None:
    """What [cert] asks of [ddns]: dns-01 (or a dns_provider) needs a provider that can."""
    if cert.mode != "acme":
        return
    if cert.dns_provider:
        if ddns is None:
            raise ConfigError("cert.dns_provider names a [ddns] provider, but there is no [ddns]")
        try:
            ddns.check_provider(cert.dns_provider)
            if cert.dns_provider != "rfc2136":
                ddns.provider_settings(cert.dns_provider)
            elif not (ddns.server and ddns.zone):
                raise ConfigError("ddns.server and ddns.zone (RFC 2136) are needed")
        except ConfigError as exc:
            raise ConfigError(f"cert.dns_provider {cert.dns_provider}: {exc.message}") from None
    if cert.challenge == "dns-01":
        provider, why = dns_provider(cert, ddns)
        if provider is None:
            raise ConfigError(f"cert.challenge = dns-01: {why}")


__all__ = [
    "CERT_KEYS",
    "CERT_MODES",
    "CHALLENGE_CHOICES",
    "RENAMED",
    "CertSettings",
    "check_with_ddns",
    "dns_provider",
    "parse_cert_table",
    "parse_ports_open",
]


@dataclass(frozen=True, slots=True)
class ManagerSettings:
    """What the manager needs to know; everything else has a home-user default."""

    names: tuple[str, ...]
    data_dir: Path
    ips: tuple[str, ...] = ()
    #: ``production`` / ``staging`` (Let's Encrypt) or an https URL.
    directory: str = "production"
    challenge: str = "auto"
    email: str = ""
    #: Where ``<basename>.pem`` / ``.key`` go (default ``<data_dir>/tls``).
    cert_dir: Path | None = None
    basename: str = "server"
    key_type: str = "ec"
    #: Roots that sign the ACME server's own TLS certificate (test CAs only).
    ca_file: Path | None = None
    #: Whether ports 80 / 443 reach the edge from outside (None: unknown).
    http_reachable: bool | None = None
    tls_reachable: bool | None = None

    @property
    def out_dir(self) -> Path:
        return self.cert_dir or self.data_dir / "tls"

    @property
    def cert_path(self) -> Path:
        return self.out_dir / f"{self.basename}.pem"

    @property
    def key_path(self) -> Path:
        return self.out_dir / f"{self.basename}.key"

    @property
    def acme_dir(self) -> Path:
        return self.data_dir / ACME_DIR
