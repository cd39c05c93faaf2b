#!/usr/bin/env python3
"""atheris harness for the issue-20 parsers that read what the network sends: the out-of-office
decision (natsync.mail.oof: any delivered bytes and envelope sender give a reply or none, never
an exception), Autodiscover v2 (natsync.eas.autodiscover.respond_v2: any path and query give
a status and JSON) and ValidateCert (natsync.eas.validatecert.validate: any bytes as a
certificate give a Status, never an exception).

    python fuzz/fuzz_eas_answers.py -max_total_time=60 fuzz/corpus-fuzz_eas_answers
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import atheris
from _harness import fuzz_main

with atheris.instrument_imports(include=["natsync"]):
    from natsync.eas.autodiscover import respond_v2
    from natsync.eas.validatecert import CertStatus, validate
    from natsync.mail import oof

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import Store

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


def _root() -> x509.Certificate:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fuzz root")])
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2020, 1, 1, tzinfo=UTC))
        .not_valid_after(datetime(2030, 1, 1, tzinfo=UTC))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


ROOTS = Store([_root()])

SEEDS = [
    b"bob@remote.test\x00From: bob@remote.test\r\nSubject: hi\r\nMessage-ID: <a@b>\r\n\r\nx",
    b"<>\x00Auto-Submitted: auto-replied\r\nList-Id: <l.x>\r\n\r\n",
    b"\x01/autodiscover/autodiscover.json/v1.0/a@b.c\x00Protocol=ActiveSync",
    b"\x01/autodiscover/autodiscover.json\x00Email=a%40b&Protocol=AutodiscoverV1&x",
    b"\x020\x82\x01\x0a0\x81\xb1\xa0\x03\x02\x01\x02",
]


def test_one_input(data: bytes) -> None:
    if data[:1] == b"\x02":
        for status in validate([data[1:]], [data[1:]], ROOTS, NOW):
            assert isinstance(status, CertStatus)
        return
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
