"""The relay path, hop by hop: DNS → relay → tunnel → home edge → server.

Behind carrier-grade NAT the home is reached through a relay on a small public server
(docs/relay.md): DNS names the relay, the relay forwards the port through a WireGuard tunnel the
home dials out, the home edge's relayed listener ends TLS and bridges to the server. When a
phone cannot connect, each hop looks the same from the phone (the relay accepts the connection,
then nothing comes back); from inside, with the deployment's ``[tunnel]`` table, each hop is
tested on its own and the first broken one is named, with its fix.
"""

from __future__ import annotations

from natsync.doctor.evidence import Connect, RelayEvidence
from natsync.doctor.findings import CONFIG_ARG, Check, Finding, Severity

#: WireGuard re-handshakes every 2 minutes while packets flow (REKEY_AFTER_TIME, 120 s) and the
#: home's keepalive keeps them flowing; a latest handshake older than this (REJECT_AFTER_TIME,
#: 180 s, plus a keepalive's margin) means the relay has not answered for a while.
HANDSHAKE_STALE = 210.0

HOPS = ("DNS", "relay", "tunnel", "home edge", "server")


def handshake_age(wg_output: str, now: float) -> float | None:
    """Seconds since the latest handshake, from `wg show IFACE latest-handshakes` (one
    ``<public key>\t<unix time>`` line a peer; 0: never). None when no peer ever shook hands."""
    latest = 0
    for line in wg_output.splitlines():
        fields = line.split()
        if len(fields) == 2 and fields[1].isascii() and fields[1].isdigit():
            latest = max(latest, int(fields[1]))
    if latest == 0:
        return None
    return max(0.0, now - latest)


def _connect(c: Connect) -> str:
    host = f"[{c.address}]" if ":" in c.address else c.address
    if c.ok:
        return f"{host}:{c.port} connected in {c.seconds * 1000:.0f} ms"
    return f"{host}:{c.port} {c.error} after {c.seconds:.1f} s"


def _hop_line(states: dict[str, bool | None]) -> str:
    marks = {True: "ok", False: "BROKEN", None: "not tested"}
    return " → ".join(f"{hop} {marks[states.get(hop)]}" for hop in HOPS)


def check_relay(ev: RelayEvidence) -> list[Finding]:
    """One finding: the path whole (ok), or the first broken hop (fail) with its fix."""
    states: dict[str, bool | None] = {}
    evidence: list[str] = []
    broken: tuple[str, str, str] | None = None  # (hop, cause, fix)

    # DNS: the public name must lead to the relay, not to the home's (unreachable) address.
    relay_set = set(ev.relay_addresses)
    published = set(ev.published)
    evidence.append(
        f"{ev.name} resolves to {', '.join(ev.published) or 'nothing'}; the relay is "
        f"{', '.join(ev.relay_addresses) or 'unknown'}"
    )
    if ev.error:
        evidence.append(ev.error)
    states["DNS"] = bool(published) and published <= relay_set
    if ev.ddns_relay is not None:
        evidence.append(
            "[ddns] publishes the relay's address (source relay)"
            if ev.ddns_relay
            else "[ddns] publishes the home's own address (its sources have no relay)"
        )
    if not states["DNS"]:
        where = ", ".join(ev.relay_addresses) or "the relay's public address"
        if ev.ddns_relay is False:
            fix = (
                f"Let the DNS follower publish the relay's address: in [ddns] write sources = "
                f'["relay"] (the default when the file has a [tunnel] table and no sources), '
                f"and natsync run publishes {where} for {ev.name}."
            )
        elif ev.ddns_relay:
            fix = (
                f"[ddns] already follows the relay: is natsync run's ddns part running? "
                f"`natsync ddns update {CONFIG_ARG}` publishes {where} now, and `natsync ddns "
                "status` says why it did not."
            )
        else:
            fix = (
                f"Point the records of {ev.name} at {where}: let natsync publish them ([ddns] "
                'with sources = ["relay"], docs/relay.md), or a static record at the DNS '
                "provider."
            )
        broken = (
            "DNS",
            "Phones dial what DNS gives; behind carrier-grade NAT only the relay can be "
            "reached, so every address of the name must be the relay's.",
            fix,
        )
    # The relay: its public port answers.
    if ev.relay_port is not None:
        evidence.append(f"the relay's public port: {_connect(ev.relay_port)}")
        states["relay"] = ev.relay_port.ok
        if not ev.relay_port.ok and broken is None:
            broken = (
                "relay",
                "The relay does not accept connections on the phones' port: it is not running, "
                "or the VPS's firewall drops the port.",
                "On the VPS: `natsync relay run --config relay.toml` (a service of its own), and "
                f"open TCP {ev.relay_port.port} and 25 and UDP of the tunnel in its firewall.",
            )
    # The tunnel: WireGuard's latest handshake, and the relay answering through it.
    tunnel = ev.tunnel
    if tunnel is not None:
        if tunnel.wg_error:
            evidence.append(f"wg show {tunnel.interface}: {tunnel.wg_error}")
        elif tunnel.handshake_age is None:
            evidence.append(f"wg show {tunnel.interface}: no handshake with the relay yet")
        else:
            evidence.append(
                f"wg show {tunnel.interface}: latest handshake {tunnel.handshake_age:.0f} s ago"
            )
        if tunnel.relay_answer is not None:
            answer = tunnel.relay_answer
            answered = answer.ok or answer.error == "refused"
            evidence.append(
                f"the relay's tunnel address {tunnel.relay_address}: "
                + ("answers" if answered else "no answer")
                + f" ({_connect(answer)})"
            )
        else:
            answered = False
        fresh = tunnel.handshake_age is not None and tunnel.handshake_age <= HANDSHAKE_STALE
        states["tunnel"] = not tunnel.wg_error and answered
        if not states["tunnel"] and broken is None:
            if tunnel.wg_error:
                cause = (
                    "The home's end of the tunnel is not up: natsync relay dial is not "
                    "running (or cannot start wireguard-go)."
                )
                fix = f"Start it: `natsync relay dial {CONFIG_ARG}` (a service of its own)."
            else:
                cause = (
                    "The tunnel to the relay carries nothing: the relay does not answer at its "
                    f"tunnel address {tunnel.relay_address}"
                    + (
                        " (the latest handshake is recent, so the path dropped it just now)"
                        if fresh
                        else ", and WireGuard has had no handshake for a while"
                    )
                    + ". The path between home and relay drops the tunnel's UDP (a router, "
                    "the carrier), the relay is down, or the keys do not match."
                )
                fix = (
                    f"Check that UDP to {tunnel.relay_endpoint} leaves the home (router "
                    "firewall) and that natsync relay run runs on the VPS; natsync relay "
                    "dial re-handshakes by itself once packets pass. After new keys, paste "
                    "the home's part of natsync relay init again."
                )
            broken = ("tunnel", cause, fix)
    # From outside: a TLS handshake through the relay answers for the hops behind it at once.
    if tunnel is None and ev.through is not None:
        behind = not ev.through
        evidence.append(
            "a TLS handshake through the relay: " + ("completed" if behind else ev.through)
        )
        states["tunnel"] = states["home edge"] = True if behind else None
        if not behind:
            states["tunnel"] = False
            if broken is None:
                broken = (
                    "tunnel or home edge",
                    "The relay accepts the connection but no TLS handshake comes back through "
                    "it: the tunnel to the home is down, or the home edge's relayed listener is "
                    "not running. From outside the two look alike.",
                    "Run the doctor at home with the deployment's file, whose [tunnel] table "
                    f"lets it test each hop: `natsync doctor {CONFIG_ARG}`.",
                )
    # The home edge's relayed listener.
    if ev.edge is not None:
        evidence.append(f"the edge's relayed listener: {_connect(ev.edge)}")
        states["home edge"] = ev.edge.ok
        if not ev.edge.ok and broken is None:
            broken = (
                "home edge",
                "The relay forwards through the tunnel to the edge's relayed listener, and "
                "nothing listens there.",
                f"Start the edge (`natsync edge run {CONFIG_ARG}`) with [edge] relayed_listen "
                "on the tunnel address and relayed_from naming the relay's tunnel address.",
            )
    # The server behind the edge.
    if ev.servers:
        evidence.extend(f"the server: {_connect(c)}" for c in ev.servers)
        states["server"] = all(c.ok for c in ev.servers)
        if not states["server"] and broken is None:
            broken = (
                "server",
                "The edge is reached through the relay, but the server behind it does not "
                "accept connections: phones get 502.",
                f"Start the server (`natsync server {CONFIG_ARG}`).",
            )
    evidence.insert(0, _hop_line(states))
    data = {"hops": {hop: states.get(hop) for hop in HOPS}}
    if broken is None:
        return [
            Finding(
                Check.RELAY,
                Severity.OK,
                "The relay path works: DNS → relay → tunnel → home edge → server",
                tuple(evidence),
                data={**data, "broken": ""},
            )
        ]
    hop, cause, fix = broken
    return [
        Finding(
            Check.RELAY,
            Severity.FAIL,
            f"The relay path is broken at the {hop}",  # "tunnel or home edge" from outside
            tuple(evidence),
            cause,
            fix,
            {**data, "broken": hop},
        )
    ]
