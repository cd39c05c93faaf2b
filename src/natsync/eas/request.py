"""The query of an ActiveSync request, in either of its two forms (MS-ASHTTP 2.2.1.1.1).

Plain form (2.2.1.1.1.2): ``?Cmd=Sync&User=alice&DeviceId=abc&DeviceType=iPhone``.

Base64 form (2.2.1.1.1.1): the whole query is one base64 value of this byte layout:

    offset  size  field
    0       1     protocol version x 10 (121, 140, 141, 160, 161)
    1       1     command code (table COMMAND_CODES, 2.2.1.1.1.1.2)
    2       2     locale, little-endian (0x0409 en-US)
    4       1     DeviceId length n
    5       n     DeviceId
    5+n     1     policy key length (0 or 4)
            0|4   policy key, little-endian unsigned 32-bit
            1     DeviceType length m
            m     DeviceType
            ...   command parameters: tag (1 byte, PARAM_TAGS), length (1 byte), value

The base64 form carries the protocol version and policy key that the plain form sends as the
``MS-ASProtocolVersion`` and ``X-MS-PolicyKey`` headers; :func:`parse_request` merges the two.
"""

from __future__ import annotations

import base64
import binascii
import enum
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

from natsync.eas.errors import HttpError
from natsync.eas.versions import Version, negotiate

#: DeviceId / DeviceType are at most 32 characters (MS-ASHTTP 2.2.1.1.1.2.3/.4); we allow a
#: little more for clients that pad, and no more, since they become database keys.
MAX_DEVICE_ID = 64
MAX_DEVICE_TYPE = 64
#: Longest query string we parse: the plain form of the longest real request is well under it.
MAX_QUERY_LENGTH = 4096


# MS-ASHTTP 2.2.1.1.1.1.2 Command Codes.
class CommandCode(enum.IntEnum):
    Sync = 0
    SendMail = 1
    SmartForward = 2
    SmartReply = 3
    GetAttachment = 4
    FolderSync = 9
    FolderCreate = 10
    FolderDelete = 11
    FolderUpdate = 12
    MoveItems = 13
    GetItemEstimate = 14
    MeetingResponse = 15
    Search = 16
    Settings = 17
    Ping = 18
    ItemOperations = 19
    Provision = 20
    ResolveRecipients = 21
    ValidateCert = 22
    Find = 23


#: Every command name a client may send (MS-ASCMD 2.2.1); an unknown name is a bad request.
KNOWN_COMMANDS = frozenset(c.name for c in CommandCode)


# MS-ASHTTP 2.2.1.1.1.1.3 Command Parameters (tags of the base64 form).
class ParamTag(enum.IntEnum):
    AttachmentName = 0
    CollectionId = 1
    CollectionName = 2
    ItemId = 3
    LongId = 4
    ParentId = 5
    Occurrence = 6
    Options = 7
    User = 8


# MS-ASHTTP 2.2.1.1.1.1.3: bits of the Options parameter.
class OptionBit(enum.IntFlag):
    SAVE_IN_SENT = 0x01
    ACCEPT_MULTIPART = 0x02


@dataclass(frozen=True, slots=True)
class EasRequest:
    """What an ActiveSync request asks for, whichever query form it came in."""

    cmd: str
    user: str
    device_id: str
    device_type: str
    version: Version
    policy_key: int | None  # None when the client sent none
    user_agent: str = ""
    save_in_sent: bool = False
    accept_multipart: bool = False
    collection_id: str = ""
    item_id: str = ""
    long_id: str = ""
    attachment_name: str = ""
    occurrence: str = ""
    locale: int = 0x0409
    base64_form: bool = False


def _header(headers: Mapping[str, str], name: str) -> str | None:
    value = headers.get(name)
    if value is None:
        lower = name.lower()
        for key, val in headers.items():
            if key.lower() == lower:
                return val
    return value


def _policy_key(text: str | None) -> int | None:
    if text is None or text.strip() == "":
        return None
    try:
        key = int(text.strip())
    except ValueError as exc:
        raise HttpError(400, f"X-MS-PolicyKey {text!r} is not a number") from exc
    if not 0 <= key <= 0xFFFFFFFF:
        raise HttpError(400, "X-MS-PolicyKey is out of range")
    return key


def _check_device(device_id: str, device_type: str, user: str) -> None:
    if not device_id:
        raise HttpError(400, "the DeviceId parameter is missing")
    if len(device_id) > MAX_DEVICE_ID or not device_id.isprintable():
        raise HttpError(400, "the DeviceId parameter is invalid")
    if not device_type:
        raise HttpError(400, "the DeviceType parameter is missing")
    if len(device_type) > MAX_DEVICE_TYPE or not device_type.isprintable():
        raise HttpError(400, "the DeviceType parameter is invalid")
    if not user:
        raise HttpError(400, "the User parameter is missing")


def is_base64_form(query: str) -> bool:
    """The plain form always has '=' separated pairs with a Cmd; base64 has no '&'."""
    return bool(query) and "&" not in query and "Cmd=" not in query and "cmd=" not in query


def parse_request(query: str, headers: Mapping[str, str]) -> EasRequest:
    """Parse the query string and the EAS headers of a POST; HttpError(400) when malformed."""
    if len(query) > MAX_QUERY_LENGTH:
        raise HttpError(400, "the query string is too long")
    user_agent = _header(headers, "User-Agent") or ""
    if is_base64_form(query):
        return _parse_base64(query, headers, user_agent)
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True):
        params.setdefault(key, value)
    cmd = params.get("Cmd", "")
    if not cmd:
        raise HttpError(400, "the Cmd parameter is missing")
    user = params.get("User", "")
    device_id = params.get("DeviceId", "")
    device_type = params.get("DeviceType", "")
    _check_device(device_id, device_type, user)
    version = negotiate(_header(headers, "MS-ASProtocolVersion"))
    save = params.get("SaveInSent", "").upper() in ("T", "TRUE", "1")
    multipart = (_header(headers, "MS-ASAcceptMultiPart") or "").upper() in ("T", "TRUE", "1")
    return EasRequest(
        cmd=cmd,
        user=user,
        device_id=device_id,
        device_type=device_type,
        version=version,
        policy_key=_policy_key(_header(headers, "X-MS-PolicyKey")),
        user_agent=user_agent,
        save_in_sent=save,
        accept_multipart=multipart,
        collection_id=params.get("CollectionId", ""),
        item_id=params.get("ItemId", ""),
        long_id=params.get("LongId", ""),
        attachment_name=params.get("AttachmentName", ""),
        occurrence=params.get("Occurrence", ""),
    )


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise HttpError(400, "the base64 query value is truncated")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def done(self) -> bool:
        return self.pos >= len(self.data)


def _text(raw: bytes) -> str:
    """DeviceId and DeviceType are ASCII in practice; other bytes are kept as hex, stably."""
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        return raw.hex()
    return text if text.isprintable() else raw.hex()


def _parse_base64(query: str, headers: Mapping[str, str], user_agent: str) -> EasRequest:
    # Percent-encoding is undone; a "+" some stacks turned into a space is turned back (base64
    # has no spaces, so this is unambiguous).
    value = unquote(query).replace(" ", "+")
    try:
        data = base64.b64decode(value + "=" * (-len(value) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise HttpError(400, "the query is neither the plain nor the base64 form") from exc
    r = _Reader(data)
    raw_version = r.byte()
    code = r.byte()
    (locale,) = struct.unpack("<H", r.take(2))
    device_id = _text(r.take(r.byte()))
    key_len = r.byte()
    if key_len not in (0, 4):
        raise HttpError(400, f"policy key length {key_len} in the base64 query is not 0 or 4")
    policy_key = struct.unpack("<I", r.take(4))[0] if key_len == 4 else None
    device_type = _text(r.take(r.byte()))
    params: dict[int, bytes] = {}
    while not r.done():
        tag = r.byte()
        params.setdefault(tag, r.take(r.byte()))
    try:
        cmd = CommandCode(code).name
    except ValueError as exc:
        raise HttpError(400, f"unknown command code {code} in the base64 query") from exc
    version = negotiate(f"{raw_version // 10}.{raw_version % 10}")
    user = params.get(ParamTag.User, b"").decode("utf-8", "replace")
    if not user:
        user = _basic_user(_header(headers, "Authorization"))
    _check_device(device_id, device_type, user)
    options = int.from_bytes(params.get(ParamTag.Options, b"\0")[:1], "little")

    def text(tag: ParamTag) -> str:
        return params.get(tag, b"").decode("utf-8", "replace")

    return EasRequest(
        cmd=cmd,
        user=user,
        device_id=device_id,
        device_type=device_type,
        version=version,
        policy_key=policy_key,
        user_agent=user_agent,
        save_in_sent=bool(options & OptionBit.SAVE_IN_SENT),
        accept_multipart=bool(options & OptionBit.ACCEPT_MULTIPART)
        or (_header(headers, "MS-ASAcceptMultiPart") or "").upper() in ("T", "TRUE", "1"),
        collection_id=text(ParamTag.CollectionId),
        item_id=text(ParamTag.ItemId),
        long_id=text(ParamTag.LongId),
        attachment_name=text(ParamTag.AttachmentName),
        occurrence=text(ParamTag.Occurrence),
        locale=locale,
        base64_form=True,
    )


def _basic_user(authorization: str | None) -> str:
    """The user name of a Basic Authorization header ('' when there is none)."""
    if not authorization or authorization[:6].lower() != "basic ":
        return ""
    try:
        decoded = base64.b64decode(authorization[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return ""
    return decoded.partition(":")[0]


def encode_base64_query(
    cmd: str,
    device_id: str,
    device_type: str,
    version: Version,
    *,
    policy_key: int | None = None,
    locale: int = 0x0409,
    params: Mapping[ParamTag, bytes] | None = None,
) -> str:
    """Build a base64 query value (used by natsync.client and by the tests)."""
    dev = device_id.encode("ascii")
    dtype = device_type.encode("ascii")
    out = bytearray([version.major * 10 + version.minor, CommandCode[cmd]])
    out += struct.pack("<H", locale)
    out += bytes([len(dev)]) + dev
    out += b"\x04" + struct.pack("<I", policy_key) if policy_key is not None else b"\x00"
    out += bytes([len(dtype)]) + dtype
    for tag, value in (params or {}).items():
        out += bytes([tag, len(value)]) + value
    return base64.b64encode(bytes(out)).decode("ascii")
