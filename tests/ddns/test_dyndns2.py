"""The dyndns2 updater: every return code's reaction (help.dyn.com/return-codes), unit and over
HTTPS against tests/ddns/fake_dyndns2.py, which writes into a real BIND; the result is confirmed
at BIND, and the runner keeps the protocol's rules (no repeats, stop on fatal, 30 minutes after
911/dnserr)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from natsync.ddns.errors import DnsUpdateError
from natsync.ddns.history import History
from natsync.ddns.providers import make_updater
from natsync.ddns.providers.dyndns2 import (
    FATAL,
    SERVER_ERROR_BACKOFF,
    SERVER_ERRORS,
    Code,
    parse_answer,
    reaction,
)
from natsync.ddns.runner import DdnsRunner
from natsync.ddns.settings import DdnsSettings
from tests.ddns.fake_dyndns2 import Dyndns2Server
from tests.ddns.fake_http import BindZone, MemoryZone, Reply, Request, Running, serve
from tests.ddns.providers_common import World, load
from tests.ddns.servers import Named, dig, dig_values

HOSTS = {"eas.example.test", "mail.example.test"}


# -- unit: the answer and its reaction -----------------------------------------------------


@pytest.mark.parametrize(
    ("body", "code", "address"),
    [
        (b"good 192.0.3.10", Code.GOOD, "192.0.3.10"),
        (b"nochg 192.0.3.10\n", Code.NOCHG, "192.0.3.10"),
        (b"good 2001:db8::10", Code.GOOD, "2001:db8::10"),
        (b"good", Code.GOOD, ""),
        (b"badauth", Code.BADAUTH, ""),
        (b"!donator", Code.NOT_DONATOR, ""),
        (b"NOHOST\r\n", Code.NOHOST, ""),
        (b"911", Code.SERVER_911, ""),
        (b"good 127.0.0.1\nnohost", Code.GOOD, "127.0.0.1"),
    ],
)
def test_answer_is_parsed(body: bytes, code: Code, address: str) -> None:
    answer = parse_answer(body)
    assert (answer.code, answer.address) == (code, address)


@pytest.mark.parametrize("body", [b"", b"<html>oops</html>", b"x" * 500, b"\xff\xfe"])
def test_unknown_answer_waits_like_a_server_error(body: bytes) -> None:
    with pytest.raises(DnsUpdateError) as caught:
        parse_answer(body)
    assert caught.value.retry_after == SERVER_ERROR_BACKOFF
    assert not caught.value.fatal


@pytest.mark.parametrize("code", sorted(FATAL))
def test_fatal_codes_stop_until_the_configuration_changes(code: Code) -> None:
    error = reaction(parse_answer(code.value.encode()), "eas.example.test")
    assert error is not None
    assert error.fatal
    assert error.retry_after is None
    assert "until the configuration changes" in error.message
    assert f"({code.value})" in error.message or code == Code.BADAUTH


@pytest.mark.parametrize("code", sorted(SERVER_ERRORS))
def test_server_errors_wait_thirty_minutes(code: Code) -> None:
    error = reaction(parse_answer(code.value.encode()), "eas.example.test")
    assert error is not None
    assert error.retry_after == 30 * 60
    assert not error.fatal
    assert not error.retryable


@pytest.mark.parametrize("code", [Code.GOOD, Code.NOCHG])
def test_success_codes(code: Code) -> None:
    assert reaction(parse_answer(code.value.encode()), "eas.example.test") is None


# -- over HTTPS against the stand-in server, writing into BIND ------------------------------


@pytest.fixture
def dyn(named: Named, tmp_path: Path) -> Iterator[tuple[Dyndns2Server, Running]]:
    provider = Dyndns2Server(BindZone(named.server()), "alice", "s3cret", set(HOSTS))
    with serve(provider, tmp_path / "tls") as running:
        yield provider, running


def settings_for(
    tmp_path: Path,
    named: Named,
    running: Running,
    password: str = "s3cret",
    families: str = "[4, 6]",
) -> DdnsSettings:
    (tmp_path / "dyn.password").write_text(password + "\n")
    return load(
        tmp_path,
        f'provider = "dyndns2"\nnames = ["eas.example.test", "mail.example.test"]\n'
        f'families = {families}\nconfirm_servers = ["{named.address}"]\nconfirm_timeout = 2\n',
        f'[ddns.dyndns2]\nurl = "{running.url}/nic/update"\nusername = "alice"\n'
        f'password_file = "dyn.password"\nca_file = "{running.ca_file}"\n',
    )


def test_update_is_sent_once_and_confirmed_at_the_authoritative_server(
    named: Named, dyn: tuple[Dyndns2Server, Running], tmp_path: Path
) -> None:
    provider, running = dyn
    updater = make_updater(settings_for(tmp_path, named, running))
    outcome = updater.publish("mail.example.test", "A", "192.0.3.10", 60)
    assert outcome.result == "updated"
    assert outcome.old == {"192.0.2.1"}
    assert outcome.old_ttl == 300  # the zone's default TTL: what caches may still hold
    assert dig_values(named, "mail.example.test") == {"192.0.3.10"}
    (sent,) = provider.updates()
    assert sent.query == {"hostname": "mail.example.test", "myip": "192.0.3.10"}
    assert sent.headers["user-agent"].startswith("natsync/")
    # the same address again: the record already holds it, so nothing is sent (no nochg)
    again = updater.publish("mail.example.test", "A", "192.0.3.10", 60)
    assert again.result == "unchanged"
    assert len(provider.updates()) == 1
    assert not any(provider.nochg.values())


def test_aaaa_is_sent_as_myip(
    named: Named, dyn: tuple[Dyndns2Server, Running], tmp_path: Path
) -> None:
    _provider, running = dyn
    updater = make_updater(settings_for(tmp_path, named, running))
    assert updater.publish("eas.example.test", "AAAA", "2001:db8::10", 60).result == "updated"
    assert dig_values(named, "eas.example.test", "AAAA") == {"2001:db8::10"}
    assert dig_values(named, "eas.example.test", "A") == set()
    assert dig(named, "eas.example.test", "AAAA")[0].split()[1] == "60"


def test_runner_publishes_a_and_aaaa_and_says_how_long_the_old_address_lingers(
    named: Named, dyn: tuple[Dyndns2Server, Running], tmp_path: Path
) -> None:
    provider, running = dyn
    world = World()
    settings = settings_for(tmp_path, named, running)
    with History(settings.history_path) as history:
        runner = DdnsRunner(settings, history, observe=world.observe, clock=world.clock)
        report = runner.update_once()
        assert report.ok, report.results
        results = {(r.name, r.rdtype): r for r in report.results}
        assert {r.result for r in report.results} == {"updated"}
        mail = results[("mail.example.test", "A")]
        assert mail.old == "192.0.2.1"
        assert mail.old_ttl == 300
        assert "may keep 192.0.2.1 for up to 300 s" in mail.detail
        assert len(provider.updates()) == 4
        again = runner.update_once()
        assert {r.result for r in again.results} == {"unchanged"}
        assert len(provider.updates()) == 4


def test_badauth_stops_until_the_password_changes(
    named: Named, dyn: tuple[Dyndns2Server, Running], tmp_path: Path
) -> None:
    provider, running = dyn
    world = World()
    wrong = settings_for(tmp_path, named, running, password="wrong")
    with History(wrong.history_path) as history:
        runner = DdnsRunner(wrong, history, observe=world.observe, clock=world.clock)
        first = runner.update_once()
        assert not first.ok
        assert "username and password are not accepted" in first.results[0].detail
        sent = len(provider.updates())
        assert sent == 1  # fatal: nothing more is sent, not even for the other names
        world.now += 86_400
        later = runner.update_once()
        assert {r.result for r in later.results} == {"blocked"}
        assert "until the configuration changes" in later.results[0].detail
        assert len(provider.updates()) == sent
        # the user fixes the password: a new configuration, so natsync tries again
        fixed = settings_for(tmp_path, named, running)
        report = DdnsRunner(fixed, history, observe=world.observe, clock=world.clock).update_once()
        assert report.ok
    assert dig_values(named, "mail.example.test") == {"192.0.3.10"}


def test_http_401_is_badauth(
    named: Named, dyn: tuple[Dyndns2Server, Running], tmp_path: Path
) -> None:
    """Some servers answer a wrong password with HTTP 401 rather than badauth."""
    provider, running = dyn

    def refuse(request: Request) -> Reply:
        provider.requests.append(request)
        return Reply(401, "", {"WWW-Authenticate": 'Basic realm="x"'})

    provider.handle = refuse  # type: ignore[method-assign]
    updater = make_updater(settings_for(tmp_path, named, running))
    with pytest.raises(DnsUpdateError, match="not accepted") as caught:
        updater.publish("mail.example.test", "A", "192.0.3.10", 60)
    assert caught.value.fatal


@pytest.mark.parametrize(
    "code", ["notfqdn", "nohost", "numhost", "abuse", "badagent", "!donator", "badsys"]
)
def test_each_fatal_answer_from_the_server(
    code: str, named: Named, dyn: tuple[Dyndns2Server, Running], tmp_path: Path
) -> None:
    provider, running = dyn
    provider.force = [code]
    updater = make_updater(settings_for(tmp_path, named, running))
    with pytest.raises(DnsUpdateError) as caught:
        updater.publish("mail.example.test", "A", "192.0.3.10", 60)
    assert caught.value.fatal
    assert len(provider.updates()) == 1  # not retried
    assert dig_values(named, "mail.example.test") == {"192.0.2.1"}


def test_nohost_for_a_name_not_in_the_account(
    named: Named, dyn: tuple[Dyndns2Server, Running], tmp_path: Path
) -> None:
    provider, running = dyn
    provider.hosts.discard("eas.example.test")
    updater = make_updater(settings_for(tmp_path, named, running))
    with pytest.raises(DnsUpdateError, match="does not exist in this account") as caught:
        updater.publish("eas.example.test", "A", "192.0.3.10", 60)
    assert caught.value.fatal


@pytest.mark.parametrize("code", ["911", "dnserr"])
def test_server_error_waits_thirty_minutes_then_tries_again(
    code: str, named: Named, dyn: tuple[Dyndns2Server, Running], tmp_path: Path
) -> None:
    provider, running = dyn
    provider.force = [code]
    world = World()
    settings = settings_for(tmp_path, named, running, families="[4]")
    with History(settings.history_path) as history:
        runner = DdnsRunner(settings, history, observe=world.observe, clock=world.clock)
        first = runner.update_once()
        assert [r.result for r in first.results] == ["error", "blocked"]
        assert "30 minutes" in first.results[0].detail
        world.now += 29 * 60
        assert {r.result for r in runner.update_once().results} == {"blocked"}
        assert len(provider.updates()) == 1
        world.now += 61
        assert {r.result for r in runner.update_once().results} == {"updated"}
    assert dig_values(named, "eas.example.test") == {"192.0.3.10"}


def test_accepted_but_not_served_is_not_sent_again(named: Named, tmp_path: Path) -> None:
    """The provider says good but its servers do not serve it: natsync reports it, and does not
    repeat the update at the next check (Dyn blocks clients that repeat)."""
    provider = Dyndns2Server(MemoryZone(), "alice", "s3cret", set(HOSTS))
    world = World()
    with serve(provider, tmp_path / "tls") as running:
        settings = settings_for(tmp_path, named, running, families="[4]")
        with History(settings.history_path) as history:
            runner = DdnsRunner(
                settings, history, observe=world.observe, clock=world.clock, confirm_timeout=0.3
            )
            first = runner.update_once()
            assert {r.result for r in first.results} == {"unconfirmed"}
            assert len(provider.updates()) == 2
            world.now += 30
            second = runner.update_once()
            assert {r.result for r in second.results} == {"pending"}
            assert "not sent again" in second.results[0].detail
            assert len(provider.updates()) == 2


def test_server_failure_is_retried_with_backoff(named: Named, tmp_path: Path) -> None:
    class Flaky(Dyndns2Server):
        def handle(self, request: Request) -> Reply:
            if len(self.requests) == 1:
                return Reply(503, "busy")
            return super().handle(request)

    provider = Flaky(BindZone(named.server()), "alice", "s3cret", set(HOSTS))
    with serve(provider, tmp_path / "tls") as running:
        slept: list[float] = []
        updater = make_updater(settings_for(tmp_path, named, running), sleep=slept.append)
        outcome = updater.publish("mail.example.test", "A", "192.0.3.10", 60)
    assert outcome.result == "updated"
    assert outcome.attempts == 2
    assert len(slept) >= 1
