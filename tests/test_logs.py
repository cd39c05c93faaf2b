"""natsync.logs: one format across all parts; timestamps on every line; a request is one line."""

from __future__ import annotations

import json
import logging

import pytest

from natsync.errors import ConfigError
from natsync.logs import JsonFormatter, TextFormatter, setup_logging


def _record(name: str, msg: str, level: int = logging.INFO) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, None, None)


def test_text_lines_carry_a_utc_timestamp_level_and_logger() -> None:
    line = TextFormatter().format(_record("natsync.run", "part server serves"))
    stamp, level, logger, rest = line.split(" ", 3)
    assert stamp.endswith("Z")
    assert stamp[4] == "-"
    assert stamp[10] == "T"
    assert (level, logger, rest) == ("info", "natsync.run", "part server serves")


@pytest.mark.parametrize("logger", ["natsync.server.access", "natsync.edge.access"])
def test_access_records_become_one_line_in_both_formats(logger: str) -> None:
    record = _record(logger, json.dumps({"client": "10.0.0.7", "status": 200, "ua": "a b"}))
    text = TextFormatter().format(record)
    assert "\n" not in text
    assert text.endswith(f'{logger} client=10.0.0.7 status=200 ua="a b"')
    doc = json.loads(JsonFormatter().format(record))
    assert doc["client"] == "10.0.0.7"
    assert doc["ts"].endswith("Z")
    assert "msg" not in doc


def test_a_traceback_stays_on_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "bad", None, sys.exc_info())
    assert "\n" not in TextFormatter().format(record)


def test_unknown_format_or_level_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="text or json"):
        setup_logging("xml")
    with pytest.raises(ConfigError, match="log level"):
        setup_logging("text", "loud")
