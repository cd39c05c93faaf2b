"""Direct Push timeout: the router forgets idle connections sooner than the phone's heartbeat,
so the answer to a held Ping never reaches the phone and push stops; the doctor measures the
cut and advises server.max_idle_path_seconds below it; with the advice applied the heartbeat is
capped below the cut and push works again."""

from __future__ import annotations

import secrets

from natsync.lab.narrate import Narration
from natsync.lab.scenarios._common import doctor_step
from natsync.lab.world import World

#: The router's idle timeout for established TCP connections (seconds; real routers: minutes).
ROUTER_IDLE = 8
#: What the phone asks for: longer than the router keeps an idle connection.
HEARTBEAT = 10
#: Seconds into the held Ping the mail arrives: after the router forgot the connection.
MAIL_AFTER = 9.0
#: Shortest heartbeat the lab's server accepts, so the cap (ROUTER_IDLE - 5 s) is allowed.
HEARTBEAT_MIN = 2
#: Seconds the measured bracket may miss the router's timeout by: the router's idle clock
#: starts at the last packet (the phone's ACK of the answer), the probe's when it read it.
TIMING_SLACK = 0.2


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
    found = doctor_step(
        narr,
        "cut",
        world.doctor_from_phone(heartbeat=HEARTBEAT),
        "The doctor holds a Ping the same way and finds the cut",
        "push",
        expect_ok=False,
        cause=True,
    )
    data = found.get("data", {}) if found else {}
    cut = data.get("idle_cut") or {}
    survived, cut_at = float(cut.get("survived", 0)), float(cut.get("cut", 0))
    narr.expect(
        f"The doctor measures the cut: the router's {ROUTER_IDLE} s lies in its bracket (longest "
        "idle that survived, shortest that did not), within its stated precision",
        expect_ok=True,
        seen_ok=bool(cut)
        and survived - TIMING_SLACK <= ROUTER_IDLE <= cut_at + TIMING_SLACK
        and cut_at - survived <= float(cut.get("precision", 0)),
        detail=(
            f"survived {survived:.2f} s, cut at {cut_at:.2f} s, precision "
            f"{float(cut.get('precision', 0)):.2f} s"
            if cut
            else "no measured cut in the doctor's push finding"
        ),
    )
    advice = {
        key.removeprefix("server."): value for key, value in (data.get("advice") or {}).items()
    }
    narr.expect(
        f"It advises server.max_idle_path_seconds below the cut ({ROUTER_IDLE} s)",
        expect_ok=True,
        seen_ok=0 < int(advice.get("max_idle_path_seconds", 0)) < ROUTER_IDLE + TIMING_SLACK
        and "max_idle_path_seconds" in (found or {}).get("fix", ""),
        detail=", ".join(f"{k} = {v}" for k, v in advice.items()) or "no advice",
    )
    if not advice:
        return

    world.start_server(**{**public, **advice})
    narr.note(
        "server: the doctor's advice applied: "
        + ", ".join(f"{k} = {v}" for k, v in advice.items())
        + " (the heartbeat is capped below the cut)"
    )
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
    doctor_step(
        narr,
        "capped",
        world.doctor_from_phone(heartbeat=HEARTBEAT),
        "The doctor's Ping now survives its (capped) heartbeat",
        "push",
        expect_ok=True,
    )
