"""`natsync init NAME`: write the deployment file for the public name NAME.

It detects what it can (the LAN address, the router and whether it maps ports, the public
address and carrier-grade NAT, a local MTA on port 25), asks what it cannot (or takes flags for
everything, for scripts: ``--yes`` never asks), makes the private CA and the certificates the
file names, and writes one commented TOML file: /etc/natsync/natsync.toml as root,
./natsync.toml otherwise. `natsync check` accepts what it writes; `natsync run` runs it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click

from natsync.ddns.settings import DEFAULT_INTERVAL, DEFAULT_TTL
from natsync.deployment import LOCAL_CONFIG, SYSTEM_CONFIG
from natsync.errors import NatsyncError

if TYPE_CHECKING:
    from natsync.mail.dkim import DkimKey

#: Where the parts listen when natsync is not root: unprivileged ports the router maps the
#: public 443 / 25 / 80 to (see docs/run.md). As root (or with CAP_NET_BIND_SERVICE) the
#: public ports are used directly.
UNPRIVILEGED = {"https": 8443, "smtp": 2525, "http": 8080}
PRIVILEGED = {"https": 443, "smtp": 25, "http": 80}
#: The server behind the edge, on loopback only (the edge is what phones reach).
INTERNAL_SERVER_PORT = 9443
#: The name the internal server's certificate carries (the edge checks it with the CA).
INTERNAL_NAME = "localhost"
_MTA_NOTE = " (from the local MTA, which relays to it)"
#: --listen's default: every IPv4 address (the router forwards to this machine).
IPV4_ANY = "0.0.0.0"  # noqa: S104 - the public side
#: With --ipv6: the edge's spelling for every address of both families (natsync.edge.config),
#: and the server's SMTP listener's (a bracketed "::" takes IPv4 too, natsync.server).
EDGE_DUAL_STACK = "*"
SMTP_DUAL_STACK = "[::]"
_DUAL_NOTE = "  # both IPv4 and IPv6"


def _mapping(public: int, local: int) -> str:
    """A [portmap] mapping: untranslated when the ports agree ("443/tcp"), which an IPv6
    pinhole can carry too; translated ("443:8443/tcp") is IPv4 only (IPv6 is not translated)."""
    return f"{public}/tcp" if public == local else f"{public}:{local}/tcp"


@dataclass(slots=True)
class Detected:
    lan_address: str = ""
    router: str = ""
    public_address: str = ""
    cgnat: bool = False
    notes: list[str] = field(default_factory=list)


def lan_address() -> str:
    """The address this machine's outbound traffic leaves from (read from a connected UDP
    socket: connect() on UDP sends no packet)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("192.0.2.1", 9))  # TEST-NET-1: never sent, only routed
        except OSError:
            return ""
        return str(sock.getsockname()[0])


def detect(router: str, upnp_location: str) -> Detected:
    """Ask the router (NAT-PMP, UPnP) and the interfaces what the public address is."""
    from natsync.ddns.agreement import VerdictKind, judge
    from natsync.ddns.settings import DdnsSettings
    from natsync.ddns.sources import Source, gather

    found = Detected(lan_address=lan_address())
    settings = DdnsSettings(
        sources=(Source.NATPMP, Source.UPNP, Source.INTERFACE),
        families=(4,),
        router=router,
        upnp_location=upnp_location,
        timeout=2.0,
    )
    observations = gather(settings)
    for observation in observations:
        if observation.address is not None and observation.source in (Source.NATPMP, Source.UPNP):
            found.router = str(observation.source)
    verdict = judge(observations, 4)
    found.public_address = str(verdict.address) if verdict.address else ""
    found.cgnat = verdict.kind == VerdictKind.CGNAT
    found.notes.append(verdict.summary)
    if found.cgnat:
        found.notes.append(
            "carrier-grade NAT: the router's outside address is not public, so no port "
            "forward can make this machine reachable; ask the ISP for a public IPv4 address "
            "(often free), or use IPv6, or a VPS relay (docs/deploy.md)"
        )
    elif not found.router:
        found.notes.append(
            "the router did not answer UPnP or NAT-PMP: forward the public ports by hand "
            "in its web page (printed below), or enable UPnP there"
        )
    return found


def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))  # noqa: S104 - a bind test, closed at once
        except PermissionError:
            return False  # not ours to bind; nobody shown to hold it
        except OSError:
            return True
    return False


def _q(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _list(items: list[str]) -> str:
    return "[" + ", ".join(_q(i) for i in items) + "]"


def render(
    *,
    name: str,
    domain: str,
    data_dir: Path,
    ports: dict[str, int],
    listen: str,
    smtp_via_mta: bool,
    cert_mode: str,
    acme_directory: str,
    acme_ca: str,
    admin_email: str,
    store: str,
    portmap: bool,
    router: str,
    upnp_location: str,
    dns_server: str,
    dns_zone: str,
    tsig_key: str,
    admin_listen: str,
    edge_admin_listen: str = "127.0.0.1:9180",
    server_port: int = INTERNAL_SERVER_PORT,
    dns_names: tuple[str, ...] = (),
    dns_ttl: int = DEFAULT_TTL,
    dns_interval: float = DEFAULT_INTERVAL,
    ipv6: bool = False,
    challenge: str = "auto",
) -> str:
    """The commented deployment file."""
    tls = data_dir / "tls"
    edge_host = listen
    smtp_host = listen
    if ipv6 and listen == IPV4_ANY:  # dual stack: phones on IPv6 networks reach the same parts
        edge_host, smtp_host = EDGE_DUAL_STACK, SMTP_DUAL_STACK
    smtp_listen = f"127.0.0.1:{ports['smtp']}" if smtp_via_mta else f"{smtp_host}:{ports['smtp']}"
    mappings = [_mapping(443, ports["https"])]
    if not smtp_via_mta:
        mappings.append(_mapping(25, ports["smtp"]))
    if cert_mode == "acme":
        mappings.append(_mapping(80, ports["http"]))
    public_cert = "public"
    edge_http = ""
    if cert_mode == "acme":  # the router's port 80 goes here
        http_listen = f"{edge_host}:{ports['http']}"
        edge_http = (
            f"http_listen = {_q(http_listen)}   # port 80: ACME HTTP-01, the rest -> HTTPS\n"
        )
    out = f"""# natsync deployment for {name}, written by `natsync init`.
# Check it with `natsync check -c THIS_FILE`, run it with `natsync run -c THIS_FILE`.
# `natsync run` reloads it on SIGHUP (kill -HUP, or systemctl reload natsync).

[server]
# The ActiveSync server. It listens on loopback only: phones reach the edge ([edge]).
host = "127.0.0.1"
port = {server_port}
tls_cert = {_q(str(tls / "server.pem"))}     # issued by the private CA in data_dir/ca
tls_key = {_q(str(tls / "server.key"))}
# The name phones use (Autodiscover answers with it; the self-check connects to it).
public_name = {_q(name)}
# Store, CA, certificates and state. The store: "" = SQLite in data_dir, or
# "postgresql://user:password@host/database" for several server processes.
data_dir = {_q(str(data_dir))}
store = {_q(store)}
# Mail domains this server receives for (the MX of each must point at {name}).
domains = {_list([domain])}
# SMTP in: where natsync receives mail{_MTA_NOTE if smtp_via_mta else ""}.
smtp_listen = {_q(smtp_listen)}
# Outbound mail: "host:port" of a smarthost, or "" to queue until one is set.
smarthost = {_q("127.0.0.1:25" if smtp_via_mta else "")}
hostname = {_q(name)}
# The edge's address: its X-Forwarded-For names the phone.
trusted_proxies = ["127.0.0.1"]

[edge]
# What phones see: TLS with the public certificate, only ActiveSync, Autodiscover and ACME
# paths published, held Pings never cut by a timeout.
listen = {_q(f"{edge_host}:{ports['https']}")}{_DUAL_NOTE if edge_host == EDGE_DUAL_STACK else ""}
backend_name = {_q(INTERNAL_NAME)}                 # the server's certificate names it
backend_ca = {_q(str(data_dir / "ca" / "ca.pem"))}  # and this CA issued it
admin_listen = {_q(edge_admin_listen)}          # edge /healthz and /metrics: never publish it
workers = 1                                  # processes sharing the port (SO_REUSEPORT)
# SMTP is not forwarded by the edge: [server] smtp_listen receives directly.
forwards = []
{edge_http}
[[edge.certificates]]
names = {_list([name])}
cert = {_q(str(tls / f"{public_cert}.pem"))}
key = {_q(str(tls / f"{public_cert}.key"))}

[cert]
# Where the public certificate comes from: "acme" (Let's Encrypt or another ACME CA, renewed
# automatically), "private-ca" (natsync's CA; install data_dir/ca/ca.pem on the phones), or
# "files" (you renew the files; natsync run reloads them on SIGHUP).
mode = {_q(cert_mode)}
name = {_q(name)}
"""
    if cert_mode == "acme":
        # The keys docs/cert.md lists (natsync.cert.settings reads them, here and in
        # `natsync cert acme -c`); the contact is admin.email.
        out += f"""directory = {_q(acme_directory)}   # production (Let's Encrypt), staging, a URL
# auto: tls-alpn-01 on 443, http-01 on 80, dns-01 through [ddns]: what the router's answers
# to the port mapping allow ([portmap]); or ports_open = "80,443" / "443" / "80" / "none".
challenge = {_q(challenge)}
"""
        if acme_ca:
            out += f"ca_file = {_q(acme_ca)}     # CA of the ACME server (tests: pebble)\n"
    else:
        out += '# directory = "production"\n# challenge = "auto"\n'
    out += "\n"
    if dns_server:
        out += f"""[ddns]
# Public address and DNS: the name follows the public address (RFC 2136 with TSIG).
server = {_q(dns_server)}
zone = {_q(dns_zone or name.partition(".")[2])}
names = {_list([name, *dns_names])}
ttl = {dns_ttl}
interval = {dns_interval:g}
# IPv4 only unless told (--ipv6): most home routers refuse connections coming in over IPv6,
# and an AAAA record phones and ACME validators cannot reach breaks both.
families = {"[4, 6]" if ipv6 else "[4]"}
"""
        if tsig_key:
            out += f"key_file = {_q(tsig_key)}\n"
        if router:
            out += f"router = {_q(router)}\n"
        if upnp_location:
            out += f"upnp_location = {_q(upnp_location)}\n"
        out += "\n"
    else:
        out += f"""# [ddns]
# Public address and DNS: keep {name} on the public address (RFC 2136 with TSIG).
# server = "ns1.example.org:53"
# zone = {_q(name.partition(".")[2] or name)}
# names = {_list([name])}
# key_file = "/etc/natsync/tsig.key"

"""
    portmap_text = f"""[portmap]
# Router mapping: the public ports forwarded to this machine (UPnP IGD, NAT-PMP or PCP),
# renewed before they expire, removed on stop.
method = "auto"
mappings = {_list(mappings)}
"""
    if ipv6:
        portmap_text += """# IPv6: the same ports opened in the router's IPv6 firewall (pinholes,
# PCP or UPnP IGDv2), held beside the IPv4 mappings (docs/ipv6.md). IPv6 is not
# translated: a pinhole opens the port phones dial on this machine itself, so the
# parts listen on the public ports.
ipv6 = "auto"
"""
    if router:
        portmap_text += f"router = {_q(router)}\n"
    if upnp_location:
        portmap_text += f"upnp_location = {_q(upnp_location)}\n"
    if portmap:
        out += portmap_text + "\n"
    else:
        out += "".join(f"# {line}\n" if line else "#\n" for line in portmap_text.splitlines())
        out += "\n"
    out += f"""[admin]
# The whole deployment's /healthz (parts, self-check verdict) and /metrics: never publish it.
listen = {_q(admin_listen)}
email = {_q(admin_email)}

[run]
server_processes = 1        # more need server.store = "postgresql://..."
log_format = "text"         # or "json"
log_level = "info"
self_check = true           # the doctor's outside-in checks after start, address change, renewal
"""
    return out


def prepare_certificates(data_dir: Path, name: str, cert_mode: str, lan: str) -> None:
    """The private CA, the internal server's certificate and (private-ca, or until ACME
    replaces it) the public one."""
    from natsync.cert.ca import load_or_init_ca

    data_dir.mkdir(parents=True, exist_ok=True)
    ca = load_or_init_ca(data_dir / "ca")
    tls = data_dir / "tls"
    if not (tls / "server.pem").exists():
        ca.issue_server_cert([INTERNAL_NAME], ["127.0.0.1", "::1"], tls, basename="server")
    if not (tls / "public.pem").exists() and cert_mode in ("private-ca", "acme"):
        ips = [lan] if lan else []
        ca.issue_server_cert([name], ips, tls, basename="public")


def _default_output() -> Path:
    return SYSTEM_CONFIG if os.geteuid() == 0 else LOCAL_CONFIG


@click.command("init")
@click.argument("name")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help=f"File to write [default: {SYSTEM_CONFIG} as root, ./{LOCAL_CONFIG} otherwise].",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Store, CA and state [default: /var/lib/natsync as root, ./natsync-data].",
)
@click.option("--domain", default=None, help="Mail domain [default: NAME without its first label].")
@click.option(
    "--cert",
    "cert_mode",
    type=click.Choice(["acme", "private-ca", "files"]),
    default=None,
    help="Where the public certificate comes from [asked; acme].",
)
@click.option(
    "--acme-directory",
    default="production",
    show_default=True,
    help="ACME directory: production or staging (Let's Encrypt), or an https:// URL.",
)
@click.option(
    "--challenge",
    type=click.Choice(["auto", "http-01", "tls-alpn-01", "dns-01"]),
    default="auto",
    show_default=True,
    help="ACME challenge (cert.challenge; dns-01 goes through [ddns]).",
)
@click.option("--acme-ca", default="", help="CA file of the ACME server (test CAs only).")
@click.option("--email", "admin_email", default="", help="Operator's address (ACME contact).")
@click.option("--store", default="", help="postgresql://... URL [default: SQLite in data dir].")
@click.option(
    "--listen",
    default="0.0.0.0",  # noqa: S104 - the public side: the router forwards to this machine
    show_default=True,
    help="Address the edge, SMTP and ACME listen on.",
)
@click.option("--https-port", type=click.IntRange(1, 65535), default=None)
@click.option("--smtp-port", type=click.IntRange(1, 65535), default=None)
@click.option("--http-port", type=click.IntRange(1, 65535), default=None)
@click.option("--admin-listen", default="127.0.0.1:9190", show_default=True)
@click.option("--edge-admin-listen", default="127.0.0.1:9180", show_default=True)
@click.option(
    "--server-port",
    type=click.IntRange(1, 65535),
    default=INTERNAL_SERVER_PORT,
    show_default=True,
    help="The server's own port on loopback (behind the edge).",
)
@click.option(
    "--smtp-via-mta",
    is_flag=True,
    default=None,
    help="Port 25 belongs to a local MTA: receive from it, send through it.",
)
@click.option(
    "--portmap/--no-portmap",
    default=None,
    help="Ask the router to map the public ports [default: when it answers].",
)
@click.option("--router", default="", help="Router address for NAT-PMP/PCP.")
@click.option("--upnp-location", default="", help="UPnP description URL (no discovery).")
@click.option("--dns-server", default="", help="Zone's primary for RFC 2136 updates, HOST:PORT.")
@click.option("--dns-zone", default="", help="Zone to update [default: NAME's parent].")
@click.option("--tsig-key", default="", help="TSIG key file for the updates.")
@click.option(
    "--dns-name", "dns_names", multiple=True, help="Another name to keep (the MX target)."
)
@click.option(
    "--ipv6",
    is_flag=True,
    help="Dual stack: publish AAAA too, listen on IPv6 as well, and open IPv6 pinholes for the "
    "public ports (which the parts then listen on: no translation over IPv6).",
)
@click.option("--dns-ttl", type=click.IntRange(1, 86400), default=DEFAULT_TTL, show_default=True)
@click.option(
    "--dns-interval", type=click.FloatRange(0.1), default=DEFAULT_INTERVAL, show_default=True,
    help="Seconds between looks at the public address.",
)  # fmt: skip
@click.option(
    "--detect/--no-detect",
    default=True,
    show_default=True,
    help="Ask the router and the interfaces what the addresses are.",
)
@click.option(
    "-y", "--yes", is_flag=True, help="Never ask: take the defaults for what no flag says."
)
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
def init(
    name: str, output: Path | None, data_dir: Path | None, domain: str | None,
    cert_mode: str | None, acme_directory: str, challenge: str, acme_ca: str, admin_email: str,
    store: str,
    listen: str, https_port: int | None, smtp_port: int | None, http_port: int | None,
    admin_listen: str, edge_admin_listen: str, server_port: int,
    smtp_via_mta: bool | None, portmap: bool | None, router: str,
    upnp_location: str, dns_server: str, dns_zone: str, tsig_key: str,
    dns_names: tuple[str, ...], ipv6: bool, dns_ttl: int, dns_interval: float, detect: bool,
    yes: bool, force: bool,
) -> None:  # fmt: skip
    """Write the deployment file for the public name NAME (e.g. mail.example.org)."""
    name = name.lower().rstrip(".")
    if not name or " " in name or "/" in name:
        raise click.BadParameter("NAME is the public host name, e.g. mail.example.org")
    root = os.geteuid() == 0
    output = output or _default_output()
    if output.exists() and not force:
        raise click.ClickException(f"{output} exists; --force replaces it (or -o elsewhere)")
    data_dir = (data_dir or (Path("/var/lib/natsync") if root else Path("natsync-data"))).absolute()
    domain = domain or name.partition(".")[2]
    if not domain:
        raise click.BadParameter(f"{name} has no parent domain: give the mail domain (--domain)")

    found = Detected()
    if detect:
        click.echo("Looking at this network (router: UPnP, NAT-PMP; interfaces)...")
        try:
            found = detect_network(router, upnp_location)
        except (NatsyncError, OSError) as exc:
            found.notes.append(f"detection failed: {exc}")
        click.echo(f"  LAN address    : {found.lan_address or 'unknown'}")
        click.echo(f"  router mapping : {found.router or 'no answer (UPnP, NAT-PMP)'}")
        click.echo(f"  public address : {found.public_address or 'unknown'}")
        for note in found.notes:
            click.echo(f"  - {note}")

    # IPv6 pinholes open the port phones dial on this machine itself (no translation), so with
    # --ipv6 the parts take the public ports (the systemd unit gives CAP_NET_BIND_SERVICE).
    ports = dict(PRIVILEGED if root or ipv6 else UNPRIVILEGED)
    for key, flag in (("https", https_port), ("smtp", smtp_port), ("http", http_port)):
        if flag is not None:
            ports[key] = flag
    if smtp_via_mta is None:
        smtp_via_mta = False
        if ports["smtp"] == 25 and port_taken(25):
            click.echo(
                "Port 25 is taken by a local mail server (MTA). Choices:\n"
                "  1. natsync receives on port 2525; the router maps the public 25 to it\n"
                "  2. the local MTA keeps port 25 and relays mail for the domain to natsync\n"
                "     on 127.0.0.1:2525; natsync sends through it (--smtp-via-mta)"
            )
            choice = 1 if yes else click.prompt("Choose", type=click.IntRange(1, 2), default=1)
            smtp_via_mta = choice == 2
            ports["smtp"] = 2525
    elif smtp_via_mta:
        ports["smtp"] = smtp_port or 2525
    if cert_mode is None:
        cert_mode = "acme" if yes else click.prompt(
            "Public certificate from", type=click.Choice(["acme", "private-ca", "files"]),
            default="acme",
        )  # fmt: skip
    if not admin_email and not yes and cert_mode == "acme":
        admin_email = click.prompt("Your e-mail address (ACME account contact)", default="")
    if portmap is None:
        portmap = bool(found.router)

    try:
        prepare_certificates(data_dir, name, cert_mode, found.lan_address)
        dkim_key = prepare_dkim(data_dir, domain)
    except (NatsyncError, OSError) as exc:
        raise click.ClickException(f"cannot prepare {data_dir}: {exc}") from None
    text = render(
        name=name, domain=domain, data_dir=data_dir, ports=ports, listen=listen,
        smtp_via_mta=smtp_via_mta, cert_mode=cert_mode, acme_directory=acme_directory,
        acme_ca=str(Path(acme_ca).absolute()) if acme_ca else "", admin_email=admin_email,
        store=store, portmap=portmap, router=router, upnp_location=upnp_location,
        dns_server=dns_server, dns_zone=dns_zone, tsig_key=tsig_key, admin_listen=admin_listen,
        edge_admin_listen=edge_admin_listen, server_port=server_port, dns_names=dns_names,
        dns_ttl=dns_ttl, dns_interval=dns_interval, ipv6=ipv6, challenge=challenge,
    )  # fmt: skip
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc.strerror}") from None
    click.echo(f"wrote {output}")
    _next_steps(output, name, domain, ports, portmap, cert_mode, data_dir, smtp_via_mta, dkim_key)


def detect_network(router: str, upnp_location: str) -> Detected:
    return detect(router, upnp_location)


def prepare_dkim(data_dir: Path, domain: str) -> DkimKey:
    """The mail domain's DKIM key (what `natsync dkim create DOMAIN` makes): the one in
    *data_dir* if there is one, else a new one; the relay signs outgoing mail with it."""
    from natsync.mail import dkim

    return dkim.load_key(data_dir, domain) or dkim.create_key(data_dir, domain)


def _dns_records(name: str, domain: str, key: DkimKey, output: Path) -> None:
    """The zone lines to publish: the public name's address, then the mail domain's MX, SPF,
    DKIM and DMARC (natsync.mail.dns_records, as `natsync dkim records` prints them)."""
    from natsync.mail.dns_records import records_for

    click.echo(
        f"\nDNS (zone-file lines; natsync dkim records {domain} -c {output} prints them again):"
    )
    click.echo(f"  {name}. A <public address>   (or [ddns] keeps it)")
    for record in records_for(domain, name, key.public_key_b64, selector=key.selector):
        click.echo(f"  ; {record.purpose}")
        click.echo(f"  {record.zone_line()}")


def _next_steps(
    output: Path, name: str, domain: str, ports: dict[str, int], portmap: bool,
    cert_mode: str, data_dir: Path, smtp_via_mta: bool, dkim_key: DkimKey,
) -> None:  # fmt: skip
    click.echo("\nNext:")
    click.echo(f"  natsync check -c {output}")
    click.echo(f"  natsync user add you --email you@{domain} -c {output}   (a mailbox)")
    click.echo(f"  natsync run -c {output}")
    if not portmap:
        click.echo("\nOn the router, forward (TCP) to this machine:")
        click.echo(f"  443 -> {ports['https']}")
        if not smtp_via_mta:
            click.echo(f"  25  -> {ports['smtp']}")
        if cert_mode == "acme":
            click.echo(f"  80  -> {ports['http']}   (ACME HTTP-01)")
    _dns_records(name, domain, dkim_key, output)
    if smtp_via_mta:
        click.echo(
            f"\nLocal MTA: relay mail for {domain} to natsync, e.g. postfix transport_maps:\n"
            f"  {domain} smtp:[127.0.0.1]:{ports['smtp']}"
        )
    click.echo("\nOn the phone (iPhone: Settings > Mail > Accounts > Add > Microsoft Exchange;")
    click.echo("Android: Gmail or Outlook > Add account > Exchange):")
    click.echo(f"  email     you@{domain}")
    click.echo(f"  server    {name}")
    click.echo("  user      you   (the name given to natsync user add)")
    click.echo("  SSL       on")
    if cert_mode == "private-ca":
        click.echo(
            f"  first install the CA {data_dir / 'ca' / 'ca.pem'} on the phone "
            "(natsync cert export-ca; iOS: then trust it in Settings > General > About > "
            "Certificate Trust Settings)"
        )
