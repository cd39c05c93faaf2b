"""The certificate manager's decisions without I/O: renewal time (ARI window or two thirds of
the lifetime, with jitter), when to ask the CA, backoff, health, and which challenge to use."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from natsync.cert.acme import resolve_directory
from natsync.cert.ari import RenewalInfo
from natsync.cert.manager import (
    FALLBACK_JITTER,
    RETRY_FIRST,
    RETRY_MAX,
    CertificateManager,
    CheckAri,
    ManagerSettings,
    Renew,
    Schedule,
    State,
    Wait,
    backoff,
    choose_challenges,
    reachability_from_portmap,
    settings_from_table,
)
from natsync.errors import ConfigError, NatsyncError
from natsync.portmap.manager import MappingSpec, MapResult

START = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
LIFE = dt.timedelta(days=90)


def issued(draw: float = 0.5, *, ari_offered: bool | None = None) -> Schedule:
    schedule = Schedule()
    schedule.certificate(START, START + LIFE, draw)
    schedule.ari_offered = ari_offered
    return schedule


def test_without_a_certificate_the_first_order_is_now() -> None:
    schedule = Schedule()
    assert schedule.next_action(START) == Renew()
    assert schedule.state(START) is State.OBTAINING


@pytest.mark.parametrize("draw", [0.0, 0.5, 0.999])
def test_fallback_is_two_thirds_of_the_lifetime_less_a_jitter(draw: float) -> None:
    schedule = issued(draw, ari_offered=False)
    due = schedule.renew_at()
    assert due is not None
    two_thirds = START + dt.timedelta(days=60)
    assert two_thirds - LIFE * FALLBACK_JITTER <= due <= two_thirds
    assert schedule.source == "lifetime"
    assert schedule.next_action(START + dt.timedelta(days=1)) == Wait(due)
    assert schedule.next_action(due) == Renew()
    assert schedule.state(START + dt.timedelta(days=1)) is State.VALID


def test_two_hosts_with_different_draws_renew_at_different_times() -> None:
    assert issued(0.1, ari_offered=False).renew_at() != issued(0.9, ari_offered=False).renew_at()


def test_ari_is_asked_right_after_issuance_and_again_after_retry_after() -> None:
    schedule = issued(0.25)
    assert schedule.next_action(START) == CheckAri()
    window = RenewalInfo(
        START + dt.timedelta(days=50), START + dt.timedelta(days=52), dt.timedelta(hours=6)
    )
    schedule.ari_answer(window, START)
    assert schedule.renew_at() == START + dt.timedelta(days=50, hours=12)  # a quarter in
    assert schedule.source == "ari"
    assert schedule.next_action(START) == Wait(START + dt.timedelta(hours=6))
    assert schedule.next_action(START + dt.timedelta(hours=6)) == CheckAri()


def test_a_window_in_the_past_means_renew_now() -> None:
    schedule = issued(0.9)
    past = RenewalInfo(
        START - dt.timedelta(days=2), START - dt.timedelta(days=1), dt.timedelta(hours=6)
    )
    schedule.ari_answer(past, START + dt.timedelta(days=3))
    assert schedule.next_action(START + dt.timedelta(days=3)) == Renew()


def test_a_ca_without_ari_is_not_asked_again() -> None:
    schedule = issued()
    schedule.ari_answer(None, START)
    assert schedule.ari_offered is False
    assert isinstance(schedule.next_action(START), Wait)


def test_failed_ari_keeps_the_fallback_and_backs_off() -> None:
    schedule = issued()
    schedule.ari_failed(START, 0.0)
    action = schedule.next_action(START)
    assert action == Wait(START + dt.timedelta(minutes=1))
    assert schedule.source == "lifetime"


def test_never_asks_about_an_expired_certificate() -> None:
    schedule = issued()
    schedule.failed("nope", START + LIFE, 0.0)
    later = START + LIFE + dt.timedelta(days=1)
    assert schedule.next_action(later) == Renew()  # renew, not CheckAri
    assert schedule.state(later) is State.EXPIRED


def test_backoff_doubles_up_to_the_cap_with_jitter() -> None:
    assert backoff(1, RETRY_FIRST, 0.0) == RETRY_FIRST
    assert backoff(2, RETRY_FIRST, 0.0) == RETRY_FIRST * 2
    assert backoff(30, RETRY_FIRST, 0.0) == RETRY_MAX
    assert backoff(1, RETRY_FIRST, 1.0) == RETRY_FIRST * 1.2
    assert backoff(1, RETRY_FIRST, -1.0) == RETRY_FIRST * 0.8


def test_failures_back_off_and_turn_into_expiring_close_to_expiry() -> None:
    schedule = issued(0.0, ari_offered=False)
    due = schedule.renew_at()
    assert due is not None
    schedule.failed("connection refused", due, 0.0)
    assert schedule.next_action(due) == Wait(due + RETRY_FIRST)
    assert schedule.state(due) is State.RENEWING
    close = START + LIFE - dt.timedelta(days=5)  # under a tenth of 90 days left
    assert schedule.state(close) is State.EXPIRING
    assert schedule.last_error == "connection refused"
    schedule.certificate(close, close + LIFE, 0.5)  # renewed at last
    assert schedule.failures == 0
    assert schedule.state(close) is State.VALID


def test_auto_prefers_known_open_ports_then_dns_then_unknown_ports() -> None:
    picked = choose_challenges("auto", http_reachable=None, tls_reachable=True, dns_available=True)
    assert [c.challenge for c in picked] == ["tls-alpn-01", "dns-01", "http-01"]
    assert picked[0].reason == "port 443 reaches the edge from outside"


def test_auto_with_both_ports_closed_uses_dns_and_says_why() -> None:
    [only] = choose_challenges(
        "auto", http_reachable=False, tls_reachable=False, dns_available=True
    )
    assert only.challenge == "dns-01"
    assert "ports 80 and 443 are closed" in only.reason


def test_auto_with_nothing_that_can_work_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match="forward\\) port 443 or 80"):
        choose_challenges("auto", http_reachable=False, tls_reachable=False, dns_available=False)


def test_wildcards_need_dns_and_ip_addresses_cannot_use_it() -> None:
    [only] = choose_challenges(
        "auto", http_reachable=True, tls_reachable=True, dns_available=True, wildcard=True
    )
    assert only.challenge == "dns-01"
    picked = choose_challenges(
        "auto", http_reachable=True, tls_reachable=None, dns_available=True, ip_identifiers=True
    )
    assert "dns-01" not in [c.challenge for c in picked]
    with pytest.raises(ConfigError, match="needs a DNS updater"):
        choose_challenges("dns-01", http_reachable=None, tls_reachable=None, dns_available=False)


def test_the_cert_table_needs_only_the_name(tmp_path: Path) -> None:
    settings = settings_from_table({"name": "Mail.Example.com."}, tmp_path)
    assert settings.names == ("mail.example.com",)
    assert settings.directory == "production"
    assert settings.challenge == "auto"
    assert (settings.http_reachable, settings.tls_reachable) == (None, None)
    assert settings.cert_path == tmp_path / "tls" / "server.pem"
    full = settings_from_table(
        {"names": ["a.example.com"], "directory": "staging", "challenge": "dns-01",
         "ports_open": "none", "email": "me@example.com"},
        tmp_path,
    )  # fmt: skip
    assert (full.http_reachable, full.tls_reachable) == (False, False)
    assert full.directory == "staging"


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({}, "cert.name: the public name"),
        ({"name": "a.example.com", "dirctory": "x"}, "unknown cert setting"),
        ({"name": "a.example.com", "directory": "http://ca.test/dir"}, "https"),
        ({"name": "a.example.com", "challenge": "tls-sni-01"}, "must be one of"),
        ({"name": "a.example.com", "ports_open": "8080"}, "ports_open"),
        ({"name": "a.example.com", "key": "dsa"}, "cert.key"),
        ({"names": "a.example.com"}, "list of strings"),
    ],
)
def test_cert_table_mistakes_say_what_to_write(table: dict[str, object], match: str) -> None:
    with pytest.raises(NatsyncError, match=match):
        settings_from_table(table, Path("/nonexistent"))


def test_reachability_from_what_the_router_answered(tmp_path: Path) -> None:
    results = [
        MapResult(MappingSpec("tcp", 443, 443), "created"),
        MapResult(MappingSpec("tcp", 8080, 80), "failed", "UPnP error 718"),
        MapResult(MappingSpec("tcp", 25, 25), "created"),
    ]
    assert reachability_from_portmap(results) == (False, True)
    assert reachability_from_portmap([]) == (None, None)
    manager = CertificateManager(
        ManagerSettings(names=("a.example.test",), data_dir=tmp_path, directory="staging")
    )
    assert [c.challenge for c in manager.candidates] == ["tls-alpn-01", "http-01"]
    manager.set_reachability(*reachability_from_portmap(results))
    assert [c.challenge for c in manager.candidates] == ["tls-alpn-01"]
    assert manager.candidates[0].reason == "port 443 reaches the edge from outside"


def test_lets_encrypt_is_the_default_directory() -> None:
    assert resolve_directory("") == "https://acme-v02.api.letsencrypt.org/directory"
    assert resolve_directory("production") == resolve_directory("")
    assert resolve_directory("staging") == (
        "https://acme-staging-v02.api.letsencrypt.org/directory"
    )
    assert resolve_directory("https://ca.example/dir") == "https://ca.example/dir"
    with pytest.raises(NatsyncError, match="production, staging or an https:// URL"):
        resolve_directory("letsencrypt")


def test_five_failures_an_hour_at_most_even_with_short_jitter() -> None:
    """Let's Encrypt's failed-validation limit: 5 per name per hour. Attempts at 0 and after
    each backoff: the sixth comes after the hour, even with every wait 20 % short."""
    waits = [backoff(n, RETRY_FIRST, -1.0) for n in range(1, 6)]
    assert sum(waits, dt.timedelta(0)) > dt.timedelta(hours=1)


def test_a_forced_renewal_ignores_the_window_once() -> None:
    """SIGUSR1 of `natsync run` (CertificateManager.renew_soon): one order now; a failure
    returns to the backoff, a new certificate to its window."""
    schedule = issued(ari_offered=False)
    now = START + dt.timedelta(days=1)
    schedule.forced = True
    assert schedule.next_action(now) == Renew()
    schedule.failed("no answer", now, 0.0)
    assert schedule.next_action(now) == Wait(schedule.renew_at() or now)  # not due: wait
    assert schedule.failures == 1
    schedule.forced = True
    schedule.certificate(now, now + LIFE, 0.5)
    assert isinstance(schedule.next_action(now), Wait)


def test_a_stand_in_certificate_is_ordered_over(tmp_path: Path) -> None:
    """`natsync init`'s private-CA certificate only stands in: the manager orders at once."""
    from natsync.cert.ca import init_ca

    ca = init_ca(tmp_path / "ca")
    settings = ManagerSettings(
        names=("a.example.test",), data_dir=tmp_path, directory="staging", basename="public"
    )
    ca.issue_server_cert(["a.example.test"], [], settings.out_dir, basename="public")
    plain = CertificateManager(settings)
    assert plain.status().state is State.VALID
    standing_in = CertificateManager(settings, stand_in=lambda leaf: leaf.issuer == ca.cert.subject)
    assert standing_in.status().state is State.OBTAINING
    standing_in.renew_soon()
    assert standing_in.schedule.next_action(START) == Renew()
