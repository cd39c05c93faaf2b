"""natsync.mail.oof: the RFC 3834 rules as pure decisions (no store), and the delivery hook on
the real store (one reply per sender per period, local replies delivered, remote ones queued
with a null envelope sender)."""

from __future__ import annotations

import email
import email.policy
import json
from datetime import UTC, datetime, timedelta

import pytest

from natsync.mail import oof
from natsync.mail.relay import deliver_to_inbox
from natsync.mime import parse_message
from natsync.store.api import FolderType, Store, Txn

NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
ME = "alice@example.test"


def _settings(state: str = "1", **extra: object) -> oof.OofSettings:
    doc = {
        "state": state,
        "messages": {
            oof.INTERNAL: {"enabled": "1", "reply": "inside text"},
            oof.EXTERNAL_KNOWN: {"enabled": "1", "reply": "known text"},
            oof.EXTERNAL_UNKNOWN: {"enabled": "1", "reply": "unknown text"},
        },
        "since": "t1",
        **extra,
    }
    return oof.OofSettings.from_json(json.dumps(doc))


def _mail(sender: str = "bob@remote.test", extra: str = "") -> bytes:
    return (
        f"From: {sender}\r\nTo: {ME}\r\nSubject: Lunch?\r\nMessage-ID: <m1@remote.test>\r\n"
        f"References: <m0@remote.test>\r\n{extra}\r\nHi\r\n"
    ).encode()


def _decide(raw: bytes, sender: str = "bob@remote.test", **kw: object) -> tuple[str, str] | None:
    settings = kw.pop("settings", _settings())
    assert isinstance(settings, oof.OofSettings)
    return oof.decide(
        settings,
        oof.Incoming.of(raw, sender),
        kw.pop("now", NOW),  # type: ignore[arg-type]
        (ME,),
        kw.pop("contacts", ()),  # type: ignore[arg-type]
        kw.pop("answered", ()),  # type: ignore[arg-type]
    )


def test_audiences_pick_the_text() -> None:
    assert _decide(_mail()) == ("bob@remote.test", "unknown text")
    assert _decide(_mail(), contacts=("BOB@remote.test",)) == ("bob@remote.test", "known text")
    assert _decide(_mail("carol@example.test"), "carol@example.test") == (
        "carol@example.test",
        "inside text",
    )
    off = oof.OofSettings.from_json(
        json.dumps(
            {"state": "1", "messages": {oof.EXTERNAL_UNKNOWN: {"enabled": "0", "reply": "x"}}}
        )
    )
    assert _decide(_mail(), settings=off) is None  # that audience is not enabled


@pytest.mark.parametrize(
    ("header", "sender"),
    [
        ("Auto-Submitted: auto-replied\r\n", "bob@remote.test"),
        ("Auto-Submitted: auto-generated\r\n", "bob@remote.test"),
        ("Precedence: bulk\r\n", "bob@remote.test"),
        ("Precedence: junk\r\n", "bob@remote.test"),
        ("Precedence: list\r\n", "bob@remote.test"),
        ("List-Id: <team.lists.remote.test>\r\n", "bob@remote.test"),
        ("List-Unsubscribe: <mailto:leave@remote.test>\r\n", "bob@remote.test"),
        ("X-Auto-Response-Suppress: OOF\r\n", "bob@remote.test"),
        ("", ""),  # null sender
        ("", ME),  # the user's own address
        ("", "MAILER-DAEMON@remote.test"),
        ("", "team-request@remote.test"),
        ("", "owner-team@remote.test"),
    ],
)
def test_never_answered(header: str, sender: str) -> None:
    assert _decide(_mail(extra=header), sender) is None


def test_auto_submitted_no_is_answered_and_a_sender_only_once() -> None:
    assert _decide(_mail(extra="Auto-Submitted: no\r\n")) is not None
    assert _decide(_mail(), answered=("Bob@Remote.test",)) is None


def test_schedule_window() -> None:
    window = _settings("2", start="2026-03-01T00:00:00.000Z", end="2026-03-03T00:00:00.000Z")
    assert oof.active(window, NOW)
    assert not oof.active(window, NOW + timedelta(days=1))
    assert not oof.active(window, NOW - timedelta(days=2))
    assert not oof.active(_settings("0"), NOW)
    assert not oof.active(oof.OofSettings.from_json("not json"), NOW)


def test_reply_headers() -> None:
    incoming = oof.Incoming.of(_mail(), "bob@remote.test")
    raw = oof.build_reply(ME, "Alice", "bob@remote.test", "away", incoming, NOW)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["In-Reply-To"] == "<m1@remote.test>"
    assert msg["References"] == "<m0@remote.test> <m1@remote.test>"
    assert msg["Subject"] == "Automatic reply: Lunch?"
    assert msg["To"] == "bob@remote.test"
    assert msg.get_body().get_content().strip() == "away"  # type: ignore[union-attr]


def _set(store: Store, doc: dict[str, object]) -> None:
    def run(txn: Txn) -> None:
        user = txn.get_user("alice")
        assert user is not None
        txn.set_user_setting(user.id, oof.OOF_SETTING, json.dumps(doc))

    store.run_sync(run)


def _deliver(store: Store, raw: bytes, sender: str | None) -> bool:
    def run(txn: Txn) -> bool:
        user = txn.get_user("alice")
        assert user is not None
        return deliver_to_inbox(txn, user, parse_message(raw, NOW), envelope_sender=sender)

    return store.run_sync(run)


def _queued(store: Store) -> list[tuple[str, tuple[str, ...]]]:
    return store.run_sync(
        lambda txn: [(m.sender, tuple(m.recipients)) for m in txn.due_outbound(NOW, 100)]
    )


def test_hook_queues_one_reply_per_sender_per_period(store: Store) -> None:
    doc: dict[str, object] = {
        "state": "1",
        "messages": {oof.EXTERNAL_UNKNOWN: {"enabled": "1", "reply": "away"}},
        "since": "first",
    }
    _set(store, doc)
    assert _deliver(store, _mail(), "bob@remote.test")
    assert not _deliver(store, _mail(), "bob@remote.test")  # already answered
    assert not _deliver(store, _mail(), None)  # an import: never answered
    assert _queued(store) == [("", ("bob@remote.test",))]  # null envelope sender
    _set(store, {**doc, "since": "second"})  # the phone set OOF again: a new period
    assert _deliver(store, _mail(), "bob@remote.test")
    assert len(_queued(store)) == 2


def test_hook_delivers_an_internal_reply_locally(store: Store) -> None:
    from natsync.auth.passwords import hash_password

    store.run_sync(
        lambda txn: txn.add_user("zoe", "zoe@example.test", "Zoe", hash_password("z"), NOW)
    )
    _set(store, {"state": "1", "messages": {oof.INTERNAL: {"enabled": "1", "reply": "inside"}}})
    assert not _deliver(store, _mail("zoe@example.test"), "zoe@example.test")

    def zoe_inbox(txn: Txn) -> list[bytes]:
        zoe = txn.get_user("zoe")
        assert zoe is not None
        inbox = txn.folder_by_type(zoe.id, FolderType.INBOX)
        return [
            txn.raw_message(m.id)
            for m in txn.get_messages(zoe.id, list(txn.message_versions(inbox.id)))
        ]

    (reply,) = store.run_sync(zoe_inbox)
    assert b"Auto-Submitted: auto-replied" in reply
    assert b"inside" in reply
    assert _queued(store) == []
