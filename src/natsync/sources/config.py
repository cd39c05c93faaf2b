"""The ``[sources]`` table: where each user's mailbox comes from.

natsync's own store is the default. A deployment in front of an existing mail server names its
IMAP servers (each with the SMTP submission service that sends for it) and says which domains,
and optionally which users, they serve::

    [sources]
    default = "store"                 # "store" or the name of an [sources.imap.*] server
    lease = 30                        # seconds: another process takes over a dead one's mirrors

    [sources.imap.home]
    host = "mail.example.org"
    port = 993                        # default: 993 for tls = "implicit", 143 for "starttls"
    tls = "implicit"                  # or "starttls"
    ca_file = "/etc/natsync/mail-ca.pem"   # optional: trust this CA instead of the system's
    submission_host = "mail.example.org"   # default: host
    submission_port = 587             # default: 587 with STARTTLS (465: implicit TLS)
    submission_tls = "starttls"       # default: "implicit" for port 465, else "starttls"
    sent_copy = "append"              # or "server": the server files the Sent copy itself

    [sources.domains]
    "example.org" = "home"

    [sources.users]
    "archive@example.org" = "store"   # one user kept in natsync's own store

Plain-text IMAP is not offered on purpose: the users' passwords travel to the IMAP server at
every login check. Every mistake raises :class:`ConfigError` naming the key.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from natsync.errors import ConfigError
from natsync.sources.lease import DEFAULT_LEASE, MIN_LEASE

#: The name that means natsync's own store (it cannot name an IMAP server).
STORE = "store"


class SentCopy(enum.StrEnum):
    """Who puts the Sent copy of a phone's SendMail/SmartReply/SmartForward into the Sent
    mailbox: natsync (``APPEND``, RFC 3501 §6.3.11), or the mail server itself (a Sieve rule
    on a copy Postfix's ``sender_bcc_maps`` delivers, Dovecot's imapsieve, a submission
    service that saves one): then natsync's copy waits for the server's, matched by
    Message-ID (natsync.sources.worker)."""

    APPEND = "append"
    SERVER = "server"


class TlsMode(enum.StrEnum):
    """How the connection to the mail server is secured (RFC 8314 §3 implicit, RFC 3501 §6.2.1
    / RFC 3207 STARTTLS)."""

    IMPLICIT = "implicit"
    STARTTLS = "starttls"


@dataclass(frozen=True, slots=True)
class ImapServer:
    name: str
    host: str
    port: int
    tls: TlsMode
    ca_file: Path | None
    submission_host: str
    submission_port: int
    submission_tls: TlsMode
    sent_copy: SentCopy = SentCopy.APPEND


@dataclass(frozen=True, slots=True)
class SourcesConfig:
    default: str = STORE
    imap: Mapping[str, ImapServer] = field(default_factory=dict)
    domains: Mapping[str, str] = field(default_factory=dict)
    users: Mapping[str, str] = field(default_factory=dict)
    #: Seconds a process's hold on mirroring an account lasts unrenewed (natsync.sources.lease).
    lease: float = DEFAULT_LEASE

    def server_for(self, login: str) -> ImapServer | None:
        """The IMAP server of *login* (a user name or address), or None: natsync's own store.

        A user's own entry wins over their domain's, which wins over the default."""
        login = login.strip().lower()
        choice = self.users.get(login)
        if choice is None and "@" in login:
            choice = self.domains.get(login.rpartition("@")[2])
        if choice is None:
            choice = self.default
        return None if choice == STORE else self.imap[choice]

    @property
    def any_imap(self) -> bool:
        return bool(self.imap) and (
            self.default != STORE
            or any(v != STORE for v in self.domains.values())
            or any(v != STORE for v in self.users.values())
        )


#: Keys of [sources]; "dav" is the CalDAV/CardDAV source's own table (natsync.sources.dav.settings).
SOURCES_KEYS = _SOURCES_KEYS = {"default", "imap", "domains", "users", "dav", "lease"}
_SERVER_KEYS = {
    "host",
    "port",
    "tls",
    "ca_file",
    "submission_host",
    "submission_port",
    "submission_tls",
    "sent_copy",
}


def _string(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{key} must be a non-empty string")
    return value.strip()


def _port(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ConfigError(f"{key} must be a port number 1..65535, not {value!r}")
    return int(value)


def _tls(value: Any, key: str) -> TlsMode:
    try:
        return TlsMode(value)
    except ValueError:
        raise ConfigError(
            f'{key} must be "implicit" or "starttls", not {value!r} (plain text is not '
            "offered: users' passwords go to this server)"
        ) from None


def _server(name: str, table: Any, base: Path | None) -> ImapServer:
    prefix = f"sources.imap.{name}"
    if not isinstance(table, dict):
        raise ConfigError(f"{prefix} must be a table")
    unknown = set(table) - _SERVER_KEYS
    if unknown:
        raise ConfigError(f"unknown setting(s) in {prefix}: {', '.join(sorted(unknown))}")
    if "host" not in table:
        raise ConfigError(f"{prefix}.host is missing: the IMAP server's name or address")
    host = _string(table["host"], f"{prefix}.host")
    tls = _tls(table.get("tls", "implicit"), f"{prefix}.tls")
    port = _port(table.get("port", 993 if tls is TlsMode.IMPLICIT else 143), f"{prefix}.port")
    ca_file: Path | None = None
    if "ca_file" in table:
        ca_file = Path(_string(table["ca_file"], f"{prefix}.ca_file"))
        if base is not None and not ca_file.is_absolute():
            ca_file = base / ca_file
        if not ca_file.is_file():
            raise ConfigError(f"{prefix}.ca_file: {ca_file} is not a readable file")
    sub_host = _string(table.get("submission_host", host), f"{prefix}.submission_host")
    sub_port = _port(table.get("submission_port", 587), f"{prefix}.submission_port")
    sub_tls = _tls(
        table.get("submission_tls", "implicit" if sub_port == 465 else "starttls"),
        f"{prefix}.submission_tls",
    )
    try:
        sent_copy = SentCopy(table.get("sent_copy", SentCopy.APPEND.value))
    except ValueError:
        raise ConfigError(
            f'{prefix}.sent_copy must be "append" (natsync files the Sent copy) or "server" (the '
            f"mail server files its own), not {table['sent_copy']!r}"
        ) from None
    return ImapServer(name, host, port, tls, ca_file, sub_host, sub_port, sub_tls, sent_copy)


def _choices(table: Any, key: str, names: set[str]) -> dict[str, str]:
    if not isinstance(table, dict):
        raise ConfigError(f"{key} must be a table of name = source")
    found: dict[str, str] = {}
    for name, choice in table.items():
        where = f"{key}.{name!r}" if "." in name else f"{key}.{name}"
        if not isinstance(choice, str) or choice not in names:
            raise ConfigError(
                f"{where} must name a source: {', '.join(sorted(names))} (not {choice!r})"
            )
        found[name.strip().lower()] = choice
    return found


def load_sources(path: Path | str | None) -> SourcesConfig:
    """The ``[sources]`` table of the deployment file at *path* (None: the own store only)."""
    if path is None:
        return SourcesConfig()
    from natsync.config import read_toml

    path = Path(path)
    return sources_from_dict(read_toml(path).get("sources"), base=path.parent)


def sources_from_dict(table: Any, base: Path | None = None) -> SourcesConfig:
    """The validated ``[sources]`` table (*base*: the config file's directory, for ca_file)."""
    if table is None:
        return SourcesConfig()
    if not isinstance(table, dict):
        raise ConfigError("sources must be a table")
    unknown = set(table) - _SOURCES_KEYS
    if unknown:
        raise ConfigError(f"unknown setting(s) in sources: {', '.join(sorted(unknown))}")
    servers_table = table.get("imap", {})
    if not isinstance(servers_table, dict):
        raise ConfigError("sources.imap must be a table of named IMAP servers")
    servers = {}
    for name, server in servers_table.items():
        if name == STORE:
            raise ConfigError(f"sources.imap.{STORE}: {STORE!r} names natsync's own store")
        servers[name] = _server(name, server, base)
    names = {STORE, *servers}
    default = table.get("default", STORE)
    if default not in names:
        raise ConfigError(
            f"sources.default must name a source: {', '.join(sorted(names))} (not {default!r})"
        )
    lease = table.get("lease", DEFAULT_LEASE)
    if isinstance(lease, bool) or not isinstance(lease, int | float) or lease < MIN_LEASE:
        raise ConfigError(
            f"sources.lease must be a number of seconds >= {MIN_LEASE:g} (how long another "
            f"natsync process waits before it takes over a dead one's mirrors), not {lease!r}"
        )
    return SourcesConfig(
        default=default,
        imap=servers,
        domains=_choices(table.get("domains", {}), "sources.domains", names),
        users=_choices(table.get("users", {}), "sources.users", names),
        lease=float(lease),
    )
