"""Check 8, inside-out extras, run with the deployment's config on the server's side:

* carrier-grade NAT: the ddns sources' verdict (natsync.ddns.agreement); behind another NAT no
  port forward on our router can ever let a phone in;
* the router's port mappings: the ones [portmap] asks for are really there;
* the edge's bridged leg: the backend certificate pinned in [edge] is still the one the server
  presents (a renewed server certificate silently breaks a pinned edge).
"""

from __future__ import annotations

import shlex

from natsync.doctor.evidence import InsideEvidence, MappingEvidence, NatEvidence, PinEvidence
from natsync.doctor.findings import CONFIG_ARG, Check, Finding, Severity, ok


def check_inside(ev: InsideEvidence) -> list[Finding]:
    findings: list[Finding] = []
    if ev.nat is not None:
        findings.extend(check_nat(ev.nat, relayed=ev.tunnel is not None))
    if ev.mappings is not None:
        findings.extend(check_mappings(ev.mappings))
    for pin in ev.pins:
        findings.extend(check_pin(pin))
    if ev.pinholes is not None:
        from natsync.doctor.pinhole import check_pinholes

        findings.extend(check_pinholes(ev.pinholes, ev.host6))
    return findings


def check_nat(ev: NatEvidence, *, relayed: bool = False) -> list[Finding]:
    evidence = (ev.summary, *ev.observations)
    if ev.verdict == "cgnat" and relayed:
        return [
            ok(
                Check.INSIDE,
                "Carrier-grade NAT: phones come in through the relay ([tunnel])",
                *evidence,
                "no port forward can reach this network; the relay check below follows the "
                "path through the relay's tunnel instead",
            )
        ]
    if ev.verdict == "cgnat":
        return [
            Finding(
                Check.INSIDE,
                Severity.FAIL,
                "Carrier-grade NAT: phones cannot reach this network",
                evidence,
                "The router's own outside address is not a public one (or differs from what "
                "the internet sees): there is another NAT beyond it, the ISP's. Port forwards "
                "on your router end at that second NAT, so no phone on the internet can open "
                "a connection in, whatever DNS and the router say.",
                "Ask the ISP for a public IPv4 address (often a setting or a small fee), or "
                "publish over IPv6 ([ddns] families = [6]) if the ISP gives real IPv6, or run "
                "`natsync edge run --config edge.toml` on a host with a public address "
                "(docs/edge.md) and connect to it from inside.",
            )
        ]
    if ev.verdict == "disagree":
        return [
            Finding(
                Check.INSIDE,
                Severity.WARN,
                "The public address sources disagree",
                evidence,
                "Different sources see different public addresses (several uplinks, or a "
                "stale source); DNS may get the wrong one.",
                "Keep only sources that see the outside path phones use: [ddns] sources.",
            )
        ]
    if ev.verdict == "no-address":
        return [
            Finding(
                Check.INSIDE,
                Severity.WARN,
                "No source could tell the public address",
                evidence,
                "Without the current public address the doctor cannot tell whether DNS "
                "points at it.",
                "Configure a source that works here: [ddns] sources, stun_servers or echo_urls "
                f"(`natsync ddns status {CONFIG_ARG}` shows each source's answer).",
            )
        ]
    return [ok(Check.INSIDE, f"Public address {ev.address}: no carrier-grade NAT", *evidence)]


def check_mappings(ev: MappingEvidence) -> list[Finding]:
    if ev.error:
        return [
            Finding(
                Check.INSIDE,
                Severity.WARN,
                "The router's port mappings could not be listed",
                (ev.error,),
                "Without the list the doctor cannot tell whether the router forwards the "
                "ports; if UPnP is off, forwards set by hand are invisible to it.",
                "Check the forwards in the router's own pages, or enable UPnP IGD and run "
                f"`natsync portmap list {CONFIG_ARG}`.",
            )
        ]
    present = set(ev.present)
    missing = [w for w in ev.wanted if not any(_matches(w, p) for p in present)]
    evidence = (
        *(f"wanted: {w}" for w in ev.wanted),
        *(f"router has: {p}" for p in sorted(present)),
    )
    if missing:
        first = missing[0]
        external = first.split("->")[0]
        internal = first.split("->")[1].split("/")[0]
        proto = first.rsplit("/", 1)[-1]
        spec = f"{external}:{internal}/{proto}" if internal != external else f"{external}/{proto}"
        return [
            Finding(
                Check.INSIDE,
                Severity.FAIL,
                "Router port mapping missing: " + ", ".join(missing),
                evidence,
                "The router does not forward these ports to the server: connections from "
                "phones end at the router. Mappings made with UPnP/NAT-PMP/PCP expire unless "
                "renewed, and vanish when the router restarts.",
                f"Map it now: `natsync portmap add {spec} {CONFIG_ARG}`, and keep "
                f"`natsync portmap hold {CONFIG_ARG}` running to renew the leases.",
            )
        ]
    return [ok(Check.INSIDE, "The router forwards the configured ports", *evidence)]


def _parts(text: str) -> tuple[str, str, str]:
    """("443", "8443", "tcp") from "443->8443/tcp" or "443->192.168.1.10:8443/tcp"."""
    external, _, rest = text.partition("->")
    target, _, proto = rest.rpartition("/")
    return external, target.rpartition(":")[2], proto.lower()


def _matches(wanted: str, present: str) -> bool:
    return _parts(wanted) == _parts(present)


def _short(fingerprint: str) -> str:
    return fingerprint.lower().replace("sha256:", "").replace(":", "")


def _trust_command(ev: PinEvidence) -> str:
    name = f" --name {shlex.quote(ev.name)}" if ev.name else ""
    return f"`natsync edge trust-backend {shlex.quote(ev.backend)}{name} {CONFIG_ARG}`"


def check_pin(ev: PinEvidence) -> list[Finding]:
    if ev.connect_error:
        return [
            Finding(
                Check.INSIDE,
                Severity.FAIL,
                f"The edge's backend {ev.backend} does not accept connections",
                (f"[edge] backend = {ev.backend}", f"connecting to it: {ev.connect_error}"),
                "The edge ends the phones' TLS and forwards each request to the server at "
                "[edge] backend; nothing answers there, so every phone gets an error (502) "
                "although the edge itself is up.",
                f"Start the server (`natsync server {CONFIG_ARG}`), or correct [edge] backend to "
                "the address and port it listens on ([server] host and port).",
            )
        ]
    if not ev.pinned and ev.ca_file:
        if ev.ca_verified:
            return [
                ok(
                    Check.INSIDE,
                    f"The edge verifies its backend {ev.backend} with [edge] backend_ca",
                    f"[edge] backend_ca = {ev.ca_file}",
                    f"{ev.backend} presents a certificate for {ev.name or ev.backend} that "
                    "chains to it",
                )
            ]
        return [
            Finding(
                Check.INSIDE,
                Severity.FAIL,
                "The server's certificate does not verify against [edge] backend_ca",
                (f"[edge] backend_ca = {ev.ca_file}", ev.ca_error or "verification failed"),
                "The edge checks the bridged leg (edge → server) against this CA and the "
                "name; it refuses a server whose certificate does not verify, so every phone "
                "gets an error although the server itself is fine.",
                "Point [edge] backend_ca at the CA that issued the server's certificate (and "
                "backend_name at a name in it), or pin the server's certificate instead: "
                + _trust_command(ev)
                + ".",
            )
        ]
    if not ev.pinned:
        return [
            Finding(
                Check.INSIDE,
                Severity.WARN,
                "The edge pins no backend certificate",
                (
                    f"[edge] backend = {ev.backend}",
                    "[edge] backend_pin and backend_ca are empty"
                    + (", insecure_backend = true" if ev.insecure else ""),
                ),
                "The bridged leg (edge → server) is not verified at all: whoever answers at "
                "the backend address gets the phones' passwords.",
                f"Pin the server's certificate: {_trust_command(ev)}.",
            )
        ]
    if ev.error or not ev.presented:
        return [
            Finding(
                Check.INSIDE,
                Severity.WARN,
                "The server's certificate could not be read to compare with the edge's pin",
                (ev.error or "no certificate",),
                "The doctor cannot tell whether the edge would accept the server.",
                "Start the server, then run the doctor again.",
            )
        ]
    if _short(ev.pinned) == _short(ev.presented):
        return [
            ok(
                Check.INSIDE,
                "The edge's pinned backend certificate matches the server's",
                f"pin {ev.pinned}",
                f"{ev.backend} presents {ev.presented}",
            )
        ]
    return [
        Finding(
            Check.INSIDE,
            Severity.FAIL,
            "The edge's pinned backend certificate no longer matches the server's",
            (f"[edge] backend_pin = {ev.pinned}", f"{ev.backend} presents {ev.presented}"),
            "SSL bridging ends the phone's TLS at the edge and opens a second TLS session to "
            "the server, verified against the pinned certificate. The server now presents "
            "another certificate (renewed or re-issued), so the edge refuses the bridged leg "
            "and every phone gets an error although the server itself is fine.",
            f"Re-pin the server's current certificate: {_trust_command(ev)} (it rewrites "
            "[edge] backend_pin), then restart the edge.",
        )
    ]
