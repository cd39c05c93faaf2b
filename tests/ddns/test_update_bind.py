"""RFC 2136 + TSIG against a real BIND 9: publish, confirm, compare-and-swap, refusals."""

from __future__ import annotations

import os
import random

import pytest

from natsync.ddns.errors import DnsUpdateError, PrerequisiteFailed
from natsync.ddns.update import (
    BACKOFF_CAP,
    TsigKey,
    backoff_delay,
    compare_and_swap,
    publish,
    read_published,
)
from tests.ddns.servers import INITIAL_MAIL, KEY_NAME, Named, dig, dig_values, free_port


def test_update_a_record_is_confirmed_by_the_authoritative_server(named: Named) -> None:
    outcome = publish(named.server(), "eas.example.test", "A", "192.0.3.10", 60)
    assert outcome.changed
    assert outcome.old == frozenset()
    assert dig_values(named, "eas.example.test") == {"192.0.3.10"}


def test_replacing_an_existing_record_reports_the_old_value(named: Named) -> None:
    outcome = publish(named.server(), "mail.example.test", "A", "192.0.3.11", 60)
    assert outcome.old == frozenset({INITIAL_MAIL})
    assert dig_values(named, "mail.example.test") == {"192.0.3.11"}


def test_update_aaaa_record(named: Named) -> None:
    publish(named.server(), "eas.example.test", "AAAA", "2001:db8::10", 60)
    assert dig_values(named, "eas.example.test", "AAAA") == {"2001:db8::10"}
    # A and AAAA are independent records
    assert dig_values(named, "eas.example.test", "A") == set()


def test_same_address_again_changes_nothing(named: Named) -> None:
    publish(named.server(), "eas.example.test", "A", "192.0.3.10", 60)
    again = publish(named.server(), "eas.example.test", "A", "192.0.3.10", 60)
    assert not again.changed


def test_ttl_is_honoured(named: Named) -> None:
    publish(named.server(), "eas.example.test", "A", "192.0.3.10", 42)
    (line,) = dig(named, "eas.example.test")
    assert line.split()[1] == "42"
    # changing only the TTL is an update too
    assert publish(named.server(), "eas.example.test", "A", "192.0.3.10", 60).changed
    assert dig(named, "eas.example.test")[0].split()[1] == "60"


def test_updater_with_stale_expectation_does_not_clobber(named: Named) -> None:
    server = named.server()
    seen_by_first = read_published(server, "mail.example.test", "A").values
    # a second updater moves the record in the meantime
    publish(server, "mail.example.test", "A", "192.0.3.20", 60)
    with pytest.raises(PrerequisiteFailed, match="another updater"):
        compare_and_swap(server, "mail.example.test", "A", seen_by_first, "192.0.3.99", 60)
    assert dig_values(named, "mail.example.test") == {"192.0.3.20"}


def test_stale_expectation_of_absence_does_not_clobber(named: Named) -> None:
    server = named.server()
    publish(server, "eas.example.test", "A", "192.0.3.20", 60)
    with pytest.raises(PrerequisiteFailed):
        compare_and_swap(server, "eas.example.test", "A", frozenset(), "192.0.3.99", 60)
    assert dig_values(named, "eas.example.test") == {"192.0.3.20"}


def test_wrong_key_is_rejected_and_not_retried(named: Named) -> None:
    wrong = TsigKey(KEY_NAME, "hmac-sha256", os.urandom(32))
    sleeps: list[float] = []
    with pytest.raises(DnsUpdateError, match="TSIG") as caught:
        publish(
            named.server(key=wrong), "mail.example.test", "A", "192.0.3.66", 60, sleep=sleeps.append
        )
    assert not caught.value.retryable
    assert sleeps == []
    assert dig_values(named, "mail.example.test") == {INITIAL_MAIL}


def test_name_outside_the_update_policy_is_refused(named: Named) -> None:
    with pytest.raises(DnsUpdateError, match="refused") as caught:
        publish(named.server(), "www.example.test", "A", "192.0.3.66", 60, sleep=lambda _: None)
    assert not caught.value.retryable
    assert dig_values(named, "www.example.test") == {"192.0.2.80"}


def test_server_down_is_retried_with_backoff_then_reported(named: Named) -> None:
    server = named.server(timeout=0.5)
    down = type(server)("127.0.0.1", free_port(), server.zone, server.key, 0.5)
    sleeps: list[float] = []
    with pytest.raises(DnsUpdateError, match="cannot reach") as caught:
        publish(
            down,
            "mail.example.test",
            "A",
            "192.0.3.66",
            60,
            sleep=sleeps.append,
            attempts=4,
            base=1.0,
            rng=random.Random(7),
        )
    assert caught.value.retryable
    assert len(sleeps) == 3
    # exponential with equal jitter: each delay lies in [d/2, d] for d = 1, 2, 4
    for delay, full in zip(sleeps, (1.0, 2.0, 4.0), strict=True):
        assert full / 2 <= delay <= full


def test_backoff_is_capped() -> None:
    rng = random.Random(1)
    assert all(backoff_delay(30, rng) <= BACKOFF_CAP for _ in range(20))
    assert backoff_delay(30, rng) >= BACKOFF_CAP / 2
