"""The Status lights from what the parts really write (the DDNS history, the certificate manager's
status file, a certificate from natsync's CA, the store's outbound queue, the doctor's JSON),
and the Live numbers from Prometheus text (the edge's format and the server's histogram)."""

from __future__ import annotations

import datetime as dt
import html
import json

import pytest

from natsync.cert.ca import SERVER_VALIDITY, load_or_init_ca
from natsync.cert.manager import ACME_DIR, STATUS_FILE, CertStatus, State
from natsync.console.live import MetricsDelta, Series, parse_metrics, quantile, spark
from natsync.console.status import Gathered, Level, lights
from natsync.ddns.history import CheckEntry, History, UpdateEntry
from natsync.doctor import Check, Finding, Report, Severity
from natsync.doctor.report import to_json
from tests.console.conftest import Deployment, browser_like, login

NOW = dt.datetime(2026, 12, 6, 12, tzinfo=dt.UTC)


def _by_name(found: list, name: str):  # type: ignore[no-untyped-def]
    (light,) = [x for x in found if x.name == name]
    return light


async def test_status_page_reads_what_the_parts_wrote(deployment: Deployment) -> None:
    data = deployment.data_dir
    now = dt.datetime.now(dt.UTC)
    # The DDNS runner's history: behind carrier-grade NAT, and the last DNS update.
    with History(data / "ddns.db") as history:
        history.record_check(
            CheckEntry(4, now.timestamp(), "cgnat", "100.64.3.9", "the router's WAN address is "
                       "in 100.64.0.0/10", ("router says 100.64.3.9",))
        )  # fmt: skip
        history.record_update(
            UpdateEntry(now.timestamp(), "mail.example.test", "A", "192.0.2.1", "192.0.2.7",
                        "updated", "")
        )  # fmt: skip
    # A certificate from natsync's CA with five days left, and the manager's status file.
    ca = load_or_init_ca(data / "ca")
    ca.issue_server_cert(
        ["mail.example.test"], [], data / "tls", now=now - SERVER_VALIDITY + dt.timedelta(days=5)
    )
    status = CertStatus(
        state=State.EXPIRING, healthy=False, names=("mail.example.test",), directory="x",
        not_after=None, renew_at=(now + dt.timedelta(hours=1)).isoformat(), renew_source="ari",
        next_check=None, failures=3, last_error="rate limited", challenge="http-01",
        challenge_reason="", message="close to expiry",
    )  # fmt: skip
    (data / ACME_DIR).mkdir()
    (data / ACME_DIR / STATUS_FILE).write_text(json.dumps(status.as_dict()))
    # Mail waiting for the smarthost.
    await deployment.store.run(
        lambda t: t.enqueue_outbound("alice@example.test", ["bob@example.org"], b"x", now)
    )
    # The doctor's last report.
    report = Report(target="https://mail.example.test/Microsoft-Server-ActiveSync", mode="inside")
    report.findings.append(
        Finding(Check.PUSH, Severity.FAIL, "The Ping was cut after 60 s", ("cut at 60 s",),
                "A NAT drops idle connections", "set server.max_idle_path_seconds = 60")
    )  # fmt: skip
    report.started_at = now.isoformat(timespec="seconds")
    (data / "doctor").mkdir()
    (data / "doctor" / "report.json").write_text(to_json(report))

    g = await deployment.console.console.gather()
    found = lights(g)
    address = _by_name(found, "Public address")
    assert address.level is Level.RED
    assert "100.64.3.9" in address.words
    assert "relay" in address.fix
    dns = _by_name(found, "DNS record")
    assert dns.level is Level.GREEN
    assert "192.0.2.7" in dns.words
    cert = _by_name(found, "Certificate")
    assert cert.level is Level.RED
    assert "mail.example.test from natsync" in cert.words
    assert any("next renewal" in e for e in cert.evidence)
    assert any("rate limited" in e for e in cert.evidence)
    push = _by_name(found, "Direct Push (held Ping)")
    assert push.level is Level.RED
    assert push.fix == "set server.max_idle_path_seconds = 60"
    assert _by_name(found, "Relay queue").words.startswith("1 message(s) waiting")
    assert _by_name(found, "Store").level is Level.GREEN
    # And the page says so.
    async with browser_like() as http:
        await login(http, deployment.base)
        async with http.get(deployment.base + "/") as resp:
            page = await resp.text()
    assert 'class="light red" data-light="Certificate"' in page
    assert "set server.max_idle_path_seconds = 60" in page


def test_certificate_days_turn_amber_then_red() -> None:
    def cert_light(days: int) -> Level:
        cert = {"names": ["a"], "issuer": "x", "days_left": days}
        return _by_name(lights(Gathered(now=NOW, cert=cert)), "Certificate").level

    assert cert_light(60) is Level.GREEN
    assert cert_light(15) is Level.AMBER
    assert cert_light(3) is Level.RED


def test_nothing_written_yet_is_grey_with_the_command_to_run() -> None:
    found = lights(Gathered(now=NOW))
    assert _by_name(found, "Public address").level is Level.GREY
    assert "natsync ddns check" in _by_name(found, "Public address").fix
    assert _by_name(found, "Edge and server processes").level is Level.GREY


EDGE_METRICS = """# TYPE natsync_edge_held_pings gauge
natsync_edge_held_pings {held}
natsync_edge_requests_total{{cmd="Ping",status="200"}} {pings}
natsync_edge_requests_total{{cmd="Sync",status="200"}} 10
natsync_edge_requests_total{{cmd="Sync",status="503"}} {errors}
"""


def test_rates_from_successive_edge_scrapes() -> None:
    delta = MetricsDelta()
    first = delta.sample(EDGE_METRICS.format(held=3, pings=10, errors=0), 100.0)
    assert first.held == 3
    assert first.rates == {}  # one scrape: no rate yet
    second = delta.sample(EDGE_METRICS.format(held=4, pings=20, errors=5), 110.0)
    assert second.held == 4
    assert second.rates == {"Ping": 1.0, "Sync": 0.5}
    assert second.errors == 0.5


def test_a_status_label_that_is_not_an_http_status_is_not_an_error() -> None:
    delta = MetricsDelta()
    for at in (1.0, 2.0):
        n = int(at) * 5
        sample = delta.sample(
            f'natsync_edge_requests_total{{cmd="Ping",status="5²0"}} {n}\n'
            f'natsync_edge_requests_total{{cmd="Ping",status="5000"}} {n}\n'
            f'natsync_edge_requests_total{{cmd="Ping",status="502"}} {n}\n',
            at,
        )
    assert sample.rates == {"Ping": 15.0}
    assert sample.errors == 5.0


def test_push_latency_quantiles_from_the_histogram() -> None:
    text = "\n".join(
        f'natsync_server_push_latency_seconds_bucket{{le="{le}"}} {n}'
        for le, n in (("0.05", 50), ("0.1", 90), ("0.5", 99), ("1", 100), ("+Inf", 100))
    )
    sample = MetricsDelta().sample(text, 1.0)
    assert sample.p50 == pytest.approx(0.05)
    assert sample.p99 == pytest.approx(0.5)
    assert quantile([], 0.5) is None


def test_push_latency_is_over_the_last_minutes_of_scrapes() -> None:
    def histogram(fast: int, slow: int) -> str:  # fast: 50 ms or less; slow: 0.5..1 s
        return "\n".join(
            f'natsync_server_push_latency_seconds_bucket{{le="{le}"}} {n}'
            for le, n in (("0.05", fast), ("0.5", fast), ("1", fast + slow),
                          ("+Inf", fast + slow))
        )  # fmt: skip

    delta = MetricsDelta()
    assert delta.sample(histogram(100, 0), 0.0).p50 == pytest.approx(0.025)  # since start
    recent = delta.sample(histogram(100, 10), 10.0)  # ten slow pushes since the last scrape
    assert recent.p50 == pytest.approx(0.75)
    assert delta.sample(histogram(100, 10), 200.0).p50 == pytest.approx(0.75)  # still in 5 min
    quiet = delta.sample(histogram(100, 10), 400.0)  # none in the last 5 minutes
    assert (quiet.p50, quiet.p99) == (None, None)
    restarted = delta.sample(histogram(4, 0), 405.0)  # counters from zero again: all of them
    assert restarted.p50 == pytest.approx(0.025)


def test_metrics_lines_that_are_not_samples_are_skipped() -> None:
    parsed = parse_metrics('# HELP x\nbad line\nx{a="1"} nope\ny NaN\nz{a="b",c="d"} 2\n')
    assert parsed == {"z": [({"a": "b", "c": "d"}, 2.0)]}


def test_spark_draws_what_it_was_given() -> None:
    svg = spark([0.0, 2.0, None, 4.0], "held <Pings>")
    assert svg.count(",") == 3  # three points
    assert "held &lt;Pings&gt;: 4 (max 4)" in svg
    assert "—" in spark([], "x")
    assert Series().to_json() == {"samples": []}


async def test_live_page_charts_the_servers_metrics(deployment: Deployment) -> None:
    """console.metrics_url: the Live page reads a real HTTP /metrics (here a small server that
    exposes the edge's format), rates from two scrapes."""
    from aiohttp import web

    scrape = {"pings": 0}

    async def metrics(request: web.Request) -> web.Response:
        scrape["pings"] += 5
        return web.Response(text=EDGE_METRICS.format(held=2, errors=0, **scrape))

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        console = deployment.console.console
        from dataclasses import replace

        console.settings = replace(console.settings, metrics_url=f"http://127.0.0.1:{port}/metrics")
        await console.sample()
        await console.sample()
        last = console.series.samples[-1]
        assert last.held == 2
        assert last.rates["Ping"] > 0
        async with browser_like() as http:
            await login(http, deployment.base)
            async with http.get(deployment.base + "/live") as resp:
                page = await resp.text()
            async with http.get(deployment.base + "/live.json") as resp:
                doc = await resp.json()
        assert 'aria-label="held Pings: 2"' in page
        assert "Ping/s" in page
        assert doc["samples"][-1]["held"] == 2
    finally:
        await runner.cleanup()


def test_a_sample_from_the_stores_records() -> None:
    from natsync.console.live import sample_from_store
    from natsync.server.recent import RecentRequest

    since = NOW - dt.timedelta(seconds=10)
    phone = [  # newest first, as the ring reads
        RecentRequest(NOW - dt.timedelta(seconds=1), "Ping", 200, None, held=60),
        RecentRequest(NOW - dt.timedelta(seconds=2), "Sync", 500, None),
        RecentRequest(NOW - dt.timedelta(seconds=3), "Sync", 200, 1),
        RecentRequest(NOW - dt.timedelta(seconds=20), "Sync", 200, 1),  # before the window
    ]
    tablet = [RecentRequest(NOW - dt.timedelta(seconds=4), "FolderSync", 200, 142)]
    sample = sample_from_store([phone, tablet], since, NOW)
    assert sample.held == 1
    # The Ping that started to wait counts as held, and as a request once it is answered.
    assert sample.rates == {"FolderSync": 0.1, "Sync": 0.2}
    assert sample.errors == 0.1  # the HTTP 500; Status 142 (not provisioned) is the phone's
    assert sample.p50 is None


async def test_router_mappings_from_the_portmap_parts_status(deployment: Deployment) -> None:
    """The portmap part's own record (DATA_DIR/portmap/status.json, written by a real
    PortMapSet over a recording router as tests/portmap does): per family, open until when,
    skipped, failed with the router's words."""
    import time

    from natsync.portmap.holder import Deferred, Member, PortMapSet, write_status
    from natsync.portmap.manager import MappingSpec, PortMapper
    from tests.portmap.test_holder import Router

    specs = [MappingSpec.parse("443/tcp"), MappingSpec.parse("587:8587/tcp")]
    v4, v6 = Router("upnp"), Router("pcp6", refuse_below=1024)
    held = PortMapSet(
        [
            Member(4, PortMapper(Deferred("upnp", lambda: v4), lifetime=3600), specs),
            Member(6, PortMapper(Deferred("pcp6", lambda: v6), lifetime=3600), specs[:1],
                   [(specs[1], "IPv6 is not translated")]),
        ]
    )  # fmt: skip
    held.ensure(time.time())
    write_status(deployment.data_dir, held.status(time.time()))
    async with browser_like() as http:
        await login(http, deployment.base)
        async with http.get(deployment.base + "/") as resp:
            page = await resp.text()
    assert 'class="light red" data-light="Router mappings"' in page
    section = html.unescape(page.split('data-light="Router mappings"')[1].split("</section>")[0])
    assert "IPv4 443->443/tcp open (upnp), lease ends in 59 min" in section
    assert "IPv4 587->8587/tcp open (upnp)" in section
    assert "IPv6 443->443/tcp failed (pcp6)" in section  # the IPv6 router refuses below 1024
    assert 'Fix: <span class="fix">policy (UPnP error 606) — natsync portmap status' in section
    assert "IPv6 587->8587/tcp skipped" in section
    # The router allows it now: every mapping open (or skipped), green.
    v6.refuse_below = 0
    held.ensure(time.time() + 10)
    write_status(deployment.data_dir, held.status(time.time()))
    found = lights(Gathered(now=dt.datetime.now(dt.UTC), portmap=held.status(time.time())))
    assert _by_name(found, "Router mappings").level is Level.GREEN
