"""SendMail with bare logins (``To: demo``): resolved as ResolveRecipients resolves them; a name
that resolves to nobody (or to several) is MS-ASCMD 2.2.2 common Status 116
(MessageRecipientUnresolved), not 119 (no recipient), and sends nothing. Answers decoded by
libwbxml."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime

from natsync.auth.passwords import hash_password
from natsync.store.api import FolderType, Store, Txn
from natsync.wbxml import E, decode
from tests.eas.helpers import Phone
from tests.libwbxml import assert_libwbxml_decodes

CM = "ComposeMail"


def _add_demo(store: Store) -> None:
    store.run_sync(
        lambda txn: txn.add_user(
            "demo", "demo@example.test", "Demo User", hash_password("x"), datetime.now(UTC)
        )
    )


def _raw_inbox(store: Store, user: str) -> list[bytes]:
    def run(txn: Txn) -> list[bytes]:
        u = txn.get_user(user)
        assert u is not None
        folder = txn.folder_by_type(u.id, FolderType.INBOX)
        return [
            txn.raw_message(m.id)
            for m in txn.get_messages(u.id, list(txn.message_versions(folder.id)))
        ]

    return store.run_sync(run)


def _mime(to: str, cc: str = "") -> bytes:
    head = f"From: alice@example.test\r\nTo: {to}\r\n"
    if cc:
        head += f"Cc: {cc}\r\n"
    return (head + "Subject: hi\r\n\r\nhello\r\n").encode()


def _send(phone: Phone, mime: bytes, client_id: str) -> int | None:
    body = E(
        CM, "SendMail", E(CM, "ClientId", client_id), E(CM, "SaveInSentItems"), E(CM, "Mime", mime)
    )
    response = phone.call("SendMail", body)
    assert response.http_status == 200
    if not response.body:
        return None
    assert_libwbxml_decodes(response.body)
    return int(decode(response.body).child_text("Status") or 0)


def test_bare_login_and_display_name_resolve_like_resolverecipients(store: Store) -> None:
    _add_demo(store)
    phone = Phone(store)
    phone.provision()
    assert _send(phone, _mime("demo", cc='"Me" <alice>'), "c1") is None
    (raw,) = _raw_inbox(store, "demo")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg["To"] == "Demo User <demo@example.test>"
    assert msg["Cc"] == "Me <alice@example.test>"
    assert len(_raw_inbox(store, "alice")) == 1  # the Cc "alice" resolved too


def test_unresolvable_name_is_status_116_and_sends_nothing(store: Store) -> None:
    _add_demo(store)
    phone = Phone(store)
    phone.provision()
    assert _send(phone, _mime("demo@example.test, nobody"), "c2") == 116
    assert _raw_inbox(store, "demo") == []
    # Ambiguous ("e" is in both display names) is unresolvable too; no recipient at all is 119.
    assert _send(phone, _mime("e"), "c3") == 116
    assert _send(phone, _mime(""), "c4") == 119
    # The refused ClientIds were not remembered: the corrected message goes out.
    assert _send(phone, _mime("demo"), "c2") is None
    assert len(_raw_inbox(store, "demo")) == 1
