"""Find (MS-ASCMD 2.2.1.2, 16.1): mailbox search over the store's full-text index with Range
paging, Total and the Status codes, and GAL Find.

libwbxml knows code pages 0-24 only; Find is page 25, so these answers are checked byte for byte
where it matters (the page switch and the Find tokens of MS-ASWBXML 2.1.2.1.26) and decoded by
natsync's own decoder."""

from __future__ import annotations

from datetime import timedelta

from natsync.store.api import FolderType, Store
from natsync.wbxml import E, Element, decode
from tests.eas.helpers import NOW, Phone, deliver, folder_id, make_mail
from tests.eas.test_commands import _phone

NS = "Find"


def _find(phone: Phone, criterion: Element) -> tuple[Element, bytes]:
    body = E(NS, "Find", E(NS, "SearchId", "s1"), E(NS, "ExecuteSearch", criterion))
    response = phone.call("Find", body)
    assert response.http_status == 200
    # WBXML 1.3, public id 1, UTF-8, no string table, then SWITCH_PAGE 25 and <Find> with content.
    assert response.body.startswith(b"\x03\x01\x6a\x00\x00\x19\x45")
    return decode(response.body), response.body


def _mailbox(
    text: str, rng: str | None = None, collection: str | None = None, deep: bool = False
) -> Element:
    query = E(NS, "Query", E("AirSync", "Class", "Email"))
    if collection is not None:
        query.add("AirSync", "CollectionId", collection)
    query.add(NS, "FreeText", text)
    options = E(NS, "Options")
    if rng is not None:
        options.add(NS, "Range", rng)
    if deep:
        options.append(Element(NS, "DeepTraversal"))
    return E(NS, "MailBoxSearchCriterion", query, options)


def test_mailbox_find_pages_with_range_and_total(store: Store) -> None:
    for n in range(5):
        deliver(
            store,
            make_mail(f"budget {n}", f"the budget figures, part {n}"),
            at=NOW - timedelta(minutes=10 - n),
        )
    deliver(store, make_mail("lunch", "sandwiches"))
    phone = _phone(store)
    tree, _ = _find(phone, _mailbox("budget", "0-1"))
    assert tree.child_text("Status") == "1"
    response = tree.find("Response")
    assert response is not None
    assert response.child_text("Store") == "Mailbox"
    assert response.child_text("Status") == "1"
    assert response.child_text("Range") == "0-1"
    assert response.child_text("Total") == "5"
    results = response.findall("Result")
    assert [r.find("Properties").child_text("Subject") for r in results] == ["budget 4", "budget 3"]  # type: ignore[union-attr]
    inbox = folder_id(store, FolderType.INBOX)
    first = results[0]
    assert first.child_text("Class") == "Email"
    assert first.child_text("CollectionId") == inbox
    assert first.child_text(
        "ServerId",
        "AirSync",
    ).startswith(inbox + ":")  # type: ignore[union-attr]
    props = first.find("Properties")
    assert props is not None
    assert props.child_text("Preview", NS).startswith("the budget figures")  # type: ignore[union-attr]
    assert props.child_text("HasAttachments", NS) == "0"
    assert props.child_text("IsDraft", "Email2") == "0"
    # The next page.
    tree, _ = _find(phone, _mailbox("budget", "2-4"))
    page = tree.find("Response")
    assert page is not None
    assert page.child_text("Range") == "2-4"
    assert [r.find("Properties").child_text("Subject") for r in page.findall("Result")] == [  # type: ignore[union-attr]
        "budget 2",
        "budget 1",
        "budget 0",
    ]
    # Nothing found: no Range, Total 0.
    tree, _ = _find(phone, _mailbox("zebra"))
    none = tree.find("Response")
    assert none is not None
    assert none.find("Range") is None
    assert none.child_text("Total") == "0"


def test_mailbox_find_in_a_folder_and_its_subfolders(store: Store) -> None:
    deliver(store, make_mail("inbox report", "quarterly"))
    deliver(store, make_mail("sent report", "quarterly"), folder=FolderType.SENT_ITEMS)
    phone = _phone(store)
    sent = folder_id(store, FolderType.SENT_ITEMS)
    tree, _ = _find(phone, _mailbox("quarterly", collection=sent))
    response = tree.find("Response")
    assert response is not None
    assert [r.child_text("CollectionId") for r in response.findall("Result")] == [sent]
    tree, _ = _find(phone, _mailbox("quarterly", collection=sent, deep=True))
    assert tree.find("Response").child_text("Total") == "1"  # type: ignore[union-attr]
    tree, _ = _find(phone, _mailbox("quarterly"))
    assert tree.find("Response").child_text("Total") == "2"  # type: ignore[union-attr]


def test_find_status_codes(store: Store) -> None:
    phone = _phone(store)

    def status(criterion: Element) -> str | None:
        tree, _ = _find(phone, criterion)
        return tree.find("Response").child_text("Status")  # type: ignore[union-attr]

    assert status(_mailbox("x", "5-2")) == "2"  # m > n
    assert status(_mailbox("x", "0-1000")) == "2"  # past 999
    assert status(_mailbox("x", "0-200")) == "2"  # wider than a page
    assert status(_mailbox("x", "nonsense")) == "2"
    assert status(_mailbox("   ")) == "2"  # no words
    assert status(_mailbox("x" * 300)) == "2"
    assert status(_mailbox("x", collection="99:nope")) == "3"  # the phone must FolderSync
    assert status(E(NS, "Options")) == "2"  # no search criterion at all
    # Before 16.1 there is no Find: common Status 138 (VersionNotSupported).
    old = _phone(store, "16.0")
    body = E(NS, "Find", E(NS, "SearchId", "s"), E(NS, "ExecuteSearch", _mailbox("x")))
    assert decode(old.call("Find", body).body).child_text("Status") == "138"


def test_gal_find(store: Store) -> None:
    from natsync.auth.passwords import hash_password

    store.run_sync(
        lambda txn: txn.add_user(
            "bobby", "bobby@example.test", "Bobby Tables", hash_password("x"), NOW
        )
    )
    phone = _phone(store)
    criterion = E(
        NS, "GalSearchCriterion", E(NS, "Query", "bobby"), E(NS, "Options", E(NS, "Range", "0-9"))
    )
    tree, raw = _find(phone, criterion)
    response = tree.find("Response")
    assert response is not None
    assert response.child_text("Store") == "GAL"
    (result,) = response.findall("Result")
    props = result.find("Properties")
    assert props is not None
    assert props.child_text("DisplayName", "GAL") == "Bobby Tables"
    assert props.child_text("EmailAddress", "GAL") == "bobby@example.test"
    assert response.child_text("Range") == "0-0"
    assert response.child_text("Total") == "1"
    assert b"bobby@example.test" in raw
