"""Autodiscover (MS-ASCMD 2.2.1.1, MS-OXDSCLI): given the user's address, answer where the
ActiveSync endpoint is.

Three forms, as Exchange serves them:

* the mobilesync schema (``POST /autodiscover/autodiscover.xml``, AcceptableResponseSchema
  ``.../mobilesync/responseschema/2006``): a Server of Type MobileSync with the URL;
* the Outlook schema (same path, ``.../outlook/responseschema/2006a``, MS-OXDSCLI 2.2.4): an
  Account with Protocol EXCH and EXPR naming the public host (SSL on, Basic), and a Protocol of
  Type MobileSync with the ActiveSync URL (what clients that ask for the Outlook schema read);
* Autodiscover v2 (``GET /autodiscover/autodiscover.json/v1.0/{address}?Protocol=ActiveSync``,
  or ``?Email=...&Protocol=...``): JSON ``{"Protocol": "ActiveSync", "Url": "..."}``; it needs
  no credentials (Exchange Online's does not either) and answers the same for every address,
  so it tells nobody which accounts exist. ``Protocol=AutodiscoverV1`` names the XML endpoint.

The XML request is from the network, so it is parsed defensively: a size limit, and any DOCTYPE
(hence any entity, internal or external) is refused before the parser sees it. Another
AcceptableResponseSchema gets the Error response with code 601 ("no provider for that schema"),
an unparseable request code 600.
"""

from __future__ import annotations

import json
import re
import urllib.parse
import xml.etree.ElementTree as ET
from datetime import datetime
from xml.sax.saxutils import escape

from natsync.store.api import User

REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006"
MOBILESYNC_SCHEMA = (
    "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
)
OUTLOOK_SCHEMA = "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
#: Autodiscover v2's path (any case); the address follows it after "/v1.0/".
V2_PATH = "/autodiscover/autodiscover.json"
JSON_CONTENT_TYPE = "application/json; charset=utf-8"
#: Longest address v2 takes (RFC 5321 4.5.3.1: a path is at most 256 octets).
MAX_V2_ADDRESS = 256
CONTENT_TYPE = "text/xml; charset=utf-8"
#: An Autodiscover request is a few hundred bytes; anything past this is not one.
MAX_REQUEST = 16 * 1024
_DOCTYPE = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


class AutodiscoverRequest:
    def __init__(self, email: str, schema: str) -> None:
        self.email = email
        self.schema = schema


def parse_request(data: bytes) -> AutodiscoverRequest | None:
    """The request's address and schema, or None when it is not a readable request."""
    if len(data) > MAX_REQUEST or _DOCTYPE.search(data):
        return None
    try:
        root = ET.fromstring(data)  # noqa: S314 — no DOCTYPE can reach it (checked above)
    except ET.ParseError:
        return None
    email = schema = ""
    for el in root.iter():
        local = el.tag.rpartition("}")[2]
        if local == "EMailAddress" and el.text:
            email = el.text.strip()
        elif local == "AcceptableResponseSchema" and el.text:
            schema = el.text.strip()
    if not email:
        return None
    return AutodiscoverRequest(email, schema)


def _error(code: int, message: str, now: datetime) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<Autodiscover xmlns="{RESPONSE_NS}"><Response>'
        f'<Error Time="{now.strftime("%H:%M:%S.%f")}" Id="1">'
        f"<ErrorCode>{code}</ErrorCode><Message>{escape(message)}</Message><DebugData/>"
        "</Error></Response></Autodiscover>"
    ).encode()


def respond(data: bytes, user: User, url: str, now: datetime) -> bytes:
    """The Autodiscover answer for *user* (already authenticated) to request *data*."""
    req = parse_request(data)
    if req is None:
        return _error(600, "Invalid Request", now)
    if req.schema == OUTLOOK_SCHEMA:
        return _outlook(user, url)
    if req.schema and req.schema != MOBILESYNC_SCHEMA:
        return _error(601, "Requested schema version not available", now)
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<Autodiscover xmlns="{RESPONSE_NS}">'
        f'<Response xmlns="{MOBILESYNC_SCHEMA}">'
        "<Culture>en:us</Culture>"
        f"<User><DisplayName>{escape(user.display_name or user.name)}</DisplayName>"
        f"<EMailAddress>{escape(user.email)}</EMailAddress></User>"
        "<Action><Settings><Server><Type>MobileSync</Type>"
        f"<Url>{escape(url)}</Url><Name>{escape(url)}</Name>"
        "</Server></Settings></Action></Response></Autodiscover>"
    ).encode()


def _outlook(user: User, url: str) -> bytes:
    """The Outlook schema answer (MS-OXDSCLI 2.2.4.1.1.2): EXCH / EXPR name the host; the
    MobileSync protocol names the ActiveSync URL."""
    host = escape(urllib.parse.urlsplit(url).hostname or "")
    protocols = "".join(
        f"<Protocol><Type>{kind}</Type><Server>{host}</Server><SSL>On</SSL>"
        "<AuthPackage>Basic</AuthPackage></Protocol>"
        for kind in ("EXCH", "EXPR")
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<Autodiscover xmlns="{RESPONSE_NS}">'
        f'<Response xmlns="{OUTLOOK_SCHEMA}">'
        f"<User><DisplayName>{escape(user.display_name or user.name)}</DisplayName>"
        f"<AutoDiscoverSMTPAddress>{escape(user.email)}</AutoDiscoverSMTPAddress></User>"
        "<Account><AccountType>email</AccountType><Action>settings</Action>"
        f"{protocols}"
        f"<Protocol><Type>MobileSync</Type><Server>{escape(url)}</Server>"
        f"<Url>{escape(url)}</Url><SSL>On</SSL><AuthPackage>Basic</AuthPackage></Protocol>"
        "</Account></Response></Autodiscover>"
    ).encode()


def respond_v2(path: str, query: str, host: str) -> tuple[int, bytes]:
    """(HTTP status, JSON body) of an Autodiscover v2 request (see the module docstring)."""
    params = {k.lower(): v for k, v in urllib.parse.parse_qsl(query, keep_blank_values=True)}
    rest = path[len(V2_PATH) :].strip("/")
    address = ""
    if rest.lower().startswith("v1.0"):
        address = urllib.parse.unquote(rest[len("v1.0") :].strip("/"))
    address = address or params.get("email", "")
    protocol = params.get("protocol", "")
    if not address or "@" not in address or len(address) > MAX_V2_ADDRESS or "/" in address:
        return 400, _json(
            {"ErrorCode": "InvalidUser", "ErrorMessage": "An email address is required."}
        )
    urls = {
        "activesync": ("ActiveSync", f"https://{host}/Microsoft-Server-ActiveSync"),
        "autodiscoverv1": ("AutodiscoverV1", f"https://{host}/autodiscover/autodiscover.xml"),
    }
    found = urls.get(protocol.lower())
    if found is None:
        return 400, _json(
            {
                "ErrorCode": "InvalidProtocol",
                "ErrorMessage": f"The given protocol value '{protocol}' is invalid. "
                "Supported values are 'ActiveSync, AutodiscoverV1'.",
            }
        )
    return 200, _json({"Protocol": found[0], "Url": found[1]})


def _json(value: dict[str, str]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()
