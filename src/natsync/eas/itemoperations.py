"""ItemOperations (MS-ASCMD 2.2.1.10): Fetch of a message or of an item of another class (by
CollectionId + ServerId, with BodyPreference / MIME; an item through its class codec), Fetch
of an attachment by FileReference (MS-ASAIRS 2.2.2.24), with an
optional byte Range, inline (Data is base64 text, MS-ASCMD 2.2.3.39.2) or as a multipart
response when the client sent MS-ASAcceptMultiPart (MS-ASCMD 2.2.1.10.1.1),
EmptyFolderContents (optionally DeleteSubFolders), and Move of a conversation
(natsync.eas.conversation_move).

An item that cannot be rendered or encoded gets Status 14 (conversion failed) in its own Fetch;
the request's other operations are answered as usual (issue 19, natsync.eas.isolation).
"""

from __future__ import annotations

import base64
import re
import struct

from natsync.classes import email as eas_email
from natsync.classes.codec import ClassCodec
from natsync.eas import isolation, registry
from natsync.eas.context import Context, Response
from natsync.eas.conversation_move import move_conversation
from natsync.eas.errors import EasError
from natsync.eas.status import ItemOperationsStatus as S
from natsync.eas.sync_request import forget_all
from natsync.store.api import STANDARD_FOLDERS, Item, Message
from natsync.wbxml import E, Element

NS = "ItemOperations"
MULTIPART_CONTENT_TYPE = "application/vnd.ms-sync.multipart"
#: Operations one request may carry (each Fetch may read a whole message).
MAX_OPERATIONS = 100
#: "first-last" bytes; 12 digits reach past any message we store, and keep int() cheap.
_RANGE = re.compile(r"([0-9]{1,12})-([0-9]{1,12})")
#: Folder types EmptyFolderContents never deletes (the store refuses to, too).
_STANDARD = frozenset(t for _, t in STANDARD_FOLDERS)


def _fetch_range(options: Element | None, data: bytes) -> tuple[bytes, str | None] | None:
    """(bytes in the asked range, "first-last") — None when the range is not satisfiable."""
    text = options.child_text("Range", NS) if options is not None else None
    if text is None:
        return data, None
    m = _RANGE.fullmatch(text.strip())
    if m is None:
        return None
    first, last = int(m.group(1)), int(m.group(2))
    if first > last or (data and first >= len(data)):
        return None
    chunk = data[first : last + 1]
    return chunk, f"{first}-{first + max(len(chunk), 1) - 1}"


class _Parts:
    """Binary parts of a multipart answer; part 0 is the WBXML document itself."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.parts: list[bytes] = []

    def add(self, data: bytes) -> int:
        self.parts.append(data)
        return len(self.parts)  # index in the final answer (0 is the WBXML)

    def render(self, wbxml: bytes) -> bytes:
        parts = [wbxml, *self.parts]
        header = struct.pack("<i", len(parts))
        offset = 4 + 8 * len(parts)
        for part in parts:
            header += struct.pack("<ii", offset, len(part))
            offset += len(part)
        return header + b"".join(parts)


def _fetch(ctx: Context, op: Element, parts: _Parts) -> Element:
    store = op.child_text("Store", NS) or "Mailbox"
    options = op.find("Options", NS)
    out = E(NS, "Fetch")
    if store.lower() != "mailbox":
        out.add(NS, "Status", S.UNKNOWN_STORE)
        return out
    file_ref = op.child_text("FileReference", "AirSyncBase")
    if file_ref is not None:
        found = ctx.txn.get_attachment(ctx.user.id, file_ref)
        if found is None:
            out.add(NS, "Status", S.INVALID_ATTACHMENT)
            out.add("AirSyncBase", "FileReference", file_ref)
            return out
        attachment, data = found
        ranged = _fetch_range(options, data)
        if ranged is None:
            out.add(NS, "Status", S.INVALID_RANGE)
            out.add("AirSyncBase", "FileReference", file_ref)
            return out
        chunk, range_text = ranged
        out.add(NS, "Status", S.SUCCESS)
        out.add("AirSyncBase", "FileReference", file_ref)
        props = out.add(NS, "Properties")
        props.add(
            "AirSyncBase", "ContentType", attachment.content_type or "application/octet-stream"
        )
        if range_text is not None:
            props.add(NS, "Range", range_text)
            props.add(NS, "Total", len(data))
        if parts.enabled:
            props.add(NS, "Part", parts.add(chunk))
        else:
            props.add(NS, "Data", base64.b64encode(chunk).decode("ascii"))
        return out
    collection = op.child_text("CollectionId", "AirSync")
    # A Search result's LongId is the message's ServerId (natsync.eas.search).
    server_id = op.child_text("ServerId", "AirSync") or op.child_text("LongId", "Search")
    if not server_id:
        out.add(NS, "Status", S.PROTOCOL_ERROR)
        return out
    msg = ctx.txn.get_message(ctx.user.id, server_id)
    item = ctx.txn.get_item(ctx.user.id, server_id) if msg is None else None
    target = msg or item
    folder = ctx.txn.get_folder(ctx.user.id, collection) if collection else None
    if target is None or (collection and (folder is None or folder.id != target.folder_id)):
        out.add(NS, "Status", S.NOT_FOUND)
        if collection:
            out.add("AirSync", "CollectionId", collection)
        out.add("AirSync", "ServerId", server_id)
        return out
    prefs = eas_email.body_preferences(None)
    mime_support = None
    if options is not None:
        prefs = [
            eas_email.BodyPreference.from_element(b)
            for b in options.findall("BodyPreference", "AirSyncBase")
        ]
        ms = options.child_text("MIMESupport", "AirSync")
        mime_support = int(ms) if ms and ms.isascii() and ms.isdigit() and len(ms) < 3 else None
    if item is not None:
        # An item's ServerId is "<folder ServerId>:<number>".
        item_folder = folder or ctx.txn.get_folder(ctx.user.id, server_id.rpartition(":")[0])
        codec = registry.codec_for(item_folder.type) if item_folder is not None else None
        if codec is None:  # an item in a folder no class codec serves: nothing to render
            out.add(NS, "Status", S.NOT_FOUND)
            out.add("AirSync", "ServerId", server_id)
            return out
        class_name = codec.eas_class
        properties = isolation.build(
            ctx.skipped, server_id, _item_properties, ctx, codec, item, prefs
        )
    else:
        assert msg is not None
        class_name = "Email"
        raw = ctx.txn.raw_message(msg.id)
        properties = isolation.build(
            ctx.skipped, server_id, _message_properties, ctx, msg, raw, prefs, mime_support
        )
    if properties is None:
        return _unconvertible(collection, server_id)
    out.add(NS, "Status", S.SUCCESS)
    if collection:
        out.add("AirSync", "CollectionId", collection)
    out.add("AirSync", "ServerId", server_id)
    out.add("AirSync", "Class", class_name)
    out.append(properties)
    return out


def _item_properties(
    ctx: Context, codec: ClassCodec, item: Item, prefs: list[eas_email.BodyPreference]
) -> Element:
    return E(NS, "Properties", *codec.encode(item.data, ctx.version, prefs))


def _message_properties(
    ctx: Context,
    msg: Message,
    raw: bytes,
    prefs: list[eas_email.BodyPreference],
    mime_support: int | None,
) -> Element:
    return eas_email.email_application_data(
        msg, raw, str(ctx.version), prefs, mime_support=mime_support, container=(NS, "Properties")
    )


def _unconvertible(collection: str | None, server_id: str) -> Element:
    """The Fetch of an item that cannot be sent (natsync.eas.isolation)."""
    out = E(NS, "Fetch", E(NS, "Status", S.CONVERSION_FAILED))
    if collection:
        out.add("AirSync", "CollectionId", collection)
    out.add("AirSync", "ServerId", server_id)
    return out


def _isolated(fetched: Element, response: Element) -> isolation.Isolated | None:
    """The Fetch of an item, as encode_isolated takes it (None for other operations)."""
    server_id = fetched.child_text("ServerId", "AirSync")
    if fetched.tag != "Fetch" or server_id is None or fetched.find("Properties", NS) is None:
        return None
    stand_in = _unconvertible(fetched.child_text("CollectionId", "AirSync"), server_id)
    return isolation.Isolated(server_id, fetched, response, stand_in)


def _empty(ctx: Context, op: Element) -> Element:
    collection = op.child_text("CollectionId", "AirSync") or ""
    options = op.find("Options", NS)
    subfolders = options is not None and options.find("DeleteSubFolders", NS) is not None
    out = E(NS, "EmptyFolderContents")
    folder = ctx.txn.get_folder(ctx.user.id, collection)
    if folder is None:
        out.add(NS, "Status", S.NOT_FOUND)
        out.add("AirSync", "CollectionId", collection)
        return out
    ctx.txn.empty_folder(folder.id)
    forget_all(ctx, collection)
    if subfolders:
        for child in ctx.txn.list_folders(ctx.user.id):
            if child.parent_server_id == folder.server_id and child.type not in _STANDARD:
                ctx.txn.delete_folder(ctx.user.id, child.server_id)
    out.add(NS, "Status", S.SUCCESS)
    out.add("AirSync", "CollectionId", collection)
    return out


def handle(ctx: Context) -> Response:
    body = ctx.body
    if body is None or body.tag != "ItemOperations" or body.namespace != NS:
        raise EasError("ItemOperations needs an ItemOperations body", status=S.PROTOCOL_ERROR)
    if len(body.children) > MAX_OPERATIONS:
        raise EasError("too many operations in one request", status=S.PROTOCOL_ERROR)
    parts = _Parts(ctx.request.accept_multipart)
    response = Element(NS, "Response")
    for op in body.children:
        if op.tag == "Fetch":
            response.append(_fetch(ctx, op, parts))
        elif op.tag == "EmptyFolderContents":
            response.append(_empty(ctx, op))
        elif op.tag == "Move":  # a conversation (natsync.eas.conversation_move)
            response.append(move_conversation(ctx, op))
        else:
            raise EasError(
                f"unsupported ItemOperations operation {op.tag}", status=S.PROTOCOL_ERROR
            )
    root = E(NS, "ItemOperations", E(NS, "Status", S.SUCCESS), response)
    items = [i for i in (_isolated(f, response) for f in response.children) if i is not None]
    wbxml = isolation.encode_isolated(root, items, ctx.skipped)
    if parts.enabled:
        return Response(
            body=parts.render(wbxml),
            content_type=MULTIPART_CONTENT_TYPE,
            status=S.SUCCESS,
            skipped=tuple(ctx.skipped),
        )
    return Response(body=wbxml, status=S.SUCCESS, skipped=tuple(ctx.skipped))
