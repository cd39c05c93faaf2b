"""What gathering saw, as plain data: the only input of the checks.

Every field is a plain value (strings, numbers, tuples, DER bytes), so a check is a pure
function, unit tests build evidence by hand, and ``--json`` could carry it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class DnsAnswer:
    """One server's answer for the name: its addresses and the TTL it gave."""

    server: str  # "system resolver", "127.0.0.1:53", "ns1.example.com (192.0.2.53)"
    a: tuple[str, ...] = ()
    aaaa: tuple[str, ...] = ()
    ttl: int | None = None
    #: "" when the server answered (even with no records); else what went wrong.
    error: str = ""
    #: True when the name does not exist at all there (NXDOMAIN).
    nxdomain: bool = False

    @property
    def addresses(self) -> tuple[str, ...]:
        return (*self.a, *self.aaaa)


@dataclass(frozen=True, slots=True)
class MxEvidence:
    domain: str
    #: (preference, target) as the resolver returned them.
    records: tuple[tuple[int, str], ...] = ()
    #: target -> its addresses ("" error means it resolved; no addresses means it did not).
    target_addresses: tuple[tuple[str, tuple[str, ...]], ...] = ()
    error: str = ""


@dataclass(frozen=True, slots=True)
class NamesEvidence:
    name: str
    #: True when the URL names an address, not a host name (nothing to resolve).
    literal: bool = False
    resolver: DnsAnswer | None = None
    #: The zone the name lives in, as found ("" when not found or not looked up).
    zone: str = ""
    authoritative: tuple[DnsAnswer, ...] = ()
    #: Why the authoritative servers were not asked ("" when they were).
    authoritative_skipped: str = ""
    #: The current public addresses (inside-out runs: what the ddns sources agree on).
    public: tuple[str, ...] = ()
    mx: MxEvidence | None = None


@dataclass(frozen=True, slots=True)
class Connect:
    """One TCP connection attempt."""

    address: str
    port: int
    ok: bool
    #: "refused", "timeout", "unreachable", or the OS error; "" when connected.
    error: str = ""
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class ReachEvidence:
    https: tuple[Connect, ...] = ()
    smtp: tuple[Connect, ...] = ()
    #: Whether the doctor runs inside the network the server is in (inside-out run).
    inside: bool = False
    #: The public addresses the inside-out run knows (hairpin NAT is about these).
    public: tuple[str, ...] = ()
    #: The port the server listens on ([server] port of an inside-out run's config), so a
    #: port-forward command can be printed whole; None when unknown.
    server_port: int | None = None


@dataclass(frozen=True, slots=True)
class TlsEvidence:
    address: str
    port: int
    #: The name sent as SNI and checked against the certificate (None: an address was dialled).
    server_name: str | None
    #: Which trust store the phone's view used ("CA file ca.pem" / "the system trust store").
    trust: str
    #: The chain the server presented, leaf first, DER.
    chain: tuple[bytes, ...] = ()
    #: Whether the server sent the whole chain (False: only the leaf could be captured).
    chain_complete_capture: bool = False
    verified: bool = False
    #: OpenSSL's verify code and message when verification failed (0 / "" otherwise).
    verify_code: int = 0
    verify_message: str = ""
    #: A handshake failure that is not about the certificate ("" when the handshake worked).
    handshake_error: str = ""
    protocol: str = ""
    cipher: str = ""
    #: The trust store's certificates (DER), for natsync.cert.check's chain reasoning.
    anchors: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class HttpEvidence:
    url: str
    options_status: int = 0
    options_headers: tuple[tuple[str, str], ...] = ()
    options_error: str = ""
    #: A command POSTed without credentials: the status and WWW-Authenticate seen.
    anonymous_status: int = 0
    anonymous_challenge: str = ""
    anonymous_error: str = ""

    def header(self, name: str) -> str:
        for key, value in self.options_headers:
            if key.lower() == name.lower():
                return value
        return ""


@dataclass(frozen=True, slots=True)
class Step:
    """One ActiveSync command of the session."""

    command: str
    ok: bool
    detail: str = ""
    http_status: int = 0
    eas_status: int | None = None
    seconds: float = 0.0


@dataclass(frozen=True, slots=True)
class SessionEvidence:
    user: str
    version: str = ""
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True, slots=True)
class IdleProbe:
    """One connection held idle for ``idle`` seconds after an answered request, then asked
    again: did the path still carry it?"""

    idle: float
    #: "answered" (the path survived the idle time), "cut" (no answer, or a reset, after the
    #: idle time), "closed" (the far end closed it during the idle time, after ``seconds``),
    #: "error" (the probe could not start: connect, TLS or the first request failed).
    outcome: str
    seconds: float = 0.0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class CutEvidence:
    """The path's idle cut, bracketed by idle probes: it survived ``survived`` seconds of idle
    and did not survive ``cut`` seconds (``cut`` - ``survived`` <= ``precision`` unless
    ``stopped`` says why not)."""

    survived: float
    cut: float
    precision: float
    probes: tuple[IdleProbe, ...] = ()
    rounds: int = 0
    seconds: float = 0.0
    #: Why the bracket is wider than the precision ("" when it is within it).
    stopped: str = ""
    #: How the cut was seen: "probes" (idle probes) or "closed" (the path closed the held
    #: Ping itself, at the moment it cut).
    method: str = "probes"

    @property
    def within(self) -> bool:
        return self.cut - self.survived <= self.precision + 1e-9


@dataclass(frozen=True, slots=True)
class PushEvidence:
    heartbeat: int
    #: "expired" (held to the end), "changes", "cut" (the connection was closed or reset),
    #: "silent" (no answer at all), "refused" (an EAS Status), "error".
    outcome: str
    seconds: float
    status: int | None = None
    limit: int | None = None
    detail: str = ""
    #: The heartbeat the run asked for first, when the server's bounds made it use another.
    asked: int | None = None
    #: The path's idle cut, measured when the Ping did not survive ("cut" / "silent").
    measured: CutEvidence | None = None


@dataclass(frozen=True, slots=True)
class AutodiscoverEvidence:
    email: str
    url: str
    status: int = 0
    error: str = ""
    #: The MobileSync URL the answer gave ("" when none).
    mobilesync_url: str = ""
    error_code: str = ""
    error_message: str = ""
    #: The URL the doctor was asked about (what the phone should be sent to).
    expected_url: str = ""


@dataclass(frozen=True, slots=True)
class PinEvidence:
    """The edge's pinned backend certificate against what the server presents."""

    pinned: str  # sha256 hex of the pinned certificate ("" when the edge pins nothing)
    presented: str  # sha256 hex of the server's leaf ("" when it could not be read)
    backend: str = ""
    error: str = ""
    #: The name the edge sends as SNI ([edge] backend_name), "" when it is the backend host.
    name: str = ""
    #: [edge] backend_ca, and whether a handshake verifying against it (and the name) worked.
    ca_file: str = ""
    ca_verified: bool = False
    ca_error: str = ""
    #: [edge] insecure_backend: the edge forwards to the server without verifying it.
    insecure: bool = False
    #: The TCP connection to the backend failed ("refused", "timeout"...; "" when it worked).
    connect_error: str = ""


@dataclass(frozen=True, slots=True)
class MappingEvidence:
    """Router port mappings wanted by the config against what the router lists."""

    wanted: tuple[str, ...]  # "443->8443/tcp"
    present: tuple[str, ...] = ()  # "443->192.168.1.10:8443/tcp"
    internal_client: str = ""
    router: str = ""
    error: str = ""


@dataclass(frozen=True, slots=True)
class PinholeRecord:
    """One IPv6 pinhole as natsync run's portmap part recorded it (DATA_DIR/portmap/status.json)
    and, for an IGD:2 pinhole, as the router answers about it."""

    mapping: str  # "443->443/tcp"
    method: str = ""  # "upnp6", "pcp6"
    state: str = ""  # "open", "renew-failing", "failed", "removed", "skipped", "pending"
    detail: str = ""
    expires_at: float | None = None
    renew_at: float | None = None
    unique_id: int | None = None
    #: The host address the pinhole opens.
    address: str = ""
    #: The router's answer (CheckPinholeWorking): "working", "no-packets", "gone", or "" when
    #: it was not asked (PCP cannot be asked without renewing the mapping).
    router: str = ""
    router_detail: str = ""


@dataclass(frozen=True, slots=True)
class PinholeEvidence:
    """The IPv6 pinholes [portmap] asks for, against the portmap part's record and the router."""

    wanted: tuple[str, ...]
    #: [portmap] ipv6 (or method, when that is upnp6 / pcp6).
    way: str
    records: tuple[PinholeRecord, ...] = ()
    #: When the record was written (None: there is no record) and when the doctor looked.
    updated: float | None = None
    now: float = 0.0
    #: Where the record is read from.
    status_file: str = ""


@dataclass(frozen=True, slots=True)
class NatEvidence:
    """The ddns sources' observations and their verdict (natsync.ddns.agreement)."""

    verdict: str  # agree / disagree / cgnat / no-address
    summary: str
    observations: tuple[str, ...] = ()
    address: str = ""


@dataclass(frozen=True, slots=True)
class Ipv6Evidence:
    """The IPv6 path on its own: the AAAA record, the port and TLS over IPv6, beside IPv4."""

    name: str
    port: int
    a: tuple[str, ...] = ()
    aaaa: tuple[str, ...] = ()
    #: TCP connections to each A and each AAAA address at the port.
    over4: tuple[Connect, ...] = ()
    over6: tuple[Connect, ...] = ()
    #: The TLS handshake at the first AAAA address that accepted a connection (None: none did,
    #: or the URL is plain http).
    tls6: TlsEvidence | None = None
    #: Inside-out runs: this host's global IPv6 addresses (None on outside runs: not known).
    host6: tuple[str, ...] | None = None
    #: Inside-out runs: the router's IPv6 firewall as its UPnP service (GetFirewallStatus)
    #: tells it ("" when not asked or it did not answer).
    firewall: str = ""


@dataclass(frozen=True, slots=True)
class TunnelEvidence:
    """The home's end of the relay's WireGuard tunnel ([tunnel] of an inside-out run)."""

    interface: str
    relay_endpoint: str
    relay_address: str
    #: Seconds since WireGuard's latest handshake with the relay (None: never, or unknown).
    handshake_age: float | None = None
    #: `wg show` could not be run or the interface does not exist ("" when it answered).
    wg_error: str = ""
    #: A TCP connection to the relay's tunnel address: any answer (connected or refused: a
    #: reset came back) proves the tunnel carries packets both ways; a timeout that it does not.
    relay_answer: Connect | None = None


@dataclass(frozen=True, slots=True)
class RelayEvidence:
    """The relay path, hop by hop: DNS → relay → tunnel → home edge → server."""

    name: str
    #: The relay's public addresses (its [tunnel] relay_endpoint host, resolved).
    relay_addresses: tuple[str, ...]
    #: What the phone's resolver gives for the public name.
    published: tuple[str, ...] = ()
    #: A TCP connection to the relay's public address at the phones' port.
    relay_port: Connect | None = None
    tunnel: TunnelEvidence | None = None
    #: A TCP connection to the edge's relayed listener ([edge] relayed_listen); None: no edge.
    edge: Connect | None = None
    #: Connections to the edge's backends (the server); empty: not known.
    servers: tuple[Connect, ...] = ()
    #: What went wrong reading the relay's side of the config ("" when nothing).
    error: str = ""
    #: Outside runs (``--relay``): a TLS handshake through the relay, which only completes when
    #: the tunnel, the home edge and its listener carry it ("" when it did; None: not tried).
    through: str | None = None
    #: Inside-out runs: the deployment's [ddns] publishes the relay's address (its sources have
    #: ``relay``); False: it publishes the home's; None: no [ddns] names, or an outside run.
    ddns_relay: bool | None = None


@dataclass(slots=True)
class InsideEvidence:
    nat: NatEvidence | None = None
    mappings: MappingEvidence | None = None
    #: The edge's backends ([edge] backends, else backend), each as the edge meets it.
    pins: tuple[PinEvidence, ...] = ()
    notes: list[str] = field(default_factory=list)
    #: The home's end of the relay tunnel ([tunnel]); None when the file has none.
    tunnel: TunnelEvidence | None = None
    #: [ddns] follows the relay (its sources have ``relay``); None: [ddns] names nothing.
    ddns_relay: bool | None = None
    #: The edge's relayed listener ([edge] relayed_listen), as a TCP connection.
    relayed: Connect | None = None
    #: This host's global IPv6 addresses and the router's IPv6 firewall status (for the
    #: IPv6 check); None when the addresses could not be listed.
    host6: tuple[str, ...] | None = None
    firewall6: str = ""
    #: The IPv6 pinholes [portmap] asks for (None: it asks for none).
    pinholes: PinholeEvidence | None = None
