"""Provision (MS-ASPROV): two-phase keys, policy key enforcement per version, remote wipe,
device access states."""

from __future__ import annotations

import pytest

from natsync.store.api import AccessState, Store, Txn, WipeState
from natsync.wbxml import E
from tests.eas.helpers import Phone

NS = "Provision"


def _device(store: Store, device_id: str = "phone1"):  # type: ignore[no-untyped-def]
    def run(txn: Txn):  # type: ignore[no-untyped-def]
        user = txn.get_user("alice")
        assert user is not None
        return txn.get_device(user.id, device_id)

    return store.run_sync(run)


def test_two_phase_key_exchange(store: Store) -> None:
    phone = Phone(store)
    policy = E(NS, "Policy", E(NS, "PolicyType", "MS-EAS-Provisioning-WBXML"))
    first = phone.tree("Provision", E(NS, "Provision", E(NS, "Policies", policy)))
    assert first.child_text("Status") == "1"
    out = first.find("Policies").find("Policy")  # type: ignore[union-attr]
    assert out is not None
    assert out.child_text("Status") == "1"
    temporary = out.child_text("PolicyKey")
    doc = out.find("Data").find("EASProvisionDoc")  # type: ignore[union-attr]
    assert doc is not None
    assert doc.child_text("AttachmentsEnabled") == "1"
    device = _device(store)
    assert device.policy_key == 0
    assert device.pending_policy_key == int(temporary or 0)
    # The temporary key does not open other commands.
    phone.policy_key = int(temporary or 0)
    assert phone.tree("FolderSync", _fs()).child_text("Status") == "142"
    final = phone.provision()
    assert final != int(temporary or 0)
    assert _device(store).policy_key == final
    assert phone.tree("FolderSync", _fs()).child_text("Status") == "1"
    # A key that is not the device's is refused as invalid.
    phone.policy_key = final + 1
    assert phone.tree("FolderSync", _fs()).child_text("Status") == "144"


def _fs():  # type: ignore[no-untyped-def]
    return E("FolderHierarchy", "FolderSync", E("FolderHierarchy", "SyncKey", "0"))


def test_wrong_acknowledged_key_gets_policy_status_5(store: Store) -> None:
    phone = Phone(store)
    ack = E(
        NS,
        "Policy",
        E(NS, "PolicyType", "MS-EAS-Provisioning-WBXML"),
        E(NS, "PolicyKey", "12345"),
        E(NS, "Status", 1),
    )
    tree = phone.tree("Provision", E(NS, "Provision", E(NS, "Policies", ack)))
    assert tree.find("Policies").find("Policy").child_text("Status") == "5"  # type: ignore[union-attr]
    assert _device(store).policy_key == 0


@pytest.mark.parametrize("version", ["14.0", "14.1", "16.0", "16.1"])
def test_unprovisioned_device_gets_status_142(store: Store, version: str) -> None:
    phone = Phone(store, version=version)
    response = phone.call("FolderSync", _fs())
    assert response.http_status == 200
    assert phone.tree("FolderSync", _fs()).child_text("Status") == "142"


def test_unprovisioned_12_1_device_gets_http_449(store: Store) -> None:
    phone = Phone(store, version="12.1")
    assert phone.call("FolderSync", _fs()).http_status == 449
    phone.provision()
    assert phone.call("FolderSync", _fs()).http_status == 200


def test_provisioning_can_be_switched_off(store: Store) -> None:
    from dataclasses import replace

    from tests.eas.helpers import CONFIG

    phone = Phone(store, config=replace(CONFIG, require_provisioning=False))
    assert phone.tree("FolderSync", _fs()).child_text("Status") == "1"


def _set(store: Store, **kw: object) -> None:
    def run(txn: Txn) -> None:
        user = txn.get_user("alice")
        assert user is not None
        device = txn.get_device(user.id, "phone1")
        assert device is not None
        if "access" in kw:
            txn.set_access_state(device.id, kw["access"])  # type: ignore[arg-type]
        if "wipe" in kw:
            from tests.eas.helpers import NOW

            txn.set_wipe_state(device.id, kw["wipe"], NOW)  # type: ignore[arg-type]

    store.run_sync(run)


def test_remote_wipe_and_acknowledgement(store: Store) -> None:
    phone = Phone(store)
    phone.provision()
    _set(store, wipe=WipeState.PENDING)
    assert phone.tree("FolderSync", _fs()).child_text("Status") == "140"
    policy = E(NS, "Policy", E(NS, "PolicyType", "MS-EAS-Provisioning-WBXML"))
    tree = phone.tree("Provision", E(NS, "Provision", E(NS, "Policies", policy)))
    assert tree.find("RemoteWipe") is not None
    assert _device(store).wipe_state == WipeState.SENT
    ack = phone.tree("Provision", E(NS, "Provision", E(NS, "RemoteWipe", E(NS, "Status", 1))))
    assert ack.child_text("Status") == "1"
    device = _device(store)
    assert device.wipe_state == WipeState.ACKNOWLEDGED
    assert device.wipe_acknowledged_at is not None


def test_account_only_wipe_is_16_1(store: Store) -> None:
    phone = Phone(store)
    phone.provision()
    _set(store, wipe=WipeState.ACCOUNT_ONLY_PENDING)
    policy = E(NS, "Policy", E(NS, "PolicyType", "MS-EAS-Provisioning-WBXML"))
    tree = phone.tree("Provision", E(NS, "Provision", E(NS, "Policies", policy)))
    assert tree.find("AccountOnlyRemoteWipe") is not None
    assert tree.find("RemoteWipe") is None
    body = E(NS, "Provision", E(NS, "AccountOnlyRemoteWipe", E(NS, "Status", 1)))
    phone.tree("Provision", body)
    assert _device(store).wipe_state == WipeState.ACKNOWLEDGED


def test_blocked_device(store: Store) -> None:
    phone = Phone(store)
    phone.provision()
    _set(store, access=AccessState.BLOCKED)
    assert phone.tree("FolderSync", _fs()).child_text("Status") == "129"
    old = Phone(store, version="12.1")
    assert old.call("FolderSync", _fs()).http_status == 403


def test_quarantined_device_sees_only_a_notice(store: Store) -> None:
    from natsync.store.api import FolderType
    from tests.eas.helpers import collection, commands, deliver, folder_id, make_mail

    real = deliver(store, make_mail("secret", "real mail"))
    inbox = folder_id(store, FolderType.INBOX)
    phone = Phone(store)
    phone.provision()
    _set(store, access=AccessState.QUARANTINED)
    assert phone.tree("FolderSync", _fs()).child_text("Status") == "1"
    key = collection(phone.sync(inbox, "0")).child_text("SyncKey") or ""
    coll = collection(phone.sync(inbox, key))
    adds = commands(coll, "Add")
    assert len(adds) == 1
    subject = adds[0].find("ApplicationData").child_text("Subject")  # type: ignore[union-attr]
    assert subject == "Your device is waiting for approval"
    notice = adds[0].child_text("ServerId")
    key = coll.child_text("SyncKey") or ""
    # Real items cannot be touched by guessing their ids.
    read = E(
        "AirSync",
        "Change",
        E("AirSync", "ServerId", real),
        E("AirSync", "ApplicationData", E("Email", "Read", 1)),
    )
    coll = collection(phone.sync(inbox, key, commands=[read]))
    assert coll.find("Responses").find("Change").child_text("Status") == "8"  # type: ignore[union-attr]
    key = coll.child_text("SyncKey") or ""
    io = "ItemOperations"
    fetch = E(io, io, E(io, "Fetch", E(io, "Store", "Mailbox"), E("AirSync", "ServerId", real)))
    assert phone.tree(io, fetch).child_text("Status") == "130"
    # Allowed: the notice goes, the real mail comes.
    _set(store, access=AccessState.ALLOWED)
    coll = collection(phone.sync(inbox, key))
    assert [d.child_text("ServerId") for d in commands(coll, "Delete")] == [notice]
    assert [a.child_text("ServerId") for a in commands(coll, "Add")] == [real]


def test_changed_policy_asks_for_provisioning_again(store: Store) -> None:
    from dataclasses import replace

    from tests.eas.helpers import CONFIG

    phone = Phone(store)
    phone.provision()
    assert phone.tree("FolderSync", _fs()).child_text("Status") == "1"
    phone.config = replace(CONFIG, policy={"DevicePasswordEnabled": 1})
    assert phone.tree("FolderSync", _fs()).child_text("Status") == "143"
    phone.provision()
    assert phone.tree("FolderSync", _fs()).child_text("Status") == "1"
