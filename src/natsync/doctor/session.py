"""Check 5, the ActiveSync session: Provision, FolderSync and a Sync of the Inbox, as a phone.

The first refusal decides: 401 is the password (or the user name's form), 429 a lock-out after
failed logins, 403 a blocked device, 449 or Status 142-144 that provisioning does not settle.
"""

from __future__ import annotations

from natsync.doctor.evidence import SessionEvidence, Step
from natsync.doctor.findings import Check, Finding, Severity, ok, skip


def _line(step: Step) -> str:
    status = f" (HTTP {step.http_status})" if step.http_status else ""
    eas = f" (Status {step.eas_status})" if step.eas_status is not None else ""
    state = "ok" if step.ok else "failed"
    detail = f": {step.detail}" if step.detail else ""
    return f"{step.command} {state}{status}{eas} in {step.seconds:.2f} s{detail}"


def check_session(ev: SessionEvidence) -> list[Finding]:
    if not ev.steps:
        return [skip(Check.SESSION, "ActiveSync session", "no command was sent")]
    evidence = tuple(_line(s) for s in ev.steps)
    failed = next((s for s in ev.steps if not s.ok), None)
    if failed is None:
        return [
            ok(
                Check.SESSION,
                f"{ev.user} can provision, list folders and sync the Inbox"
                + (f" (ActiveSync {ev.version})" if ev.version else ""),
                *evidence,
            )
        ]
    code = failed.http_status
    if code == 401:
        return [
            Finding(
                Check.SESSION,
                Severity.FAIL,
                f"Authentication failed for {ev.user}",
                evidence,
                f"The server refused the user name {ev.user} with that password: the "
                "password is wrong, or the name is in another form than the server knows "
                "(user, user@domain, DOMAIN\\user).",
                f"Set the password the phone uses: `natsync user passwd {ev.user}` (or check "
                "the name with `natsync user list`), then enter it on the phone again.",
            )
        ]
    if code == 429:
        return [
            Finding(
                Check.SESSION,
                Severity.FAIL,
                f"{ev.user} is locked out after failed logins",
                evidence,
                "Too many wrong passwords came for this user (or from this address) within "
                "the server's window; it now refuses without checking, to slow down guessing. "
                "A phone with an old password keeps the lock on.",
                "Fix the password on every device of the user, then wait "
                "server.failed_login_window seconds.",
            )
        ]
    if code == 403:
        return [
            Finding(
                Check.SESSION,
                Severity.FAIL,
                "The server forbids this device or user",
                evidence,
                "The user or device is blocked, or the device was wiped.",
                "List the devices with `natsync device list` and allow the device again.",
            )
        ]
    if failed.command == "Provision" or code == 449 or failed.eas_status in (142, 143, 144):
        return [
            Finding(
                Check.SESSION,
                Severity.FAIL,
                "Provisioning does not settle",
                evidence,
                "The server keeps demanding a security policy the device has acknowledged, so "
                "every command is refused.",
                "Look at server.policy in natsync.toml and the server's log; "
                "`server.require_provisioning = false` lets devices in without a policy.",
            )
        ]
    return [
        Finding(
            Check.SESSION,
            Severity.FAIL,
            f"{failed.command} failed",
            evidence,
            f"The server refused {failed.command}: {failed.detail or 'no reason given'}.",
            "Look at the server's log for that request (one JSON line per request).",
        )
    ]
