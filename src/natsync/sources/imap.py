"""The I/O adapter to one IMAP account: Python's imaplib, used from the mirror's own thread.

Why imaplib and not aioimaplib or our own client: imaplib is the standard library (no new
dependency), it frames responses correctly (literals included) and speaks TLS and STARTTLS; what
it lacks — IDLE (RFC 2177) in Python 3.11, QRESYNC's SELECT parameters and the decoding of
CONDSTORE items — is a few lines here on its documented ``send``/``readline`` plus
:mod:`natsync.sources.wire`, a small decoder that is fuzzed. A blocking client fits a worker
thread per account: a home or small office has tens of accounts, not thousands.
"""

from __future__ import annotations

import contextlib
import imaplib
import select
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import Any

from natsync.errors import NatsyncError
from natsync.sources.config import ImapServer, TlsMode
from natsync.sources.structure import (
    LAZY_ABOVE,
    Value,
    fetch_stream,
    fetch_uid,
    parse_fetches,
)
from natsync.sources.wire import (
    MAX_MODSEQ,
    MAX_UID,
    FetchItem,
    ListEntry,
    appended_uid,
    code_number,
    compress_set,
    copy_uids,
    expand_set,
    fetch_items,
    parse_list,
    parse_vanished,
    quote_raw,
    response_codes,
)

#: Seconds to wait for the server's answer to one command (a whole batch of bodies included).
COMMAND_TIMEOUT = 60.0
#: Re-issue IDLE before servers drop it: RFC 2177 §3 advises at most 29 minutes.
IDLE_RESTART = 25 * 60.0
#: Seconds between looks at the wake flag while IDLE waits on the socket (a phone's change is
#: written back within this much of its commit).
WAKE_POLL = 0.05
#: The extensions the mirror needs (RFC 7162 QRESYNC implies CONDSTORE; RFC 4315 UIDPLUS gives
#: the new UIDs of APPEND/MOVE; RFC 6851 MOVE). Dovecot 2.3 and Cyrus 3 have them all.
REQUIRED = ("QRESYNC", "UIDPLUS", "MOVE", "IDLE")
#: What a new message is fetched with: one more byte than LAZY_ABOVE tells a small message
#: (whole: RFC822.SIZE bytes came) from a large one (fetched lazily after).
MESSAGE_SPEC = f"(UID FLAGS MODSEQ INTERNALDATE RFC822.SIZE BODY.PEEK[]<0.{LAZY_ABOVE + 1}>)"


# imaplib refuses commands it has no state table entry for; NOTIFY (RFC 5465) is newer than it.
imaplib.Commands.setdefault("NOTIFY", ("AUTH", "SELECTED"))


class ImapError(NatsyncError):
    """The IMAP server could not be used; check sources.imap.* and that the server is up."""

    http_status = 503


class ImapAuthError(ImapError):
    """The IMAP server refused the user name or password."""

    http_status = 401


class ImapRefused(ImapError):
    """The IMAP server answered NO to a command (RFC 3501 §7.1.2): over quota, a mailbox that
    is gone, a permission ... — the connection is fine; the change it was asked for is not made."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        #: The response code of the NO (RFC 5530: OVERQUOTA, NOPERM, INUSE ...; TRYCREATE of
        #: RFC 3501 §7.1), upper case; "" when the server gave none.
        self.code = code


@dataclass(frozen=True, slots=True)
class Selected:
    uidvalidity: int
    highestmodseq: int
    uidnext: int
    #: With QRESYNC: what changed since the given modseq (FETCH) and which UIDs vanished.
    changed: list[FetchItem]
    vanished: list[int]
    #: Whether the mailbox keeps new keywords (PERMANENTFLAGS has ``\*``, RFC 3501 §7.1).
    keywords: bool = True
    #: How many messages the mailbox holds (EXISTS, RFC 3501 §7.3.1).
    exists: int = 0


class _Reader:
    """imaplib's input stream with a buffer we can see: IDLE must know whether a response is
    already buffered before it waits on the socket (``makefile``'s buffer is hidden)."""

    CHUNK = 65536

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = bytearray()

    def _fill(self) -> None:
        data = self.sock.recv(self.CHUNK)
        if not data:
            raise OSError("connection closed by the IMAP server")
        self.buffer += data

    def read(self, size: int) -> bytes:
        while len(self.buffer) < size:
            self._fill()
        out = bytes(self.buffer[:size])
        del self.buffer[:size]
        return out

    def readline(self, limit: int = -1) -> bytes:
        while True:
            end = self.buffer.find(b"\n")
            if end >= 0 or (0 < limit <= len(self.buffer)):
                cut = end + 1 if end >= 0 else limit
                if 0 < limit < cut:
                    cut = limit
                out = bytes(self.buffer[:cut])
                del self.buffer[:cut]
                return out
            try:
                self._fill()
            except OSError:
                out = bytes(self.buffer)
                self.buffer.clear()
                return out

    def ready(self) -> bool:
        """Whether a response waits (in our buffer or TLS's) without touching the socket."""
        pending = getattr(self.sock, "pending", None)
        return bool(self.buffer) or bool(pending is not None and pending())

    def close(self) -> None:
        self.buffer.clear()


def tls_context(server: ImapServer) -> ssl.SSLContext:
    context = ssl.create_default_context(
        cafile=str(server.ca_file) if server.ca_file is not None else None
    )
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


class ImapAccount:
    """One logged-in IMAP connection (blocking; use from one thread)."""

    def __init__(self, server: ImapServer, login: str, password: str) -> None:
        self.server = server
        self.login = login
        self.password = password
        self.conn: imaplib.IMAP4 | None = None
        self.capabilities: frozenset[str] = frozenset()
        #: Set when the server reported a change unasked while another command ran (a NOTIFY
        #: event, RFC 5465 §5: STATUS or LIST, or EXISTS): the mirror runs another round
        #: before it waits in IDLE, or the change would wait for the next one.
        self.notified = False
        self._last = ""

    # -- connection

    def connect(self, timeout: float = COMMAND_TIMEOUT) -> None:
        context = tls_context(self.server)
        try:
            if self.server.tls is TlsMode.IMPLICIT:
                conn: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    self.server.host, self.server.port, ssl_context=context, timeout=timeout
                )
            else:
                conn = imaplib.IMAP4(self.server.host, self.server.port, timeout=timeout)
                conn.starttls(context)
        except (OSError, imaplib.IMAP4.error) as exc:
            raise ImapError(
                f"cannot reach the IMAP server {self.server.host}:{self.server.port} "
                f"({self.server.tls}): {exc}"
            ) from exc
        self.conn = conn
        secret = f"\0{self.login}\0{self.password}".encode()
        try:
            # AUTHENTICATE PLAIN (RFC 4616): UTF-8 user names and passwords, unlike LOGIN.
            conn.authenticate("PLAIN", lambda _challenge: secret)
        except imaplib.IMAP4.error as exc:
            self.close()
            raise ImapAuthError(f"the IMAP server refused {self.login!r}: {exc}") from exc
        except OSError as exc:
            self.close()
            raise ImapError(f"IMAP login failed: {exc}") from exc
        conn.file = _Reader(conn.sock)  # type: ignore[assignment]
        _typ, data = conn.capability()
        self.capabilities = frozenset(
            c.upper() for c in (data[-1] or b"").decode("ascii", "replace").split()
        )

    def require(self) -> None:
        missing = [c for c in REQUIRED if c not in self.capabilities]
        if missing:
            raise ImapError(
                f"the IMAP server lacks {', '.join(missing)}, which the mirror needs "
                "(Dovecot 2.3 and Cyrus 3 have them)"
            )
        self._ok(*self._call("ENABLE", "QRESYNC"))

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        with contextlib.suppress(OSError, imaplib.IMAP4.error):
            conn.shutdown()

    @property
    def _c(self) -> imaplib.IMAP4:
        if self.conn is None:
            raise ImapError("not connected to the IMAP server")
        return self.conn

    def _next_command(self, name: str) -> None:
        """Before *name* runs: note a change the server reported unasked since the last
        command (see :attr:`notified`), and clear what the last command left."""
        conn = self._c
        left = conn.untagged_responses
        if (
            "STATUS" in left
            or ("LIST" in left and self._last != "LIST")
            or ("EXISTS" in left and self._last not in ("SELECT", "EXAMINE"))
        ):
            self.notified = True
        self._last = name
        left.clear()

    def _call(self, name: str, *args: str) -> tuple[str, list[Any]]:
        conn = self._c
        self._next_command(args[0] if name == "UID" and args else name)
        try:
            typ, data = conn._simple_command(name, *args)
        except imaplib.IMAP4.abort as exc:
            raise ImapError(f"the IMAP server dropped the connection during {name}: {exc}") from exc
        except imaplib.IMAP4.error as exc:
            raise ImapError(f"IMAP {name} failed: {exc}") from exc
        except OSError as exc:
            raise ImapError(f"IMAP connection lost during {name}: {exc}") from exc
        return typ, data

    @staticmethod
    def _ok(typ: str, data: list[Any]) -> list[Any]:
        if typ == "NO":
            text = b" ".join(d for d in data if isinstance(d, bytes)).decode("utf-8", "replace")
            codes = response_codes([d for d in data if isinstance(d, bytes)])
            code = next(iter(codes), "").upper()
            raise ImapRefused(f"the IMAP server refused: {text}"[:300], code)
        if typ != "OK":
            raise ImapError(f"the IMAP server answered {typ}: {data!r}"[:300])
        return data

    def _untagged(self, name: str) -> list[Any]:
        return list(self._c.untagged_responses.get(name, []))

    # -- mailboxes

    def list_mailboxes(self) -> list[ListEntry]:
        self._ok(*self._call("LIST", '""', '"*"'))
        return [parse_list(line) for line in self._untagged("LIST") if line is not None]

    def select(self, mailbox: str, known: tuple[int, int] | None = None) -> Selected:
        """SELECT *mailbox*; with *known* = (uidvalidity, modseq), QRESYNC (RFC 7162 §3.2.5)
        reports the changes since in the same round trip."""
        args = [quote_raw(mailbox)]
        if known is not None and known[1] > 0:
            args.append(f"(QRESYNC ({known[0]} {known[1]}))")
        typ, data = self._call("SELECT", *args)
        self._ok(typ, data)
        self._c.state = "SELECTED"
        codes = response_codes(self._untagged("OK"))
        uidvalidity = code_number(codes, "UIDVALIDITY", MAX_UID)
        if uidvalidity is None:
            raise ImapError(f"SELECT {mailbox!r} gave no UIDVALIDITY")
        modseq = code_number(codes, "HIGHESTMODSEQ", MAX_MODSEQ) or 0
        uidnext = code_number(codes, "UIDNEXT", MAX_UID) or 0
        changed = fetch_items(self._untagged("FETCH"))
        vanished = [u for line in self._untagged("VANISHED") for u in parse_vanished(line)]
        permanent = codes.get("PERMANENTFLAGS")
        keywords = permanent is None or "\\*" in permanent
        counts = _numbers(self._untagged("EXISTS"))
        exists = min(counts[-1], MAX_UID) if counts else 0
        return Selected(uidvalidity, modseq, uidnext, changed, vanished, keywords, exists)

    def uids(self) -> list[int]:
        self._ok(*self._call("UID", "SEARCH", "ALL"))
        return _numbers(self._untagged("SEARCH"))

    def uids_below(self, below: int, at_least: int) -> list[int]:
        """UIDs below *below*, ascending: at least its newest *at_least* (all when there are
        fewer). Windows of UIDs just below *below* are searched, four times wider each time,
        until one holds that many or reaches UID 1 — not every older UID each time, which at
        the start of a 100,000-message mailbox's backfill was 100,000 UIDs answered and parsed
        (0.1-0.3 s here) for each batch."""
        span = max(1, at_least)
        while below > 1:
            low = max(1, below - span)
            self._ok(*self._call("UID", "SEARCH", "UID", f"{low}:{below - 1}"))
            found = [uid for uid in _numbers(self._untagged("SEARCH")) if low <= uid < below]
            if len(found) >= at_least or low == 1:
                return found
            span *= 4
        return []

    def fetch_flags(self, uids: list[int]) -> list[FetchItem]:
        if not uids:
            return []
        self._ok(*self._call("UID", "FETCH", compress_set(uids), "(UID FLAGS MODSEQ)"))
        return fetch_items(self._untagged("FETCH"))

    def fetch_message_ids(self, uids: list[int]) -> list[FetchItem]:
        if not uids:
            return []
        spec = "(UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])"
        self._ok(*self._call("UID", "FETCH", compress_set(uids), spec))
        return fetch_items(self._untagged("FETCH"))

    def fetch_full(self, uids: list[int]) -> list[FetchItem]:
        if not uids:
            return []
        spec = "(UID FLAGS MODSEQ INTERNALDATE BODY.PEEK[])"
        self._ok(*self._call("UID", "FETCH", compress_set(uids), spec))
        return fetch_items(self._untagged("FETCH"))

    def _fetch(self, uids: list[int], spec: str) -> list[dict[str, Value]]:
        self._ok(*self._call("UID", "FETCH", compress_set(uids), spec))
        return parse_fetches(fetch_stream(self._untagged("FETCH")))

    def fetch_messages(self, uids: list[int]) -> list[dict[str, Value]]:
        """New messages in one round trip: flags, dates, size and the first LAZY_ABOVE + 1
        bytes — the whole of a small message; a large one is then fetched lazily."""
        if not uids:
            return []
        return self._fetch(uids, MESSAGE_SPEC)

    def fetch_newest(self, exists: int, count: int) -> list[dict[str, Value]]:
        """:meth:`fetch_messages` of the newest *count* of the selected mailbox's *exists*
        messages, by sequence number (RFC 3501 §2.3.1.2: they are in UID order): no UID
        SEARCH of a whole large mailbox before the first messages reach the phone."""
        if exists <= 0:
            return []
        first = max(1, exists - count + 1)
        self._ok(*self._call("FETCH", f"{first}:{exists}", MESSAGE_SPEC))
        return parse_fetches(fetch_stream(self._untagged("FETCH")))

    def fetch_structures(self, uids: list[int]) -> list[dict[str, Value]]:
        """What a lazily mirrored message is made of at first (natsync.sources.structure):
        flags, dates, size, BODYSTRUCTURE and the header."""
        if not uids:
            return []
        spec = "(UID FLAGS MODSEQ INTERNALDATE RFC822.SIZE BODYSTRUCTURE BODY.PEEK[HEADER])"
        return self._fetch(uids, spec)

    def fetch_sections(self, uid: int, sections: list[str], limit: int) -> dict[str, bytes]:
        """The first *limit* bytes of each of *sections* of one message (RFC 3501 §6.4.5)."""
        if not sections:
            return {}
        spec = " ".join(f"BODY.PEEK[{s}]<0.{limit}>" for s in sections)
        found: dict[str, bytes] = {}
        for response in self._fetch([uid], f"(UID {spec})"):
            for name, value in response.items():
                if name.startswith("BODY[") and isinstance(value, bytes):
                    found[name[5:].partition("]")[0]] = value
        return found

    def fetch_whole(self, mailbox: str, uids: list[int]) -> dict[int, bytes]:
        """The whole MIME of *uids* in *mailbox* (EXAMINEd: read-only, no flag changes), for
        a phone that asks for what a lazily mirrored message left out."""
        if not uids:
            return {}
        self._ok(*self._call("EXAMINE", quote_raw(mailbox)))
        self._c.state = "SELECTED"
        found: dict[int, bytes] = {}
        for response in self._fetch(uids, "(UID BODY.PEEK[])"):
            body = response.get("BODY[]")
            if isinstance(body, bytes):
                found[fetch_uid(response)] = body
        return found

    # -- write-back

    def store_flag(self, uid: int, flag: str, on: bool, unchanged_since: int | None) -> bool:
        """Set or clear *flag* (or several, space-separated); False when the message changed on
        the server since *unchanged_since* (RFC 7162 §3.1.3 MODIFIED: the server's value wins)."""
        modifier = f"(UNCHANGEDSINCE {unchanged_since}) " if unchanged_since else ""
        action = f"{modifier}{'+' if on else '-'}FLAGS.SILENT"
        typ, data = self._call("UID", "STORE", str(uid), action, f"({flag})")
        self._ok(typ, data)
        return "MODIFIED" not in response_codes([d for d in data if isinstance(d, bytes)])

    def move(self, uid: int, mailbox: str) -> int | None:
        """UID MOVE (RFC 6851); the message's new UID from COPYUID (RFC 4315)."""
        typ, data = self._call("UID", "MOVE", str(uid), quote_raw(mailbox))
        self._ok(typ, data)
        lines = [d for d in [*self._untagged("OK"), *data] if isinstance(d, bytes)]
        value = response_codes(lines).get("COPYUID")
        return copy_uids(value).get(uid) if value else None

    def expunge(self, uid: int) -> None:
        self._ok(*self._call("UID", "STORE", str(uid), "+FLAGS.SILENT", "(\\Deleted)"))
        self._ok(*self._call("UID", "EXPUNGE", str(uid)))

    def append(self, mailbox: str, flags: str, raw: bytes) -> int | None:
        conn = self._c
        self._next_command("APPEND")
        try:
            typ, data = conn.append(quote_raw(mailbox), flags, None, raw)
        except (imaplib.IMAP4.error, OSError) as exc:
            raise ImapError(f"IMAP APPEND to {mailbox!r} failed: {exc}") from exc
        self._ok(typ, data)
        return appended_uid(response_codes([d for d in data if isinstance(d, bytes)]))

    def create(self, mailbox: str) -> None:
        """CREATE and SUBSCRIBE *mailbox* (its raw, modified UTF-7 name), so other clients
        that show subscribed mailboxes only see it too."""
        self._ok(*self._call("CREATE", quote_raw(mailbox)))
        self._ok(*self._call("SUBSCRIBE", quote_raw(mailbox)))

    def rename(self, old: str, new: str) -> None:
        """RENAME (its children follow, RFC 3501 §6.3.5) and move the subscription."""
        self._ok(*self._call("RENAME", quote_raw(old), quote_raw(new)))
        self._call("UNSUBSCRIBE", quote_raw(old))
        self._call("SUBSCRIBE", quote_raw(new))

    def delete(self, mailbox: str) -> None:
        self._ok(*self._call("DELETE", quote_raw(mailbox)))
        self._call("UNSUBSCRIBE", quote_raw(mailbox))

    def notify_all(self) -> bool:
        """NOTIFY (RFC 5465) for every personal mailbox, so one IDLE hears about all of them;
        False when the server does not offer it (then IDLE watches the selected one)."""
        if "NOTIFY" not in self.capabilities:
            return False
        typ, _ = self._call(
            "NOTIFY",
            "SET",
            "(selected (MessageNew MessageExpunge FlagChange))",
            "(personal (MessageNew MessageExpunge FlagChange MailboxName))",
        )
        return typ == "OK"

    # -- push

    def idle(self, wake: threading.Event, limit: float = IDLE_RESTART) -> bool:
        """IDLE (RFC 2177) until the server reports something, *wake* is set or *limit* passes;
        True when the server reported a change."""
        conn = self._c
        tag = conn._new_tag()
        conn.send(tag + b" IDLE\r\n")
        first = conn.readline()
        heard = False
        while first.startswith(b"* "):  # a NOTIFY event sent before the continuation
            heard = heard or not first.upper().startswith(b"* OK")
            first = conn.readline()
        if not first.startswith(b"+"):
            raise ImapError(f"the IMAP server refused IDLE: {first!r}"[:200])
        sock: socket.socket = conn.sock
        reader: _Reader = conn.file  # type: ignore[assignment]
        deadline = time.monotonic() + limit
        try:
            while not heard and not wake.is_set() and time.monotonic() < deadline:
                if not reader.ready():
                    ready, _, _ = select.select([sock], [], [], WAKE_POLL)
                    if not ready:
                        continue
                line = conn.readline()
                if not line:
                    raise ImapError("the IMAP server closed the connection during IDLE")
                if line.startswith(b"* ") and not line.upper().startswith(b"* OK"):
                    heard = True
                    break
        finally:
            conn.send(b"DONE\r\n")
            while True:
                line = conn.readline()
                if not line:
                    raise ImapError("the IMAP server closed the connection after IDLE")
                if line.startswith(tag):
                    break
                if line.startswith(b"* "):
                    heard = True
        return heard


def _numbers(lines: list[Any]) -> list[int]:
    """The UIDs of SEARCH responses, sorted."""
    found: list[int] = []
    for line in lines:
        if isinstance(line, bytes):
            found += expand_set(line.replace(b" ", b",")) if line.strip() else []
    return sorted(found)


def check_login(server: ImapServer, login: str, password: str) -> None:
    """Log in and out once; raises ImapAuthError for a wrong password, ImapError otherwise."""
    account = ImapAccount(server, login, password)
    account.connect(timeout=15.0)
    account.close()
