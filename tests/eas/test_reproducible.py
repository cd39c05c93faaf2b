"""Randomness is passed in like ``now`` (issue #21): with a seeded source, a command's answer is
the same bytes every time, and its keys are the source's next draws, in order."""

from __future__ import annotations

import random
from datetime import timedelta

from natsync.eas.provision import MAX_POLICY_KEY
from natsync.store.api import FolderType, Store, Txn
from natsync.wbxml import E, Element, decode, encode
from tests.conftest import StoreFactory
from tests.eas.helpers import NOW, Phone, collection, commands, deliver, folder_id, make_mail

SEED = 21
NS = "Provision"
POLICY_TYPE = "MS-EAS-Provisioning-WBXML"


def _policy(*kids: Element) -> Element:
    return E(
        NS, "Provision", E(NS, "Policies", E(NS, "Policy", E(NS, "PolicyType", POLICY_TYPE), *kids))
    )


def _policy_key(body: bytes) -> str:
    key = decode(body).find("Policies").find("Policy").child_text("PolicyKey")  # type: ignore[union-attr]
    assert key
    return key


def _conversation(phone: Phone) -> list[bytes]:
    """Provision (both phases) and the first FolderSync, as the bytes the phone receives."""
    first = phone.call("Provision", _policy())
    second = phone.call(
        "Provision", _policy(E(NS, "PolicyKey", _policy_key(first.body)), E(NS, "Status", 1))
    )
    phone.policy_key = int(_policy_key(second.body))
    fh = "FolderHierarchy"
    hierarchy = phone.call("FolderSync", E(fh, "FolderSync", E(fh, "SyncKey", "0")))
    return [first.body, second.body, hierarchy.body]


def test_a_seeded_source_gives_the_same_answers_byte_for_byte(store_factory: StoreFactory) -> None:
    once = _conversation(Phone(store_factory(), rng=random.Random(SEED)))
    again = _conversation(Phone(store_factory(), rng=random.Random(SEED)))
    assert once == again

    draws = random.Random(SEED)
    temporary = draws.randrange(MAX_POLICY_KEY - 1) + 1
    final = draws.randrange(MAX_POLICY_KEY - 1) + 1
    sync_key = f"{{{draws.randbytes(4).hex()}}}1"
    assert _policy_key(once[0]) == str(temporary)
    # The whole acknowledgement answer, byte for byte (MS-ASPROV 2.2.2.42: the final key).
    expected = E(
        NS,
        "Provision",
        E(NS, "Status", 1),
        E(
            NS,
            "Policies",
            E(
                NS,
                "Policy",
                E(NS, "PolicyType", POLICY_TYPE),
                E(NS, "Status", 1),
                E(NS, "PolicyKey", final),
            ),
        ),
    )
    assert once[1] == encode(expected)
    assert decode(once[2]).child_text("SyncKey") == sync_key


def test_the_server_source_differs_between_phones(store_factory: StoreFactory) -> None:
    """Without a seed (the server's SystemRandom) two devices get different keys."""
    store = store_factory()
    keys = {
        _policy_key(Phone(store, device_id=f"p{n}").call("Provision", _policy()).body)
        for n in range(3)
    }
    assert len(keys) == 3


CAL = "Calendar"
AS = "AirSync"


def _calendar_add(store: Store, rng: random.Random) -> tuple[list[bytes], str]:
    """One phone adds an event without a UID; a second device of the same user then syncs the
    calendar and receives it: (the bytes both phones receive, the UID stored)."""
    adder = Phone(store, device_id="adder", rng=rng)
    adder.provision()
    cal = folder_id(store, FolderType.CALENDAR)
    key = collection(adder.sync(cal, "0")).child_text("SyncKey") or ""
    event = E(
        AS, "ApplicationData", E(CAL, "Subject", "lunch"), E(CAL, "EndTime", "20261207T120000Z")
    )
    added = adder.call(
        "Sync",
        E(AS, "Sync", E(AS, "Collections", E(
            AS, "Collection", E(AS, "SyncKey", key), E(AS, "CollectionId", cal),
            E(AS, "Commands", E(AS, "Add", E(AS, "ClientId", "c1"), event)),
        ))),
    )  # fmt: skip
    reader = Phone(store, device_id="reader", rng=rng)
    reader.provision()
    first = reader.call("Sync", E(AS, "Sync", E(AS, "Collections", E(
        AS, "Collection", E(AS, "SyncKey", "0"), E(AS, "CollectionId", cal)))))  # fmt: skip
    rkey = collection(decode(first.body)).child_text("SyncKey") or ""
    got = reader.call("Sync", E(AS, "Sync", E(AS, "Collections", E(
        AS, "Collection", E(AS, "SyncKey", rkey), E(AS, "CollectionId", cal)))))  # fmt: skip
    (add,) = commands(collection(decode(got.body)), "Add")
    data = add.find("ApplicationData", AS)
    assert data is not None
    return [added.body, first.body, got.body], data.child_text("UID", CAL) or ""


def test_a_calendar_item_without_uid_gets_one_from_the_source(store_factory: StoreFactory) -> None:
    """The UID the server gives an event the phone sent without one is the command's
    randomness too (issue #21): the same seed, the same bytes on both phones."""
    once, uid = _calendar_add(store_factory(), random.Random(SEED))
    again, uid_again = _calendar_add(store_factory(), random.Random(SEED))
    assert once == again
    assert uid == uid_again
    assert len(uid) == 32
    assert uid == uid.upper()
    other, other_uid = _calendar_add(store_factory(), random.Random(SEED + 1))
    assert other_uid != uid
    assert other != once


def _draft_stored(store: Store, rng: random.Random) -> bytes:
    """A draft written on the phone (16.x Sync Add to Drafts): the message the store keeps."""
    phone = Phone(store, rng=rng)
    phone.provision()
    drafts = folder_id(store, FolderType.DRAFTS)
    key = collection(phone.sync(drafts, "0")).child_text("SyncKey") or ""
    data = E(
        AS, "ApplicationData", E("Email", "To", "bob@remote.test"), E("Email", "Subject", "draft"),
        E("AirSyncBase", "Body", E("AirSyncBase", "Type", 1), E("AirSyncBase", "Data", "hi")),
        E("AirSyncBase", "Attachments", E(
            "AirSyncBase", "Add", E("AirSyncBase", "ClientId", "a1"),
            Element("AirSyncBase", "Content", [], b"attached"),
            E("AirSyncBase", "DisplayName", "a.txt"), E("AirSyncBase", "Method", 1),
            E("AirSyncBase", "ContentType", "text/plain"),
        )),
    )  # fmt: skip
    phone.sync(drafts, key, commands=[E(AS, "Add", E(AS, "ClientId", "d1"), data)])

    def raw(txn: Txn) -> bytes:
        user = txn.get_user("alice")
        assert user is not None
        folder = txn.folder_by_type(user.id, FolderType.DRAFTS)
        (message,) = txn.get_messages(user.id, list(txn.message_versions(folder.id)))
        return txn.raw_message(message.id)

    return store.run_sync(raw)


def test_a_drafts_message_id_comes_from_the_source(store_factory: StoreFactory) -> None:
    once = _draft_stored(store_factory(), random.Random(SEED))
    assert b"\r\nMessage-ID: <" in once
    assert b'boundary="=_natsync_' in once  # multipart: the boundary is the source's too
    assert once == _draft_stored(store_factory(), random.Random(SEED))
    assert once != _draft_stored(store_factory(), random.Random(SEED + 1))


# -- mail the commands send: SendMail, SmartReply/SmartForward, an iTIP invitation -------------
#
# What is stored (Sent Items) and what is relayed (the outbound queue) carries a Message-ID the
# server adds and, for a message the server builds, a MIME boundary: both are the command's
# ``rng`` draws and its ``now``, never the email package's own (``make_msgid`` and the
# generator's boundary read the ``random`` module): the global ``random`` state is set to a
# different seed before each run, so a draw from it would show.

CM = "ComposeMail"


def _sent_and_relayed(store: Store) -> tuple[list[bytes], list[bytes]]:
    """(alice's Sent Items, the outbound queue), the raw bytes of each, in a stable order."""

    def run(txn: Txn) -> tuple[list[bytes], list[bytes]]:
        user = txn.get_user("alice")
        assert user is not None
        folder = txn.folder_by_type(user.id, FolderType.SENT_ITEMS)
        messages = txn.get_messages(user.id, list(txn.message_versions(folder.id)))
        sent = sorted(txn.raw_message(m.id) for m in messages)
        relayed = sorted(m.raw for m in txn.due_outbound(NOW + timedelta(days=1), 50))
        return sent, relayed

    return store.run_sync(run)


def _mails_sent(store: Store, rng: random.Random, global_seed: int) -> tuple[list[bytes], ...]:
    """SendMail, SmartReply and SmartForward (the original has an attachment: the forward is a
    new multipart/mixed) to a remote recipient, each without a Message-ID of its own."""
    random.seed(global_seed)
    original = deliver(
        store, make_mail("question", "what time?", sender="bob@remote.test", attachment=b"\x00\x01")
    )
    inbox = folder_id(store, FolderType.INBOX)
    phone = Phone(store, rng=rng)
    phone.provision()
    client = b"From: alice@example.test\r\nTo: bob@remote.test\r\nSubject: %s\r\n\r\nnoon\r\n"
    source = E(CM, "Source", E(CM, "FolderId", inbox), E(CM, "ItemId", original))
    for n, (cmd, extra) in enumerate(
        [("SendMail", ()), ("SmartReply", (source,)), ("SmartForward", (source,))]
    ):
        body = E(
            CM, cmd, E(CM, "ClientId", f"c{n}"), E(CM, "SaveInSentItems"), *extra,
            E(CM, "Mime", client % cmd.encode()),
        )  # fmt: skip
        response = phone.call(cmd, body)
        assert response.http_status == 200
        assert response.body == b""  # sent
    return _sent_and_relayed(store)


def test_sendmail_and_smart_replies_store_and_relay_the_same_bytes(
    store_factory: StoreFactory,
) -> None:
    sent, relayed = _mails_sent(store_factory(), random.Random(SEED), global_seed=1)
    assert (sent, relayed) == _mails_sent(store_factory(), random.Random(SEED), global_seed=2)
    assert len(sent) == 3
    assert len(relayed) == 3
    for raw in relayed:
        assert b"\r\nMessage-ID: <20260301120000." in raw  # the command's now and rng
    forward = next(raw for raw in relayed if b"Subject: SmartForward" in raw)
    assert b'multipart/mixed; boundary="=_natsync_' in forward
    other = _mails_sent(store_factory(), random.Random(SEED + 1), global_seed=1)
    assert other != (sent, relayed)


def _invitation(store: Store, rng: random.Random, global_seed: int) -> list[bytes]:
    """A 16.1 phone adds a meeting with a remote attendee: the REQUEST the server mails."""
    random.seed(global_seed)
    phone = Phone(store, rng=rng)
    phone.provision()
    cal = folder_id(store, FolderType.CALENDAR)
    key = collection(phone.sync(cal, "0")).child_text("SyncKey") or ""
    attendee = E(CAL, "Attendee", E(CAL, "Email", "bob@remote.test"), E(CAL, "Name", "Bob"))
    meeting = E(
        AS, "ApplicationData", E(CAL, "Subject", "lunch"), E(CAL, "UID", "meeting-1"),
        E(CAL, "StartTime", "20261207T110000Z"), E(CAL, "EndTime", "20261207T120000Z"),
        E(CAL, "MeetingStatus", 1), E(CAL, "Attendees", attendee),
    )  # fmt: skip
    phone.sync(cal, key, commands=[E(AS, "Add", E(AS, "ClientId", "m1"), meeting)])
    return _sent_and_relayed(store)[1]


def test_an_invitation_relays_the_same_bytes(store_factory: StoreFactory) -> None:
    (once,) = _invitation(store_factory(), random.Random(SEED), global_seed=1)
    assert [once] == _invitation(store_factory(), random.Random(SEED), global_seed=2)
    assert b"METHOD:REQUEST" in once
    assert b"\nMessage-ID: <20260301120000." in once  # the command's now and rng
    assert b'boundary="=_natsync_' in once
    assert [once] != _invitation(store_factory(), random.Random(SEED + 1), global_seed=1)
