"""Hairpin NAT: a phone on the LAN is given the public address by DNS, but the router forwards
only what arrives from the internet, so the phone reaches nothing; the doctor, run inside, says
so; a hairpin rule on the router, or split-horizon DNS (the LAN's resolver answers the private
address for the public name), fixes it."""

from __future__ import annotations

from natsync.lab import topology as t
from natsync.lab.narrate import Narration
from natsync.lab.scenarios._common import doctor_step, sync_step
from natsync.lab.world import HTTPS_PORT, PUBLIC_NAME, World


def run(world: World, narr: Narration) -> None:
    lab = world.lab
    world.start_server(
        tls_cert=str(world.data / "tls" / "public.pem"),
        tls_key=str(world.data / "tls" / "public.key"),
    )
    world.set_lan_dns({})  # the LAN's resolver asks the zone: the public address
    narr.note(f"a phone on the LAN (Wi-Fi at the office) resolves {PUBLIC_NAME} → {t.PUBLIC}")
    synced = world.phone_sync(ns=lab.lan)
    sync_step(
        narr,
        "The LAN phone dials the router's public address and gets nowhere",
        synced,
        expect_ok=False,
    )
    outside = world.phone_sync()
    sync_step(
        narr,
        "…while the phone outside syncs through the same forward",
        outside,
        expect_ok=True,
    )
    doctor_step(
        narr,
        "hairpin",
        world.doctor_inside(),
        "The doctor, run on the LAN, explains it as hairpin NAT",
        "reach",
        f"HTTPS port {HTTPS_PORT}",
        expect_ok=False,
        cause=True,
    )

    lab.set_hairpin(True, HTTPS_PORT, HTTPS_PORT)
    narr.note("router: DNAT of the public address from the LAN side too, masquerade back")
    synced = world.phone_sync(ns=lab.lan)
    sync_step(
        narr,
        "With a hairpin rule on the router, the LAN phone syncs",
        synced,
        expect_ok=True,
    )
    doctor_step(
        narr,
        "hairpin-rule",
        world.doctor_inside(),
        "The doctor agrees: the public address answers from the LAN",
        "reach",
        f"HTTPS port {HTTPS_PORT}",
        expect_ok=True,
    )

    lab.set_hairpin(False)
    world.set_lan_dns({PUBLIC_NAME: t.LAN_HOST})
    narr.note(f"no hairpin rule; the LAN's resolver answers {PUBLIC_NAME} → {t.LAN_HOST}")
    synced = world.phone_sync(ns=lab.lan)
    narr.expect(
        "With split-horizon DNS, the LAN phone goes straight to the server and syncs",
        expect_ok=True,
        seen_ok=bool(synced["ok"]) and synced["address"] == t.LAN_HOST,
        detail=synced.get("error", f"dialled {synced['address']}"),
    )
    doctor_step(
        narr,
        "split-horizon",
        world.doctor_inside(resolver="127.0.0.1"),
        "The doctor, asking the LAN's resolver, reaches the server",
        "reach",
        f"HTTPS port {HTTPS_PORT}",
        expect_ok=True,
    )
    world.set_lan_dns(None)
