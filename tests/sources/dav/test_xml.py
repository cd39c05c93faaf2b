"""natsync.sources.dav.xml: the multistatus parser on real answers' shapes (RFC 4918 14.16,
RFC 6578 3.6 truncation), hostile XML, and any bytes (hypothesis): DavError or a result."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from natsync.sources.dav.xml import (
    DavError,
    is_invalid_token,
    parse_multistatus,
    sync_collection_body,
)

SYNC = (
    b'<?xml version="1.0"?><d:multistatus xmlns:d="DAV:">'
    b"<d:response><d:href>/ann/calendar/a%20b.ics</d:href><d:propstat><d:prop>"
    b'<d:getetag>"e1"</d:getetag></d:prop><d:status>HTTP/1.1 200 OK</d:status></d:propstat>'
    b"</d:response>"
    b"<d:response><d:href>https://dav.example/ann/calendar/gone.ics</d:href>"
    b"<d:status>HTTP/1.1 404 Not Found</d:status></d:response>"
    b"<d:response><d:href>/ann/calendar/</d:href>"
    b"<d:status>HTTP/1.1 507 Insufficient Storage</d:status></d:response>"
    b"<d:sync-token>http://example/sync/7</d:sync-token></d:multistatus>"
)


def test_sync_collection_answer() -> None:
    status = parse_multistatus(SYNC, "/ann/calendar/")
    assert [(r.href, r.status, r.etag) for r in status.responses] == [
        ("/ann/calendar/a b.ics", 200, '"e1"'),
        ("/ann/calendar/gone.ics", 404, ""),
    ]
    assert status.sync_token == "http://example/sync/7"
    assert status.truncated  # RFC 6578 3.6: ask again with the new token


def test_a_507_on_a_member_is_not_truncation() -> None:
    status = parse_multistatus(SYNC, "/bob/other/")
    assert not status.truncated
    assert status.responses[-1].status == 507


def test_properties_not_found_are_left_out() -> None:
    body = (
        b'<multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><response>'
        b"<href>/ann/tasks/</href><propstat><prop><resourcetype><collection/><C:calendar/>"
        b'</resourcetype><C:supported-calendar-component-set><C:comp name="vtodo"/>'
        b"</C:supported-calendar-component-set></prop><status>HTTP/1.1 200 OK</status></propstat>"
        b"<propstat><prop><displayname/></prop><status>HTTP/1.1 404 Not Found</status></propstat>"
        b"</response></multistatus>"
    )
    (row,) = parse_multistatus(body).responses
    assert row.components() == {"VTODO"}
    assert "{urn:ietf:params:xml:ns:caldav}calendar" in row.resource_types()
    assert row.text("{DAV:}displayname") == ""


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"<html>502</html>",
        b'<multistatus xmlns="DAV:"><response><status>HTTP/1.1 200 OK</status></response>'
        b"</multistatus>",
        b'<multistatus xmlns="DAV:"><response><href>relative</href>'
        b"<status>HTTP/1.1 200 OK</status></response></multistatus>",
        b'<multistatus xmlns="DAV:"><response><href>//ca[l/x</href><propstat/></response>'
        b"</multistatus>",
        # A billion laughs: defusedxml refuses the DTD before any expansion.
        b'<?xml version="1.0"?><!DOCTYPE d [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;">]>'
        b'<multistatus xmlns="DAV:">&b;</multistatus>',
    ],
)
def test_bad_answers_raise_dav_error(body: bytes) -> None:
    with pytest.raises(DavError):
        parse_multistatus(body, "/ann/calendar/")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600) | st.text(max_size=300).map(lambda t: SYNC[:120] + t.encode()))
def test_any_bytes_decode_or_raise_dav_error(data: bytes) -> None:
    try:
        status = parse_multistatus(data, "/ann/calendar/")
    except DavError:
        return
    assert all(r.href.startswith("/") and r.status for r in status.responses)


def test_request_body_escapes_the_token() -> None:
    body = sync_collection_body("a<b&c")
    assert b"<d:sync-token>a&lt;b&amp;c</d:sync-token>" in body
    assert ET.fromstring(body).tag == "{DAV:}sync-collection"


def test_invalid_token_answers() -> None:
    precondition = b'<d:error xmlns:d="DAV:"><d:valid-sync-token/></d:error>'
    assert is_invalid_token(403, precondition)
    assert is_invalid_token(409, precondition)
    assert not is_invalid_token(403, b"forbidden")
    assert not is_invalid_token(207, precondition)
