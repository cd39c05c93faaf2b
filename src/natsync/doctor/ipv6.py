"""The IPv6 path on its own, and which phones can reach the server.

IPv6 is not translated: the phone dials the server's own global address (the AAAA record), and
what stands in the way is the router's IPv6 firewall, which drops inbound connections unless a
pinhole is open for the port (docs/ipv6.md). Behind carrier-grade NAT it is often the only way
in, so it is checked apart from IPv4: the AAAA record is there and names this host's current
address (inside-out runs), the port answers over IPv6, TLS works over IPv6; then one verdict
says which phones reach the server: those on IPv6-capable networks, those on IPv4-only ones,
both, or none.

From inside the LAN a connection to the host's own address never crosses the router's
firewall, so only a run from outside (a phone's network with IPv6) tests the pinhole; an
inside-out run says so and adds what the router's UPnP firewall service reports.
"""

from __future__ import annotations

from natsync.doctor.evidence import Connect, Ipv6Evidence
from natsync.doctor.findings import CONFIG_ARG, Check, Finding, Severity, ok, skip

_UPDATE = f"`natsync ddns update {CONFIG_ARG}`"


def _describe(c: Connect) -> str:
    if c.ok:
        return f"[{c.address}]:{c.port} connected in {c.seconds * 1000:.0f} ms"
    return f"[{c.address}]:{c.port} {c.error} after {c.seconds:.1f} s"


def _local(ev: Ipv6Evidence, c: Connect) -> bool:
    """A connection to this host's own address: it never crossed the router's firewall."""
    return ev.host6 is not None and c.address in ev.host6


def check_ipv6(ev: Ipv6Evidence) -> list[Finding]:
    findings = _record(ev)
    port, reach6 = _port(ev)
    findings.extend(port)
    findings.extend(_tls(ev))
    findings.append(_verdict(ev, reach6))
    return findings


def _record(ev: Ipv6Evidence) -> list[Finding]:
    """AAAA present, and (inside-out) naming an address this host has now."""
    if not ev.aaaa:
        if ev.host6:
            return [
                Finding(
                    Check.IPV6,
                    Severity.WARN,
                    f"{ev.name} has no AAAA record, although this host has IPv6",
                    (f"this host's global IPv6: {', '.join(ev.host6)}",),
                    "Phones on IPv6 networks (most mobile networks) could reach this host "
                    "directly over IPv6 (no NAT, no carrier-grade NAT), but DNS does not say "
                    "where.",
                    f"Publish it: [ddns] families = [4, 6], then {_UPDATE}; and open the "
                    f"port in the router's IPv6 firewall: `natsync portmap add {ev.port}/tcp "
                    f"--method pcp6 {CONFIG_ARG}`.",
                )
            ]
        return []  # the names check says so; the verdict below counts it
    if ev.host6 is None:
        return [ok(Check.IPV6, f"{ev.name} has an AAAA record", f"AAAA: {', '.join(ev.aaaa)}")]
    stale = [a for a in ev.aaaa if a not in ev.host6]
    if stale:
        return [
            Finding(
                Check.IPV6,
                Severity.FAIL,
                f"The AAAA record of {ev.name} is not this host's current IPv6 address",
                (
                    f"AAAA: {', '.join(ev.aaaa)}",
                    "this host's global IPv6: " + (", ".join(ev.host6) or "none"),
                ),
                "IPv6 has no NAT: the AAAA record must name the host's own global address. "
                "The ISP changed the prefix (or the host its address), so IPv6 phones dial an "
                "address that is not this host's.",
                f"Update DNS: {_UPDATE} (keep `natsync ddns run` going with [ddns] families = "
                "[4, 6] so it follows the prefix).",
            )
        ]
    return [
        ok(
            Check.IPV6,
            f"The AAAA record of {ev.name} names this host's current IPv6 address",
            f"AAAA: {', '.join(ev.aaaa)}",
            f"this host's global IPv6: {', '.join(ev.host6)}",
        )
    ]


def _port(ev: Ipv6Evidence) -> tuple[list[Finding], bool | None]:
    """Findings about the port over IPv6, and whether a phone's IPv6 connection gets through
    (None: not testable from here)."""
    if not ev.over6:
        return [], False if not ev.aaaa else None
    evidence = tuple(_describe(c) for c in ev.over6)
    good = [c for c in ev.over6 if c.ok]
    if good and all(_local(ev, c) for c in good):
        note = (
            f"from inside, the connection to this host's own address does not cross the "
            f"router's IPv6 firewall: only a run from outside (a phone's network with IPv6, "
            f"natsync doctor https://{ev.name}) tests the pinhole"
        )
        extra = (f"the router's IPv6 firewall (UPnP): {ev.firewall}",) if ev.firewall else ()
        return [
            ok(Check.IPV6, f"Port {ev.port} answers over IPv6 here", *evidence, note, *extra)
        ], None
    if good:
        return [ok(Check.IPV6, f"Port {ev.port} accepts connections over IPv6", *evidence)], True
    errors = {c.error for c in ev.over6}
    if errors <= {"unreachable"}:
        return [
            skip(
                Check.IPV6,
                f"Port {ev.port} over IPv6 not tested",
                "this network has no route to IPv6 addresses; run the doctor from a network "
                "with IPv6 (most mobile networks) to test the IPv6 path",
            )
        ], None
    if "refused" in errors:
        return [
            Finding(
                Check.IPV6,
                Severity.FAIL,
                f"Nothing listens on port {ev.port} over IPv6",
                evidence,
                "The address answered, but refused the connection: the firewall let it through "
                "(or there is none), and nothing on the host listens on IPv6 at that port.",
                'Listen on both families: [edge] listen = "*:'
                f'{ev.port}" (or the host\'s IPv6 address, "[{ev.aaaa[0]}]:{ev.port}"), '
                "then restart the edge.",
            )
        ], False
    return [
        Finding(
            Check.IPV6,
            Severity.FAIL,
            f"Port {ev.port} is closed in the router's IPv6 firewall",
            evidence,
            "IPv6 is not translated: the phone dials the server's own address, and the "
            "router's IPv6 firewall drops connections from outside unless a pinhole lets "
            f"port {ev.port} in (a timeout, not a refusal: the packets are dropped on the way).",
            f"Open {ev.port} in the router's IPv6 firewall: `natsync portmap add {ev.port}/tcp "
            f"--method pcp6 {CONFIG_ARG}` (UPnP routers: --method upnp6, for ports from 1024; "
            f"keep `natsync portmap hold --method pcp6 {CONFIG_ARG}` running to renew it), or "
            "open it in the router's own pages.",
        )
    ], False


def _tls(ev: Ipv6Evidence) -> list[Finding]:
    tls = ev.tls6
    if tls is None:
        return []
    where = f"[{tls.address}]:{tls.port}"
    if tls.verified:
        return [
            ok(
                Check.IPV6,
                f"TLS over IPv6 works at {where}",
                f"verified for {tls.server_name or tls.address} by {tls.trust}",
                f"{tls.protocol} {tls.cipher}".strip(),
            )
        ]
    seen = tls.verify_message or tls.handshake_error or "the handshake failed"
    return [
        Finding(
            Check.IPV6,
            Severity.FAIL,
            f"TLS over IPv6 fails at {where}",
            (seen,),
            "The port answers over IPv6 but the phone refuses the TLS there: the IPv6 "
            "listener serves another certificate or another service than the IPv4 one.",
            "Serve the same certificate on both families: one edge listener on "
            '[edge] listen = "*:443" (see the tls check for what the certificate must name).',
        )
    ]


def _verdict(ev: Ipv6Evidence, reach6: bool | None) -> Finding:
    """Which phones reach the server: IPv6-capable networks, IPv4-only ones, both, none."""
    if reach6 and ev.tls6 is not None and not ev.tls6.verified:
        reach6 = False
    reach4: bool | None = any(c.ok for c in ev.over4) if ev.a else False
    facts = (
        "IPv4 (A " + (", ".join(ev.a) or "none") + "): " + _word(reach4),
        "IPv6 (AAAA " + (", ".join(ev.aaaa) or "none") + "): " + _word(reach6),
    )
    data = {"reach": {"ipv4": reach4, "ipv6": reach6}}
    if reach4 and reach6:
        return Finding(
            Check.IPV6,
            Severity.OK,
            "Phones on every network can reach the server (IPv4 and IPv6)",
            facts,
            data=data,
        )
    if reach6 and not reach4:
        return Finding(
            Check.IPV6,
            Severity.WARN,
            "Only phones on IPv6-capable networks can reach the server",
            facts,
            "Most mobile networks give phones IPv6, but many Wi-Fi networks (hotels, offices, "
            "older home routers) are IPv4-only: phones there cannot connect.",
            "For IPv4-only networks, reach the server through a relay on a small public "
            "server (natsync relay init, docs/relay.md), or ask the ISP for a public IPv4 "
            "address.",
            data,
        )
    if reach4 and reach6 is False and ev.aaaa:
        return Finding(
            Check.IPV6,
            Severity.WARN,
            "Only phones on IPv4 networks can reach the server; the AAAA record leads nowhere",
            facts,
            "Phones with IPv6 try the AAAA address first and fall back to IPv4 after a delay "
            "(happy eyeballs), on every connection; IPv6-only networks without NAT64 cannot "
            "connect at all.",
            "Open the IPv6 path (the findings above say how), or stop publishing the AAAA "
            f"record: [ddns] families = [4], then {_UPDATE}.",
            data,
        )
    if reach4:
        return Finding(
            Check.IPV6,
            Severity.OK,
            "Phones reach the server over IPv4"
            + ("" if reach6 is None and ev.aaaa else " (IPv6-only networks through NAT64)"),
            facts,
            data=data,
        )
    if reach6 is None and ev.aaaa:
        return Finding(
            Check.IPV6,
            Severity.SKIP,
            "Which phones can reach the server: IPv6 not testable from here",
            facts,
            "IPv4 does not reach the server; whether IPv6 phones do can only be seen from a "
            "network with IPv6 outside the router.",
            data=data,
        )
    return Finding(
        Check.IPV6,
        Severity.FAIL,
        "No phone can reach the server, on IPv4 or on IPv6",
        facts,
        "Neither address family leads to the server: phones on every network fail to connect.",
        "Behind carrier-grade NAT, open the IPv6 path (an AAAA record and a pinhole: "
        f"`natsync portmap add {ev.port}/tcp --method pcp6 {CONFIG_ARG}`) for IPv6 networks, "
        "and a relay (natsync relay init, docs/relay.md) for IPv4-only ones.",
        data,
    )


def _word(reach: bool | None) -> str:
    if reach is None:
        return "not testable from here"
    return "reaches the server" if reach else "does not reach the server"
