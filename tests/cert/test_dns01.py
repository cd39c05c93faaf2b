"""DNS-01 records by RFC 2136 + TSIG into a real BIND, through the RFC 2136 updater the
certificate manager is given (natsync.ddns.providers, the one TxtPublisher of every provider):
two values side by side, removal of one, and the errors a wrong key or a name outside the zone
give."""

from __future__ import annotations

import os
import uuid

import pytest

from natsync.ddns.errors import DnsUpdateError
from natsync.ddns.providers.rfc2136 import Rfc2136Updater
from natsync.ddns.update import DnsServer, TsigKey, read_published
from tests.cert.acme_servers import Bind


def test_two_values_at_one_owner_and_removal_of_one(bind: Bind) -> None:
    owner = f"_acme-challenge.w-{uuid.uuid4().hex[:8]}.example.test."
    server = bind.server()
    publisher = Rfc2136Updater(server)
    publisher.add_txt(owner, "first-value")
    publisher.add_txt(owner, "second-value")  # e.g. example.com and *.example.com together
    assert read_published(server, owner, "TXT").values == {'"first-value"', '"second-value"'}
    publisher.remove_txt(owner, "first-value")
    assert read_published(server, owner, "TXT").values == {'"second-value"'}
    publisher.remove_txt(owner, "second-value")
    assert read_published(server, owner, "TXT").values == frozenset()


def test_a_wrong_key_is_reported_as_such(bind: Bind) -> None:
    wrong = TsigKey(bind.key.name, "hmac-sha256", os.urandom(32))
    server = DnsServer("127.0.0.1", bind.port, "example.test", wrong, 3.0)
    with pytest.raises(DnsUpdateError, match="TSIG"):
        Rfc2136Updater(server).add_txt("_acme-challenge.x.example.test.", "value")


def test_a_name_outside_the_zone_is_refused(bind: Bind) -> None:
    server = bind.server()
    with pytest.raises(DnsUpdateError, match=r"not inside the zone example\.test|refused"):
        Rfc2136Updater(server, confirm_timeout=1).add_txt("_acme-challenge.example.org.", "value")
