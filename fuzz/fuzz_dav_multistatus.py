#!/usr/bin/env python3
"""atheris harness for natsync.sources.dav.xml.parse_multistatus: whatever a CalDAV/CardDAV
server answers to a PROPFIND or a sync-collection REPORT must decode or raise DavError.

    python fuzz/fuzz_dav_multistatus.py -max_total_time=60 fuzz/corpus-fuzz_dav_multistatus

An empty corpus directory is seeded with a sync-collection answer (a change, a removal, a
507-truncated page) and a discovery answer.
"""

from __future__ import annotations

import atheris
from _harness import fuzz_main

with atheris.instrument_imports(include=["natsync"]):
    from natsync.sources.dav.xml import DavError, parse_multistatus

SEEDS = [
    b'<?xml version="1.0"?><multistatus xmlns="DAV:"><response><href>/ann/calendar/a.ics</href>'
    b'<propstat><prop><getetag>"1"</getetag></prop><status>HTTP/1.1 200 OK</status></propstat>'
    b"</response><response><href>/ann/calendar/b.ics</href><status>HTTP/1.1 404 Not Found"
    b"</status></response><response><href>/ann/calendar/</href><status>HTTP/1.1 507 Insufficient"
    b" Storage</status></response><sync-token>http://radicale.org/ns/sync/1</sync-token>"
    b"</multistatus>",
    b'<multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><response><href>/ann/'
    b"</href><propstat><prop><resourcetype><collection/><C:calendar/></resourcetype>"
    b'<C:supported-calendar-component-set><C:comp name="VEVENT"/>'
    b"</C:supported-calendar-component-set><current-user-principal><href>/ann/</href>"
    b"</current-user-principal></prop><status>HTTP/1.1 200 OK</status></propstat></response>"
    b"</multistatus>",
]


def test_one_input(data: bytes) -> None:
    try:
        status = parse_multistatus(data, "/ann/calendar/")
        for response in status.responses:
            response.resource_types()
            response.components()
            response.hrefs("{DAV:}current-user-principal")
            _ = response.etag
    except DavError:
        return


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS, ".xml")
