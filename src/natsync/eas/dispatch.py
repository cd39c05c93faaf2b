"""The one place that maps a command name to its handler and enforces, before any handler runs,
what every command is subject to: device record, access state (allow / block / quarantine),
remote wipe, and the policy key (MS-ASPROV 3.2.5.1).

How a refusal is said depends on the version (MS-ASCMD 2.2.2: the common status codes above 100
exist from EAS 14.0 on): 14.0+ gets the common Status inside the command's own response
element; 12.1 gets the HTTP status (449 "retry after provisioning", 403 "forbidden").
"""

from __future__ import annotations

import random
from datetime import datetime
from typing import TYPE_CHECKING

from natsync.eas import policy
from natsync.eas.context import Context, Handler, HoldUntilChange, Response
from natsync.eas.errors import Answered, EasError, HttpError
from natsync.eas.find import handle as handle_find
from natsync.eas.foldersync import (
    handle_foldercreate,
    handle_folderdelete,
    handle_foldersync,
    handle_folderupdate,
)
from natsync.eas.getattachment import handle as handle_getattachment
from natsync.eas.getitemestimate import handle as handle_getitemestimate
from natsync.eas.itemoperations import handle as handle_itemoperations
from natsync.eas.meetingresponse import handle as handle_meetingresponse
from natsync.eas.moveitems import handle as handle_moveitems
from natsync.eas.ping import handle as handle_ping
from natsync.eas.provision import handle as provision
from natsync.eas.request import KNOWN_COMMANDS, EasRequest
from natsync.eas.resolverecipients import handle as handle_resolverecipients
from natsync.eas.search import handle as handle_search
from natsync.eas.sendmail import handle_sendmail, handle_smartforward, handle_smartreply
from natsync.eas.settings import handle as handle_settings
from natsync.eas.status import Common
from natsync.eas.sync import handle as handle_sync
from natsync.eas.validatecert import handle as handle_validatecert
from natsync.eas.versions import V14_0
from natsync.store.api import AccessState, NotFound, Txn, User, WipeState
from natsync.wbxml import E, Element

if TYPE_CHECKING:
    from natsync.config import ServerConfig


def handle_provision(ctx: Context) -> Response:
    """Provision, told the command set so its X-MS-RP follows a change of it."""
    return provision(ctx, supported_commands())


#: The commands we really implement (and advertise in OPTIONS MS-ASProtocolCommands).
HANDLERS: dict[str, Handler] = {
    "Sync": handle_sync,
    "SendMail": handle_sendmail,
    "SmartForward": handle_smartforward,
    "SmartReply": handle_smartreply,
    "GetAttachment": handle_getattachment,
    "FolderSync": handle_foldersync,
    "FolderCreate": handle_foldercreate,
    "FolderDelete": handle_folderdelete,
    "FolderUpdate": handle_folderupdate,
    "MoveItems": handle_moveitems,
    "MeetingResponse": handle_meetingresponse,
    "GetItemEstimate": handle_getitemestimate,
    "Search": handle_search,
    "Settings": handle_settings,
    "Ping": handle_ping,
    "ItemOperations": handle_itemoperations,
    "Provision": handle_provision,
    "ResolveRecipients": handle_resolverecipients,
    "Find": handle_find,
    "ValidateCert": handle_validatecert,
}

#: Root element (namespace, tag) of each command's response: where a common Status goes.
RESPONSE_ROOTS: dict[str, tuple[str, str]] = {
    "Sync": ("AirSync", "Sync"),
    "SendMail": ("ComposeMail", "SendMail"),
    "SmartForward": ("ComposeMail", "SmartForward"),
    "SmartReply": ("ComposeMail", "SmartReply"),
    "FolderSync": ("FolderHierarchy", "FolderSync"),
    "FolderCreate": ("FolderHierarchy", "FolderCreate"),
    "FolderDelete": ("FolderHierarchy", "FolderDelete"),
    "FolderUpdate": ("FolderHierarchy", "FolderUpdate"),
    "MoveItems": ("Move", "MoveItems"),
    "MeetingResponse": ("MeetingResponse", "MeetingResponse"),
    "GetItemEstimate": ("GetItemEstimate", "GetItemEstimate"),
    "Search": ("Search", "Search"),
    "Settings": ("Settings", "Settings"),
    "Ping": ("Ping", "Ping"),
    "ItemOperations": ("ItemOperations", "ItemOperations"),
    "Provision": ("Provision", "Provision"),
    "ResolveRecipients": ("ResolveRecipients", "ResolveRecipients"),
    "Find": ("Find", "Find"),
    "ValidateCert": ("ValidateCert", "ValidateCert"),
}

#: Commands a device may send before it holds a policy key (MS-ASPROV 3.2.5.1).
POLICY_EXEMPT = frozenset({"Provision"})
#: What a quarantined device may still do: learn its policy, its folders, its settings, wait,
#: and Sync — which shows it only the quarantine notice (natsync.eas.quarantine). Everything
#: else that reads or sends mail answers AccessDenied (MS-ASCMD 2.2.2 code 130).
QUARANTINE_ALLOWED = frozenset(
    {"Provision", "FolderSync", "Settings", "Ping", "Sync", "GetItemEstimate"}
)


def supported_commands() -> str:
    """Value of the OPTIONS MS-ASProtocolCommands header."""
    return ",".join(HANDLERS)


def check_command(cmd: str) -> None:
    """HttpError unless *cmd* is a command we serve: 400 for a name no EAS version has,
    501 for a real EAS command we do not implement (MS-ASHTTP 2.2.2.1.1)."""
    if cmd in HANDLERS:
        return
    if cmd in KNOWN_COMMANDS:
        raise HttpError(501, f"the {cmd} command is not implemented by this server")
    raise HttpError(400, f"{cmd!r} is not an ActiveSync command")


def refuse(cmd: str, req: EasRequest, status: int, http_status: int) -> Response:
    """A refusal in the form the client's version understands."""
    if req.version >= V14_0 and cmd in RESPONSE_ROOTS:
        ns, tag = RESPONSE_ROOTS[cmd]
        return Response.of(E(ns, tag, E(ns, "Status", status)), status=status)
    return Response(http_status=http_status, status=status)


def status_response(cmd: str, status: int) -> Response:
    """The command's response element holding only a Status."""
    ns, tag = RESPONSE_ROOTS[cmd]
    return Response.of(E(ns, tag, E(ns, "Status", status)), status=status)


def _gate(ctx: Context) -> Response | None:
    """Access, wipe and policy checks; a Response when the command must not run."""
    cmd, req, device = ctx.request.cmd, ctx.request, ctx.device
    if device.access_state == AccessState.BLOCKED:
        return refuse(cmd, req, Common.DEVICE_IS_BLOCKED_FOR_THIS_USER, 403)
    if device.access_state == AccessState.QUARANTINED and cmd not in QUARANTINE_ALLOWED:
        return refuse(cmd, req, Common.ACCESS_DENIED, 403)
    if cmd in POLICY_EXEMPT:
        return None
    if device.wipe_state in (
        WipeState.PENDING,
        WipeState.ACCOUNT_ONLY_PENDING,
        WipeState.SENT,
        WipeState.ACKNOWLEDGED,
    ):
        return refuse(cmd, req, Common.REMOTE_WIPE_REQUESTED, 449)
    if not ctx.config.require_provisioning:
        return None
    if device.policy_key == 0:
        return refuse(cmd, req, Common.DEVICE_NOT_PROVISIONED, 449)
    if req.policy_key != device.policy_key:
        return refuse(cmd, req, Common.INVALID_POLICY_KEY, 449)
    acked = ctx.txn.get_device_setting(device.id, policy.ACKED_POLICY_SETTING)
    if acked is not None and acked != policy.fingerprint(ctx.config.policy):
        return refuse(cmd, req, Common.POLICY_REFRESH, 449)
    return None


def handle(
    txn: Txn,
    request: EasRequest,
    user_name: str,
    body: Element | None,
    raw_body: bytes,
    now: datetime,
    config: ServerConfig,
    content_type: str = "",
    *,
    may_hold: bool = True,
    rng: random.Random,
    ends_hold: int | None = None,
    account: User | None = None,
) -> Response:
    """Serve one authenticated request in the caller's transaction; *rng* makes its keys.

    *ends_hold*: the device's hold key (natsync.store.feed.hold_key) when this request ends
    the device's hold; it is announced with the transaction's changes only when the store
    recorded a hold of the device (another process may hold it), and a request that is to be
    held records one (Txn.hold_starts / hold_ends). *account*: the user as authentication
    just read them (*user_name*'s), not read again."""
    check_command(request.cmd)
    user = account if account is not None else txn.get_user(user_name)
    if user is None:  # removed between authentication and now
        raise HttpError(401, "the user no longer exists")
    try:
        device = txn.touch_device(
            user.id,
            request.device_id,
            request.device_type,
            str(request.version),
            request.user_agent,
            now,
        )
    except NotFound as exc:  # removed since authentication read them
        raise HttpError(401, "the user no longer exists") from exc
    if ends_hold is not None and txn.hold_ends(device.id):
        txn.changed.add(ends_hold)
    ctx = Context(
        txn, request, user, device, now, config, body, raw_body, content_type, may_hold, rng=rng
    )
    refused = _gate(ctx)
    if refused is not None:
        return refused
    try:
        response = HANDLERS[request.cmd](ctx)
    except (HttpError, Answered):
        raise
    except EasError as exc:
        if exc.status is None:
            raise
        if request.version >= V14_0 or exc.status < 100:
            # Raised, not returned: the transaction rolls back whatever the handler wrote.
            raise Answered(status_response(request.cmd, exc.status), exc.message) from exc
        raise HttpError(exc.http_status, exc.message) from exc
    if any(isinstance(effect, HoldUntilChange) for effect in response.effects):
        txn.hold_starts(device.id)
    return response
