"""From scratch: nothing but `natsync init` (flags) and `natsync run` on the server. The router
mapping is made through miniupnpd, the public name kept in BIND by RFC 2136, the certificate
issued by pebble (`auto`: TLS-ALPN-01 on the edge through the router's mapping of 443, as
the router mapped 80 and 443); the phone on the internet provisions and gets a
mail by push. The ISP renumbers the router: the record follows and the self-check runs again;
the phone syncs again. A renewal while the phone holds a Ping does not cut it."""

from __future__ import annotations

import secrets
import signal
import threading
import time
from pathlib import Path
from typing import Any

from natsync.lab import topology as t
from natsync.lab.errors import LabError
from natsync.lab.narrate import Narration
from natsync.lab.runner import NATSYNC
from natsync.lab.scenarios._common import stop_step, sync_step
from natsync.lab.world import (
    ACME_DIRECTORY,
    ACME_TIMEOUT,
    EMAIL,
    MX_NAME,
    PASSWORD,
    PUBLIC_NAME,
    TTL,
    USER,
    ZONE,
    World,
)

#: Seconds `natsync run` may take until every part serves and the first certificate is in.
START = ACME_TIMEOUT
#: Seconds the ddns part (1 s interval) may take to publish a new address.
FOLLOW = 15.0
#: The phone's Ping: Exchange's smallest heartbeat (the server's default minimum).
HEARTBEAT = 60
#: Seconds into the held Ping the mail arrives (after the renewal, in the last step).
MAIL_AFTER = 3.0
RENEWAL_MAIL_AFTER = 20.0


def _wait_log(log: Path, needle: str, limit: float, after: int = 0) -> str | None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")[after:]
        if needle in text:
            return text
        time.sleep(0.2)
    return None


def _phone_until_ok(world: World, root: Path, limit: float) -> dict[str, Any]:
    deadline = time.monotonic() + limit
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        last = world.phone_sync(ca_file=root)
        if last["ok"]:
            return last
        time.sleep(0.5)
    return last


def run(world: World, narr: Narration) -> None:
    lab = world.lab
    world.stop_server()
    lab.set_forwards(())  # nothing forwarded by hand: the router mapping is natsync's
    lab.set_privileged_mappings(True)  # a router that lets UPnP map 25/80/443
    home = world.dir / "from-scratch"
    home.mkdir(exist_ok=True)
    config = home / "natsync.toml"
    made = lab.natsync(
        "init", PUBLIC_NAME, "-o", str(config), "--force", "--data-dir", str(home / "data"),
        "-y", "--cert", "acme", "--acme-directory", ACME_DIRECTORY, "--acme-ca",
        str(world.pebble_tls_ca), "--email", f"admin@{ZONE}", "--domain", ZONE,
        "--dns-server", f"{t.INET}:53", "--dns-zone", ZONE, "--tsig-key",
        str(world.bind / "ddns.key"), "--dns-name", MX_NAME, "--dns-ttl", str(TTL),
        "--dns-interval", "1", "--router", t.LAN_ROUTER, timeout=90,
    )  # fmt: skip
    narr.expect(
        "`natsync init` detects the router and writes the file",
        expect_ok=True,
        seen_ok=made.returncode == 0 and "router mapping : " in made.stdout,
        detail=" / ".join(
            line.strip() for line in made.stdout.splitlines() if line.startswith("  ")
        )[:400]
        or made.stderr[-400:],
    )
    if made.returncode != 0:
        return
    lab.natsync(
        "user", "add", USER, "--email", EMAIL, "--password", PASSWORD,
        "--data-dir", str(home / "data"), check=True,
    )  # fmt: skip
    checked = lab.natsync("check", "-c", str(config))
    narr.expect(
        "`natsync check` accepts it",
        expect_ok=True,
        seen_ok=checked.returncode == 0,
        detail=(checked.stdout + checked.stderr).strip()[-400:],
    )
    log = world.dir / "from-scratch.log"
    proc = lab.spawn(
        lab.lan, *NATSYNC, "run", "-c", str(config), log="from-scratch.log", env=lab.env()
    )
    root: Path | None = None
    saved_ca = world.ca_file
    try:
        started = _wait_log(log, "cert: issued", START)
        narr.expect(
            "`natsync run`: every part serves; pebble issues the certificate through the "
            "router's mappings (auto picks the challenge from the router's answers)",
            expect_ok=True,
            seen_ok=started is not None,
            detail=_lines(log, ("every part serves", "ordering a certificate", "cert: issued")),
        )
        if started is None:
            return
        mapped = lab.ns(lab.router, "nft", "list", "table", "inet", "miniupnpd").stdout
        narr.expect(
            "The router's mappings (443, 25, 80) were made through UPnP/NAT-PMP",
            expect_ok=True,
            seen_ok=all(f"dport {p} " in mapped for p in (443, 25, 80)),
            detail=" ".join(line.strip() for line in mapped.splitlines() if "dnat" in line)[:400],
        )
        root = world.pebble_root()
        world.ca_file = root  # the phone trusts the public CA (pebble's root), nothing else
        subject = f"from scratch {secrets.token_hex(3)}"
        pushed = world.phone_push(HEARTBEAT, subject, MAIL_AFTER)
        push = pushed.get("push", {})
        narr.expect(
            "The phone provisions, a mail sent by SMTP from the internet reaches it by push",
            expect_ok=True,
            seen_ok=bool(push.get("changed")),
            detail=push.get("error") or pushed.get("error", "") or f"pushed: {push}",
        )

        mark = len(log.read_text(errors="replace"))
        lab.set_wan_address(t.PUBLIC_NEXT)
        narr.note(f"the ISP renumbers the router: {t.PUBLIC} → {t.PUBLIC_NEXT}")
        try:
            took: float | None = world.wait_record(t.PUBLIC_NEXT, FOLLOW)
        except LabError:
            took = None
        narr.expect(
            "The record follows the new address (the ddns part of natsync run)",
            expect_ok=True,
            seen_ok=took is not None,
            detail=f"{PUBLIC_NAME} → {world.dig()}" + (f" after {took:.1f} s" if took else ""),
        )
        rechecked = _wait_log(log, "self-check (after address-changed)", FOLLOW, mark)
        narr.expect(
            "The self-check runs again after the address change",
            expect_ok=True,
            seen_ok=rechecked is not None,
            detail=_lines(log, ("self-check",), after=mark),
        )
        synced = _phone_until_ok(world, root, TTL + FOLLOW)
        sync_step(
            narr,
            f"The phone syncs again at {t.PUBLIC_NEXT} (the mapping follows too)",
            synced,
            expect_ok=True,
        )

        mark = len(log.read_text(errors="replace"))
        subject = f"after renewal {secrets.token_hex(3)}"
        result: dict[str, Any] = {}

        def hold() -> None:
            result.update(world.phone_push(HEARTBEAT, subject, RENEWAL_MAIL_AFTER))

        holder = threading.Thread(target=hold, name="phone-ping")
        holder.start()
        time.sleep(3.0)  # the Ping is held by now
        proc.send_signal(signal.SIGUSR1)  # renew now
        renewed = _wait_log(log, "connection(s) kept", RENEWAL_MAIL_AFTER, mark)
        holder.join(HEARTBEAT + RENEWAL_MAIL_AFTER + 30)
        push = result.get("push", {})
        narr.expect(
            "The certificate is renewed while the phone holds a Ping; the Ping is not cut and "
            "brings the next mail",
            expect_ok=True,
            seen_ok=renewed is not None and bool(push.get("changed")) and push.get("pings") == 1,
            detail=_lines(log, ("cert: issued", "connection(s) kept"), after=mark)
            + f" / push: {push or result.get('error', '')}",
        )
    finally:
        world.ca_file = saved_ca
        stop_step(
            narr,
            lab,
            proc,
            "SIGTERM stops natsync run cleanly (mappings removed)",
            lambda code: _lines(log, ("stopped", "removed")),
        )
        lab.set_privileged_mappings(False)


def _lines(log: Path, needles: tuple[str, ...], after: int = 0, limit: int = 600) -> str:
    text = log.read_text(errors="replace")[after:]
    found = [line[25:] for line in text.splitlines() if any(n in line for n in needles)]
    return " / ".join(found)[-limit:]
