"""Certificate mismatch: the server's certificate names what the server is (its internal name
and private address), not what the phone connects to, so the phone refuses it. Fixed (a) with
a certificate for the public name and the phone's hosts entry, (b) with the SSL-bridging edge
(public-name certificate, pinned backend), (c) with an ACME certificate for the public name."""

from __future__ import annotations

from natsync.lab import topology as t
from natsync.lab.narrate import Narration
from natsync.lab.scenarios._common import expect_finding
from natsync.lab.world import HTTPS_PORT, INTERNAL_NAME, PUBLIC_NAME, World

#: Where the edge listens on the LAN host; the router forwards 443 to it in fix (b).
EDGE_PORT = 4443


def run(world: World, narr: Narration) -> None:
    lab = world.lab
    narr.note(f"the server presents a certificate for {INTERNAL_NAME} and {t.LAN_HOST}")
    synced = world.phone_sync()
    narr.expect(
        f"The phone dials {PUBLIC_NAME} ({synced['address']}) and refuses the server's certificate",
        expect_ok=False,
        seen_ok=bool(synced["ok"]),
        detail=synced.get("error", ""),
    )
    report = world.doctor_from_phone()
    narr.reports["mismatch"] = report
    expect_finding(
        narr,
        "The doctor explains: the certificate names the server, not the address the phone sees",
        report,
        "tls",
        expect_ok=False,
        cause=True,
    )

    # (a) a certificate for the public name, and the phone's hosts entry (the article's
    # registry host entry): the phone reaches the name even with no DNS at all.
    world.start_server(
        tls_cert=str(world.data / "tls" / "public.pem"),
        tls_key=str(world.data / "tls" / "public.key"),
    )
    if world.cache is not None:
        lab.forget(world.cache)  # no DNS: only the hosts entry can answer
        world.cache = None
    world.set_hosts({PUBLIC_NAME: lab.wan_address})
    synced = world.phone_sync()
    narr.expect(
        f"(a) public-name certificate + hosts entry {PUBLIC_NAME} → {lab.wan_address}: the "
        "phone syncs",
        expect_ok=True,
        seen_ok=bool(synced["ok"]) and synced["address"] == lab.wan_address,
        detail=synced.get("error", f"dialled {synced['address']} from the hosts file"),
    )
    world.set_phone(sticky=None)

    # (b) the SSL-bridging edge: the server keeps its internal certificate; the edge holds the
    # public name's and pins the server's.
    world.start_server()
    edge = world.start_edge(EDGE_PORT)
    lab.set_forwards(((HTTPS_PORT, t.LAN_HOST, EDGE_PORT), (25, t.LAN_HOST, 25)))
    synced = world.phone_sync()
    narr.expect(
        "(b) the edge bridges SSL with the public name's certificate and the pinned backend: "
        "the phone syncs",
        expect_ok=True,
        seen_ok=bool(synced["ok"]),
        detail=synced.get("error", f"pinned {edge}"),
    )
    report = world.doctor_from_phone()
    narr.reports["edge"] = report
    expect_finding(
        narr,
        "The doctor agrees: the certificate the phone sees is valid for the public name",
        report,
        "tls",
        expect_ok=True,
    )
    world.stop_edge()
