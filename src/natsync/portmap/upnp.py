"""UPnP IGD (WANIPConnection / WANPPPConnection): SSDP discovery and the few SOAP actions we need.

The SOAP envelope building and answer parsing are pure functions; :class:`IgdClient` does the
I/O (one multicast M-SEARCH, one HTTP GET of the description, one POST per action) with
blocking sockets and short timeouts, because a router on the LAN answers at once or never.

Standards: UPnP Device Architecture 1.1 section 1.3 (SSDP M-SEARCH), UPnP IGD WANIPConnection:2
section 2.4 (actions) and section 2.5 (error codes). IPv6 needs no translation, only a hole in the
router's firewall: IGD:2's WANIPv6FirewallControl:1 (sections 2.6.3-2.6.5: AddPinhole,
UpdatePinhole, DeletePinhole; 2.6.1 GetFirewallStatus) through :class:`PinholeClient`. A router
checks that a pinhole is asked for by the host it opens (miniupnpd: "InternalClient address must
correspond to the action sender"), so its actions are sent over IPv6 from that host.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum
from xml.sax.saxutils import escape

from natsync.portmap.errors import MappingRefused, PortMapError, RouterUnreachable

#: UDA 1.1 section 1.3.2: SSDP multicast group and port.
SSDP_ADDRESS = ("239.255.255.250", 1900)
#: Search targets, most specific first: an IGD:1 search also finds IGD:2 devices that keep
#: backward compatibility (miniupnpd does).
SEARCH_TARGETS = (
    "urn:schemas-upnp-org:device:InternetGatewayDevice:1",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
)
#: Services that carry the port-mapping actions, in order of preference.
WAN_SERVICES = (
    "urn:schemas-upnp-org:service:WANIPConnection:2",
    "urn:schemas-upnp-org:service:WANIPConnection:1",
    "urn:schemas-upnp-org:service:WANPPPConnection:1",
)
#: The IPv6 firewall service of IGD:2.
PINHOLE_SERVICES = ("urn:schemas-upnp-org:service:WANIPv6FirewallControl:1",)
#: WANIPv6FirewallControl:1 section 2.5.7: a pinhole's lease is 1 to 86400 seconds.
PINHOLE_LEASE_MIN = 1
PINHOLE_LEASE_MAX = 86400
#: IANA protocol numbers, which the pinhole actions take instead of "TCP"/"UDP".
PINHOLE_PROTOCOLS = {"tcp": 6, "udp": 17}
#: UDA section 1.3.2: MX is how long (s) devices may wait before answering; 1 is the minimum
#: and a LAN router answers within it.
SSDP_MX = 1
#: How long to listen for SSDP answers in all; MX plus a margin for the slowest router.
DISCOVERY_TIMEOUT = 1.5
#: HTTP timeout for the description and each SOAP action.
HTTP_TIMEOUT = 3.0
#: Largest description or SOAP answer we read: real ones are a few KiB, so this caps a hostile
#: or broken device without refusing any real router.
MAX_HTTP_BODY = 256 * 1024
#: Largest SSDP datagram we read (a UDP datagram on a LAN).
MAX_SSDP = 2048
#: Guard against a router listing mappings forever (GetGenericPortMappingEntry by index).
MAX_LIST_ENTRIES = 1024

_SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
_DEVICE_NS = "urn:schemas-upnp-org:device-1-0"
_CONTROL_NS = "urn:schemas-upnp-org:control-1-0"


class UpnpError(IntEnum):
    """WANIPConnection:2 section 2.5 (and UDA 1.1 section 3.3.2): error codes in a SOAP fault."""

    INVALID_ACTION = 401
    INVALID_ARGS = 402
    ACTION_FAILED = 501
    ACTION_NOT_AUTHORIZED = 606
    SPECIFIED_ARRAY_INDEX_INVALID = 713
    NO_SUCH_ENTRY_IN_ARRAY = 714
    WILDCARD_NOT_PERMITTED_IN_SRC_IP = 715
    WILDCARD_NOT_PERMITTED_IN_EXT_PORT = 716
    CONFLICT_IN_MAPPING_ENTRY = 718
    SAME_PORT_VALUES_REQUIRED = 724
    ONLY_PERMANENT_LEASES_SUPPORTED = 725
    REMOTE_HOST_ONLY_SUPPORTS_WILDCARD = 726
    EXTERNAL_PORT_ONLY_SUPPORTS_WILDCARD = 727
    NO_PORT_MAPS_AVAILABLE = 728
    CONFLICT_WITH_OTHER_MECHANISMS = 729
    WILDCARD_NOT_PERMITTED_IN_INT_PORT = 732


#: What each refusal means for the person running natsync.
ERROR_WORDS: dict[int, str] = {
    UpnpError.INVALID_ACTION: "the router does not offer this UPnP action",
    UpnpError.INVALID_ARGS: "the router rejected the request's arguments",
    UpnpError.ACTION_FAILED: "the router failed to carry out the request",
    UpnpError.ACTION_NOT_AUTHORIZED: (
        "the router refused: this port or this client is not allowed to be mapped by its "
        "UPnP permission rules (UPnP error 606); allow it on the router or forward it by hand"
    ),
    UpnpError.NO_SUCH_ENTRY_IN_ARRAY: "the router has no such mapping",
    UpnpError.CONFLICT_IN_MAPPING_ENTRY: (
        "the router refused: the external port is already mapped to another computer, or the "
        "router only lets a computer map ports to itself (UPnP error 718)"
    ),
    UpnpError.SAME_PORT_VALUES_REQUIRED: (
        "the router requires the external and internal port to match"
    ),
    UpnpError.ONLY_PERMANENT_LEASES_SUPPORTED: (
        "the router only accepts permanent mappings (lease 0)"
    ),
    UpnpError.NO_PORT_MAPS_AVAILABLE: "the router has no room for more mappings",
    UpnpError.CONFLICT_WITH_OTHER_MECHANISMS: (
        "the mapping conflicts with the router's own port forwards"
    ),
}


class PinholeError(IntEnum):
    """WANIPv6FirewallControl:1 sections 2.6.3.7, 2.6.4.7, 2.6.5.7: errors of the pinhole
    actions (606 is UDA's "action not authorized": the router's policy refuses)."""

    ACTION_NOT_AUTHORIZED = 606
    PINHOLE_SPACE_EXHAUSTED = 701
    FIREWALL_DISABLED = 702
    INBOUND_PINHOLE_NOT_ALLOWED = 703
    NO_SUCH_ENTRY = 704
    PROTOCOL_NOT_SUPPORTED = 705
    INTERNAL_PORT_WILDCARDING_NOT_ALLOWED = 706
    PROTOCOL_WILDCARDING_NOT_ALLOWED = 707
    WILDCARD_NOT_PERMITTED_IN_SRC_IP = 708
    #: CheckPinholeWorking: the pinhole exists, but no packet went through it yet.
    NO_PACKET_SENT = 709


PINHOLE_ERROR_WORDS: dict[int, str] = {
    PinholeError.ACTION_NOT_AUTHORIZED: (
        "the router's policy does not let this host open that port (UPnP 606: allow it in the "
        "router's UPnP settings, or open the IPv6 port in its firewall by hand)"
    ),
    PinholeError.PINHOLE_SPACE_EXHAUSTED: "the router has no room for more IPv6 pinholes",
    PinholeError.FIREWALL_DISABLED: (
        "the router's IPv6 firewall is off: inbound IPv6 needs no pinhole on it"
    ),
    PinholeError.INBOUND_PINHOLE_NOT_ALLOWED: (
        "the router does not allow inbound IPv6 pinholes (switch it on in the router's IPv6 "
        "firewall settings, or open the port there by hand)"
    ),
    PinholeError.NO_SUCH_ENTRY: "the router has no such pinhole (it expired or was removed)",
    PinholeError.PROTOCOL_NOT_SUPPORTED: "the router does not open pinholes for this protocol",
}


def pinhole_error_words(code: int, description: str = "") -> str:
    words = PINHOLE_ERROR_WORDS.get(code)
    return words if words is not None else error_words(code, description)


def error_words(code: int, description: str = "") -> str:
    words = ERROR_WORDS.get(code)
    if words is None:
        words = f"the router refused with UPnP error {code}"
        if description:
            words += f" ({description})"
    return words


@dataclass(frozen=True, slots=True)
class PortMapping:
    """One entry of the router's mapping table (GetGenericPortMappingEntry)."""

    external_port: int
    protocol: str
    internal_client: str
    internal_port: int
    description: str
    lease: int
    enabled: bool = True


def encode_msearch(target: str) -> bytes:
    return (
        "M-SEARCH * HTTP/1.1\r\n"
        f"HOST: {SSDP_ADDRESS[0]}:{SSDP_ADDRESS[1]}\r\n"
        'MAN: "ssdp:discover"\r\n'
        f"MX: {SSDP_MX}\r\n"
        f"ST: {target}\r\n\r\n"
    ).encode("ascii")


def parse_ssdp_location(datagram: bytes) -> str | None:
    """The LOCATION header of an SSDP answer, or None when it is not a usable answer."""
    try:
        text = datagram.decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.split("\r\n")
    if not lines or not lines[0].startswith("HTTP/1.1 200"):
        return None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "location" and value.strip().startswith("http://"):
            return value.strip()
    return None


def _parse_xml(body: bytes) -> ET.Element:
    if len(body) > MAX_HTTP_BODY:
        raise PortMapError(f"the router's answer is larger than {MAX_HTTP_BODY} bytes")
    try:
        # The router is on our LAN and the size is capped; Python's expat refuses entity
        # expansion bombs since 3.7.1, which is the attack defusedxml guards against.
        return ET.fromstring(body)  # noqa: S314
    except ET.ParseError as exc:
        raise PortMapError(f"the router sent XML that does not parse: {exc}") from exc


def parse_description(
    body: bytes, location: str, services: tuple[str, ...] = WAN_SERVICES
) -> tuple[str, str]:
    """(service type, absolute control URL) of the best of *services* described (the WAN
    connection services unless told)."""
    root = _parse_xml(body)
    base = root.findtext(f"{{{_DEVICE_NS}}}URLBase") or location
    found: dict[str, str] = {}
    for service in root.iter(f"{{{_DEVICE_NS}}}service"):
        stype = (service.findtext(f"{{{_DEVICE_NS}}}serviceType") or "").strip()
        control = (service.findtext(f"{{{_DEVICE_NS}}}controlURL") or "").strip()
        if stype in services and control:
            found.setdefault(stype, urllib.parse.urljoin(base, control))
    for stype in services:
        if stype in found:
            return stype, found[stype]
    if services == PINHOLE_SERVICES:
        raise RouterUnreachable(
            f"the UPnP device at {location} offers no IPv6 firewall control (IGD:2 "
            "WANIPv6FirewallControl): open the IPv6 port in the router's firewall by hand, or "
            "try PCP (--method pcp6)"
        )
    raise RouterUnreachable(f"the UPnP device at {location} offers no WAN connection service")


def encode_soap(service: str, action: str, args: list[tuple[str, str]]) -> bytes:
    inner = "".join(f"<{k}>{escape(v)}</{k}>" for k, v in args)
    return (
        '<?xml version="1.0"?>\r\n'
        f'<s:Envelope xmlns:s="{_SOAP_NS}" '
        's:encodingStyle="http://schemas.xmlsoap.org/soap/encoding/">'
        f'<s:Body><u:{action} xmlns:u="{escape(service)}">{inner}</u:{action}></s:Body>'
        "</s:Envelope>\r\n"
    ).encode()


def parse_soap_response(
    body: bytes, action: str, words: Callable[[int, str], str] | None = None
) -> dict[str, str]:
    """Output arguments of a SOAP answer; a fault raises MappingRefused with plain words (the
    service's own: *words*, the WAN connection service's by default)."""
    root = _parse_xml(body)
    fault = root.find(f".//{{{_CONTROL_NS}}}UPnPError")
    if fault is not None:
        code_text = fault.findtext(f"{{{_CONTROL_NS}}}errorCode") or ""
        description = fault.findtext(f"{{{_CONTROL_NS}}}errorDescription") or ""
        try:
            code = int(code_text.strip())
        except ValueError:
            raise PortMapError(
                f"the router sent a fault without an error code: {description}"
            ) from None
        raise MappingRefused((words or error_words)(code, description), code=code)
    for element in root.iter():
        if element.tag.endswith(f"}}{action}Response") or element.tag == f"{action}Response":
            return {child.tag.rpartition("}")[2]: (child.text or "") for child in element}
    raise PortMapError(f"the router's answer to {action} carries no {action}Response")


def discover(*, timeout: float = DISCOVERY_TIMEOUT, bind: str = "") -> str:
    """LOCATION of the first IGD answering an SSDP M-SEARCH on the LAN."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
        sock.bind((bind, 0))
        for target in SEARCH_TARGETS:
            try:
                sock.sendto(encode_msearch(target), SSDP_ADDRESS)
            except OSError as exc:  # no IPv4 route at all (an IPv6-only host): no IGD to ask
                raise RouterUnreachable(
                    f"cannot search the LAN for a UPnP router: {exc.strerror or exc} (this host "
                    "has no IPv4 route)"
                ) from exc
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                datagram = sock.recv(MAX_SSDP)
            except TimeoutError:
                break
            location = parse_ssdp_location(datagram)
            if location:
                return location
    raise RouterUnreachable(
        "no UPnP Internet Gateway Device answered on the LAN (UPnP is off on the router, "
        "or this host is not on the router's LAN)"
    )


def _http(method: str, url: str, body: bytes | None, headers: dict[str, str]) -> tuple[int, bytes]:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise PortMapError(f"UPnP URL must be http://, not {url!r}")
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=HTTP_TIMEOUT)
    try:
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read(MAX_HTTP_BODY + 1)
        return response.status, data
    except OSError as exc:
        raise RouterUnreachable(
            f"the router's UPnP service at {url} did not answer: {exc}"
        ) from exc
    finally:
        conn.close()


def soap_call(
    service: str,
    control_url: str,
    action: str,
    args: list[tuple[str, str]],
    words: Callable[[int, str], str] | None = None,
) -> dict[str, str]:
    """One SOAP action on a service of the router (UPnP Device Architecture, "Control"): its
    output arguments; a fault raises MappingRefused in plain words (*words* names the
    service's own error codes)."""
    body = encode_soap(service, action, args)
    status, answer = _http(
        "POST",
        control_url,
        body,
        {"Content-Type": 'text/xml; charset="utf-8"', "SOAPAction": f'"{service}#{action}"'},
    )
    if status not in (200, 500):
        raise PortMapError(f"the router answered {action} with HTTP {status}")
    return parse_soap_response(answer, action, words)


class IgdClient:
    """A UPnP IGD found on the LAN (or given by its description URL)."""

    def __init__(self, location: str, service: str, control_url: str) -> None:
        self.location = location
        self.service = service
        self.control_url = control_url

    @classmethod
    def find(cls, location: str | None = None) -> IgdClient:
        location = location or discover()
        status, body = _http("GET", location, None, {})
        if status != 200:
            raise RouterUnreachable(f"the UPnP description at {location} answered HTTP {status}")
        service, control = parse_description(body, location)
        return cls(location, service, control)

    @property
    def router_address(self) -> str:
        return urllib.parse.urlsplit(self.control_url).hostname or ""

    def local_address(self) -> str:
        """Our address as the router sees it on the LAN (the internal client to map to)."""
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.connect((self.router_address, 1900))
            return str(sock.getsockname()[0])

    def call(self, action: str, args: list[tuple[str, str]]) -> dict[str, str]:
        return soap_call(self.service, self.control_url, action, args)

    def external_address(self) -> ipaddress.IPv4Address | None:
        """The router's WAN address, or None when it reports none (empty or 0.0.0.0)."""
        text = self.call("GetExternalIPAddress", []).get("NewExternalIPAddress", "").strip()
        if not text:
            return None
        try:
            address = ipaddress.IPv4Address(text)
        except ValueError as exc:
            raise PortMapError(
                f"the router reported a malformed external address {text!r}"
            ) from exc
        return None if address.is_unspecified else address

    def add(
        self,
        protocol: str,
        external_port: int,
        internal_client: str,
        internal_port: int,
        lease: int,
        description: str = "natsync",
    ) -> None:
        self.call(
            "AddPortMapping",
            [
                ("NewRemoteHost", ""),
                ("NewExternalPort", str(external_port)),
                ("NewProtocol", protocol.upper()),
                ("NewInternalPort", str(internal_port)),
                ("NewInternalClient", internal_client),
                ("NewEnabled", "1"),
                ("NewPortMappingDescription", description),
                ("NewLeaseDuration", str(lease)),
            ],
        )

    def delete(self, protocol: str, external_port: int) -> None:
        self.call(
            "DeletePortMapping",
            [
                ("NewRemoteHost", ""),
                ("NewExternalPort", str(external_port)),
                ("NewProtocol", protocol.upper()),
            ],
        )

    def mappings(self) -> list[PortMapping]:
        found: list[PortMapping] = []
        for index in range(MAX_LIST_ENTRIES):
            try:
                entry = self.call(
                    "GetGenericPortMappingEntry", [("NewPortMappingIndex", str(index))]
                )
            except MappingRefused as exc:
                if exc.code in (
                    UpnpError.SPECIFIED_ARRAY_INDEX_INVALID,
                    UpnpError.NO_SUCH_ENTRY_IN_ARRAY,
                ):
                    break
                raise
            try:
                external, internal, lease = (
                    int(entry.get(name) or 0)
                    for name in ("NewExternalPort", "NewInternalPort", "NewLeaseDuration")
                )
            except ValueError:
                continue  # an entry the router garbled: the next ones are still read
            found.append(
                PortMapping(
                    external_port=external,
                    protocol=entry.get("NewProtocol", "").lower(),
                    internal_client=entry.get("NewInternalClient", ""),
                    internal_port=internal,
                    description=entry.get("NewPortMappingDescription", ""),
                    lease=lease,
                    enabled=entry.get("NewEnabled", "1") == "1",
                )
            )
        return found


class PinholeClient:
    """The router's IPv6 firewall control (WANIPv6FirewallControl:1), reached over IPv6 from the
    host whose port it opens. *control_url* names the router by an IPv6 address."""

    def __init__(self, service: str, control_url: str) -> None:
        self.service = service
        self.control_url = control_url

    @classmethod
    def find(cls, location: str | None, router6: str) -> PinholeClient:
        """The firewall service of the IGD at *location* (found by SSDP when None), to be
        called at the router's IPv6 address *router6* on the description's port."""
        location = location or discover()
        status, body = _http("GET", location, None, {})
        if status != 200:
            raise RouterUnreachable(f"the UPnP description at {location} answered HTTP {status}")
        service, control = parse_description(body, location, PINHOLE_SERVICES)
        parts = urllib.parse.urlsplit(control)
        host = router6.replace("%", "%25")
        netloc = f"[{host}]" + (f":{parts.port}" if parts.port else "")
        return cls(service, urllib.parse.urlunsplit(parts._replace(netloc=netloc)))

    def call(self, action: str, args: list[tuple[str, str]]) -> dict[str, str]:
        return soap_call(self.service, self.control_url, action, args, pinhole_error_words)

    def status(self) -> tuple[bool, bool]:
        """(firewall enabled, inbound pinholes allowed): GetFirewallStatus, section 2.6.1."""
        out = self.call("GetFirewallStatus", [])
        return out.get("FirewallEnabled", "1") == "1", out.get("InboundPinholeAllowed") == "1"

    def add(self, internal_client: str, internal_port: int, protocol: str, lease: int) -> int:
        """Open *internal_port* of *internal_client* to every remote host and port; the pinhole's
        UniqueID (AddPinhole, section 2.6.3)."""
        number = PINHOLE_PROTOCOLS.get(protocol.lower())
        if number is None:
            raise PortMapError(f"protocol must be tcp or udp, not {protocol!r}")
        out = self.call(
            "AddPinhole",
            [
                ("RemoteHost", ""),
                ("RemotePort", "0"),
                ("InternalClient", internal_client),
                ("InternalPort", str(internal_port)),
                ("Protocol", str(number)),
                ("LeaseTime", str(_pinhole_lease(lease))),
            ],
        )
        try:
            return int(out.get("UniqueID", ""))
        except ValueError:
            raise PortMapError("the router's AddPinhole answer carries no UniqueID") from None

    def update(self, unique_id: int, lease: int) -> None:
        self.call(
            "UpdatePinhole",
            [("UniqueID", str(unique_id)), ("NewLeaseTime", str(_pinhole_lease(lease)))],
        )

    def delete(self, unique_id: int) -> None:
        self.call("DeletePinhole", [("UniqueID", str(unique_id))])

    def working(self, unique_id: int) -> tuple[str, str]:
        """Ask the router about a pinhole without changing it (CheckPinholeWorking, section
        2.6.7): ("working", ...) when packets went through it, ("no-packets", ...) when it
        exists but the router counted none (709; miniupnpd on nftables counts none at all),
        ("gone", ...) when the router has no pinhole of that UniqueID."""
        try:
            out = self.call("CheckPinholeWorking", [("UniqueID", str(unique_id))])
        except MappingRefused as exc:
            if exc.code == PinholeError.NO_PACKET_SENT:
                return "no-packets", "CheckPinholeWorking: 709 NoPacketSent"
            if exc.code in PINHOLE_GONE:
                return "gone", f"CheckPinholeWorking: UPnP error {exc.code}"
            raise
        if out.get("IsWorking") == "1":
            return "working", "CheckPinholeWorking: IsWorking 1"
        return "no-packets", "CheckPinholeWorking: IsWorking 0"


#: Answers meaning "no pinhole has this UniqueID": IGD:2's NoSuchEntry (704), and the
#: invalid-arguments fault miniupnpd 2.3 sends instead (seen in the lab).
PINHOLE_GONE = frozenset({PinholeError.NO_SUCH_ENTRY, UpnpError.INVALID_ARGS})


def _pinhole_lease(lease: int) -> int:
    return max(PINHOLE_LEASE_MIN, min(PINHOLE_LEASE_MAX, lease))
