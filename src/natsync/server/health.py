"""The server's ``/healthz`` and Prometheus ``/metrics`` (text format 0.0.4), like the edge's.

Histograms of request time by ActiveSync command, and of push latency to the held Ping's
answer leaving (what a phone waits for a new mail beyond the network): from the end of SMTP
DATA for a push a delivered mail caused (label ``from="data"``), from the commit for any other
change (``from="commit"``: a phone's own Sync, an IMAP source's pull). Counters of requests by
command and HTTP status; held Pings now. Items left out of an answer because they could not be
sent (issue 19, natsync.eas.isolation): a counter by command, and the ids of the last few with
when (to find them in the log and store).

Both paths answer loopback clients only (the edge publishes neither, and a client elsewhere
gets 404 like any unknown path): metrics name users' command mix, not for the internet.
The recording side is sans-I/O; :func:`reply` is the one adapter.
"""

from __future__ import annotations

import bisect
import ipaddress
import json
import time
from dataclasses import dataclass, field
from typing import Any

from natsync.server.front import Reply

#: Request time buckets (seconds): most commands take milliseconds; a held Ping or Sync takes
#: its heartbeat (up to 59 minutes), so the top buckets reach an hour.
REQUEST_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    60.0,
    600.0,
    3600.0,
)
#: Push latency buckets (seconds): a push worth the name answers within tens of milliseconds.
PUSH_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
#: Distinct command labels kept (a client cannot grow the metrics without bound).
MAX_COMMANDS = 64
#: Ids of items left out that /metrics names (the newest; every one is in the log): enough to
#: find a handful of bad items, few enough that a store full of them cannot grow the page.
MAX_LEFT_OUT_IDS = 16


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")[:32]


@dataclass(slots=True)
class Histogram:
    buckets: tuple[float, ...]
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    count: int = 0

    def __post_init__(self) -> None:
        if not self.counts:
            self.counts = [0] * len(self.buckets)

    def observe(self, value: float) -> None:
        index = bisect.bisect_left(self.buckets, value)
        if index < len(self.counts):
            self.counts[index] += 1
        self.total += value
        self.count += 1

    def render(self, name: str, labels: str = "") -> list[str]:
        sep = "," if labels else ""
        lines, running = [], 0
        for bound, count in zip(self.buckets, self.counts, strict=True):
            running += count
            lines.append(f'{name}_bucket{{{labels}{sep}le="{bound:g}"}} {running}')
        lines.append(f'{name}_bucket{{{labels}{sep}le="+Inf"}} {self.count}')
        suffix = f"{{{labels}}}" if labels else ""
        lines.append(f"{name}_sum{suffix} {self.total:.6f}")
        lines.append(f"{name}_count{suffix} {self.count}")
        return lines


@dataclass(slots=True)
class ServerMetrics:
    started: float = field(default_factory=time.time)
    request_time: dict[str, Histogram] = field(default_factory=dict)
    requests: dict[tuple[str, int], int] = field(default_factory=dict)
    push_latency: Histogram = field(default_factory=lambda: Histogram(PUSH_BUCKETS))
    #: Pushes measured from their commit (no mail's end of DATA known): ``from="commit"``.
    push_latency_commit: Histogram = field(default_factory=lambda: Histogram(PUSH_BUCKETS))
    #: Items left out of answers by command, and the newest ones: (cmd, item id) -> unix time.
    left_out: dict[str, int] = field(default_factory=dict)
    left_out_last: dict[tuple[str, str], float] = field(default_factory=dict)

    def request(self, cmd: str, seconds: float, http: int) -> None:
        if cmd not in self.request_time and len(self.request_time) >= MAX_COMMANDS:
            cmd = "other"
        histogram = self.request_time.get(cmd)
        if histogram is None:
            histogram = self.request_time[cmd] = Histogram(REQUEST_BUCKETS)
        histogram.observe(seconds)
        self.requests[(cmd, http)] = self.requests.get((cmd, http), 0) + 1

    def pushed(self, started_at: float | None, now: float, source: str = "data") -> None:
        """A held Ping answered at *now* (monotonic) for a change that started at *started_at*:
        the end of a mail's DATA (*source* "data") or the change's commit ("commit")."""
        if started_at is not None and now >= started_at:
            histogram = self.push_latency if source == "data" else self.push_latency_commit
            histogram.observe(now - started_at)

    def skipped(self, cmd: str, item_ids: tuple[str, ...], now: float) -> None:
        """*item_ids* were left out of one answer to *cmd* at *now* (unix time)."""
        if not item_ids:
            return
        if cmd not in self.left_out and len(self.left_out) >= MAX_COMMANDS:
            cmd = "other"
        self.left_out[cmd] = self.left_out.get(cmd, 0) + len(item_ids)
        for item in item_ids:
            self.left_out_last.pop((cmd, item), None)  # newest last
            self.left_out_last[(cmd, item)] = now
        while len(self.left_out_last) > MAX_LEFT_OUT_IDS:
            del self.left_out_last[next(iter(self.left_out_last))]

    def render(self, held: int) -> str:
        lines = [
            "# HELP natsync_server_held_requests Pings and Syncs held now.",
            "# TYPE natsync_server_held_requests gauge",
            f"natsync_server_held_requests {held}",
            "# HELP natsync_server_requests_total Requests by ActiveSync command and HTTP status.",
            "# TYPE natsync_server_requests_total counter",
        ]
        for (cmd, http), count in sorted(self.requests.items()):
            lines.append(
                f'natsync_server_requests_total{{cmd="{_label(cmd)}",status="{http}"}} {count}'
            )
        lines += [
            "# HELP natsync_server_request_seconds Request time by ActiveSync command.",
            "# TYPE natsync_server_request_seconds histogram",
        ]
        for cmd, histogram in sorted(self.request_time.items()):
            lines += histogram.render("natsync_server_request_seconds", f'cmd="{_label(cmd)}"')
        lines += [
            "# HELP natsync_server_push_latency_seconds To the answer of the Ping that waited "
            'for a change: from the end of SMTP DATA of the mail (from="data"), or from the '
            'commit of a change no mail made (from="commit").',
            "# TYPE natsync_server_push_latency_seconds histogram",
            *self.push_latency.render("natsync_server_push_latency_seconds", 'from="data"'),
            *self.push_latency_commit.render(
                "natsync_server_push_latency_seconds", 'from="commit"'
            ),
            "# HELP natsync_server_items_left_out_total Items left out of an answer because "
            "they could not be sent (each is in the log with its id).",
            "# TYPE natsync_server_items_left_out_total counter",
        ]
        for cmd, count in sorted(self.left_out.items()):
            lines.append(f'natsync_server_items_left_out_total{{cmd="{_label(cmd)}"}} {count}')
        lines += [
            "# HELP natsync_server_item_left_out_timestamp_seconds When each of the last "
            f"{MAX_LEFT_OUT_IDS} items left out was left out, by command and item id.",
            "# TYPE natsync_server_item_left_out_timestamp_seconds gauge",
        ]
        for (cmd, item), at in self.left_out_last.items():
            lines.append(
                "natsync_server_item_left_out_timestamp_seconds"
                f'{{cmd="{_label(cmd)}",item="{_label(item)}"}} {at:.3f}'
            )
        return "\n".join(lines) + "\n"


def _loopback(remote: str) -> bool:
    try:
        return ipaddress.ip_address(remote.split("%", maxsplit=1)[0]).is_loopback
    except ValueError:
        return False


def reply(app: Any, remote: str, path: str) -> Reply:
    """The answer to GET /healthz or /metrics from *remote* (404 unless loopback)."""
    if not _loopback(remote):
        return Reply(404)
    if path == "/metrics":
        body = app.metrics.render(len(app._holds)).encode()
        return Reply(200, {"Content-Type": "text/plain; version=0.0.4"}, body)
    doc = {
        "status": "ok",
        "held": len(app._holds),
        "uptime_seconds": round(time.time() - app.metrics.started, 1),
    }
    return Reply(200, {"Content-Type": "application/json"}, json.dumps(doc).encode())
