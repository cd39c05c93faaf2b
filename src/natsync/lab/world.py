"""natsync and its counterparts, put into the lab's topology.

    internet: BIND 9, primary of example.test (MX → mail.example.test, eas / mail → the router's
              public address, short TTLs), coturn STUN, pebble (the ACME certificate authority,
              resolving through that BIND), and the "remote mail server"
              (:mod:`natsync.lab.mailer`) that delivers to our MX
    phone:    its DNS cache (:mod:`natsync.lab.dnscache`) on 127.0.0.1, its /etc/hosts, and the
              device emulator (:mod:`natsync.lab.phone`) that syncs through the router
    router:   static forwards 443 and 25 to the LAN host (the admin's DNAT rules), miniupnpd
    lan:      `natsync server` on 192.168.77.2 (HTTPS 443, SMTP 25) with a certificate from the
              private CA that names what the server *is* (its internal name and private address)

:meth:`World.reset` puts every part back to this picture between scenarios, so one topology
serves them all.
"""

# ruff: noqa: S603, S607 - fixed programs (ip, natsync, dig) with argument lists, no shell

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from natsync.cert import init_ca
from natsync.lab import topology as t
from natsync.lab.errors import LabError
from natsync.lab.runner import Lab
from natsync.lab.services import (
    PEBBLE_ACME_PORT,
    PEBBLE_MANAGEMENT_PORT,
    key_file_text,
    named_argv,
    named_conf,
    pebble_argv,
    pebble_config,
    pebble_env,
    stun_argv,
    wait_dns,
    wait_log,
    zone_text,
)

ZONE = "example.test"
PUBLIC_NAME = f"eas.{ZONE}"
MX_NAME = f"mail.{ZONE}"
#: What the server calls itself on the LAN (the article's internal FQDN).
INTERNAL_NAME = "exchange.corp.lan"
PUBLIC_URL = f"https://{PUBLIC_NAME}"
USER = "ann"
EMAIL = f"{USER}@{ZONE}"
PASSWORD = "lab-password-not-secret"  # noqa: S105 - a lab account, lives only in the lab
KEY_NAME = "natsync-ddns"
#: TTL of the zone's records: short, so that the dynamic-address scenario takes seconds.
TTL = 3
#: Seconds per doctor step: everything is one or two veth hops away.
DOCTOR_STEP = "2"
#: Seconds the server may take to listen after start.
SERVER_START = 20.0
HTTPS_PORT = 443
SMTP_PORT = 25
STUN_PORT = 3478
#: Seconds the pushing phone waits beyond heartbeat + the mail's delay.
PUSH_SLACK = 6.0
DEFAULT_FORWARDS = ((HTTPS_PORT, t.LAN_HOST, HTTPS_PORT), (SMTP_PORT, t.LAN_HOST, SMTP_PORT))
#: Where pebble connects to answer http-01 challenges, as a public CA does.
HTTP_PORT = 80
#: pebble's ACME directory and the root of what it issues, on the internet host.
ACME_DIRECTORY = f"https://{t.INET}:{PEBBLE_ACME_PORT}/dir"
ACME_ROOTS = f"https://{t.INET}:{PEBBLE_MANAGEMENT_PORT}/roots/0"
#: Seconds one `natsync cert acme` order may take (pebble validates at once; the client polls).
ACME_TIMEOUT = 90.0
#: The relay path (carrier-grade NAT's way out): the tunnel's two ends as `natsync relay init`
#: writes them, the edge's relayed listener on the home's end, the edge's own direct port.
RELAY_VPS = "10.77.0.1"
RELAY_HOME = "10.77.0.2"
RELAY_HOME_PORT = 8443
RELAY_TUNNEL_PORT = 51820
RELAY_EDGE_PORT = 4443
#: Where the home server takes mail the relay passes on (`natsync relay init`'s home_smtp_port).
RELAY_HOME_SMTP_PORT = 2525


def finding(report: dict[str, Any], check: str, title_start: str = "") -> dict[str, Any] | None:
    """The doctor's first finding of ``check`` whose title starts so, or None."""
    for f in report.get("findings", []):
        if f["check"] == check and f["title"].startswith(title_start):
            return f  # type: ignore[no-any-return]
    return None


class World:
    """The deployment inside one lab run."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.dir = lab.dir
        self.data = self.dir / "natsync-data"
        self.bind = self.dir / "bind"
        self.ca_file = self.data / "ca" / "ca.pem"
        self.server: subprocess.Popen[bytes] | None = None
        self.cache: subprocess.Popen[bytes] | None = None
        self.ddns_runner: subprocess.Popen[bytes] | None = None
        self.edge: subprocess.Popen[bytes] | None = None
        self.lan_dns: subprocess.Popen[bytes] | None = None
        self.pebble: subprocess.Popen[bytes] | None = None
        self.relay: subprocess.Popen[bytes] | None = None
        self.dial: subprocess.Popen[bytes] | None = None
        #: The CA that signed pebble's own TLS certificate (the ACME client trusts it).
        self.pebble_tls_ca = self.dir / "pebble" / "tls-ca" / "ca.pem"
        self.edge_config = self.dir / "edge.toml"
        self.sticky: float | None = None
        self.config = self.dir / "natsync.toml"
        self.server_settings: dict[str, Any] = {}

    # -- start ----------------------------------------------------------------------------
    def start(self) -> None:
        self.lab.set_forwards(DEFAULT_FORWARDS)
        self._start_dns()
        stun_dir = self.dir / "stun"
        stun_dir.mkdir(exist_ok=True)
        stun = self.lab.spawn(
            self.lab.inet, *stun_argv(stun_dir, t.INET, STUN_PORT, t.INET6), log="stun.log"
        )
        wait_log(stun, self.dir / "stun.log", b"Total General servers", "turnserver")
        self._start_pebble()
        self._init_server_side()
        self.start_server()
        self.set_phone(sticky=None)

    def _start_dns(self) -> None:
        self.bind.mkdir(parents=True, exist_ok=True)
        key_file = self.bind / "ddns.key"
        key_file.write_text(key_file_text(KEY_NAME, os.urandom(32)))
        key_file.chmod(0o600)
        (self.bind / "named.conf").write_text(
            named_conf(
                self.bind, t.INET, 53, ZONE, KEY_NAME, (PUBLIC_NAME, MX_NAME), (PUBLIC_NAME,)
            )
        )
        (self.bind / f"{ZONE}.zone").write_text(
            zone_text(
                ZONE,
                [
                    f"@ IN MX 10 {MX_NAME}.",
                    f"ns1 IN A {t.INET}",
                    f"eas IN A {t.PUBLIC}",
                    f"mail IN A {t.PUBLIC}",
                ],
                ttl=TTL,
            )
        )
        named = self.lab.spawn(self.lab.inet, *named_argv(self.bind), log="named.log")
        wait_dns(t.INET, 53, ZONE, named, self.dir / "named.log", self.lab.inet)

    def _start_pebble(self) -> None:
        """pebble on the internet host, its TLS certificate from a CA of its own (not the
        server's: the phone must not come to trust the server through it)."""
        directory = self.dir / "pebble"
        ca = init_ca(directory / "tls-ca", common_name="pebble's TLS CA (natsync lab)")
        cert, key = ca.issue_server_cert(["acme.example.test"], [t.INET], directory, basename="tls")
        config = directory / "pebble.json"
        config.write_text(pebble_config(t.INET, cert, key, http_port=HTTP_PORT))
        self.pebble = self.lab.spawn(
            self.lab.inet, *pebble_argv(config, f"{t.INET}:53"), log="pebble.log",
            env=pebble_env(),
        )  # fmt: skip
        self.wait_listening(self.lab.inet, PEBBLE_ACME_PORT, self.pebble, log="pebble.log")
        self.wait_listening(self.lab.inet, PEBBLE_MANAGEMENT_PORT, self.pebble, log="pebble.log")

    def _init_server_side(self) -> None:
        ca = init_ca(self.data / "ca")
        # What the article's server presents: its own name and private address.
        ca.issue_server_cert([INTERNAL_NAME], [t.LAN_HOST], self.data / "tls", basename="internal")
        ca.issue_server_cert([PUBLIC_NAME], [], self.data / "tls", basename="public")
        done = self.lab.natsync(
            "user", "add", USER, "--email", EMAIL, "--password", PASSWORD,
            "--data-dir", str(self.data),
        )  # fmt: skip
        if done.returncode != 0:
            raise LabError(f"natsync user add failed: {done.stderr.strip()[-500:]}")

    def write_config(self, **server: Any) -> Path:
        """The deployment's natsync.toml: [server] (with ``server`` overrides), [ddns],
        [portmap]."""
        settings: dict[str, Any] = {
            "host": t.LAN_HOST,
            "port": HTTPS_PORT,
            "data_dir": str(self.data),
            "tls_cert": str(self.data / "tls" / "internal.pem"),
            "tls_key": str(self.data / "tls" / "internal.key"),
            "domains": [ZONE],
            "smtp_listen": f"{t.LAN_HOST}:{SMTP_PORT}",
            "hostname": MX_NAME,
            "public_name": PUBLIC_NAME,
        }
        settings.update(server)
        lines = ["[server]"] + [f"{k} = {json.dumps(v)}" for k, v in settings.items()]
        lines += [
            "",
            "[ddns]",
            f'server = "{t.INET}:53"',
            f'zone = "{ZONE}"',
            f'names = ["{PUBLIC_NAME}", "{MX_NAME}"]',
            f'key_file = "{self.bind / "ddns.key"}"',
            f"ttl = {TTL}",
            "interval = 1",
            'sources = ["natpmp", "upnp", "stun"]',
            "families = [4]",
            f'stun_servers = ["{t.INET}:{STUN_PORT}"]',
            f'mx_domain = "{ZONE}"',
            "",
            "[portmap]",
            'method = "upnp"',
            "",
        ]
        self.config.write_text("\n".join(lines))
        return self.config

    def start_server(self, **server: Any) -> None:
        """(Re)start `natsync server` on the LAN host with these [server] settings."""
        self.stop_server()
        self.server_settings = server
        self.write_config(**server)
        self.server = self.lab.spawn(
            self.lab.lan, *self._natsync(), "server", "--config", str(self.config),
            log="server.log", env=self.lab.env(),
        )  # fmt: skip
        self.wait_listening(self.lab.lan, HTTPS_PORT, self.server)
        self.wait_listening(self.lab.lan, SMTP_PORT, self.server)

    @staticmethod
    def _natsync() -> list[str]:
        from natsync.lab.runner import NATSYNC

        return list(NATSYNC)

    def stop_server(self) -> None:
        if self.server is not None:
            self.lab.forget(self.server)
            self.server = None

    def wait_listening(
        self, ns: str, port: int, proc: subprocess.Popen[bytes], log: str = "server.log"
    ) -> None:
        deadline = time.monotonic() + SERVER_START
        while "LISTEN" not in self.lab.ns(ns, "ss", "-Hltn", f"sport = :{port}").stdout:
            if proc.poll() is not None or time.monotonic() > deadline:
                text = (self.dir / log).read_text()[-2000:]
                raise LabError(f"nothing listens on port {port} in {ns}: {text}")
            time.sleep(0.05)

    # -- the edge -------------------------------------------------------------------------
    def start_edge(self, port: int, extra: str = "", listen: str = "") -> str:
        """`natsync edge run` on the LAN host: the public name's certificate toward phones, the
        server's certificate pinned with `natsync edge trust-backend`; ``extra`` lines go into
        its [edge] table; it listens on the LAN address at *port* unless *listen* says where.
        Returns the pin."""
        self.stop_edge()
        tls = self.data / "tls"
        self.edge_config.write_text(f"""[edge]
{extra}
listen = "{listen or f"{t.LAN_HOST}:{port}"}"
backend = "{t.LAN_HOST}:{HTTPS_PORT}"
backend_name = "{INTERNAL_NAME}"
admin_listen = ""
forwards = []

[[edge.certificates]]
names = ["{PUBLIC_NAME}"]
cert = "{tls / "public.pem"}"
key = "{tls / "public.key"}"
""")
        done = self.lab.natsync(
            "edge", "trust-backend", f"{t.LAN_HOST}:{HTTPS_PORT}", "--name", INTERNAL_NAME,
            "--config", str(self.edge_config), "--yes",
        )  # fmt: skip
        if done.returncode != 0:
            raise LabError(f"natsync edge trust-backend failed: {done.stdout}{done.stderr}")
        self.edge = self.lab.spawn(
            self.lab.lan, *self._natsync(), "edge", "run", "--config", str(self.edge_config),
            log="edge.log", env=self.lab.env(),
        )  # fmt: skip
        self.wait_listening(self.lab.lan, port, self.edge, log="edge.log")
        for line in self.edge_config.read_text().splitlines():
            if line.startswith("backend_pin"):
                return line.split("=", 1)[1].strip().strip('"')
        raise LabError("trust-backend wrote no backend_pin")

    def stop_edge(self) -> None:
        if self.edge is not None:
            self.lab.forget(self.edge)
            self.edge = None

    # -- ACME -----------------------------------------------------------------------------
    def acme_issue(self) -> dict[str, Any]:
        """`natsync cert acme` on the LAN host: a certificate for the public name from pebble,
        http-01 answered by its own responder on the LAN host's port 80 — pebble reaches it
        only if DNS names the router's address and the router forwards port 80. Its JSON
        result (``status`` "issued" or "error")."""
        done = self.lab.natsync(
            "cert", "acme", "--data-dir", str(self.data), "--directory", ACME_DIRECTORY,
            "--ca-file", str(self.pebble_tls_ca), "--name", PUBLIC_NAME,
            "--challenge", "http-01", "--listen", t.LAN_HOST, "--http-port", str(HTTP_PORT),
            "--email", f"admin@{ZONE}", "--json", timeout=ACME_TIMEOUT,
        )  # fmt: skip
        lines = done.stdout.strip().splitlines()
        if not lines or not lines[-1].startswith("{"):
            raise LabError(f"natsync cert acme crashed: {done.stderr.strip()[-1000:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def pebble_root(self) -> Path:
        """pebble's issuing root, fetched from its management API by the phone (over TLS it
        verifies): what a phone's trust store holds for a public CA."""
        path = self.dir / "pebble-root.pem"
        fetch = (
            "import ssl, sys, urllib.request\n"
            "ctx = ssl.create_default_context(cafile=sys.argv[2])\n"
            "with urllib.request.urlopen(sys.argv[1], context=ctx, timeout=10) as r:\n"
            "    sys.stdout.write(r.read().decode())\n"
        )
        done = self.lab.run_in(
            self.lab.phone, *self._python(), "-c", fetch, ACME_ROOTS, str(self.pebble_tls_ca),
            timeout=30,
        )  # fmt: skip
        if done.returncode != 0 or "BEGIN CERTIFICATE" not in done.stdout:
            raise LabError(f"pebble's root could not be fetched: {done.stderr.strip()[-1000:]}")
        path.write_text(done.stdout)
        return path

    # -- the phone ------------------------------------------------------------------------
    def set_phone(self, *, sticky: float | None, hosts: dict[str, str] | None = None) -> None:
        """A fresh phone DNS cache (honouring TTLs, or sticky for ``sticky`` seconds) and its
        hosts file."""
        if self.cache is not None:
            self.lab.forget(self.cache)
        self.sticky = sticky
        self.lab.netns_etc(self.lab.phone, hosts=hosts, resolver="127.0.0.1")
        extra = ["--sticky", str(sticky)] if sticky is not None else []
        self.cache = self._resolver(self.lab.phone, extra, "phone-dns.log")

    def set_lan_dns(self, local: dict[str, str] | None) -> None:
        """The LAN's own resolver for devices on the LAN (None: none, the LAN host resolves
        as before); ``local`` names it answers itself (split-horizon DNS)."""
        if self.lan_dns is not None:
            self.lab.forget(self.lan_dns)
            self.lan_dns = None
        if local is None:
            self.lab.netns_etc(self.lab.lan, resolver=None)
            return
        self.lab.netns_etc(self.lab.lan, resolver="127.0.0.1")
        extra = [f"--local={name}={ip}" for name, ip in local.items()]
        self.lan_dns = self._resolver(self.lab.lan, extra, "lan-dns.log")

    def _resolver(self, ns: str, extra: list[str], log: str) -> subprocess.Popen[bytes]:
        proc = self.lab.spawn(
            ns, *self._python(), "-m", "natsync.lab.dnscache",
            "--upstream", f"{t.INET}:53", *extra, log=log, env=self.lab.env(),
        )  # fmt: skip
        deadline = time.monotonic() + SERVER_START
        while "UNCONN" not in self.lab.ns(ns, "ss", "-Hlun", "sport = :53").stdout:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"the DNS resolver in {ns} did not start")
            time.sleep(0.05)
        return proc

    def set_hosts(self, hosts: dict[str, str] | None) -> None:
        self.lab.netns_etc(self.lab.phone, hosts=hosts, resolver="127.0.0.1")

    @staticmethod
    def _python() -> list[str]:
        import sys

        return [sys.executable]

    def phone_sync(
        self,
        url: str = PUBLIC_URL,
        ca_file: Path | None = None,
        ns: str | None = None,
    ) -> dict[str, Any]:
        """The phone (in ``ns``: the phone namespace unless told) syncs its Inbox; its JSON
        result."""
        done = self.lab.run_in(
            ns or self.lab.phone, *self._python(), "-m", "natsync.lab.phone", url,
            "--user", USER, "--password", PASSWORD, "--ca-file", str(ca_file or self.ca_file),
            timeout=60,
        )  # fmt: skip
        return self._phone_result(done.stdout, done.stderr)

    @staticmethod
    def _phone_result(stdout: str, stderr: str) -> dict[str, Any]:
        lines = stdout.strip().splitlines()
        if not lines or not lines[-1].startswith("{"):
            raise LabError(f"the phone crashed: {stderr.strip()[-1000:]}")
        result: dict[str, Any] = json.loads(lines[-1])
        return result

    def phone_push(
        self, heartbeat: int, subject: str, mail_after: float, *, by_phone: bool = False
    ) -> dict[str, Any]:
        """The phone holds Pings (asking ``heartbeat``); ``mail_after`` seconds into the
        first one the remote mail server delivers a message (``by_phone``: a second phone of
        the same user sends it with SendMail). The phone's result, with ``push``: whether a
        Ping told it of the new mail, after how long."""
        limit = heartbeat + mail_after + PUSH_SLACK
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.phone, *self._python(), "-m", "natsync.lab.phone",
             PUBLIC_URL, "--user", USER, "--password", PASSWORD, "--ca-file", str(self.ca_file),
             "--ping", str(heartbeat), "--push", str(limit)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.lab.env(),
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()
            if not first.startswith("PING"):
                out, err = proc.communicate(timeout=10)
                return self._phone_result(first + out, err)
            time.sleep(mail_after)
            sent = self.phone_send(subject) if by_phone else self.send_mail(subject)
            out, err = proc.communicate(timeout=limit + 20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        result = self._phone_result(out, err)
        result["mail"] = sent
        return result

    def phone_send(self, subject: str) -> dict[str, Any]:
        """A second phone of the user sends a mail to the user (SendMail), then syncs."""
        done = self.lab.run_in(
            self.lab.phone, *self._python(), "-m", "natsync.lab.phone", PUBLIC_URL,
            "--user", USER, "--password", PASSWORD, "--ca-file", str(self.ca_file),
            "--send", subject, "--send-to", EMAIL, "--device-id", "NATSYNCEMU0002",
            timeout=60,
        )  # fmt: skip
        return self._phone_result(done.stdout, done.stderr)

    # -- the relay: the way out of carrier-grade NAT through a small public server ----------
    def start_relay(self) -> None:
        """`natsync relay init` for the VPS (and the home's files), `natsync relay run` on the
        VPS, `natsync relay dial` on the LAN host, and the edge with its relayed listener on
        the home's tunnel address, bridging to the server as always."""
        self.stop_relay()
        tag = self.lab.tag
        self.lab.natsync(
            "relay", "init", t.VPS, "--dir", str(self.dir / "relay"),
            "--home-dir", str(self.dir / "home"), "--interface", f"nwr{tag}",
            "--home-interface", f"nwh{tag}", "--force", check=True,
        )  # fmt: skip
        self.relay = self.lab.spawn(
            self.lab.vps, *self._natsync(), "relay", "run", "-c",
            str(self.dir / "relay" / "relay.toml"), log="relay.log", env=self.lab.env(),
        )  # fmt: skip
        self.wait_listening(self.lab.vps, HTTPS_PORT, self.relay, log="relay.log")
        self.start_dial()
        self.start_edge(
            RELAY_EDGE_PORT,
            extra=f'relayed_listen = "{RELAY_HOME}:{RELAY_HOME_PORT}"\n'
            f'relayed_from = ["{RELAY_VPS}"]',
        )
        assert self.edge is not None
        self.wait_listening(self.lab.lan, RELAY_HOME_PORT, self.edge, log="edge.log")

    def start_dial(self) -> None:
        """The home's end of the tunnel (`natsync relay dial`); waits for its address."""
        if self.dial is not None:
            self.lab.forget(self.dial)
        self.dial = self.lab.spawn(
            self.lab.lan, *self._natsync(), "relay", "dial", "-c",
            str(self.dir / "home" / "home.toml"), log="dial.log", env=self.lab.env(),
        )  # fmt: skip
        deadline = time.monotonic() + SERVER_START
        while RELAY_HOME not in self.lab.ns(self.lab.lan, "ip", "-4", "addr").stdout:
            if self.dial.poll() is not None or time.monotonic() > deadline:
                raise LabError(f"the tunnel did not come up: {(self.dir / 'dial.log').read_text()}")
            time.sleep(0.05)

    def cut_tunnel(self, on: bool) -> None:
        """The path between home and relay loses the tunnel's packets (``on``), or carries them
        again: a router or carrier dropping UDP, as mobile and CGNAT paths do."""
        router = self.lab.router
        self.lab.ns(router, "nft", "delete", "table", "ip", "lab_cut", check=False)
        if on:
            rules = self.dir / "cut.nft"
            rules.write_text(
                "table ip lab_cut {\n  chain forward {\n"
                "    type filter hook forward priority -10; policy accept;\n"
                f"    udp dport {RELAY_TUNNEL_PORT} drop\n    udp sport {RELAY_TUNNEL_PORT} drop\n"
                "  }\n}\n"
            )
            self.lab.ns(router, "nft", "-f", str(rules))

    def relay_smtp(self) -> None:
        """Restart the server with its second SMTP listener on the home's tunnel address,
        taking PROXY headers from the relay's tunnel address only."""
        self.start_server(
            smtp_relayed_listen=f"{RELAY_HOME}:{RELAY_HOME_SMTP_PORT}",
            smtp_proxy_protocol_from=[RELAY_VPS],
        )
        assert self.server is not None
        self.wait_listening(self.lab.lan, RELAY_HOME_SMTP_PORT, self.server)

    def relay_deployment(self) -> Path:
        """The home's whole deployment file: natsync.toml with the [tunnel] table `natsync
        relay init` wrote and the edge's [edge] table (relayed listener); its [ddns] follows
        the relay (source ``relay`` first: A = the relay; the home's own sources stay listed,
        for the doctor's view of the home's NAT)."""
        path = self.dir / "home" / "deployment.toml"
        home = (self.dir / "home" / "home.toml").read_text()
        tunnel = home.split("\n[edge]", 1)[0]  # its [edge] lines are in edge.toml already
        config = self.config.read_text().replace(
            'sources = ["natpmp", "upnp", "stun"]', 'sources = ["relay", "natpmp", "upnp", "stun"]'
        )
        path.write_text("\n".join([config, tunnel, self.edge_config.read_text()]))
        return path

    def ddns_follow_relay(self) -> subprocess.CompletedProcess[str]:
        """`natsync ddns update` with the relay deployment's file (as natsync run's ddns part
        does): the name and the MX host get the relay's address; the phone a fresh cache."""
        deployment = str(self.relay_deployment())
        done = self.lab.natsync("ddns", "update", "--json", "--config", deployment)
        self.set_phone(sticky=None)
        return done

    def stop_relay(self) -> None:
        for proc in (self.dial, self.relay):
            if proc is not None:
                self.lab.forget(proc)
        self.dial = self.relay = None
        self.lab.ns(self.lab.router, "nft", "delete", "table", "ip", "lab_cut", check=False)

    def set_aaaa(self, address: str | None) -> None:
        """Give the public name an IPv6 address (AAAA), or take it away (None)."""
        lines = [f"server {t.INET} 53", f"zone {ZONE}", f"update delete {PUBLIC_NAME} AAAA"]
        if address is not None:
            lines.append(f"update add {PUBLIC_NAME} {TTL} AAAA {address}")
        self._nsupdate(lines)

    def aaaa(self, name: str = PUBLIC_NAME) -> set[str]:
        done = self.lab.ns(
            self.lab.inet, "dig", "+short", "+norec", "+tcp", f"@{t.INET}", name, "AAAA"
        )
        return {line for line in done.stdout.split() if line}

    def _nsupdate(self, lines: list[str]) -> None:
        done = self.lab.run_in(
            self.lab.inet, "nsupdate", "-k", str(self.bind / "ddns.key"),
            stdin="\n".join([*lines, "send", ""]),
        )  # fmt: skip
        if done.returncode != 0:
            raise LabError(f"nsupdate failed: {done.stderr.strip()}")

    def point_name(self, address: str) -> None:
        """Point the public name and the MX host at *address* (an RFC 2136 update signed with
        the deployment's key, as `natsync ddns` does), and give the phone a fresh cache."""
        lines = [f"server {t.INET} 53", f"zone {ZONE}"]
        for name in (PUBLIC_NAME, MX_NAME):
            lines += [f"update delete {name} A", f"update add {name} {TTL} A {address}"]
        self._nsupdate(lines)
        self.set_phone(sticky=None)

    # -- the internet ---------------------------------------------------------------------
    def send_mail(self, subject: str) -> dict[str, Any]:
        """The remote mail server looks up our MX and delivers a message to it."""
        done = self.lab.run_in(
            self.lab.inet, *self._python(), "-m", "natsync.lab.mailer",
            "--dns", t.INET, "--to", EMAIL, "--subject", subject,
        )  # fmt: skip
        if not done.stdout.strip():
            raise LabError(f"the remote mail server crashed: {done.stderr.strip()[-1000:]}")
        result: dict[str, Any] = json.loads(done.stdout)
        return result

    def dig(self, name: str = PUBLIC_NAME) -> set[str]:
        """What the authoritative server says now (BIND's own dig, an independent look)."""
        done = self.lab.ns(
            self.lab.inet, "dig", "+short", "+norec", "+tcp", f"@{t.INET}", name, "A"
        )
        return {line for line in done.stdout.split() if line}

    # -- doctor ---------------------------------------------------------------------------
    def doctor(
        self, ns: str, url: str = PUBLIC_URL, *extra: str, timeout: float = 90
    ) -> dict[str, Any]:
        """`natsync doctor URL --json` run in namespace ``ns``: its report (with its
        ``exit_status``)."""
        done = self.lab.natsync(
            "doctor", url, "--timeout", DOCTOR_STEP, "--json", *extra, ns=ns, timeout=timeout
        )
        if not done.stdout.strip():
            raise LabError(f"natsync doctor printed nothing: {done.stderr.strip()[-1000:]}")
        report: dict[str, Any] = json.loads(done.stdout)
        return report

    def doctor_from_phone(
        self, *extra: str, heartbeat: int = 0, ca_file: Path | None = None
    ) -> dict[str, Any]:
        """The doctor as the phone sees things: its resolver (the cache), its CA."""
        return self.doctor(
            self.lab.phone, PUBLIC_URL,
            "--resolver", "127.0.0.1", "--authoritative", f"{t.INET}:53",
            "--ca-file", str(ca_file or self.ca_file), "--user", USER, "--password", PASSWORD,
            "--heartbeat", str(heartbeat), *extra,
        )  # fmt: skip

    def doctor_inside(
        self,
        *extra: str,
        url: str = PUBLIC_URL,
        resolver: str = f"{t.INET}:53",
        config: Path | None = None,
    ) -> dict[str, Any]:
        """The doctor inside-out, on the LAN host with the deployment's config."""
        return self.doctor(
            self.lab.lan, url, "--config", str(config or self.config),
            "--resolver", resolver, "--authoritative", f"{t.INET}:53",
            "--ca-file", str(self.ca_file), "--heartbeat", "0", *extra,
        )  # fmt: skip

    # -- ddns -----------------------------------------------------------------------------
    def ddns_update(self) -> subprocess.CompletedProcess[str]:
        return self.lab.natsync("ddns", "update", "--config", str(self.config))

    def ddns_update6(self) -> subprocess.CompletedProcess[str]:
        """`natsync ddns update` for IPv6 alone: the LAN host's global address found by its
        interface and by STUN over IPv6 (coturn on the internet's IPv6 address), published as
        the public name's AAAA record."""
        text = self.config.read_text()
        text = text.replace("families = [4]", "families = [6]")
        sources = 'sources = ["interface", "stun"]'
        text = text.replace('sources = ["natpmp", "upnp", "stun"]', sources)
        text = text.replace(f'"{t.INET}:{STUN_PORT}"', f'"[{t.INET6}]:{STUN_PORT}"')
        text = text.replace(f'names = ["{PUBLIC_NAME}", "{MX_NAME}"]', f'names = ["{PUBLIC_NAME}"]')
        text = text.replace(f'mx_domain = "{ZONE}"\n', "")
        path = self.dir / "ddns6.toml"
        path.write_text(text)
        return self.lab.natsync("ddns", "update", "--json", "--config", str(path))

    def start_ddns(self) -> None:
        self.stop_ddns()
        self.ddns_runner = self.lab.spawn(
            self.lab.lan, *self._natsync(), "ddns", "run", "--config", str(self.config),
            log="ddns-run.log", env=self.lab.env(),
        )  # fmt: skip

    def stop_ddns(self) -> None:
        if self.ddns_runner is not None:
            self.lab.forget(self.ddns_runner)
            self.ddns_runner = None

    def wait_record(self, address: str, limit: float, name: str = PUBLIC_NAME) -> float:
        started = time.monotonic()
        while time.monotonic() - started < limit:
            if self.dig(name) == {address}:
                return time.monotonic() - started
            time.sleep(0.1)
        raise LabError(f"{name} did not become {address} within {limit} s")

    # -- between scenarios ----------------------------------------------------------------
    def reset(self) -> None:
        """Back to the starting picture: the public address, the forwards, no hairpin, the
        kernel's conntrack timeout, DNS on the public address, the default server, a fresh
        TTL-honouring phone without hosts entries."""
        self.stop_ddns()
        self.stop_relay()
        self.stop_edge()
        self.set_lan_dns(None)
        if self.lab.wan_address != t.PUBLIC:
            self.lab.set_wan_address(t.PUBLIC)
        self.lab.set_hairpin(False)
        if self.lab.topology.forwards != DEFAULT_FORWARDS:
            self.lab.set_forwards(DEFAULT_FORWARDS)
        self.lab.set_conntrack_idle(None)
        if self.lab.topology.privileged_mappings:
            self.lab.set_privileged_mappings(False)
        if self.aaaa():
            self.set_aaaa(None)
        self.start_server()
        if self.dig(PUBLIC_NAME) != {t.PUBLIC} or self.dig(MX_NAME) != {t.PUBLIC}:
            done = self.ddns_update()
            if done.returncode != 0:
                raise LabError(f"ddns update failed: {done.stdout}{done.stderr}")
        self.set_phone(sticky=None)


def summary(findings: Sequence[dict[str, Any]]) -> str:
    return "; ".join(f"{f['severity']}: {f['title']}" for f in findings)
