"""Out-of-office replies (what a phone's Settings Oof asks for: MS-ASCMD 2.2.3.119 Oof,
2.2.3.117 OofState, 2.2.3.118 OofMessage) sent as RFC 3834 automatic responses.

When the user's OOF is on (OofState 1), or scheduled (2) and ``now`` is inside
[StartTime, EndTime), a message delivered to them gets one reply per sender per OOF period:

* The reply goes to the envelope sender (RFC 3834 section 4: the Return-Path), never to a null
  sender, nor to one of the user's own addresses, nor twice to one sender in one period.
* Nothing answers a message that says it is automatic or bulk (RFC 3834 section 2):
  ``Auto-Submitted`` other than ``no``, ``Precedence: bulk / junk / list``, any ``List-Id`` /
  ``List-Unsubscribe`` / ``List-Post`` header (RFC 2369 / 2919 mailing lists), or a sender
  like ``MAILER-DAEMON`` / ``owner-*`` / ``*-request`` (RFC 3834 section 2, last paragraph).
* The text is the phone's: AppliesToInternal for a sender in the user's own domain,
  AppliesToExternalKnown for one in the user's contacts, AppliesToExternalUnknown for the rest;
  an audience whose message is not Enabled gets nothing.
* The reply carries ``Auto-Submitted: auto-replied``, ``In-Reply-To`` / ``References`` of the
  original, "Automatic reply: " before its subject (what Exchange writes), and is sent with a
  null envelope sender (RFC 3834 section 3.3), so a second responder never answers it.

The period is the OOF setting as the phone last set it (``since`` is stamped by Settings Oof
Set); a new Set starts a new period and a new list of answered senders.

The decisions (:func:`active`, :func:`decide`, :func:`build_reply`) are pure: ``now`` and the
settings are passed in. :func:`on_delivery` is the hook delivery calls in its transaction
(``relay.deliver_to_inbox`` with an envelope sender): it reads the settings and contacts,
delivers a reply to a local sender at once and queues one to a remote sender for the relay.
"""

from __future__ import annotations

import email.utils
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from typing import Any, Protocol

from natsync.classes.body import parse_eas_date
from natsync.mime import header_text, parse_message, parse_tree
from natsync.mime.errors import MailError
from natsync.store.api import FolderType, NewMessage, Txn, User

log = logging.getLogger("natsync.mail.oof")

#: The user setting Settings Oof writes (natsync.eas.settings.OOF_KEY).
OOF_SETTING = "oof"
#: The user setting holding the period and the senders already answered in it.
REPLIED_SETTING = "oof.replied"


class Deliver(Protocol):
    """``relay.deliver_to_inbox``: put a message in a local user's Inbox."""

    def __call__(
        self, txn: Txn, user: User, message: NewMessage, *, envelope_sender: str | None = None
    ) -> bool: ...


#: Senders remembered per period. Past it the oldest are forgotten (and could be answered a
#: second time): the list lives in one setting, read and written on every delivery while OOF
#: is on, so it is kept to a size that costs little.
MAX_REMEMBERED_SENDERS = 2000
#: Longest reply text sent (Settings refuses longer ones: natsync.eas.settings.MAX_OOF_MESSAGE).
MAX_REPLY_TEXT = 16 * 1024
#: Longest envelope sender answered (RFC 5321 4.5.3.1: a path is at most 256 octets).
MAX_ADDRESS = 254
#: Subject prefix of a reply (Exchange's wording; RFC 3834 section 3.1.5 leaves it open).
SUBJECT_PREFIX = "Automatic reply: "
#: Precedence values that mark bulk mail (RFC 3834 section 2; RFC 2076).
BULK_PRECEDENCE = frozenset({"bulk", "junk", "list"})
#: Headers that mark mailing-list mail (RFC 2369, RFC 2919).
LIST_HEADERS = ("List-Id", "List-Unsubscribe", "List-Post", "List-Help", "List-Owner")
#: Local parts that name a mail system or a list, never a person (RFC 3834 section 2).
_ROBOT_PREFIXES = ("mailer-daemon", "postmaster", "owner-", "listserv", "majordomo")
_ROBOT_SUFFIXES = ("-request", "-owner", "-bounces")

INTERNAL = "AppliesToInternal"
EXTERNAL_KNOWN = "AppliesToExternalKnown"
EXTERNAL_UNKNOWN = "AppliesToExternalUnknown"


@dataclass(frozen=True, slots=True)
class OofSettings:
    """The stored OOF document (natsync.eas.settings writes it)."""

    state: str = "0"  # 0 off, 1 on, 2 scheduled (MS-ASCMD 2.2.3.117)
    start: datetime | None = None
    end: datetime | None = None
    #: audience -> reply text, for the audiences whose message is Enabled.
    messages: dict[str, str] = field(default_factory=dict)
    #: When the phone last set it: what makes one OOF period differ from the next.
    since: str = ""

    @classmethod
    def from_json(cls, text: str | None) -> OofSettings:
        if not text:
            return cls()
        try:
            data: dict[str, Any] = json.loads(text)
            start = parse_eas_date(data["start"]) if data.get("start") else None
            end = parse_eas_date(data["end"]) if data.get("end") else None
        except (ValueError, TypeError, KeyError, MailError):
            return cls()  # an unreadable setting is "off", never a reply to everyone
        messages = {
            audience: str(msg.get("reply", ""))[:MAX_REPLY_TEXT]
            for audience, msg in (data.get("messages") or {}).items()
            if isinstance(msg, dict) and str(msg.get("enabled", "0")) == "1"
        }
        return cls(str(data.get("state", "0")), start, end, messages, str(data.get("since", "")))

    @property
    def period(self) -> str:
        return f"{self.state}|{self.start}|{self.end}|{self.since}"


def active(settings: OofSettings, now: datetime) -> bool:
    """Whether *settings* answer mail arriving at *now*."""
    if settings.state == "1":
        return True
    if settings.state != "2" or settings.start is None or settings.end is None:
        return False
    return settings.start <= now < settings.end


@dataclass(frozen=True, slots=True)
class Incoming:
    """What the decision reads of a delivered message."""

    envelope_sender: str
    headers: dict[str, str]  # lower-case name -> value (first occurrence)

    @classmethod
    def of(cls, raw: bytes, envelope_sender: str) -> Incoming:
        msg = parse_tree(raw)
        names = (
            "auto-submitted",
            "precedence",
            "subject",
            "message-id",
            "references",
            "x-auto-response-suppress",
        )
        headers = {n: header_text(msg, n) for n in (*names, *(h.lower() for h in LIST_HEADERS))}
        return cls(envelope_sender.strip().strip("<>").strip(), headers)


def _plain_address(address: str) -> bool:
    """A mailbox an answer can be addressed to: no spaces, controls or brackets, of a length
    SMTP allows (RFC 5321 4.5.3.1)."""
    local, _, domain = address.rpartition("@")
    if not local or not domain or len(address) > MAX_ADDRESS:
        return False
    if any(c.isspace() or ord(c) < 32 or c in '<>(),;:"[]\\@' for c in local + domain):
        return False
    try:  # what build_reply's To header will parse it with
        Address(addr_spec=address)
    except Exception:  # the stdlib parser raises several unrelated types
        return False
    return True


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _is_robot(address: str) -> bool:
    local = address.rpartition("@")[0].lower()
    return local.startswith(_ROBOT_PREFIXES) or local.endswith(_ROBOT_SUFFIXES)


def decide(
    settings: OofSettings,
    incoming: Incoming,
    now: datetime,
    own_addresses: Iterable[str],
    known_contacts: Iterable[str],
    answered: Iterable[str],
) -> tuple[str, str] | None:
    """(the address to answer, the reply text), or None when no reply is due (see above)."""
    if not active(settings, now):
        return None
    sender = incoming.envelope_sender
    if not sender or "@" not in sender or _is_robot(sender) or not _plain_address(sender):
        return None
    headers = incoming.headers
    if headers.get("auto-submitted", "").strip().lower() not in ("", "no"):
        return None
    if headers.get("precedence", "").strip().lower() in BULK_PRECEDENCE:
        return None
    if any(headers.get(h.lower()) for h in LIST_HEADERS):
        return None
    suppress = headers.get("x-auto-response-suppress", "").lower()
    if "oof" in suppress or suppress.strip() == "all":
        return None  # Exchange's own "don't answer this" (MS-OXCMAIL 2.2.3.2.20)
    key = sender.lower()
    own = {a.lower() for a in own_addresses}
    if key in own or key in {a.lower() for a in answered}:
        return None
    domains = {a.rpartition("@")[2] for a in own}
    if key.rpartition("@")[2] in domains:
        audience = INTERNAL
    elif key in {a.lower() for a in known_contacts}:
        audience = EXTERNAL_KNOWN
    else:
        audience = EXTERNAL_UNKNOWN
    text = settings.messages.get(audience)
    if not text:
        return None
    return sender, text


def build_reply(
    user_email: str, display_name: str, to: str, text: str, incoming: Incoming, now: datetime
) -> bytes:
    """The RFC 3834 reply to *incoming* (see the module docstring)."""
    msg = EmailMessage(policy=SMTP)
    msg["From"] = email.utils.formataddr((display_name, user_email))
    msg["To"] = to
    subject = _one_line(incoming.headers.get("subject", ""))
    msg["Subject"] = SUBJECT_PREFIX + subject if subject else SUBJECT_PREFIX.rstrip(": ")
    msg["Date"] = email.utils.format_datetime(now)
    msg["Message-ID"] = email.utils.make_msgid(domain=user_email.rpartition("@")[2] or "localhost")
    original = _one_line(incoming.headers.get("message-id", ""))
    if original:
        msg["In-Reply-To"] = original
        references = _one_line(incoming.headers.get("references", ""))
        msg["References"] = " ".join(filter(None, (references, original)))
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"
    if text.lstrip().lower().startswith(("<html", "<!doctype", "<p", "<div")):
        msg.set_content(text, subtype="html")
    else:
        msg.set_content(text)
    return msg.as_bytes()


# -- the hook (runs in the delivery's transaction) --------------------------------------------


def _contact_addresses(txn: Txn, user: User) -> set[str]:
    found: set[str] = set()
    for folder in txn.list_folders(user.id):
        if folder.type not in (FolderType.CONTACTS, FolderType.USER_CONTACTS):
            continue
        for item in txn.list_items(folder.id):
            for n in (1, 2, 3):
                value = str(item.data.get(f"email{n}_address", "") or "")
                address = email.utils.parseaddr(value)[1]
                if "@" in address:
                    found.add(address.lower())
    return found


def on_delivery(
    txn: Txn, user: User, message: NewMessage, envelope_sender: str, deliver: Deliver
) -> bool:
    """Answer *message* (just delivered to *user*) when the user's OOF says so; True when the
    reply was queued for the relay (the caller kicks it after commit). A reply to a local
    sender goes to their Inbox through *deliver* (the relay's ``deliver_to_inbox``, which
    calls this function: it is passed in, not imported)."""
    settings = OofSettings.from_json(txn.get_user_setting(user.id, OOF_SETTING))
    now = message.received_at
    if not active(settings, now) or not envelope_sender:
        return False
    incoming = Incoming.of(message.raw, envelope_sender)
    stored = json.loads(txn.get_user_setting(user.id, REPLIED_SETTING) or "{}")
    answered: list[str] = (
        stored.get("senders", []) if stored.get("period") == settings.period else []
    )
    contacts = _contact_addresses(txn, user) if EXTERNAL_KNOWN in settings.messages else set()
    decision = decide(settings, incoming, now, (user.email,), contacts, answered)
    if decision is None:
        return False
    to, text = decision
    raw = build_reply(user.email, user.display_name, to, text, incoming, now)
    answered = [*answered, to.lower()][-MAX_REMEMBERED_SENDERS:]
    txn.set_user_setting(
        user.id, REPLIED_SETTING, json.dumps({"period": settings.period, "senders": answered})
    )
    local = txn.get_user_by_email(to)
    if local is not None:
        deliver(txn, local, parse_message(raw, now), envelope_sender="")
        log.info("out-of-office reply from %s to %s delivered", user.email, to)
        return False
    txn.enqueue_outbound("", [to], raw, now)
    log.info("out-of-office reply from %s to %s queued", user.email, to)
    return True
