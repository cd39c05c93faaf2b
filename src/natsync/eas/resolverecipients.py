"""ResolveRecipients (MS-ASCMD 2.2.1.15) against our local users: by address, login name or
a part of the display name, with free/busy (Availability, 14.0+) and pictures (14.1+) when the
client asks. Certificates are not offered (we hold none).

Availability (MS-ASCMD 2.2.3.16, 2.2.3.107): MergedFreeBusy has one digit per 30 minutes from
StartTime (EndTime defaults to seven days later), computed from the recipient's default Calendar
folder by :func:`natsync.classes.calendar.busy_intervals`: 0 free, 1 tentative (and "working
elsewhere"), 2 busy, 3 out of office; the busiest event in a slot wins. A span shorter than one
slot, longer than :data:`MAX_AVAILABILITY_DAYS` or with EndTime before StartTime is answered
with Status 5. Pictures are the recipients' own contact cards' (see ``search.own_card``).
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta

from natsync.classes.body import parse_eas_date
from natsync.classes.calendar import busy_intervals
from natsync.eas.context import Context, Response
from natsync.eas.errors import EasError
from natsync.eas.search import PictureBudget, own_card
from natsync.eas.status import ResolveStatus as S
from natsync.eas.versions import V14_0, V14_1
from natsync.mime.errors import EmailChangeError
from natsync.store.api import FolderType, Txn, User
from natsync.wbxml import E, Element

NS = "ResolveRecipients"
#: Names one request may resolve (MS-ASCMD 2.2.3.172: at most 100 To elements).
MAX_TO = 100
#: Candidates returned per ambiguous name.
MAX_AMBIGUOUS = 20
#: Longest free/busy span served (Exchange 2010 and later: 42 days; MS-ASCMD 2.2.3.61.1).
MAX_AVAILABILITY_DAYS = 42
#: Span when the client names a StartTime only (MS-ASCMD 2.2.3.61.1: seven days).
DEFAULT_AVAILABILITY = timedelta(days=7)
#: One digit of MergedFreeBusy (MS-ASCMD 2.2.3.107).
SLOT = timedelta(minutes=30)


class AvailabilityStatus(enum.IntEnum):
    """MS-ASCMD 2.2.3.177.12 Status of an Availability element."""

    SUCCESS = 1
    FREE_BUSY_UNAVAILABLE = 162


class FreeBusy(enum.IntEnum):
    """The digits of MergedFreeBusy (MS-ASCMD 2.2.3.107)."""

    FREE = 0
    TENTATIVE = 1
    BUSY = 2
    OUT_OF_OFFICE = 3
    NO_DATA = 4


#: MS-ASCAL BusyStatus -> MergedFreeBusy digit (4, "working elsewhere", counts as tentative).
_BUSY_DIGIT = {0: FreeBusy.FREE, 1: FreeBusy.TENTATIVE, 2: FreeBusy.BUSY, 3: FreeBusy.OUT_OF_OFFICE}


def merged_free_busy(
    intervals: list[tuple[datetime, datetime, int]], start: datetime, end: datetime
) -> str:
    """One digit per 30 minutes of [start, end): the busiest interval touching each slot."""
    slots = max(1, -(-int((end - start) / timedelta(seconds=1)) // int(SLOT.total_seconds())))
    digits = [int(FreeBusy.FREE)] * slots
    for i_start, i_end, status in intervals:
        digit = int(_BUSY_DIGIT.get(status, FreeBusy.TENTATIVE))
        if i_end <= start or i_start >= end or digit == FreeBusy.FREE:
            continue
        first = max(0, int((i_start - start) // SLOT))
        last = min(slots - 1, int((i_end - start - timedelta(microseconds=1)) // SLOT))
        for n in range(first, last + 1):
            digits[n] = max(digits[n], digit)
    return "".join(str(d) for d in digits)


def free_busy(txn: Txn, user: User, start: datetime, end: datetime) -> str:
    """MergedFreeBusy of *user*'s default Calendar folder over [start, end)."""
    folder = txn.folder_by_type(user.id, FolderType.CALENDAR)
    records = [item.data for item in txn.list_items(folder.id)]
    return merged_free_busy(busy_intervals(records, start, end), start, end)


def _availability_span(options: Element | None) -> tuple[datetime, datetime] | None:
    """The (start, end) an Options/Availability asks for; None when it asks none. Raises
    EasError (Status 5) for a span we do not serve."""
    element = options.find("Availability", NS) if options is not None else None
    if element is None:
        return None
    try:
        start_text = element.child_text("StartTime", NS)
        if not start_text:
            raise EasError("Availability needs a StartTime", status=S.PROTOCOL_ERROR)
        start = parse_eas_date(start_text)
        end_text = element.child_text("EndTime", NS)
        end = parse_eas_date(end_text) if end_text else start + DEFAULT_AVAILABILITY
    except EmailChangeError as exc:
        raise EasError(f"Availability: {exc.message}", status=S.PROTOCOL_ERROR) from exc
    if end < start + SLOT or end - start > timedelta(days=MAX_AVAILABILITY_DAYS):
        raise EasError(
            f"Availability spans from 30 minutes to {MAX_AVAILABILITY_DAYS} days",
            status=S.PROTOCOL_ERROR,
        )
    return start, end


def match_users(users: list[User], name: str) -> list[User]:
    """The users *name* means: by address or login exactly, else by a part of the display
    name (SendMail resolves bare recipients with this too)."""
    wanted = name.strip().lower()
    exact = [u for u in users if wanted in (u.email.lower(), u.name.lower())]
    if exact:
        return exact
    return [u for u in users if wanted and wanted in u.display_name.lower()]


def _max_ambiguous(options: Element | None) -> int:
    text = (options.child_text("MaxAmbiguousRecipients", NS) or "") if options else ""
    text = text.strip()
    if text.isascii() and text.isdigit() and len(text) < 6:
        return min(int(text), MAX_AMBIGUOUS)
    return MAX_AMBIGUOUS


def handle(ctx: Context) -> Response:
    body = ctx.body
    if body is None or body.tag != "ResolveRecipients" or body.namespace != NS:
        raise EasError("ResolveRecipients needs a body", status=S.PROTOCOL_ERROR)
    names = [el.text() for el in body.findall("To", NS)]
    if not names or len(names) > MAX_TO:
        raise EasError("ResolveRecipients needs 1..100 To elements", status=S.PROTOCOL_ERROR)
    options = body.find("Options", NS)
    span = _availability_span(options) if ctx.version >= V14_0 else None
    budget = PictureBudget.from_options(options, NS) if ctx.version >= V14_1 else None
    limit = _max_ambiguous(options)
    users = ctx.txn.list_users()
    root = E(NS, "ResolveRecipients", E(NS, "Status", S.SUCCESS))
    for name in names:
        candidates = match_users(users, name)
        found = candidates[:limit]
        status = (
            S.SUCCESS if len(candidates) == 1 else S.AMBIGUOUS if candidates else S.NOT_RESOLVED
        )
        response = E(NS, "Response", E(NS, "To", name), E(NS, "Status", status))
        response.add(NS, "RecipientCount", len(found))
        for u in found:
            recipient = E(
                NS,
                "Recipient",
                E(NS, "Type", 1),  # 1: from the GAL (our user list)
                E(NS, "DisplayName", u.display_name or u.name),
                E(NS, "EmailAddress", u.email),
            )
            if span is not None:
                recipient.append(
                    E(
                        NS,
                        "Availability",
                        E(NS, "Status", AvailabilityStatus.SUCCESS),
                        E(NS, "MergedFreeBusy", free_busy(ctx.txn, u, *span)),
                    )
                )
            if budget is not None:
                recipient.append(budget.element(NS, NS, own_card(ctx.txn, u)))
            response.append(recipient)
        root.append(response)
    return Response.of(root, status=S.SUCCESS)
