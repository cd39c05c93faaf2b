"""Certificate mismatch: the server's certificate names what the server is (its internal name
and private address), not what the phone connects to, so the phone refuses it. Fixed (a) with
a certificate for the public name and the phone's hosts entry, (b) with the SSL-bridging edge
(public-name certificate, pinned backend), (c) with the router's static address and a
certificate for the public name from an ACME authority (pebble on the internet host, which
validates http-01 through the router's port 80 forward; the phone trusts pebble's root as it
trusts a public CA's)."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509

from natsync.lab import topology as t
from natsync.lab.narrate import Narration
from natsync.lab.scenarios._common import doctor_step, sync_step
from natsync.lab.world import (
    DEFAULT_FORWARDS,
    HTTP_PORT,
    HTTPS_PORT,
    INTERNAL_NAME,
    PUBLIC_NAME,
    World,
)

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
    doctor_step(
        narr,
        "mismatch",
        world.doctor_from_phone(),
        "The doctor explains: the certificate names the server, not the address the phone sees",
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
    doctor_step(
        narr,
        "edge",
        world.doctor_from_phone(),
        "The doctor agrees: the certificate the phone sees is valid for the public name",
        "tls",
        expect_ok=True,
    )
    world.stop_edge()
    lab.set_forwards(DEFAULT_FORWARDS)
    _acme(world, narr)


def _issuer(cert: str) -> str:
    leaf = x509.load_pem_x509_certificates(Path(cert).read_bytes())[0]
    return leaf.issuer.rfc4514_string()


def _acme(world: World, narr: Narration) -> None:
    """(c) The article's last fix: a static address, so that a public name can stay on it,
    and a certificate for that name from an authority every phone trusts."""
    lab = world.lab
    narr.note(
        f"the router's address is static: {PUBLIC_NAME} → {lab.wan_address}; pebble (the ACME "
        f"CA) at {t.INET} validates http-01 from the internet, at {PUBLIC_NAME} port {HTTP_PORT}"
    )
    issued = world.acme_issue()
    narr.expect(
        f"(c) Without a port {HTTP_PORT} forward, pebble cannot reach the http-01 responder "
        "behind the router, and issues nothing",
        expect_ok=False,
        seen_ok=issued["status"] == "issued",
        detail=str(issued.get("error", "issued")),
    )
    lab.set_forwards((*DEFAULT_FORWARDS, (HTTP_PORT, t.LAN_HOST, HTTP_PORT)))
    narr.note(f"router: DNAT {HTTP_PORT} → {t.LAN_HOST}:{HTTP_PORT} (for the ACME validation)")
    issued = world.acme_issue()
    ok = issued["status"] == "issued"
    narr.expect(
        f"(c) With the forward, `natsync cert acme` obtains a certificate for {PUBLIC_NAME} "
        "from pebble",
        expect_ok=True,
        seen_ok=ok,
        detail=f"issued by {_issuer(issued['cert'])}, valid until {issued['not_after']}, "
        f"{issued['challenges_answered']} http-01 challenge(s) answered"
        if ok
        else str(issued.get("error")),
    )
    if not ok:
        return
    narr.reports["acme"] = issued
    root = world.pebble_root()
    world.start_server(tls_cert=issued["cert"], tls_key=issued["key"])
    synced = world.phone_sync(ca_file=root)
    sync_step(
        narr,
        "(c) The server presents the ACME certificate; the phone, trusting only pebble's root "
        "(fetched from its management API), syncs",
        synced,
        expect_ok=True,
    )
    doctor_step(
        narr,
        "acme-doctor",
        world.doctor_from_phone(ca_file=root),
        "The doctor, trusting pebble's root, agrees: valid for the public name",
        "tls",
        expect_ok=True,
    )
