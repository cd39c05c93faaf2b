"""The console's gate, sans-I/O: sessions, CSRF tokens, the login rate limit, the audit line.

Every page and action needs a session (a random token in an HttpOnly, SameSite=Strict cookie,
Secure under TLS); every change (POST) needs the session's CSRF token in its form, compared in
constant time; failed logins are counted per address and in all, and past the limit a login is
refused before its password is even hashed. Time is an argument (seconds, monotonic or not:
the caller's clock).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import secrets
from collections import deque
from dataclasses import dataclass, field

#: Cookie that carries the session token.
COOKIE = "natsync_console"
#: Failed logins allowed per address, and in all, within LOGIN_WINDOW seconds: an admin who
#: mistypes a few times is not locked out long; a guesser gets a handful of tries per window.
MAX_FAILURES_PER_ADDRESS = 5
MAX_FAILURES_TOTAL = 20
LOGIN_WINDOW = 300.0
#: Sessions kept at once (the oldest goes): a console has one or two admins.
MAX_SESSIONS = 64


@dataclass(slots=True)
class Session:
    token: str
    csrf: str
    user: str
    created: float
    seen: float


@dataclass(slots=True)
class Sessions:
    idle: float
    lifetime: float
    _by_token: dict[str, Session] = field(default_factory=dict)

    def open(self, user: str, now: float) -> Session:
        if len(self._by_token) >= MAX_SESSIONS:
            oldest = min(self._by_token.values(), key=lambda s: s.seen)
            del self._by_token[oldest.token]
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), user, now, now)
        self._by_token[session.token] = session
        return session

    def get(self, token: str | None, now: float) -> Session | None:
        if not token:
            return None
        session = self._by_token.get(token)
        if session is None:
            return None
        if now - session.seen > self.idle or now - session.created > self.lifetime:
            del self._by_token[token]
            return None
        session.seen = now
        return session

    def close(self, token: str | None) -> None:
        if token:
            self._by_token.pop(token, None)


def host_ok(host: str, allowed: frozenset[str]) -> bool:
    """The Host header names the console by address, as ``localhost``, or by a name the admin
    listed (console.allowed_hosts). Anything else is refused: a web page whose own name was
    made to resolve to 127.0.0.1 (DNS rebinding) must not reach the console from the admin's
    browser."""
    name = host.strip().lower()
    if name.startswith("["):  # [::1]:8444
        name = name[1:].partition("]")[0]
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    if not name:
        return False
    if name == "localhost" or name in allowed:
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def csrf_ok(session: Session, sent: str | None) -> bool:
    return bool(sent) and hmac.compare_digest(session.csrf.encode(), str(sent).encode())


@dataclass(slots=True)
class LoginLimiter:
    per_address: int = MAX_FAILURES_PER_ADDRESS
    total: int = MAX_FAILURES_TOTAL
    window: float = LOGIN_WINDOW
    _failures: dict[str, deque[float]] = field(default_factory=dict)
    _all: deque[float] = field(default_factory=deque)

    def _trim(self, times: deque[float], now: float) -> None:
        while times and now - times[0] > self.window:
            times.popleft()

    def allowed(self, address: str, now: float) -> bool:
        self._trim(self._all, now)
        mine = self._failures.get(address)
        if mine is not None:
            self._trim(mine, now)
            if not mine:
                del self._failures[address]
                mine = None
        return len(self._all) < self.total and (mine is None or len(mine) < self.per_address)

    def failed(self, address: str, now: float) -> None:
        self._failures.setdefault(address, deque()).append(now)
        self._all.append(now)

    def succeeded(self, address: str) -> None:
        self._failures.pop(address, None)


def audit_line(at: str, admin: str, remote: str, action: str, target: str, result: str) -> str:
    """One JSON line per change an admin makes (or tries): who, from where, what, on what."""
    return json.dumps(
        {
            "at": at,
            "admin": admin,
            "remote": remote,
            "action": action,
            "target": target,
            "result": result,
        },
        separators=(",", ":"),
    )
