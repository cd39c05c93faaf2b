"""Direct Push timeout: the router forgets idle connections sooner than the phone's heartbeat,
so the answer to a held Ping never reaches the phone and push stops; the doctor finds the cut;
the server's max_idle_path_seconds caps the heartbeat below it and push works again."""

from __future__ import annotations

import secrets

from natsync.lab.narrate import Narration
from natsync.lab.scenarios._common import expect_finding
from natsync.lab.world import World

#: The router's idle timeout for established TCP connections (seconds; real routers: minutes).
ROUTER_IDLE = 8
#: What the phone asks for: longer than the router keeps an idle connection.
HEARTBEAT = 10
#: Seconds into the held Ping the mail arrives: after the router forgot the connection.
MAIL_AFTER = 9.0
#: Shortest heartbeat the lab's server accepts, so the cap (ROUTER_IDLE - 5 s) is allowed.
HEARTBEAT_MIN = 2


def run(world: World, narr: Narration) -> None:
    public = {
        "tls_cert": str(world.data / "tls" / "public.pem"),
        "tls_key": str(world.data / "tls" / "public.key"),
        "heartbeat_min": HEARTBEAT_MIN,
    }
    world.start_server(**public)
    world.lab.set_conntrack_idle(ROUTER_IDLE)
    narr.note(
        f"the router keeps idle connections {ROUTER_IDLE} s; the phone asks a {HEARTBEAT} s "
        "heartbeat"
    )
    subject = f"push {secrets.token_hex(3)}"
    pushed = world.phone_push(HEARTBEAT, subject, MAIL_AFTER)
    push = pushed.get("push", {})
    narr.expect(
        f"Mail arrives {MAIL_AFTER:.0f} s into the Ping; the router has forgotten the "
        "connection: the server's answer never reaches the phone",
        expect_ok=False,
        seen_ok=bool(push.get("changed")),
        detail=push.get("error") or pushed.get("error", "") or "the phone was told of the mail",
    )
    report = world.doctor_from_phone(heartbeat=HEARTBEAT)
    narr.reports["cut"] = report
    expect_finding(
        narr,
        "The doctor holds a Ping the same way and finds the cut",
        report,
        "push",
        expect_ok=False,
        cause=True,
    )

    world.start_server(**public, max_idle_path_seconds=ROUTER_IDLE)
    narr.note(f"server: max_idle_path_seconds = {ROUTER_IDLE} (the heartbeat is capped below it)")
    subject = f"push {secrets.token_hex(3)}"
    pushed = world.phone_push(HEARTBEAT, subject, MAIL_AFTER)
    push = pushed.get("push", {})
    narr.expect(
        "With the cap, the phone's Pings end before the router forgets them, and the mail is "
        "pushed",
        expect_ok=True,
        seen_ok=bool(push.get("changed")),
        detail=(
            f"heartbeat {push.get('heartbeat')} s (asked {HEARTBEAT}), {push.get('pings')} Pings, "
            f"told of the mail {float(push.get('seconds', 0)):.1f} s after the first"
        )
        if push.get("changed")
        else str(push.get("error") or pushed.get("error")),
    )
    narr.reports["push-capped"] = pushed
    report = world.doctor_from_phone(heartbeat=HEARTBEAT)
    narr.reports["capped"] = report
    expect_finding(
        narr,
        "The doctor's Ping now survives its (capped) heartbeat",
        report,
        "push",
        expect_ok=True,
    )
