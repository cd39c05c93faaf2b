"""Check 6, the Direct Push path: does a waiting Ping survive its whole heartbeat?

Direct Push is one HTTPS request held open for the heartbeat (MS-ASCMD 2.2.1.13) with no byte
moving. Every NAT, firewall and proxy on the path keeps an idle timer per connection; when one
is shorter than the heartbeat it drops the connection silently, and the phone hears of new mail
only at its next retry. The doctor holds a Ping and times when (if) the path cuts it.
"""

from __future__ import annotations

import math

from natsync.doctor.evidence import PushEvidence
from natsync.doctor.findings import Check, Finding, Severity, ok, skip

#: Share of the observed cut time to advise as heartbeat cap: leaves room for the path's
#: timer to start a little before ours, and for the phone's request to arrive late.
CAP_SHARE = 0.8
#: The shortest heartbeat Exchange lets phones ask for (MS-ASCMD 2.2.3.84.1).
EAS_MIN_HEARTBEAT = 60
#: Seconds to add to the heartbeat when advising an idle timeout for the path.
TIMEOUT_MARGIN = 60


def advised_cap(cut_after: float) -> int:
    return max(1, math.floor(cut_after * CAP_SHARE))


def check_push(ev: PushEvidence) -> list[Finding]:
    held = f"asked a Ping with a heartbeat of {ev.heartbeat} s"
    asked = (
        (f"the server's bounds made it {ev.heartbeat} s instead of the {ev.asked} s asked",)
        if ev.asked is not None
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
        cap = advised_cap(ev.seconds)
        cut = (
            f"the connection was closed after {ev.seconds:.1f} s without an answer"
            if ev.outcome == "cut"
            else f"no answer at all after {ev.seconds:.1f} s (the server answers at the heartbeat)"
        )
        low = (
            f" A cap of {cap} s is below the {EAS_MIN_HEARTBEAT} s phones expect: raise the "
            "path's timeout instead."
            if cap < EAS_MIN_HEARTBEAT
            else ""
        )
        return [
            Finding(
                Check.PUSH,
                Severity.FAIL,
                f"Something on the path cuts a waiting Ping after about {ev.seconds:.0f} s",
                (held, *asked, cut, *((ev.detail,) if ev.detail else ())),
                "Direct Push holds one request open for the heartbeat with no byte moving. A "
                "NAT, firewall or proxy between the phone and the server dropped the idle "
                f"connection after about {ev.seconds:.0f} s, before the {ev.heartbeat} s "
                "heartbeat ended: NAT idle timeouts cut Direct Push, and the phone hears of new "
                "mail only at its next retry.",
                "Raise the idle timeout of the device that cuts (the router's or firewall's "
                "TCP established timeout, a proxy's read timeout) to at least "
                f"{ev.heartbeat + TIMEOUT_MARGIN} s, or cap the heartbeat below it: "
                f"server.heartbeat_max = {cap} in natsync.toml (the server then tells phones "
                f"to ask for at most {cap} s).{low}",
            )
        ]
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
