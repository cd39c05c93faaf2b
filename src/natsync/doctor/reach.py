"""Check 2, reachability: does anything accept a TCP connection at each address the phone gets?

Behind NAT a closed port is almost always the port forward: the router has no rule sending
443 (or 25) to the server, or the server behind it is not running. From inside the LAN there
is one more trap, hairpin NAT: many routers do not loop a connection to their own public
address back inside, so the test fails there while phones outside connect fine.
"""

from __future__ import annotations

from natsync.doctor.evidence import Connect, ReachEvidence
from natsync.doctor.findings import CONFIG_ARG, Check, Finding, Severity, ok, skip

SMTP_PORT = 25

_WHY = {
    "refused": "the address answered but refused the connection: nothing listens on that port",
    "timeout": "no answer at all: a firewall drops the packets, or the address is not yours",
    "unreachable": "there is no route to that address from here",
}


def _describe(c: Connect) -> str:
    if c.ok:
        return f"{c.address} port {c.port}: connected in {c.seconds * 1000:.0f} ms"
    return f"{c.address} port {c.port}: {c.error} after {c.seconds:.1f} s"


def check_reach(ev: ReachEvidence) -> list[Finding]:
    findings: list[Finding] = []
    if not ev.https:
        findings.append(skip(Check.REACH, "HTTPS port", "no address to connect to"))
    else:
        findings.extend(_port(ev, ev.https, "HTTPS"))
    if ev.smtp:
        findings.extend(_port(ev, ev.smtp, "SMTP"))
    return findings


def _port(ev: ReachEvidence, attempts: tuple[Connect, ...], what: str) -> list[Finding]:
    port = attempts[0].port
    good = [c for c in attempts if c.ok]
    bad = [c for c in attempts if not c.ok]
    evidence = tuple(_describe(c) for c in attempts)
    if not bad:
        return [ok(Check.REACH, f"{what} port {port} accepts connections", *evidence)]
    is_smtp = what == "SMTP"
    if is_smtp:
        forward = f"{port}/tcp"
    elif ev.server_port:
        forward = f"{port}:{ev.server_port}/tcp" if ev.server_port != port else f"{port}/tcp"
    else:
        forward = f"{port}:<server port>/tcp"
    if good:
        return [
            Finding(
                Check.REACH,
                Severity.WARN,
                f"{what} port {port} is reachable at only some addresses",
                evidence,
                "Phones pick one of the addresses (happy eyeballs prefers IPv6); those that "
                "land on the dead one wait, retry or fail.",
                "Fix the path to the dead address, or stop publishing it: [ddns] families "
                f"(only the families that work), then `natsync ddns update {CONFIG_ARG}`.",
            )
        ]
    reasons = sorted({c.error for c in bad})
    why = "; ".join(_WHY.get(r, r) for r in reasons)
    hairpin = ev.inside and any(c.address in ev.public for c in bad)
    if hairpin:
        cause = (
            f"{why}. You are testing from inside the network the server sits in, at the "
            "router's own public address: many routers do not loop such a connection back "
            "inside (hairpin NAT), so this may fail here while phones outside connect fine."
        )
        fix = (
            "Use split-horizon DNS (inside, the name resolves to the server's private "
            "address), or turn on the router's hairpin / NAT loopback; run the doctor from "
            "outside (mobile data) to test the port forward itself."
        )
    elif is_smtp:
        cause = (
            f"{why}. Other mail servers deliver to port 25 of the MX target; if it is closed, "
            "mail for your users bounces or waits in their queues."
        )
        fix = (
            f"Forward port 25 to the server: `natsync portmap add 25/tcp {CONFIG_ARG}` (or a "
            "DNAT rule on the router). Many residential ISPs block "
            "inbound 25: then use a relay MX."
        )
    else:
        cause = (
            f"{why}. Behind NAT this is the port forward: the router has no rule sending "
            f"port {port} to the server, or the server behind it is not running."
        )
        fix = (
            f"Start the server (`natsync server {CONFIG_ARG}`, or `natsync up`) and "
            f"forward the port: `natsync portmap add {forward} {CONFIG_ARG}` "
            "(or a DNAT rule on the router)"
            + (
                "; <server port> is the port the server listens on ([server] port)."
                if not ev.server_port
                else "."
            )
        )
    severity = Severity.WARN if is_smtp else Severity.FAIL
    return [
        Finding(Check.REACH, severity, f"{what} port {port} is unreachable", evidence, cause, fix)
    ]
