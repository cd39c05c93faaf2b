"""The phone: natsync's device emulator, run inside the lab's phone namespace.

It resolves the server's name the way the phone's system does (its /etc/hosts — the article's
registry host entry — then its DNS cache, both laid over /etc by `ip netns exec`), trusts only
the CA it was given (as a phone with that CA installed), and syncs the Inbox. It prints one JSON
object: the address it dialled, whether it synced, the subjects it got, or the error.

Run: ``python -m natsync.lab.phone URL --user U --password P --ca-file F [--ping S --push S]
[--send SUBJECT --send-to ADDRESS --device-id ID]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from natsync.client import EASClient
from natsync.client import protocol as p
from natsync.client.protocol import ClientError, Command

#: Seconds one phone command may take: everything is one veth hop away.
TIMEOUT = 10.0
#: Seconds a Ping may take beyond its heartbeat before the phone gives up on it.
PING_SLACK = 4.0


def resolve(host: str) -> str:
    """The address the phone's system resolver gives first (hosts file, then DNS; IPv6 before
    IPv4 when the phone has IPv6 and the name an AAAA record, RFC 6724), the one it dials."""
    infos = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    return str(infos[0][4][0])


async def wait_for_push(
    client: EASClient, inbox: str, heartbeat: int, limit: float
) -> dict[str, Any]:
    """Hold Pings on the Inbox, as a phone does, until one reports a change or ``limit``
    seconds pass. A heartbeat above the server's maximum (Status 5) is retried at the limit
    the server gives. Says on stdout when each Ping starts, so the lab can time the mail."""
    started = time.monotonic()
    pings = 0
    while time.monotonic() - started < limit:
        pings += 1
        print(f"PING {heartbeat}", flush=True)
        try:
            response = await asyncio.wait_for(
                # The request's own timeout is the Ping's, not a command's (TIMEOUT).
                client.request(
                    Command.Ping,
                    p.ping_request(heartbeat, [inbox]),
                    timeout=heartbeat + PING_SLACK,
                ),
                heartbeat + PING_SLACK,
            )
        except (ClientError, aiohttp.ClientError, TimeoutError) as exc:
            return {
                "changed": False,
                "pings": pings,
                "heartbeat": heartbeat,
                "seconds": time.monotonic() - started,
                "error": f"no answer to a {heartbeat} s Ping: {type(exc).__name__} {exc}".strip(),
            }
        assert response.tree is not None
        status, changed, server_limit = p.parse_ping(response.tree)
        if status == p.PingStatus.CHANGES and changed:
            return {
                "changed": True,
                "pings": pings,
                "heartbeat": heartbeat,
                "seconds": time.monotonic() - started,
            }
        if status == p.PingStatus.HEARTBEAT_OUT_OF_BOUNDS and server_limit is not None:
            heartbeat = server_limit
        elif status != p.PingStatus.EXPIRED:
            return {
                "changed": False,
                "pings": pings,
                "heartbeat": heartbeat,
                "seconds": time.monotonic() - started,
                "error": f"Ping Status {status}",
            }
    return {"changed": False, "pings": pings, "heartbeat": heartbeat, "seconds": limit}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    host = urlsplit(args.url).hostname or ""
    result: dict[str, Any] = {"url": args.url, "address": "", "ok": False, "subjects": []}
    try:
        result["address"] = resolve(host)
    except OSError as exc:
        result["error"] = f"cannot resolve {host}: {exc}"
        return result
    client = EASClient(
        args.url, args.user, args.password, ca_file=args.ca_file, timeout=TIMEOUT,
        device_id=args.device_id,
    )  # fmt: skip
    try:
        async with client:
            if args.send:
                # the phone writes a mail (SendMail), as a person would from its mail app
                await client.send_mail(_mail(args.send_to or args.user, args.send))
                result["sent"] = args.send
            await client.folder_sync()
            inbox = client.folder(type=2).server_id
            synced = await client.sync(inbox)
            result["subjects"] = sorted(item.subject or "" for item in synced.added)
            if args.push:
                result["push"] = await wait_for_push(client, inbox, args.ping, args.push)
            result["ok"] = True
    except aiohttp.ClientConnectorCertificateError as exc:
        result["error"] = f"certificate refused: {exc.certificate_error}"
    except (ClientError, aiohttp.ClientError, TimeoutError, OSError) as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    return result


def _mail(to: str, subject: str) -> bytes:
    return (
        f"To: {to}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n\r\nsent from the lab's phone\r\n"
    ).encode()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The lab's phone: sync the Inbox once.")
    parser.add_argument("url")
    parser.add_argument("--user", required=True)
    parser.add_argument("--password", required=True)
    parser.add_argument("--ca-file", required=True)
    parser.add_argument("--ping", type=int, default=0, help="the heartbeat to ask for")
    parser.add_argument(
        "--push", type=float, default=0, help="then hold Pings until a change, at most this long"
    )
    parser.add_argument("--send", default="", help="first send a mail with this subject")
    parser.add_argument("--send-to", default="", help="to this address (default: the user)")
    parser.add_argument("--device-id", default="NATSYNCEMU0001", help="the phone's DeviceId")
    args = parser.parse_args(argv)
    json.dump(asyncio.run(run(args)), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
