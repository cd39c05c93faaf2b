"""Settings (MS-ASCMD 2.2.1.18): DeviceInformation Set, UserInformation Get, Oof Get/Set,
DevicePassword Set (acknowledged, not stored: we never hold device passwords).

Out-of-office settings are kept per user as one JSON document in the user's settings;
natsync.mail.oof answers incoming mail from them (RFC 3834 automatic replies).
"""

from __future__ import annotations

import json
from typing import Any

from natsync.eas.context import Context, Response
from natsync.eas.errors import EasError
from natsync.eas.status import SettingsStatus
from natsync.eas.versions import V14_1
from natsync.wbxml import E, Element

NS = "Settings"
OOF_KEY = "oof"
#: Longest OOF reply text we keep; longer texts are refused rather than cut silently.
MAX_OOF_MESSAGE = 16 * 1024
#: Longest device information value (model, OS ...) we record.
MAX_DEVICE_FIELD = 256
_OOF_AUDIENCES = ("AppliesToInternal", "AppliesToExternalKnown", "AppliesToExternalUnknown")


def apply_device_information(ctx: Context, info: Element) -> int:
    """Record DeviceInformation/Set (model, OS ...) on the device; the Status to answer."""
    fields = info.find("Set", NS)
    if fields is None:
        return SettingsStatus.PROTOCOL_ERROR
    model = fields.child_text("Model", NS)
    os_name = fields.child_text("OS", NS)
    if model is not None and len(model) > MAX_DEVICE_FIELD:
        return SettingsStatus.INVALID_ARGUMENTS
    if os_name is not None and len(os_name) > MAX_DEVICE_FIELD:
        return SettingsStatus.INVALID_ARGUMENTS
    if model is not None or os_name is not None:
        ctx.txn.update_device_info(ctx.device.id, model=model, os=os_name)
    for child in fields.children:
        if child.tag not in ("Model", "OS") and len(child.text()) <= MAX_DEVICE_FIELD:
            ctx.txn.set_device_setting(ctx.device.id, f"info.{child.tag}", child.text())
    return SettingsStatus.SUCCESS


def _user_information(ctx: Context) -> Element:
    user = ctx.user
    out = E(NS, "UserInformation", E(NS, "Status", SettingsStatus.SUCCESS))
    if ctx.version >= V14_1:
        account = E(
            NS,
            "Account",
            E(NS, "UserDisplayName", user.display_name or user.name),
            E(
                NS,
                "EmailAddresses",
                E(NS, "SMTPAddress", user.email),
                E(NS, "PrimarySmtpAddress", user.email),
            ),
        )
        out.append(E(NS, "Get", E(NS, "Accounts", account)))
    else:
        out.append(E(NS, "Get", E(NS, "EmailAddresses", E(NS, "SMTPAddress", user.email))))
    return out


def _oof_get(ctx: Context, body_type: str) -> Element:
    stored = ctx.txn.get_user_setting(ctx.user.id, OOF_KEY)
    oof: dict[str, Any] = json.loads(stored) if stored else {"state": "0", "messages": {}}
    get = E(NS, "Get", E(NS, "OofState", oof.get("state", "0")))
    if oof.get("start"):
        get.add(NS, "StartTime", oof["start"])
        get.add(NS, "EndTime", oof.get("end", ""))
    for audience in _OOF_AUDIENCES:
        msg = oof.get("messages", {}).get(audience)
        if msg is None:
            continue
        get.append(
            E(
                NS,
                "OofMessage",
                Element(NS, audience),
                E(NS, "Enabled", msg.get("enabled", "0")),
                E(NS, "ReplyMessage", msg.get("reply", "")),
                E(NS, "BodyType", body_type or msg.get("body_type", "Text")),
            )
        )
    return E(NS, "Oof", E(NS, "Status", SettingsStatus.SUCCESS), get)


def _oof_set(ctx: Context, new: Element) -> Element:
    state = new.child_text("OofState", NS)
    stored = ctx.txn.get_user_setting(ctx.user.id, OOF_KEY)
    oof: dict[str, Any] = json.loads(stored) if stored else {"state": "0", "messages": {}}
    if state is not None:
        if state not in ("0", "1", "2"):
            return E(NS, "Oof", E(NS, "Status", SettingsStatus.INVALID_ARGUMENTS))
        oof["state"] = state
    if new.find("StartTime", NS) is not None:
        oof["start"] = new.child_text("StartTime", NS)
        oof["end"] = new.child_text("EndTime", NS) or ""
    for message in new.findall("OofMessage", NS):
        reply = message.child_text("ReplyMessage", NS) or ""
        if len(reply) > MAX_OOF_MESSAGE:
            return E(NS, "Oof", E(NS, "Status", SettingsStatus.INVALID_ARGUMENTS))
        for audience in _OOF_AUDIENCES:
            if message.find(audience, NS) is not None:
                oof.setdefault("messages", {})[audience] = {
                    "enabled": message.child_text("Enabled", NS) or "0",
                    "reply": reply,
                    "body_type": message.child_text("BodyType", NS) or "Text",
                }
    # A new OOF period: natsync.mail.oof answers each sender once per period.
    oof["since"] = ctx.now.isoformat()
    ctx.txn.set_user_setting(ctx.user.id, OOF_KEY, json.dumps(oof))
    return E(NS, "Oof", E(NS, "Status", SettingsStatus.SUCCESS))


def handle(ctx: Context) -> Response:
    body = ctx.body
    if body is None or body.tag != "Settings":
        raise EasError("Settings needs a Settings body", status=SettingsStatus.PROTOCOL_ERROR)
    root = E(NS, "Settings", E(NS, "Status", SettingsStatus.SUCCESS))
    for part in body.children:
        if part.tag == "DeviceInformation":
            status = apply_device_information(ctx, part)
            root.append(E(NS, "DeviceInformation", E(NS, "Status", status)))
        elif part.tag == "UserInformation":
            root.append(_user_information(ctx))
        elif part.tag == "Oof":
            get = part.find("Get", NS)
            new = part.find("Set", NS)
            if get is not None:
                root.append(_oof_get(ctx, get.child_text("BodyType", NS) or ""))
            elif new is not None:
                root.append(_oof_set(ctx, new))
            else:
                root.append(E(NS, "Oof", E(NS, "Status", SettingsStatus.PROTOCOL_ERROR)))
        elif part.tag == "DevicePassword":
            root.append(E(NS, "DevicePassword", E(NS, "Status", SettingsStatus.SUCCESS)))
        else:
            root.append(E(NS, part.tag, E(NS, "Status", SettingsStatus.PROTOCOL_ERROR)))
    return Response.of(root, status=SettingsStatus.SUCCESS)
