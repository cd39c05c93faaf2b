"""A dyndns2 server, written from Dyn's documentation of the protocol:

* help.dyn.com/remote-access-api/perform-update ("Perform Update"): ``GET /nic/update`` with
  ``hostname`` (comma-separated, at most 20) and ``myip``; HTTP basic auth; a User-Agent.
* help.dyn.com/return-codes ("Return Codes"): one code per hostname, in order; ``good ADDR``,
  ``nochg ADDR``; account errors (``badauth``, ``!donator``) given once; hostname errors
  (``notfqdn``, ``nohost``, ``numhost``, ``abuse``); ``badagent``; server errors (``dnserr``,
  ``911``).
* help.dyn.com/remote-access-api/policies: repeated ``nochg`` updates get the host blocked
  (answered ``abuse`` from then on).

Records are written into a :class:`tests.ddns.fake_http.RecordStore`, so with a
:class:`~tests.ddns.fake_http.BindZone` this is "a dyndns2-speaking server that writes into
BIND". ``force`` makes the next answers a given code, for the tests of each reaction.

It also runs on its own (the lab starts it in the "internet" namespace, in front of the lab's
BIND), logging one line per update::

    python -m tests.ddns.fake_dyndns2 --listen 198.51.100.1:8245 --tls-dir DIR \
        --dns 198.51.100.1:53 --zone example.test --key-file ddns.key \
        --user alice --password-file pw --hosts eas.example.test,mail.example.test
"""

from __future__ import annotations

import argparse
import base64
import ipaddress
import threading
from dataclasses import dataclass, field
from pathlib import Path

from natsync.portmap.netinfo import IPAddress
from tests.ddns.fake_http import BindZone, RecordStore, Reply, Request, serve

#: Perform Update: "hostname ... up to 20 hostnames".
MAX_HOSTS = 20
#: How many nochg answers in a row a host may cause before it is blocked for abuse (Dyn does
#: not publish the number; the policy only says "repeated").
NOCHG_LIMIT = 2


@dataclass
class Dyndns2Server:
    store: RecordStore
    username: str
    password: str
    #: The hostnames this account holds.
    hosts: set[str]
    ttl: int = 60
    force: list[str] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    nochg: dict[str, int] = field(default_factory=dict)
    blocked: set[str] = field(default_factory=set)

    def updates(self) -> list[Request]:
        return [r for r in self.requests if r.path == "/nic/update"]

    def handle(self, request: Request) -> Reply:
        if request.path != "/nic/update":
            return Reply(404, "not found")
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Basic "):
            return Reply(401, "badauth", {"WWW-Authenticate": 'Basic realm="dyndns2"'})
        if not request.headers.get("user-agent") or request.method not in ("GET", "POST"):
            return Reply(200, "badagent")
        try:
            user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
        except ValueError:
            return Reply(200, "badauth")
        if (user, password) != (self.username, self.password):
            return Reply(200, "badauth")
        if self.force:
            return Reply(200, self.force.pop(0))
        names = [h for h in request.query.get("hostname", "").split(",") if h]
        if not names:
            return Reply(200, "notfqdn")
        if len(names) > MAX_HOSTS:
            return Reply(200, "numhost")
        myip = request.query.get("myip", "127.0.0.1")
        try:
            addresses = [ipaddress.ip_address(a) for a in myip.split(",")]
        except ValueError:
            return Reply(200, "\n".join("notfqdn" for _ in names))
        return Reply(200, "\n".join(self._one(n.lower(), addresses) for n in names))

    def _one(self, name: str, addresses: list[IPAddress]) -> str:
        if "." not in name:
            return "notfqdn"
        if name not in self.hosts:
            return "nohost"
        if name in self.blocked:
            return "abuse"
        changed = False
        for address in addresses:
            rdtype = "A" if address.version == 4 else "AAAA"
            values, _ = self.store.get(name, rdtype)
            if values != {str(address)}:
                self.store.put(name, rdtype, {str(address)}, self.ttl)
                changed = True
        shown = ",".join(str(a) for a in addresses)
        if changed:
            self.nochg[name] = 0
            return f"good {shown}"
        self.nochg[name] = self.nochg.get(name, 0) + 1
        if self.nochg[name] > NOCHG_LIMIT:
            self.blocked.add(name)
            return "abuse"
        return f"nochg {shown}"


class _Logged(Dyndns2Server):
    def handle(self, request: Request) -> Reply:
        reply = super().handle(request)
        if request.path == "/nic/update":
            q = request.query
            print(
                f"update hostname={q.get('hostname', '')} myip={q.get('myip', '')} -> "
                f"{reply.body!s}",
                flush=True,
            )
        return reply


def main(argv: list[str] | None = None) -> None:
    from natsync.ddns.settings import split_host_port
    from natsync.ddns.update import DnsServer, load_key

    parser = argparse.ArgumentParser(description="a dyndns2 server writing into BIND")
    parser.add_argument("--listen", required=True, help="host:port")
    parser.add_argument("--tls-dir", type=Path, help="write a self-signed certificate here")
    parser.add_argument("--dns", required=True, help="the zone's primary, host:port")
    parser.add_argument("--zone", required=True)
    parser.add_argument("--key-file", type=Path, required=True)
    parser.add_argument("--user", required=True)
    parser.add_argument("--password-file", type=Path, required=True)
    parser.add_argument("--hosts", required=True, help="comma-separated names of the account")
    args = parser.parse_args(argv)
    dns_host, dns_port = split_host_port(args.dns)
    listen_host, listen_port = split_host_port(args.listen)
    store = BindZone(DnsServer(dns_host, dns_port, args.zone, load_key(args.key_file)))
    provider = _Logged(
        store,
        args.user,
        args.password_file.read_text().strip(),
        set(args.hosts.split(",")),
    )
    with serve(provider, args.tls_dir, listen_host, listen_port) as running:
        print(f"listening on {running.url}", flush=True)
        threading.Event().wait()  # until killed


if __name__ == "__main__":
    main()
