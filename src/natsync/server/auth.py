"""HTTP Basic authentication for the ActiveSync endpoint, with failed-login rate limits.

Rules (issue 3, "HTTP and sessions"):

* A wrong password and an unknown user are answered identically — same status, same header,
  and the same work: an unknown user's guess is checked against a dummy scrypt hash, so the
  response time does not tell whether the account exists.
* Failed logins are counted per (user name, client address) and per client address — never
  per user name alone, or a guesser anywhere could lock the owner out (issue 19). Past the
  limit (``max_per_user`` failures for a pair, ``max_per_ip`` for an address) each failure
  locks that pair or address for a delay that doubles each time
  (:data:`FIRST_LOCK` seconds up to :data:`MAX_LOCK`); while locked the request gets 429 with
  Retry-After, without any password being checked. The owner's right password from another
  address is checked as usual. A key is forgotten ``window`` seconds after its last failure
  or the end of its lock, whichever is later. Unknown and existing users are counted the
  same way, so neither answer nor timing tells whether an account exists.
* Phones send Basic credentials with every request, and scrypt costs ~50-100 ms on purpose, so a
  verified (user, password) is remembered — as a keyed digest, never the password — for as long
  as the stored hash is unchanged (a password change invalidates it at once) and at most
  ``VERIFIED_TTL`` seconds.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from natsync.auth.passwords import hash_password, verify_password
from natsync.store.api import Store, User

#: Seconds a verified login is trusted without running scrypt again.
VERIFIED_TTL = 900.0
#: Verified logins remembered at once (one per user and password; a few per device).
MAX_VERIFIED = 10_000
#: Longest Authorization header value we decode (a user name and password, base64).
MAX_AUTHORIZATION = 2048
#: Distinct users / addresses whose failures are tracked; beyond it the oldest are forgotten.
MAX_TRACKED = 100_000
#: Seconds of the first lock past the free failures; each further failure doubles it.
FIRST_LOCK = 1.0
#: The longest lock (seconds): a guesser gets a try every quarter hour at most, while a phone
#: with an old password, once fixed, is not shut out for long.
MAX_LOCK = 900.0


@dataclass(frozen=True, slots=True)
class AuthResult:
    user: User | None
    #: 401 (no or wrong credentials) or 429 (rate limited) when user is None.
    http_status: int = 200
    name: str = ""
    #: With 429: whole seconds until the lock ends (the Retry-After to send).
    retry_after: int = 0


class LoginDelegate(Protocol):
    """Another judge of some users' passwords (natsync.sources: their IMAP server)."""

    def handles(self, name: str) -> bool: ...
    async def check(self, name: str, password: str) -> tuple[User | None, int]: ...


class Backoff:
    """Failures per key (sans-I/O: *now* is passed in). The *limit*-th failure locks the key
    for FIRST_LOCK seconds, each one after for twice as long as the last, up to MAX_LOCK.
    A key is forgotten *window* seconds after its last failure or the end of its lock."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        #: key -> [failures, time of the last one, end of the lock]
        self._keys: dict[str, list[float]] = {}

    def _get(self, key: str, now: float) -> list[float] | None:
        entry = self._keys.get(key)
        if entry is not None and now - max(entry[1], entry[2]) > self.window:
            del self._keys[key]
            return None
        return entry

    def locked_for(self, key: str, now: float) -> float:
        """Seconds the key stays locked (0: it may try)."""
        entry = self._get(key, now)
        return max(0.0, entry[2] - now) if entry is not None else 0.0

    def fail(self, key: str, now: float) -> None:
        entry = self._get(key, now)
        if entry is None:
            if len(self._keys) >= MAX_TRACKED:
                self._keys.pop(next(iter(self._keys)))
            entry = self._keys[key] = [0.0, now, 0.0]
        entry[0] += 1
        entry[1] = now
        over = int(entry[0]) - self.limit + 1
        if over > 0:
            entry[2] = now + min(MAX_LOCK, FIRST_LOCK * 2.0 ** min(over - 1, 32))

    def clear(self, key: str) -> None:
        self._keys.pop(key, None)


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """(user, password) of a Basic Authorization header, or None."""
    if not header or len(header) > MAX_AUTHORIZATION:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    if not sep or not name:
        return None
    # Phones may send DOMAIN\user or the address; the login name is what the store knows.
    return name.rpartition("\\")[2], password


class Authenticator:
    def __init__(
        self,
        store: Store,
        *,
        max_per_user: int,
        max_per_ip: int,
        window: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        #: Seconds on a monotonic clock: when locks and remembered logins end (a test moves its
        #: own, so a lock ends when it says, not when a loaded machine gets to the next try).
        self.clock = clock
        self._per_pair = Backoff(max_per_user, window)
        self._per_ip = Backoff(max_per_ip, window)
        self._key = secrets.token_bytes(32)
        self._verified: dict[bytes, tuple[float, str]] = {}
        self._dummy_hash: str | None = None
        #: Set by natsync.sources when some users log in with their IMAP credentials.
        self.delegate: LoginDelegate | None = None
        #: Called with the user and the password they just logged in with (in memory only):
        #: natsync.sources.dav logs in to the user's CalDAV/CardDAV server with them.
        self.on_login: Callable[[User, str], None] | None = None

    def _digest(self, name: str, password: str) -> bytes:
        return hmac.new(self._key, f"{name}\0{password}".encode(), hashlib.sha256).digest()

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await asyncio.to_thread(hash_password, secrets.token_hex(16))
        return self._dummy_hash

    async def authenticate(self, header: str | None, remote: str) -> AuthResult:
        now = self.clock()
        creds = parse_basic(header)
        if creds is None:
            return AuthResult(None, 401)
        name, password = creds
        pair = f"{name.lower()}\0{remote}"
        wait = max(self._per_pair.locked_for(pair, now), self._per_ip.locked_for(remote, now))
        if wait > 0:
            return AuthResult(None, 429, name, math.ceil(wait))
        if self.delegate is not None and self.delegate.handles(name):
            found, status = await self.delegate.check(name, password)
            if found is not None:
                self._per_pair.clear(pair)
                return AuthResult(found, 200, name)
            if status == 401:
                self._per_pair.fail(pair, now)
                self._per_ip.fail(remote, now)
            return AuthResult(None, status, name)

        login = await self._store.run(lambda txn: txn.login(name))
        user, stored = login if login is not None else (None, None)
        digest = self._digest(name, password)
        cached = self._verified.get(digest)
        if user is not None and stored is not None and cached is not None:
            expires, cached_hash = cached
            if expires > now and hmac.compare_digest(cached_hash, stored):
                if self.on_login is not None:
                    self.on_login(user, password)
                return AuthResult(user, 200, name)
        encoded = stored if stored is not None else await self._dummy()
        ok = await asyncio.to_thread(verify_password, password, encoded)
        if ok and user is not None and stored is not None:
            if len(self._verified) >= MAX_VERIFIED:
                self._verified.pop(next(iter(self._verified)))
            self._verified[digest] = (now + VERIFIED_TTL, stored)
            self._per_pair.clear(pair)
            if self.on_login is not None:
                self.on_login(user, password)
            return AuthResult(user, 200, name)
        self._per_pair.fail(pair, now)
        self._per_ip.fail(remote, now)
        return AuthResult(None, 401, name)
