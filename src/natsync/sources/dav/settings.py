"""The ``[sources.dav]`` table: where the CalDAV/CardDAV server is and how often to ask it.

    [sources.dav]
    url = "https://dav.example.org/"      # base URL; discovery finds the user's collections
    ca_file = "/etc/ssl/dav-ca.pem"       # optional: CA bundle for a private certificate
    interval = 30                         # seconds between sync-collection rounds (push latency)
    users = ["ann", "bob"]                # optional: only these natsync users (default: all)
    login = "{user}"                      # the DAV login: {user} natsync's name, {email} address

No password is configured: the worker of a user logs in with the credentials that user's phone
just presented to natsync (natsync.server.auth), kept in memory only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from natsync.errors import ConfigError

#: Seconds between rounds by default: a phone sees a change made elsewhere within this time.
DEFAULT_INTERVAL = 60.0
#: Fastest allowed round: every round is one REPORT per collection against the user's server.
MIN_INTERVAL = 1.0
#: Seconds one HTTP request to the DAV server may take before the round is given up.
DEFAULT_TIMEOUT = 30.0


@dataclass(frozen=True, slots=True)
class DavSettings:
    url: str
    ca_file: Path | None = None
    interval: float = DEFAULT_INTERVAL
    timeout: float = DEFAULT_TIMEOUT
    users: tuple[str, ...] = ()  # empty: every user who logs in
    login: str = "{user}"

    def login_for(self, user: str, email: str) -> str:
        return self.login.replace("{user}", user).replace("{email}", email)

    def wants(self, user: str) -> bool:
        return not self.users or user.lower() in {u.lower() for u in self.users}


def dav_settings_from_dict(table: dict[str, Any], base: Path | None = None) -> DavSettings:
    """The checked settings of a ``[sources.dav]`` table (relative paths from *base*)."""
    known = {"url", "ca_file", "interval", "timeout", "users", "login"}
    unknown = set(table) - known
    if unknown:
        raise ConfigError(f"unknown sources.dav setting(s): {', '.join(sorted(unknown))}")
    url = table.get("url")
    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise ConfigError("sources.dav.url must be the http(s) URL of the CalDAV/CardDAV server")
    if not urlsplit(url).hostname:
        raise ConfigError(f"sources.dav.url {url!r} names no host")
    ca_file: Path | None = None
    if "ca_file" in table:
        if not isinstance(table["ca_file"], str) or not table["ca_file"]:
            raise ConfigError("sources.dav.ca_file must be a path")
        ca_file = Path(table["ca_file"])
        if not ca_file.is_absolute() and base is not None:
            ca_file = base / ca_file
    numbers: dict[str, float] = {}
    for key, default in (("interval", DEFAULT_INTERVAL), ("timeout", DEFAULT_TIMEOUT)):
        value = table.get(key, default)
        if not isinstance(value, int | float) or isinstance(value, bool) or value < MIN_INTERVAL:
            raise ConfigError(f"sources.dav.{key} must be a number of seconds >= {MIN_INTERVAL}")
        numbers[key] = float(value)
    users = table.get("users", [])
    if not isinstance(users, list) or not all(isinstance(u, str) for u in users):
        raise ConfigError("sources.dav.users must be a list of natsync user names")
    login = table.get("login", "{user}")
    if not isinstance(login, str) or not login:
        raise ConfigError('sources.dav.login must be a string such as "{user}" or "{email}"')
    if not url.endswith("/"):
        url += "/"
    return DavSettings(url, ca_file, numbers["interval"], numbers["timeout"], tuple(users), login)


def dav_settings(data: dict[str, Any], base: Path | None = None) -> DavSettings | None:
    """The ``[sources.dav]`` table of a whole config file, or None when it has none."""
    sources = data.get("sources", {})
    if not isinstance(sources, dict):
        raise ConfigError("[sources] must be a table")
    table = sources.get("dav")
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError("[sources.dav] must be a table")
    return dav_settings_from_dict(table, base)
