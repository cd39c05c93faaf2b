"""Check 4, HTTP: is it ActiveSync that answers, and does it ask for credentials?

OPTIONS must carry MS-ASProtocolVersions with a version the phone speaks (MS-ASHTTP 2.2.3);
a command without credentials must get 401 with a Basic challenge (MS-ASHTTP 2.2.1.1.2.2).
A 404 or an answer without the ActiveSync headers means something else answers the URL: a
web server, or a proxy/edge that does not publish the ActiveSync path.
"""

from __future__ import annotations

from natsync.client.protocol import CLIENT_VERSIONS
from natsync.doctor.evidence import HttpEvidence
from natsync.doctor.findings import Check, Finding, Severity, ok

_PUBLISH = (
    "Publish /Microsoft-Server-ActiveSync (and /autodiscover/autodiscover.xml) to the natsync "
    "server: check the URL, and the edge's or reverse proxy's publishing rules."
)


def check_http(ev: HttpEvidence) -> list[Finding]:
    findings: list[Finding] = []
    if ev.options_error:
        return [
            Finding(
                Check.HTTP,
                Severity.FAIL,
                "No HTTP answer to OPTIONS",
                (f"OPTIONS {ev.url}: {ev.options_error}",),
                "TLS worked but no HTTP answer came: the server or a proxy in front of it "
                "closed the connection or is stuck.",
                "Look at the server's log (`natsync server` writes one line per request) and "
                "at the proxy between; restart the server.",
            )
        ]
    versions = [v.strip() for v in ev.header("MS-ASProtocolVersions").split(",") if v.strip()]
    if ev.options_status == 404 or (ev.options_status == 200 and not versions):
        findings.append(
            Finding(
                Check.HTTP,
                Severity.FAIL,
                "Something other than ActiveSync answers the URL",
                (
                    f"OPTIONS {ev.url}: HTTP {ev.options_status}",
                    "MS-ASProtocolVersions: " + (", ".join(versions) or "absent"),
                    "Server: " + (ev.header("Server") or "absent"),
                ),
                "A phone first asks OPTIONS which ActiveSync versions the server speaks; this "
                "answer has no ActiveSync headers, so a web server or a proxy answers instead of "
                "the ActiveSync server.",
                _PUBLISH,
            )
        )
    elif ev.options_status not in (200, 401):
        findings.append(
            Finding(
                Check.HTTP,
                Severity.FAIL,
                f"OPTIONS is answered with HTTP {ev.options_status}",
                (f"OPTIONS {ev.url}: HTTP {ev.options_status}",),
                "Phones need OPTIONS to pick a protocol version; an error here stops the "
                "account setup at its first step.",
                "Look at the server's log for the request; a 5xx from a proxy means its "
                "backend (the natsync server) is down or unreachable from it.",
            )
        )
    elif versions:
        common = [v for v in CLIENT_VERSIONS if v in versions]
        if not common:
            findings.append(
                Finding(
                    Check.HTTP,
                    Severity.FAIL,
                    "No ActiveSync version in common",
                    (f"the server offers {', '.join(versions)}",),
                    "Phones speak 12.1 to 16.1; the server offers none of them.",
                    "Run a natsync server (it offers 12.1 to 16.1).",
                )
            )
        else:
            findings.append(
                ok(
                    Check.HTTP,
                    "OPTIONS answers as an ActiveSync server",
                    f"MS-ASProtocolVersions: {', '.join(versions)}",
                    f"a phone would speak {common[0]}",
                    "MS-Server-ActiveSync: " + (ev.header("MS-Server-ActiveSync") or "absent"),
                )
            )
    findings.extend(_anonymous(ev))
    return findings


def _anonymous(ev: HttpEvidence) -> list[Finding]:
    seen = f"a command without credentials: HTTP {ev.anonymous_status}" + (
        f", WWW-Authenticate: {ev.anonymous_challenge}" if ev.anonymous_challenge else ""
    )
    if ev.anonymous_error:
        return [
            Finding(
                Check.HTTP,
                Severity.WARN,
                "A command without credentials got no answer",
                (ev.anonymous_error,),
                "The server should answer 401 and ask for credentials; the connection broke "
                "instead.",
                "Look at the server's and the proxy's logs.",
            )
        ]
    if ev.anonymous_status == 401 and "basic" in ev.anonymous_challenge.lower():
        return [ok(Check.HTTP, "The server asks for credentials (401, Basic)", seen)]
    if ev.anonymous_status == 401:
        return [
            Finding(
                Check.HTTP,
                Severity.WARN,
                "The server does not offer Basic authentication",
                (seen,),
                "ActiveSync phones authenticate with Basic (over TLS); a challenge that offers "
                "only other schemes leaves most of them unable to log in.",
                "Offer Basic on the ActiveSync path (natsync does; check the proxy in front).",
            )
        ]
    if 200 <= ev.anonymous_status < 300:
        return [
            Finding(
                Check.HTTP,
                Severity.FAIL,
                "A command without credentials was accepted",
                (seen,),
                "Anyone can reach the mailbox: nothing asks who is calling.",
                "Put authentication back on the ActiveSync path (the natsync server always "
                "authenticates: something else answers).",
            )
        ]
    if ev.anonymous_status == 404:
        return [
            Finding(
                Check.HTTP,
                Severity.FAIL,
                "The ActiveSync path is not published (404)",
                (seen,),
                "Commands are POSTed to /Microsoft-Server-ActiveSync; here nobody serves it.",
                _PUBLISH,
            )
        ]
    return [
        Finding(
            Check.HTTP,
            Severity.WARN,
            f"A command without credentials got HTTP {ev.anonymous_status}",
            (seen,),
            "The server should answer 401 with a Basic challenge; phones rely on it to ask "
            "their user for a password.",
            "Look at the server's log for the request.",
        )
    ]
