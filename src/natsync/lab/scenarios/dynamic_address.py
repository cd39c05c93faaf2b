"""Dynamic address: the ISP changes the router's public address. Without ddns the record stays
on the old address, the phone fails and the doctor says the record is stale; `natsync ddns run`
makes the record follow; a phone that honours the TTL recovers within it, a phone with a sticky
DNS cache (the article's old devices) fails until its cache expires, as the doctor explains."""

from __future__ import annotations

import time

from natsync.lab import topology as t
from natsync.lab.narrate import Narration
from natsync.lab.scenarios._common import doctor_step, sync_step
from natsync.lab.world import MX_NAME, PUBLIC_NAME, TTL, World

#: Seconds the sticky phone keeps an answer whatever its TTL (the article's devices: hours).
STICKY = 8.0
#: Seconds `ddns run` (interval 1 s) may take to publish a change: one interval, one cycle.
DDNS_FOLLOW = 6.0
#: Extra seconds beyond the TTL / the sticky time for the phone to be seen recovering: one
#: failed attempt at the old address (an ARP timeout, about 3 s) and one sync.
MARGIN = 6.0


def _sync_until_ok(world: World, limit: float) -> tuple[float | None, dict[str, object]]:
    started = time.monotonic()
    last: dict[str, object] = {}
    while time.monotonic() - started < limit:
        last = world.phone_sync()
        if last["ok"]:
            return time.monotonic() - started, last
        time.sleep(0.3)
    return None, last


def run(world: World, narr: Narration) -> None:
    lab = world.lab
    world.start_server(
        tls_cert=str(world.data / "tls" / "public.pem"),
        tls_key=str(world.data / "tls" / "public.key"),
    )
    synced = world.phone_sync()
    sync_step(
        narr,
        f"The phone syncs at {t.PUBLIC} ({PUBLIC_NAME}, TTL {TTL} s)",
        synced,
        expect_ok=True,
    )

    lab.set_wan_address(t.PUBLIC_NEXT)
    narr.note(f"the ISP renumbers the router: {t.PUBLIC} → {t.PUBLIC_NEXT}; no ddns running")
    synced = world.phone_sync()
    sync_step(
        narr,
        f"Without ddns, DNS still says {t.PUBLIC}: the phone fails",
        synced,
        expect_ok=False,
    )
    doctor_step(
        narr,
        "stale-record",
        world.doctor_inside(),
        "The doctor (inside, with the config) says the record is stale",
        "names",
        "DNS does not point at the current public address",
        expect_ok=False,
    )

    world.start_ddns()
    changed = time.monotonic()
    try:
        took: float | None = world.wait_record(t.PUBLIC_NEXT, DDNS_FOLLOW)
        world.wait_record(t.PUBLIC_NEXT, DDNS_FOLLOW, name=MX_NAME)
    except Exception:
        took = None
    narr.expect(
        "`natsync ddns run` makes the record follow the new address",
        expect_ok=True,
        seen_ok=took is not None,
        detail=f"{PUBLIC_NAME} → {t.PUBLIC_NEXT} after {took:.1f} s" if took else "not followed",
    )
    after, synced = _sync_until_ok(world, TTL + MARGIN)
    since_change = time.monotonic() - changed
    narr.expect(
        f"A phone that honours the TTL recovers within the TTL ({TTL} s)",
        expect_ok=True,
        seen_ok=after is not None,
        detail=f"synced at {synced['address']} {since_change:.1f} s after the change"
        if after is not None
        else str(synced.get("error")),
    )
    narr.reports["ttl-recovery"] = {"seconds": since_change}

    world.set_phone(sticky=STICKY)
    synced = world.phone_sync()  # the sticky phone learns the current address
    narr.note(f"a phone whose DNS cache keeps answers {STICKY:.0f} s whatever the TTL says")
    lab.set_wan_address(t.PUBLIC)
    narr.note(f"the ISP renumbers again: {t.PUBLIC_NEXT} → {t.PUBLIC}; ddns follows")
    world.wait_record(t.PUBLIC, DDNS_FOLLOW)
    renumbered = time.monotonic()
    synced = world.phone_sync()
    sync_step(
        narr,
        "DNS is right, but the sticky phone still dials the old address and fails",
        synced,
        expect_ok=False,
    )
    doctor_step(
        narr,
        "sticky-cache",
        world.doctor_from_phone(),
        "The doctor, asking the phone's resolver, explains: a cache behind a changed address",
        "names",
        "Stale DNS",
        expect_ok=False,
        cause=True,
    )
    after, synced = _sync_until_ok(world, STICKY + MARGIN)
    narr.expect(
        f"Once its cache expires (sticky {STICKY:.0f} s), the phone syncs again",
        expect_ok=True,
        seen_ok=after is not None,
        detail=f"synced at {synced['address']} {time.monotonic() - renumbered:.1f} s after "
        "the change"
        if after is not None
        else str(synced.get("error")),
    )
    world.stop_ddns()
