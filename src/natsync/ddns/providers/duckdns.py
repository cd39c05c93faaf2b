"""Duck DNS (www.duckdns.org/spec.jsp, "HTTP API Specification").

``GET /update?domains=SUB&token=T&ip=IPV4`` (or ``&ipv6=IPV6``) ``&verbose=true``; the answer is
``OK`` or ``KO``; with ``verbose=true`` an OK is followed by the addresses and ``UPDATED`` or
``NOCHANGE``. ``ip`` left out means "detect it", for IPv4 only, and giving ``ipv6`` turns that
detection off, so an AAAA update sends ``ipv6`` alone and never touches the A record. The token
and the domain are the only things that can be wrong; the spec gives no reason with KO, so KO
stops updates until the configuration changes.

TXT (same spec, "TXT record"): ``&txt=VALUE`` sets the one TXT record of the domain (shared by
all its subdomains), ``&txt=&clear=true`` clears it. Duck DNS holds a single TXT value per domain,
so two DNS-01 challenges for the same Duck DNS name cannot be answered at once.

Duck DNS sets the TTL itself (it takes none); natsync reads it from the authoritative servers.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from natsync.ddns.errors import DnsUpdateError
from natsync.ddns.provider_settings import DuckdnsSettings
from natsync.ddns.providers.base import (
    Authoritative,
    DnsUpdater,
    Http,
    Served,
    normalise,
    quote_txt,
    secret_digest,
)

SUFFIX = ".duckdns.org"


def subname(name: str) -> str:
    """The Duck DNS domain a name belongs to: the label right before duckdns.org."""
    n = normalise(name)
    if not n.endswith(SUFFIX):
        raise DnsUpdateError(f"{name} is not a duckdns.org name", fatal=True)
    return n[: -len(SUFFIX)].rsplit(".", 1)[-1]


def parse_answer(body: bytes, what: str) -> list[str]:
    """The lines of an OK answer; KO (or anything else) raises."""
    lines = body.decode("utf-8", "replace").strip().splitlines()
    if lines and lines[0].strip() == "OK":
        return [line.strip() for line in lines]
    if lines and lines[0].strip() == "KO":
        raise DnsUpdateError(
            f"Duck DNS refused {what} (KO): the token (ddns.duckdns.token) is wrong or the "
            "domain is not in this account. natsync sends no more updates until the "
            "configuration changes",
            fatal=True,
        )
    raise DnsUpdateError(f"Duck DNS answered {what} with neither OK nor KO", retryable=True)


class DuckdnsUpdater(DnsUpdater):
    kind = "duckdns"
    takes_ttl = False

    def __init__(
        self, settings: DuckdnsSettings, authoritative: Authoritative, **kwargs: Any
    ) -> None:
        super().__init__(authoritative, **kwargs)
        self.settings = settings
        self.http = Http(settings.timeout, settings.ca_file)

    def identity(self) -> tuple[str, ...]:
        return (self.settings.url, secret_digest(self.settings.token.value))

    def _get(self, params: dict[str, str], what: str) -> list[str]:
        query = urlencode({**params, "token": self.settings.token.value, "verbose": "true"})
        answer = self.http.request("GET", f"{self.settings.url}?{query}", what=f"Duck DNS {what}")
        if answer.status >= 500:
            raise DnsUpdateError(f"Duck DNS {what}: HTTP {answer.status}", retryable=True)
        if answer.status != 200:
            raise DnsUpdateError(
                f"Duck DNS {what}: HTTP {answer.status}; check ddns.duckdns.url", fatal=True
            )
        return parse_answer(answer.body, what)

    def send(self, name: str, rdtype: str, address: str, ttl: int, before: Served) -> None:
        key = "ip" if rdtype == "A" else "ipv6"
        self._get({"domains": subname(name), key: address}, f"update of {name} {rdtype}")

    def add_txt(self, owner: str, value: str) -> None:
        self._get({"domains": subname(owner), "txt": value}, f"TXT of {owner}")
        self.confirm(owner, "TXT", lambda s: quote_txt(value) in s.values)

    def remove_txt(self, owner: str, value: str) -> None:
        # One TXT value per domain: clear it only if it is still ours (a newer challenge may
        # have replaced it).
        if quote_txt(value) not in self.current(owner, "TXT").values:
            return
        self._get(
            {"domains": subname(owner), "txt": "", "clear": "true"}, f"clearing TXT of {owner}"
        )
