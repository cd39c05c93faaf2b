"""natsync.run.policy: restart backoff and the reload plan, without processes or clocks."""

from __future__ import annotations

from natsync.run.policy import STABLE_AFTER, Backoff, plan_reload


def test_quick_deaths_double_the_delay_up_to_the_most() -> None:
    backoff = Backoff(first=1.0, most=8.0)
    backoff.started(100.0)
    delays = []
    now = 100.0
    for _ in range(6):
        now += 1.0
        delays.append(backoff.died(now))
        backoff.started(now + delays[-1])
    assert delays == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert backoff.restarts == 6


def test_a_part_that_ran_long_enough_restarts_at_once() -> None:
    backoff = Backoff(first=1.0, most=60.0)
    backoff.started(0.0)
    assert backoff.died(1.0) == 1.0
    backoff.started(2.0)
    assert backoff.died(2.0 + STABLE_AFTER) == 0.0
    backoff.started(50.0)
    assert backoff.died(51.0) == 1.0


def test_reload_restarts_parts_whose_tables_changed() -> None:
    old = {"server": {"port": 1}, "edge": {"listen": "a:1"}, "cert": {"mode": "files"}}
    new = {"server": {"port": 1}, "edge": {"listen": "a:2"}, "ddns": {"zone": "z"}}
    plan = plan_reload(old, new, ("server", "edge", "cert"))
    assert plan.restart == ("edge",)
    assert plan.start == ("ddns",)
    assert plan.stop == ("cert",)
    assert plan.unchanged == ("server",)
    assert plan.fixed == ()


def test_reload_names_what_only_a_restart_applies() -> None:
    old = {"server": {}, "admin": {"listen": "127.0.0.1:1"}, "run": {"log_format": "text"}}
    new = {"server": {}, "admin": {"listen": "127.0.0.1:2"}, "run": {"log_format": "json"}}
    plan = plan_reload(old, new, ("server",))
    assert plan.fixed == ("admin.listen", "run.log_format")
    assert plan.restart == ()


def test_a_server_table_change_restarts_the_edge_too() -> None:
    # The edge reads [server] (where the server listens, the heartbeat it allows).
    plan = plan_reload({"server": {"port": 1}, "edge": {}}, {"server": {"port": 2}, "edge": {}},
                       ("server", "edge"))  # fmt: skip
    assert plan.restart == ("server", "edge")


def test_more_server_processes_restart_the_server() -> None:
    old = {"server": {}, "run": {"server_processes": 1}}
    new = {"server": {}, "run": {"server_processes": 2}}
    assert plan_reload(old, new, ("server",)).restart == ("server",)
