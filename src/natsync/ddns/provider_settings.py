"""The provider tables inside ``[ddns]``: ``[ddns.dyndns2]``, ``[ddns.duckdns]``,
``[ddns.cloudflare]``, ``[ddns.desec]``, ``[ddns.command]`` (RFC 2136 keeps its keys in ``[ddns]``
itself: ``server``, ``zone``, ``key_file``).

Each table is checked when it is read, and an error names the key (``ddns.cloudflare.token``).
A secret (password, token) is given inline or, better, as ``password_file`` / ``token_file`` so it
need not sit in the TOML file; it is read at load time, kept in a :class:`Secret` whose repr hides
it, and never logged.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from natsync.errors import ConfigError

PROVIDERS = ("rfc2136", "dyndns2", "duckdns", "cloudflare", "desec", "command")
#: Providers whose records can be checked through their own API instead of DNS.
API_CONFIRM = ("cloudflare", "desec")
#: A secret file longer than this is not a token or a password.
MAX_SECRET_FILE = 4096
#: Seconds per HTTP request to a provider.
DEFAULT_HTTP_TIMEOUT = 10.0
#: Seconds a `command` updater may run before it is killed.
DEFAULT_COMMAND_TIMEOUT = 30.0
#: Upper bound for command.timeout: the loop must not hang on a stuck program.
MAX_COMMAND_TIMEOUT = 600.0
#: The providers' documented endpoints (each module cites its documentation).
DUCKDNS_URL = "https://www.duckdns.org/update"
CLOUDFLARE_API = "https://api.cloudflare.com/client/v4"
DESEC_API = "https://desec.io/api/v1"


@dataclass(frozen=True, slots=True)
class Secret:
    """A password or token: its repr and str never show it."""

    value: str = field(repr=False)

    def __repr__(self) -> str:
        return "Secret(<hidden>)"

    def __str__(self) -> str:
        return "<hidden>"


@dataclass(frozen=True, slots=True)
class Dyndns2Settings:
    #: The provider's update URL, e.g. https://dynupdate.no-ip.com/nic/update.
    url: str
    username: str
    password: Secret
    ca_file: Path | None = None
    timeout: float = DEFAULT_HTTP_TIMEOUT


@dataclass(frozen=True, slots=True)
class DuckdnsSettings:
    token: Secret
    url: str = DUCKDNS_URL
    ca_file: Path | None = None
    timeout: float = DEFAULT_HTTP_TIMEOUT


@dataclass(frozen=True, slots=True)
class CloudflareSettings:
    #: A scoped API token with Zone:Read and DNS:Edit on the zone.
    token: Secret
    api: str = CLOUDFLARE_API
    #: The zone's id; empty: found by name through GET /zones?name=.
    zone_id: str = ""
    #: "dns": confirm at the zone's authoritative servers; "api": through the API.
    confirm: str = "dns"
    ca_file: Path | None = None
    timeout: float = DEFAULT_HTTP_TIMEOUT


@dataclass(frozen=True, slots=True)
class DesecSettings:
    token: Secret
    api: str = DESEC_API
    #: The deSEC domain; empty: found with GET /domains/?owns_qname=.
    domain: str = ""
    confirm: str = "dns"
    ca_file: Path | None = None
    timeout: float = DEFAULT_HTTP_TIMEOUT


@dataclass(frozen=True, slots=True)
class CommandSettings:
    #: Program and arguments; {action} {name} {type} {address} {ttl} {value} are filled in.
    argv: tuple[str, ...]
    timeout: float = DEFAULT_COMMAND_TIMEOUT


ProviderSettings = (
    Dyndns2Settings | DuckdnsSettings | CloudflareSettings | DesecSettings | CommandSettings
)


class _Table:
    """Reads one provider table, naming ``ddns.<provider>.<key>`` in every error."""

    def __init__(self, provider: str, table: Any, base: Path | None) -> None:
        if not isinstance(table, dict):
            raise ConfigError(f"[ddns.{provider}] must be a table")
        self.provider = provider
        self.table: dict[str, Any] = dict(table)
        self.base = base
        self.used: set[str] = set()

    def where(self, key: str) -> str:
        return f"ddns.{self.provider}.{key}"

    def text(self, key: str, default: str | None = None) -> str:
        self.used.add(key)
        value = self.table.get(key, default)
        if value is None:
            raise ConfigError(f"{self.where(key)} is required for provider {self.provider}")
        if not isinstance(value, str):
            raise ConfigError(f"{self.where(key)} must be a string")
        return value

    def url(self, key: str, default: str | None = None) -> str:
        value = self.text(key, default)
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConfigError(
                f"{self.where(key)} must be an https:// (or http://) URL, not {value!r}"
            )
        return value.rstrip("/") if key == "api" else value

    def number(self, key: str, default: float, upper: float) -> float:
        self.used.add(key)
        value = self.table.get(key, default)
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise ConfigError(f"{self.where(key)} must be a number of seconds")
        if not 0 < value <= upper:
            raise ConfigError(f"{self.where(key)} must be > 0 and <= {upper:g} seconds")
        return float(value)

    def path(self, key: str) -> Path | None:
        self.used.add(key)
        value = self.table.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{self.where(key)} must be a path")
        path = Path(value)
        path = path if path.is_absolute() or self.base is None else self.base / path
        if not path.is_file():
            raise ConfigError(f"{self.where(key)}: no such file {path}")
        return path

    def choice(self, key: str, default: str, choices: tuple[str, ...]) -> str:
        value = self.text(key, default)
        if value not in choices:
            raise ConfigError(f"{self.where(key)} must be one of {', '.join(choices)}")
        return value

    def secret(self, key: str) -> Secret:
        """``key`` inline or ``key_file`` (a file holding only the secret), exactly one."""
        file_key = f"{key}_file"
        self.used.update((key, file_key))
        inline, file = self.table.get(key), self.table.get(file_key)
        if inline is not None and file is not None:
            raise ConfigError(f"give {self.where(key)} or {self.where(file_key)}, not both")
        if inline is not None:
            if not isinstance(inline, str) or not inline.strip():
                raise ConfigError(f"{self.where(key)} must be a non-empty string")
            return Secret(inline.strip())
        if file is None:
            raise ConfigError(
                f"{self.where(file_key)} (a file holding the {key}) is required for provider "
                f"{self.provider}"
            )
        if not isinstance(file, str) or not file:
            raise ConfigError(f"{self.where(file_key)} must be a path")
        path = Path(file)
        path = path if path.is_absolute() or self.base is None else self.base / path
        try:
            data = path.read_bytes()[: MAX_SECRET_FILE + 1]
        except OSError as exc:
            raise ConfigError(
                f"{self.where(file_key)}: cannot read {path}: {exc.strerror}"
            ) from exc
        text = data.decode("utf-8", "replace").strip()
        if not text or len(data) > MAX_SECRET_FILE or "\n" in text:
            raise ConfigError(
                f"{self.where(file_key)}: {path} must hold the {key} alone on one line"
            )
        return Secret(text)

    def done(self) -> None:
        unknown = set(self.table) - self.used
        if unknown:
            raise ConfigError(
                f"unknown ddns.{self.provider} setting(s): {', '.join(sorted(unknown))}"
            )


def parse_provider(provider: str, table: Any, base: Path | None) -> ProviderSettings:
    """The settings of one provider table, checked."""
    t = _Table(provider, table, base)
    result: ProviderSettings
    if provider == "dyndns2":
        result = Dyndns2Settings(
            url=t.url("url"),
            username=t.text("username"),
            password=t.secret("password"),
            ca_file=t.path("ca_file"),
            timeout=t.number("timeout", DEFAULT_HTTP_TIMEOUT, 120),
        )
        if ":" in result.username:
            raise ConfigError("ddns.dyndns2.username must not contain ':' (HTTP basic auth)")
    elif provider == "duckdns":
        result = DuckdnsSettings(
            token=t.secret("token"),
            url=t.url("url", DUCKDNS_URL),
            ca_file=t.path("ca_file"),
            timeout=t.number("timeout", DEFAULT_HTTP_TIMEOUT, 120),
        )
    elif provider == "cloudflare":
        result = CloudflareSettings(
            token=t.secret("token"),
            api=t.url("api", CLOUDFLARE_API),
            zone_id=t.text("zone_id", ""),
            confirm=t.choice("confirm", "dns", ("dns", "api")),
            ca_file=t.path("ca_file"),
            timeout=t.number("timeout", DEFAULT_HTTP_TIMEOUT, 120),
        )
    elif provider == "desec":
        result = DesecSettings(
            token=t.secret("token"),
            api=t.url("api", DESEC_API),
            domain=t.text("domain", "").rstrip(".").lower(),
            confirm=t.choice("confirm", "dns", ("dns", "api")),
            ca_file=t.path("ca_file"),
            timeout=t.number("timeout", DEFAULT_HTTP_TIMEOUT, 120),
        )
    elif provider == "command":
        t.used.add("argv")
        argv = t.table.get("argv")
        if (
            not isinstance(argv, list)
            or not argv
            or not all(isinstance(a, str) and a for a in argv)
        ):
            raise ConfigError(
                "ddns.command.argv must be a non-empty list of strings (program and arguments)"
            )
        result = CommandSettings(
            argv=tuple(argv),
            timeout=t.number("timeout", DEFAULT_COMMAND_TIMEOUT, MAX_COMMAND_TIMEOUT),
        )
    else:
        raise ConfigError(f"ddns.provider must be one of {', '.join(PROVIDERS)}, not {provider!r}")
    t.done()
    return result
