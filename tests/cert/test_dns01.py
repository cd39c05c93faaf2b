"""DNS-01 records by RFC 2136 + TSIG into a real BIND: two values side by side, removal of one,
and the errors a wrong key or a name outside the zone give."""

from __future__ import annotations

import os
import uuid

import pytest

from natsync.cert.dns01 import add_txt, remove_txt
from natsync.ddns.errors import DnsUpdateError
from natsync.ddns.update import DnsServer, TsigKey, read_published
from tests.cert.acme_servers import Bind


def test_two_values_at_one_owner_and_removal_of_one(bind: Bind) -> None:
    owner = f"_acme-challenge.w-{uuid.uuid4().hex[:8]}.example.test."
    server = bind.server()
    add_txt(server, owner, "first-value")
    add_txt(server, owner, "second-value")  # e.g. example.com and *.example.com together
    assert read_published(server, owner, "TXT").values == {'"first-value"', '"second-value"'}
    remove_txt(server, owner, "first-value")
    assert read_published(server, owner, "TXT").values == {'"second-value"'}
    remove_txt(server, owner, "second-value")
    assert read_published(server, owner, "TXT").values == frozenset()


def test_a_wrong_key_is_reported_as_such(bind: Bind) -> None:
    wrong = TsigKey(bind.key.name, "hmac-sha256", os.urandom(32))
    server = DnsServer("127.0.0.1", bind.port, "example.test", wrong, 3.0)
    with pytest.raises(DnsUpdateError, match="TSIG"):
        add_txt(server, "_acme-challenge.x.example.test.", "value")


def test_a_name_outside_the_zone_is_refused(bind: Bind) -> None:
    server = bind.server()
    with pytest.raises(DnsUpdateError, match=r"not inside the zone example\.test|refused"):
        add_txt(server, "_acme-challenge.example.org.", "value", confirm_timeout=1)
