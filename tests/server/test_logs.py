"""The JSON log format and the request context it carries."""

from __future__ import annotations

import json
import logging

from natsync.server.logs import ACCESS_LOGGER, REQUEST_CONTEXT, JsonFormatter


def _record(name: str, msg: str) -> logging.LogRecord:
    return logging.LogRecord(name, logging.WARNING, __file__, 1, msg, None, None)


def test_request_context_is_added() -> None:
    token = REQUEST_CONTEXT.set({"user": "alice", "device": "d1", "cmd": "Sync"})
    try:
        line = json.loads(JsonFormatter().format(_record("natsync.eas", "odd thing")))
    finally:
        REQUEST_CONTEXT.reset(token)
    assert line["msg"] == "odd thing"
    assert line["level"] == "warning"
    assert (line["user"], line["device"], line["cmd"]) == ("alice", "d1", "Sync")


def test_access_lines_are_merged_not_nested() -> None:
    record = _record(ACCESS_LOGGER, json.dumps({"http": 200, "cmd": "Ping"}))
    line = json.loads(JsonFormatter().format(record))
    assert line["http"] == 200
    assert line["cmd"] == "Ping"
    assert "msg" not in line
