"""Meetings by mail, outbound: iTIP messages (RFC 5546) sent as iMIP mail (RFC 6047).

:func:`send`: an iTIP message as a MIME mail (text/plain + text/calendar with the method, RFC
6047 2.4) through ``relay.route_outgoing`` in the caller's transaction.
:func:`after_client_write` (the Calendar codec's Sync hook, given to it by natsync.eas.registry)
sends REQUEST to the attendees of a meeting the user organizes when a 16.x phone adds or
changes it, and CANCEL when it is deleted (or attendees are removed); 12.1-14.1 phones send
their own invitations by SendMail, so their writes send nothing. MeetingResponse
(natsync.eas.meetingresponse) sends the REPLY (:func:`reply`).

Inbound invitations are natsync.mail.imip, which the relay calls on every delivery: a local
invitation sent from here comes back through it.
"""

from __future__ import annotations

import email.utils
import logging
import random
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from email.message import EmailMessage
from typing import Any

from natsync.classes import calendar as cal
from natsync.classes.ical import records_to_ics
from natsync.mail import compose, relay
from natsync.mail.imip import address_key
from natsync.mime.errors import MailError
from natsync.store.api import Item, Txn, User

log = logging.getLogger(__name__)


def build_message(
    user: User,
    method: str,
    records: Sequence[Mapping[str, Any]],
    recipients: Sequence[str],
    subject: str,
    text: str,
    recurrence_id: str | None = None,
    *,
    rng: random.Random,
) -> bytes:
    """An iMIP message (RFC 6047 2.4): text/plain for people, text/calendar for programs (the
    multipart's boundary drawn from *rng*)."""
    msg = EmailMessage()
    msg["From"] = email.utils.formataddr((user.display_name, user.email))
    msg["To"] = ", ".join(recipients)
    msg["Subject"] = subject
    msg.set_content(text)
    ics = records_to_ics(records, method, recurrence_id).decode("utf-8")
    msg.add_alternative(ics, subtype="calendar", params={"method": method})
    compose.give_boundaries(msg, rng)
    return msg.as_bytes()


def send(
    txn: Txn,
    user: User,
    method: str,
    records: Sequence[Mapping[str, Any]],
    recipients: Sequence[str],
    subject: str,
    text: str,
    now: datetime,
    rng: random.Random,
    local_domains: Iterable[str] | None = None,
    recurrence_id: str | None = None,
) -> bool:
    """Send an iTIP *method* message to *recipients* in the caller's transaction; True when
    something went to the outbound queue (the caller kicks the relay). Its Message-ID and MIME
    boundary are draws of *rng*, its Date and DTSTAMP *now*."""
    targets = [r for r in dict.fromkeys(r.strip() for r in recipients) if "@" in r]
    targets = [r for r in targets if address_key(r) != address_key(user.email)]
    if not targets:
        return False
    raw = build_message(user, method, records, targets, subject, text, recurrence_id, rng=rng)
    try:
        out = compose.prepare_outgoing(raw, user.email, user.display_name, now, rng=rng)
    except MailError as exc:
        log.warning("iMIP %s from %s not sent: %s", method, user.email, exc.message)
        return False
    if local_domains is None:  # no configuration at hand: our domain is the user's, and theirs
        domains = {user.email.rpartition("@")[2].lower()}
        domains |= {r.rpartition("@")[2].lower() for r in targets if txn.get_user_by_email(r)}
        local_domains = domains
    result = relay.route_outgoing(txn, user, out.raw, out.recipients, now, local_domains)
    return result.outbound_id is not None


def _organizes(user: User, record: Mapping[str, Any]) -> bool:
    if not record.get("attendees"):
        return False
    organizer = address_key(record.get("organizer_email"))
    if organizer:
        return organizer == address_key(user.email)
    return record.get("meeting_status") in cal.ORGANIZER_STATUSES


def _outgoing(user: User, record: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    data = dict(record) | {"dtstamp": cal.utc_text(now)}
    if not data.get("organizer_email"):
        data["organizer_email"], data["organizer_name"] = user.email, user.display_name or None
    return data


def _emails(record: Mapping[str, Any] | None) -> list[str]:
    if record is None:
        return []
    return [a["email"] for a in record.get("attendees") or [] if "@" in (a.get("email") or "")]


def after_client_write(
    txn: Txn, user: User, old: Item | None, new: Item | None, now: datetime, rng: random.Random
) -> bool:
    """The Calendar codec's Sync hook: invitations the phone made go out by mail."""
    before = old.data if old is not None else None
    after = new.data if new is not None else None
    last = after if after is not None else before
    if last is None or not last.get("invitations_by_server"):
        return False  # a 12.1-14.1 phone mails its own invitations (SendMail)
    queued = False
    if after is not None and _organizes(user, after):
        cancelled = after.get("meeting_status") in cal.CANCELLED_STATUSES
        was_cancelled = (
            before is not None and before.get("meeting_status") in cal.CANCELLED_STATUSES
        )
        data = _outgoing(user, after, now)
        subject = after.get("subject") or ""
        if cancelled and not was_cancelled:
            text = f"{user.display_name or user.email} canceled this meeting."
            return send(
                txn, user, "CANCEL", [data], _emails(after), f"Canceled: {subject}", text, now, rng
            )
        if cancelled:
            return False
        changed = before is None or any(before.get(k) != after.get(k) for k in cal.SIGNIFICANT)
        removed = [
            e
            for e in _emails(before)
            if address_key(e) not in {address_key(x) for x in _emails(after)}
        ]
        added = [
            e
            for e in _emails(after)
            if address_key(e) not in {address_key(x) for x in _emails(before)}
        ]
        targets = _emails(after) if changed else added
        if targets:
            text = f"{user.display_name or user.email} invites you to {subject}."
            queued = send(txn, user, "REQUEST", [data], targets, subject, text, now, rng)
        if removed:
            gone = _outgoing(user, after, now) | {
                "attendees": [a for a in before["attendees"] if a["email"] in removed]  # type: ignore[index]
            }
            text = f"{user.display_name or user.email} removed you from {subject}."
            queued = (
                send(txn, user, "CANCEL", [gone], removed, f"Canceled: {subject}", text, now, rng)
                or queued
            )
        return queued
    if after is None and before is not None and _organizes(user, before):
        if before.get("meeting_status") in cal.CANCELLED_STATUSES:
            return False  # the attendees were told when it was cancelled
        data = _outgoing(user, before, now) | {
            "meeting_status": int(cal.MeetingStatus.CANCELED_ORGANIZER)
        }
        subject = before.get("subject") or ""
        text = f"{user.display_name or user.email} canceled this meeting."
        subject = f"Canceled: {subject}"
        return send(txn, user, "CANCEL", [data], _emails(before), subject, text, now, rng)
    return False


def reply(
    txn: Txn,
    user: User,
    record: Mapping[str, Any],
    partstat_status: int,
    now: datetime,
    rng: random.Random,
    local_domains: Iterable[str] | None = None,
    instance: str | None = None,
) -> bool:
    """Send the organizer of *record* the user's answer (RFC 5546 3.2.3 REPLY); with
    *instance* (an occurrence's original start) the answer is for that occurrence only."""
    organizer = record.get("organizer_email") or ""
    if "@" not in organizer:
        return False
    me = {"email": user.email, "name": user.display_name, "status": partstat_status, "type": 1}
    answer = {k: record.get(k) for k in ("uid", "start", "end", "all_day", "tz", "subject")}
    answer |= {
        "dtstamp": cal.utc_text(now),
        "sequence": int(record.get("sequence") or 0),
        "organizer_email": organizer,
        "organizer_name": record.get("organizer_name"),
        "attendees": [me],
        "recurrence": record.get("recurrence"),
        "exceptions": [],
    }
    original = None if instance is None else cal.utc_text(cal.parse_utc(instance))
    if original is not None and record.get("recurrence"):  # that occurrence's own times
        length = cal.parse_utc(record["end"]) - cal.parse_utc(record["start"])
        moved: Mapping[str, Any] = next(
            (e for e in record.get("exceptions") or [] if e["original_start"] == original), {}
        )
        begin = moved.get("start") or original
        finish = moved.get("end") or cal.utc_text(cal.parse_utc(begin) + length)
        answer |= {"start": begin, "end": finish, "recurrence": None}
    verb = {2: "Tentative", 3: "Accepted", 4: "Declined"}.get(partstat_status, "Reply")
    subject = f"{verb}: {record.get('subject') or ''}"
    text = f"{user.display_name or user.email} {verb.lower()}.\n"
    return send(
        txn,
        user,
        "REPLY",
        [cal.empty_record() | answer],
        [organizer],
        subject,
        text,
        now,
        rng,
        local_domains,
        original,
    )
