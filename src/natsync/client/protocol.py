"""The client's protocol half, sans-I/O: request URIs, headers and bodies; response parsing.

Everything a phone puts on the wire is built here from plain values, and everything it reads
back is turned into small dataclasses here, so the request forms are testable byte for byte
without a server. ``client.py`` only moves the bytes.

Specs: MS-ASHTTP 2.2.1.1.1.1 (base64 query value), 2.2.1.1.1.2 (plain query value),
2.2.1.1.2 (request headers); MS-ASCMD 2.2.1 (command bodies); MS-ASPROV 2.2.2 (Provision).
"""

from __future__ import annotations

import base64
import binascii
import enum
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlencode

from natsync.eas.request import CommandCode, OptionBit, ParamTag
from natsync.errors import NatsyncError
from natsync.wbxml.tree import E, Element

#: Path of the ActiveSync virtual directory (MS-ASHTTP 2.2.1.1.1).
EAS_PATH = "/Microsoft-Server-ActiveSync"
#: MS-ASHTTP 2.2.1.1.2.3: the Content-Type of WBXML request bodies.
WBXML_CONTENT_TYPE = "application/vnd.ms-sync.wbxml"
#: MS-ASHTTP 2.2.1.1.2.3: SendMail/SmartReply/SmartForward bodies before 14.0 are raw MIME.
MIME_CONTENT_TYPE = "message/rfc822"
#: MS-ASPROV 2.2.2.43: the policy type every version after 12.0 asks for.
POLICY_TYPE = "MS-EAS-Provisioning-WBXML"
#: The versions this client can speak, newest first; the server's list narrows it.
CLIENT_VERSIONS: tuple[str, ...] = ("16.1", "16.0", "14.1", "14.0", "12.1")
#: What a phone asks for unless told otherwise: 16.1, the version Exchange Online requires.
DEFAULT_VERSION = "16.1"
#: MS-ASHTTP 2.2.1.1.1.1: the Locale field; 0x0409 is en-US, what most phones send.
DEFAULT_LOCALE = 0x0409
#: MS-ASCMD 2.2.3.24 ClientId is at most 40 characters.
MAX_CLIENT_ID = 40
#: Digits of a number the client reads from an answer (a PolicyKey, an estimate: 10 at most).
MAX_NUMBER_DIGITS = 20


class ClientError(NatsyncError):
    """The server refused or answered something the client cannot use.

    ``http_status`` is the HTTP status the server answered (0 when the HTTP exchange itself
    succeeded) and ``eas_status`` the EAS Status element that carried the refusal, if any.
    """

    def __init__(
        self, message: str, *, http_status: int = 0, eas_status: int | None = None
    ) -> None:
        super().__init__(message)
        self.http_status = http_status
        self.eas_status = eas_status


class RemoteWipeError(ClientError):
    """The server ordered this device wiped; the client acknowledged and dropped its state."""


#: The base64 query form's command codes, parameter tags and option bits are the protocol's
#: own tables (MS-ASHTTP 2.2.1.1.1.1.2-3); the client speaks them from the same place the server
#: reads them.
Command = CommandCode
QueryParam = ParamTag
QueryOption = OptionBit


class BodyType(enum.IntEnum):
    """AirSyncBase:Type of a body preference (MS-ASAIRS 2.2.2.22.1)."""

    PLAIN = 1
    HTML = 2
    RTF = 3
    MIME = 4


class FilterType(enum.IntEnum):
    """AirSync:FilterType for email (MS-ASCMD 2.2.3.68.2)."""

    ALL = 0
    ONE_DAY = 1
    THREE_DAYS = 2
    ONE_WEEK = 3
    TWO_WEEKS = 4
    ONE_MONTH = 5


class GlobalStatus(enum.IntEnum):
    """Common Status values any command may answer (MS-ASCMD 2.2.2 common status codes)."""

    REMOTE_WIPE_REQUESTED = 140
    INVALID_POLICY_KEY_DEVICE = 141  # legacy: device not provisionable
    DEVICE_NOT_PROVISIONED = 142
    POLICY_REFRESH = 143
    INVALID_POLICY_KEY = 144


#: Statuses after which a phone provisions again and retries the command (MS-ASPROV 3.1.5.1).
REPROVISION_STATUSES = frozenset(
    {
        GlobalStatus.DEVICE_NOT_PROVISIONED,
        GlobalStatus.POLICY_REFRESH,
        GlobalStatus.INVALID_POLICY_KEY,
    }
)
#: MS-ASHTTP 3.1.5.2: HTTP 449 asks a 12.x device to provision.
HTTP_NEEDS_PROVISION = 449


class SyncStatus(enum.IntEnum):
    """Collection-level Sync Status (MS-ASCMD 2.2.3.177.17)."""

    SUCCESS = 1
    INVALID_SYNC_KEY = 3
    PROTOCOL_ERROR = 4
    SERVER_ERROR = 5
    CLIENT_SERVER_CONVERSION = 6
    CONFLICT = 7
    OBJECT_NOT_FOUND = 8
    CANNOT_COMPLETE = 9
    FOLDER_HIERARCHY_CHANGED = 12
    INCOMPLETE_REQUEST = 13
    INVALID_WAIT = 14
    INVALID_SYNC_COMMAND = 15
    RETRY = 16


class PingStatus(enum.IntEnum):
    """Ping Status (MS-ASCMD 2.2.3.177.13)."""

    EXPIRED = 1
    CHANGES = 2
    MISSING_PARAMETERS = 3
    SYNTAX_ERROR = 4
    HEARTBEAT_OUT_OF_BOUNDS = 5
    TOO_MANY_FOLDERS = 6
    HIERARCHY_SYNC_REQUIRED = 7
    SERVER_ERROR = 8


#: MS-ASCMD 2.2.3.177.9: MoveItems answers 3 for success.
MOVE_SUCCESS = 3


def version_byte(version: str) -> int:
    """The Protocol version field of the base64 query value: "14.1" → 141."""
    major, _, minor = version.partition(".")
    return int(major) * 10 + int(minor or "0")


def version_at_least(version: str, minimum: str) -> bool:
    """Compare EAS versions numerically ("16.1" >= "14.0")."""
    return version_byte(version) >= version_byte(minimum)


def choose_version(server_versions: Iterable[str], preferred: str = DEFAULT_VERSION) -> str:
    """The version to speak: *preferred* if the server offers it, else the newest both know.

    MS-ASHTTP 3.1.5.1: the client picks from MS-ASProtocolVersions of the OPTIONS answer.
    """
    offered = {v.strip() for v in server_versions if v.strip()}
    if preferred in offered and preferred in CLIENT_VERSIONS:
        return preferred
    for version in CLIENT_VERSIONS:
        if version in offered:
            return version
    raise ClientError(
        f"the server offers no protocol version this client speaks "
        f"(server: {', '.join(sorted(offered)) or 'none'}; client: {', '.join(CLIENT_VERSIONS)})"
    )


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is asking: what a phone puts in every request URI."""

    user: str
    device_id: str
    device_type: str
    locale: int = DEFAULT_LOCALE


def plain_query(
    identity: Identity, command: Command, params: Mapping[str, str] | None = None
) -> str:
    """The plain text query value (MS-ASHTTP 2.2.1.1.1.2), without the leading '?'."""
    pairs: list[tuple[str, str]] = [
        ("Cmd", command.name),
        ("User", identity.user),
        ("DeviceId", identity.device_id),
        ("DeviceType", identity.device_type),
    ]
    pairs.extend((params or {}).items())
    return urlencode(pairs)


def _counted(data: bytes, what: str) -> bytes:
    if len(data) > 255:
        raise ClientError(f"{what} is {len(data)} bytes; the base64 query form allows 255")
    return bytes([len(data)]) + data


def base64_query(
    identity: Identity,
    command: Command,
    version: str,
    policy_key: int | None,
    params: Sequence[tuple[QueryParam, bytes]] = (),
    *,
    include_user: bool = True,
) -> str:
    """The base64-encoded query value (MS-ASHTTP 2.2.1.1.1.1), without the leading '?'.

    Fields: version (1 byte), command code (1), locale (2, little-endian), device id (counted),
    policy key (counted: 0 or 4 bytes little-endian), device type (counted), then parameters as
    (tag, counted value). The User is sent as a parameter so server logs can name the user.
    """
    out = bytearray()
    out.append(version_byte(version))
    out.append(int(command))
    out += struct.pack("<H", identity.locale)
    out += _counted(identity.device_id.encode("utf-8"), "DeviceId")
    if policy_key:
        out += _counted(struct.pack("<I", policy_key), "policy key")
    else:
        out.append(0)
    out += _counted(identity.device_type.encode("utf-8"), "DeviceType")
    all_params = list(params)
    if include_user:
        all_params.insert(0, (QueryParam.User, identity.user.encode("utf-8")))
    for tag, value in all_params:
        out.append(int(tag))
        out += _counted(value, tag.name)
    return base64.b64encode(bytes(out)).decode("ascii")


def request_headers(
    version: str,
    policy_key: int | None,
    user_agent: str,
    *,
    content_type: str | None = WBXML_CONTENT_TYPE,
    base64_form: bool = False,
) -> dict[str, str]:
    """Request headers (MS-ASHTTP 2.2.1.1.2); with the base64 form the version and policy key
    travel in the query value instead (2.2.1.1.2.6, 2.2.1.1.2.8)."""
    headers = {"User-Agent": user_agent}
    if content_type:
        headers["Content-Type"] = content_type
    if not base64_form:
        headers["MS-ASProtocolVersion"] = version
        if policy_key:
            headers["X-MS-PolicyKey"] = str(policy_key)
    return headers


# --------------------------------------------------------------------------- request bodies


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    """What Settings:DeviceInformation tells the server (MS-ASCMD 2.2.3.50)."""

    model: str = "natsync-emulator"
    friendly_name: str = "natsync device emulator"
    os: str = "natsync"
    os_language: str = "en-US"
    user_agent: str = "natsync-client/0.1"

    def element(self) -> Element:
        return E(
            "Settings",
            "DeviceInformation",
            E(
                "Settings",
                "Set",
                E("Settings", "Model", self.model),
                E("Settings", "FriendlyName", self.friendly_name),
                E("Settings", "OS", self.os),
                E("Settings", "OSLanguage", self.os_language),
                E("Settings", "UserAgent", self.user_agent),
            ),
        )


def provision_request(version: str, device: DeviceInfo | None = None) -> Element:
    """Phase 1 of Provision: ask for the policy (MS-ASPROV 3.1.5.1)."""
    root = E("Provision", "Provision")
    if device is not None and version_at_least(version, "14.1"):
        # MS-ASPROV 2.2.2.52: 14.1+ devices send their DeviceInformation with Provision.
        root.append(device.element())
    root.append(
        E(
            "Provision",
            "Policies",
            E("Provision", "Policy", E("Provision", "PolicyType", POLICY_TYPE)),
        )
    )
    return root


def provision_ack(temporary_key: int, status: int = 1) -> Element:
    """Phase 2 of Provision: acknowledge the policy under its temporary key."""
    return E(
        "Provision",
        "Provision",
        E(
            "Provision",
            "Policies",
            E(
                "Provision",
                "Policy",
                E("Provision", "PolicyType", POLICY_TYPE),
                E("Provision", "PolicyKey", str(temporary_key)),
                E("Provision", "Status", str(status)),
            ),
        ),
    )


def wipe_ack(account_only: bool, status: int = 1) -> Element:
    """Acknowledge a RemoteWipe / AccountOnlyRemoteWipe directive (MS-ASPROV 3.1.5.1.2)."""
    tag = "AccountOnlyRemoteWipe" if account_only else "RemoteWipe"
    return E("Provision", "Provision", E("Provision", tag, E("Provision", "Status", str(status))))


def folder_sync_request(sync_key: str) -> Element:
    return E("FolderHierarchy", "FolderSync", E("FolderHierarchy", "SyncKey", sync_key))


def folder_create_request(sync_key: str, parent_id: str, name: str, folder_type: int) -> Element:
    return E(
        "FolderHierarchy",
        "FolderCreate",
        E("FolderHierarchy", "SyncKey", sync_key),
        E("FolderHierarchy", "ParentId", parent_id),
        E("FolderHierarchy", "DisplayName", name),
        E("FolderHierarchy", "Type", folder_type),
    )


def folder_update_request(sync_key: str, server_id: str, parent_id: str, name: str) -> Element:
    return E(
        "FolderHierarchy",
        "FolderUpdate",
        E("FolderHierarchy", "SyncKey", sync_key),
        E("FolderHierarchy", "ServerId", server_id),
        E("FolderHierarchy", "ParentId", parent_id),
        E("FolderHierarchy", "DisplayName", name),
    )


def folder_delete_request(sync_key: str, server_id: str) -> Element:
    return E(
        "FolderHierarchy",
        "FolderDelete",
        E("FolderHierarchy", "SyncKey", sync_key),
        E("FolderHierarchy", "ServerId", server_id),
    )


@dataclass(frozen=True, slots=True)
class BodyPreference:
    """One AirSyncBase:BodyPreference (MS-ASAIRS 2.2.2.7)."""

    type: BodyType
    truncation_size: int | None = None
    all_or_none: bool = False
    preview: int | None = None  # 14.0+: characters of Preview wanted

    def element(self) -> Element:
        return E(
            "AirSyncBase",
            "BodyPreference",
            E("AirSyncBase", "Type", int(self.type)),
            None
            if self.truncation_size is None
            else E("AirSyncBase", "TruncationSize", self.truncation_size),
            E("AirSyncBase", "AllOrNone", 1) if self.all_or_none else None,
            None if self.preview is None else E("AirSyncBase", "Preview", self.preview),
        )


def normalize_preferences(prefs: Iterable[BodyPreference | BodyType | int]) -> list[BodyPreference]:
    """Accept ``[BodyType.PLAIN]``, ``[1, 2]`` or full ``BodyPreference`` objects alike."""
    out: list[BodyPreference] = []
    for pref in prefs:
        out.append(pref if isinstance(pref, BodyPreference) else BodyPreference(BodyType(pref)))
    return out


def options_element(
    namespace: str,
    prefs: Sequence[BodyPreference],
    filter_type: FilterType | int | None,
) -> Element:
    """Options of a Sync or ItemOperations Fetch: FilterType, BodyPreference, MIMESupport.

    MS-ASCMD 2.2.3.107: a MIME body (Type 4) is only sent when MIMESupport is 2 (always).
    """
    options = E(namespace, "Options")
    if filter_type is not None:
        options.add("AirSync", "FilterType", int(filter_type))
    for pref in prefs:
        options.append(pref.element())
    if any(p.type == BodyType.MIME for p in prefs):
        options.add("AirSync", "MIMESupport", 2)
    return options


#: MS-ASCMD 2.2.3.186.3 folder Type → the AirSync:Class of its items (anything else: Email).
CLASS_OF_FOLDER_TYPE: Mapping[int, str] = {
    7: "Tasks",
    15: "Tasks",
    8: "Calendar",
    13: "Calendar",
    9: "Contacts",
    14: "Contacts",
    10: "Notes",
    17: "Notes",
}


@dataclass(frozen=True, slots=True)
class ItemCommand:
    """A client command on an item of any class (MS-ASCMD 2.2.3.7.2 Add, 2.2.3.24 Change,
    2.2.3.42 Delete), carrying the class's ApplicationData as the caller built it.

    Make one with :meth:`add`, :meth:`change` or :meth:`remove`.
    """

    kind: str  # "Add", "Change" or "Delete"
    server_id: str = ""
    client_id: str = ""
    data: Element | None = None  # an AirSync:ApplicationData element
    #: 16.x: the occurrence of a recurring item a Delete (or Change) is about.
    instance_id: str | None = None

    @classmethod
    def add(cls, data: Element, client_id: str) -> ItemCommand:
        if not 0 < len(client_id) <= MAX_CLIENT_ID:
            raise ClientError(f"a ClientId has 1 to {MAX_CLIENT_ID} characters")
        return cls("Add", client_id=client_id, data=_application_data(data))

    @classmethod
    def change(cls, server_id: str, data: Element, instance_id: str | None = None) -> ItemCommand:
        return cls(
            "Change", server_id=server_id, data=_application_data(data), instance_id=instance_id
        )

    @classmethod
    def remove(cls, server_id: str, instance_id: str | None = None) -> ItemCommand:
        return cls("Delete", server_id=server_id, instance_id=instance_id)

    @property
    def delete(self) -> bool:
        """Whether the device drops the whole item (what its state must forget)."""
        return self.kind == "Delete" and self.instance_id is None

    def element(self) -> Element:
        out = E("AirSync", self.kind)
        if self.kind == "Add":
            out.add("AirSync", "ClientId", self.client_id)
        else:
            out.add("AirSync", "ServerId", self.server_id)
        if self.instance_id is not None:
            out.add("AirSyncBase", "InstanceId", self.instance_id)
        if self.data is not None:
            out.append(self.data)
        return out


def _application_data(data: Element) -> Element:
    if data.tag != "ApplicationData" or data.namespace != "AirSync":
        raise ClientError("an item command carries an AirSync:ApplicationData element")
    return data


@dataclass(frozen=True, slots=True)
class ClientChange:
    """A change the device sends in Sync Commands (MS-ASCMD 2.2.3.24 Change / Delete)."""

    server_id: str
    read: bool | None = None
    flag_status: int | None = None  # 0 clear, 1 complete, 2 active (MS-ASEMAIL 2.2.2.35)
    flag_type: str = "for Follow Up"
    delete: bool = False
    #: Email:Categories (MS-ASEMAIL 2.2.2.14): None leaves them, () clears them.
    categories: tuple[str, ...] | None = None

    def element(self) -> Element:
        if self.delete:
            return E("AirSync", "Delete", E("AirSync", "ServerId", self.server_id))
        data = E("AirSync", "ApplicationData")
        if self.read is not None:
            data.add("Email", "Read", 1 if self.read else 0)
        if self.flag_status is not None:
            flag = data.add("Email", "Flag")
            if self.flag_status:
                flag.add("Email", "Status", self.flag_status)
                flag.add("Email", "FlagType", self.flag_type)
        if self.categories is not None:
            names = data.add("Email", "Categories")
            for name in self.categories:
                names.add("Email", "Category", name)
        return E("AirSync", "Change", E("AirSync", "ServerId", self.server_id), data)


def sync_request(
    collection_id: str,
    sync_key: str,
    *,
    window_size: int | None = None,
    prefs: Sequence[BodyPreference] = (),
    filter_type: FilterType | int | None = None,
    changes: Sequence[ClientChange | ItemCommand] = (),
    deletes_as_moves: bool | None = None,
    version: str = DEFAULT_VERSION,
    class_name: str = "Email",
) -> Element:
    """One-collection Sync request (MS-ASCMD 2.2.1.21), children in schema order.

    The initial request (SyncKey 0) carries no GetChanges and no Commands (MS-ASCMD 3.1.5.3).
    """
    initial = sync_key == "0"
    coll = E("AirSync", "Collection")
    if not version_at_least(version, "14.0"):
        coll.add("AirSync", "Class", class_name)  # 12.1 names the class of the collection
    coll.add("AirSync", "SyncKey", sync_key)
    coll.add("AirSync", "CollectionId", collection_id)
    if not initial:
        if deletes_as_moves is not None:
            coll.add("AirSync", "DeletesAsMoves", deletes_as_moves)
        coll.add("AirSync", "GetChanges", 1)
        if window_size is not None:
            coll.add("AirSync", "WindowSize", window_size)
    if prefs or filter_type is not None:
        coll.append(options_element("AirSync", prefs, filter_type))
    if changes and not initial:
        commands = coll.add("AirSync", "Commands")
        for change in changes:
            commands.append(change.element())
    return E("AirSync", "Sync", E("AirSync", "Collections", coll))


def move_items_request(moves: Sequence[tuple[str, str, str]]) -> Element:
    """MoveItems (MS-ASCMD 2.2.1.12): (source item, source folder, destination folder)."""
    root = E("Move", "MoveItems")
    for item, src, dst in moves:
        root.append(
            E(
                "Move",
                "Move",
                E("Move", "SrcMsgId", item),
                E("Move", "SrcFldId", src),
                E("Move", "DstFldId", dst),
            )
        )
    return root


def fetch_request(
    *,
    file_reference: str | None = None,
    collection_id: str | None = None,
    server_id: str | None = None,
    prefs: Sequence[BodyPreference] = (),
) -> Element:
    """ItemOperations Fetch of an attachment (FileReference) or an item (MS-ASCMD 2.2.1.10)."""
    fetch = E("ItemOperations", "Fetch", E("ItemOperations", "Store", "Mailbox"))
    if file_reference is not None:
        fetch.add("AirSyncBase", "FileReference", file_reference)
    else:
        if collection_id is None or server_id is None:
            raise ClientError("an item Fetch needs both collection_id and server_id")
        fetch.add("AirSync", "CollectionId", collection_id)
        fetch.add("AirSync", "ServerId", server_id)
        if prefs:
            fetch.append(options_element("ItemOperations", prefs, None))
    return E("ItemOperations", "ItemOperations", fetch)


def empty_folder_request(collection_id: str, delete_subfolders: bool = False) -> Element:
    op = E(
        "ItemOperations",
        "EmptyFolderContents",
        E("AirSync", "CollectionId", collection_id),
    )
    if delete_subfolders:
        op.append(E("ItemOperations", "Options", E("ItemOperations", "DeleteSubFolders")))
    return E("ItemOperations", "ItemOperations", op)


def compose_request(
    kind: str,
    client_id: str,
    mime: bytes,
    *,
    save_in_sent: bool,
    folder_id: str | None = None,
    item_id: str | None = None,
    replace_mime: bool = False,
) -> Element:
    """SendMail / SmartReply / SmartForward body for 14.0+ (MS-ASCMD 2.2.1.17-2.2.1.19)."""
    if len(client_id) > MAX_CLIENT_ID:
        raise ClientError(f"ClientId is {len(client_id)} characters; at most {MAX_CLIENT_ID}")
    root = E("ComposeMail", kind, E("ComposeMail", "ClientId", client_id))
    if kind != "SendMail":
        root.append(
            E(
                "ComposeMail",
                "Source",
                None if folder_id is None else E("ComposeMail", "FolderId", folder_id),
                None if item_id is None else E("ComposeMail", "ItemId", item_id),
            )
        )
    if save_in_sent:
        root.add("ComposeMail", "SaveInSentItems")
    if replace_mime:
        root.add("ComposeMail", "ReplaceMime")
    root.add("ComposeMail", "Mime", mime)
    return root


def ping_request(heartbeat: int | None, folders: Sequence[str]) -> Element:
    """Ping (MS-ASCMD 2.2.1.13); an empty request re-uses the server's cached one."""
    root = E("Ping", "Ping")
    if heartbeat is not None:
        root.add("Ping", "HeartbeatInterval", heartbeat)
    if folders:
        holder = root.add("Ping", "Folders")
        for folder in folders:
            holder.append(E("Ping", "Folder", E("Ping", "Id", folder), E("Ping", "Class", "Email")))
    return root


def estimate_request(
    collection_id: str, sync_key: str, version: str, filter_type: FilterType | None
) -> Element:
    """GetItemEstimate (MS-ASCMD 2.2.1.9); 12.1 puts Class/FilterType directly in Collection."""
    coll = E("GetItemEstimate", "Collection")
    if version_at_least(version, "14.0"):
        coll.add("AirSync", "SyncKey", sync_key)
        coll.add("GetItemEstimate", "CollectionId", collection_id)
        if filter_type is not None:
            coll.append(E("AirSync", "Options", E("AirSync", "FilterType", int(filter_type))))
    else:
        coll.add("AirSync", "Class", "Email")
        coll.add("GetItemEstimate", "CollectionId", collection_id)
        coll.add("AirSync", "FilterType", int(filter_type or FilterType.ALL))
        coll.add("AirSync", "SyncKey", sync_key)
    return E("GetItemEstimate", "GetItemEstimate", E("GetItemEstimate", "Collections", coll))


def search_request(
    query: str, collection_id: str | None, range_: tuple[int, int], prefs: Sequence[BodyPreference]
) -> Element:
    """Search of the Mailbox store (MS-ASCMD 2.2.1.16)."""
    and_ = E("Search", "And", E("AirSync", "Class", "Email"))
    if collection_id is not None:
        and_.add("AirSync", "CollectionId", collection_id)
    and_.add("Search", "FreeText", query)
    options = E(
        "Search",
        "Options",
        E("Search", "RebuildResults"),
        E("Search", "DeepTraversal"),
        E("Search", "Range", f"{range_[0]}-{range_[1]}"),
    )
    for pref in prefs:
        options.append(pref.element())
    return E(
        "Search",
        "Search",
        E(
            "Search",
            "Store",
            E("Search", "Name", "Mailbox"),
            E("Search", "Query", and_),
            options,
        ),
    )


def settings_request(
    *,
    device: DeviceInfo | None = None,
    user_information: bool = False,
    oof_get: bool = False,
    oof_set: Element | None = None,
) -> Element:
    """Settings (MS-ASCMD 2.2.1.18): any of Oof get/set, DeviceInformation set, UserInformation."""
    root = E("Settings", "Settings")
    if oof_get:
        root.append(E("Settings", "Oof", E("Settings", "Get", E("Settings", "BodyType", "Text"))))
    if oof_set is not None:
        root.append(E("Settings", "Oof", oof_set))
    if device is not None:
        root.append(device.element())
    if user_information:
        root.append(E("Settings", "UserInformation", E("Settings", "Get")))
    return root


# --------------------------------------------------------------------------- responses


def number_in(element: Element, tag: str, default: int) -> int:
    """*element*'s *tag* child as a number, *default* when it is absent or empty; ClientError
    when the server sent anything but ASCII digits there (str.isdigit alone admits "²")."""
    text = (element.child_text(tag) or "").strip()
    if not text:
        return default
    if not (text.isascii() and text.isdigit() and len(text) <= MAX_NUMBER_DIGITS):
        raise ClientError(f"the server sent a {tag} of {text[:20]!r}, which is no number")
    return int(text)


def status_of(element: Element | None) -> int | None:
    """The integer value of *element*'s direct Status child, if any."""
    if element is None:
        return None
    return None if element.child_text("Status") is None else number_in(element, "Status", 0)


@dataclass(frozen=True, slots=True)
class FolderInfo:
    server_id: str
    parent_id: str
    display_name: str
    type: int


@dataclass(slots=True)
class FolderSyncResult:
    sync_key: str
    added: list[FolderInfo] = field(default_factory=list)
    updated: list[FolderInfo] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def _folder(el: Element) -> FolderInfo:
    return FolderInfo(
        server_id=el.child_text("ServerId") or "",
        parent_id=el.child_text("ParentId") or "0",
        display_name=el.child_text("DisplayName") or "",
        type=number_in(el, "Type", 0),
    )


def parse_folder_sync(root: Element) -> FolderSyncResult:
    status = status_of(root)
    if status != 1:
        raise ClientError(f"FolderSync failed with Status {status}", eas_status=status)
    result = FolderSyncResult(sync_key=root.child_text("SyncKey") or "")
    changes = root.find("Changes")
    if changes is not None:
        for el in changes.children:
            if el.tag == "Add":
                result.added.append(_folder(el))
            elif el.tag == "Update":
                result.updated.append(_folder(el))
            elif el.tag == "Delete":
                result.deleted.append(el.child_text("ServerId") or "")
    return result


@dataclass(frozen=True, slots=True)
class Body:
    """AirSyncBase:Body of an item (MS-ASAIRS 2.2.2.9)."""

    type: int
    data: str
    truncated: bool
    estimated_size: int
    preview: str = ""


@dataclass(frozen=True, slots=True)
class AttachmentInfo:
    """AirSyncBase:Attachment (MS-ASAIRS 2.2.2.7)."""

    file_reference: str
    display_name: str
    method: int
    estimated_size: int
    content_id: str
    is_inline: bool


@dataclass(slots=True)
class EmailItem:
    """An email as a Sync, ItemOperations or Search answer describes it."""

    server_id: str
    #: Every leaf property as "Namespace:Tag" → text (first occurrence), e.g. "Email:Subject".
    fields: dict[str, str] = field(default_factory=dict)
    body: Body | None = None
    attachments: list[AttachmentInfo] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    flag_status: int | None = None
    #: The ApplicationData (or Properties) element as it came: what a non-email class reads.
    data: Element | None = None

    @property
    def subject(self) -> str:
        return self.fields.get("Email:Subject", "")

    @property
    def sender(self) -> str:
        return self.fields.get("Email:From", "")

    @property
    def read(self) -> bool | None:
        value = self.fields.get("Email:Read")
        return None if value is None else value == "1"


def parse_item(server_id: str, data: Element | None) -> EmailItem:
    """Read an ApplicationData (or Properties) element into an :class:`EmailItem`."""
    item = EmailItem(server_id=server_id, data=data)
    if data is None:
        return item
    for el in data.children:
        if el.tag == "Body" and el.namespace == "AirSyncBase":
            item.body = Body(
                type=number_in(el, "Type", 0),
                data=el.child_text("Data") or "",
                truncated=(el.child_text("Truncated") or "0") == "1",
                estimated_size=number_in(el, "EstimatedDataSize", 0),
                preview=el.child_text("Preview") or "",
            )
        elif el.tag == "Attachments":
            for att in el.findall("Attachment"):
                item.attachments.append(
                    AttachmentInfo(
                        file_reference=att.child_text("FileReference") or "",
                        display_name=att.child_text("DisplayName") or "",
                        method=number_in(att, "Method", 1),
                        estimated_size=number_in(att, "EstimatedDataSize", 0),
                        content_id=att.child_text("ContentId") or "",
                        is_inline=(att.child_text("IsInline") or "0") == "1",
                    )
                )
        elif el.tag == "Categories":
            item.categories = [c.text() for c in el.findall("Category")]
        elif el.tag == "Flag" and el.namespace == "Email":
            item.flag_status = number_in(el, "Status", 0)
        elif not el.children:
            item.fields.setdefault(f"{el.namespace}:{el.tag}", el.text())
    return item


@dataclass(frozen=True, slots=True)
class ChangeResponse:
    """A server's per-item answer to a client command (Responses/Change|Add|Delete|Fetch)."""

    kind: str
    server_id: str
    status: int
    #: An Add's ClientId (its ServerId is ``server_id`` when the server took it).
    client_id: str = ""


@dataclass(slots=True)
class SyncPage:
    """One Sync response for one collection."""

    collection_id: str
    status: int
    sync_key: str
    more_available: bool
    added: list[EmailItem] = field(default_factory=list)
    changed: list[EmailItem] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    soft_deleted: list[str] = field(default_factory=list)
    responses: list[ChangeResponse] = field(default_factory=list)


def parse_sync(root: Element) -> list[SyncPage]:
    """Read a Sync response; a top-level Status (no Collections) raises ClientError."""
    collections = root.find("Collections")
    if collections is None:
        status = status_of(root)
        raise ClientError(f"Sync failed with Status {status}", eas_status=status)
    pages: list[SyncPage] = []
    for coll in collections.findall("Collection"):
        page = SyncPage(
            collection_id=coll.child_text("CollectionId") or "",
            status=status_of(coll) or 1,
            sync_key=coll.child_text("SyncKey") or "",
            more_available=coll.find("MoreAvailable") is not None,
        )
        commands = coll.find("Commands")
        if commands is not None:
            for el in commands.children:
                sid = el.child_text("ServerId") or ""
                if el.tag == "Add":
                    page.added.append(parse_item(sid, el.find("ApplicationData")))
                elif el.tag == "Change":
                    page.changed.append(parse_item(sid, el.find("ApplicationData")))
                elif el.tag == "Delete":
                    page.deleted.append(sid)
                elif el.tag == "SoftDelete":
                    page.soft_deleted.append(sid)
        responses = coll.find("Responses")
        if responses is not None:
            for el in responses.children:
                page.responses.append(
                    ChangeResponse(
                        kind=el.tag,
                        server_id=el.child_text("ServerId") or el.child_text("ClientId") or "",
                        status=status_of(el) or 1,
                        client_id=el.child_text("ClientId") or "",
                    )
                )
        pages.append(page)
    return pages


@dataclass(frozen=True, slots=True)
class MoveResult:
    src_id: str
    status: int
    dst_id: str


def parse_move_items(root: Element) -> list[MoveResult]:
    return [
        MoveResult(
            src_id=r.child_text("SrcMsgId") or "",
            status=status_of(r) or 0,
            dst_id=r.child_text("DstMsgId") or "",
        )
        for r in root.findall("Response")
    ]


@dataclass(slots=True)
class FetchResult:
    """One ItemOperations Fetch answer: an attachment's bytes or an item's properties."""

    status: int
    content_type: str = ""
    data: bytes = b""
    item: EmailItem | None = None


def _fetch_data(value: str | bytes | None) -> bytes:
    """ItemOperations:Data carries base64 text (MS-ASCMD 2.2.3.39.2), whether the server wrote
    it as an inline string or as opaque bytes; opaque bytes that are not base64 are taken raw
    (what a few servers send)."""
    if value is None:
        return b""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        if isinstance(value, bytes):
            return value
        raise ClientError("ItemOperations Data is not valid base64") from exc


#: Properties of an attachment Fetch; anything else in Properties describes an item.
_ATTACHMENT_PROPS = frozenset({"Data", "ContentType", "Range", "Total", "Part"})


def parse_item_operations(root: Element) -> list[FetchResult]:
    status = status_of(root)
    if status != 1:
        raise ClientError(f"ItemOperations failed with Status {status}", eas_status=status)
    results: list[FetchResult] = []
    response = root.find("Response")
    if response is None:
        return results
    for el in response.children:
        if el.tag == "EmptyFolderContents":
            results.append(FetchResult(status=status_of(el) or 0))
            continue
        if el.tag != "Fetch":
            continue
        result = FetchResult(status=status_of(el) or 0)
        props = el.find("Properties")
        if props is not None:
            data = props.find("Data")
            if data is not None or props.find("ContentType") is not None:
                result.content_type = props.child_text("ContentType") or ""
                result.data = _fetch_data(None if data is None else data.value)
            if any(c.tag not in _ATTACHMENT_PROPS for c in props.children):
                result.item = parse_item(el.child_text("ServerId") or "", props)
        results.append(result)
    return results


def parse_ping(root: Element) -> tuple[int, list[str], int | None]:
    """(Status, changed folder ids, the server's limit for Status 5/6 if it sent one)."""
    status = status_of(root) or 0
    folders_el = root.find("Folders")
    folders = [] if folders_el is None else [f.text() for f in folders_el.findall("Folder")]
    limit_tag = "HeartbeatInterval" if root.child_text("HeartbeatInterval") else "MaxFolders"
    limit = number_in(root, limit_tag, -1)
    return status, folders, None if limit < 0 else limit


def parse_estimate(root: Element) -> dict[str, int]:
    out: dict[str, int] = {}
    for response in root.findall("Response"):
        status = status_of(response)
        if status != 1:
            raise ClientError(f"GetItemEstimate failed with Status {status}", eas_status=status)
        coll = response.find("Collection")
        if coll is not None:
            out[coll.child_text("CollectionId") or ""] = number_in(coll, "Estimate", 0)
    return out


@dataclass(slots=True)
class SearchResult:
    total: int
    items: list[tuple[str, str, EmailItem]]  # (collection id, long id, item)


def parse_search(root: Element) -> SearchResult:
    status = status_of(root)
    if status != 1:
        raise ClientError(f"Search failed with Status {status}", eas_status=status)
    response = root.find("Response")
    store = None if response is None else response.find("Store")
    if store is None:
        return SearchResult(total=0, items=[])
    store_status = status_of(store)
    if store_status != 1:
        raise ClientError(
            f"Search failed with Store Status {store_status}", eas_status=store_status
        )
    items: list[tuple[str, str, EmailItem]] = []
    for result in store.findall("Result"):
        long_id = result.child_text("LongId") or ""
        if not long_id and result.find("Properties") is None:
            continue  # an empty Result means no match (MS-ASCMD 2.2.3.143)
        items.append(
            (
                result.child_text("CollectionId") or "",
                long_id,
                parse_item(long_id, result.find("Properties")),
            )
        )
    return SearchResult(total=number_in(store, "Total", len(items)), items=items)
