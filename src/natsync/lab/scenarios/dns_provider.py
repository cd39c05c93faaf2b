"""A DNS provider and port 80 blocked, from scratch: `natsync init` and `natsync run` on the
server; the public record kept by natsync's dyndns2 updater against a dyndns2-speaking server
on the internet that writes into the lab's BIND; the router (the ISP) refuses port 80, so the
certificate comes from pebble by DNS-01 (the TXT record set by RFC 2136 in the same zone), and
the phone syncs over it."""

from __future__ import annotations

import secrets
import sys
from pathlib import Path
from typing import Any

import natsync
from natsync.lab import topology as t
from natsync.lab.errors import LabError
from natsync.lab.narrate import Narration
from natsync.lab.runner import NATSYNC
from natsync.lab.scenarios._common import stop_step, sync_step
from natsync.lab.scenarios.from_scratch import _lines, _phone_until_ok, _wait_log
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

#: Where the dyndns2 test server listens on the internet host (the port ddclient's docs use).
DYNDNS2_PORT = 8245
DYNDNS2_USER = "natsync"
#: Seconds the dyndns2 test server may take to listen.
DYNDNS2_START = 10.0
#: Seconds the ddns part (1 s interval) may take to publish the address.
FOLLOW = 15.0
#: The dyndns2 server is the one tests/ddns runs against, written from Dyn's documentation.
DYNDNS2_MODULE = "tests.ddns.fake_dyndns2"


def _source_root() -> Path:
    """The checkout natsync runs from: the dyndns2 test server lives in its tests/."""
    root = Path(natsync.__file__).resolve().parents[2]
    if not (root / "tests" / "ddns" / "fake_dyndns2.py").is_file():
        raise LabError(
            f"this scenario needs natsync's source tree ({DYNDNS2_MODULE}); run it from a "
            "checkout (pip install -e .)"
        )
    return root


def start_dyndns2(world: World, directory: Path) -> Any:
    """The dyndns2 server on the internet host, writing into the lab's BIND (RFC 2136, TSIG)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "password").write_text(f"lab-{secrets.token_hex(8)}\n")
    (directory / "password").chmod(0o600)
    root = _source_root()
    proc = world.lab.spawn(
        world.lab.inet, sys.executable, "-c",
        f"import sys; sys.path.insert(0, {str(root)!r}); "
        f"from {DYNDNS2_MODULE} import main; main()",
        "--listen", f"{t.INET}:{DYNDNS2_PORT}", "--tls-dir", str(directory / "tls"),
        "--dns", f"{t.INET}:53", "--zone", ZONE, "--key-file", str(world.bind / "ddns.key"),
        "--user", DYNDNS2_USER, "--password-file", str(directory / "password"),
        "--hosts", f"{PUBLIC_NAME},{MX_NAME}", log="dyndns2-server.log",
    )  # fmt: skip
    log = world.dir / "dyndns2-server.log"
    if _wait_log(log, "listening on", DYNDNS2_START) is None:
        world.lab.forget(proc)
        raise LabError(f"the dyndns2 test server did not start: {log.read_text()[-1000:]}")
    return proc


def provider_config(text: str, directory: Path) -> str:
    """`natsync init`'s file with the DNS provider a home user has (docs/ddns.md): dyndns2
    keeps the addresses, RFC 2136 (the zone's primary, with the TSIG key) the DNS-01 TXT
    records, which the dyndns2 protocol cannot set."""
    text = text.replace(
        "[ddns]\n",
        f'[ddns]\nprovider = "dyndns2"\nconfirm_servers = ["{t.INET}:53"]\n',
        1,
    )
    text = text.replace("[cert]\n", '[cert]\ndns_provider = "rfc2136"\n', 1)
    return text + (
        "\n[ddns.dyndns2]\n"
        f'url = "https://{t.INET}:{DYNDNS2_PORT}/nic/update"\n'
        f'username = "{DYNDNS2_USER}"\n'
        f'password_file = "{directory / "password"}"\n'
        f'ca_file = "{directory / "tls" / "server.pem"}"\n'
    )


def _port_refused(world: World, address: str, port: int) -> bool:
    """Whether a TCP connection from the internet to *address*:*port* is refused."""
    probe = (
        "import socket, sys\n"
        "try:\n"
        "    socket.create_connection((sys.argv[1], int(sys.argv[2])), 5).close()\n"
        "    print('open')\n"
        "except ConnectionRefusedError:\n"
        "    print('refused')\n"
        "except OSError as exc:\n"
        "    print(exc)\n"
    )
    done = world.lab.run_in(world.lab.inet, sys.executable, "-c", probe, address, str(port))
    return done.stdout.strip() == "refused"


def run(world: World, narr: Narration) -> None:
    lab = world.lab
    world.stop_server()
    lab.set_forwards(())  # nothing forwarded by hand: the router mapping is natsync's
    lab.set_privileged_mappings(True, blocked=(80,))  # the ISP blocks port 80 inbound
    home = world.dir / "dns-provider"
    home.mkdir(exist_ok=True)
    dyndns2 = start_dyndns2(world, home / "dyndns2")
    # The ISP renumbered the router: the record in DNS (PUBLIC) is stale until the updater acts.
    lab.set_wan_address(t.PUBLIC_NEXT)
    config = home / "natsync.toml"
    proc = None
    saved_ca = world.ca_file
    try:
        made = lab.natsync(
            "init", PUBLIC_NAME, "-o", str(config), "--force", "--data-dir", str(home / "data"),
            "-y", "--cert", "acme", "--acme-directory", ACME_DIRECTORY, "--acme-ca",
            str(world.pebble_tls_ca), "--challenge", "dns-01", "--email", f"admin@{ZONE}",
            "--domain", ZONE, "--dns-server", f"{t.INET}:53", "--dns-zone", ZONE,
            "--tsig-key", str(world.bind / "ddns.key"), "--dns-name", MX_NAME,
            "--dns-ttl", str(TTL), "--dns-interval", "1", "--router", t.LAN_ROUTER, timeout=90,
        )  # fmt: skip
        if made.returncode != 0:
            narr.expect(
                "`natsync init` writes the file", expect_ok=True, seen_ok=False,
                detail=made.stderr[-400:],
            )  # fmt: skip
            return
        config.write_text(provider_config(config.read_text(), home / "dyndns2"))
        lab.natsync(
            "user", "add", USER, "--email", EMAIL, "--password", PASSWORD,
            "--data-dir", str(home / "data"), check=True,
        )  # fmt: skip
        checked = lab.natsync("check", "-c", str(config))
        narr.expect(
            "`natsync init --challenge dns-01`, then the dyndns2 provider in [ddns]: "
            "`natsync check` accepts it",
            expect_ok=True,
            seen_ok=checked.returncode == 0,
            detail=(checked.stdout + checked.stderr).strip()[-400:],
        )
        log = world.dir / "dns-provider.log"
        proc = lab.spawn(
            lab.lan, *NATSYNC, "run", "-c", str(config), log="dns-provider.log", env=lab.env()
        )
        issued = _wait_log(log, "cert: issued", ACME_TIMEOUT)
        text = log.read_text(errors="replace")
        mapped = lab.ns(lab.router, "nft", "list", "table", "inet", "miniupnpd").stdout
        heard = [line[25:] for line in text.splitlines() if "ports from outside now" in line]
        refused = [line[25:200] for line in text.splitlines() if "portmap: 80->" in line]
        narr.expect(
            "The router maps 443 and 25 but refuses port 80; the cert part hears it",
            expect_ok=True,
            seen_ok=all(f"dport {p} " in mapped for p in (443, 25))
            and "dport 80 " not in mapped
            and any("80 closed, 443 open" in line for line in heard),
            detail=" / ".join([*refused[:1], *heard[:1]]),
        )
        try:
            took: float | None = world.wait_record(t.PUBLIC_NEXT, FOLLOW)
            world.wait_record(t.PUBLIC_NEXT, FOLLOW, MX_NAME)
        except LabError:
            took = None
        updates = [
            line
            for line in (world.dir / "dyndns2-server.log").read_text().splitlines()
            if line.startswith("update ")
        ]
        narr.expect(
            "The dyndns2 updater keeps the record: the provider answers good, BIND serves the "
            "new address",
            expect_ok=True,
            seen_ok=took is not None and any(f"myip={t.PUBLIC_NEXT} -> good" in u for u in updates),
            detail=f"{PUBLIC_NAME} → {world.dig()} / " + " / ".join(updates)[-300:],
        )
        narr.expect(
            "pebble issues the certificate by DNS-01 (TXT by RFC 2136 into BIND); nothing "
            "was tried on port 80",
            expect_ok=True,
            seen_ok=issued is not None and " with dns-01 " in text and " with http-01 " not in text,
            detail=_lines(log, ("ordering a certificate", "cert: issued")),
        )
        if issued is None:
            return
        narr.expect(
            f"Port 80 at {t.PUBLIC_NEXT} is closed from the internet",
            expect_ok=True,
            seen_ok=_port_refused(world, t.PUBLIC_NEXT, 80),
            detail="a TCP connection from the internet host to port 80 is refused",
        )
        root = world.pebble_root()
        world.ca_file = root  # the phone trusts the public CA (pebble's root), nothing else
        world.set_phone(sticky=None)
        synced = _phone_until_ok(world, root, TTL + FOLLOW)
        narr.reports["dns-provider-sync"] = synced
        sync_step(
            narr,
            f"The phone syncs at {t.PUBLIC_NEXT}, trusting only pebble's root",
            synced,
            expect_ok=True,
        )
    finally:
        world.ca_file = saved_ca
        if proc is not None:
            stop_step(narr, lab, proc, "SIGTERM stops natsync run cleanly")
        lab.forget(dyndns2)
        lab.set_privileged_mappings(False)
