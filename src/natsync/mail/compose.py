"""Messages a phone sends: SendMail, SmartReply and SmartForward (MS-ASCMD 2.2.1.17, 2.2.1.19,
2.2.1.20), made ready for delivery (sans-I/O: ``now`` and the randomness ``rng`` are passed
in, so the same command with the same seed relays the same bytes: a new Message-ID and the
boundary of each new multipart are draws of ``rng``, never of the email package's own random).

Flow, as natsync.eas uses it::

    mime = build_smart_reply(client_mime, original_raw, replace_mime, rng=rng)  # or ..._forward
    out = prepare_outgoing(mime, user.email, user.display_name, now, rng=rng)  # SendMail
    # then, in ONE store transaction (natsync.mail.relay):
    route_outgoing(txn, user, out.raw, out.recipients, now, local_domains)
    save_sent_copy(txn, user, out.sent_copy, now)                       # when SaveInSentItems
    # after commit, when route_outgoing queued something: relay.kick()

Decisions (docs/mail.md):

* **From is the user.** A message without From gets ``Display Name <user@domain>``. A From with
  another address is replaced by the user's (and a Sender header naming someone else is
  dropped): a phone account must not send as somebody else, and a smarthost with SPF/DMARC
  would refuse it anyway. A From with the user's own address is kept as the client wrote it.
* Date and Message-ID are added when missing (Message-ID on the user's domain).
* **Bcc** recipients receive the message, but the Bcc header is removed from what is relayed or
  delivered (``Outgoing.raw``); the Sent Items copy (``Outgoing.sent_copy``) keeps it, so the
  user still sees whom they sent a blind copy to.
* Header edits are made on the raw header block; the body bytes the client sent are never
  re-encoded (a signed S/MIME body stays valid).
* SmartReply without ReplaceMime appends the original's text, quoted (``> `` lines in plain
  text, a ``<blockquote>`` in HTML) under an "Original Message" header block, sets
  In-Reply-To/References, and carries over the original's inline images its HTML refers to.
  SmartForward without ReplaceMime appends the original's body under a "Forwarded message"
  block and includes all of the original's attachments (MS-ASCMD 2.2.3.148: the server adds
  the original's body and attachments unless ReplaceMime is present). With ReplaceMime the
  client's MIME is used as it is (replies still get In-Reply-To/References).

Public API (stable): ``Outgoing``, ``prepare_outgoing``, ``recipients``, ``build_smart_reply``,
``build_smart_forward``; ``new_message_id`` and ``give_boundaries`` for other messages built
here (drafts, iMIP).
"""

from __future__ import annotations

import email.policy
import email.utils
import html
import logging
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage, Message

from natsync.mime import (
    header_text,
    looks_like_message,
    parse_bytes,
    read_content,
)
from natsync.mime.errors import MailError

log = logging.getLogger(__name__)

#: Recipients one message may name. Real mail has a few; thousands is a spam run from a
#: stolen phone, and each costs a store lookup.
MAX_RECIPIENTS = 500

_SMTP_POLICY = email.policy.SMTP
_HEAD_END = re.compile(rb"\r?\n\r?\n")
_LINE = re.compile(rb"\r?\n")
_BODY_TAG = re.compile(r"<body[^>]*>(.*)</body\s*>", re.IGNORECASE | re.DOTALL)


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A message ready to deliver: what goes out, what Sent Items keeps, and the envelope."""

    raw: bytes  # delivered and relayed: no Bcc header
    sent_copy: bytes  # for Sent Items: keeps Bcc
    sender: str  # envelope sender: the user's address
    recipients: tuple[str, ...]  # To + Cc + Bcc, each once


def new_message_id(rng: random.Random, now: datetime, domain: str) -> str:
    """A Message-ID (RFC 5322 3.6.4) from the command's time and randomness (the shape of
    ``email.utils.make_msgid``, which reads both itself)."""
    return f"<{now:%Y%m%d%H%M%S}.{rng.randbytes(8).hex()}@{domain or 'localhost'}>"


def give_boundaries(msg: Message, rng: random.Random) -> None:
    """Give each multipart of *msg* that has no boundary yet one drawn from *rng* (the email
    package's generator would draw it from the ``random`` module's own state); boundaries
    already there (a client's) are kept."""
    for part in msg.walk():
        if part.is_multipart() and part.get_boundary() is None:
            part.set_boundary(f"=_natsync_{rng.randbytes(12).hex()}")


# -- header block editing (the body bytes stay untouched) ---------------------------------------


def _split_head(raw: bytes) -> tuple[list[bytes], bytes, bytes]:
    """(header fields with their folded lines, newline, the rest starting at the blank line)."""
    if raw.startswith((b"\r\n", b"\n")):
        return [], b"\r\n" if raw.startswith(b"\r\n") else b"\n", raw
    match = _HEAD_END.search(raw)
    head, rest = (raw, b"") if match is None else (raw[: match.start()], raw[match.start() :])
    newline = b"\r\n" if b"\r\n" in head or not head else b"\n"
    fields: list[bytes] = []
    for line in _LINE.split(head):
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1] += newline + line
        else:
            fields.append(line)
    if match is None:
        rest = newline + newline
    return fields, newline, rest


def _field_name(field: bytes) -> bytes:
    return field.split(b":", 1)[0].strip().lower()


def _edit_headers(
    raw: bytes, remove: Iterable[str], add: Iterable[tuple[str, str]], *, prepend: bool = True
) -> bytes:
    fields, newline, rest = _split_head(raw)
    drop = {name.lower().encode("ascii") for name in remove}
    kept = [f for f in fields if _field_name(f) not in drop]
    new = [f"{name}: {value}".encode() for name, value in add]
    joined = (new + kept) if prepend else (kept + new)
    return newline.join(joined) + rest


# -- addresses ------------------------------------------------------------------------------------


def _addresses(msg: Message, name: str) -> list[str]:
    try:
        header = msg.get(name)
        if header is None:
            return []
        found = [a.addr_spec for a in getattr(header, "addresses", ())]
    except Exception:
        values = [str(v) for k, v in msg.raw_items() if k.lower() == name.lower()]
        found = [addr for _, addr in email.utils.getaddresses(values)]
    return [a.strip() for a in found if a and "@" in a and a.strip() != "<>"]


def _unique(addresses: Iterable[str]) -> list[str]:
    seen: dict[str, str] = {}
    for address in addresses:
        seen.setdefault(address.lower(), address)
    return list(seen.values())


def recipients(raw: bytes) -> list[str]:
    """The addresses in To, Cc and Bcc of *raw*, each once (first spelling kept), in order."""
    msg = parse_bytes(raw)
    return _unique(_addresses(msg, "To") + _addresses(msg, "Cc") + _addresses(msg, "Bcc"))


def _domain(address: str) -> str:
    return address.rpartition("@")[2] or "localhost"


def prepare_outgoing(
    client_mime: bytes,
    user_email: str,
    display_name: str,
    now: datetime,
    *,
    rng: random.Random,
    extra_recipients: Iterable[str] = (),
) -> Outgoing:
    """Make a client's message ready to send as *user_email* (see the module docstring); a
    missing Message-ID is drawn from *rng*.

    *extra_recipients* are added to the envelope only (EAS 16 Forwardees are sent this way).
    Raises MailError when the data is not a message or names no recipient.
    """
    msg = parse_bytes(client_mime)
    if not looks_like_message(client_mime, msg):
        raise MailError("SendMail: the Mime element does not hold an RFC 5322 message")
    rcpts = _unique(
        _addresses(msg, "To")
        + _addresses(msg, "Cc")
        + _addresses(msg, "Bcc")
        + [a for a in extra_recipients if "@" in a]
    )
    if not rcpts:
        raise MailError("the message names no recipient (To, Cc or Bcc)")
    if len(rcpts) > MAX_RECIPIENTS:
        raise MailError(f"the message names more than {MAX_RECIPIENTS} recipients")

    remove: list[str] = []
    add: list[tuple[str, str]] = []
    from_addresses = _addresses(msg, "From")
    if len(from_addresses) != 1 or from_addresses[0].lower() != user_email.lower():
        remove.append("From")
        add.append(("From", email.utils.formataddr((display_name, user_email), "utf-8")))
    sender = _addresses(msg, "Sender")
    if sender and sender[0].lower() != user_email.lower():
        remove.append("Sender")
    if not header_text(msg, "Date"):
        remove.append("Date")
        add.append(("Date", email.utils.format_datetime(now)))
    if not header_text(msg, "Message-ID"):
        remove.append("Message-ID")
        add.append(("Message-ID", new_message_id(rng, now, _domain(user_email))))
    sent_copy = _edit_headers(client_mime, remove, add) if (remove or add) else client_mime
    raw = _edit_headers(sent_copy, ["Bcc"], [])
    return Outgoing(raw=raw, sent_copy=sent_copy, sender=user_email, recipients=tuple(rcpts))


# -- SmartReply / SmartForward --------------------------------------------------------------------


def _reply_headers(original: Message, reply: Message) -> list[tuple[str, str]]:
    message_id = header_text(original, "Message-ID")
    if not message_id:
        return []
    add: list[tuple[str, str]] = []
    if not header_text(reply, "In-Reply-To"):
        add.append(("In-Reply-To", message_id))
    if not header_text(reply, "References"):
        references = header_text(original, "References").split()
        if not references:
            references = header_text(original, "In-Reply-To").split()[:1]
        add.append(("References", " ".join([*references[-20:], message_id])))
    return add


def _header_block(original: Message, title: str) -> list[tuple[str, str]]:
    rows = [("From", header_text(original, "From")), ("Sent", header_text(original, "Date"))]
    rows += [("To", header_text(original, "To"))]
    if header_text(original, "Cc"):
        rows.append(("Cc", header_text(original, "Cc")))
    rows.append(("Subject", header_text(original, "Subject")))
    return [("", title), *rows]


def _plain_block(rows: list[tuple[str, str]], text: str, quote: bool) -> str:
    lines = [rows[0][1]] + [f"{name}: {value}" for name, value in rows[1:]]
    body = text.replace("\r\n", "\n").rstrip()
    if quote:
        body = "\n".join("> " + line if line else ">" for line in body.split("\n"))
    return "\n\n" + "\n".join(lines) + "\n\n" + body


def _html_block(rows: list[tuple[str, str]], original_html: str, quote: bool) -> str:
    head = "<br>".join(
        [f"<b>{html.escape(rows[0][1])}</b>"]
        + [f"<b>{html.escape(n)}:</b> {html.escape(v)}" for n, v in rows[1:]]
    )
    match = _BODY_TAG.search(original_html)
    inner = match.group(1) if match else original_html
    if quote:
        inner = (
            '<blockquote style="margin:0 0 0 .8ex;border-left:1px #ccc solid;padding-left:1ex">'
            f"{inner}</blockquote>"
        )
    return f"<hr><div>{head}</div><br>{inner}"


def _body_parts(msg: EmailMessage) -> tuple[EmailMessage | None, EmailMessage | None]:
    plain: EmailMessage | None = None
    rich: EmailMessage | None = None
    for part in msg.walk():
        if part.is_multipart():
            continue
        if part.get_content_disposition() == "attachment" or part.get_filename():
            continue
        content_type = part.get_content_type()
        if content_type == "text/plain" and plain is None:
            plain = part
        elif content_type == "text/html" and rich is None:
            rich = part
    return plain, rich


def _part_text(part: EmailMessage) -> str:
    try:
        content = part.get_content()
    except Exception:
        payload = part.get_payload(decode=True)
        return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""
    return content if isinstance(content, str) else ""


def _combine(
    client_mime: bytes,
    original_raw: bytes,
    *,
    forward: bool,
    replace_mime: bool,
    rng: random.Random,
) -> bytes:
    original = read_content(original_raw)
    msg = parse_bytes(client_mime)
    if not looks_like_message(client_mime, msg):
        raise MailError("the Mime element does not hold an RFC 5322 message")
    reply_headers = [] if forward else _reply_headers(original.message, msg)
    if replace_mime:
        return _edit_headers(client_mime, [], reply_headers, prepend=False)
    title = "---------- Forwarded message ----------" if forward else "-----Original Message-----"
    rows = _header_block(original.message, title)
    try:
        plain, rich = _body_parts(msg)
        if plain is None and rich is None:
            if msg.is_multipart():
                raise ValueError("no text body to append to")
            msg.set_content("")
            plain = msg
        if plain is not None:
            text = _part_text(plain) + _plain_block(rows, original.text, quote=not forward)
            plain.set_content(text, subtype="plain", charset="utf-8")
        if rich is not None:
            original_html = original.html or html.escape(original.text).replace("\n", "<br>\n")
            page = _part_text(rich)
            block = _html_block(rows, original_html, quote=not forward)
            closing = re.search(r"</body\s*>", page, re.IGNORECASE)
            page = (
                page[: closing.start()] + block + page[closing.start() :]
                if closing
                else (page + block)
            )
            rich.set_content(page, subtype="html", charset="utf-8")
        wanted = [a for a in original.attachments if forward or a.is_inline]
        if wanted:
            parts = list(parse_bytes(original_raw).walk())  # same tree, MIMEPart parts
            if msg.get_content_type() != "multipart/mixed":
                msg.make_mixed()
            for attachment in wanted:
                msg.attach(parts[attachment.part_index])
        for name, value in reply_headers:
            msg[name] = value
        give_boundaries(msg, rng)  # a new multipart/mixed around the client's message
        return msg.as_bytes(policy=_SMTP_POLICY)
    except Exception as exc:
        log.warning("could not append the original message (%s); sending the client's as is", exc)
        return _edit_headers(client_mime, [], reply_headers, prepend=False)


def build_smart_reply(
    client_mime: bytes, original_raw: bytes, replace_mime: bool, *, rng: random.Random
) -> bytes:
    """The message a SmartReply sends: the client's reply plus, unless *replace_mime*, the
    original's text quoted below it; In-Reply-To and References point at the original."""
    return _combine(client_mime, original_raw, forward=False, replace_mime=replace_mime, rng=rng)


def build_smart_forward(
    client_mime: bytes, original_raw: bytes, replace_mime: bool, *, rng: random.Random
) -> bytes:
    """The message a SmartForward sends: the client's text plus, unless *replace_mime*, the
    original's body and all its attachments."""
    return _combine(client_mime, original_raw, forward=True, replace_mime=replace_mime, rng=rng)
