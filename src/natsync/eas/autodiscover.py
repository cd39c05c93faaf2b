"""Autodiscover for mobile sync (MS-ASCMD 2.2.1.1 / MS-OXDSCLI): given the user's address,
answer where the ActiveSync endpoint is.

The request is XML from the network, so it is parsed defensively: a size limit, and any
DOCTYPE (hence any entity, internal or external) is refused before the parser sees it. Only
the mobilesync response schema is served; another AcceptableResponseSchema gets the Error
response with code 601 ("no provider for that schema"), an unparseable request code 600.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime
from xml.sax.saxutils import escape

from natsync.store.api import User

REQUEST_NS = "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006"
MOBILESYNC_SCHEMA = (
    "http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006"
)
RESPONSE_NS = "http://schemas.microsoft.com/exchange/autodiscover/responseschema/2006"
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
