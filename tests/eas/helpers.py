"""A tiny in-process phone for the sans-I/O protocol tests: builds EasRequests, runs
natsync.eas.dispatch in one store transaction, decodes the answer. No sockets."""

from __future__ import annotations

import random
import secrets
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

from natsync.config import ServerConfig
from natsync.eas import dispatch
from natsync.eas.context import HoldUntilChange, Response
from natsync.eas.errors import Answered, HttpError
from natsync.eas.request import EasRequest
from natsync.eas.versions import Version
from natsync.mime import parse_message
from natsync.store.api import FolderType, Store, Txn
from natsync.wbxml import E, Element, decode, encode

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
CONFIG = ServerConfig(domains=("example.test",))


def make_mail(
    subject: str = "Hello",
    body: str = "Hi there",
    *,
    sender: str = "bob@remote.test",
    to: str = "alice@example.test",
    html: str | None = None,
    attachment: bytes | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = f"<{abs(hash((subject, body)))}@remote.test>"
    msg["Date"] = "Sun, 01 Mar 2026 10:00:00 +0000"
    msg.set_content(body)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    if attachment is not None:
        msg.add_attachment(
            attachment, maintype="application", subtype="octet-stream", filename="data.bin"
        )
    return msg.as_bytes()


def deliver(
    store: Store,
    raw: bytes,
    *,
    folder: FolderType = FolderType.INBOX,
    user: str = "alice",
    at: datetime | None = None,
) -> str:
    def run(txn: Txn) -> str:
        u = txn.get_user(user)
        assert u is not None
        f = txn.folder_by_type(u.id, folder)
        new = parse_message(raw, at or NOW - timedelta(hours=1))
        return txn.add_message(f.id, new).server_id

    return store.run_sync(run)


def folder_id(store: Store, ftype: FolderType, user: str = "alice") -> str:
    def run(txn: Txn) -> str:
        u = txn.get_user(user)
        assert u is not None
        return txn.folder_by_type(u.id, ftype).server_id

    return store.run_sync(run)


class Phone:
    """One device of alice speaking one protocol version."""

    def __init__(
        self,
        store: Store,
        device_id: str = "phone1",
        version: str = "16.1",
        config: ServerConfig = CONFIG,
        user: str = "alice",
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        #: The keys' source (a seeded one makes answers reproducible byte for byte).
        self.rng = rng if rng is not None else secrets.SystemRandom()
        self.device_id = device_id
        self.version = Version.parse(version)
        self.config = config
        self.user = user
        self.policy_key: int | None = None
        self.now = NOW

    def request(self, cmd: str, **kw: Any) -> EasRequest:
        base = EasRequest(
            cmd=cmd,
            user=self.user,
            device_id=self.device_id,
            device_type="TestPhone",
            version=self.version,
            policy_key=self.policy_key,
            user_agent="natsync-tests",
        )
        return replace(base, **kw)

    def call(self, cmd: str, body: Element | None = None, raw: bytes = b"", **kw: Any) -> Response:
        req = self.request(cmd, **kw)
        wire = encode(body) if body is not None else raw
        decoded = decode(wire) if body is not None else None

        def run(txn: Txn) -> Response:
            return dispatch.handle(
                txn, req, self.user, decoded, wire, self.now, self.config, rng=self.rng
            )

        try:
            return self.store.run_sync(run)
        except Answered as exc:
            return exc.response
        except HttpError as exc:  # what the server adapter turns into a bare HTTP status
            return Response(http_status=exc.http_status, headers=exc.headers)

    def tree(self, cmd: str, body: Element | None = None, **kw: Any) -> Element:
        response = self.call(cmd, body, **kw)
        assert response.http_status == 200, response
        assert response.body, f"{cmd} answered with no body"
        return decode(response.body)

    def provision(self) -> int:
        ns = "Provision"
        policy = E(ns, "Policy", E(ns, "PolicyType", "MS-EAS-Provisioning-WBXML"))
        first = self.tree("Provision", E(ns, "Provision", E(ns, "Policies", policy)))
        temp = first.find("Policies").find("Policy").child_text("PolicyKey")  # type: ignore[union-attr]
        assert temp
        ack = E(
            ns,
            "Policy",
            E(ns, "PolicyType", "MS-EAS-Provisioning-WBXML"),
            E(ns, "PolicyKey", temp),
            E(ns, "Status", 1),
        )
        second = self.tree("Provision", E(ns, "Provision", E(ns, "Policies", ack)))
        final = second.find("Policies").find("Policy").child_text("PolicyKey")  # type: ignore[union-attr]
        assert final
        self.policy_key = int(final)
        return self.policy_key

    def folder_sync(self, key: str = "0") -> Element:
        ns = "FolderHierarchy"
        return self.tree("FolderSync", E(ns, "FolderSync", E(ns, "SyncKey", key)))

    def sync(
        self,
        collection: str,
        key: str,
        *,
        window: int | None = None,
        commands: list[Element] | None = None,
        options: Element | None = None,
        extra: list[Element] | None = None,
    ) -> Element:
        ns = "AirSync"
        coll = E(ns, "Collection", E(ns, "SyncKey", key), E(ns, "CollectionId", collection))
        if window is not None:
            coll.add(ns, "WindowSize", window)
        for el in extra or []:
            coll.append(el)
        if options is not None:
            coll.append(options)
        if commands:
            coll.append(E(ns, "Commands", *commands))
        return self.tree("Sync", E(ns, "Sync", E(ns, "Collections", coll)))


def collection(tree: Element) -> Element:
    coll = tree.find("Collections").find("Collection")  # type: ignore[union-attr]
    assert coll is not None
    return coll


def commands(coll: Element, tag: str) -> list[Element]:
    cmds = coll.find("Commands")
    return cmds.findall(tag) if cmds is not None else []


def hold_asked(response: Response) -> HoldUntilChange | None:
    """The hold a command asked the adapter for, by name among its effects (a held request
    asks for nothing else)."""
    holds = [effect for effect in response.effects if isinstance(effect, HoldUntilChange)]
    assert holds in ([], list(response.effects)), response.effects
    return holds[0] if holds else None
