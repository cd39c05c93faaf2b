"""The remote mail server on the lab's internet: it looks up the recipient domain's MX record at
the zone's DNS server, as any mail server does, and delivers one message there over SMTP.

Run: ``python -m natsync.lab.mailer --dns 192.0.3.1 --to ann@example.test --subject S``; it
prints one JSON object (the MX, the address it connected to, the server's reply or the error).
"""

from __future__ import annotations

import argparse
import json
import smtplib
import sys
from email.message import EmailMessage
from typing import Any

import dns.exception
import dns.resolver

#: Seconds for the DNS lookups and the SMTP dialogue: the MX is two veth hops away.
TIMEOUT = 5.0


def deliver(dns_server: str, to: str, subject: str) -> dict[str, Any]:
    domain = to.rpartition("@")[2]
    result: dict[str, Any] = {"to": to, "mx": "", "address": "", "ok": False}
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [dns_server]
    resolver.lifetime = TIMEOUT
    try:
        mx = min(resolver.resolve(domain, "MX"), key=lambda r: r.preference)
        result["mx"] = mx.exchange.to_text(omit_final_dot=True)
        result["address"] = resolver.resolve(result["mx"], "A")[0].to_text()
    except dns.exception.DNSException as exc:
        result["error"] = f"DNS: {exc}"
        return result
    message = EmailMessage()
    message["From"] = "sender@remote.example"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(f"{subject}\n\nsent by the lab's remote mail server\n")
    try:
        with smtplib.SMTP(
            result["address"], 25, timeout=TIMEOUT, local_hostname="mx.remote.example"
        ) as smtp:
            refused = smtp.send_message(message)
        result["ok"] = not refused
        result["reply"] = "accepted" if not refused else str(refused)
    except (OSError, smtplib.SMTPException) as exc:
        result["error"] = f"SMTP to {result['address']}:25: {type(exc).__name__}: {exc}"
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Deliver one message to the domain's MX.")
    parser.add_argument("--dns", required=True)
    parser.add_argument("--to", required=True)
    parser.add_argument("--subject", required=True)
    args = parser.parse_args(argv)
    json.dump(deliver(args.dns, args.to, args.subject), sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
