"""ACME Renewal Information (RFC 9773): the certificate's ARI identifier and the server's answer.

Sans-I/O: bytes and headers in, a checked :class:`RenewalInfo` out (the fetch is in
:meth:`natsync.cert.acme.AcmeClient.renewal_info`; what to do with it is in
:mod:`natsync.cert.manager`).

- Section 3: a server that offers ARI names a ``renewalInfo`` URL in its directory.
- Section 4.1: the certificate's identifier is ``base64url(keyIdentifier of the Authority Key
  Identifier extension) "." base64url(serial number)``, the serial being the DER INTEGER's
  content octets (with its leading zero when the top bit is set), no padding.
- Section 4.2: ``GET <renewalInfo>/<id>`` answers ``{"suggestedWindow": {"start", "end"},
  "explanationURL"?}``; a window whose end is not after its start is invalid and is treated as
  no answer at all. The ``Retry-After`` header says when to ask again.
- Section 4.3: clients poll again after Retry-After, clamped to sane bounds (below).
- Section 5: the new order names the certificate it replaces (``replaces``: its identifier).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

from cryptography import x509

from natsync.cert.jose import b64u
from natsync.errors import NatsyncError

#: RFC 9773 section 4.3: a Retry-After under a minute is treated as a minute, over a day as a
#: day (a server asking for less would have every client hammer it; for more, a revocation
#: announced through ARI would be seen too late).
MIN_RETRY_AFTER = dt.timedelta(minutes=1)
MAX_RETRY_AFTER = dt.timedelta(days=1)
#: Without a Retry-After (section 4.3.3 counts that as an error of the server), ask again after
#: six hours: our choice, a quarter of the longest interval above.
DEFAULT_RETRY_AFTER = dt.timedelta(hours=6)
#: Largest renewalInfo body read: the object is a few hundred bytes.
MAX_BODY = 64 * 1024


class AriError(NatsyncError):
    """The server's renewal information is unusable; renewal falls back to the lifetime rule."""


@dataclass(frozen=True, slots=True)
class RenewalInfo:
    """The server's suggestion (section 4.2) and when to ask again."""

    start: dt.datetime
    end: dt.datetime
    retry_after: dt.timedelta
    explanation_url: str = ""


def cert_id(cert: x509.Certificate) -> str:
    """The ARI identifier of *cert* (section 4.1); AriError without an AKI keyIdentifier."""
    try:
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
    except x509.ExtensionNotFound:
        aki = None
    if aki is None or aki.key_identifier is None:
        raise AriError(
            "the certificate has no Authority Key Identifier, so it has no ARI identifier"
        )
    serial = cert.serial_number
    # DER INTEGER content octets of a positive number: big-endian, with a leading zero byte
    # when the top bit would otherwise be set.
    serial_bytes = serial.to_bytes(serial.bit_length() // 8 + 1, "big")
    return f"{b64u(aki.key_identifier)}.{b64u(serial_bytes)}"


def _timestamp(value: object, what: str) -> dt.datetime:
    if not isinstance(value, str) or len(value) > 64:
        raise AriError(f"renewalInfo {what} is not an RFC 3339 timestamp")
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        stamp = dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise AriError(f"renewalInfo {what} {value!r} is not an RFC 3339 timestamp") from exc
    if stamp.tzinfo is None:
        raise AriError(f"renewalInfo {what} {value!r} has no UTC offset")
    return stamp.astimezone(dt.UTC)


def parse_retry_after(value: str | None, now: dt.datetime) -> dt.timedelta:
    """Retry-After (seconds or an HTTP date), clamped per section 4.3."""
    if not value:
        return DEFAULT_RETRY_AFTER
    value = value.strip()
    wait: dt.timedelta
    if value.isascii() and value.isdigit() and len(value) < 12:
        wait = dt.timedelta(seconds=int(value))
    else:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return DEFAULT_RETRY_AFTER
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        wait = when - now
    return max(MIN_RETRY_AFTER, min(MAX_RETRY_AFTER, wait))


def parse_renewal_info(body: bytes, retry_after: str | None, now: dt.datetime) -> RenewalInfo:
    """Decode a renewalInfo answer (section 4.2) or raise AriError."""
    if len(body) > MAX_BODY:
        raise AriError("renewalInfo answer is too large")
    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise AriError(f"renewalInfo answer is not JSON ({exc})") from exc
    if not isinstance(doc, dict):
        raise AriError("renewalInfo answer is not a JSON object")
    window = doc.get("suggestedWindow")
    if not isinstance(window, dict):
        raise AriError("renewalInfo answer has no suggestedWindow")
    start = _timestamp(window.get("start"), "start")
    end = _timestamp(window.get("end"), "end")
    if end <= start:
        raise AriError(
            f"renewalInfo window ends ({end:%Y-%m-%d %H:%M}) before it starts "
            f"({start:%Y-%m-%d %H:%M}); ignored as section 4.2 says"
        )
    explanation = doc.get("explanationURL", "")
    return RenewalInfo(
        start,
        end,
        parse_retry_after(retry_after, now),
        explanation if isinstance(explanation, str) else "",
    )
