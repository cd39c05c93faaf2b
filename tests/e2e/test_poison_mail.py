"""Issue 19, "one bad item never breaks a folder", end to end over real TLS on loopback.

Mail whose text a WBXML string cannot carry (a NUL raw or as ``=00`` in quoted-printable, other
control characters XML 1.0 forbids, invalid UTF-8 in a header or body) arrives by the real SMTP
in (aiosmtpd, smtplib as the sending MTA) between two ordinary mails; the phone (natsync.client)
syncs the Inbox with plain, HTML and MIME bodies, fetches each item by ItemOperations and finds
it by Search: every answer is a valid EAS response (our codec and libwbxml both read it), every
mail reaches the phone, and the MIME a phone asks for is the message byte for byte.
"""

from __future__ import annotations

import asyncio
import base64
import smtplib
from pathlib import Path

from natsync.client import BodyType, EASClient
from natsync.store.api import FolderType
from natsync.wbxml.chars import XML_ILLEGAL
from tests.e2e.deployment import Deployment, deployment
from tests.libwbxml import assert_valid_response

REMOTE = "mallory@remote.test"


def mail(subject: bytes, headers: bytes, body: bytes) -> bytes:
    """A message as an MTA hands it over (SMTP ends the data with CRLF, smtplib adds one)."""
    if not body.endswith(b"\r\n"):
        body += b"\r\n"
    word = subject.split()[0]
    head = b"From: Mallory <%s>\r\nTo: ann@natsync.test\r\nSubject: %s\r\n" % (
        REMOTE.encode(),
        subject,
    )
    return head + b"Message-ID: <%s@remote.test>\r\n%s\r\n%s" % (word, headers, body)


#: (subject word to search for, raw message): each would have broken the Inbox before issue 19.
POISON = [
    (
        "nulraw",
        mail(
            b"nulraw \x00 in subject",
            b"Content-Type: text/plain; charset=utf-8\r\n",
            b"body with a raw NUL \x00 here\r\n",
        ),
    ),
    (
        "nulqp",
        mail(
            b"nulqp quoted-printable",
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Transfer-Encoding: quoted-printable\r\n",
            b"NUL as =00 and a bell =07 and form feed =0C end\r\n",
        ),
    ),
    (
        "badutf",
        mail(
            b"badutf \xff\xfe broken",
            b"Content-Type: text/html; charset=utf-8\r\n",
            b"<p>invalid \xc3\x28 utf-8 \xed\xa0\x80 surrogate \x01\x02\x1b</p>\r\n",
        ),
    ),
    (
        "nonchar",
        mail(
            b"nonchar =?utf-8?b?" + base64.b64encode("x\x00\ufffe\uffff".encode()) + b"?=",
            b"Content-Type: text/plain; charset=utf-16-le\r\n",
            "utf16 body \x00\x0b\ufffe end\r\n".encode("utf-16-le"),
        ),
    ),
]
#: The plain body the phone gets: what XML 1.0 forbids is dropped, bad UTF-8 is U+FFFD (the
#: HTML body, converted to text, loses its tags as for any mail).
PLAIN = {
    "firstgood": "hello\n",
    "nulraw": "body with a raw NUL  here\n",
    "nulqp": "NUL as  and a bell  and form feed  end\n",
    "badutf": "invalid \ufffd( utf-8 \ufffd\ufffd\ufffd surrogate ",
    "nonchar": "utf16 body  end",
    "lastgood": "bye\n",
}
GOOD = [
    ("firstgood", mail(b"firstgood ordinary", b"", b"hello\r\n")),
    ("lastgood", mail(b"lastgood ordinary", b"", b"bye\r\n")),
]


def smtp_send(dep: Deployment, raw: bytes) -> None:
    with smtplib.SMTP(dep.smtp_host, dep.smtp_port, timeout=30) as smtp:
        refused = smtp.sendmail(REMOTE, [dep.email], raw)
    assert refused == {}


async def test_poison_mail_reaches_the_phone(tmp_path: Path) -> None:
    sent = [GOOD[0], *POISON, GOOD[1]]
    bodies: list[bytes] = []
    async with deployment(tmp_path) as dep:
        for _word, raw in sent:
            await asyncio.to_thread(smtp_send, dep, raw)
        async with EASClient(
            dep.url,
            dep.user,
            dep.password,
            ca_file=dep.ca_file,
            device_id="POISONPHONE",
            on_response=lambda _c, r: bodies.append(r.body) if r.tree is not None else None,
        ) as phone:
            await phone.provision()
            await phone.folder_sync()
            inbox = phone.folder(type=FolderType.INBOX).server_id
            for pref in (BodyType.PLAIN, BodyType.HTML):
                phone.state.collection(inbox).sync_key = "0"
                phone.state.collection(inbox).server_ids.clear()
                synced = await phone.sync(inbox, window_size=2, body_preference=[pref])
                assert len(synced.added) == len(sent)
                subjects = sorted(i.subject.split()[0] for i in synced.added)
                assert subjects == sorted(w for w, _ in sent)
                for item in synced.added:
                    # Cleaned as Exchange does: what XML 1.0 forbids is gone, the rest is there.
                    assert item.body is not None
                    assert item.body.data.strip()
                    for text in (item.subject, item.body.data, item.sender):
                        assert XML_ILLEGAL.search(text) is None, text
                    word = item.subject.split()[0]
                    assert XML_ILLEGAL.search(item.body.data) is None
                    if pref == BodyType.PLAIN:
                        assert item.body.data.startswith(PLAIN[word])
                    else:
                        assert PLAIN[word].strip() in item.body.data
            # The whole MIME, when the phone asks for it, is the message byte for byte.
            phone.state.collection(inbox).sync_key = "0"
            phone.state.collection(inbox).server_ids.clear()
            mime = await phone.sync(inbox, body_preference=[BodyType.MIME])
            assert len(mime.added) == len(sent)
            for item in mime.added:
                assert item.data is not None
                body = item.data.find("Body", "AirSyncBase")
                assert body is not None
                data = body.find("Data", "AirSyncBase")
                assert data is not None
                assert data.value is not None
                value = data.value.encode() if isinstance(data.value, str) else data.value
                (raw,) = [r for w, r in sent if item.subject.startswith(w)]
                assert value.endswith(raw)  # after the Received line SMTP in adds
            for item in synced.added:
                fetched = await phone.item_operations_fetch(
                    collection_id=inbox, server_id=item.server_id, body_preference=[BodyType.PLAIN]
                )
                assert fetched.item is not None
                assert fetched.item.subject == item.subject
            for word, _raw in sent:
                found = await phone.search(word, body_preference=[BodyType.HTML])
                assert len(found.items) == 1, word
    for answer in bodies:
        assert_valid_response(answer)
