"""Where sent mail goes: local mailboxes at once, everything else through a queue to a smarthost.

Two halves:

* :func:`route_outgoing` (synchronous, inside the caller's store transaction): recipients in
  our domains who exist get the message in their Inbox; unknown local recipients produce a
  bounce to the sender; remote recipients are enqueued with ``Txn.enqueue_outbound``. The EAS
  SendMail/SmartReply/SmartForward handler calls it in the SAME transaction that saves the Sent
  Items copy, so a crash leaves either everything (copy, local deliveries, queue entry) or
  nothing. :func:`deliver` is the same as one transaction of its own.
* :class:`Relay` (an asyncio task): takes due queue entries and sends them with aiosmtplib to
  the configured smarthost. An entry leaves the queue only when the smarthost accepted it
  (``outbound_sent``) or failed it permanently (5xx: a non-delivery report goes to the sender's
  Inbox in the same transaction that removes the entry). Temporary failures (4xx, connection
  refused, timeouts, TLS or authentication trouble with the smarthost) are retried with
  exponential backoff: ``RETRY_BASE_DELAY * 2**attempts`` capped at ``RETRY_MAX_DELAY``; after
  ``MAX_ATTEMPTS`` (about five days, the RFC 5321 4.5.4.1 give-up time) the sender gets a
  bounce that returns the message. Mail is therefore never dropped silently; a crash between
  the smarthost's "250" and our ``outbound_sent`` can send it twice (at-least-once).

``Relay.kick()`` wakes the worker at once when something was enqueued; otherwise it sleeps until
the earliest retry it scheduled or ``IDLE_POLL_INTERVAL`` (entries queued by another process),
never busy-waiting.

Several workers on one queue (one per server process sharing a PostgreSQL store, or several
processes on one SQLite file) never send an entry twice while they live: a worker *claims* due
entries (``Txn.claim_outbound``: ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, one writer at a time
on SQLite) under its owner name with a lease (``RELAY_LEASE``), renews the lease before a send
that could outlast it, and only the holder of the claim marks the entry sent or retried. A
worker that dies holding claims (SIGKILL, a machine lost) leaves them to run out: once the lease
has passed, any other worker takes the entries (at its next round: a kick or its idle poll). A
worker closed cleanly hands its claims back at once. What is left is the window between the
smarthost's "250" and the commit of ``outbound_sent``: a worker killed exactly there has sent
the message and the next worker sends it again (at-least-once, never lost). Leases compare the
workers' own clocks: keep the machines' clocks in step (NTP), far closer than the lease.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import os
import re
import socket
import ssl
import uuid
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.header import Header
from functools import partial
from typing import Any

import aiosmtplib

from natsync.errors import ConfigError
from natsync.mail import conversation, imip, oof
from natsync.mail.dkim import DkimSigner
from natsync.mime import header_text, parse_bytes, parse_message
from natsync.store.api import (
    Conflict,
    FolderType,
    Message,
    NewMessage,
    NotFound,
    OutboundMail,
    Store,
    StoreError,
    Txn,
    User,
)

log = logging.getLogger(__name__)

#: First retry delay after a temporary failure; doubled per attempt.
RETRY_BASE_DELAY = timedelta(minutes=1)
#: Retries never wait longer than this, so a smarthost back from an outage gets mail soon.
RETRY_MAX_DELAY = timedelta(hours=1)
#: Attempts before giving up with a bounce: 7 doublings reach the 1 h cap in about 2 h, then
#: about 118 hourly tries make RFC 5321 4.5.4.1's "at least 4-5 days".
MAX_ATTEMPTS = 125
#: Queue entries claimed per store transaction: small, because a claim keeps its entries from
#: the other workers until they are sent; a backlog is spread over every process's worker.
BATCH_SIZE = 10
#: How long a claim holds an entry for one worker. Far above one SMTP conversation
#: (SMARTHOST_TIMEOUT), renewed before each send that might outlast it; it bounds how long the
#: entries of a worker that died wait before another worker sends them.
RELAY_LEASE = timedelta(minutes=5)
#: How long the worker sleeps with nothing scheduled: catches entries another process queued.
IDLE_POLL_INTERVAL = timedelta(seconds=30)
#: Never sleep shorter than this between rounds (no busy loop, even with a clock in the past).
MIN_SLEEP_SECONDS = 0.05
#: Seconds for one SMTP conversation with the smarthost.
SMARTHOST_TIMEOUT = 60.0
#: Originals up to this size are returned whole in a bounce; bigger ones by their headers only.
MAX_BOUNCE_ORIGINAL = 1024 * 1024

_ENHANCED_STATUS = re.compile(r"\b([245]\.\d{1,3}\.\d{1,3})\b")


@dataclass(frozen=True, slots=True)
class SmartHost:
    """The relay's next hop (docs/mail.md "Outbound")."""

    host: str
    port: int = 25
    #: STARTTLS: None = when the smarthost offers it, True = required, False = never.
    starttls: bool | None = None
    #: Implicit TLS from the first byte (submissions port 465).
    use_tls: bool = False
    username: str | None = None
    password: str | None = None
    #: Verification context for TLS (None: the system's default CA store, verified).
    tls_context: ssl.SSLContext | None = None
    timeout: float = SMARTHOST_TIMEOUT
    #: The name we give in EHLO (None: aiosmtplib uses the local host name).
    local_hostname: str | None = None

    @classmethod
    def from_setting(
        cls, address: str, starttls: str = "auto", ca_file: str | None = None, **more: Any
    ) -> SmartHost:
        """The smarthost of ``server.smarthost`` ("host:port"), with STARTTLS as
        ``server.smarthost_starttls`` says: "required" (the default for any smarthost off this
        machine: a stripped STARTTLS, or a certificate that does not verify, keeps the mail
        queued), "opportunistic" (when offered; the default on loopback), or "off". The
        certificate is verified against *ca_file*, else the system's CAs."""
        host, _, port = address.rpartition(":")
        host = host.strip("[]")
        if starttls not in SMARTHOST_STARTTLS:
            raise ValueError(f"smarthost STARTTLS must be one of {', '.join(SMARTHOST_STARTTLS)}")
        if starttls == "auto":
            starttls = "opportunistic" if _is_loopback(host) else "required"
        context = ssl.create_default_context(cafile=ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        mode = {"required": True, "opportunistic": None, "off": False}[starttls]
        return cls(host, int(port), starttls=mode, tls_context=context, **more)


#: The values of ``server.smarthost_starttls``.
SMARTHOST_STARTTLS = ("auto", "required", "opportunistic", "off")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class RouteResult:
    """What :func:`route_outgoing` did with each recipient."""

    delivered: tuple[str, ...] = ()  # local users: in their Inbox now
    queued: tuple[str, ...] = ()  # remote: in the outbound queue
    unknown: tuple[str, ...] = ()  # our domain, no such user: bounced to the sender
    outbound_id: int | None = None


def _domain(address: str) -> str:
    return address.rpartition("@")[2].strip().lower()


def deliver_to_inbox(
    txn: Txn, user: User, message: NewMessage, *, envelope_sender: str | None = None
) -> bool:
    """Put *message* into *user*'s Inbox (one store call; the caller owns the transaction).

    *envelope_sender* (MAIL FROM; "" for the null sender) marks a live delivery, which the
    user's out-of-office may answer (natsync.mail.oof); None (imports, bounces, notices) never
    gets an answer. True when an answer was queued for the relay (kick it after commit)."""
    inbox = txn.folder_by_type(user.id, FolderType.INBOX)
    added = txn.add_message(inbox.id, message)
    imip.on_delivery(txn, user, message)  # an invitation also lands in the Calendar
    conversation.on_delivery(txn, user, added, message.raw)  # "always move" rules
    if envelope_sender is None:
        return False
    return oof.on_delivery(txn, user, message, envelope_sender, deliver_to_inbox)


def save_sent_copy(txn: Txn, user: User, sent_copy: bytes, now: datetime) -> Message:
    """Store *sent_copy* (``compose.Outgoing.sent_copy``, Bcc kept) in the user's Sent Items,
    marked read; call it in the same transaction as :func:`route_outgoing`."""
    sent = txn.folder_by_type(user.id, FolderType.SENT_ITEMS)
    return txn.add_message(sent.id, dataclasses.replace(parse_message(sent_copy, now), read=True))


def _route(
    txn: Txn,
    sender: str,
    raw: bytes,
    recipients: Sequence[str],
    now: datetime,
    local_domains: Iterable[str],
    hostname: str,
) -> RouteResult:
    domains = {d.lower() for d in local_domains}
    parsed: NewMessage | None = None
    delivered: list[str] = []
    queued: list[str] = []
    unknown: list[str] = []
    for rcpt in dict.fromkeys(r.strip() for r in recipients if r.strip()):
        if _domain(rcpt) not in domains:
            queued.append(rcpt)
            continue
        user = txn.get_user_by_email(rcpt)
        if user is None:
            unknown.append(rcpt)
            continue
        if parsed is None:
            parsed = parse_message(raw, now)
        deliver_to_inbox(txn, user, parsed, envelope_sender=sender)
        delivered.append(rcpt)
    outbound_id = None
    if queued:
        outbound_id = txn.enqueue_outbound(sender, queued, raw, now).id
    if unknown:
        failures = {r: "550 5.1.1 no such user here" for r in unknown}
        _bounce(txn, sender, failures, raw, now, hostname)
    return RouteResult(tuple(delivered), tuple(queued), tuple(unknown), outbound_id)


def route_outgoing(
    txn: Txn,
    user: User,
    raw: bytes,
    recipients: Sequence[str],
    now: datetime,
    local_domains: Iterable[str],
    hostname: str = "localhost",
) -> RouteResult:
    """Deliver locally / enqueue for the smarthost, inside the caller's transaction.

    Call :meth:`Relay.kick` after the transaction committed when ``outbound_id`` is set.
    *raw* is what recipients get (``compose.Outgoing.raw``: no Bcc header).
    """
    return _route(txn, user.email, raw, recipients, now, local_domains, hostname)


async def deliver(
    store: Store,
    sender: str,
    recipients: Sequence[str],
    raw: bytes,
    now: datetime,
    local_domains: Iterable[str] = (),
    hostname: str = "localhost",
) -> RouteResult:
    """:func:`route_outgoing` in a transaction of its own, for callers without one."""
    domains = tuple(local_domains)
    return await store.run(lambda txn: _route(txn, sender, raw, recipients, now, domains, hostname))


# -- bounces ---------------------------------------------------------------------------------------


def build_bounce(
    sender: str,
    failures: dict[str, str],
    original: bytes,
    now: datetime,
    hostname: str = "localhost",
) -> bytes:
    """A delivery status notification (RFC 3464, multipart/report) for *failures*.

    *failures* maps each failed recipient to the reply that failed it ("550 5.1.1 ...").
    """
    from email.utils import format_datetime, make_msgid

    original_msg = parse_bytes(original)
    subject = header_text(original_msg, "Subject")
    boundary = f"natsync-dsn-{uuid.uuid4().hex}"
    lines = [
        "This is the mail system at " + hostname + ".",
        "",
        "Your message could not be delivered to these recipients:",
        "",
    ]
    for rcpt, reason in failures.items():
        lines.append(f"  <{rcpt}>: {reason}")
    lines.append("")
    text = "\r\n".join(lines)
    status_blocks = [f"Reporting-MTA: dns; {hostname}\r\nArrival-Date: {format_datetime(now)}"]
    for rcpt, reason in failures.items():
        found = _ENHANCED_STATUS.search(reason)
        status = found.group(1) if found and found.group(1).startswith("5") else "5.0.0"
        diagnostic = reason.replace("\r", " ").replace("\n", " ")
        status_blocks.append(
            f"Final-Recipient: rfc822; {rcpt}\r\nAction: failed\r\nStatus: {status}\r\n"
            f"Diagnostic-Code: smtp; {diagnostic}"
        )
    if len(original) <= MAX_BOUNCE_ORIGINAL:
        returned_type, returned = "message/rfc822", original
    else:
        head_end = original.find(b"\r\n\r\n")
        returned_type = "text/rfc822-headers"
        returned = original[: head_end if head_end >= 0 else 64 * 1024]
    encoded_subject = Header("Undeliverable: " + subject, "utf-8").encode()
    head = (
        f"From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\n"
        f"To: <{sender}>\r\n"
        f"Subject: {encoded_subject}\r\n"
        f"Date: {format_datetime(now)}\r\n"
        f"Message-ID: {make_msgid(domain=hostname)}\r\n"
        "Auto-Submitted: auto-replied\r\n"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"\r\n'
        "\r\n"
    )
    body = (
        f"--{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{text}\r\n"
        f"--{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n"
        + "\r\n\r\n".join(status_blocks)
        + f"\r\n\r\n--{boundary}\r\nContent-Type: {returned_type}\r\n\r\n"
    )
    tail = f"\r\n--{boundary}--\r\n".encode()
    return (head + body).encode("utf-8") + returned + tail


def _bounce(
    txn: Txn, sender: str, failures: dict[str, str], original: bytes, now: datetime, host: str
) -> bool:
    """Deliver a bounce to the local *sender*; False when there is nobody to tell."""
    user = txn.get_user_by_email(sender) if sender else None
    if user is None:
        log.warning("bounce for %s dropped: the sender %r is not a local user", failures, sender)
        return False
    bounce = build_bounce(sender, failures, original, now, host)
    deliver_to_inbox(txn, user, parse_message(bounce, now))
    return True


# -- the worker ------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Outcome:
    accepted: list[str] = field(default_factory=list)
    permanent: dict[str, str] = field(default_factory=dict)
    temporary: dict[str, str] = field(default_factory=dict)


def _reply(code: int, message: str) -> str:
    return f"{code} {message}".strip()


def _is_config_error(exc: aiosmtplib.SMTPResponseException) -> bool:
    """Refusals that say our smarthost setup is wrong, not the message: retry, never bounce."""
    return isinstance(
        exc,
        aiosmtplib.SMTPConnectResponseError
        | aiosmtplib.SMTPHeloError
        | aiosmtplib.SMTPAuthenticationError,
    )


def _spawn(coro: Coroutine[Any, Any, None], name: str, keep: set[asyncio.Task[None]]) -> None:
    task = asyncio.get_running_loop().create_task(coro, name=name)
    keep.add(task)
    task.add_done_callback(keep.discard)


def _claim(txn: Txn, now: datetime, owner: str, lease_until: datetime) -> list[OutboundMail]:
    return txn.claim_outbound(now, BATCH_SIZE, owner, lease_until)


def default_owner() -> str:
    """A worker's owner name: the machine, the process, and a nonce for this Relay."""
    return f"{socket.gethostname()}/{os.getpid()}/{uuid.uuid4().hex[:8]}"


def owner_pid(owner: str) -> int | None:
    """The process id inside a :func:`default_owner` name (None for another form)."""
    parts = owner.split("/")
    return int(parts[1]) if len(parts) == 3 and parts[1].isdigit() else None


class Relay:
    """The outbound queue's worker: ``start()``, ``kick()`` after enqueueing, ``aclose()``."""

    def __init__(
        self,
        store: Store,
        smarthost: SmartHost,
        *,
        hostname: str = "localhost",
        clock: Callable[[], datetime] | None = None,
        retry_base: timedelta = RETRY_BASE_DELAY,
        retry_max: timedelta = RETRY_MAX_DELAY,
        max_attempts: int = MAX_ATTEMPTS,
        idle_poll: timedelta = IDLE_POLL_INTERVAL,
        lease: timedelta = RELAY_LEASE,
        owner: str | None = None,
        dkim: DkimSigner | None = None,
    ) -> None:
        if lease.total_seconds() <= smarthost.timeout:
            raise ConfigError(
                f"relay lease {lease} must be longer than one SMTP conversation "
                f"({smarthost.timeout} s), or a live worker's claim could run out mid-send"
            )
        self._store = store
        #: The name this worker claims queue entries under (unique per Relay).
        self.owner = owner or default_owner()
        self._lease = lease
        self._smarthost = smarthost
        self._hostname = hostname
        self._clock = clock or (lambda: datetime.now(UTC))
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._max_attempts = max_attempts
        self._idle_poll = idle_poll
        #: Signs each message as it leaves (natsync.mail.dkim), None to send as queued.
        self._dkim = dkim
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._next_retry: datetime | None = None
        self._closing = False
        #: Counters for logs and tests: sent, bounced (entries), retried (attempts).
        self.sent = 0
        self.bounced = 0
        self.retried = 0

    def start(self) -> None:
        """Start the worker task on the running loop."""
        if not self._tasks:
            _spawn(self._run(), "natsync-relay", self._tasks)

    def kick(self) -> None:
        """Something was enqueued: look at the queue now."""
        self._wake.set()

    async def aclose(self) -> None:
        """Stop the worker; an attempt in flight is cancelled and stays queued, and the
        entries this worker claimed are handed back for the other workers at once."""
        self._closing = True
        self._wake.set()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        owner = self.owner
        try:
            await self._store.run(lambda txn: txn.release_outbound(owner))
        except StoreError as exc:  # the store is gone: the leases run out by themselves
            log.warning("relay %s could not hand back its claims: %s", owner, exc)

    def backoff(self, attempts: int) -> timedelta:
        """Delay before the next try after *attempts* earlier failed ones."""
        delay: timedelta = self._retry_base * (2 ** min(attempts, 30))
        return min(delay, self._retry_max)

    async def _run(self) -> None:
        while not self._closing:
            self._wake.clear()
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("relay round failed; trying again after the idle interval")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self._sleep_seconds())

    def _sleep_seconds(self) -> float:
        sleep = self._idle_poll.total_seconds()
        if self._next_retry is not None:
            until = (self._next_retry - self._clock()).total_seconds()
            sleep = min(sleep, until)
        return max(sleep, MIN_SLEEP_SECONDS)

    async def run_once(self) -> int:
        """Try every entry due now; returns how many were tried."""
        tried = 0
        self._next_retry = None
        owner = self.owner
        while True:
            now = self._clock()
            lease_until = now + self._lease
            due = await self._store.run(
                partial(_claim, now=now, owner=owner, lease_until=lease_until)
            )
            for item in due:
                if await self._hold(item):
                    await self._attempt(item)
            tried += len(due)
            if len(due) < BATCH_SIZE:
                return tried

    async def _hold(self, item: OutboundMail) -> bool:
        """Whether our claim on *item* covers one more SMTP conversation (renewed if not)."""
        now = self._clock()
        margin = timedelta(seconds=2 * self._smarthost.timeout)
        if item.lease_until is not None and item.lease_until - now > margin:
            return True
        owner, until = self.owner, now + self._lease
        if await self._store.run(lambda txn: txn.renew_outbound(item.id, owner, until)):
            return True
        log.warning("outbound %d: claim lost to another relay worker; not sent here", item.id)
        return False

    async def _send(self, item: OutboundMail) -> _Outcome:
        host = self._smarthost
        outcome = _Outcome()
        try:
            # The client itself, not aiosmtplib.send: that refuses the null sender, which
            # automatic replies use (RFC 3834 section 3.3, natsync.mail.oof).
            client = aiosmtplib.SMTP(
                hostname=host.host,
                port=host.port,
                username=host.username,
                password=host.password,
                local_hostname=host.local_hostname,
                timeout=host.timeout,
                use_tls=host.use_tls,
                start_tls=host.starttls,
                tls_context=host.tls_context,
            )
            raw = item.raw if self._dkim is None else self._dkim.sign(item.raw)
            async with client:
                refused, _ = await client.sendmail(item.sender, list(item.recipients), raw)
        except aiosmtplib.SMTPRecipientsRefused as exc:
            for refusal in exc.recipients:
                target = outcome.permanent if refusal.code >= 500 else outcome.temporary
                target[refusal.recipient] = _reply(refusal.code, refusal.message)
            return outcome
        except aiosmtplib.SMTPResponseException as exc:
            permanent = exc.code >= 500 and not _is_config_error(exc)
            target = outcome.permanent if permanent else outcome.temporary
            for rcpt in item.recipients:
                target[rcpt] = _reply(exc.code, exc.message)
            return outcome
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            for rcpt in item.recipients:
                outcome.temporary[rcpt] = f"smarthost {host.host}:{host.port}: {exc}"
            return outcome
        for rcpt in item.recipients:
            response = refused.get(rcpt)
            if response is None:
                outcome.accepted.append(rcpt)
            elif response.code >= 500:
                outcome.permanent[rcpt] = _reply(response.code, response.message)
            else:
                outcome.temporary[rcpt] = _reply(response.code, response.message)
        return outcome

    async def _attempt(self, item: OutboundMail) -> None:
        outcome = await self._send(item)
        now = self._clock()
        temporary = dict(outcome.temporary)
        permanent = dict(outcome.permanent)
        if temporary and item.attempts + 1 >= self._max_attempts:
            for rcpt, reason in temporary.items():
                permanent[rcpt] = f"gave up after {item.attempts + 1} attempts: {reason}"
            temporary = {}
        next_at = now + self.backoff(item.attempts)
        error = "; ".join(f"{r}: {m}" for r, m in temporary.items())[:1000]
        hostname = self._hostname
        owner = self.owner

        def commit(txn: Txn) -> None:
            # The claim is checked first: a worker that lost it changes nothing (not even a
            # bounce), the entry belongs to the worker that took it over.
            if temporary and len(temporary) == len(item.recipients):
                txn.outbound_retry(item.id, next_at, error, owner)
                return
            txn.outbound_sent(item.id, owner)
            if permanent:
                _bounce(txn, item.sender, permanent, item.raw, now, hostname)
            if temporary:  # some accepted or failed for good: the rest wait in a new entry
                rest = txn.enqueue_outbound(item.sender, list(temporary), item.raw, now)
                txn.outbound_retry(rest.id, next_at, error)

        try:
            await self._store.run(commit)
        except (Conflict, NotFound) as exc:  # our lease ran out and another worker has it
            log.warning(
                "outbound %d: outcome not recorded (%s); accepted by the smarthost for %s",
                item.id,
                exc,
                ", ".join(outcome.accepted) or "nobody",
            )
            return
        if outcome.accepted:
            self.sent += 1
            log.info("relayed outbound %d to %s", item.id, ", ".join(outcome.accepted))
        if permanent:
            self.bounced += 1
            log.warning("outbound %d failed for good: %s", item.id, permanent)
        if temporary:
            self.retried += 1
            log.info("outbound %d will be retried at %s: %s", item.id, next_at, error)
            if self._next_retry is None or next_at < self._next_retry:
                self._next_retry = next_at
