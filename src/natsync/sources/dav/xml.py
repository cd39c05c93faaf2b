"""WebDAV XML of the CalDAV/CardDAV source, sans-I/O: request bodies out, multistatus in.

Only what the mirror asks is written: PROPFIND for discovery (RFC 4918 9.1, RFC 5397
current-user-principal, RFC 4791 6.2.1 calendar-home-set, RFC 6352 7.1.1 addressbook-home-set)
and the sync-collection REPORT (RFC 6578 3.2). :func:`parse_multistatus` reads any 207 answer
(RFC 4918 14.16) into :class:`DavResponse` rows and the sync-token; bytes that are not one raise
:class:`DavError`, never anything else (``fuzz/fuzz_dav_multistatus.py`` holds it to that).
defusedxml refuses DTDs, entities and external references, so a server cannot expand a billion
laughs into our memory.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import unquote, urljoin, urlsplit

from defusedxml import ElementTree as SafeET
from defusedxml.common import DefusedXmlException

from natsync.errors import NatsyncError

DAV = "DAV:"
CALDAV = "urn:ietf:params:xml:ns:caldav"
CARDDAV = "urn:ietf:params:xml:ns:carddav"
CS = "http://calendarserver.org/ns/"
#: Largest multistatus body read: a sync-collection of 100,000 hrefs with ETags is ~20 MB.
MAX_MULTISTATUS = 32 * 1024 * 1024
#: Responses one multistatus may list (a server paging past it is asked again with its token).
MAX_RESPONSES = 200_000

_STATUS = re.compile(r"^HTTP/\d(?:\.\d)?\s+(\d{3})")


class DavError(NatsyncError):
    """The CalDAV/CardDAV server's answer cannot be used; check the server URL and its logs."""

    http_status = 502


@dataclass(frozen=True, slots=True)
class DavResponse:
    """One DAV:response: its href (absolute path, unquoted), its status (the response's own,
    e.g. 404 for a member removed since the sync-token, else 200) and the properties found
    with 200, as {"{ns}name": element}."""

    href: str
    status: int
    props: dict[str, ET.Element] = field(default_factory=dict)

    def text(self, name: str) -> str:
        element = self.props.get(name)
        return (element.text or "").strip() if element is not None else ""

    def hrefs(self, name: str) -> list[str]:
        """The DAV:href children of property *name* (a home set, a principal URL)."""
        element = self.props.get(name)
        if element is None:
            return []
        out: list[str] = []
        for node in element.iter(f"{{{DAV}}}href"):
            try:
                out.append(href_path(node.text or ""))
            except DavError:
                continue
        return out

    def resource_types(self) -> set[str]:
        element = self.props.get(f"{{{DAV}}}resourcetype")
        return {child.tag for child in element} if element is not None else set()

    def components(self) -> set[str]:
        """supported-calendar-component-set (RFC 4791 5.2.3); empty: the server did not say."""
        element = self.props.get(f"{{{CALDAV}}}supported-calendar-component-set")
        if element is None:
            return set()
        return {c.get("name", "").upper() for c in element.iter(f"{{{CALDAV}}}comp")}

    @property
    def etag(self) -> str:
        return self.text(f"{{{DAV}}}getetag")


@dataclass(frozen=True, slots=True)
class Multistatus:
    responses: list[DavResponse]
    sync_token: str  # "" when the answer had none
    #: RFC 6578 3.6: the server cut the answer short (507 on the request URI): ask again with
    #: ``sync_token`` for the rest.
    truncated: bool


def href_path(text: str) -> str:
    """The unquoted absolute path of an href (a path or a URL, RFC 4918 8.3); DavError when
    it is neither."""
    try:
        path = unquote(urlsplit(text.strip()).path)
    except ValueError as exc:  # a bracket that is no IPv6 literal, say
        raise DavError(f"the server sent the href {text[:100]!r}, which is no URL") from exc
    if not path.startswith("/"):
        raise DavError(f"the server sent the href {text[:100]!r}, which is no absolute path")
    return path


def _status(text: str | None) -> int:
    match = _STATUS.match((text or "").strip())
    return int(match.group(1)) if match else 0


def parse_multistatus(body: bytes, request_path: str = "") -> Multistatus:
    """A 207 body as rows; *request_path* (the collection's path) marks a 507 on it as a
    truncated answer (RFC 6578 3.6) rather than a member."""
    if len(body) > MAX_MULTISTATUS:
        raise DavError(f"the server's multistatus answer is larger than {MAX_MULTISTATUS} bytes")
    try:
        root = SafeET.fromstring(body, forbid_dtd=True)
    except (ET.ParseError, DefusedXmlException, ValueError) as exc:
        raise DavError(f"the server's answer is not WebDAV XML: {str(exc)[:200]}") from exc
    if root.tag != f"{{{DAV}}}multistatus":
        raise DavError(f"the server answered {root.tag!r} where a DAV:multistatus was expected")
    responses: list[DavResponse] = []
    truncated = False
    own = request_path.rstrip("/")
    for node in root.findall(f"{{{DAV}}}response"):
        if len(responses) >= MAX_RESPONSES:
            raise DavError(f"the server listed more than {MAX_RESPONSES} resources at once")
        href_node = node.find(f"{{{DAV}}}href")
        if href_node is None or not (href_node.text or "").strip():
            raise DavError("a DAV:response without a DAV:href (RFC 4918 14.24)")
        href = href_path(href_node.text)
        status = _status(node.findtext(f"{{{DAV}}}status"))
        props: dict[str, ET.Element] = {}
        for propstat in node.findall(f"{{{DAV}}}propstat"):
            if _status(propstat.findtext(f"{{{DAV}}}status")) != 200:
                continue
            prop = propstat.find(f"{{{DAV}}}prop")
            for element in prop if prop is not None else ():
                props[element.tag] = element
        if not status:
            status = 200 if props or node.find(f"{{{DAV}}}propstat") is not None else 0
        if not status:
            raise DavError(f"the DAV:response for {href!r} has neither status nor propstat")
        if status == 507 and own and href.rstrip("/") == own:
            truncated = True
            continue
        responses.append(DavResponse(href, status, props))
    token = (root.findtext(f"{{{DAV}}}sync-token") or "").strip()
    return Multistatus(responses, token, truncated)


def _prop_body(method: str, names: list[tuple[str, str]], extra: str = "") -> bytes:
    prefixes = {DAV: "d", CALDAV: "c", CARDDAV: "a", CS: "cs"}
    props = "".join(f"<{prefixes[ns]}:{name}/>" for ns, name in names)
    xmlns = " ".join(f'xmlns:{p}="{ns}"' for ns, p in prefixes.items())
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<d:{method} {xmlns}>{extra}'
        f"<d:prop>{props}</d:prop></d:{method}>"
    ).encode()


#: PROPFIND of a principal: where its calendars and address books live.
PRINCIPAL_PROPS = [
    (DAV, "current-user-principal"),
    (CALDAV, "calendar-home-set"),
    (CARDDAV, "addressbook-home-set"),
]
#: PROPFIND (Depth 1) of a home: what each collection is.
COLLECTION_PROPS = [
    (DAV, "resourcetype"),
    (DAV, "displayname"),
    (DAV, "sync-token"),
    (CALDAV, "supported-calendar-component-set"),
]


def propfind_body(names: list[tuple[str, str]]) -> bytes:
    return _prop_body("propfind", names)


def sync_collection_body(token: str) -> bytes:
    """RFC 6578 3.2: members changed since *token* ("" for all), with their ETags."""
    escaped = token.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    extra = f"<d:sync-token>{escaped}</d:sync-token><d:sync-level>1</d:sync-level>"
    return _prop_body("sync-collection", [(DAV, "getetag")], extra)


def is_invalid_token(status: int, body: bytes) -> bool:
    """RFC 6578 3.2: a token the server no longer knows is answered 403 or 409 with the
    DAV:valid-sync-token precondition (some servers send 400 or 412 with it)."""
    return status in (400, 403, 409, 412) and b"valid-sync-token" in body


def resolve(base: str, href: str) -> str:
    """The absolute URL of *href* (a path, as servers send them) against *base*."""
    return urljoin(base, href)
