"""A real Radicale (Debian's radicale 3.x) for the tests: TLS on 127.0.0.1 with the tests' own
CA, htpasswd (plain) authentication, a temporary storage folder and its own config file;
stopped by PID. Plus the few WebDAV requests the tests make on the Radicale side."""

from __future__ import annotations

import asyncio
import base64
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from natsync.cert import init_ca

RADICALE = shutil.which("radicale") or "/usr/bin/radicale"
#: Seconds Radicale may take to start listening.
START_TIMEOUT = 20.0

MKCALENDAR = (
    '<?xml version="1.0" encoding="utf-8"?><c:mkcalendar xmlns:d="DAV:" '
    'xmlns:c="urn:ietf:params:xml:ns:caldav"><d:set><d:prop><d:displayname>{name}</d:displayname>'
    '<c:supported-calendar-component-set><c:comp name="{comp}"/>'
    "</c:supported-calendar-component-set></d:prop></d:set></c:mkcalendar>"
)
MKADDRESSBOOK = (
    '<?xml version="1.0" encoding="utf-8"?><d:mkcol xmlns:d="DAV:" '
    'xmlns:a="urn:ietf:params:xml:ns:carddav"><d:set><d:prop><d:resourcetype><d:collection/>'
    "<a:addressbook/></d:resourcetype><d:displayname>{name}</d:displayname></d:prop></d:set>"
    "</d:mkcol>"
)
LIST = (
    '<?xml version="1.0" encoding="utf-8"?><d:propfind xmlns:d="DAV:"><d:prop><d:getetag/>'
    "</d:prop></d:propfind>"
)


@dataclass
class Radicale:
    url: str  # https://127.0.0.1:PORT/
    ca_file: Path
    tls_cert: Path
    tls_key: Path
    pid: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextmanager
def radicale(folder: Path, users: dict[str, str]) -> Iterator[Radicale]:
    ca = init_ca(folder / "ca")
    cert, key = ca.issue_server_cert(["localhost"], ["127.0.0.1"], folder / "tls")
    (folder / "users").write_text("".join(f"{u}:{p}\n" for u, p in users.items()))
    port = free_port()
    config = folder / "radicale.conf"
    config.write_text(
        f"[server]\nhosts = 127.0.0.1:{port}\nssl = True\ncertificate = {cert}\nkey = {key}\n"
        f"[auth]\ntype = htpasswd\nhtpasswd_filename = {folder / 'users'}\n"
        "htpasswd_encryption = plain\ndelay = 0\n"
        "[rights]\ntype = owner_only\n"
        f"[storage]\nfilesystem_folder = {folder / 'collections'}\n"
        "[logging]\nlevel = warning\n"
        "[web]\ntype = none\n"
    )
    log = (folder / "radicale.log").open("wb")
    process = subprocess.Popen(
        [RADICALE, "--config", str(config)], stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "radicale did not start: " + (folder / "radicale.log").read_text()
                    ) from None
                time.sleep(0.05)
        yield Radicale(f"https://127.0.0.1:{port}/", ca.cert_path, cert, key, process.pid)
    finally:
        process.terminate()  # by the PID we started, and no other
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


class DavSide:
    """The tests' hands on the Radicale side (a laptop's calendar program, say)."""

    def __init__(self, server: Radicale, user: str, password: str) -> None:
        self.base = server.url
        self.user = user
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._authorization = f"Basic {token}"
        self._ssl = ssl.create_default_context(cafile=str(server.ca_file))
        self._session: aiohttp.ClientSession | None = None

    async def request(
        self, method: str, path: str, body: str | bytes | None = None, **headers: str
    ) -> tuple[int, dict[str, str], bytes]:
        if self._session is None:
            # No pooled connection outlives a request: closing the session (also right before
            # an asyncio.run loop ends) leaves no TLS transport half-closed.
            self._session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True))
        data = body.encode() if isinstance(body, str) else body
        async with self._session.request(
            method,
            self.base.rstrip("/") + path,
            data=data,
            headers={
                "Authorization": self._authorization,
                **{k.replace("_", "-"): v for k, v in headers.items()},
            },
            ssl=self._ssl,
        ) as response:
            return response.status, dict(response.headers), await response.read()

    async def reset(self) -> None:
        """The user's account with one calendar (VEVENT), one task list and one address book."""
        await self.request("DELETE", f"/{self.user}/")
        await self.request("PROPFIND", f"/{self.user}/", LIST, Depth="0")  # recreates it
        for path, comp in (("calendar", "VEVENT"), ("tasks", "VTODO")):
            body = MKCALENDAR.format(name=path.title(), comp=comp)
            status, _, _ = await self.request("MKCALENDAR", f"/{self.user}/{path}/", body)
            assert status == 201, status
        body = MKADDRESSBOOK.format(name="Contacts")
        status, _, _ = await self.request("MKCOL", f"/{self.user}/contacts/", body)
        assert status == 201, status

    async def listing(self, collection: str) -> dict[str, str]:
        """href -> ETag of the collection's members."""
        from natsync.sources.dav.xml import parse_multistatus

        path = f"/{self.user}/{collection}/"
        status, _, body = await self.request("PROPFIND", path, LIST, Depth="1")
        assert status == 207, status
        rows = parse_multistatus(body).responses
        return {r.href: r.etag for r in rows if r.href.rstrip("/") != path.rstrip("/")}

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            # aiohttp closes TLS transports on later loop turns: give them those turns, so an
            # asyncio.run that ends right after leaves no transport unclosed.
            await asyncio.sleep(0.1)


async def until(check: object, timeout: float, what: str) -> object:
    """Call the coroutine function *check* until it returns something truthy (bounded)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()  # type: ignore[operator]
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.1)
