"""The HTTP side of the CalDAV/CardDAV source: one aiohttp session per account, Basic auth,
the configured CA, redirects followed by hand (a PROPFIND keeps its method and body across the
/.well-known redirect of RFC 6764, which aiohttp's own following does not promise)."""

from __future__ import annotations

import base64
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp

from natsync.sources.dav.xml import DavError

#: Redirects followed for one request (RFC 6764 discovery needs one or two).
MAX_REDIRECTS = 5
#: Largest resource or multistatus body read from the server.
MAX_BODY = 32 * 1024 * 1024


class DavAuthError(DavError):
    """The CalDAV/CardDAV server refused the user's login: the phone's password must also be
    the user's password there (or set sources.dav.login)."""

    http_status = 401


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    headers: dict[str, str]  # lower-case names
    body: bytes
    url: str  # after redirects

    @property
    def etag(self) -> str:
        return self.headers.get("etag", "")


class DavHttp:
    def __init__(self, login: str, password: str, *, ca_file: Path | None, timeout: float) -> None:
        # RFC 7617 with UTF-8 (what servers accept today); kept as the header, in memory only.
        self._login = login
        token = base64.b64encode(f"{login}:{password}".encode()).decode("ascii")
        self._authorization = f"Basic {token}"
        context: ssl.SSLContext | None = None
        if ca_file is not None:
            context = ssl.create_default_context(cafile=str(ca_file))
        self._ssl = context
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None

    async def request(
        self,
        method: str,
        url: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> HttpAnswer:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        for _ in range(MAX_REDIRECTS + 1):
            try:
                async with self._session.request(
                    method,
                    url,
                    data=body,
                    headers={**(headers or {}), "Authorization": self._authorization},
                    ssl=self._ssl if self._ssl is not None else True,
                    allow_redirects=False,
                ) as response:
                    data = await response.content.read(MAX_BODY + 1)
                    if len(data) > MAX_BODY:
                        raise DavError(
                            f"{method} {url}: the answer is larger than {MAX_BODY} bytes"
                        )
                    answer = HttpAnswer(
                        response.status,
                        {k.lower(): v for k, v in response.headers.items()},
                        data,
                        url,
                    )
            except (aiohttp.ClientError, TimeoutError, ssl.SSLError) as exc:
                raise DavError(f"{method} {url} failed: {exc or type(exc).__name__}") from exc
            if answer.status in (301, 302, 303, 307, 308) and "location" in answer.headers:
                url = urljoin(url, answer.headers["location"])
                continue
            if answer.status == 401:
                raise DavAuthError(
                    f"{urlsplit(url).netloc} refused the login {self._login!r} (401): the user's "
                    "natsync password must also be their password there (or set sources.dav.login)"
                )
            return answer
        raise DavError(f"{method} {url}: more than {MAX_REDIRECTS} redirects")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
