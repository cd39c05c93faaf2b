"""The Live page's numbers: held Pings, requests per second by command, push latency p50/p99,
errors, sampled every few seconds into a short series, drawn as small SVG charts.

Two sources. With ``console.metrics_url`` (the server's Prometheus /metrics under ``natsync
run``) the sampler reads the counters there. Without it, it reads what the store records: each
device's recent requests (natsync.server.recent) — requests and errors since the last sample,
Pings held now, and push latency over the answered Pings that carry it (the last minutes).
"""

from __future__ import annotations

import datetime as dt
import math
from collections import Counter, deque
from dataclasses import dataclass, field
from html import escape

from natsync.server.recent import RecentRequest, holds_ping, percentile

#: From the store's record, push latency p50/p99 are over the pushes of the last 5 minutes
#: (each device's ring holds its last requests; the answered Pings carry their push latency).
PUSH_WINDOW = dt.timedelta(minutes=5)
#: Seconds between samples, and samples kept (10 minutes): "the last minutes" of the issue.
SAMPLE_EVERY = 5.0
KEEP = 120


@dataclass(frozen=True, slots=True)
class Sample:
    at: float  # POSIX seconds
    held: int
    rates: dict[str, float]  # requests/s by command
    errors: float  # errors/s
    p50: float | None  # push latency, seconds
    p99: float | None


@dataclass(slots=True)
class Series:
    samples: deque[Sample] = field(default_factory=lambda: deque(maxlen=KEEP))

    def add(self, sample: Sample) -> None:
        self.samples.append(sample)

    def to_json(self) -> dict[str, object]:
        return {
            "samples": [
                {
                    "at": s.at,
                    "held": s.held,
                    "rates": s.rates,
                    "errors": s.errors,
                    "p50": s.p50,
                    "p99": s.p99,
                }
                for s in self.samples
            ]
        }


#: EAS Status values that mean the server failed (MS-ASCMD 2.2.2: ServerError,
#: ServerErrorRetryLater); Ping's Status 8 is its own "server error" (2.2.3.177.11).
SERVER_ERROR_STATUS = frozenset({110, 111})


def is_error(r: RecentRequest) -> bool:
    """A request the server failed: HTTP 5xx or a server-error Status. A phone's own mistakes
    (wrong password, not provisioned, blocked) are the Devices page's business, not an error
    rate."""
    return (
        r.http >= ERROR_HTTP
        or r.status in SERVER_ERROR_STATUS
        or (r.command == "Ping" and r.status == 8)
    )


def sample_from_store(
    rings: list[list[RecentRequest]], since: dt.datetime, now: dt.datetime
) -> Sample:
    """A sample from every device's recent requests: what happened after *since*."""
    seconds = max((now - since).total_seconds(), 1e-3)
    counts: Counter[str] = Counter()
    errors = 0
    held = 0
    for ring in rings:
        if holds_ping(ring, now):
            held += 1
        for r in ring:
            if r.at <= since:
                break  # newest first
            if r.held:
                continue  # a Ping starting to wait: counted when it is answered
            counts[r.command] += 1
            errors += is_error(r)
    rates = {cmd: round(n / seconds, 3) for cmd, n in sorted(counts.items())}
    pushed = [
        r.push_ms / 1000 for ring in rings for r in ring
        if r.push_ms is not None and r.at > now - PUSH_WINDOW
    ]  # fmt: skip
    p50, p99 = percentile(pushed, 0.5), percentile(pushed, 0.99)
    return Sample(now.timestamp(), held, rates, round(errors / seconds, 3), p50, p99)


#: An answer with this HTTP status or above counts as an error (the edge labels its counter).
ERROR_HTTP = 500


# -- Prometheus text format (the subset natsync run's /metrics writes) -----------------------------

#: Metric names read from /metrics: the server's (natsync.server.health: held requests, requests
#: by command and HTTP status, a push-latency histogram), or the edge's admin /metrics
#: (natsync.edge.metrics: held Pings, requests by command and HTTP status), whichever is given.
#: Errors are the requests answered with HTTP 5xx (ERROR_HTTP), from the status label.
HELD = ("natsync_server_held_requests", "natsync_edge_held_pings")
REQUESTS = ("natsync_server_requests_total", "natsync_edge_requests_total")
PUSH = "natsync_server_push_latency_seconds"


def parse_metrics(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """name -> [(labels, value)]; lines that are not samples are skipped (never raises)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        head, _, rest = line.rpartition(" ")
        if not head:
            continue
        try:
            value = float(rest)
        except ValueError:
            continue
        if not math.isfinite(value):
            continue  # a gauge or counter of ours is never NaN or infinite
        name, labels = head, {}
        if "{" in head and head.endswith("}"):
            name, _, inner = head[:-1].partition("{")
            for part in inner.split(","):
                key, eq, val = part.partition("=")
                if eq:
                    labels[key.strip()] = val.strip().strip('"')
        out.setdefault(name.strip(), []).append((labels, value))
    return out


def quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The q-quantile from cumulative histogram buckets [(le, count)] (Prometheus'
    histogram_quantile: linear within the bucket)."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return lower
            span = count - below
            return lower + (le - lower) * ((rank - below) / span if span else 1.0)
        lower, below = le, count
    return None


@dataclass(slots=True)
class MetricsDelta:
    """Turns successive /metrics scrapes into rates (counters only grow; a restart resets)."""

    last: dict[str, float] = field(default_factory=dict)
    #: The push-latency histogram's buckets at each scrape of the last PUSH_WINDOW (and the
    #: one before it): the p50/p99 charted are over the pushes of the last minutes.
    history: deque[tuple[float, dict[float, float]]] = field(default_factory=deque)
    last_at: float = 0.0

    def sample(self, text: str, now: float) -> Sample:
        metrics = parse_metrics(text)
        seconds = max(now - self.last_at, 1e-3) if self.last_at else 0.0
        held = int(sum(v for name in HELD for _, v in metrics.get(name, [])))
        counts: dict[str, float] = {}
        errors = 0.0
        for name in REQUESTS:
            for labels, v in metrics.get(name, []):
                cmd = labels.get("command", labels.get("cmd", "?"))
                counts[cmd] = counts.get(cmd, 0.0) + v
                status = labels.get("status", "")
                if (
                    len(status) == 3
                    and status.isascii()
                    and status.isdigit()
                    and int(status) >= ERROR_HTTP
                ):
                    errors += v
        rates: dict[str, float] = {}
        err_rate = 0.0
        if seconds:
            for cmd, v in counts.items():
                delta = v - self.last.get(cmd, 0.0)
                rates[cmd] = round(max(delta, 0.0) / seconds, 3)
            err_rate = round(max(errors - self.last.get("\0errors", 0.0), 0.0) / seconds, 3)
        buckets: dict[float, float] = {}
        for labels, v in metrics.get(PUSH + "_bucket", []):
            le = labels.get("le", "")
            try:
                buckets[float(le)] = buckets.get(float(le), 0.0) + v
            except ValueError:
                continue
        cutoff = now - PUSH_WINDOW.total_seconds()
        while len(self.history) > 1 and self.history[1][0] <= cutoff:
            self.history.popleft()
        # Over the window: since the newest scrape before it (since the process started, on
        # the first scrape; a restarted server's counters start again from zero).
        base = self.history[0][1] if self.history else {}
        window = [(le, c - base.get(le, 0.0)) for le, c in buckets.items()]
        if any(c < 0 for _, c in window):
            window = list(buckets.items())
        self.history.append((now, buckets))
        self.last = {**counts, "\0errors": errors}
        self.last_at = now
        return Sample(now, held, rates, err_rate, quantile(window, 0.5), quantile(window, 0.99))


# -- SVG -------------------------------------------------------------------------------------------

WIDTH = 300
HEIGHT = 80


def spark(values: list[float | None], label: str, unit: str = "") -> str:
    """A small line chart as an SVG element (no script needed to read it)."""
    known = [v for v in values if v is not None]
    peak = max(known, default=0.0)
    top = peak or 1.0  # all zero: a flat line at the bottom
    n = max(len(values) - 1, 1)
    points = " ".join(
        f"{i * WIDTH / n:.1f},{HEIGHT - 4 - (v / top) * (HEIGHT - 18):.1f}"
        for i, v in enumerate(values)
        if v is not None
    )
    last = known[-1] if known else None
    shown = "—" if last is None else f"{last:g}{unit}"
    label = escape(label)
    return (
        f'<svg class="spark" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{label}: {shown}" data-chart="{label}">'
        f'<text x="2" y="12">{label}: {shown} (max {peak:g}{unit})</text>'
        f'<polyline fill="none" stroke="currentColor" stroke-width="2" points="{points}"/>'
        "</svg>"
    )
