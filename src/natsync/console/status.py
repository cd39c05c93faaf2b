"""The Status page's lights: one per link of the picture, green / amber / red, each with words
and a fix, read from what the parts already write.

* the doctor's last report (``DATA_DIR/doctor/report.json``, written by the console's "run the
  doctor now" or by ``natsync doctor --json``): its findings per check family;
* the certificate manager's ``DATA_DIR/acme/status.json`` and the certificate file itself
  (names, issuer, days left, next renewal);
* the DDNS history (``DATA_DIR/ddns.db``): the public address and its CGNAT verdict, the last
  DNS update;
* the store: reachable, users and devices, and the relay's outbound queue;
* the processes, from the supervisor when it runs the console (``natsync run``).

Gathering reads files; :func:`lights` is pure over what was gathered.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

#: Days of certificate left under which the light turns amber (a renewal should have happened
#: at a third of the lifetime left), and red.
CERT_AMBER_DAYS = 20
CERT_RED_DAYS = 7
#: Outbound mail this old (minutes) and still queued turns the relay light amber.
QUEUE_AMBER_MINUTES = 30
REPORT_JSON = "report.json"
REPORT_HTML = "report.html"


class Level(StrEnum):
    GREEN = "green"
    AMBER = "amber"
    RED = "red"
    GREY = "grey"  # not known: nothing has written it yet


@dataclass(frozen=True, slots=True)
class Light:
    name: str
    level: Level
    words: str
    fix: str = ""
    evidence: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ProcessState:
    name: str
    running: bool
    detail: str = ""
    #: What natsync run's status file says (natsync.base.status): PID, state (running /
    #: starting / restarting / stopped), restarts after a death, when it started.
    pid: int | None = None
    state: str = ""
    restarts: int | None = None
    started_at: dt.datetime | None = None


def save_doctor_report(report: Any, directory: Path) -> None:
    """Write a doctor's report where the Status page reads it (DIRECTORY/report.json, and the
    HTML one click away): the console's "run the doctor now" and natsync run's self-check."""
    from natsync.doctor.report import render_html, to_json

    directory.mkdir(parents=True, exist_ok=True)
    for name, text in ((REPORT_JSON, to_json(report)), (REPORT_HTML, render_html(report))):
        tmp = directory / f".{name}.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(directory / name)


def _parse_time(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        at = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)


def uptime(since: dt.datetime | None, now: dt.datetime) -> str:
    """How long since *since*: "90 s", "3 min", "2 h 5 min", "4 days" ("" when not known)."""
    if since is None:
        return ""
    seconds = max(int((now - since).total_seconds()), 0)
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} days"


def processes_from_run(doc: dict[str, Any] | None, supervisor_alive: bool) -> list[ProcessState]:
    """natsync run's status file (natsync.base.status) as processes: the supervisor first, then
    each part; nothing when there is no file. A supervisor that is gone is said so (its parts
    as last written are not shown: they ended with it)."""
    if doc is None:
        return []
    sup = doc.get("supervisor", {})
    pid = sup.get("pid") if isinstance(sup.get("pid"), int) else None
    at = _parse_time(sup.get("at"))
    if not supervisor_alive or sup.get("state") == "stopped":
        last = f"last status {at.isoformat(timespec='seconds')}" if at else "no status time"
        return [ProcessState("natsync run", False, f"not running ({last})", pid, "stopped")]
    out = [
        ProcessState("natsync run", True, "the supervisor", pid, str(sup.get("state", "")),
                     None, _parse_time(sup.get("started_at")))
    ]  # fmt: skip
    for part in doc.get("parts", []):
        if not isinstance(part, dict):
            continue
        state = str(part.get("state", ""))
        code = part.get("exit_status")
        detail = f"exited with status {code}" if code is not None else ""
        restarts = part.get("restarts")
        part_pid = part.get("pid")
        out.append(
            ProcessState(
                str(part.get("name", "?")), state == "running", detail,
                part_pid if isinstance(part_pid, int) else None, state,
                restarts if isinstance(restarts, int) else 0,
                _parse_time(part.get("started_at")),
            )
        )  # fmt: skip
    return out


@dataclass(slots=True)
class Gathered:
    now: dt.datetime
    report: dict[str, Any] | None = None
    acme: dict[str, Any] | None = None
    cert: dict[str, Any] | None = None
    checks: list[dict[str, Any]] = field(default_factory=list)
    updates: list[dict[str, Any]] = field(default_factory=list)
    store_error: str = ""
    users: int = 0
    devices: int = 0
    queue: int = 0
    queue_oldest: dt.datetime | None = None
    queue_error: str = ""
    processes: list[ProcessState] | None = None
    #: The portmap part's DATA_DIR/portmap/status.json (natsync.portmap.holder), None without.
    portmap: dict[str, Any] | None = None


_SEVERITY = {"ok": Level.GREEN, "warn": Level.AMBER, "fail": Level.RED, "skip": Level.GREY}
_ORDER = [Level.RED, Level.AMBER, Level.GREEN, Level.GREY]


def _worst(levels: list[Level]) -> Level:
    for level in _ORDER:
        if level in levels:
            return level
    return Level.GREY


def _from_report(report: dict[str, Any], checks: tuple[str, ...], name: str) -> Light | None:
    """The worst finding of the doctor's *checks*, in the doctor's words and fix."""
    found = [f for f in report.get("findings", []) if f.get("check") in checks]
    if not found:
        return None
    found.sort(key=lambda f: _ORDER.index(_SEVERITY.get(f.get("severity", ""), Level.GREY)))
    worst = found[0]
    level = _SEVERITY.get(worst.get("severity", ""), Level.GREY)
    words = str(worst.get("title", ""))
    if worst.get("cause"):
        words += f": {worst['cause']}"
    evidence = tuple(str(e) for f in found for e in f.get("evidence", []))[:8]
    return Light(name, level, words, str(worst.get("fix", "")), evidence)


def _when(at: dt.datetime, now: dt.datetime) -> str:
    return f"{uptime(at, now)} ago"


def lights(g: Gathered) -> list[Light]:
    out: list[Light] = []
    report = g.report or {}
    # Public address and CGNAT verdict: the DDNS checker's record, else the doctor's inside view.
    if g.checks:
        last = g.checks[0]
        at = dt.datetime.fromtimestamp(float(last["at"]), dt.UTC)
        kind = str(last.get("kind", ""))
        level = {"agree": Level.GREEN, "disagree": Level.AMBER}.get(kind, Level.RED)
        words = f"{last.get('address') or 'no address'} ({kind}, {_when(at, g.now)}): "
        words += str(last.get("summary", ""))
        fix = {
            "cgnat": "carrier-grade NAT: no port forward reaches you: use the relay",
            "disagree": "the router and the outside see different addresses: natsync ddns check",
            "no-address": "no public address found: natsync ddns check",
        }.get(kind, "")
        out.append(Light("Public address", level, words, fix, tuple(last.get("evidence", ()))))
    else:
        light = _from_report(report, ("inside",), "Public address and router")
        out.append(
            light
            or Light(
                "Public address",
                Level.GREY,
                "not checked yet",
                "natsync ddns check (or run the doctor below)",
            )
        )
    # DNS record vs address.
    dns = _from_report(report, ("names",), "DNS record")
    if dns is not None:
        if g.updates:
            u = g.updates[0]
            at = dt.datetime.fromtimestamp(float(u["at"]), dt.UTC)
            extra = f"last update {u['name']} {u['rdtype']} → {u['new']}: {u['result']}"
            dns = Light(dns.name, dns.level, dns.words, dns.fix, (*dns.evidence, extra))
        out.append(dns)
    elif g.updates:
        u = g.updates[0]
        at = dt.datetime.fromtimestamp(float(u["at"]), dt.UTC)
        level = Level.RED if u["result"] == "error" else Level.GREEN
        words = f"{u['name']} {u['rdtype']} → {u['new']} ({u['result']}, {_when(at, g.now)})"
        out.append(Light("DNS record", level, words, str(u.get("detail", ""))))
    else:
        out.append(Light("DNS record", Level.GREY, "no update recorded", "natsync ddns update"))
    reach = _from_report(report, ("reach",), "Port reachable / router mapping")
    if reach is not None:
        out.append(reach)
    if g.portmap is not None:
        out.append(_mappings(g.portmap, g.now))
    out.append(_certificate(g, report))
    for checks, name in (
        (("http", "session"), "ActiveSync from outside"),
        (("push",), "Direct Push (held Ping)"),
        (("autodiscover",), "Autodiscover"),
    ):
        light = _from_report(report, checks, name)
        if light is not None:
            out.append(light)
    out.extend(_processes(g))
    if g.store_error:
        out.append(Light("Store", Level.RED, g.store_error, "check server.store and the disk"))
    else:
        out.append(Light("Store", Level.GREEN, f"{g.users} users, {g.devices} devices"))
    out.append(_queue(g))
    return out


def _certificate(g: Gathered, report: dict[str, Any]) -> Light:
    doctor = _from_report(report, ("tls",), "Certificate")
    cert, acme = g.cert, g.acme
    if cert is None and acme is None:
        return doctor or Light(
            "Certificate", Level.GREY, "no certificate found", "natsync cert acme (docs/cert.md)"
        )
    evidence: list[str] = []
    level = Level.GREEN
    words = ""
    fix = ""
    if cert is not None:
        days = int(cert["days_left"])
        words = f"{', '.join(cert['names'])} from {cert['issuer']}, {days} days left"
        if days < CERT_RED_DAYS:
            level, fix = Level.RED, "natsync cert status; natsync cert acme --force"
        elif days < CERT_AMBER_DAYS:
            level, fix = Level.AMBER, "natsync cert status: renewal should have happened"
    if acme is not None:
        if acme.get("renew_at"):
            evidence.append(f"next renewal {acme['renew_at']} ({acme.get('renew_source', '')})")
        evidence.append(f"manager: {acme.get('state', '?')} — {acme.get('message', '')}")
        if acme.get("last_error"):
            evidence.append(f"last error: {acme['last_error']}")
        if not acme.get("healthy", True):
            level = Level.RED
            fix = fix or "natsync cert status (docs/cert.md)"
        if not words:
            words = f"{', '.join(acme.get('names', []))}: {acme.get('message', '')}"
    if doctor is not None and _ORDER.index(doctor.level) < _ORDER.index(level):
        level, fix = doctor.level, doctor.fix
        words += f" — doctor: {doctor.words}"
    return Light("Certificate", level, words, fix, tuple(evidence))


def _processes(g: Gathered) -> list[Light]:
    if g.processes is None:
        return [
            Light(
                "Edge and server processes",
                Level.GREY,
                "this console runs on its own: the processes are natsync run's to report",
                "start the console from natsync run to see them here",
            )
        ]
    if not g.processes:
        return [
            Light(
                "Edge and server processes",
                Level.GREY,
                "natsync run has not said how its parts are (no DATA_DIR/run/status.json yet)",
                "wait a few seconds after natsync run starts",
            )
        ]
    out = []
    for p in g.processes:
        facts = [p.state or ("running" if p.running else "not running")]
        if p.pid is not None:
            facts.append(f"pid {p.pid}")
        if p.started_at is not None and p.running:
            facts.append(f"up {uptime(p.started_at, g.now)}")
        if p.restarts is not None:
            facts.append(f"{p.restarts} restart{'' if p.restarts == 1 else 's'}")
        if p.detail:
            facts.append(p.detail)
        level = Level.GREEN if p.running else Level.RED
        if p.state in ("starting", "restarting"):
            level = Level.AMBER
        fix = "" if p.running else "see natsync run's log"
        out.append(Light(p.name, level, " · ".join(facts), fix))
    return out


#: A mapping's state (natsync.portmap.holder.PortMapSet.status) as a light.
_MAPPING_LEVEL = {
    "open": Level.GREEN, "skipped": Level.GREEN, "removed": Level.GREY,
    "pending": Level.AMBER, "renew-failing": Level.AMBER, "failed": Level.RED,
}  # fmt: skip


def _mappings(doc: dict[str, Any], now: dt.datetime) -> Light:
    """What the portmap part holds on the router, per family: open (until when), failing,
    skipped (a translated port has no IPv6 pinhole), from its own status file."""
    entries = [e for e in doc.get("mappings", []) if isinstance(e, dict)]
    if not entries:
        words = str(doc.get("message") or "the portmap part has not written its status yet")
        return Light("Router mappings", Level.GREY, words, "natsync portmap status")
    levels, parts, evidence, fixes = [], [], [], []
    for e in entries:
        state = str(e.get("state", ""))
        levels.append(_MAPPING_LEVEL.get(state, Level.GREY))
        text = f"IPv{e.get('family', '?')} {e.get('mapping', '?')} {state}"
        if e.get("method"):
            text += f" ({e['method']})"
        expires = e.get("expires_at")
        if state == "open" and isinstance(expires, int | float):
            left = dt.datetime.fromtimestamp(float(expires), dt.UTC)
            text += f", lease ends in {uptime(now, left) if left > now else '0 s'}"
        parts.append(text)
        if e.get("detail"):
            evidence.append(f"{e.get('mapping', '?')} (IPv{e.get('family', '?')}): {e['detail']}")
            if state in ("failed", "renew-failing", "pending"):
                fixes.append(str(e["detail"]))
    level = _worst(levels)
    fix = f"{fixes[0]} — natsync portmap status" if fixes else ""
    return Light("Router mappings", level, "; ".join(parts), fix, tuple(evidence))


def _queue(g: Gathered) -> Light:
    if g.queue_error:
        return Light("Relay queue", Level.GREY, g.queue_error)
    if not g.queue:
        return Light("Relay queue", Level.GREEN, "no outbound mail waiting")
    words = f"{g.queue} message(s) waiting"
    level = Level.GREEN
    if g.queue_oldest is not None:
        age = (g.now - g.queue_oldest).total_seconds() / 60
        words += f", oldest next try {_when(g.queue_oldest, g.now)}"
        if age > QUEUE_AMBER_MINUTES:
            level = Level.AMBER
    fix = "" if level is Level.GREEN else "natsync relay status; check server.smarthost"
    return Light("Relay queue", level, words, fix)


# -- reading the parts' files ----------------------------------------------------------------------


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def read_certificate(data_dir: Path, now: dt.datetime) -> dict[str, Any] | None:
    """The newest certificate under DATA_DIR/tls: names, issuer, days left."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    best: dict[str, Any] | None = None
    for path in sorted((data_dir / "tls").glob("*.pem")):
        try:
            cert = x509.load_pem_x509_certificate(path.read_bytes())
        except (OSError, ValueError):
            continue
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
            names += [str(a) for a in san.get_values_for_type(x509.IPAddress)]
        except x509.ExtensionNotFound:
            names = []
        issuer = cert.issuer.get_attributes_for_oid(NameOID.ORGANIZATION_NAME) or (
            cert.issuer.get_attributes_for_oid(NameOID.COMMON_NAME)
        )
        end = cert.not_valid_after_utc
        doc = {
            "file": str(path),
            "names": names,
            "issuer": str(issuer[0].value) if issuer else cert.issuer.rfc4514_string(),
            "not_after": end.isoformat(),
            "days_left": (end - now).days,
        }
        if best is None or doc["not_after"] > best["not_after"]:
            best = doc
    return best


def read_ddns(data_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The last address checks and DNS updates the DDNS runner recorded (newest first)."""
    path = data_dir / "ddns.db"
    if not path.exists():
        return [], []
    import sqlite3

    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
    except sqlite3.Error:
        return [], []
    try:
        db.row_factory = sqlite3.Row
        checks = [dict(r) for r in db.execute("SELECT * FROM ddns_check ORDER BY at DESC LIMIT 2")]
        for c in checks:
            c["evidence"] = json.loads(c.get("evidence") or "[]")
        updates = [
            dict(r) for r in db.execute("SELECT * FROM ddns_update ORDER BY at DESC LIMIT 5")
        ]
    except (sqlite3.Error, ValueError):
        return [], []
    finally:
        db.close()
    return checks, updates
