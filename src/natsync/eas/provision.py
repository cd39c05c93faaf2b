"""Provision (MS-ASPROV 3.2.5): the two-phase policy key exchange and remote wipe.

Phase 1: the client asks for the policy (Policy without PolicyKey); we answer with the
EASProvisionDoc and a *temporary* key, remembered as the device's pending key.
Phase 2: the client acknowledges that key (Policy with PolicyKey and Status); we answer with the
*final* key, which every later command must carry in X-MS-PolicyKey (checked in dispatch).

Remote wipe (MS-ASPROV 3.2.5.1.2): while a wipe is pending, every other command is refused with
"provision again" and the Provision answer carries RemoteWipe (or, for 16.1, the account-only
AccountOnlyRemoteWipe) instead of a policy; the client's acknowledgement is recorded.

``X-MS-RP`` (the versions the server speaks, as Exchange sends it): on a device's first
Provision, and again on the first Provision after the versions or the command set changed (an
upgrade), so that the phone asks OPTIONS again and learns the new command list.
"""

from __future__ import annotations

import random

from natsync.eas import policy
from natsync.eas.context import Context, Response
from natsync.eas.errors import EasError
from natsync.eas.settings import apply_device_information
from natsync.eas.status import Common, PolicyStatus, ProvisionStatus
from natsync.eas.versions import V14_1, V16_1, supported_header
from natsync.store.api import WipeState
from natsync.wbxml import E, Element

NS = "Provision"
#: Device setting: the versions and commands the device was last told of with X-MS-RP.
ANNOUNCED_SETTING = "provision.announced"
#: Largest policy key: an unsigned 32-bit integer (MS-ASPROV 2.2.2.42); 0 means "none".
MAX_POLICY_KEY = 0xFFFFFFFF


def _new_key(rng: random.Random) -> int:
    return rng.randrange(MAX_POLICY_KEY - 1) + 1


def handle(ctx: Context, commands: str) -> Response:
    """Provision for *ctx*; *commands* is the MS-ASProtocolCommands value the server answers
    OPTIONS with (the dispatcher passes it: it owns the command table, and imports this module)."""
    response = _handle(ctx)
    announce_versions(ctx, response, commands)
    return response


def announce_versions(ctx: Context, response: Response, commands: str) -> None:
    """X-MS-RP on *response* when this device has not yet been told of what we serve now."""
    served = f"{supported_header()};{commands}"
    if ctx.txn.get_device_setting(ctx.device.id, ANNOUNCED_SETTING) == served:
        return
    ctx.txn.set_device_setting(ctx.device.id, ANNOUNCED_SETTING, served)
    response.headers["X-MS-RP"] = supported_header()


def _handle(ctx: Context) -> Response:
    body = ctx.body
    if body is None or body.tag != "Provision" or body.namespace != NS:
        raise EasError("Provision needs a Provision body", status=ProvisionStatus.PROTOCOL_ERROR)
    root = E(NS, "Provision")
    info = body.find("DeviceInformation", "Settings")
    if info is not None and ctx.version >= V14_1:
        status = apply_device_information(ctx, info)
        root.append(E("Settings", "DeviceInformation", E("Settings", "Status", status)))

    device = ctx.device
    txn = ctx.txn
    wipe_ack = body.find("RemoteWipe", NS)
    account_ack = body.find("AccountOnlyRemoteWipe", NS)
    if wipe_ack is not None or account_ack is not None:
        # The device confirms it wiped (or is about to): record it (MS-ASPROV 3.2.5.1.2.2).
        if device.wipe_state != WipeState.NONE:
            txn.set_wipe_state(device.id, WipeState.ACKNOWLEDGED, ctx.now)
        root.add(NS, "Status", ProvisionStatus.SUCCESS)
        return Response.of(root, status=ProvisionStatus.SUCCESS)

    if device.wipe_state == WipeState.ACCOUNT_ONLY_PENDING and ctx.version >= V16_1:
        root.add(NS, "Status", ProvisionStatus.SUCCESS)
        root.append(Element(NS, "AccountOnlyRemoteWipe"))
        txn.set_wipe_state(device.id, WipeState.SENT, ctx.now)
        return Response.of(root, status=ProvisionStatus.SUCCESS)
    if device.wipe_state == WipeState.ACCOUNT_ONLY_PENDING:
        # Older clients cannot wipe only the account; a full wipe would be far more than asked,
        # so the device is refused instead (MS-ASCMD 2.2.2 code 129).
        root.add(NS, "Status", Common.DEVICE_IS_BLOCKED_FOR_THIS_USER)
        return Response.of(root, status=Common.DEVICE_IS_BLOCKED_FOR_THIS_USER)
    if device.wipe_state in (WipeState.PENDING, WipeState.SENT, WipeState.ACKNOWLEDGED):
        root.add(NS, "Status", ProvisionStatus.SUCCESS)
        root.append(Element(NS, "RemoteWipe"))
        if device.wipe_state == WipeState.PENDING:
            txn.set_wipe_state(device.id, WipeState.SENT, ctx.now)
        return Response.of(root, status=ProvisionStatus.SUCCESS)

    policies = body.find("Policies", NS)
    req_policy = policies.find("Policy", NS) if policies is not None else None
    if req_policy is None:
        raise EasError("Provision without Policies/Policy", status=ProvisionStatus.PROTOCOL_ERROR)
    policy_type = req_policy.child_text("PolicyType", NS) or ""
    root.add(NS, "Status", ProvisionStatus.SUCCESS)
    out = E(NS, "Policy", E(NS, "PolicyType", policy_type))
    root.append(E(NS, "Policies", out))
    if policy_type != policy.POLICY_TYPE:
        out.add(NS, "Status", PolicyStatus.UNKNOWN_POLICY_TYPE)
        return Response.of(root, status=PolicyStatus.UNKNOWN_POLICY_TYPE)

    acked_key = req_policy.child_text("PolicyKey", NS)
    if acked_key is None:
        # Phase 1: the policy and a temporary key.
        temporary = _new_key(ctx.rng)
        txn.set_policy_keys(device.id, policy_key=device.policy_key, pending_policy_key=temporary)
        out.add(NS, "Status", PolicyStatus.SUCCESS)
        out.add(NS, "PolicyKey", temporary)
        out.append(E(NS, "Data", policy.provision_doc(ctx.version, ctx.config.policy)))
        return Response.of(root, status=ProvisionStatus.SUCCESS)

    # Phase 2: the acknowledgement of the temporary key.
    try:
        key = int(acked_key)
    except ValueError:
        key = -1
    if device.pending_policy_key == 0 or key != device.pending_policy_key:
        out.add(NS, "Status", PolicyStatus.WRONG_POLICY_KEY)
        return Response.of(root, status=PolicyStatus.WRONG_POLICY_KEY)
    final = _new_key(ctx.rng)
    txn.set_policy_keys(device.id, policy_key=final, pending_policy_key=0)
    txn.set_device_setting(
        device.id, policy.ACKED_POLICY_SETTING, policy.fingerprint(ctx.config.policy)
    )
    out.add(NS, "Status", PolicyStatus.SUCCESS)
    out.add(NS, "PolicyKey", final)
    return Response.of(root, status=ProvisionStatus.SUCCESS)
