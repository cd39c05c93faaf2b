"""SMTP inbound: the port-forwarded SMTP server that takes mail for our users (aiosmtpd).

Rules (docs/mail.md "SMTP in"):

* **No open relay.** RCPT is accepted only for an existing user's address in one of the
  configured domains: another domain gets ``550 5.7.1`` (relaying denied), an unknown local
  address ``550 5.1.1``. There is no authentication that would unlock relaying: this server
  only ever delivers into local mailboxes.
* **Size.** ``max_message_size`` is announced with the SIZE extension (RFC 1870); a MAIL FROM
  declaring more, or DATA sending more, gets ``552``.
* **SMTP smuggling.** Only ``<CRLF>.<CRLF>`` ends DATA: aiosmtpd (>= 1.4.5) reads DATA line by
  line up to CRLF, so a bare ``<LF>.<LF>`` is message content, never the end of it (tested).
* **Delivery.** Each accepted message gets a ``Received`` header (RFC 5321 4.4), is parsed once
  and is added to every recipient's Inbox in ONE store transaction: all recipients or none. A
  store failure answers ``451`` so the sending server retries; nothing half-delivered remains.
  "250" is answered only after that transaction committed. The time DATA ended
  (``time.monotonic()``, taken as the hook starts) rides with the changed folders to the change
  feed (natsync.store.feed.data_key): a Ping woken by the mail measures its push latency from
  there (docs/push.md "Where the clock starts").
* **Group commit.** Messages that finish DATA while a delivery transaction is running are
  delivered together in the next one (up to ``MAX_DELIVERY_BATCH``): a write transaction's
  commit costs several times one message's inserts, so under load this multiplies ingest
  (measured: ~340 single-message transactions/s vs ~1,400 messages/s in batches of 10 on the
  test machine). With no load a message is delivered at once, alone, with no added delay. If a
  batch fails, its messages are retried one transaction each, so one bad message never fails
  another.
* **PROXY protocol.** With ``proxy_protocol_from`` set (the edge's addresses), every connection
  must start with a PROXY v1/v2 header (aiosmtpd's ``proxy_protocol_timeout``) and may only
  come from one of those addresses; the client address it carries is the one recorded in
  ``Received``.
* **Floods** (:class:`SmtpLimits`). At most ``per_address`` connections from one client
  address (the PROXY header's when there is one) and ``total`` on the listener — its budget of
  the process's file descriptors, so a flood here leaves the HTTPS listener its own; beyond
  either the connection gets ``421 4.7.0`` and is closed, with one log line. A connection idle
  between commands is closed after ``idle_timeout`` (RFC 5321 4.5.3.2.7: 5 minutes), after
  ``busy_idle_timeout`` once the listener holds more than :data:`BUSY_SHARE` of its budget
  (Postfix's stress mode does the same). At most ``commands_before_mail`` commands (EHLO, NOOP,
  RSET, VRFY ...) before each MAIL: then 421 (a client that only talks holds a slot for
  nothing).
* **STARTTLS** with the deployment's certificate when one is given (opportunistic, as every
  public MX: a sender may stay in clear text); ``Received`` then says ``ESMTPS``.

Public API (stable): ``start_smtp_server(store, host, port, domains, max_message_size,
proxy_protocol_from=None, *, hostname=None, clock=None) -> SmtpServerHandle`` with ``.host``,
``.port`` and ``async close()``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import socket
import ssl
import time
import uuid
import weakref
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, cast

from aiosmtpd.smtp import SMTP, Envelope, Session

from natsync.fdlimit import listener_budget
from natsync.mail.relay import deliver_to_inbox
from natsync.mime import parse_message
from natsync.mime.errors import MailError
from natsync.store.api import NewMessage, Store, Txn
from natsync.store.feed import DATA_FOLDER_SPAN, data_key

log = logging.getLogger(__name__)
#: aiosmtpd logs every connection and command line at INFO ("mail.log"): under a flood that is
#: a line per connection; natsync's own lines say what matters (refusals, deliveries).
logging.getLogger("mail.log").setLevel(logging.WARNING)

#: Default largest message accepted (bytes): what common providers accept; attachments beyond
#: this belong in a file share, not in a phone's mailbox.
DEFAULT_MAX_MESSAGE_SIZE = 35 * 1024 * 1024
#: RCPT commands per message (RFC 5321 4.5.3.1.8 asks servers to take at least 100).
MAX_RECIPIENTS = 100
#: Seconds a connection may take to send its PROXY header before it is dropped.
PROXY_PROTOCOL_TIMEOUT = 5.0
#: Seconds an idle SMTP connection is kept (RFC 5321 4.5.3.2.7 suggests 5 minutes).
IDLE_TIMEOUT = 300.0
#: The idle timeout once the listener is near its connection budget (Postfix's stress-mode
#: smtpd_timeout is 10 s; a real MTA answers well within 30).
BUSY_IDLE_TIMEOUT = 30.0
#: Share of the listener's budget past which it counts as near its limit.
BUSY_SHARE = 0.8
#: Connections one client address may hold (Postfix's smtpd_client_connection_count_limit is
#: 50 by default; a sending MTA opens a few).
DEFAULT_MAX_PER_ADDRESS = 20
#: Share of the process's open-files limit the SMTP listener may use (the HTTPS front and the
#: store keep the rest: a flood here must not starve them).
SMTP_DESCRIPTOR_SHARE = 0.125
#: Commands allowed before each MAIL (Postfix's smtpd_junk_command_limit is 100; a sending
#: MTA needs EHLO, maybe STARTTLS and EHLO again, and perhaps RSET/NOOP).
DEFAULT_COMMANDS_BEFORE_MAIL = 20
#: Seconds a positive "this address is a local user" answer is remembered: spares a store
#: round trip per RCPT at high ingest rates; a removed user is still checked again at delivery.
LOCAL_USER_CACHE_SECONDS = 10.0
#: Entries in that cache.
LOCAL_USER_CACHE_SIZE = 10_000
#: Messages delivered in one store transaction at most (group commit); bounds how long one
#: transaction holds the store's writer.
MAX_DELIVERY_BATCH = 64


@dataclass(frozen=True, slots=True)
class SmtpLimits:
    """How much of the process one SMTP listener may hold (see the module docstring)."""

    per_address: int = DEFAULT_MAX_PER_ADDRESS
    #: Connections on the listener in all; 0: its share of the open-files limit.
    total: int = 0
    idle_timeout: float = IDLE_TIMEOUT
    busy_idle_timeout: float = BUSY_IDLE_TIMEOUT
    commands_before_mail: int = DEFAULT_COMMANDS_BEFORE_MAIL


class ConnectionCounts:
    """Open connections of one listener, in all and per client address (sans-I/O)."""

    def __init__(self, per_address: int, total: int) -> None:
        self.per_address = per_address
        self.total = total
        self.open = 0
        self.by_address: dict[str, int] = {}

    @property
    def busy(self) -> bool:
        return self.open > self.total * BUSY_SHARE

    def admit(self) -> bool:
        """One more connection on the listener, unless its budget is spent."""
        if self.open >= self.total:
            return False
        self.open += 1
        return True

    def leave(self) -> None:
        self.open -= 1

    def admit_address(self, address: str) -> bool:
        count = self.by_address.get(address, 0)
        if count >= self.per_address:
            return False
        self.by_address[address] = count + 1
        return True

    def leave_address(self, address: str) -> None:
        count = self.by_address.get(address, 1) - 1
        if count <= 0:
            self.by_address.pop(address, None)
        else:
            self.by_address[address] = count


class _LimitedSMTP(SMTP):
    """aiosmtpd's session with the listener's limits (connections, idle time, commands)."""

    def __init__(
        self, handler: Any, counts: ConnectionCounts, limits: SmtpLimits, **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self.counts = counts
        self.limits = limits
        self.counted = False
        #: The client address counted against per_address ("" while not counted).
        self.address = ""
        self.refused = False
        self.since_mail = 0
        for name, method in list(self._smtp_methods.items()):
            self._smtp_methods[name] = self._counted(name, method)

    def _counted(self, name: str, method: Callable[[str | None], Any]) -> Callable[..., Any]:
        @functools.wraps(method)  # HELP and EHLO read the method's syntax attributes
        async def call(arg: str | None) -> None:
            if name == "MAIL":
                self.since_mail = 0
            else:
                self.since_mail += 1
                if self.since_mail > self.limits.commands_before_mail:
                    log.warning(
                        "SMTP client %s sent %d commands without MAIL; closing",
                        self.address or self._peer(), self.since_mail - 1,
                    )  # fmt: skip
                    await self.push("421 4.7.0 Too many commands without mail, closing")
                    if self.transport is not None:
                        self.transport.close()
                    return
            await method(arg)

        return call

    def _peer(self) -> str:
        peer = self.session.peer if self.session is not None else None
        return str(peer[0]) if isinstance(peer, tuple) else str(peer)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None and self._original_transport is None:  # not STARTTLS' switch
            peer = transport.get_extra_info("peername")
            address = str(peer[0]) if isinstance(peer, tuple) else "?"
            reason = ""
            if not self.counts.admit():
                reason = "Too many connections, try again later"
            elif self._proxy_timeout is None:  # the socket's address is the client's
                self.counted = True
                if self.counts.admit_address(address):
                    self.address = address
                else:
                    reason = "Too many connections from your address, try again later"
            else:
                self.counted = True
            if reason:
                self.refuse(transport, address, reason)
                return
        super().connection_made(transport)

    def refuse(self, transport: asyncio.BaseTransport, address: str, reason: str) -> None:
        self.refused = True
        log.warning("SMTP connection from %s refused: %s", address, reason.lower())
        # uvloop's transports are not registered as asyncio.WriteTransport subclasses
        transport = cast(asyncio.WriteTransport, transport)
        transport.write(f"421 4.7.0 {self.hostname} {reason}\r\n".encode())
        transport.close()

    def eof_received(self) -> bool | None:
        """The client closed its side: close ours (aiosmtpd keeps a half-closed connection,
        and its slot, until the idle timeout)."""
        super().eof_received()
        return False

    def connection_lost(self, error: Exception | None) -> None:
        self._release()
        if self.refused:
            return
        super().connection_lost(error)

    def _release(self) -> None:
        if self.address:
            self.counts.leave_address(self.address)
            self.address = ""
        if self.counted:
            self.counted = False
            self.counts.leave()

    def admit_proxied(self, address: str) -> bool:
        """The PROXY header named the client: count it against per_address."""
        if self.counts.admit_address(address):
            self.address = address
            return True
        return False

    def _reset_timeout(self, duration: float | None = None) -> None:
        if duration is None:
            limits = self.limits
            duration = limits.busy_idle_timeout if self.counts.busy else limits.idle_timeout
        super()._reset_timeout(duration)


@dataclass(slots=True)
class SmtpServerHandle:
    """A running SMTP server: where it listens, and how to stop it."""

    host: str
    port: int
    _server: asyncio.AbstractServer
    _sessions: weakref.WeakSet[SMTP]
    _committer: _GroupCommit
    #: Messages delivered since start (for logs, tests and the ingest benchmark).
    stats: dict[str, int] = field(default_factory=lambda: {"delivered": 0, "refused": 0})
    #: The listener's open connections (for tests and the soak benchmark).
    counts: ConnectionCounts | None = None

    async def close(self) -> None:
        """Stop listening and drop open connections."""
        self._server.close()
        for session in list(self._sessions):
            transport = session.transport
            if transport is not None:
                transport.close()
        await self._committer.drain()
        await self._server.wait_closed()


#: (recipients, message, its future, envelope sender, time.monotonic() when DATA ended)
_Item = tuple[list[str], NewMessage, "asyncio.Future[int]", str, float]


class _GroupCommit:
    """Delivers messages in as few store transactions as the load allows (see the docstring)."""

    def __init__(self, store: Store, queued: Callable[[], object] | None = None) -> None:
        self._store = store
        self._pending: list[_Item] = []
        self._task: asyncio.Task[None] | None = None
        #: Called after a commit that queued outbound mail (an out-of-office reply): the
        #: relay's kick, so the reply leaves at once rather than at its next poll.
        self._queued = queued

    async def deliver(
        self,
        recipients: list[str],
        message: NewMessage,
        sender: str = "",
        data_ended: float | None = None,
    ) -> int:
        """Deliver *message* to *recipients* (one transaction, maybe shared); count delivered.
        *sender*: the envelope sender (MAIL FROM, "" for the null sender); *data_ended*: the
        ``time.monotonic()`` when its DATA ended (now when not given)."""
        future: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        ended = time.monotonic() if data_ended is None else data_ended
        self._pending.append((recipients, message, future, sender, ended))
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="natsync-smtp-delivery"
            )
        return await future

    async def drain(self) -> None:
        """Wait for the deliveries already handed over."""
        if self._task is not None:
            await asyncio.shield(self._task)

    async def _run(self) -> None:
        try:
            while self._pending:
                batch = self._pending[:MAX_DELIVERY_BATCH]
                del self._pending[:MAX_DELIVERY_BATCH]
                await self._commit(batch)
        finally:
            self._task = None

    async def _commit(self, batch: list[_Item]) -> None:
        jobs = [(rcpts, message, sender, ended) for rcpts, message, _, sender, ended in batch]
        try:
            results = await self._store.run(lambda txn: [_deliver_all(txn, *job) for job in jobs])
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0][2], exc)
                return
            for item in batch:  # one transaction each: a bad message fails only itself
                await self._commit([item])
            return
        if self._queued is not None and any(queued for _, queued in results):
            self._queued()
        for (_, _, future, _, _), (count, _) in zip(batch, results, strict=True):
            _settle(future, count)


def _settle(future: asyncio.Future[int], outcome: int | Exception) -> None:
    if future.done():  # the client went away meanwhile
        return
    if isinstance(outcome, Exception):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


class _Handler:
    """aiosmtpd hooks: RCPT policy, delivery at DATA, PROXY source check."""

    def __init__(
        self,
        store: Store,
        domains: Iterable[str],
        hostname: str,
        proxy_from: set[str] | None,
        clock: Callable[[], datetime],
        stats: dict[str, int],
        committer: _GroupCommit,
    ) -> None:
        self.committer = committer
        self.store = store
        self.domains = {d.strip().lower() for d in domains}
        self.hostname = hostname
        self.proxy_from = proxy_from
        self.clock = clock
        self.stats = stats
        self._known: dict[str, float] = {}
        # Queue ids: unique per server start and cheap (no entropy read per message).
        self._id_prefix = uuid.uuid4().hex[:8]
        self._ids = itertools.count(1)

    async def handle_PROXY(
        self, server: SMTP, session: Session, envelope: Envelope, data: Any
    ) -> bool:
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        allowed = self.proxy_from is not None and peer in self.proxy_from
        if not allowed:
            log.warning("PROXY header from %s refused: not a configured proxy", peer)
            return False
        client = getattr(data, "src_addr", None)
        if (
            isinstance(server, _LimitedSMTP)
            and client is not None
            and not server.admit_proxied(str(client))
        ):
            log.warning("SMTP connection from %s refused: too many connections", client)
            await server.push("421 4.7.0 Too many connections from your address, try again later")
            return False
        return True

    async def _is_local_user(self, address: str) -> bool:
        key = address.lower()
        expiry = self._known.get(key)
        if expiry is not None and expiry > time.monotonic():
            return True
        user = await self.store.run(lambda txn: txn.get_user_by_email(address))
        if user is None:
            self._known.pop(key, None)
            return False
        if len(self._known) >= LOCAL_USER_CACHE_SIZE:
            self._known.clear()
        self._known[key] = time.monotonic() + LOCAL_USER_CACHE_SECONDS
        return True

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        if len(envelope.rcpt_tos) >= MAX_RECIPIENTS:
            return "452 4.5.3 Too many recipients"
        local, at, domain = address.rpartition("@")
        if not at or not local or domain.lower() not in self.domains:
            self.stats["refused"] += 1
            log.info("relay attempt refused: %r -> %r", envelope.mail_from, address)
            return f"550 5.7.1 <{address}>: relaying denied, not a local domain"
        try:
            known = await self._is_local_user(address)
        except Exception:
            log.exception("store lookup for RCPT %r failed", address)
            return "451 4.3.0 Temporary lookup failure, try again later"
        if not known:
            self.stats["refused"] += 1
            return f"550 5.1.1 <{address}>: no such user here"
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    def _received(self, session: Session, envelope: Envelope, queue_id: str) -> bytes:
        peer = session.peer[0] if isinstance(session.peer, tuple) else str(session.peer)
        proxy = session.proxy_data
        if proxy is not None and getattr(proxy, "src_addr", None) is not None:
            peer = str(proxy.src_addr)
        helo = (session.host_name or "unknown").replace("\r", "").replace("\n", "")[:200]
        protocol = "ESMTP" if session.extended_smtp else "SMTP"
        if session.ssl is not None:  # RFC 3848: ESMTPS, mail received over STARTTLS
            protocol = "ESMTPS" if session.extended_smtp else "SMTPS"
        target = f"\r\n\tfor <{envelope.rcpt_tos[0]}>" if len(envelope.rcpt_tos) == 1 else ""
        line = (
            f"Received: from {helo} ([{peer}])\r\n\tby {self.hostname} (natsync) with {protocol}"
            f" id {queue_id}{target};\r\n\t{format_datetime(self.clock())}\r\n"
        )
        return line.encode("utf-8", "replace")

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        data_ended = time.monotonic()  # where push latency starts (docs/push.md)
        content = envelope.original_content
        if not isinstance(content, bytes):
            content = bytes(content or b"")
        queue_id = f"{self._id_prefix}{next(self._ids):08x}"
        raw = self._received(session, envelope, queue_id) + content
        now = self.clock()
        try:
            message = parse_message(raw, now)
        except MailError:
            return "554 5.6.0 Message is not RFC 5322 mail"
        recipients = list(envelope.rcpt_tos)
        try:
            count = await self.committer.deliver(
                recipients, message, envelope.mail_from or "", data_ended
            )
        except Exception:
            log.exception("delivery of %s failed; the sender will retry", queue_id)
            return "451 4.3.0 Temporary delivery failure, try again later"
        if count == 0:
            return "550 5.1.1 None of the recipients exists any more"
        self.stats["delivered"] += 1
        log.info("delivered %s from %r to %d recipient(s)", queue_id, envelope.mail_from, count)
        return f"250 2.0.0 OK id={queue_id}"

    async def handle_exception(self, error: Exception) -> str:
        log.error("SMTP session error: %r", error)
        return "451 4.3.0 Temporary server error"


def _deliver_all(
    txn: Txn, recipients: list[str], message: NewMessage, sender: str, data_ended: float
) -> tuple[int, bool]:
    """(recipients delivered to, whether an out-of-office reply was queued). The folders the
    mail changed are stamped with *data_ended* for the change feed (a folder an earlier mail
    of the same transaction changed keeps that mail's earlier stamp)."""
    delivered = 0
    queued = False
    before = set(txn.changed)
    for address in dict.fromkeys(r.lower() for r in recipients):
        user = txn.get_user_by_email(address)
        if user is None:
            log.warning("recipient %r vanished between RCPT and DATA", address)
            continue
        queued |= deliver_to_inbox(txn, user, message, envelope_sender=sender)
        delivered += 1
    txn.changed.update(
        data_key(i, data_ended) for i in txn.changed - before if 0 < i < DATA_FOLDER_SPAN
    )
    return delivered, queued


async def start_smtp_server(
    store: Store,
    host: str,
    port: int,
    domains: Iterable[str],
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    proxy_protocol_from: set[str] | None = None,
    *,
    hostname: str | None = None,
    clock: Callable[[], datetime] | None = None,
    relay: Any = None,
    limits: SmtpLimits | None = None,
    tls_context: ssl.SSLContext | None = None,
) -> SmtpServerHandle:
    """Listen for SMTP on *host*:*port* (0: any free port) and deliver into *store*.
    *relay* (a natsync.mail.relay.Relay) is kicked when a delivery queued an out-of-office
    reply; STARTTLS is offered with *tls_context* when given."""
    loop = asyncio.get_running_loop()
    limits = limits or SmtpLimits()
    total = limits.total or listener_budget(SMTP_DESCRIPTOR_SHARE)
    counts = ConnectionCounts(limits.per_address, total)
    name = hostname or socket.gethostname()
    stats = {"delivered": 0, "refused": 0}
    committer = _GroupCommit(store, relay.kick if relay is not None else None)
    handler = _Handler(
        store,
        domains,
        name,
        proxy_protocol_from,
        clock or (lambda: datetime.now(UTC)),
        stats,
        committer,
    )
    sessions: weakref.WeakSet[SMTP] = weakref.WeakSet()

    def factory() -> SMTP:
        smtp = _LimitedSMTP(
            handler,
            counts,
            limits,
            data_size_limit=max_message_size,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=name,
            ident="natsync ESMTP",
            timeout=limits.idle_timeout,
            tls_context=tls_context,
            proxy_protocol_timeout=PROXY_PROTOCOL_TIMEOUT if proxy_protocol_from else None,
            loop=loop,
        )
        sessions.add(smtp)
        return smtp

    from natsync.base.listen import listen_host, listen_port

    bind = listen_host(host)  # "::" and names: both families, as the ActiveSync listener
    server = await loop.create_server(factory, bind, listen_port(bind, port))
    bound_port = server.sockets[0].getsockname()[1]
    log.info(
        "SMTP listening on %s:%d for %s (at most %d connections, %d per address%s)",
        host, bound_port, ", ".join(sorted(handler.domains)), total, limits.per_address,
        ", STARTTLS" if tls_context is not None else "",
    )  # fmt: skip
    return SmtpServerHandle(host, bound_port, server, sessions, committer, stats, counts)
