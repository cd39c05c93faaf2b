"""natsync.base.status: the supervisor's parts as DATA_DIR/run/status.json, and how the console
reads it — over real child processes (the supervisor's Child records around `sleep`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import signal
import time
from pathlib import Path

from natsync.base.status import STATUS_FILE, alive, describe, read_status, write_status
from natsync.console.status import Gathered, Level, lights, processes_from_run
from natsync.run.policy import Backoff
from natsync.run.supervisor import Child


async def _child(kind: str) -> Child:
    child = Child(kind, 0, Backoff())
    child.proc = await asyncio.create_subprocess_exec("sleep", "30")
    child.backoff.started(time.monotonic() - 90)  # started a minute and a half ago
    child.ready = asyncio.get_running_loop().create_future()
    return child


async def test_parts_states_pids_restarts_and_uptime(tmp_path: Path) -> None:
    server, edge = await _child("server"), await _child("edge")
    try:
        assert server.ready is not None
        server.ready.set_result({"port": 1})  # the server said it serves; the edge not yet
        edge.backoff.restarts = 2
        doc = describe([server, edge], os.getpid(), time.time() - 120, False, False,
                       time.time(), time.monotonic())  # fmt: skip
        write_status(tmp_path, doc)
        read = read_status(tmp_path)
        assert read == json.loads((tmp_path / STATUS_FILE).read_text()) == doc
        states = processes_from_run(read, alive(os.getpid()))
        assert [(p.name, p.state, p.pid, p.restarts) for p in states] == [
            ("natsync run", "running", os.getpid(), None),
            ("server", "running", server.proc.pid if server.proc else 0, 0),
            ("edge", "starting", edge.proc.pid if edge.proc else 0, 2),
        ]
        now = dt.datetime.now(dt.UTC)
        shown = {light.name: light for light in lights(Gathered(now=now, processes=states))}
        assert shown["server"].level is Level.GREEN
        assert shown["server"].words.startswith(f"running · pid {states[1].pid} · up 9")  # 90 s
        assert shown["edge"].level is Level.AMBER
        assert "2 restarts" in shown["edge"].words
        # The edge dies: the supervisor will restart it (it is wanted, the run is not stopping).
        assert edge.proc is not None
        edge.proc.send_signal(signal.SIGKILL)
        await edge.proc.wait()
        doc = describe([server, edge], os.getpid(), time.time(), False, False, time.time(),
                       time.monotonic())  # fmt: skip
        assert doc["parts"][1]["state"] == "restarting"
        assert doc["parts"][1]["exit_status"] == -signal.SIGKILL
        (_, _, dead) = processes_from_run(doc, True)
        (light,) = [x for x in lights(Gathered(now=now, processes=[dead])) if x.name == "edge"]
        assert light.level is Level.AMBER
        assert f"exited with status {-signal.SIGKILL}" in light.words
        # Stopped on purpose (the supervisor stops): stopped, red.
        edge.wanted = False
        assert describe([edge], 1, 0.0, True, False, 0.0, 0.0)["parts"][0]["state"] == "stopped"
    finally:
        for child in (server, edge):
            if child.proc is not None and child.proc.returncode is None:
                child.proc.kill()
                await child.proc.wait()


async def test_a_supervisor_that_is_gone_is_said_so(tmp_path: Path) -> None:
    gone = await asyncio.create_subprocess_exec("true")
    await gone.wait()
    doc = describe([], gone.pid, time.time(), False, False, time.time(), time.monotonic())
    write_status(tmp_path, doc)
    read = read_status(tmp_path)
    assert read is not None
    assert not alive(read["supervisor"]["pid"])
    (only,) = processes_from_run(read, alive(read["supervisor"]["pid"]))
    assert (only.name, only.running, only.state) == ("natsync run", False, "stopped")
    assert "not running (last status" in only.detail
    # Stopped cleanly: the last write says so, whoever holds the PID now.
    stopped = describe([], os.getpid(), time.time(), True, True, time.time(), time.monotonic())
    assert processes_from_run(stopped, True)[0].state == "stopped"


def test_no_file_or_not_ours_reads_as_none(tmp_path: Path) -> None:
    assert read_status(tmp_path) is None
    (tmp_path / STATUS_FILE).parent.mkdir()
    for text in ("", "[]", '{"supervisor": 1, "parts": []}', '{"supervisor": {}}', "{nope"):
        (tmp_path / STATUS_FILE).write_text(text)
        assert read_status(tmp_path) is None, text
    assert processes_from_run(None, True) == []
    assert [alive("12"), alive(-1), alive(None), alive(os.getpid())] == [False, False, False, True]


async def test_the_file_is_written_only_when_a_part_changed(tmp_path: Path) -> None:
    from natsync.base.status import StatusWriter

    server = await _child("server")
    try:
        writer = StatusWriter()

        def look() -> bool:
            doc = describe([server], os.getpid(), 1.0e9, False, False, time.time(),
                           time.monotonic())  # fmt: skip
            return writer.write(tmp_path, doc)

        assert look()  # the first look writes
        written = (tmp_path / STATUS_FILE).stat().st_mtime_ns
        assert not look()  # nothing changed but the time of the look: not rewritten
        assert (tmp_path / STATUS_FILE).stat().st_mtime_ns == written
        assert server.ready is not None
        server.ready.set_result({})  # starting -> running
        assert look()
        assert read_status(tmp_path)["parts"][0]["state"] == "running"  # type: ignore[index]
    finally:
        assert server.proc is not None
        server.proc.kill()
        await server.proc.wait()
