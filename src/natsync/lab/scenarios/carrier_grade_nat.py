"""Carrier-grade NAT: the ISP gives the router an address from 100.64.0.0/10, behind its own
NAT. No port forward or mapping can bring a connection in; ddns refuses to publish that
address and says why, portmap says mapping is impossible, the doctor fails the deployment with
the reason. Three fixes: a relay on a small public server (`natsync relay`: the home dials out to
it over WireGuard, it forwards the published ports back with PROXY v2, TLS still ends at home);
IPv6, which the carrier does not translate (an AAAA record and a pinhole in the router's IPv6
firewall, held by the portmap part as `natsync run` holds it: ``[portmap] ipv6 = "pcp6"``); and
a public address from the ISP."""

from __future__ import annotations

import json
import time
from typing import Any

from natsync.lab import topology as t
from natsync.lab.narrate import Narration
from natsync.lab.runner import NATSYNC
from natsync.lab.scenarios._common import doctor_step
from natsync.lab.world import MX_NAME, PUBLIC_NAME, World, finding

#: The port phones dial.
HTTPS = 443
#: Unprivileged ports: miniupnpd lets LAN hosts map 1024-65535 to 1024-65535.
MAPPED = "18443:18443/tcp"


def _verdict(world: World) -> dict[str, Any]:
    done = world.lab.natsync("ddns", "status", "--json", "--config", str(world.config))
    if done.returncode != 0:
        return {"verdict": "error", "summary": done.stderr.strip()[-300:]}
    verdict: dict[str, Any] = json.loads(done.stdout)["verdicts"][0]
    return verdict


def _portmap(world: World, action: str) -> tuple[bool, str]:
    done = world.lab.natsync("portmap", action, MAPPED, "--config", str(world.config))
    return done.returncode == 0, (done.stdout + done.stderr).strip()


def run(world: World, narr: Narration) -> None:
    lab = world.lab
    lab.set_wan_address(t.CGNAT)
    narr.note(f"the ISP puts the router behind its own NAT: WAN address {t.CGNAT}")
    verdict = _verdict(world)
    narr.reports["ddns-cgnat"] = verdict
    narr.expect(
        "`natsync ddns status` says plainly that inbound access cannot work",
        expect_ok=False,
        seen_ok=verdict["verdict"] != "cgnat",
        detail=str(verdict.get("summary", "")),
    )
    ok, said = _portmap(world, "add")
    narr.expect(
        "`natsync portmap add` cannot map a port on a carrier's NAT",
        expect_ok=False,
        seen_ok=ok,
        detail=said.splitlines()[-1] if said else "",
    )
    if ok:
        _portmap(world, "remove")
    probe = lab.ns(
        lab.phone,
        "python3",
        "-c",
        f"import socket\nsocket.create_connection(('{t.CGNAT}', 443), timeout=2)",
        check=False,
    )
    narr.expect(
        f"From the internet, {t.CGNAT} cannot be reached at all (shared address space)",
        expect_ok=False,
        seen_ok=probe.returncode == 0,
        detail=probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "connected",
    )
    doctor_step(
        narr,
        "doctor-cgnat",
        world.doctor_inside(),
        "The doctor (inside) fails the deployment and says why",
        "inside",
        "Carrier-grade",
        expect_ok=False,
        cause=True,
    )

    _relay_fix(world, narr)
    _ipv6_fix(world, narr)

    lab.set_wan_address(t.PUBLIC)
    narr.note(f"the ISP gives a public address again: {t.PUBLIC}")
    verdict = _verdict(world)
    narr.expect(
        "With a public address, ddns finds it and agrees",
        expect_ok=True,
        seen_ok=verdict["verdict"] == "agree" and verdict.get("address") == t.PUBLIC,
        detail=str(verdict.get("summary", "")),
    )
    ok, said = _portmap(world, "add")
    narr.expect(
        "…and port mapping works again",
        expect_ok=True,
        seen_ok=ok,
        detail=said.splitlines()[-1] if said else "",
    )
    _portmap(world, "remove")


#: Seconds the phone keeps trying after the tunnel's path is restored. WireGuard re-handshakes
#: on the next packet either side sends (at the latest the home's 25 s keepalive).
TUNNEL_BACK = 40.0
#: The Ping the phone holds through the relay, and when the second phone sends the mail.
RELAY_HEARTBEAT = 20
RELAY_MAIL_AFTER = 2.0


def _through_relay(result: dict[str, Any]) -> bool:
    return bool(result.get("ok")) and result.get("address") == t.VPS


def _relay_fix(world: World, narr: Narration) -> None:
    """Still behind the carrier's NAT: the relay on the VPS, DNS on the VPS, and the phone syncs,
    sends and gets push through it; the tunnel's path is cut and comes back by itself."""
    world.start_relay()
    world.relay_smtp()
    narr.note(
        f"fix: `natsync relay` on a small public server ({t.VPS}); the home dials out to it "
        "over WireGuard; the server takes mail from the relay on the tunnel address "
        "(smtp_relayed_listen, PROXY from the relay only)"
    )
    followed = world.ddns_follow_relay()
    named = {name: world.dig(name) for name in (PUBLIC_NAME, MX_NAME)}
    narr.reports["ddns-relay"] = {k: sorted(v) for k, v in named.items()}
    narr.expect(
        "With the [tunnel] table in the file, `natsync ddns update` (natsync run's ddns part) "
        "publishes the relay's address for the name and the MX host, not the home's",
        expect_ok=True,
        seen_ok=followed.returncode == 0 and all(v == {t.VPS} for v in named.values()),
        detail=f"{named}; {followed.stderr.strip()[-200:]}",
    )
    if not all(v == {t.VPS} for v in named.values()):
        world.point_name(t.VPS)  # the later steps still need DNS on the relay
    synced = world.phone_sync()
    narr.reports["relay-sync"] = synced
    narr.expect(
        "Through the relay, the phone syncs (TLS still ends at home)",
        expect_ok=True,
        seen_ok=_through_relay(synced),
        detail=f"dialled {synced.get('address')}: {synced.get('error', 'synced')}",
    )
    pushed = world.phone_push(RELAY_HEARTBEAT, "through the relay", RELAY_MAIL_AFTER, by_phone=True)
    narr.reports["relay-push"] = pushed
    push = pushed.get("push", {})
    narr.expect(
        "…a second phone sends a mail through the relay, and the first gets it by push",
        expect_ok=True,
        seen_ok=bool(push.get("changed")) and bool(pushed.get("mail", {}).get("ok")),
        detail=f"push after {push.get('seconds', 0):.1f} s" if push else str(pushed)[-200:],
    )
    mailed = world.phone_push(RELAY_HEARTBEAT, "from the internet, via the relay", RELAY_MAIL_AFTER)
    narr.reports["relay-mail"] = mailed
    mail, push = mailed.get("mail", {}), mailed.get("push", {})
    narr.expect(
        "A mail server on the internet delivers to the MX (the relay): the relay passes port 25 "
        "through the tunnel with PROXY v2, the server takes it, the phone gets it by push",
        expect_ok=True,
        seen_ok=bool(mail.get("ok")) and mail.get("address") == t.VPS and bool(push.get("changed")),
        detail=f"delivered to {mail.get('address')}: {mail.get('reply', mail.get('error'))}; "
        + (f"push after {push.get('seconds', 0):.1f} s" if push else str(mailed)[-200:]),
    )
    deployment = world.relay_deployment()
    doctor_step(
        narr,
        "doctor-relay",
        world.doctor_inside(config=deployment),
        "The doctor (inside, with the [tunnel] table) follows the relay path hop by hop",
        "relay",
        expect_ok=True,
    )
    doctor_step(
        narr,
        "doctor-relay-outside",
        world.doctor_from_phone("--relay", t.VPS),
        "From the phone (`--relay 203.0.113.10`): DNS names the relay and TLS answers through it",
        "relay",
        expect_ok=True,
    )
    world.cut_tunnel(True)
    outside = world.doctor_from_phone("--relay", t.VPS)
    narr.reports["doctor-relay-outside-cut"] = outside
    beyond = finding(outside, "relay") or {}
    narr.expect(
        "With the tunnel cut, the doctor from the phone sees the relay answer but nothing behind "
        "it: the tunnel or the home edge (inside-out tells which)",
        expect_ok=True,
        seen_ok=beyond.get("severity") == "fail"
        and beyond.get("data", {}).get("broken") == "tunnel or home edge",
        detail=str(beyond.get("title", "no relay finding")),
    )
    report = world.doctor_inside(config=deployment)
    narr.reports["doctor-relay-cut"] = report
    hops = finding(report, "relay") or {}
    narr.expect(
        "With the tunnel cut, the doctor names the broken hop: the tunnel",
        expect_ok=True,
        seen_ok=hops.get("severity") == "fail" and hops.get("data", {}).get("broken") == "tunnel",
        detail=f"{hops.get('title', 'no relay finding')} — {hops.get('cause', '')}"[:300],
    )
    cut = world.phone_sync()
    narr.expect(
        "The path drops the tunnel's packets: the phone cannot sync",
        expect_ok=False,
        seen_ok=bool(cut.get("ok")),
        detail=cut.get("error", "synced")[-200:],
    )
    world.cut_tunnel(False)
    started = time.monotonic()
    back: dict[str, Any] = {}
    while time.monotonic() - started < TUNNEL_BACK:
        back = world.phone_sync()
        if _through_relay(back):
            break
        time.sleep(1)
    narr.expect(
        "The path carries it again: the tunnel comes back by itself, the phone syncs again",
        expect_ok=True,
        seen_ok=_through_relay(back),
        detail=f"after {time.monotonic() - started:.1f} s: {back.get('error', 'synced')}",
    )
    world.stop_relay()
    world.stop_edge()


def _ipv6_fix(world: World, narr: Narration) -> None:
    """Still behind the carrier's NAT, with IPv6 on the router, the LAN host and the phone: an
    AAAA record, the edge on the LAN host's IPv6 address, and a pinhole for 443."""
    lab = world.lab
    world.point_name(t.PUBLIC)  # the A record is stale: that address is no longer the router's
    updated = world.ddns_update6()
    published = world.aaaa()
    narr.expect(
        "`natsync ddns update` with families = [6] finds the LAN host's global IPv6 address (its "
        "interface, and STUN over IPv6) and publishes it as AAAA",
        expect_ok=True,
        seen_ok=updated.returncode == 0 and published == {t.LAN6_HOST},
        detail=f"AAAA {', '.join(sorted(published)) or 'none'}; {updated.stderr.strip()[-200:]}",
    )
    if published != {t.LAN6_HOST}:  # the later steps still need the record
        world.set_aaaa(t.LAN6_HOST)
    world.start_edge(HTTPS, listen=f"[{t.LAN6_HOST}]:{HTTPS}")
    narr.note(
        f"fix: IPv6. AAAA {t.LAN6_HOST} for the public name, the edge listening on it; the "
        "router's IPv6 firewall drops inbound connections by default"
    )
    blocked = world.phone_sync()
    narr.expect(
        "Without a pinhole the router's IPv6 firewall drops the phone's connection",
        expect_ok=False,
        seen_ok=bool(blocked.get("ok")),
        detail=f"dialled {blocked.get('address')}: {blocked.get('error', 'synced')}"[-200:],
    )
    report = world.doctor_from_phone()
    narr.reports["doctor-ipv6-closed"] = report
    closed = finding(report, "ipv6", f"Port {HTTPS}") or {}
    narr.expect(
        "The doctor (from the phone) checks IPv6 on its own: the port is closed in the router's "
        "IPv6 firewall, fix `natsync portmap add 443/tcp --method pcp6`",
        expect_ok=False,
        seen_ok=not (closed.get("severity") == "fail" and "--method pcp6" in closed.get("fix", "")),
        detail=f"{closed.get('title', 'no ipv6 finding')}: {closed.get('fix', '')}"[:300],
    )
    refused = lab.natsync("portmap", "add", f"{HTTPS}/tcp", "--method", "upnp6")
    narr.expect(
        "A UPnP pinhole for 443 is refused (IGD:2: none below 1024), and natsync says to use PCP",
        expect_ok=False,
        seen_ok=refused.returncode == 0 or "pcp6" not in refused.stderr,
        detail=refused.stderr.strip()[-200:],
    )
    holder = _hold_pinhole(world)
    synced = _sync_within(world, PINHOLE_OPEN)
    narr.expect(
        '`[portmap] ipv6 = "pcp6"` with mappings = ["443/tcp"]: the portmap part (as natsync run '
        "holds it: `natsync portmap hold`) opens the port in the router's IPv6 firewall",
        expect_ok=True,
        seen_ok=bool(synced.get("ok")) and holder.poll() is None,
        detail=(world.dir / "portmap-hold.log").read_text().strip()[-300:],
    )
    narr.reports["ipv6-sync"] = synced
    narr.expect(
        "Through the pinhole, the phone syncs over IPv6",
        expect_ok=True,
        seen_ok=bool(synced.get("ok")) and synced.get("address") == t.LAN6_HOST,
        detail=f"dialled {synced.get('address')}: {synced.get('error', 'synced')}",
    )
    report = world.doctor_from_phone()
    narr.reports["doctor-ipv6-open"] = report
    port = finding(report, "ipv6", f"Port {HTTPS} accepts") or {}
    tls = finding(report, "ipv6", "TLS over IPv6") or {}
    reach = finding(report, "ipv6", "Only phones on IPv6-capable networks") or {}
    narr.expect(
        "…and the doctor's IPv6 path is ok (the port and TLS over IPv6); its verdict: only "
        "phones on IPv6-capable networks reach the server",
        expect_ok=True,
        seen_ok=port.get("severity") == "ok" and tls.get("severity") == "ok" and bool(reach),
        detail="; ".join(f"{f.get('severity')}: {f.get('title')}" for f in (port, tls, reach) if f)[
            :300
        ],
    )
    report = world.doctor_inside()
    narr.reports["doctor-ipv6-inside"] = report
    current = finding(report, "ipv6", "The AAAA record") or {}
    here = finding(report, "ipv6", f"Port {HTTPS} answers over IPv6 here") or {}
    narr.expect(
        "Inside-out, the doctor finds the AAAA record current (this host's global IPv6 address) "
        "and says the pinhole can only be tested from outside",
        expect_ok=True,
        seen_ok=current.get("severity") == "ok" and here.get("severity") == "ok",
        detail="; ".join(str(f.get("title")) for f in (current, here) if f)[:300],
    )
    pushed = world.phone_push(RELAY_HEARTBEAT, "over IPv6", RELAY_MAIL_AFTER, by_phone=True)
    narr.reports["ipv6-push"] = pushed
    push = pushed.get("push", {})
    narr.expect(
        "…and gets a mail by push over IPv6",
        expect_ok=True,
        seen_ok=bool(push.get("changed")),
        detail=f"push after {push.get('seconds', 0):.1f} s" if push else str(pushed)[-200:],
    )
    probe = lab.ns(
        lab.phone, "python3", "-c",
        f"import socket\nsocket.create_connection(('{t.CGNAT}', {HTTPS}), timeout=2)",
        check=False,
    )  # fmt: skip
    narr.expect(
        "…while IPv4 stays unreachable",
        expect_ok=False,
        seen_ok=probe.returncode == 0,
        detail=probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "connected",
    )
    lab.forget(holder)  # SIGTERM: the part removes what it holds, as natsync run's stop does
    gone = lab.ns(
        lab.phone, "python3", "-c",
        f"import socket\nsocket.create_connection(('{t.LAN6_HOST}', {HTTPS}), timeout=2)",
        check=False,
    )  # fmt: skip
    narr.expect(
        "Stopping the portmap part removes the pinhole: the router drops the phone's connection",
        expect_ok=False,
        seen_ok=gone.returncode == 0,
        detail=gone.stderr.strip().splitlines()[-1] if gone.stderr.strip() else "connected",
    )
    world.stop_edge()
    world.set_aaaa(None)


#: Seconds for the portmap part to open the pinhole (one PCP round trip on the LAN; the IPv4
#: mapping it tries first fails at once behind the carrier's NAT).
PINHOLE_OPEN = 20.0


def _hold_pinhole(world: World) -> Any:
    """The deployment's [portmap] with the IPv6 pinhole, held by `natsync portmap hold` (the
    portmap part of natsync run: both families, renewed, removed on stop)."""
    text = world.config.read_text().replace(
        'method = "upnp"\n', f'method = "upnp"\nmappings = ["{HTTPS}/tcp"]\nipv6 = "pcp6"\n'
    )
    path = world.dir / "pinhole.toml"
    path.write_text(text)
    return world.lab.spawn(
        world.lab.lan, *NATSYNC, "portmap", "hold", "--config", str(path),
        log="portmap-hold.log", env=world.lab.env(),
    )  # fmt: skip


def _sync_within(world: World, limit: float) -> dict[str, Any]:
    started = time.monotonic()
    synced: dict[str, Any] = {}
    while time.monotonic() - started < limit:
        synced = world.phone_sync()
        if synced.get("ok"):
            break
        time.sleep(0.5)
    return synced
