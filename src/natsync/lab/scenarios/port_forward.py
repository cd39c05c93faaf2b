"""Port forwarding: the MX points at the router's public address; without a forward the remote
mail server and the phone end at the router, with DNAT forwards (25, 443) to the server's
private address the mail arrives and the phone syncs it."""

from __future__ import annotations

import secrets

from natsync.lab import topology as t
from natsync.lab.narrate import Narration
from natsync.lab.scenarios._common import doctor_step
from natsync.lab.world import DEFAULT_FORWARDS, World


def run(world: World, narr: Narration) -> None:
    lab = world.lab
    subject = f"lab mail {secrets.token_hex(3)}"
    narr.note(f"MX of example.test → mail.example.test → {t.PUBLIC} (the router)")
    lab.set_forwards(())
    sent = world.send_mail(subject)
    narr.expect(
        "Without a port forward, the remote mail server cannot deliver to the MX",
        expect_ok=False,
        seen_ok=bool(sent["ok"]),
        detail=sent.get("error", sent.get("reply", "")),
    )
    doctor_step(
        narr,
        "no-forward",
        world.doctor_from_phone(),
        "…and the doctor, from the phone's side, finds port 443 closed at the public address",
        "reach",
        "HTTPS port 443",
        expect_ok=False,
    )

    lab.set_forwards(DEFAULT_FORWARDS)
    narr.note("router: DNAT 443 → 192.168.77.2:443 and 25 → 192.168.77.2:25")
    sent = world.send_mail(subject)
    narr.expect(
        f"With the forwards, the mail reaches the server through DNAT ({sent.get('address')}:25)",
        expect_ok=True,
        seen_ok=bool(sent["ok"]),
        detail=sent.get("error", sent.get("reply", "")),
    )
    # the server's own certificate is for the public name here: the certificate is scenario 3
    world.start_server(
        tls_cert=str(world.data / "tls" / "public.pem"),
        tls_key=str(world.data / "tls" / "public.key"),
    )
    synced = world.phone_sync()
    narr.expect(
        "The phone syncs the mail through the router",
        expect_ok=True,
        seen_ok=bool(synced["ok"]) and subject in synced["subjects"],
        detail=synced.get("error", f"Inbox: {', '.join(synced['subjects'])}"),
    )
    doctor_step(
        narr,
        "forwarded",
        world.doctor_from_phone(),
        "The doctor from the phone's side: port 443 accepts connections",
        "reach",
        "HTTPS port 443",
        expect_ok=True,
    )
