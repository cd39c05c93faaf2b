"""TLS session tickets every edge worker accepts: keys shared by the workers, rotating.

A phone that reconnects (mobile networks: every address change) offers the ticket of its last
session, and a resumed handshake costs the edge no certificate signature and far less CPU than
a full one. OpenSSL gives each ``SSLContext`` a random ticket key of its own, so with several
workers (SO_REUSEPORT chooses one per connection) a ticket is refused by every worker but the
one that issued it. The C module :mod:`natsync.edge._tickets` derives the keys instead from
one secret the workers share and the time period (:data:`KEY_PERIOD`): tickets are issued under
the current period's key and accepted under it and the previous one, so a key lives two periods
and no worker has to tell another anything.

The secret is made once per process tree, before the workers fork (``natsync edge run``) or by
the supervisor for its edge parts (``natsync run``, through :data:`SECRET_ENV`); it is never
written to disk, so a restart of the whole edge starts new keys (phones do one full handshake).
Without the C module (no compiler or no libssl headers at build time) each worker keeps
OpenSSL's own key: resumption still works at the worker that issued the ticket.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import ssl
from typing import Any

log = logging.getLogger("natsync.edge")

_tickets: Any
try:
    from natsync.edge import _tickets
except ImportError:  # pragma: no cover - CI builds it (make test installs gcc and libssl-dev)
    _tickets = None

#: Seconds one ticket key issues tickets; it is accepted for one period more (a ticket lives
#: one to two periods). An hour: RFC 5077 section 4 leaves it to the server; nginx rotates
#: hourly when told, HAProxy on each reload of its key file.
KEY_PERIOD = 3600
#: Environment variable through which ``natsync run`` gives its edge parts one secret (hex).
SECRET_ENV = "NATSYNC_EDGE_TICKET_SECRET"  # noqa: S105 (a variable's name, not a secret)
#: Bytes of a new secret (the HMAC-SHA256 key the ticket keys are derived from).
SECRET_BYTES = 32

#: This process's secret, once made (what forked workers inherit).
_made: dict[str, bytes] = {}


def new_secret_hex() -> str:
    """A new secret, as :data:`SECRET_ENV` carries it."""
    return os.urandom(SECRET_BYTES).hex()


def process_secret() -> bytes:
    """This process's secret: from :data:`SECRET_ENV` when set, else made once. Called before
    forking workers, so that they inherit it."""
    if "secret" not in _made:
        given = os.environ.pop(SECRET_ENV, "")  # not passed on to anything this one starts
        try:
            _made["secret"] = bytes.fromhex(given) if given else os.urandom(SECRET_BYTES)
        except ValueError:
            log.warning("%s is not hex; using a secret of this process's own", SECRET_ENV)
            _made["secret"] = os.urandom(SECRET_BYTES)
    return _made["secret"]


def share(context: ssl.SSLContext, secret: bytes | None = None) -> bool:
    """Issue and accept tickets on *context* (the phone listener's: OpenSSL takes ticket keys
    from the context a handshake started on, whatever SNI chose later) under the keys of
    *secret* (default :func:`process_secret`). False when the C module is missing or this
    Python's ``SSLContext`` is not the one it knows (then OpenSSL's own key stays)."""
    if _tickets is None:
        return False
    try:
        _tickets.set_secret(secret or process_secret(), KEY_PERIOD)
        _tickets.install(context)
    except (RuntimeError, TypeError, ValueError) as exc:
        log.warning("TLS tickets stay per worker: %s", exc)
        return False
    return True


def counters() -> dict[str, int]:
    """Tickets issued, resumed (current key), renewed (previous key), refused, so far."""
    return dict(_tickets.counters()) if _tickets is not None else {}


def metrics_text() -> str:
    """The counters as Prometheus text lines (for the edge's /metrics; "" without the module)."""
    found = counters()
    if not found:
        return ""
    lines = [
        "# HELP natsync_edge_tls_tickets_total TLS session tickets of this worker: issued, "
        "resumed (current key), renewed (previous key), refused (unknown or expired key: a "
        "full handshake).",
        "# TYPE natsync_edge_tls_tickets_total counter",
    ]
    lines += [f'natsync_edge_tls_tickets_total{{result="{k}"}} {v}' for k, v in found.items()]
    return "\n".join(lines) + "\n"


def derive(secret: bytes, period_no: int) -> tuple[bytes, bytes, bytes]:
    """The reference for the C module's key schedule: period *period_no*'s ticket key name (16
    bytes), AES-256 key and HMAC-SHA256 key, each HMAC-SHA256(secret, "natsync ticket" ||
    period_no as 8 bytes big-endian || label) cut to length (labels n, a, h)."""

    def part(label: bytes, size: int) -> bytes:
        message = b"natsync ticket" + period_no.to_bytes(8, "big", signed=True) + label
        return hmac.new(secret, message, hashlib.sha256).digest()[:size]

    return part(b"n", 16), part(b"a", 32), part(b"h", 32)
