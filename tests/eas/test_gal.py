"""The global address list: Search GAL (own-card properties, Range, pictures with MaxSize and
MaxPictures) and ResolveRecipients (pictures, Availability as MergedFreeBusy), on the real
stores; every response decoded by libwbxml."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta

import pytest

from natsync.eas.resolverecipients import merged_free_busy
from natsync.store.api import FolderType, Store, Txn
from natsync.wbxml import E, Element, decode
from tests.conftest import CREATED_AT
from tests.eas.helpers import Phone
from tests.libwbxml import assert_libwbxml_decodes

PHOTO = b"\x89PNG\r\n\x1a\n" + bytes(range(120))
SE = "Search"
RR = "ResolveRecipients"
DAY = datetime(2026, 3, 2, tzinfo=UTC)


def _add_users(store: Store) -> None:
    def run(txn: Txn) -> None:
        for name, display in (("bob", "Bob Builder"), ("bea", "Beatrice Bold"), ("carl", "Carl")):
            txn.add_user(name, f"{name}@example.test", display, "x", CREATED_AT)
        alice = txn.get_user("alice")
        bob = txn.get_user("bob")
        assert alice is not None
        assert bob is not None
        # Alice's own card (her address in Email2) carries her picture and phone numbers.
        txn.add_item(
            txn.folder_by_type(alice.id, FolderType.CONTACTS).id,
            {
                "first_name": "Alice",
                "last_name": "Example",
                "email2_address": '"Alice" <ALICE@example.test>',
                "mobile_phone_number": "+1 555 0100",
                "job_title": "Engineer",
                "picture": base64.b64encode(PHOTO).decode(),
            },
        )
        # A card of someone else in Alice's contacts is not Alice's own card.
        txn.add_item(
            txn.folder_by_type(alice.id, FolderType.CONTACTS).id,
            {"first_name": "Bob", "email1_address": "bob@example.test", "picture": "AAAA"},
        )
        calendar = txn.folder_by_type(bob.id, FolderType.CALENDAR).id
        events = [
            ("busy", "2026-03-02T09:00:00Z", "2026-03-02T10:00:00Z", 2),
            ("tentative", "2026-03-02T10:15:00Z", "2026-03-02T10:45:00Z", 1),
            ("away", "2026-03-02T11:00:00Z", "2026-03-02T11:30:00Z", 3),
            ("free", "2026-03-02T12:00:00Z", "2026-03-02T13:00:00Z", 0),
        ]
        for subject, start, end, busy in events:
            txn.add_item(
                calendar,
                {
                    "uid": subject,
                    "subject": subject,
                    "start": start,
                    "end": end,
                    "all_day": False,
                    "busy_status": busy,
                },
                uid=subject,
            )

    store.run_sync(run)


def _phone(store: Store, version: str = "16.1") -> Phone:
    _add_users(store)
    phone = Phone(store, version=version)
    phone.provision()
    phone.folder_sync()
    return phone


def _tree(phone: Phone, cmd: str, body: Element) -> Element:
    response = phone.call(cmd, body)
    assert response.http_status == 200
    assert_libwbxml_decodes(response.body)
    return decode(response.body)


def _gal(query: str, *options: Element) -> Element:
    opts = E(SE, "Options", *options) if options else None
    return E(SE, SE, E(SE, "Store", E(SE, "Name", "GAL"), E(SE, "Query", query), opts))


def _results(tree: Element) -> list[Element]:
    store_el = tree.find("Response", SE).find("Store", SE)  # type: ignore[union-attr]
    assert store_el is not None
    assert store_el.child_text("Status", SE) == "1"
    return [r.find("Properties", SE) for r in store_el.findall("Result", SE)]  # type: ignore[misc]


def test_search_gal_finds_users_by_name_and_address(store: Store) -> None:
    phone = _phone(store)
    found = _results(_tree(phone, SE, _gal("b")))
    assert [p.child_text("EmailAddress", "GAL") for p in found] == [
        "bea@example.test",
        "bob@example.test",
    ]
    (alice,) = _results(_tree(phone, SE, _gal("alice@")))
    assert alice.child_text("DisplayName", "GAL") == "Alice Example"
    assert alice.child_text("Alias", "GAL") == "alice"
    # from her own card
    assert alice.child_text("MobilePhone", "GAL") == "+1 555 0100"
    assert alice.child_text("Title", "GAL") == "Engineer"
    assert alice.child_text("FirstName", "GAL") == "Alice"
    assert alice.find("Picture", "GAL") is None  # not asked for


def test_search_gal_range_and_total(store: Store) -> None:
    phone = _phone(store)
    tree = _tree(phone, SE, _gal("example.test", E(SE, "Range", "1-2")))
    store_el = tree.find("Response", SE).find("Store", SE)  # type: ignore[union-attr]
    assert store_el is not None
    assert store_el.child_text("Total", SE) == "4"
    assert store_el.child_text("Range", SE) == "1-2"
    assert [p.child_text("Alias", "GAL") for p in _results(tree)] == ["bea", "bob"]


def test_search_gal_pictures(store: Store) -> None:
    phone = _phone(store)
    picture = E(SE, "Picture", E(SE, "MaxSize", 10_000), E(SE, "MaxPictures", 5))
    alice, bea, bob, carl = _results(_tree(phone, SE, _gal("example", picture)))
    pic = alice.find("Picture", "GAL")
    assert pic is not None
    assert pic.child_text("Status", "GAL") == "1"
    data = pic.find("Data", "GAL")
    assert data is not None
    assert data.value == PHOTO
    for other in (bea, bob, carl):  # no own card: no picture (Bob's card is in Alice's folder)
        assert other.find("Picture", "GAL").child_text("Status", "GAL") == "173"  # type: ignore[union-attr]
    small = E(SE, "Picture", E(SE, "MaxSize", len(PHOTO) - 1))
    (alice,) = _results(_tree(phone, SE, _gal("alice", small)))
    assert alice.find("Picture", "GAL").child_text("Status", "GAL") == "174"  # type: ignore[union-attr]
    none = E(SE, "Picture", E(SE, "MaxPictures", 0))
    (alice,) = _results(_tree(phone, SE, _gal("alice", none)))
    assert alice.find("Picture", "GAL").child_text("Status", "GAL") == "175"  # type: ignore[union-attr]


def test_search_gal_pictures_need_14_1(store: Store) -> None:
    phone = _phone(store, version="14.0")
    picture = E(SE, "Picture", E(SE, "MaxSize", 10_000))
    (alice,) = _results(_tree(phone, SE, _gal("alice", picture)))
    assert alice.find("Picture", "GAL") is None


def _resolve(*names: str, options: Element | None = None) -> Element:
    return E(RR, RR, *(E(RR, "To", n) for n in names), options)


def test_resolve_with_picture_and_availability(store: Store) -> None:
    phone = _phone(store)
    options = E(
        RR,
        "Options",
        E(
            RR,
            "Availability",
            E(RR, "StartTime", "2026-03-02T08:00:00.000Z"),
            E(RR, "EndTime", "2026-03-02T14:00:00.000Z"),
        ),
        E(RR, "Picture", E(RR, "MaxSize", 10_000)),
    )
    tree = _tree(phone, RR, _resolve("bob@example.test", "alice", "B", "nobody", options=options))
    assert tree.child_text("Status", RR) == "1"
    bob, alice, ambiguous, nobody = tree.findall("Response", RR)
    recipient = bob.find("Recipient", RR)
    assert recipient is not None
    availability = recipient.find("Availability", RR)
    assert availability is not None
    assert availability.child_text("Status", RR) == "1"
    # 08:00-14:00 in half hours: free 08-09, busy 09-10, tentative 10:15-10:45 (touching two
    # slots), out of office 11:00-11:30, then free (a "free" event 12-13 takes no time)
    assert availability.child_text("MergedFreeBusy", RR) == "002211300000"
    assert recipient.find("Picture", RR).child_text("Status", RR) == "173"  # type: ignore[union-attr]
    alice_pic = alice.find("Recipient", RR).find("Picture", RR)  # type: ignore[union-attr]
    assert alice_pic is not None
    assert alice_pic.child_text("Status", RR) == "1"
    assert alice_pic.find("Data", RR).value == PHOTO  # type: ignore[union-attr]
    assert ambiguous.child_text("Status", RR) == "2"
    assert ambiguous.child_text("RecipientCount", RR) == "2"
    assert nobody.child_text("Status", RR) == "4"


def test_resolve_without_options_sends_neither(store: Store) -> None:
    phone = _phone(store)
    tree = _tree(phone, RR, _resolve("bob"))
    recipient = tree.find("Response", RR).find("Recipient", RR)  # type: ignore[union-attr]
    assert recipient is not None
    assert recipient.find("Availability", RR) is None
    assert recipient.find("Picture", RR) is None


def test_availability_needs_14_0(store: Store) -> None:
    phone = _phone(store, version="12.1")
    options = E(
        RR, "Options", E(RR, "Availability", E(RR, "StartTime", "2026-03-02T08:00:00.000Z"))
    )
    tree = _tree(phone, RR, _resolve("bob", options=options))
    recipient = tree.find("Response", RR).find("Recipient", RR)  # type: ignore[union-attr]
    assert recipient is not None
    assert recipient.find("Availability", RR) is None


@pytest.mark.parametrize(
    ("start", "end"),
    [
        ("2026-03-02T08:00:00.000Z", "2026-03-02T08:10:00.000Z"),  # shorter than a slot
        ("2026-03-02T08:00:00.000Z", "2026-05-02T08:00:00.000Z"),  # longer than 42 days
        ("2026-03-02T08:00:00.000Z", "yesterday"),
    ],
)
def test_bad_availability_span_is_status_5(store: Store, start: str, end: str) -> None:
    phone = _phone(store)
    options = E(
        RR, "Options", E(RR, "Availability", E(RR, "StartTime", start), E(RR, "EndTime", end))
    )
    tree = _tree(phone, RR, _resolve("bob", options=options))
    assert tree.child_text("Status", RR) == "5"
    assert tree.find("Response", RR) is None


def test_merged_free_busy_defaults_and_edges() -> None:
    start = DAY
    end = DAY + timedelta(hours=2)
    assert merged_free_busy([], start, end) == "0000"
    # an event before, one straddling the start, one ending exactly on a slot boundary
    intervals = [
        (DAY - timedelta(hours=2), DAY - timedelta(hours=1), 2),
        (DAY - timedelta(minutes=10), DAY + timedelta(minutes=10), 2),
        (DAY + timedelta(minutes=60), DAY + timedelta(minutes=90), 4),
    ]
    assert merged_free_busy(intervals, start, end) == "2010"
    # a partial last slot counts as a slot
    assert merged_free_busy([], start, start + timedelta(minutes=45)) == "00"
