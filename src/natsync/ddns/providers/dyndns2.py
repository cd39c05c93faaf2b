"""The dyndns2 update protocol (Dyn's "Remote Access API", spoken by No-IP, many registrars,
routers and most self-hosted DDNS servers).

Request (help.dyn.com/remote-access-api/perform-update):
``GET /nic/update?hostname=NAME&myip=ADDRESS`` with HTTP basic auth and a User-Agent naming the
client. Answer: one return code per hostname, first word of a line (help.dyn.com/return-codes).

Reactions, from the return-codes page and the client policy (help.dyn.com/remote-access-api/
policies):

* ``good`` - updated. ``nochg`` - nothing changed: allowed, but "repeated instances of nochg
  updates will result in the host being blocked", so natsync sends only when the record served
  differs from the address and never re-sends an address it already sent.
* "Fatal Updates": ``badauth``, ``!donator``, ``notfqdn``, ``nohost``, ``numhost``, ``abuse``,
  ``badagent``, ``badsys`` - "all further updates will also fail until the user has taken some
  sort of corrective action": natsync stops, tells the user what to fix, and sends nothing more
  until the configuration changes.
* "Server Error Conditions": ``dnserr`` and ``911`` - the client must not try again for at least
  30 minutes.
"""

from __future__ import annotations

import base64
import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlencode

from natsync.ddns.errors import DnsUpdateError
from natsync.ddns.provider_settings import Dyndns2Settings
from natsync.ddns.providers.base import (
    Authoritative,
    DnsUpdater,
    Http,
    Served,
    normalise,
    secret_digest,
)

#: help.dyn.com/return-codes, "Server Error Conditions": no new update for 30 minutes after
#: dnserr or 911.
SERVER_ERROR_BACKOFF = 30 * 60.0
#: An answer we do not know is treated like a server error: wait as long before asking again.
UNKNOWN_ANSWER_BACKOFF = SERVER_ERROR_BACKOFF
#: A return-code line longer than this is not one.
MAX_ANSWER_LINE = 200


class Code(StrEnum):
    """help.dyn.com/return-codes."""

    GOOD = "good"
    NOCHG = "nochg"
    BADAUTH = "badauth"
    NOT_DONATOR = "!donator"
    NOTFQDN = "notfqdn"
    NOHOST = "nohost"
    NUMHOST = "numhost"
    ABUSE = "abuse"
    BADAGENT = "badagent"
    BADSYS = "badsys"
    DNSERR = "dnserr"
    SERVER_911 = "911"


#: "Fatal Updates": what the user must do, in words (the return-codes page asks clients to say
#: what the code means, not a generic "unable to update").
FATAL = {
    Code.BADAUTH: "the username and password are not accepted; fix ddns.dyndns2.username / "
    "password",
    Code.NOT_DONATOR: "the update asks for a feature of a paid account (!donator)",
    Code.NOTFQDN: "the name is not a fully qualified domain name the provider knows (notfqdn); "
    "fix ddns.names",
    Code.NOHOST: "the name does not exist in this account (nohost); create it at the provider "
    "or fix ddns.names",
    Code.NUMHOST: "too many names in one update, or a round-robin name (numhost)",
    Code.ABUSE: "the provider blocked this name for update abuse (abuse); unblock it in the "
    "provider's control panel",
    Code.BADAGENT: "the provider blocked this client or HTTP method (badagent)",
    Code.BADSYS: "the provider rejected the system parameter (badsys)",
}
SERVER_ERRORS = {
    Code.DNSERR: "the provider's DNS system failed (dnserr)",
    Code.SERVER_911: "the provider has a problem or scheduled maintenance (911)",
}


@dataclass(frozen=True, slots=True)
class Answer:
    code: Code
    #: The address the server reports (good/nochg), if any.
    address: str = ""


def parse_answer(body: bytes) -> Answer:
    """The first line of a dyndns2 answer: a return code, then perhaps an address."""
    line = body.decode("utf-8", "replace").strip().splitlines()[0:1]
    text = line[0].strip() if line else ""
    if not text or len(text) > MAX_ANSWER_LINE:
        raise DnsUpdateError(
            "the dyndns2 server's answer is not a return code",
            retry_after=UNKNOWN_ANSWER_BACKOFF,
        )
    word, _, rest = text.partition(" ")
    try:
        code = Code(word.lower())
    except ValueError:
        raise DnsUpdateError(
            f"the dyndns2 server answered {text[:60]!r}, which is no dyndns2 return code; "
            f"trying again in {UNKNOWN_ANSWER_BACKOFF / 60:.0f} minutes",
            retry_after=UNKNOWN_ANSWER_BACKOFF,
        ) from None
    address = rest.strip()
    if address:
        try:
            address = str(ipaddress.ip_address(address))
        except ValueError:
            address = ""
    return Answer(code, address)


def reaction(answer: Answer, name: str) -> DnsUpdateError | None:
    """None for success, else the error that says what to do."""
    if answer.code in (Code.GOOD, Code.NOCHG):
        return None
    if answer.code in FATAL:
        return DnsUpdateError(
            f"dyndns2 update of {name} refused: {FATAL[answer.code]}. natsync sends no more "
            "updates until the configuration changes",
            fatal=True,
        )
    return DnsUpdateError(
        f"dyndns2 update of {name} failed: {SERVER_ERRORS[answer.code]}; the next try is "
        f"in {SERVER_ERROR_BACKOFF / 60:.0f} minutes, as the protocol asks",
        retry_after=SERVER_ERROR_BACKOFF,
    )


class Dyndns2Updater(DnsUpdater):
    kind = "dyndns2"
    takes_ttl = False

    def __init__(
        self, settings: Dyndns2Settings, authoritative: Authoritative, **kwargs: Any
    ) -> None:
        super().__init__(authoritative, **kwargs)
        self.settings = settings
        self.http = Http(settings.timeout, settings.ca_file)

    def identity(self) -> tuple[str, ...]:
        s = self.settings
        return (s.url, s.username, secret_digest(s.password.value))

    def request(self, name: str, address: str) -> Answer:
        s = self.settings
        credentials = base64.b64encode(f"{s.username}:{s.password.value}".encode()).decode()
        query = urlencode({"hostname": normalise(name), "myip": address})
        separator = "&" if "?" in s.url else "?"
        answer = self.http.request(
            "GET",
            f"{s.url}{separator}{query}",
            headers={"Authorization": f"Basic {credentials}"},
            what=f"dyndns2 update of {name}",
        )
        if answer.status == 401:
            # Some servers answer a wrong password with HTTP 401 instead of "badauth".
            return Answer(Code.BADAUTH)
        if answer.status >= 500:
            raise DnsUpdateError(
                f"dyndns2 update of {name}: the server answered HTTP {answer.status}",
                retryable=True,
            )
        if answer.status != 200:
            raise DnsUpdateError(
                f"dyndns2 update of {name}: the server answered HTTP {answer.status}; check "
                "ddns.dyndns2.url",
                fatal=True,
            )
        return parse_answer(answer.body)

    def send(self, name: str, rdtype: str, address: str, ttl: int, before: Served) -> None:
        answer = self.request(name, address)
        error = reaction(answer, name)
        if error:
            raise error
