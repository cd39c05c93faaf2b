"""Check 6, the Direct Push path: does a waiting Ping survive its whole heartbeat, and if not,
after how many idle seconds does the path cut?

Direct Push is one HTTPS request held open for the heartbeat (MS-ASCMD 2.2.1.13) with no byte
moving. Every NAT, firewall and proxy on the path keeps an idle timer per connection; when one
is shorter than the heartbeat it drops the connection silently, and the phone hears of new mail
only at its next retry. The doctor holds a Ping; when it does not survive, idle probes (connections
held idle in parallel for evenly spaced times, then asked again) bracket the cut between the
longest idle time that survived and the shortest that did not, and the advice is
``server.max_idle_path_seconds`` at or below the longest that survived. The planning of the
probes (:func:`probe_idles`, :func:`narrow`) is pure; ``gather.measure_cut`` runs them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from natsync.config import DEFAULT_HEARTBEAT_MIN, PATH_IDLE_MARGIN
from natsync.doctor.evidence import CutEvidence, IdleProbe, PushEvidence
from natsync.doctor.findings import Check, Finding, Severity, ok, skip

#: The shortest heartbeat Exchange lets phones ask for (MS-ASCMD 2.2.3.84.1).
EAS_MIN_HEARTBEAT = 60
#: Seconds to add to the heartbeat when advising an idle timeout for the path.
TIMEOUT_MARGIN = 60
#: Idle probes per round, held in parallel at evenly spaced idle times (one TLS connection each).
PROBES_PER_ROUND = 8
#: Rounds of probes at most: each narrows the bracket ninefold, so 3 take 1 s of a 960 s range
#: to within 1.3 s.
MAX_ROUNDS = 3
#: The bracket is narrowed until it is at most this wide: half a second, or 5 % of the cut for
#: long ones (routers count idle time in seconds; phones' heartbeats are minutes).
CUT_PRECISION_MIN = 0.5
CUT_PRECISION_SHARE = 0.05
#: How a probe that was a held Ping (not an idle connection) is described.
HELD_PING = "a held Ping"
#: How exact a cut seen directly is (the path closed the held Ping itself): the event loop's
#: timing of the close.
CLOSED_PRECISION = 0.25


#: Held Pings ask for whole seconds: a bracket narrowed by Pings is at best 1 s wide.
PING_PRECISION = 1.0


def ping_precision(cut: float) -> float:
    """How narrow held Pings make the bracket of a cut near *cut* seconds."""
    return max(PING_PRECISION, cut_precision(cut))


def next_heartbeat(survived: float, cut: float) -> int | None:
    """The whole-second heartbeat halving the bracket, or None when none fits inside it."""
    heartbeat = math.floor((survived + cut) / 2)
    if heartbeat <= survived:
        heartbeat = math.floor(survived) + 1
    return heartbeat if survived < heartbeat < cut else None


def cut_precision(cut: float) -> float:
    """How narrow the bracket of a cut near *cut* seconds is made."""
    return max(CUT_PRECISION_MIN, CUT_PRECISION_SHARE * cut)


def probe_idles(survived: float, cut: float, count: int = PROBES_PER_ROUND) -> list[float]:
    """*count* idle times spaced evenly strictly between *survived* and *cut*."""
    step = (cut - survived) / (count + 1)
    return [round(survived + step * (i + 1), 3) for i in range(count)]


def narrow(
    survived: float, cut: float, probes: Sequence[IdleProbe]
) -> tuple[float, float, float | None]:
    """The bracket after one round: (longest idle survived, shortest idle cut, when the far end
    closed idle connections itself, or None). A far end's close that reached us means the path
    still carried it, so it counts as survived; probes longer than it cannot tell anything."""
    new_cut = min([cut, *(p.idle for p in probes if p.outcome == "cut")])
    survivors = [p.idle for p in probes if p.outcome == "answered"]
    closed = [p.seconds for p in probes if p.outcome == "closed"]
    new_survived = max([survived, *(t for t in (*survivors, *closed) if t < new_cut)])
    return new_survived, new_cut, min(closed) if closed else None


def advised_idle(survived: float) -> int:
    """``server.max_idle_path_seconds`` for a path that survived *survived* idle seconds: the
    whole seconds at or below it, so below the cut."""
    return max(0, math.floor(survived))


def check_push(ev: PushEvidence, full: int = 0) -> list[Finding]:
    """*full*: the heartbeat phones on good networks ask for; an ok Ping shorter than it says
    which longer cuts it did not test."""
    held = f"asked a Ping with a heartbeat of {ev.heartbeat} s"
    asked = (
        (f"the server's bounds made it {ev.heartbeat} s instead of the {ev.asked} s asked",)
        if ev.asked is not None
        else ()
    )
    untested = (
        (
            f"a path that cuts idle connections between {ev.heartbeat} s and the {full} s "
            f"phones on good networks ask for is not tested: --heartbeat {full} holds one that "
            "long",
        )
        if ev.heartbeat < full and (ev.asked is None or ev.asked < full)
        else ()
    )
    if ev.outcome == "expired":
        return [
            ok(
                Check.PUSH,
                f"A waiting Ping survived its whole heartbeat ({ev.heartbeat} s)",
                held,
                *asked,
                f"the server answered 'no changes' after {ev.seconds:.1f} s",
                *untested,
            )
        ]
    if ev.outcome == "changes":
        return [
            ok(
                Check.PUSH,
                "A waiting Ping was answered with new mail",
                held,
                *asked,
                f"the server reported changes after {ev.seconds:.1f} s; the path held until then",
            )
        ]
    if (
        ev.outcome == "refused"
        and ev.status == 5
        and ev.limit is not None
        and ev.limit > ev.heartbeat
    ):
        return [
            skip(
                Check.PUSH,
                f"Direct Push path not tested at {ev.heartbeat} s",
                f"the server accepts heartbeats of at least {ev.limit} s; run with "
                f"--heartbeat {ev.limit} or more (the default, 960 s, tests it for real)",
            )
        ]
    if ev.outcome in ("cut", "silent"):
        return [_cut_finding(ev, held, asked)]
    return [
        Finding(
            Check.PUSH,
            Severity.FAIL,
            "The server refused the Ping" if ev.outcome == "refused" else "The Ping failed",
            (
                held,
                *asked,
                f"after {ev.seconds:.1f} s: "
                + (ev.detail or f"Status {ev.status}")
                + (f" (server limit {ev.limit})" if ev.limit is not None else ""),
            ),
            "Without a working Ping the phone falls back to polling on a schedule: mail "
            "arrives late and the battery pays.",
            "Look at the server's log for the Ping; server.heartbeat_min / heartbeat_max bound "
            "the heartbeats it accepts.",
        )
    ]


def _cut_finding(ev: PushEvidence, held: str, asked: tuple[str, ...]) -> Finding:
    seen = (
        f"the connection was closed after {ev.seconds:.1f} s without an answer"
        if ev.outcome == "cut"
        else f"no answer at all after {ev.seconds:.1f} s (the server answers at the heartbeat, "
        f"{ev.heartbeat} s: its answer was lost on the way)"
    )
    m = ev.measured
    cause = (
        "Direct Push holds one request open for the heartbeat with no byte moving. A NAT, "
        "firewall or proxy between the phone and the server forgets a connection that stays "
        "idle longer than its timeout, before the "
        f"{ev.heartbeat} s heartbeat ended: NAT idle timeouts cut Direct Push, and the phone "
        "hears of new mail only at its next retry."
    )
    raise_timeout = (
        "Raise the idle timeout of the device that cuts (the router's or firewall's TCP "
        f"established timeout, a proxy's read timeout) to at least {ev.heartbeat + TIMEOUT_MARGIN}"
        " s"
    )
    detail = (ev.detail,) if ev.detail and ev.outcome == "cut" else ()  # silent: nothing to add
    evidence = [held, *asked, seen, *detail]
    if m is None or m.survived <= 0:
        why = m.stopped if m is not None and m.stopped else "no idle probe survived"
        return Finding(
            Check.PUSH,
            Severity.FAIL,
            f"Something on the path cuts a waiting Ping before {ev.heartbeat} s",
            (*evidence, f"the cut could not be measured: {why}"),
            cause,
            f"{raise_timeout}. Then run the doctor again: it measures where the path cuts and "
            "says what to set in server.max_idle_path_seconds.",
            {"held": ev.seconds, "outcome": ev.outcome},
        )
    evidence.extend(_measure_lines(m))
    advised = advised_idle(m.survived)
    cap = advised - PATH_IDLE_MARGIN
    data: dict[str, object] = {
        "idle_cut": {
            "survived": round(m.survived, 3),
            "cut": round(m.cut, 3),
            "precision": round(m.precision, 3),
            "within_precision": m.within,
            "method": m.method,
        },
        "advice": _advice(advised, cap),
    }
    if cap < 1:
        advice = (
            f"{raise_timeout}: a path that keeps idle connections only {m.survived:.1f} s leaves "
            "no room for a Ping (the server answers "
            f"{PATH_IDLE_MARGIN} s before the path's cut), so no server setting can fix it."
        )
    else:
        low = (
            f" That caps the heartbeat at {cap} s, below the {EAS_MIN_HEARTBEAT} s phones "
            f"expect and below the default server.heartbeat_min: also set server.heartbeat_min "
            f"= {cap} (or lower), and prefer raising the path's timeout."
            if cap < EAS_MIN_HEARTBEAT
            else ""
        )
        advice = (
            f"{raise_timeout}; or tell the server how long the path keeps idle connections: "
            f"`max_idle_path_seconds = {advised}` under [server] in the server's natsync.toml, "
            f"then restart it. The server then accepts heartbeats up to {cap} s ({PATH_IDLE_MARGIN}"
            " s below the path's cut) and tells phones asking for more to ask for that "
            f"(Ping Status 5), so their Pings end before the path forgets them.{low}"
        )
    return Finding(
        Check.PUSH,
        Severity.FAIL,
        "Something on the path cuts a waiting Ping: idle connections are cut after "
        f"{m.survived:.1f}-{m.cut:.1f} s",
        tuple(evidence),
        cause,
        advice,
        data,
    )


def _advice(advised: int, cap: int) -> dict[str, int]:
    """The settings to apply, as data: the path's idle time, and a heartbeat minimum the
    capped heartbeat still fits (natsync refuses a cap below server.heartbeat_min)."""
    if cap < 1:
        return {}
    out = {"server.max_idle_path_seconds": advised}
    if cap < DEFAULT_HEARTBEAT_MIN:
        out["server.heartbeat_min"] = cap
    return out


def _measure_lines(m: CutEvidence) -> list[str]:
    if m.method == "closed":
        return [
            f"the path closed the held Ping itself after {m.cut:.1f} s idle: that is its cut "
            f"(within {m.precision:.2f} s)"
        ]
    answered = sorted(p.idle for p in m.probes if p.outcome == "answered")
    cut = sorted(p.idle for p in m.probes if p.outcome == "cut")
    pings = [p for p in m.probes if p.detail.startswith(HELD_PING)]
    idle = len(m.probes) - len(pings)
    lines = [
        f"{idle} idle probes in {m.rounds} round(s): connections held idle, then asked again"
        + (
            f"; then {len(pings)} held Ping(s) beyond what idle probes can reach "
            f"({', '.join(f'{p.idle:.0f} s: {p.outcome}' for p in pings)})"
            if pings
            else ""
        )
        + f"; {m.seconds:.1f} s in all",
        f"longest idle time that survived: {m.survived:.2f} s; shortest that did not: "
        f"{m.cut:.2f} s"
        + (
            f" (within the stated precision of {m.precision:.2f} s)"
            if m.within
            else f" (wider than the {m.precision:.2f} s aimed at: {m.stopped})"
        ),
    ]
    if answered:
        lines.append("survived: " + ", ".join(f"{t:.2f} s" for t in answered))
    if cut:
        lines.append("cut: " + ", ".join(f"{t:.2f} s" for t in cut))
    closed = [p for p in m.probes if p.outcome == "closed"]
    if closed:
        lines.append(
            f"the far end closed {len(closed)} idle connection(s) itself after "
            f"{min(p.seconds for p in closed):.1f} s (its keep-alive timeout)"
        )
    errors = [p for p in m.probes if p.outcome == "error"]
    if errors:
        lines.append(f"{len(errors)} probe(s) could not start: {errors[0].detail}")
    return lines
