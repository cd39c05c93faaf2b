"""Password hashing: scrypt (RFC 7914) from the standard library, in a self-describing string.

The stored form is a PHC-style string, ``$scrypt$ln=15,r=8,p=1$<salt>$<hash>`` (unpadded
base64), so the cost parameters travel with each hash: raising them later leaves old hashes
verifiable, and :func:`needs_rehash` tells the login path when to re-hash with the new ones.
Verification compares in constant time (``hmac.compare_digest``) so the time taken says nothing
about how much of a guess was right.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

#: log2 of scrypt's CPU/memory cost N. 2**15 with r=8 uses 32 MiB and about 50-100 ms of one
#: core per hash here: costly for an attacker with a stolen database, bearable for a server
#: that checks a password per login (the server caches verified logins; phones send Basic
#: auth with every request).
SCRYPT_LOG2_N = 15
#: Block size: 8 is the value scrypt's authors tuned for current memory latency (RFC 7914 §2).
SCRYPT_R = 8
#: Parallelism: 1, so one login costs one core; raise N rather than p.
SCRYPT_P = 1
#: Salt length: 16 random bytes make precomputed tables useless and collisions negligible.
SALT_BYTES = 16
#: Derived key length: 32 bytes, the strength of SHA-256.
HASH_BYTES = 32

#: Parameters a stored hash may ask for. A hash string comes from our own database, but a
#: tampered one must not make a login allocate gigabytes: beyond these it is simply wrong.
MAX_LOG2_N = 20
MAX_R = 16
MAX_P = 4
#: Memory hashlib may use: 128 * r * N bytes, plus slack (OpenSSL refuses above ``maxmem``).
_SLACK = 1024 * 1024

_SCHEME = "scrypt"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def _derive(
    password: str, salt: bytes, log2_n: int, r: int, p: int, dklen: int = HASH_BYTES
) -> bytes:
    n = 1 << log2_n
    return hashlib.scrypt(
        password.encode("utf-8"),
        salt=salt,
        n=n,
        r=r,
        p=p,
        maxmem=128 * r * n * p + _SLACK,
        dklen=dklen,
    )


def hash_password(password: str) -> str:
    """A new salted hash of *password*, with its parameters, to store."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _derive(password, salt, SCRYPT_LOG2_N, SCRYPT_R, SCRYPT_P)
    return f"${_SCHEME}$ln={SCRYPT_LOG2_N},r={SCRYPT_R},p={SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def _parse(encoded: str) -> tuple[int, int, int, bytes, bytes] | None:
    parts = encoded.split("$")
    if len(parts) != 5 or parts[0] != "" or parts[1] != _SCHEME:
        return None
    try:
        params = dict(item.split("=", 1) for item in parts[2].split(","))
        log2_n, r, p = int(params["ln"]), int(params["r"]), int(params["p"])
        salt, digest = _unb64(parts[3]), _unb64(parts[4])
    except (ValueError, KeyError):
        return None
    if not (1 <= log2_n <= MAX_LOG2_N and 1 <= r <= MAX_R and 1 <= p <= MAX_P):
        return None
    if not salt or not digest:
        return None
    return log2_n, r, p, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    """Whether *password* matches the stored *encoded* hash (False for a malformed hash)."""
    parsed = _parse(encoded)
    if parsed is None:
        return False
    log2_n, r, p, salt, digest = parsed
    candidate = _derive(password, salt, log2_n, r, p, dklen=len(digest))
    return hmac.compare_digest(candidate, digest)


def needs_rehash(encoded: str) -> bool:
    """Whether *encoded* was made with other parameters than today's (re-hash at next login)."""
    parsed = _parse(encoded)
    if parsed is None:
        return True
    log2_n, r, p, salt, digest = parsed
    return (log2_n, r, p, len(salt), len(digest)) != (
        SCRYPT_LOG2_N,
        SCRYPT_R,
        SCRYPT_P,
        SALT_BYTES,
        HASH_BYTES,
    )
