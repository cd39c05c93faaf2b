"""The console's pages as HTML strings: pure functions of what the handlers gathered.

Server-rendered, readable on a phone (one column below 40em, tables scroll), every action a
plain form POST carrying the CSRF token; ``/static/console.js`` only refreshes the Live charts
and follows the doctor's progress.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from html import escape
from typing import TYPE_CHECKING
from urllib.parse import quote

from natsync.admin import DeviceRow, UserRow
from natsync.console.live import Series, spark
from natsync.console.status import Light

if TYPE_CHECKING:
    from natsync.server.recent import RecentRequest

CSS = """
*{box-sizing:border-box}
body{font:16px/1.4 system-ui,sans-serif;margin:0;color:#222;background:#f6f6f4}
header{background:#1d3557;color:#fff;padding:.5em 1em;
display:flex;flex-wrap:wrap;gap:.2em 1em;align-items:center}
header a{color:#fff;text-decoration:none;padding:.3em .2em}
header a.on{border-bottom:3px solid #a8dadc}
header form{margin-left:auto}
main{padding:1em;max-width:70em;margin:auto}
h1{font-size:1.4em}
h2{font-size:1.15em;margin-top:1.5em}
.light{background:#fff;border-left:.6em solid #999;padding:.6em .8em;
margin:.5em 0;border-radius:4px}
.green{border-color:#2a9d8f}
.amber{border-color:#e9a400}
.red{border-color:#d62828}
.grey{border-color:#aaa}
.dot{display:inline-block;width:.8em;height:.8em;border-radius:50%;margin-right:.3em}
.dot.green{background:#2a9d8f}
.dot.amber{background:#e9a400}
.dot.red{background:#d62828}
.dot.grey{background:#aaa}
.fix{font-family:ui-monospace,monospace;font-size:.9em;background:#eef;padding:.1em .3em}
.ev{color:#555;font-size:.9em;margin:.2em 0 0 1em;padding:0}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:.35em .5em;border-bottom:1px solid #ddd;vertical-align:top}
button,input{font:inherit;padding:.35em .7em;margin:.15em 0}
button{cursor:pointer}
button.danger{background:#d62828;color:#fff;border:0;border-radius:3px}
.actions form{display:inline-block;margin-right:.3em}
tr.acts td{border-bottom:2px solid #ccc;padding-top:0}
.msg{background:#e0f2e9;padding:.6em;border-radius:4px}
.err{background:#fde2e2;padding:.6em;border-radius:4px}
.charts{display:flex;flex-wrap:wrap;gap:1em}
.spark{width:300px;max-width:100%;height:80px;background:#fff;color:#1d3557}
.spark text{font-size:11px;fill:#333}
label{display:block;margin:.3em 0}
@media (max-width:40em){th.wide,td.wide{display:none}
main{padding:.5em}
}
"""

NAV = (("/", "Status"), ("/devices", "Devices"), ("/users", "Users"), ("/live", "Live"))


def page(title: str, body: str, *, csrf: str = "", here: str = "", message: str = "") -> str:
    nav = "".join(
        f'<a href="{href}"{" class=on" if href == here else ""}>{name}</a>' for href, name in NAV
    )
    logout = (
        f'<form method="post" action="/logout">{hidden(csrf)}<button>Log out</button></form>'
        if csrf
        else ""
    )
    head = f"<header><strong>natsync console</strong>{nav}{logout}</header>" if csrf else ""
    note = f'<p class="msg" role="status">{escape(message)}</p>' if message else ""
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)} — natsync console</title>"
        '<link rel="stylesheet" href="/static/console.css">'
        '<script src="/static/console.js" defer></script></head>'
        f"<body>{head}<main><h1>{escape(title)}</h1>{note}{body}</main></body></html>"
    )


def _seg(value: str) -> str:
    """*value* as one path segment of a link."""
    return escape(quote(value, safe=""))


def hidden(csrf: str, **fields: str) -> str:
    parts = [f'<input type="hidden" name="csrf" value="{escape(csrf)}">']
    parts += [
        f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in fields.items()
    ]
    return "".join(parts)


def when(value: dt.datetime | None, now: dt.datetime) -> str:
    if value is None:
        return ""
    seconds = int((now - value).total_seconds())
    ago = f"{seconds} s" if seconds < 120 else f"{seconds // 60} min"
    if seconds >= 7200:
        ago = f"{seconds // 3600} h"
    if seconds >= 172800:
        ago = f"{seconds // 86400} days"
    return f'<time datetime="{value.isoformat()}">{ago} ago</time>'


def login(error: str = "") -> str:
    err = f'<p class="err" role="alert">{escape(error)}</p>' if error else ""
    return page(
        "Log in",
        f"{err}<form method=post action=/login>"
        '<label>Admin name <input name="user" autocomplete="username" required></label>'
        '<label>Password <input name="password" type="password" '
        'autocomplete="current-password" required></label>'
        "<button>Log in</button></form>",
    )


def status(
    lights: Iterable[Light], csrf: str, doctor_line: str, report_at: str, message: str = "",
    *, running: bool = False,
) -> str:  # fmt: skip
    rows = []
    for light in lights:
        ev = "".join(f"<li>{escape(e)}</li>" for e in light.evidence)
        fix = f'<div>Fix: <span class="fix">{escape(light.fix)}</span></div>' if light.fix else ""
        rows.append(
            f'<section class="light {light.level}" data-light="{escape(light.name)}">'
            f'<strong><span class="dot {light.level}"></span>{escape(light.name)}</strong> '
            f"<span>— {escape(light.words)}</span>{fix}"
            f"{f'<ul class=ev>{ev}</ul>' if ev else ''}</section>"
        )
    report = (
        f'<p>Last self-check: {escape(report_at)} — <a href="/doctor/report" id="report">'
        "open the doctor's report</a></p>"
        if report_at
        else "<p>No self-check yet.</p>"
    )
    doctor = (
        f"<h2>Self-check</h2>{report}"
        f'<form method=post action=/doctor/run id="doctor-run">{hidden(csrf)}'
        "<details><summary>As a phone of a test account (session, Autodiscover, Direct Push)"
        '</summary><label>User <input name="user" autocomplete="off"></label>'
        '<label>Password <input name="password" type="password" autocomplete="off"></label>'
        "<p><small>Used for this run only, never stored. Without them the doctor stops at "
        "the server's login.</small></p></details>"
        "<button>Run the doctor now</button></form>"
        f'<p id="doctor-progress" role="status" data-running="{str(running).lower()}">'
        f"{escape(doctor_line)}</p>"
    )
    return page("Status", "".join(rows) + doctor, csrf=csrf, here="/", message=message)


_ACTIONS = (
    ("allow", "Allow"),
    ("block", "Block"),
    ("quarantine", "Quarantine"),
    ("wipe", "Remote wipe"),
    ("account-wipe", "Account-only wipe"),
    ("remove", "Remove"),
)


def _device_actions(row: DeviceRow, csrf: str) -> str:
    d = row.device
    out = []
    for action, name in _ACTIONS:
        label = name
        if action == "allow" and d.access_state == "allowed":
            continue
        if action == "block" and d.access_state == "blocked":
            continue
        if action == "quarantine" and d.access_state == "quarantined":
            continue
        if action == "allow" and d.access_state == "quarantined":
            label = "Approve"
        out.append(
            f'<form method=post action="/devices/action">'
            f"{hidden(csrf, user=row.owner, device=d.device_id, action=action)}"
            f'<button data-action="{action}">{label}</button></form>'
        )
    return f'<div class="actions">{"".join(out)}</div>'


def _ms(value: float) -> str:
    if value >= 10:
        return f"{value:.0f} ms"
    return f"{value:.1f} ms" if value >= 1 else f"{value:.2f} ms"


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def push_latency(row: DeviceRow) -> str:
    """Like "p50 12 ms · p99 40 ms (3 pushes)"; "—" before the device's first push."""
    p50, p99 = row.push_quantile(0.5), row.push_quantile(0.99)
    if p50 is None or p99 is None:
        return "—"
    n = len(row.pushes)
    return f"p50 {_ms(p50)} · p99 {_ms(p99)} ({n} push{'es' if n != 1 else ''})"


def _push_start(r: RecentRequest) -> str:
    """Where a push's latency was measured from (docs/push.md "Where the clock starts")."""
    return "the end of the mail's DATA" if r.push_from == "data" else "the change's commit"


def _push_short(row: DeviceRow) -> str:
    """The table's cell: "0.1/4.2" (p50/p99 in ms, as the header says), "—" before a push."""
    p50, p99 = row.push_quantile(0.5), row.push_quantile(0.99)
    if p50 is None or p99 is None:
        return "—"
    return f"{_ms(p50).removesuffix(' ms')}/{_ms(p99).removesuffix(' ms')}"


def devices(rows: list[DeviceRow], csrf: str, now: dt.datetime, message: str = "") -> str:
    if not rows:
        body = "<p>No phone has connected yet.</p>"
        return page("Devices", body, csrf=csrf, here="/devices", message=message)
    by_user: dict[str, list[DeviceRow]] = {}
    for row in rows:
        by_user.setdefault(row.owner, []).append(row)
    parts = []
    for owner, owned in sorted(by_user.items()):
        trs = []
        for row in owned:
            d = row.device
            last = row.recent[0] if row.recent else None
            ping = "holding a Ping" if row.holding else "no"
            wipe = "" if d.wipe_state == "none" else f" · wipe {d.wipe_state}"
            trs.append(
                f'<tr data-device="{escape(d.device_id)}">'
                f'<td><a href="/devices/{_seg(owner)}/{_seg(d.device_id)}">'
                f"{escape(d.device_id)}</a><br>"
                f"<small>{escape(d.model or d.device_type)}</small></td>"
                f'<td class="wide">{escape(d.os)}</td><td>{escape(d.protocol_version)}</td>'
                f"<td>{when(last.at if last else d.last_seen, now)}</td>"
                f'<td data-ping="{str(row.holding).lower()}">{ping}</td>'
                f'<td data-push="{_num(row.push_quantile(0.5))}" title="{push_latency(row)}">'
                f"{_push_short(row)}</td>"
                f'<td data-access="{d.access_state}">{d.access_state}{escape(wipe)}</td>'
                "</tr>"
                f'<tr class="acts" data-device-actions="{escape(d.device_id)}">'
                f'<td colspan="7">{_device_actions(row, csrf)}</td></tr>'
            )
        parts.append(
            f"<h2>{escape(owner)}</h2><div class=scroll><table><tr><th>Device</th>"
            '<th class="wide">OS</th><th>EAS</th><th>Last request</th><th>Ping</th>'
            f"<th>Push<br><small>p50/p99 ms</small></th><th>Access</th></tr>{''.join(trs)}"
            "</table></div>"
        )
    return page("Devices", "".join(parts), csrf=csrf, here="/devices", message=message)


def device(row: DeviceRow, csrf: str, now: dt.datetime) -> str:
    d = row.device
    facts = [
        ("User", row.owner),
        ("Type", d.device_type),
        ("Model", d.model),
        ("OS", d.os),
        ("User agent", d.user_agent),
        ("EAS version", d.protocol_version),
        ("First seen", d.first_seen.strftime("%Y-%m-%d %H:%M UTC")),
        ("Access", d.access_state),
        ("Wipe", d.wipe_state),
        ("Holding a Ping", "yes" if row.holding else "no"),
        ("Push latency", push_latency(row)),
    ]
    table = "".join(
        f"<tr{' id=push' if k == 'Push latency' else ''}><th>{k}</th><td>{escape(str(v))}</td></tr>"
        for k, v in facts
    )
    reqs = "".join(
        f"<tr><td>{when(r.at, now)}</td><td>{escape(r.command)}</td><td>{r.http or ''}</td>"
        f"<td>{'' if r.status is None else r.status}</td>"
        f"<td>{f'waiting (heartbeat {r.held} s)' if r.held else f'{r.ms:g} ms'}"
        f"{'' if r.push_ms is None else f' · pushed {_ms(r.push_ms)} after {_push_start(r)}'}"
        "</td></tr>"
        for r in row.recent
    )
    body = (
        f"<div class=scroll><table>{table}</table></div>{_device_actions(row, csrf)}"
        "<h2>Recent requests</h2><div class=scroll><table id=recent><tr><th>When</th>"
        f"<th>Command</th><th>HTTP</th><th>Status</th><th>Time</th></tr>{reqs}"
        "</table></div>"
    )
    return page(f"Device {d.device_id}", body, csrf=csrf, here="/devices")


def confirm(title: str, question: str, action: str, csrf: str, fields: dict[str, str]) -> str:
    body = (
        f"<p>{escape(question)}</p><form method=post action={escape(action)}>"
        f"{hidden(csrf, **fields, confirm='yes')}"
        f'<button class="danger" id="confirm">{escape(title)}</button> '
        '<a href="javascript:history.back()">Cancel</a></form>'
    )
    return page(title, body, csrf=csrf)


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024  # type: ignore[assignment]
    return f"{n} B"


def users(
    rows: list[UserRow], csrf: str, now: dt.datetime, profiles: bool, message: str = ""
) -> str:
    trs = []
    for row in rows:
        u = row.user
        name = escape(u.name)
        counts = ", ".join(
            f"{escape(folder)} {m + i}" for folder, m, i in row.stats.folders if m + i
        )
        toggle = "enable" if row.disabled else "disable"
        acts = "".join(
            f'<form method=post action="/users/action">{hidden(csrf, user=u.name, action=a)}'
            f'<button data-action="{a}">{label}</button></form>'
            for a, label in ((toggle, toggle.capitalize()), ("remove", "Remove"))
        )
        reset = (
            f'<form method=post action="/users/action">'
            f"{hidden(csrf, user=u.name, action='passwd')}"
            '<input type="password" name="password" placeholder="new password" '
            'minlength="8" autocomplete="new-password" aria-label="new password">'
            "<button>Reset password</button></form>"
        )
        state = "disabled" if row.disabled else "active"
        setup = f'<a href="/users/{_seg(u.name)}/setup">Phone setup</a>' if profiles else ""
        trs.append(
            f'<tr data-user="{name}"><td>{name}<br><small>{escape(u.email)}</small></td>'
            f"<td>{state}</td><td>{row.devices}</td>"
            f"<td>{_size(row.stats.size)}<br><small>{row.stats.messages} mails, "
            f"{row.stats.items} items</small></td><td class=wide><small>{counts}</small></td>"
            f'</tr><tr class="acts"><td colspan="5" class="actions">{setup} {acts}{reset}</td></tr>'
        )
    add = (
        f"<h2>Add a user</h2><form method=post action=/users/add>{hidden(csrf)}"
        '<label>Login name <input name="name" required></label>'
        '<label>Email <input name="email" type="email" required></label>'
        '<label>Display name <input name="display_name"></label>'
        '<label>Password <input name="password" type="password" minlength="8" '
        'autocomplete="new-password" required></label><button>Add user</button></form>'
    )
    table = (
        "<div class=scroll><table><tr><th>User</th><th>State</th><th>Devices</th>"
        f"<th>Mailbox</th><th class=wide>Items per folder</th></tr>"
        f"{''.join(trs)}</table></div>"
    )
    todo = (
        ""
        if profiles
        else "<p><small>Phone setup profiles need the name phones connect to: set "
        "server.public_name (or natsync console --public-name).</small></p>"
    )
    return page("Users", table + todo + add, csrf=csrf, here="/users", message=message)


def setup(user: str, android: list[tuple[str, str]], csrf: str, has_ca: bool) -> str:
    rows = "".join(f"<tr><th>{escape(k)}</th><td>{escape(v)}</td></tr>" for k, v in android)
    ca = (
        "<li>Then Settings › General › About › Certificate Trust Settings: trust the CA.</li>"
        if has_ca
        else ""
    )
    body = (
        "<h2>iPhone and iPad</h2>"
        f'<p><a id="profile" href="/users/{_seg(user)}/profile.mobileconfig">'
        f"Download {escape(user)}.mobileconfig</a></p><ol><li>Send the file to the phone "
        "(AirDrop, mail) and open it.</li><li>Settings › Profile Downloaded › Install; enter "
        f"the password when asked.</li>{ca}</ol>"
        f"<h2>Android (Exchange account)</h2><div class=scroll><table>{rows}</table></div>"
    )
    return page(f"Phone setup for {user}", body, csrf=csrf, here="/users")


def live_charts(series: Series, source: str) -> str:
    samples = list(series.samples)
    commands = sorted({c for s in samples for c in s.rates})
    charts = [
        spark([float(s.held) for s in samples], "held Pings"),
        spark([sum(s.rates.values()) for s in samples], "requests/s"),
        spark([s.errors for s in samples], "errors/s"),
        spark([s.p50 for s in samples], "push p50", " s"),
        spark([s.p99 for s in samples], "push p99", " s"),
    ]
    charts += [spark([s.rates.get(c, 0.0) for s in samples], f"{c}/s") for c in commands]
    return f'<div class="charts" id="charts" data-source="{escape(source)}">{"".join(charts)}</div>'


def live(series: Series, source: str, csrf: str) -> str:
    body = (
        f"<p>Source: {escape(source)}. Sampled every few seconds; the last ten minutes.</p>"
        f"{live_charts(series, source)}"
        "<noscript><p>Reload the page to update the charts.</p></noscript>"
    )
    return page("Live", body, csrf=csrf, here="/live")


JS = """
// Progressive only: every action works without this file.
(function () {
  function poll(url, every, apply) {
    function tick() {
      fetch(url, {credentials: 'same-origin'}).then(function (r) {
        return r.ok ? r.text() : null;
      }).then(function (t) { if (t !== null) apply(t); }).catch(function () {});
    }
    setInterval(tick, every);
  }
  var charts = document.getElementById('charts');
  if (charts) {
    poll('/live/charts', 5000, function (t) {
      charts.outerHTML = t;
      charts = document.getElementById('charts');
    });
  }
  var progress = document.getElementById('doctor-progress');
  if (progress) {
    // Running when this page was made: reload once it ends, however fast it was.
    var sawRunning = progress.getAttribute('data-running') === 'true';
    poll('/doctor/progress', 1000, function (t) {
      var doc = JSON.parse(t);
      progress.textContent = doc.line;
      if (doc.running) { sawRunning = true; }
      // A run ended: reload once, so the lights show the doctor's new findings.
      if (doc.finished && doc.report && (sawRunning || !document.getElementById('report'))) {
        sawRunning = false;
        location.replace(location.pathname);
      }
    });
  }
})();
"""
