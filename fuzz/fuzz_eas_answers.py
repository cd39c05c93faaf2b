#!/usr/bin/env python3
"""atheris harness for the issue-20 parsers that read what the network sends: the out-of-office
decision (natsync.mail.oof: any delivered bytes and envelope sender give a reply or none, never
an exception) and Autodiscover v2 (natsync.eas.autodiscover.respond_v2: any path and query give
a status and JSON).

    python fuzz/fuzz_eas_answers.py -max_total_time=60 fuzz/corpus-fuzz_eas_answers
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import atheris
from _harness import fuzz_main

with atheris.instrument_imports(include=["natsync"]):
    from natsync.eas.autodiscover import respond_v2
    from natsync.mail import oof

NOW = datetime(2026, 3, 2, tzinfo=UTC)
SETTINGS = oof.OofSettings.from_json(
    json.dumps(
        {
            "state": "1",
            "messages": {
                a: {"enabled": "1", "reply": "away"}
                for a in (oof.INTERNAL, oof.EXTERNAL_KNOWN, oof.EXTERNAL_UNKNOWN)
            },
        }
    )
)

SEEDS = [
    b"bob@remote.test\x00From: bob@remote.test\r\nSubject: hi\r\nMessage-ID: <a@b>\r\n\r\nx",
    b"<>\x00Auto-Submitted: auto-replied\r\nList-Id: <l.x>\r\n\r\n",
    b"\x01/autodiscover/autodiscover.json/v1.0/a@b.c\x00Protocol=ActiveSync",
    b"\x01/autodiscover/autodiscover.json\x00Email=a%40b&Protocol=AutodiscoverV1&x",
]


def test_one_input(data: bytes) -> None:
    if data[:1] == b"\x01":
        path, _, query = data[1:].decode("utf-8", "replace").partition("\x00")
        status, body = respond_v2("/autodiscover/autodiscover.json" + path, query, "h.example")
        assert status in (200, 400)
        json.loads(body)
        return
    sender, _, raw = data.partition(b"\x00")
    incoming = oof.Incoming.of(raw, sender.decode("utf-8", "replace"))
    decision = oof.decide(SETTINGS, incoming, NOW, ("me@example.test",), (), ())
    if decision is not None:
        oof.build_reply("me@example.test", "Me", decision[0], decision[1], incoming, NOW)


if __name__ == "__main__":
    fuzz_main(test_one_input, SEEDS, ".bin")
