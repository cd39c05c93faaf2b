"""Gathering: the only I/O of the doctor. Each function looks at one link of the picture and
returns plain evidence (natsync.doctor.evidence); none of them judges what it saw.

DNS goes through dnspython (the resolver the phone uses, then the zone's authoritative servers
asked directly, without recursion); TCP and TLS through asyncio and ssl; HTTP through aiohttp;
the ActiveSync session and the held Ping through natsync.client, the way a phone does them.
Every step has a timeout, so a dead path costs seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import ipaddress
import socket
import ssl
import time
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
from aiohttp.abc import AbstractResolver, ResolveResult

from natsync.client import EASClient
from natsync.client import protocol as p
from natsync.client.protocol import ClientError, Command
from natsync.doctor.device import DOCTOR_DEVICE_ID, DOCTOR_DEVICE_TYPE
from natsync.doctor.evidence import (
    AutodiscoverEvidence,
    Connect,
    CutEvidence,
    DnsAnswer,
    HttpEvidence,
    IdleProbe,
    InsideEvidence,
    Ipv6Evidence,
    MappingEvidence,
    MxEvidence,
    NamesEvidence,
    NatEvidence,
    PinEvidence,
    PinholeEvidence,
    PinholeRecord,
    PushEvidence,
    RelayEvidence,
    SessionEvidence,
    Step,
    TlsEvidence,
    TunnelEvidence,
)
from natsync.errors import NatsyncError

if TYPE_CHECKING:
    from natsync.edge.config import EdgeConfig

#: Seconds for one DNS query, one TCP connect, one TLS handshake or one plain HTTP request:
#: long enough for a slow mobile path, short enough that a dead one is reported quickly.
DEFAULT_TIMEOUT = 5.0
#: At most this many of the zone's NS servers are asked (real zones have 2-4).
MAX_NS = 4
#: RFC 6761 / RFC 2606 special-use names: not in public DNS, so their zone's authoritative
#: servers are not looked for unless the user names a resolver or the servers.
SPECIAL_USE_SUFFIXES = ("localhost", "test", "example", "invalid", "local", "home.arpa")
#: Seconds a held Ping may run past its heartbeat before the doctor calls the path silent:
#: between 5 s and 30 s, half the heartbeat (the server answers at the heartbeat).
PING_GRACE_MIN = 5.0
PING_GRACE_MAX = 30.0
#: Seconds the idle probes may take at most: a minute, or twice the idle time to bracket
#: (rounds of parallel probes each last about as long as the longest idle time they hold).
MEASURE_BUDGET_MIN = 60.0
MEASURE_BUDGET_SHARE = 2.0
SMTP_PORT = 25
DEVICE_ID = DOCTOR_DEVICE_ID
AUTODISCOVER_PATH = "/autodiscover/autodiscover.xml"
AUTODISCOVER_REQUEST = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<Autodiscover xmlns="http://schemas.microsoft.com/exchange/autodiscover/mobilesync/'
    'requestschema/2006"><Request><EMailAddress>{email}</EMailAddress>'
    "<AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/mobilesync/"
    "responseschema/2006</AcceptableResponseSchema></Request></Autodiscover>"
)


@dataclass(frozen=True, slots=True)
class Target:
    """The URL the phone is given, taken apart."""

    scheme: str
    host: str
    port: int
    literal: bool

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    @property
    def eas_url(self) -> str:
        return self.base_url + p.EAS_PATH


def parse_target(url: str) -> Target:
    """``https://mail.example.com[:port][/...]`` (a bare host means https)."""
    if "://" not in url:
        url = "https://" + url
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise NatsyncError(f"{url!r} is not an https:// URL with a host name")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname.lower()
    try:
        ipaddress.ip_address(host)
        literal = True
    except ValueError:
        literal = False
    return Target(parts.scheme, host, port, literal)


def split_server(text: str, default_port: int = 53) -> tuple[str, int]:
    """``IP``, ``IP:PORT`` or ``[v6]:PORT``."""
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return host, int(port)
    return text, default_port


def special_use(name: str) -> bool:
    labels = name.lower().rstrip(".").split(".")
    return len(labels) == 1 or labels[-1] in SPECIAL_USE_SUFFIXES or name.endswith("home.arpa")


# -- DNS


def _resolver(server: str, timeout: float) -> dns.resolver.Resolver:
    host, port = split_server(server)
    res = dns.resolver.Resolver(configure=False)
    res.nameservers = [host]
    res.port = port
    res.lifetime = timeout
    res.timeout = timeout
    return res


def _ask_resolver(res: dns.resolver.Resolver, label: str, name: str) -> DnsAnswer:
    found: dict[str, tuple[str, ...]] = {"A": (), "AAAA": ()}
    ttls: list[int] = []
    for rdtype in ("A", "AAAA"):
        try:
            answer = res.resolve(name, rdtype, raise_on_no_answer=False, search=False)
        except dns.resolver.NXDOMAIN:
            return DnsAnswer(label, nxdomain=True)
        except dns.exception.DNSException as exc:
            return DnsAnswer(label, error=f"{rdtype}: {type(exc).__name__}: {exc}")
        if answer.rrset is not None:
            found[rdtype] = tuple(sorted(r.to_text() for r in answer.rrset))
            ttls.append(answer.rrset.ttl)
    return DnsAnswer(label, found["A"], found["AAAA"], min(ttls) if ttls else None)


def _ask_system(name: str, port: int) -> DnsAnswer:
    label = "the system resolver"
    try:
        infos = socket.getaddrinfo(name, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        nx = exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5))
        return DnsAnswer(label, nxdomain=nx, error="" if nx else str(exc))
    a = sorted({str(i[4][0]) for i in infos if i[0] == socket.AF_INET})
    aaaa = sorted({str(i[4][0]) for i in infos if i[0] == socket.AF_INET6})
    return DnsAnswer(label, tuple(a), tuple(aaaa))


def _ask_authoritative(server: str, label: str, name: str, timeout: float) -> DnsAnswer:
    host, port = split_server(server)
    found: dict[str, tuple[str, ...]] = {"A": (), "AAAA": ()}
    ttls: list[int] = []
    for rdtype in ("A", "AAAA"):
        query = dns.message.make_query(name, rdtype)
        query.flags &= ~dns.flags.RD
        try:
            reply = dns.query.udp(query, host, port=port, timeout=timeout)
            if reply.flags & dns.flags.TC:
                reply = dns.query.tcp(query, host, port=port, timeout=timeout)
        except (dns.exception.DNSException, OSError) as exc:
            return DnsAnswer(label, error=f"{type(exc).__name__}: {exc}")
        if reply.rcode() == dns.rcode.NXDOMAIN:
            return DnsAnswer(label, nxdomain=True)
        if reply.rcode() != dns.rcode.NOERROR:
            return DnsAnswer(label, error=f"answered {dns.rcode.to_text(reply.rcode())}")
        wanted = dns.rdatatype.from_text(rdtype)
        for rrset in reply.answer:
            if rrset.rdtype == wanted:
                found[rdtype] = tuple(sorted(r.to_text() for r in rrset))
                ttls.append(rrset.ttl)
    return DnsAnswer(label, found["A"], found["AAAA"], max(ttls) if ttls else None)


def _find_authoritative(
    res: dns.resolver.Resolver, name: str, timeout: float, ns_port: int = 53
) -> tuple[str, list[tuple[str, str]]]:
    """(zone, [(label, "ip:53")]) of the zone holding *name*, found through *res*."""
    zone = dns.resolver.zone_for_name(name, resolver=res)
    servers: list[tuple[str, str]] = []
    ns_answer = res.resolve(zone, "NS", search=False)
    for ns in list(ns_answer)[:MAX_NS]:
        target = ns.to_text()
        try:
            addrs = res.resolve(target, "A", search=False)
        except dns.exception.DNSException:
            continue
        for addr in list(addrs)[:1]:
            where = addr.to_text()
            if ns_port != 53:
                where = f"[{where}]:{ns_port}" if ":" in where else f"{where}:{ns_port}"
            servers.append((f"{target.rstrip('.')} ({where})", where))
    return zone.to_text().rstrip("."), servers


def gather_names_sync(
    target: Target,
    *,
    resolver: str | None,
    authoritative: Sequence[str] = (),
    email_domain: str = "",
    public: Sequence[str] = (),
    timeout: float = DEFAULT_TIMEOUT,
    ns_port: int = 53,
) -> NamesEvidence:
    """What the phone's resolver and the zone's authoritative servers say about the name."""
    if target.literal:
        return NamesEvidence(name=target.host, literal=True, public=tuple(public))
    name = target.host
    res = _resolver(resolver, timeout) if resolver else None
    if res is not None and resolver is not None:
        answer = _ask_resolver(res, f"the resolver {resolver}", name)
    else:
        answer = _ask_system(name, target.port)
    zone = ""
    auth: list[DnsAnswer] = []
    skipped = ""
    if authoritative:
        auth = [_ask_authoritative(s, s, name, timeout) for s in authoritative]
    elif special_use(name) and res is None:
        skipped = (
            f"{name} is a special-use name (RFC 6761), not in public DNS; name the resolver "
            "with --resolver to compare it with the zone's servers"
        )
    else:
        finder = res or dns.resolver.Resolver()
        finder.lifetime = timeout
        try:
            zone, servers = _find_authoritative(finder, name, timeout, ns_port)
            auth = [_ask_authoritative(ip, label, name, timeout) for label, ip in servers]
            if not servers:
                skipped = f"no address for any NS server of {zone}"
        except dns.exception.DNSException as exc:
            skipped = f"the zone's NS servers could not be found: {type(exc).__name__}"
    mx = None
    if email_domain and not (special_use(email_domain) and res is None):
        mx = _gather_mx(res, email_domain, timeout)
    return NamesEvidence(
        name=name,
        resolver=answer,
        zone=zone,
        authoritative=tuple(auth),
        authoritative_skipped=skipped,
        public=tuple(public),
        mx=mx,
    )


def _gather_mx(res: dns.resolver.Resolver | None, domain: str, timeout: float) -> MxEvidence:
    resolver = res or dns.resolver.Resolver()
    resolver.lifetime = timeout
    try:
        answer = resolver.resolve(domain, "MX", raise_on_no_answer=False, search=False)
    except dns.exception.DNSException as exc:
        return MxEvidence(domain, error=f"{type(exc).__name__}: {exc}")
    records = tuple(
        sorted((int(r.preference), r.exchange.to_text().rstrip(".")) for r in answer.rrset or ())
    )
    targets: list[tuple[str, tuple[str, ...]]] = []
    for _, host in records:
        found = _ask_resolver(resolver, "resolver", host)
        targets.append((host, found.addresses))
    return MxEvidence(domain, records, tuple(targets))


# -- TCP


def connect_error(exc: OSError) -> str:
    """A failed connection in the words of the reach check ("unreachable", or the OS's)."""
    if exc.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
        return "unreachable"
    return exc.strerror or str(exc)


async def connect(address: str, port: int, timeout: float) -> Connect:
    started = time.monotonic()
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), timeout)
    except TimeoutError:
        return Connect(address, port, False, "timeout", time.monotonic() - started)
    except ConnectionRefusedError:
        return Connect(address, port, False, "refused", time.monotonic() - started)
    except OSError as exc:
        return Connect(address, port, False, connect_error(exc), time.monotonic() - started)
    elapsed = time.monotonic() - started
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return Connect(address, port, True, "", elapsed)


# -- TLS


def phone_context(ca_file: Path | None) -> ssl.SSLContext:
    """The trust a phone would apply: the given CA file, or the system store."""
    if ca_file is not None:
        return ssl.create_default_context(cafile=str(ca_file))
    return ssl.create_default_context()


def trust_label(ca_file: Path | None) -> str:
    return f"the CA file {ca_file}" if ca_file is not None else "the system trust store"


async def gather_tls(
    address: str, port: int, server_name: str, ca_file: Path | None, timeout: float
) -> TlsEvidence:
    """A verifying handshake (the phone's verdict) and the chain as presented (to explain it)."""
    from natsync.cert.fetch import CertFetchError, fetch_chain

    context = phone_context(ca_file)
    verified = False
    code, message, handshake_error, protocol, cipher = 0, "", "", "", ""
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(
                address,
                port,
                ssl=context,
                server_hostname=server_name,
                ssl_shutdown_timeout=timeout,  # a server that never answers close_notify
            ),
            timeout,
        )
        sslobj = writer.get_extra_info("ssl_object")
        if sslobj is not None:
            protocol = sslobj.version() or ""
            cipher = (sslobj.cipher() or ("",))[0]
        verified = True
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()
    except ssl.SSLCertVerificationError as exc:
        code, message = exc.verify_code, exc.verify_message
    except ssl.SSLError as exc:
        handshake_error = f"{exc.reason or exc}"
    except TimeoutError:
        handshake_error = f"no TLS handshake within {timeout:.0f} s"
    except OSError as exc:
        handshake_error = exc.strerror or str(exc)
    chain: tuple[bytes, ...] = ()
    try:
        fetched = await asyncio.to_thread(
            fetch_chain, address, port, server_name=server_name, timeout=timeout
        )
        from cryptography.hazmat.primitives.serialization import Encoding

        chain = tuple(c.public_bytes(Encoding.DER) for c in fetched.chain)
        protocol = protocol or (fetched.tls_version or "")
        cipher = cipher or (fetched.cipher or "")
    except CertFetchError as exc:
        handshake_error = handshake_error or exc.message
    anchors = await asyncio.to_thread(_anchors, ca_file)
    return TlsEvidence(
        address=address,
        port=port,
        server_name=server_name,
        trust=trust_label(ca_file),
        chain=chain,
        verified=verified,
        verify_code=code,
        verify_message=message,
        handshake_error=handshake_error,
        protocol=protocol,
        cipher=cipher,
        anchors=anchors,
    )


def _anchors(ca_file: Path | None) -> tuple[bytes, ...]:
    """The trust store's certificates as DER (empty when it cannot be read)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from natsync.cert.fetch import file_store, system_store

    try:
        store = file_store(ca_file) if ca_file is not None else system_store()
    except NatsyncError:
        return ()
    return tuple(c.public_bytes(Encoding.DER) for c in store.certificates)


def fingerprint(der: bytes) -> str:
    """``sha256:AB:CD:...``, the form [edge] backend_pin is written in."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return "sha256:" + ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


# -- HTTP, with the phone's addresses and trust


class PinnedResolver(AbstractResolver):
    """Resolve the target's host to the addresses the phone's resolver gave, nothing else."""

    def __init__(self, host: str, addresses: Sequence[str]) -> None:
        self.host = host
        self.addresses = list(addresses)

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        addrs = self.addresses if host.lower() == self.host else [host]
        out: list[ResolveResult] = []
        for addr in addrs:
            fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
            out.append(
                {
                    "hostname": host,
                    "host": addr,
                    "port": port,
                    "family": fam,
                    "proto": 0,
                    "flags": socket.AI_NUMERICHOST,
                }
            )
        return out

    async def close(self) -> None:
        return None


def _connector(target: Target, addresses: Sequence[str], ca_file: Path | None) -> Any:
    ssl_arg: Any = phone_context(ca_file) if target.scheme == "https" else False
    return aiohttp.TCPConnector(
        ssl=ssl_arg, resolver=PinnedResolver(target.host, addresses), force_close=True
    )


async def gather_http(
    target: Target, addresses: Sequence[str], ca_file: Path | None, user: str, timeout: float
) -> HttpEvidence:
    evidence: dict[str, Any] = {"url": target.eas_url}
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    identity = p.Identity(
        user=user or "doctor", device_id=DEVICE_ID, device_type=DOCTOR_DEVICE_TYPE
    )
    async with aiohttp.ClientSession(connector=_connector(target, addresses, ca_file)) as http:
        try:
            async with http.options(target.eas_url, timeout=client_timeout) as resp:
                await resp.read()
                evidence["options_status"] = resp.status
                evidence["options_headers"] = tuple(resp.headers.items())
        except (aiohttp.ClientError, TimeoutError) as exc:
            evidence["options_error"] = f"{type(exc).__name__}: {exc}"
        url = f"{target.eas_url}?{p.plain_query(identity, Command.FolderSync)}"
        headers = p.request_headers(p.DEFAULT_VERSION, None, "natsync-doctor")
        try:
            async with http.post(url, data=b"", headers=headers, timeout=client_timeout) as resp:
                await resp.read()
                evidence["anonymous_status"] = resp.status
                evidence["anonymous_challenge"] = resp.headers.get("WWW-Authenticate", "")
        except (aiohttp.ClientError, TimeoutError) as exc:
            evidence["anonymous_error"] = f"{type(exc).__name__}: {exc}"
    return HttpEvidence(**evidence)


class DoctorClient(EASClient):
    """The device emulator, connecting to the addresses the phone's resolver gave."""

    def __init__(
        self, target: Target, addresses: Sequence[str], ca_file: Path | None, **kw: Any
    ) -> None:
        super().__init__(target.base_url, device_id=DEVICE_ID, device_type=DOCTOR_DEVICE_TYPE, **kw)
        self._doctor_connector = (target, list(addresses), ca_file)

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            target, addresses, ca_file = self._doctor_connector
            self._session = aiohttp.ClientSession(
                connector=_connector(target, addresses, ca_file),
                headers={"Authorization": self._authorization},
            )
        return self._session


async def _step(steps: list[Step], command: str, action: Any) -> Any:
    started = time.monotonic()
    try:
        result = await action
    except ClientError as exc:
        steps.append(
            Step(
                command,
                False,
                exc.message,
                exc.http_status,
                exc.eas_status,
                time.monotonic() - started,
            )
        )
        return None
    steps.append(Step(command, True, "", 200, None, time.monotonic() - started))
    return result if result is not None else True


async def gather_session(client: DoctorClient, user: str) -> tuple[SessionEvidence, str | None]:
    """Provision, FolderSync, Sync of the Inbox; (evidence, the Inbox id when all worked)."""
    steps: list[Step] = []
    options = await _step(steps, "OPTIONS", client.options())
    if options is None:
        return SessionEvidence(user, "", tuple(steps)), None
    if await _step(steps, "Provision", client.provision()) is None:
        return SessionEvidence(user, client.version, tuple(steps)), None
    hierarchy = await _step(steps, "FolderSync", client.folder_sync())
    if hierarchy is None:
        return SessionEvidence(user, client.version, tuple(steps)), None
    try:
        inbox = client.folder(type=2).server_id
    except ClientError as exc:
        steps.append(Step("FolderSync", False, exc.message))
        return SessionEvidence(user, client.version, tuple(steps)), None
    started = time.monotonic()
    try:
        result = await client.sync(inbox)
    except ClientError as exc:
        steps.append(
            Step(
                "Sync",
                False,
                exc.message,
                exc.http_status,
                exc.eas_status,
                time.monotonic() - started,
            )
        )
        return SessionEvidence(user, client.version, tuple(steps)), None
    steps.append(
        Step(
            "Sync",
            True,
            f"Inbox: {len(result.added)} item(s) in {result.rounds} round(s)",
            200,
            None,
            time.monotonic() - started,
        )
    )
    return SessionEvidence(user, client.version, tuple(steps)), inbox


def ping_grace(heartbeat: int) -> float:
    return max(PING_GRACE_MIN, min(PING_GRACE_MAX, heartbeat / 2))


async def _one_ping(client: DoctorClient, inbox: str, heartbeat: int) -> PushEvidence:
    started = time.monotonic()
    try:
        response = await client.request(
            Command.Ping,
            p.ping_request(heartbeat, [inbox]),
            timeout=heartbeat + ping_grace(heartbeat),
        )
    except ClientError as exc:
        elapsed = time.monotonic() - started
        cause = exc.__cause__
        if isinstance(cause, TimeoutError):
            outcome = "silent"
        elif isinstance(cause, aiohttp.ClientError | OSError):
            outcome = "cut"
        else:
            outcome = "error"
        detail = f"{type(cause).__name__}: {cause}" if cause is not None else exc.message
        return PushEvidence(heartbeat, outcome, elapsed, exc.eas_status, None, detail)
    elapsed = time.monotonic() - started
    if response.tree is None:
        return PushEvidence(heartbeat, "error", elapsed, None, None, "an empty Ping answer")
    status, _, limit = p.parse_ping(response.tree)
    outcome = {1: "expired", 2: "changes"}.get(status, "refused")
    return PushEvidence(heartbeat, outcome, elapsed, status, limit)


async def gather_push(client: DoctorClient, inbox: str, heartbeat: int) -> PushEvidence:
    """Hold a Ping for *heartbeat* seconds and time what the path does with it."""
    first = await _one_ping(client, inbox, heartbeat)
    if (
        first.outcome == "refused"
        and first.status == 5
        and first.limit is not None
        and first.limit < heartbeat
    ):
        # Above the server's maximum: a phone takes the limit it is given and asks again.
        again = await _one_ping(client, inbox, first.limit)
        return PushEvidence(
            again.heartbeat,
            again.outcome,
            again.seconds,
            again.status,
            again.limit,
            again.detail,
            asked=heartbeat,
        )
    return first


# -- the path's idle cut


async def _read_answer(reader: asyncio.StreamReader) -> bool:
    """Read one HTTP/1.1 answer (Content-Length or chunked); whether the server keeps the
    connection open after it."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1."):
        raise ConnectionError(f"not an HTTP answer: {lines[0][:60]!r}")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip().lower()
    if "chunked" in fields.get("transfer-encoding", ""):
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    else:
        await reader.readexactly(int(fields.get("content-length", "0") or 0))
    return "close" not in fields.get("connection", "")


async def idle_probe(
    target: Target,
    address: str,
    ca_file: Path | None,
    authorization: str,
    idle: float,
    timeout: float,
) -> IdleProbe:
    """One connection: an answered OPTIONS, *idle* seconds with no byte, OPTIONS again."""
    host = target.host if target.port in (80, 443) else f"{target.host}:{target.port}"
    request = (
        f"OPTIONS {p.EAS_PATH} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: natsync-doctor\r\n"
        f"Authorization: {authorization}\r\nContent-Length: 0\r\n\r\n"
    ).encode()
    tls: Any = phone_context(ca_file) if target.scheme == "https" else None
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                address,
                target.port,
                ssl=tls,
                server_hostname=target.host if tls else None,
                ssl_shutdown_timeout=timeout if tls else None,
            ),
            timeout,
        )
    except (OSError, TimeoutError) as exc:
        return IdleProbe(idle, "error", 0.0, f"connect: {type(exc).__name__}: {exc}")
    try:
        try:
            writer.write(request)
            keep = await asyncio.wait_for(_read_answer(reader), timeout)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            return IdleProbe(idle, "error", 0.0, f"first request: {type(exc).__name__}: {exc}")
        if not keep:
            return IdleProbe(idle, "closed", 0.0, "the server closes after each answer")
        started = time.monotonic()
        try:
            data = await asyncio.wait_for(reader.read(1), idle)
        except TimeoutError:
            pass  # the idle time passed with no byte, as it should
        except OSError as exc:  # reset while idle: the path cut it now, and said so
            seconds = time.monotonic() - started
            return IdleProbe(seconds, "cut", seconds, f"reset while idle: {exc}")
        else:
            seconds = time.monotonic() - started
            what = "closed the idle connection" if not data else "sent bytes unasked"
            return IdleProbe(idle, "closed", seconds, f"the far end {what}")
        writer.write(request)
        try:
            await asyncio.wait_for(_read_answer(reader), timeout)
        except TimeoutError:
            return IdleProbe(idle, "cut", idle, f"no answer within {timeout:g} s")
        except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
            return IdleProbe(idle, "cut", idle, f"{type(exc).__name__}: {exc}")
        return IdleProbe(idle, "answered", idle)
    finally:
        writer.close()
        with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
            await asyncio.wait_for(writer.wait_closed(), timeout)


async def _probe_round(make: Any, idles: Sequence[float]) -> list[IdleProbe]:
    """Run one probe per idle time in parallel; once one is cut, the longer ones would only be
    cut too: they are stopped."""
    tasks = {asyncio.ensure_future(make(t)): t for t in idles}
    results: list[IdleProbe] = []
    try:
        pending = set(tasks)
        while pending:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                probe = task.result()
                results.append(probe)
                if probe.outcome == "cut":
                    for other in [o for o in pending if tasks[o] > probe.idle]:
                        other.cancel()
                        pending.discard(other)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return results


def measure_budget(upper: float) -> float:
    """Seconds the measuring of a cut below *upper* may take."""
    return max(MEASURE_BUDGET_MIN, MEASURE_BUDGET_SHARE * upper)


async def ping_bisect(
    client: DoctorClient,
    inbox: str,
    measured: CutEvidence,
    upper: float,
    progress: Any = None,
) -> CutEvidence:
    """Narrow a bracket the idle probes could not (the far end closes idle connections before
    the cut) with held Pings, one after the other (one live Ping per device), each halving it,
    within what is left of the budget."""
    from natsync.doctor.push import HELD_PING, next_heartbeat, ping_precision

    started = time.monotonic()
    survived, cut = measured.survived, measured.cut
    probes = list(measured.probes)
    pings, stopped = 0, ""
    budget = measure_budget(upper)
    while cut - survived > ping_precision(cut):
        heartbeat = next_heartbeat(survived, cut)
        if heartbeat is None:
            break
        wait = heartbeat + ping_grace(heartbeat)
        if measured.seconds + time.monotonic() - started + wait > budget:
            stopped = f"another held Ping would pass the measuring budget of {budget:.0f} s"
            break
        if progress is not None:
            progress(
                f"push: holding a Ping for {heartbeat} s (the cut lies between "
                f"{survived:.0f} and {cut:.0f} s)",
                wait,
            )
        ev = await _one_ping(client, inbox, heartbeat)
        pings += 1
        if ev.outcome == "expired":
            survived = float(heartbeat)
            probes.append(IdleProbe(survived, "answered", ev.seconds, HELD_PING))
        elif ev.outcome == "changes":  # new mail ended it early: survived that long
            survived = max(survived, ev.seconds)
            probes.append(IdleProbe(ev.seconds, "answered", ev.seconds, HELD_PING))
        elif ev.outcome in ("silent", "cut"):
            cut = float(heartbeat) if ev.outcome == "silent" else min(cut, ev.seconds)
            probes.append(IdleProbe(cut, "cut", ev.seconds, f"{HELD_PING}: {ev.outcome}"))
        else:
            limit = f" (server limit {ev.limit} s)" if ev.limit is not None else ""
            stopped = f"a {heartbeat} s Ping was refused: {ev.detail or f'Status {ev.status}'}"
            stopped += limit
            break
    precision = ping_precision(cut) if pings else measured.precision
    if cut - survived <= precision:
        stopped = ""
    elif not stopped:
        stopped = measured.stopped
    elif measured.stopped:
        stopped = f"{measured.stopped}; {stopped}"
    return CutEvidence(
        survived,
        cut,
        precision,
        tuple(sorted(probes, key=lambda p: p.idle)),
        measured.rounds,
        measured.seconds + time.monotonic() - started,
        stopped,
        "probes and pings" if pings else measured.method,
    )


async def measure_cut(
    target: Target,
    address: str,
    ca_file: Path | None,
    authorization: str,
    upper: float,
    timeout: float,
    progress: Any = None,
) -> CutEvidence:
    """Bracket the path's idle cut below *upper* (an idle time known not to survive): rounds of
    parallel idle probes, each round between the longest survived and the shortest cut of the
    last, until the bracket is within the precision (or the time budget is spent)."""
    from natsync.doctor.push import MAX_ROUNDS, cut_precision, narrow, probe_idles

    started = time.monotonic()
    budget = measure_budget(upper)
    survived, cut, far_close = 0.0, float(upper), float("inf")
    probes: list[IdleProbe] = []
    rounds, stopped = 0, ""
    while cut - survived > cut_precision(cut):
        top = min(cut, far_close)
        if top - survived <= cut_precision(cut) / 2:
            stopped = (
                f"the far end closes idle connections itself after {far_close:.0f} s, so idle "
                "probes cannot look further"
            )
            break
        if rounds >= MAX_ROUNDS:
            stopped = f"{rounds} rounds of probes, the most the doctor runs"
            break
        if time.monotonic() - started + top + timeout > budget:
            stopped = f"another round would pass the measuring budget of {budget:.0f} s"
            break
        idles = probe_idles(survived, top)
        if progress is not None:
            progress(
                f"push: idle probes round {rounds + 1}, between {survived:.1f} and {top:.1f} s",
                top + timeout,
            )
        found = await _probe_round(
            lambda t: idle_probe(target, address, ca_file, authorization, t, timeout), idles
        )
        rounds += 1
        probes.extend(found)
        if all(p.outcome == "error" for p in found):
            stopped = f"no probe could start ({found[0].detail})"
            break
        survived, cut, closed = narrow(survived, cut, found)
        if closed is not None:
            far_close = min(far_close, closed)
    return CutEvidence(
        survived,
        cut,
        cut_precision(cut),
        tuple(sorted(probes, key=lambda p: p.idle)),
        rounds,
        time.monotonic() - started,
        stopped,
    )


async def gather_autodiscover(
    target: Target,
    addresses: Sequence[str],
    ca_file: Path | None,
    user: str,
    password: str,
    email: str,
    timeout: float,
) -> AutodiscoverEvidence:
    from xml.sax.saxutils import escape

    url = target.base_url + AUTODISCOVER_PATH
    body = AUTODISCOVER_REQUEST.format(email=escape(email)).encode()
    evidence: dict[str, Any] = {"email": email, "url": url, "expected_url": target.eas_url}
    async with aiohttp.ClientSession(connector=_connector(target, addresses, ca_file)) as http:
        try:
            async with http.post(
                url,
                data=body,
                headers={
                    "Content-Type": "text/xml; charset=utf-8",
                    "Authorization": basic_authorization(user, password),
                },
                timeout=aiohttp.ClientTimeout(total=timeout),
            ) as resp:
                raw = await resp.read()
                evidence["status"] = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            evidence["error"] = f"{type(exc).__name__}: {exc}"
            return AutodiscoverEvidence(**evidence)
    if evidence["status"] == 200:
        evidence.update(parse_autodiscover(raw))
    return AutodiscoverEvidence(**evidence)


def basic_authorization(user: str, password: str) -> str:
    """RFC 7617 Basic credentials in UTF-8, as phones send them."""
    import base64

    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode("ascii")


def parse_autodiscover(raw: bytes) -> dict[str, str]:
    """The MobileSync URL, or the error code and message, of an Autodiscover answer."""
    import defusedxml.ElementTree as DET

    try:
        root = DET.fromstring(raw)
    except Exception as exc:  # defusedxml raises several unrelated types
        return {"error_code": "unreadable", "error_message": str(exc)}
    out: dict[str, str] = {}
    server_type = ""
    for el in root.iter():
        local = str(el.tag).rpartition("}")[2]
        text = (el.text or "").strip()
        if local == "Type":
            server_type = text
        elif local == "Url" and server_type == "MobileSync" and "mobilesync_url" not in out:
            out["mobilesync_url"] = text
        elif local == "ErrorCode":
            out["error_code"] = text
        elif local == "Message":
            out["error_message"] = text
    return out


# -- inside-out


def remove_doctor_device(config: Path, user: str) -> str:
    """Remove the doctor's test device from *user*'s account in the store of *config*'s
    [server]; what was done, in words ("" when there was nothing to remove)."""
    from natsync.config import load_config
    from natsync.store import open_store

    server = load_config(config)
    store = open_store(server.store_url)
    try:

        def remove(txn: Any) -> str:
            account = txn.get_user(user)
            if account is None:
                return ""
            device = txn.get_device(account.id, DOCTOR_DEVICE_ID)
            if device is None or device.device_type != DOCTOR_DEVICE_TYPE:
                return ""
            txn.remove_device(device.id)
            return f"removed the doctor's test device {DOCTOR_DEVICE_ID} from {user}'s account"

        return str(store.run_sync(remove))
    finally:
        store.close()


def read_toml_tables(config: Path) -> dict[str, Any]:
    """The deployment file's tables; ConfigError (exit 3) when it cannot be read."""
    from natsync.errors import ConfigError

    try:
        data = tomllib.loads(config.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{config}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config} is not valid TOML: {exc}") from exc
    return data


def read_edge_table(config: Path) -> dict[str, Any]:
    table = read_toml_tables(config).get("edge", {})
    return table if isinstance(table, dict) else {}


def gather_inside_sync(config: Path, timeout: float, edge: Any = None) -> InsideEvidence:
    """The ddns verdict, the router's mappings and the edge pin, from the deployment's config.
    *edge*: the edge's settings as ``natsync run`` gives them (its backends follow [server]
    when [edge] names none: natsync.run.derive.edge_for), passed by the caller that knows the
    deployment; None reads [edge] of *config* alone."""
    from natsync.ddns.agreement import judge
    from natsync.ddns.settings import load_ddns, load_portmap
    from natsync.ddns.sources import Source
    from natsync.ddns.sources import gather as observe

    evidence = InsideEvidence()
    ddns = load_ddns(config)
    if ddns.names:
        evidence.ddns_relay = Source.RELAY in ddns.sources
    # the home's own NAT (the relay source says where DNS should point, not what the home has)
    ddns = replace(ddns, sources=tuple(s for s in ddns.sources if s != Source.RELAY))
    if ddns.sources and (ddns.stun_servers or ddns.echo_urls or ddns.interface or ddns.router):
        observations = observe(ddns)
        verdict = judge(observations, 4 if 4 in ddns.families else 6)
        evidence.nat = NatEvidence(
            verdict=str(verdict.kind),
            summary=verdict.summary,
            observations=verdict.evidence,
            address=str(verdict.address or ""),
        )
    portmap = load_portmap(config)
    if portmap.mappings:
        evidence.mappings = _mappings(portmap.mappings, portmap.upnp_location)
    if edge is not None or read_edge_table(config):
        from natsync.edge.config import load_edge_config, split_hostport

        edge = edge if edge is not None else load_edge_config(config)
        evidence.pins = tuple(_pin(edge, server, timeout) for server in edge.servers)
        if edge.relayed_listen:
            host, port = split_hostport(edge.relayed_listen, "edge.relayed_listen")
            evidence.relayed = connect_sync(host, port, timeout)
    tunnel = read_toml_tables(config).get("tunnel")
    if isinstance(tunnel, dict):
        evidence.tunnel = gather_tunnel(config, tunnel, timeout)
    evidence.host6, evidence.firewall6 = _ipv6_here(portmap.upnp_location)
    evidence.pinholes = gather_pinholes(portmap, time.time())
    return evidence


def gather_pinholes(portmap: Any, now: float) -> PinholeEvidence | None:
    """The IPv6 pinholes [portmap] asks for: what the portmap part recorded, and for IGD:2
    pinholes the router's answer about each (CheckPinholeWorking by UniqueID, which changes
    nothing). None when [portmap] asks for no pinholes."""
    from natsync.portmap.holder import IPV6_METHODS, read_status, status_path
    from natsync.portmap.manager import MappingSpec

    way = portmap.method if portmap.method in IPV6_METHODS else portmap.ipv6
    if way == "off" or not portmap.mappings:
        return None
    base = PinholeEvidence(
        tuple(str(MappingSpec.parse(m)) for m in portmap.mappings),
        way,
        now=now,
        status_file=str(status_path(portmap.data_dir)),
    )
    doc = read_status(portmap.data_dir)
    if doc is None:
        return base
    records = [
        _pinhole_record(e)
        for e in doc.get("mappings", [])
        if isinstance(e, dict) and e.get("family") == 6
    ]
    asked = [r for r in records if r.method == "upnp6" and r.unique_id is not None]
    if any(r.state in ("open", "renew-failing") for r in asked):
        router = _ask_pinholes(portmap, asked)
        records = [router.get(r.mapping, r) for r in records]
    updated = doc.get("updated")
    return replace(
        base,
        records=tuple(records),
        updated=float(updated) if isinstance(updated, int | float) else now,
    )


def _pinhole_record(entry: dict[str, Any]) -> PinholeRecord:
    def number(key: str) -> float | None:
        value = entry.get(key)
        return float(value) if isinstance(value, int | float) else None

    uid = entry.get("unique_id")
    return PinholeRecord(
        mapping=str(entry.get("mapping", "")),
        method=str(entry.get("method", "")),
        state=str(entry.get("state", "")),
        detail=str(entry.get("detail", "")),
        expires_at=number("expires_at"),
        renew_at=number("renew_at"),
        unique_id=uid if isinstance(uid, int) else None,
        address=str(entry.get("address", "")),
    )


def _ask_pinholes(portmap: Any, records: list[PinholeRecord]) -> dict[str, PinholeRecord]:
    from natsync.portmap.errors import PortMapError
    from natsync.portmap.ipv6 import default_gateway6
    from natsync.portmap.upnp import PinholeClient

    router6 = portmap.router if ":" in portmap.router else default_gateway6()
    answers: dict[str, PinholeRecord] = {}
    try:
        if router6 is None:
            raise PortMapError("this host has no IPv6 default route")
        client = PinholeClient.find(portmap.upnp_location or None, router6)
        for r in records:
            assert r.unique_id is not None
            state, detail = client.working(r.unique_id)
            answers[r.mapping] = replace(r, router=state, router_detail=detail)
    except PortMapError as exc:
        for r in records:
            answers.setdefault(r.mapping, replace(r, router_detail=exc.message))
    return answers


#: The relay's port asked through the tunnel: any answer (connected, or refused: a reset came
#: back) shows the tunnel carries packets both ways. The relay listens on its published ports.
TUNNEL_PROBE_PORT = 443
#: Seconds `wg show` may take (it asks the local wireguard-go over its UNIX socket).
WG_TIMEOUT = 5.0


def gather_tunnel(config: Path, table: dict[str, Any], timeout: float) -> TunnelEvidence:
    """The home's end of the relay tunnel: WireGuard's latest handshake (`wg show`) and the
    relay answering at its tunnel address."""
    import subprocess

    from natsync.relay.settings import home_tunnel_settings

    settings = home_tunnel_settings(table, config.parent)
    base = TunnelEvidence(settings.interface, settings.relay_endpoint, settings.relay_address)
    try:
        done = subprocess.run(  # noqa: S603 - fixed program and arguments, no shell
            ["wg", "show", settings.interface, "latest-handshakes"],  # noqa: S607
            capture_output=True,
            text=True,
            timeout=WG_TIMEOUT,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        return replace(base, wg_error=f"cannot run wg: {exc}")
    answer = connect_sync(settings.relay_address, TUNNEL_PROBE_PORT, timeout)
    if done.returncode != 0:
        error = (done.stderr.strip() or f"exit status {done.returncode}").splitlines()[-1]
        return replace(base, wg_error=error, relay_answer=answer)
    from natsync.doctor.relay import handshake_age

    age = handshake_age(done.stdout, time.time())
    return replace(base, handshake_age=age, relay_answer=answer)


def connect_sync(host: str, port: int, timeout: float) -> Connect:
    """One TCP connection, from a thread (the inside-out gathering is synchronous)."""
    started = time.monotonic()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except TimeoutError:
        return Connect(host, port, False, "timeout", time.monotonic() - started)
    except ConnectionRefusedError:
        return Connect(host, port, False, "refused", time.monotonic() - started)
    except OSError as exc:
        return Connect(host, port, False, connect_error(exc), time.monotonic() - started)
    return Connect(host, port, True, "", time.monotonic() - started)


def _ipv6_here(upnp_location: str) -> tuple[tuple[str, ...] | None, str]:
    """This host's global IPv6 addresses, and the router's IPv6 firewall as its UPnP service
    tells it (when this host has an IPv6 default route and the router answers)."""
    from natsync.portmap.errors import HostNetworkError, PortMapError
    from natsync.portmap.ipv6 import default_gateway6
    from natsync.portmap.netinfo import interface_addresses

    try:
        host6 = tuple(str(a) for a in interface_addresses() if a.version == 6 and a.is_global)
    except HostNetworkError:
        return None, ""
    router6 = default_gateway6()
    if not host6 or router6 is None:
        return host6, ""
    from natsync.portmap.upnp import PinholeClient

    try:
        enabled, allowed = PinholeClient.find(upnp_location or None, router6).status()
    except PortMapError as exc:
        return host6, f"did not answer ({exc.message})"
    if not enabled:
        return host6, "firewall off: every port is open to IPv6"
    return host6, "firewall on, " + (
        "pinholes allowed (open the port with --method upnp6 / pcp6)"
        if allowed
        else "pinholes NOT allowed: enable them in the router's pages, or use pcp6"
    )


def relay_addresses(endpoint: str, timeout: float) -> tuple[tuple[str, ...], str]:
    """The relay's public addresses from [tunnel] relay_endpoint ("host:port")."""
    host = endpoint.rpartition(":")[0].strip("[]")
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        return (), f"the relay's name {host} does not resolve: {exc}"
    return tuple(sorted({str(i[4][0]) for i in infos})), ""


async def gather_relay(
    name: str,
    published: tuple[str, ...],
    port: int,
    inside: InsideEvidence,
    timeout: float,
) -> RelayEvidence:
    """The relay path hop by hop, from the inside evidence and the phone's view of DNS."""
    assert inside.tunnel is not None
    addresses, error = await asyncio.to_thread(
        relay_addresses, inside.tunnel.relay_endpoint, timeout
    )
    relay_port = await connect(addresses[0], port, timeout) if addresses else None
    servers = tuple(
        Connect(p.backend, 0, not p.connect_error, p.connect_error) for p in inside.pins
    )
    return RelayEvidence(
        name=name,
        relay_addresses=addresses,
        published=published,
        relay_port=relay_port,
        tunnel=inside.tunnel,
        edge=inside.relayed,
        servers=servers,
        error=error,
        ddns_relay=inside.ddns_relay,
    )


async def gather_relay_outside(
    target: Target,
    published: tuple[str, ...],
    relay: str,
    ca_file: Path | None,
    timeout: float,
) -> RelayEvidence:
    """From outside (``--relay HOST``): DNS against the relay's addresses, the relay's port,
    and a TLS handshake through it (the hops behind the relay answer it, or none does)."""
    addresses, error = await asyncio.to_thread(relay_addresses, f"{relay}:0", timeout)
    relay_port = await connect(addresses[0], target.port, timeout) if addresses else None
    through: str | None = None
    if relay_port is not None and relay_port.ok:
        context = phone_context(ca_file)
        context.check_hostname = False  # the tls check judges the certificate; here: any answer
        context.verify_mode = ssl.CERT_NONE
        through = ""
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    addresses[0],
                    target.port,
                    ssl=context,
                    server_hostname=target.host,
                    ssl_shutdown_timeout=timeout,
                ),
                timeout,
            )
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError):
                await writer.wait_closed()
        except TimeoutError:
            through = f"no TLS handshake within {timeout:g} s"
        except (OSError, ssl.SSLError) as exc:
            through = f"{type(exc).__name__}: {exc}"
    return RelayEvidence(
        name=target.host,
        relay_addresses=addresses,
        published=published,
        relay_port=relay_port,
        error=error,
        through=through,
    )


async def gather_ipv6(
    target: Target,
    https: Sequence[Connect],
    ca_file: Path | None,
    host6: tuple[str, ...] | None,
    firewall: str,
    timeout: float,
) -> Ipv6Evidence:
    """The IPv6 path beside IPv4: the connections the reach check made, split by family, and
    a TLS handshake at the first AAAA address that accepted one."""
    over4 = tuple(c for c in https if ":" not in c.address)
    over6 = tuple(c for c in https if ":" in c.address)
    tls6 = None
    open6 = [c.address for c in over6 if c.ok]
    if open6 and target.scheme == "https":
        tls6 = await gather_tls(open6[0], target.port, target.host, ca_file, timeout)
    return Ipv6Evidence(
        name=target.host,
        port=target.port,
        a=tuple(c.address for c in over4),
        aaaa=tuple(c.address for c in over6),
        over4=over4,
        over6=over6,
        tls6=tls6,
        host6=host6,
        firewall=firewall,
    )


def _mappings(wanted: Sequence[str], location: str) -> MappingEvidence:
    from natsync.portmap.manager import MappingSpec
    from natsync.portmap.upnp import IgdClient

    specs = [str(MappingSpec.parse(w)) for w in wanted]
    try:
        igd = IgdClient.find(location or None)
        present = tuple(
            f"{m.external_port}->{m.internal_client}:{m.internal_port}/{m.protocol.lower()}"
            for m in igd.mappings()
        )
    except NatsyncError as exc:
        return MappingEvidence(tuple(specs), error=exc.message)
    return MappingEvidence(tuple(specs), present, router=igd.location)


def _pin(edge: EdgeConfig, backend: str, timeout: float) -> PinEvidence:
    """One of the edge's backends as the edge meets it: a TCP connection, the certificate it
    presents (against [edge] backend_pin), a handshake verified by [edge] backend_ca and the
    name."""
    from cryptography.hazmat.primitives.serialization import Encoding

    from natsync.cert.fetch import CertFetchError, fetch_chain
    from natsync.edge.config import split_hostport

    base: dict[str, Any] = {
        "pinned": edge.backend_pin,
        "backend": backend,
        "name": edge.backend_name,
        "ca_file": str(edge.backend_ca) if edge.backend_ca else "",
        "insecure": edge.insecure_backend,
    }
    host, port = split_hostport(backend, "edge.backend")
    server_name = edge.backend_name or host
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except TimeoutError:
        return PinEvidence(presented="", connect_error="timeout", **base)
    except ConnectionRefusedError:
        return PinEvidence(presented="", connect_error="refused (nothing listens)", **base)
    except OSError as exc:
        return PinEvidence(presented="", connect_error=exc.strerror or str(exc), **base)
    try:
        fetched = fetch_chain(host, port, server_name=server_name, timeout=timeout)
    except CertFetchError as exc:
        return PinEvidence(presented="", error=exc.message, **base)
    presented = fingerprint(fetched.chain[0].public_bytes(Encoding.DER))
    verified, ca_error = False, ""
    if edge.backend_ca is not None:
        try:
            context = ssl.create_default_context(cafile=str(edge.backend_ca))
            with (
                socket.create_connection((host, port), timeout=timeout) as raw,
                context.wrap_socket(raw, server_hostname=server_name),
            ):
                verified = True
        except ssl.SSLCertVerificationError as exc:
            ca_error = f"{exc.verify_message} (for the name {server_name})"
        except (OSError, ssl.SSLError) as exc:
            ca_error = f"{type(exc).__name__}: {exc}"
    return PinEvidence(presented=presented, ca_verified=verified, ca_error=ca_error, **base)
