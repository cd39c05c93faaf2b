"""natsync.server.health: the histograms and their Prometheus text, without a server."""

from __future__ import annotations

from natsync.server.health import PUSH_BUCKETS, Histogram, ServerMetrics, reply


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    histogram = Histogram((0.1, 1.0))
    for value in (0.05, 0.5, 0.7, 5.0):
        histogram.observe(value)
    lines = histogram.render("x", 'cmd="Sync"')
    assert lines == [
        'x_bucket{cmd="Sync",le="0.1"} 1',
        'x_bucket{cmd="Sync",le="1"} 3',
        'x_bucket{cmd="Sync",le="+Inf"} 4',
        'x_sum{cmd="Sync"} 6.250000',
        'x_count{cmd="Sync"} 4',
    ]


def test_request_time_by_command_and_push_latency() -> None:
    metrics = ServerMetrics()
    metrics.request("Sync", 0.02, 200)
    metrics.request("Ping", 30.0, 200)
    metrics.pushed(committed_at=10.0, now=10.004)
    metrics.pushed(committed_at=None, now=11.0)  # no change time known: not a measurement
    text = metrics.render(held=3)
    assert "natsync_server_held_requests 3" in text
    assert 'natsync_server_requests_total{cmd="Sync",status="200"} 1' in text
    assert 'natsync_server_request_seconds_bucket{cmd="Ping",le="60"} 1' in text
    assert 'natsync_server_request_seconds_bucket{cmd="Ping",le="10"} 0' in text
    assert "natsync_server_push_latency_seconds_count 1" in text
    assert 'natsync_server_push_latency_seconds_bucket{le="0.005"} 1' in text
    assert len(PUSH_BUCKETS) > 5


def test_commands_beyond_the_limit_share_one_label() -> None:
    metrics = ServerMetrics()
    for i in range(100):
        metrics.request(f"Cmd{i}", 0.001, 200)
    assert len(metrics.request_time) <= 65
    assert "other" in metrics.request_time


class _App:
    def __init__(self) -> None:
        self.metrics = ServerMetrics()
        self._holds: dict[str, object] = {"d": object()}


def test_only_loopback_clients_are_answered() -> None:
    app = _App()
    assert reply(app, "203.0.113.9", "/metrics").status == 404
    assert reply(app, "127.0.0.1", "/metrics").status == 200
    assert b'"held": 1' in reply(app, "::1", "/healthz").body
