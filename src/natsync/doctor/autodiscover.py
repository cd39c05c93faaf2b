"""Check 7, Autodiscover: given only the user's address, is the phone sent to this server?

Phones that set up from an e-mail address POST a mobilesync request to
/autodiscover/autodiscover.xml (MS-ASCMD 2.2.1.1) and use the URL in the answer.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from natsync.doctor.evidence import AutodiscoverEvidence
from natsync.doctor.findings import Check, Finding, Severity, ok, skip


def _host(url: str) -> str:
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    port = parts.port if parts.port not in (None, default) else None
    return (parts.hostname or "").lower() + (f":{port}" if port else "")


def check_autodiscover(ev: AutodiscoverEvidence | None) -> list[Finding]:
    if ev is None:
        return [
            skip(
                Check.AUTODISCOVER,
                "Autodiscover",
                "no e-mail address to ask about: give --email (or --user as an address)",
            )
        ]
    seen = f"POST {ev.url} for {ev.email}: " + (ev.error if ev.error else f"HTTP {ev.status}")
    if ev.error or ev.status in (404, 405):
        return [
            Finding(
                Check.AUTODISCOVER,
                Severity.WARN,
                "Autodiscover does not answer",
                (seen,),
                "Phones that set up from the e-mail address alone cannot find the server; "
                "users must type the server name by hand.",
                "Publish /autodiscover/autodiscover.xml to the natsync server (the edge's "
                "publishing rules), or tell users to enter the server name.",
            )
        ]
    if ev.status == 401:
        return [
            Finding(
                Check.AUTODISCOVER,
                Severity.FAIL,
                "Autodiscover refuses the credentials",
                (seen,),
                "Autodiscover authenticates like ActiveSync; the user or password is wrong.",
                "Check the password with `natsync user passwd`.",
            )
        ]
    if ev.error_code or not ev.mobilesync_url:
        return [
            Finding(
                Check.AUTODISCOVER,
                Severity.FAIL,
                "Autodiscover answers without a MobileSync URL",
                tuple(
                    line
                    for line in (seen, f"error {ev.error_code}: {ev.error_message}")
                    if ev.error_code or line == seen
                ),
                "The answer does not tell the phone where ActiveSync is.",
                "Look at the server's log for the Autodiscover request.",
            )
        ]
    expected = _host(ev.expected_url)
    got = _host(ev.mobilesync_url)
    if expected and got != expected:
        return [
            Finding(
                Check.AUTODISCOVER,
                Severity.WARN,
                f"Autodiscover sends phones to {got}, not {expected}",
                (seen, f"MobileSync URL: {ev.mobilesync_url}"),
                "Phones that set up by address go where Autodiscover says; if that is an "
                "internal name, they cannot reach it from outside.",
                "Set server.public_name to the name phones use (Autodiscover answers "
                "https://<public_name>/Microsoft-Server-ActiveSync).",
            )
        ]
    return [
        ok(
            Check.AUTODISCOVER,
            f"Autodiscover sends {ev.email} to this server",
            seen,
            f"MobileSync URL: {ev.mobilesync_url}",
        )
    ]
