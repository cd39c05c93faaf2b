"""Inside-out: the IPv6 pinholes ``[portmap]`` asks for are open, current and held.

From inside the LAN a connection to the host's own IPv6 address never crosses the router's
firewall, so the doctor cannot test a pinhole by connecting. It reads what `natsync run`'s
portmap part recorded (``DATA_DIR/portmap/status.json``: the method, the router's grant, when
it expires) and, for a UPnP IGD:2 pinhole, asks the router about it by its UniqueID
(CheckPinholeWorking, which changes nothing). PCP has no question that does not renew the
mapping, so a PCP pinhole is judged from the record alone, and the finding says so.
"""

from __future__ import annotations

import datetime as dt

from natsync.doctor.evidence import PinholeEvidence, PinholeRecord
from natsync.doctor.findings import CONFIG_ARG, Check, Finding, Severity, ok

_RUN = f"`natsync run {CONFIG_ARG}`"


def _when(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _record_facts(ev: PinholeEvidence, r: PinholeRecord) -> tuple[str, ...]:
    facts = [f"recorded: {r.mapping} via {r.method or ev.way}: {r.state}"]
    if r.detail:
        facts.append(f"the router said: {r.detail}")
    if r.address:
        facts.append(f"opens [{r.address}]")
    if r.expires_at is not None:
        left = r.expires_at - ev.now
        facts.append(
            f"expires {_when(r.expires_at)} (in {left:.0f} s)"
            if left >= 0
            else f"expired {_when(r.expires_at)} ({-left:.0f} s ago)"
        )
    if r.router:
        facts.append(f"the router: {r.router} ({r.router_detail})")
    elif r.router_detail:
        facts.append(f"the router could not be asked: {r.router_detail}")
    elif r.method == "pcp6" and r.state == "open":
        facts.append("PCP cannot be asked about a mapping without renewing it: this is the record")
    if ev.updated is not None:
        facts.append(f"record written {ev.now - ev.updated:.0f} s ago ({ev.status_file})")
    return tuple(facts)


def check_pinholes(ev: PinholeEvidence, host6: tuple[str, ...] | None = None) -> list[Finding]:
    """One finding per wanted pinhole; one for the lot when there is no record at all."""
    if ev.updated is None:
        return [
            Finding(
                Check.INSIDE,
                Severity.WARN,
                "No record of the IPv6 pinholes: nothing holds them",
                (
                    f"[portmap] asks for IPv6 pinholes ({ev.way}) for " + ", ".join(ev.wanted),
                    f"no status at {ev.status_file}",
                ),
                "natsync run's portmap part opens the router's IPv6 firewall, renews the "
                "pinholes before they expire and records them; it has not run here, so IPv6 "
                "phones are most likely dropped by the router's firewall.",
                f"Start the deployment: {_RUN} (or `natsync portmap hold {CONFIG_ARG}`).",
            )
        ]
    by_mapping = {r.mapping: r for r in ev.records}
    findings: list[Finding] = []
    for wanted in ev.wanted:
        record = by_mapping.get(wanted)
        if record is None:
            findings.append(
                Finding(
                    Check.INSIDE,
                    Severity.FAIL,
                    f"IPv6 pinhole for {wanted} missing: not in the portmap part's record",
                    (f"{ev.status_file} lists " + (", ".join(by_mapping) or "nothing"),),
                    "The record is from another configuration: the running portmap part does "
                    "not hold this port open in the router's IPv6 firewall.",
                    f"Restart the deployment so it reads [portmap] again: {_RUN}.",
                )
            )
            continue
        findings.append(_judge(ev, record, host6))
    return findings


#: What a recorded state says by itself: state → (severity, the title after the pinhole's name,
#: why it matters, what to do). The states of a pinhole that is not open are judged first;
#: "renew-failing" (still open) only when its lease, the router and the address are fine.
_BY_STATE: dict[str, tuple[Severity, str, str, str]] = {
    "skipped": (
        Severity.WARN,
        "not opened: the port is translated",
        "IPv6 has no port translation: phones dial the AAAA address at the public port, "
        "so the host itself must listen on it.",
        'Listen on the public port (e.g. [edge] listen = "*:443") and map it as '
        '"443/tcp", or publish no AAAA record ([ddns] families = [4]).',
    ),
    "failed": (
        Severity.FAIL,
        "missing: the router did not open it",
        "The router's IPv6 firewall drops connections from outside to this port: phones "
        "on IPv6 networks cannot connect.",
        "Allow pinholes in the router's settings (UPnP IGD:2 / PCP), set [portmap] ipv6 "
        'to the way the router offers ("pcp6" opens ports below 1024 where UPnP may '
        "not), or open the port in the router's IPv6 firewall by hand.",
    ),
    "removed": (
        Severity.FAIL,
        "missing: removed when natsync run stopped",
        "The portmap part removes its pinholes when it stops; nothing holds the port "
        "open now, so the router's IPv6 firewall drops phones again.",
        f"Start the deployment again: {_RUN}.",
    ),
    "renew-failing": (
        Severity.WARN,
        "open, but its renewal fails",
        "The router refused the last renewal; the pinhole closes when its lease runs out.",
        "See the router's answer above; allow the pinhole in the router's settings, or "
        'choose the other way ([portmap] ipv6 = "pcp6" or "upnp6").',
    ),
}
_BY_STATE["pending"] = _BY_STATE["failed"]
#: The recorded states of a pinhole that is not open.
_NOT_OPEN = frozenset({"skipped", "failed", "pending", "removed"})


def _by_state(title: str, state: str, facts: tuple[str, ...]) -> Finding:
    severity, what, cause, fix = _BY_STATE[state]
    return Finding(Check.INSIDE, severity, f"{title} {what}", facts, cause, fix)


def _judge(ev: PinholeEvidence, r: PinholeRecord, host6: tuple[str, ...] | None) -> Finding:
    facts = _record_facts(ev, r)
    title = f"IPv6 pinhole for {r.mapping}"
    if r.state in _NOT_OPEN:
        return _by_state(title, r.state, facts)
    if r.expires_at is not None and r.expires_at < ev.now:
        return Finding(
            Check.INSIDE,
            Severity.FAIL,
            f"{title} expired: nothing renews it",
            facts,
            "The router grants a pinhole for a limited time and the portmap part renews it "
            "at half that time; the lease ran out, so the part is not running (killed, or "
            "natsync run stopped without removing it).",
            f"Start the deployment: {_RUN}; its portmap part opens the pinhole again.",
        )
    if r.router == "gone":
        renew = f" at its next renewal ({_when(r.renew_at)})" if r.renew_at else ""
        return Finding(
            Check.INSIDE,
            Severity.FAIL,
            f"{title} missing: the router no longer has it",
            facts,
            "The record says open, but the router knows no pinhole of that UniqueID: it "
            "restarted, or the pinhole was removed by hand. Until it is made again the "
            "router's IPv6 firewall drops phones.",
            f"The portmap part makes it again{renew}; to do it now, restart the deployment "
            f"({_RUN}).",
        )
    if host6 is not None and r.address and r.address not in host6:
        return Finding(
            Check.INSIDE,
            Severity.FAIL,
            f"{title} opens an address this host no longer has",
            (*facts, "this host's global IPv6: " + (", ".join(host6) or "none")),
            "The ISP changed the prefix: the pinhole opens the old address, and the new one "
            "is still closed in the router's IPv6 firewall.",
            f"Restart the portmap part so it opens the new address: {_RUN} (then check the "
            "AAAA record follows: `natsync ddns update`).",
        )
    if r.state == "renew-failing":
        return _by_state(title, r.state, facts)
    return ok(Check.INSIDE, f"{title} is open in the router's IPv6 firewall", *facts)
