"""An ActiveSync client that behaves like a phone: the I/O half, on aiohttp.

It negotiates the version from OPTIONS, provisions (both phases, again whenever the server
answers HTTP 449 or Status 142/143/144, acknowledging remote wipes), keeps its folder
hierarchy, SyncKeys and item ids like a phone does, and turns every refusal into a
:class:`ClientError` carrying the HTTP status and EAS Status. The wire forms are built and read
in ``protocol.py``; this module only moves bytes.

Used by the tests, and later by doctor, lab and the benchmarks.
"""

from __future__ import annotations

import base64
import itertools
import logging
import secrets
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from urllib.parse import quote

import aiohttp

from natsync.client import protocol as p
from natsync.client.protocol import (
    BodyPreference,
    BodyType,
    ClientChange,
    ClientError,
    Command,
    EmailItem,
    FetchResult,
    FilterType,
    FolderInfo,
    FolderSyncResult,
    Identity,
    ItemCommand,
    RemoteWipeError,
    SearchResult,
)
from natsync.client.state import DeviceState
from natsync.wbxml import decode, encode
from natsync.wbxml.tree import Element

log = logging.getLogger("natsync.client")

#: Seconds a normal command may take before the client gives up (a phone's patience).
DEFAULT_TIMEOUT = 60.0
#: Extra seconds beyond the heartbeat a Ping request may be held: the server answers at the
#: heartbeat, so anything later is a broken path, not a slow server.
PING_GRACE = 30.0
#: Pages of one sync() call before the client stops: a server that never clears MoreAvailable
#: must not hold a client forever (1,000 pages of 100 = 100,000 items).
MAX_SYNC_ROUNDS = 1000
#: How often a command is retried after re-provisioning; a second demand means a broken server.
MAX_REPROVISION = 1


@dataclass(frozen=True, slots=True)
class Response:
    """One HTTP exchange: status, headers, raw body and its decoded tree (None when empty)."""

    status: int
    headers: Mapping[str, str]
    body: bytes
    tree: Element | None


@dataclass(frozen=True, slots=True)
class ServerOptions:
    """What OPTIONS told us (MS-ASHTTP 2.2.2.2)."""

    versions: tuple[str, ...]
    commands: tuple[str, ...]
    server: str


@dataclass(slots=True)
class SyncResult:
    """Everything one sync() call collected over its pages."""

    collection_id: str
    sync_key: str = "0"
    added: list[EmailItem] = field(default_factory=list)
    changed: list[EmailItem] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    soft_deleted: list[str] = field(default_factory=list)
    responses: list[p.ChangeResponse] = field(default_factory=list)
    #: Server ids the server added although the device already held them (must stay empty).
    duplicates: list[str] = field(default_factory=list)
    rounds: int = 0
    #: True when the server refused our SyncKey (Status 3) and the client started over.
    reset: bool = False


@dataclass(slots=True)
class ItemSyncResult:
    """What :meth:`EASClient.sync_items` brought, for a collection of any class.

    ``items`` maps each ServerId the server added or changed to its ApplicationData, the
    latest version when one came twice; ``created`` maps each ClientId the device added to the
    ServerId the server gave it; ``deleted`` holds Delete and SoftDelete ids. ``raw`` is the
    full :class:`SyncResult` (pages, responses, duplicates).
    """

    items: dict[str, Element]
    created: dict[str, str]
    deleted: list[str]
    raw: SyncResult


class EASClient:
    """A device: one user, one DeviceId, its own state. Use as ``async with EASClient(...)``."""

    def __init__(
        self,
        base_url: str,
        user: str,
        password: str,
        *,
        device_id: str = "NATSYNCEMU0001",
        device_type: str = "natsync",
        preferred_version: str = p.DEFAULT_VERSION,
        ca_file: str | Path | None = None,
        ssl_context: ssl.SSLContext | None = None,
        state_path: str | Path | None = None,
        query_form: str = "plain",
        device_info: p.DeviceInfo | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        on_response: Callable[[Command, Response], None] | None = None,
    ) -> None:
        if query_form not in ("plain", "base64"):
            raise ClientError(f"query_form must be 'plain' or 'base64', not {query_form!r}")
        self.base_url = base_url.rstrip("/")
        self.identity = Identity(user=user, device_id=device_id, device_type=device_type)
        self.preferred_version = preferred_version
        self.query_form = query_form
        self.device_info = device_info or p.DeviceInfo()
        self.timeout = timeout
        # RFC 7617 Basic credentials, UTF-8 (what phones send for non-ASCII passwords).
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        self._authorization = f"Basic {token}"
        if ssl_context is None and ca_file is not None:
            ssl_context = ssl.create_default_context(cafile=str(ca_file))
        self._ssl = ssl_context
        self._session: aiohttp.ClientSession | None = None
        self.state_path = None if state_path is None else Path(state_path)
        self.state = DeviceState.load(self.state_path) if self.state_path else DeviceState()
        #: The last policy document the server sent (EASProvisionDoc), for callers to inspect.
        self.policy: Element | None = None
        self.server_options: ServerOptions | None = None
        self._client_ids = itertools.count(1)
        #: Called with every POST's response before it is interpreted (tracing, tests, doctor).
        self.on_response = on_response

    # -- lifecycle

    async def __aenter__(self) -> EASClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(ssl=self._ssl if self._ssl is not None else True)
            self._session = aiohttp.ClientSession(
                connector=connector, headers={"Authorization": self._authorization}
            )
        return self._session

    def save_state(self) -> None:
        if self.state_path is not None:
            self.state.save(self.state_path)

    @property
    def version(self) -> str:
        return self.state.protocol_version or self.preferred_version

    # -- the HTTP exchange

    def build_url(
        self,
        command: Command,
        params: Mapping[str, str] | None = None,
        b64_params: Sequence[tuple[p.QueryParam, bytes]] = (),
        policy_key: int | None = None,
    ) -> str:
        """The request URL in the configured query form."""
        if self.query_form == "base64":
            key = self.state.policy_key if policy_key is None else policy_key
            # Percent-encoded: a raw "+" reads as a space to many HTTP stacks (RFC 3986 / forms).
            query = quote(
                p.base64_query(self.identity, command, self.version, key, b64_params), safe=""
            )
        else:
            query = p.plain_query(self.identity, command, params)
        return f"{self.base_url}{p.EAS_PATH}?{query}"

    async def request(
        self,
        command: Command,
        body: Element | bytes | None,
        *,
        params: Mapping[str, str] | None = None,
        b64_params: Sequence[tuple[p.QueryParam, bytes]] = (),
        content_type: str = p.WBXML_CONTENT_TYPE,
        policy_key: int | None = None,
        timeout: float | None = None,
        auto_provision: bool = True,
    ) -> Response:
        """Send one command; re-provision and retry when the server demands it.

        Raises ClientError for any HTTP status but 200, with the status attached.
        """
        if not self.state.protocol_version:
            await self.options()
        for attempt in itertools.count():
            response = await self._exchange(
                command, body, params, b64_params, content_type, policy_key, timeout
            )
            demand = self._provision_demand(response)
            if demand is None or not auto_provision or command == Command.Provision:
                break
            if attempt >= MAX_REPROVISION:
                raise ClientError(
                    f"{command.name}: the server still demands provisioning after a "
                    f"successful Provision ({demand})",
                    http_status=response.status,
                    eas_status=p.status_of(response.tree),
                )
            log.info("%s: server demands provisioning (%s); provisioning", command.name, demand)
            await self.provision()
        if response.status != 200:
            raise self._http_error(command, response)
        return response

    def _provision_demand(self, response: Response) -> str | None:
        if response.status == p.HTTP_NEEDS_PROVISION:
            return "HTTP 449"
        if response.status != 200 or response.tree is None:
            return None
        status = p.status_of(response.tree)
        if status in p.REPROVISION_STATUSES or status == p.GlobalStatus.REMOTE_WIPE_REQUESTED:
            return f"Status {status}"
        return None

    def _http_error(self, command: Command, response: Response) -> ClientError:
        reasons = {
            401: "authentication failed (wrong user or password)",
            403: "the server forbids this device or user",
            404: "no ActiveSync endpoint at this URL",
            451: f"the server redirects to {response.headers.get('X-MS-Location', '?')}",
            503: "the server is unavailable; retry later",
        }
        reason = reasons.get(response.status, "the server refused the request")
        return ClientError(
            f"{command.name}: HTTP {response.status}: {reason}", http_status=response.status
        )

    async def _exchange(
        self,
        command: Command,
        body: Element | bytes | None,
        params: Mapping[str, str] | None,
        b64_params: Sequence[tuple[p.QueryParam, bytes]],
        content_type: str,
        policy_key: int | None,
        timeout: float | None,
    ) -> Response:
        key = self.state.policy_key if policy_key is None else policy_key
        url = self.build_url(command, params, b64_params, key)
        data = encode(body) if isinstance(body, Element) else body
        headers = p.request_headers(
            self.version,
            key,
            self.device_info.user_agent,
            content_type=content_type if data is not None else None,
            base64_form=self.query_form == "base64",
        )
        client_timeout = aiohttp.ClientTimeout(total=timeout or self.timeout)
        try:
            async with self._http().post(
                url, data=data or b"", headers=headers, timeout=client_timeout
            ) as resp:
                raw = await resp.read()
                status = resp.status
                resp_headers = dict(resp.headers)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ClientError(f"{command.name}: cannot talk to {self.base_url}: {exc}") from exc
        tree: Element | None = None
        if raw and status == 200:
            kind = resp_headers.get("Content-Type", "")
            if kind.startswith(p.WBXML_CONTENT_TYPE):
                tree = decode(raw)
        response = Response(status=status, headers=resp_headers, body=raw, tree=tree)
        if self.on_response is not None:
            self.on_response(command, response)
        return response

    # -- OPTIONS and Provision

    async def options(self) -> ServerOptions:
        """Ask what the server speaks and settle on a version (MS-ASHTTP 3.1.5.1)."""
        url = f"{self.base_url}{p.EAS_PATH}"
        try:
            async with self._http().options(
                url,
                headers={"User-Agent": self.device_info.user_agent},
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            ) as resp:
                await resp.read()
                status = resp.status
                headers = resp.headers
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise ClientError(f"OPTIONS: cannot talk to {self.base_url}: {exc}") from exc
        if status != 200:
            raise ClientError(f"OPTIONS: HTTP {status}", http_status=status)
        versions = tuple(
            v.strip() for v in headers.get("MS-ASProtocolVersions", "").split(",") if v.strip()
        )
        commands = tuple(
            c.strip() for c in headers.get("MS-ASProtocolCommands", "").split(",") if c.strip()
        )
        self.server_options = ServerOptions(
            versions=versions, commands=commands, server=headers.get("MS-Server-ActiveSync", "")
        )
        chosen = p.choose_version(versions, self.preferred_version)
        if chosen != self.state.protocol_version:
            self.state.protocol_version = chosen
            self.save_state()
        return self.server_options

    async def provision(self) -> int:
        """Both phases of Provision; returns and keeps the final policy key (MS-ASPROV 3.1.5.1)."""
        first = await self.request(
            Command.Provision,
            p.provision_request(self.version, self.device_info),
            policy_key=0,
        )
        root = self._provision_root(first)
        await self._handle_wipe(root)
        self._check_provision_status(root)
        policy = self._policy(root)
        temporary = p.number_in(policy, "PolicyKey", 0)
        data = policy.find("Data")
        self.policy = None if data is None else data.find("EASProvisionDoc")
        second = await self.request(
            Command.Provision, p.provision_ack(temporary), policy_key=temporary
        )
        root = self._provision_root(second)
        await self._handle_wipe(root)
        self._check_provision_status(root)
        policy = self._policy(root)
        final = p.number_in(policy, "PolicyKey", 0)
        if not final:
            raise ClientError("Provision: the acknowledgement answer carries no PolicyKey")
        self.state.policy_key = final
        self.save_state()
        return final

    @staticmethod
    def _provision_root(response: Response) -> Element:
        if response.tree is None or response.tree.tag != "Provision":
            raise ClientError("Provision: the server answered without a Provision document")
        return response.tree

    @staticmethod
    def _check_provision_status(root: Element) -> None:
        status = p.status_of(root)
        if status != 1:
            raise ClientError(f"Provision failed with Status {status}", eas_status=status)

    @staticmethod
    def _policy(root: Element) -> Element:
        policies = root.find("Policies")
        policy = None if policies is None else policies.find("Policy")
        if policy is None:
            raise ClientError("Provision: the answer has no Policies/Policy")
        status = p.status_of(policy)
        if status not in (None, 1):
            raise ClientError(f"Provision: Policy Status {status}", eas_status=status)
        return policy

    async def _handle_wipe(self, root: Element) -> None:
        """Acknowledge a wipe directive, forget everything, and tell the caller."""
        if root.find("RemoteWipe") is not None:
            account_only = False
        elif root.find("AccountOnlyRemoteWipe") is not None:
            account_only = True
        else:
            return
        await self.request(Command.Provision, p.wipe_ack(account_only), auto_provision=False)
        self.state.reset_items()
        self.state.policy_key = 0
        self.state.wiped = True
        self.save_state()
        kind = "account-only remote wipe" if account_only else "remote wipe"
        raise RemoteWipeError(f"the server ordered a {kind}; acknowledged and state dropped")

    # -- folders

    async def folder_sync(self) -> FolderSyncResult:
        """FolderSync from the device's key; keeps the hierarchy (MS-ASCMD 2.2.1.5)."""
        response = await self.request(
            Command.FolderSync, p.folder_sync_request(self.state.folder_sync_key)
        )
        root = self._tree(Command.FolderSync, response)
        status = p.status_of(root)
        if status == 9:  # MS-ASCMD 2.2.3.177.4: invalid SyncKey → start the hierarchy over
            self.state.reset_items()
            response = await self.request(Command.FolderSync, p.folder_sync_request("0"))
            root = self._tree(Command.FolderSync, response)
        result = p.parse_folder_sync(root)
        for folder in [*result.added, *result.updated]:
            self.state.folders[folder.server_id] = folder
        for server_id in result.deleted:
            self.state.folders.pop(server_id, None)
            self.state.collections.pop(server_id, None)
        self.state.folder_sync_key = result.sync_key
        self.save_state()
        return result

    def folder(self, *, type: int | None = None, name: str | None = None) -> FolderInfo:
        """A folder the device knows, by type (2 = Inbox ...) or display name."""
        for folder in self.state.folders.values():
            if (type is None or folder.type == type) and (
                name is None or folder.display_name == name
            ):
                return folder
        raise ClientError(f"no folder with type={type} name={name!r}; run folder_sync() first")

    async def folder_create(
        self, name: str, parent_id: str = "0", folder_type: int = 12
    ) -> FolderInfo:
        response = await self.request(
            Command.FolderCreate,
            p.folder_create_request(self.state.folder_sync_key, parent_id, name, folder_type),
        )
        root = self._tree(Command.FolderCreate, response)
        status = p.status_of(root)
        if status != 1:
            raise ClientError(f"FolderCreate failed with Status {status}", eas_status=status)
        info = FolderInfo(root.child_text("ServerId") or "", parent_id, name, folder_type)
        self.state.folders[info.server_id] = info
        self.state.folder_sync_key = root.child_text("SyncKey") or self.state.folder_sync_key
        self.save_state()
        return info

    async def folder_update(self, server_id: str, name: str, parent_id: str = "0") -> None:
        response = await self.request(
            Command.FolderUpdate,
            p.folder_update_request(self.state.folder_sync_key, server_id, parent_id, name),
        )
        root = self._tree(Command.FolderUpdate, response)
        status = p.status_of(root)
        if status != 1:
            raise ClientError(f"FolderUpdate failed with Status {status}", eas_status=status)
        old = self.state.folders.get(server_id)
        self.state.folders[server_id] = FolderInfo(
            server_id, parent_id, name, old.type if old else 12
        )
        self.state.folder_sync_key = root.child_text("SyncKey") or self.state.folder_sync_key
        self.save_state()

    async def folder_delete(self, server_id: str) -> None:
        response = await self.request(
            Command.FolderDelete, p.folder_delete_request(self.state.folder_sync_key, server_id)
        )
        root = self._tree(Command.FolderDelete, response)
        status = p.status_of(root)
        if status != 1:
            raise ClientError(f"FolderDelete failed with Status {status}", eas_status=status)
        self.state.folders.pop(server_id, None)
        self.state.collections.pop(server_id, None)
        self.state.folder_sync_key = root.child_text("SyncKey") or self.state.folder_sync_key
        self.save_state()

    # -- items

    async def sync(
        self,
        collection_id: str,
        *,
        window_size: int = 100,
        body_preference: Iterable[BodyPreference | BodyType | int] = (BodyType.PLAIN,),
        filter_type: FilterType | int | None = None,
        changes: Sequence[ClientChange | ItemCommand] = (),
        deletes_as_moves: bool | None = None,
        max_rounds: int = MAX_SYNC_ROUNDS,
    ) -> SyncResult:
        """Sync one collection to the end: the initial key if needed, then pages until
        MoreAvailable clears. Client *changes* ride on the first page (MS-ASCMD 3.1.5.3)."""
        prefs = p.normalize_preferences(body_preference)
        known = self.state.folders.get(collection_id)
        class_name = p.CLASS_OF_FOLDER_TYPE.get(known.type, "Email") if known else "Email"
        coll = self.state.collection(collection_id)
        result = SyncResult(collection_id=collection_id)
        pending = list(changes)
        while result.rounds < max_rounds:
            key = coll.sync_key
            request = p.sync_request(
                collection_id,
                key,
                window_size=window_size,
                prefs=prefs,
                filter_type=filter_type,
                changes=pending,
                deletes_as_moves=deletes_as_moves,
                version=self.version,
                class_name=class_name,
            )
            response = await self.request(Command.Sync, request)
            result.rounds += 1
            if response.tree is None:
                # MS-ASCMD 2.2.1.21: an empty answer means nothing changed since the key.
                if not pending:
                    break
                raise ClientError("Sync: the server sent an empty answer to client changes")
            pages = [
                pg for pg in p.parse_sync(response.tree) if pg.collection_id in ("", collection_id)
            ]
            if not pages:
                raise ClientError(f"Sync: the answer does not mention collection {collection_id}")
            page = pages[0]
            if page.status == p.SyncStatus.INVALID_SYNC_KEY:
                if result.reset:
                    raise ClientError("Sync: SyncKey 0 refused too", eas_status=page.status)
                log.info("Sync %s: SyncKey %s refused; resyncing from 0", collection_id, key)
                coll.sync_key = "0"
                coll.server_ids.clear()
                result.reset = True
                continue
            if page.status != p.SyncStatus.SUCCESS:
                raise ClientError(
                    f"Sync of {collection_id} failed with Status {page.status}",
                    eas_status=page.status,
                )
            for item in page.added:
                if item.server_id in coll.server_ids:
                    result.duplicates.append(item.server_id)
                coll.server_ids.add(item.server_id)
            for sid in [*page.deleted, *page.soft_deleted]:
                coll.server_ids.discard(sid)
            if pending:
                for change in pending:
                    if change.delete:
                        coll.server_ids.discard(change.server_id)
                pending = []
            result.added.extend(page.added)
            result.changed.extend(page.changed)
            result.deleted.extend(page.deleted)
            result.soft_deleted.extend(page.soft_deleted)
            result.responses.extend(page.responses)
            coll.sync_key = page.sync_key or coll.sync_key
            result.sync_key = coll.sync_key
            self.save_state()
            if key == "0":
                continue  # the initial exchange only hands out a key; now fetch the items
            if not page.more_available:
                break
        failed = [r for r in result.responses if r.status != 1]
        if failed:
            first = failed[0]
            raise ClientError(
                f"Sync: the server refused {first.kind} of {first.server_id} "
                f"with Status {first.status}",
                eas_status=first.status,
            )
        return result

    async def sync_items(
        self,
        collection_id: str,
        commands: Sequence[ItemCommand] = (),
        *,
        filter_type: FilterType | int | None = None,
        body_preference: Iterable[BodyPreference | BodyType | int] = (BodyType.PLAIN,),
        window_size: int = 100,
    ) -> ItemSyncResult:
        """Sync a collection of any class (Calendar, Contacts, Tasks, Notes, Email) to the end,
        sending *commands* (:class:`ItemCommand` Add / Change / Delete) with the first page;
        see :class:`ItemSyncResult`. Raises ClientError when the server refused a command.

        ``FilterType`` values of other classes pass as plain ints (Calendar 4-7, Tasks 8).
        """
        if self.state.collection(collection_id).sync_key == "0" and commands:
            # Commands ride on a request with a real key: get one first (MS-ASCMD 3.1.5.3).
            await self.sync(
                collection_id,
                filter_type=filter_type,
                body_preference=body_preference,
                window_size=window_size,
            )
        raw = await self.sync(
            collection_id,
            window_size=window_size,
            body_preference=body_preference,
            filter_type=filter_type,
            changes=commands,
        )
        items: dict[str, Element] = {}
        for item in [*raw.added, *raw.changed]:
            if item.data is not None:
                items[item.server_id] = item.data
        created = {
            r.client_id: r.server_id for r in raw.responses if r.kind == "Add" and r.status == 1
        }
        for server_id in created.values():
            self.state.collection(collection_id).server_ids.add(server_id)
        self.save_state()
        return ItemSyncResult(
            items=items, created=created, deleted=[*raw.deleted, *raw.soft_deleted], raw=raw
        )

    def new_client_id(self) -> str:
        """A fresh ClientId for an :meth:`ItemCommand.add` (unique per device)."""
        return self._client_id()

    async def change_read(
        self, collection_id: str, server_id: str, read: bool = True
    ) -> SyncResult:
        return await self.sync(collection_id, changes=[ClientChange(server_id, read=read)])

    async def change_flag(self, collection_id: str, server_id: str, status: int = 2) -> SyncResult:
        return await self.sync(collection_id, changes=[ClientChange(server_id, flag_status=status)])

    async def delete(
        self, collection_id: str, server_ids: Sequence[str], *, deletes_as_moves: bool = True
    ) -> SyncResult:
        return await self.sync(
            collection_id,
            changes=[ClientChange(sid, delete=True) for sid in server_ids],
            deletes_as_moves=deletes_as_moves,
        )

    async def move_items(self, server_ids: Sequence[str], src: str, dst: str) -> dict[str, str]:
        """Move items; returns source id → new id. Raises on any item the server refused."""
        response = await self.request(
            Command.MoveItems, p.move_items_request([(sid, src, dst) for sid in server_ids])
        )
        results = p.parse_move_items(self._tree(Command.MoveItems, response))
        moved: dict[str, str] = {}
        for r in results:
            if r.status != p.MOVE_SUCCESS:
                raise ClientError(
                    f"MoveItems of {r.src_id} failed with Status {r.status}", eas_status=r.status
                )
            moved[r.src_id] = r.dst_id
        src_state = self.state.collections.get(src)
        if src_state is not None:
            src_state.server_ids.difference_update(moved)
        self.save_state()
        return moved

    async def item_operations_fetch(
        self,
        *,
        file_reference: str | None = None,
        collection_id: str | None = None,
        server_id: str | None = None,
        body_preference: Iterable[BodyPreference | BodyType | int] = (),
    ) -> FetchResult:
        """Fetch an attachment by FileReference, or an item's body (MS-ASCMD 2.2.1.10)."""
        request = p.fetch_request(
            file_reference=file_reference,
            collection_id=collection_id,
            server_id=server_id,
            prefs=p.normalize_preferences(body_preference),
        )
        response = await self.request(Command.ItemOperations, request)
        results = p.parse_item_operations(self._tree(Command.ItemOperations, response))
        if not results:
            raise ClientError("ItemOperations: the answer holds no Fetch result")
        result = results[0]
        if result.status != 1:
            raise ClientError(
                f"ItemOperations Fetch failed with Status {result.status}",
                eas_status=result.status,
            )
        return result

    async def empty_folder(self, collection_id: str) -> None:
        response = await self.request(Command.ItemOperations, p.empty_folder_request(collection_id))
        results = p.parse_item_operations(self._tree(Command.ItemOperations, response))
        if not results or results[0].status != 1:
            status = results[0].status if results else None
            raise ClientError(f"EmptyFolderContents failed with Status {status}", eas_status=status)

    def _client_id(self) -> str:
        return f"{secrets.token_hex(8)}{next(self._client_ids)}"

    async def _compose(
        self,
        command: Command,
        mime: bytes,
        *,
        save_in_sent: bool,
        folder_id: str | None = None,
        item_id: str | None = None,
        replace_mime: bool = False,
    ) -> None:
        if p.version_at_least(self.version, "14.0"):
            body = p.compose_request(
                command.name,
                self._client_id(),
                mime,
                save_in_sent=save_in_sent,
                folder_id=folder_id,
                item_id=item_id,
                replace_mime=replace_mime,
            )
            response = await self.request(command, body)
        else:
            # MS-ASCMD 2.2.1.17: before 14.0 the body is the MIME itself, options in the URI.
            params: dict[str, str] = {}
            b64: list[tuple[p.QueryParam, bytes]] = []
            if item_id is not None and folder_id is not None:
                params.update(ItemId=item_id, CollectionId=folder_id)
                b64 += [
                    (p.QueryParam.ItemId, item_id.encode()),
                    (p.QueryParam.CollectionId, folder_id.encode()),
                ]
            if save_in_sent:
                params["SaveInSent"] = "T"
                b64.append((p.QueryParam.Options, bytes([p.QueryOption.SAVE_IN_SENT])))
            response = await self.request(
                command, mime, params=params, b64_params=b64, content_type=p.MIME_CONTENT_TYPE
            )
        if response.tree is not None:
            status = p.status_of(response.tree)
            if status not in (None, 1):
                raise ClientError(f"{command.name} failed with Status {status}", eas_status=status)

    async def send_mail(self, mime: bytes, *, save_in_sent: bool = True) -> None:
        await self._compose(Command.SendMail, mime, save_in_sent=save_in_sent)

    async def smart_reply(
        self,
        folder_id: str,
        item_id: str,
        mime: bytes,
        *,
        save_in_sent: bool = True,
        replace_mime: bool = False,
    ) -> None:
        await self._compose(
            Command.SmartReply,
            mime,
            save_in_sent=save_in_sent,
            folder_id=folder_id,
            item_id=item_id,
            replace_mime=replace_mime,
        )

    async def smart_forward(
        self,
        folder_id: str,
        item_id: str,
        mime: bytes,
        *,
        save_in_sent: bool = True,
        replace_mime: bool = False,
    ) -> None:
        await self._compose(
            Command.SmartForward,
            mime,
            save_in_sent=save_in_sent,
            folder_id=folder_id,
            item_id=item_id,
            replace_mime=replace_mime,
        )

    # -- push, estimates, search, settings

    async def ping(self, folders: Sequence[str], heartbeat: int) -> list[str]:
        """Hold a Ping; returns the folders that changed ([] when the heartbeat expired)."""
        response = await self.request(
            Command.Ping, p.ping_request(heartbeat, folders), timeout=heartbeat + PING_GRACE
        )
        status, changed, limit = p.parse_ping(self._tree(Command.Ping, response))
        if status == p.PingStatus.EXPIRED:
            return []
        if status == p.PingStatus.CHANGES:
            return changed
        detail = f" (server limit {limit})" if limit is not None else ""
        raise ClientError(f"Ping failed with Status {status}{detail}", eas_status=status)

    async def get_item_estimate(
        self, collection_id: str, filter_type: FilterType | None = None
    ) -> int:
        key = self.state.collection(collection_id).sync_key
        response = await self.request(
            Command.GetItemEstimate,
            p.estimate_request(collection_id, key, self.version, filter_type),
        )
        estimates = p.parse_estimate(self._tree(Command.GetItemEstimate, response))
        if collection_id not in estimates:
            raise ClientError(f"GetItemEstimate: no estimate for {collection_id}")
        return estimates[collection_id]

    async def search(
        self,
        query: str,
        *,
        collection_id: str | None = None,
        range_: tuple[int, int] = (0, 99),
        body_preference: Iterable[BodyPreference | BodyType | int] = (),
    ) -> SearchResult:
        request = p.search_request(
            query, collection_id, range_, p.normalize_preferences(body_preference)
        )
        response = await self.request(Command.Search, request)
        return p.parse_search(self._tree(Command.Search, response))

    async def settings(
        self,
        *,
        device_information: bool = False,
        user_information: bool = False,
        oof_get: bool = False,
        oof_set: Element | None = None,
    ) -> Element:
        """Settings request; returns the answer's tree (its parts are small and varied)."""
        request = p.settings_request(
            device=self.device_info if device_information else None,
            user_information=user_information,
            oof_get=oof_get,
            oof_set=oof_set,
        )
        response = await self.request(Command.Settings, request)
        root = self._tree(Command.Settings, response)
        status = p.status_of(root)
        if status != 1:
            raise ClientError(f"Settings failed with Status {status}", eas_status=status)
        return root

    @staticmethod
    def _tree(command: Command, response: Response) -> Element:
        if response.tree is None:
            raise ClientError(f"{command.name}: the server sent an empty answer")
        return response.tree
