"""Carrier-grade NAT: the ISP gives the router an address from 100.64.0.0/10, behind its own
NAT. No port forward or mapping can bring a connection in; ddns refuses to publish that
address and says why, portmap says mapping is impossible, the doctor fails the deployment with
the reason. The fix is outside the house: a public address (or IPv6) from the ISP."""

from __future__ import annotations

import json
from typing import Any

from natsync.lab import topology as t
from natsync.lab.narrate import Narration
from natsync.lab.scenarios._common import expect_finding
from natsync.lab.world import World

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
    report = world.doctor_inside()
    narr.reports["doctor-cgnat"] = report
    expect_finding(
        narr,
        "The doctor (inside) fails the deployment and says why",
        report,
        "inside",
        "Carrier-grade",
        expect_ok=False,
        cause=True,
    )

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
