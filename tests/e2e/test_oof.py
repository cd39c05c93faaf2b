"""Out of Office, end to end (issue 20): a phone (the natsync client, over TLS) turns OOF on with
Settings; mail then arrives by SMTP (smtplib to the real SMTP in) and the replies leave through the
relay to a real aiosmtpd smarthost. One reply per sender, none to a mailing list or to an
automatic reply, none to the null sender; the reply is RFC 3834 (Auto-Submitted, In-Reply-To,
null envelope sender)."""

from __future__ import annotations

import asyncio
import smtplib
import time
from email import message_from_bytes, policy
from pathlib import Path

from natsync.wbxml import E, Element
from tests.e2e.deployment import Deployment, deployment
from tests.e2e.test_mail_roundtrip import RELAY_WAIT, Wire, phone

S = "Settings"


def _mail(sender: str, subject: str, extra: str = "") -> bytes:
    return (
        f"From: {sender}\r\nTo: ann@natsync.test\r\nSubject: {subject}\r\n"
        f"Message-ID: <{subject}@remote.test>\r\n{extra}\r\nHello\r\n"
    ).encode()


def _smtp(dep: Deployment, envelope_sender: str, raw: bytes) -> None:
    with smtplib.SMTP(dep.smtp_host, dep.smtp_port, timeout=30) as smtp:
        assert smtp.sendmail(envelope_sender, [dep.email], raw) == {}


async def _until(dep: Deployment, count: int) -> None:
    deadline = time.monotonic() + RELAY_WAIT
    # The recorder's one event says "something arrived"; here the count matters.
    while len(dep.smarthost.messages) < count and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.05)


async def test_oof_replies_once_per_sender_and_never_to_lists_or_auto_replies(
    tmp_path: Path,
) -> None:
    wire = Wire()
    async with deployment(tmp_path) as dep, phone(dep, "OOFPHONE", wire) as ann:
        await ann.provision()
        oof_set = E(
            S, "Set", E(S, "OofState", 1),
            E(S, "OofMessage", Element(S, "AppliesToInternal"), E(S, "Enabled", 1),
              E(S, "ReplyMessage", "in the office next week"), E(S, "BodyType", "Text")),
            E(S, "OofMessage", Element(S, "AppliesToExternalUnknown"), E(S, "Enabled", 1),
              E(S, "ReplyMessage", "Away until Monday."), E(S, "BodyType", "Text")),
        )  # fmt: skip
        answer = await ann.settings(oof_set=oof_set)
        assert answer.find("Oof").child_text("Status") == "1"  # type: ignore[union-attr]

        send = asyncio.to_thread
        await send(_smtp, dep, "bob@remote.test", _mail("bob@remote.test", "first"))
        await _until(dep, 1)
        await send(_smtp, dep, "bob@remote.test", _mail("bob@remote.test", "second"))
        list_mail = _mail(
            "team@lists.remote.test", "digest", "List-Id: <team.lists.remote.test>\r\n"
        )
        await send(_smtp, dep, "team-bounces@lists.remote.test", list_mail)
        bulk = _mail("news@remote.test", "offer", "Precedence: bulk\r\n")
        await send(_smtp, dep, "news@remote.test", bulk)
        auto = _mail("carol@remote.test", "away", "Auto-Submitted: auto-replied\r\n")
        await send(_smtp, dep, "carol@remote.test", auto)
        await send(_smtp, dep, "", _mail("mailer-daemon@remote.test", "bounce"))
        # A last sender whose reply must come: everything before it has been decided by then.
        await send(_smtp, dep, "erin@remote.test", _mail("erin@remote.test", "last"))
        await _until(dep, 2)
        await asyncio.sleep(0.5)

        replies = dep.smarthost.messages
        assert [(sender, rcpts) for sender, rcpts, _ in replies] == [
            ("<>", ["bob@remote.test"]),  # the null envelope sender, as aiosmtpd records it
            ("<>", ["erin@remote.test"]),
        ]
        first = message_from_bytes(replies[0][2], policy=policy.default)
        assert first["Auto-Submitted"] == "auto-replied"
        assert first["In-Reply-To"] == "<first@remote.test>"
        assert first["Subject"] == "Automatic reply: first"
        assert first["From"].addresses[0].addr_spec == dep.email
        assert "Away until Monday." in first.get_body().get_content()  # type: ignore[union-attr]

        # Turning OOF off stops the replies.
        await ann.settings(oof_set=E(S, "Set", E(S, "OofState", 0)))
        await send(_smtp, dep, "frank@remote.test", _mail("frank@remote.test", "late"))
        await asyncio.sleep(1.0)
        assert len(dep.smarthost.messages) == 2
    wire.check_with_libwbxml()
