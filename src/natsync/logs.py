"""One log format for every part: ``--log-format text|json`` and ``--log-level``.

Every line carries a UTC timestamp, the level and the logger. Access-log records (the server's
``natsync.server.access`` and the edge's ``natsync.edge.access`` loggers log one JSON object
per request) are merged into the line: in JSON as fields of the same object, in text as
``key=value`` pairs, so a request is one line whatever the format.

    2026-12-06T20:51:02.123Z info natsync.edge.access client=10.0.0.7 method=POST status=200 ...
    {"ts":"2026-12-06T20:51:02.123Z","level":"info","logger":"natsync.edge.access",...}
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any, TypeVar

from natsync.errors import ConfigError

_F = TypeVar("_F", bound=Callable[..., Any])

#: The request being served on this task: {"user": ..., "device": ..., "cmd": ...}, added to
#: every record logged while it runs (kept here, light to import: every part logs through this
#: module, and the server's modules are heavy).
REQUEST_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("natsync_request", default=None)
#: Loggers whose messages are JSON objects describing one request each.
ACCESS_LOGGERS = frozenset({"natsync.server.access", "natsync.edge.access"})
FORMATS = ("text", "json")
LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
#: Third-party loggers that log every protocol step at INFO (aiosmtpd: each SMTP command):
#: at ingest rates that is most of the work and none of the signal.
NOISY = ("mail.log", "aiohttp.access")


def _timestamp(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def _access_fields(record: logging.LogRecord) -> dict[str, Any] | None:
    if record.name not in ACCESS_LOGGERS:
        return None
    message = record.getMessage()
    if not message.startswith("{"):
        return None
    try:
        fields = json.loads(message)
    except ValueError:
        return None
    return fields if isinstance(fields, dict) else None


def _context(record: logging.LogRecord) -> dict[str, Any]:
    context = getattr(record, "request", None) or REQUEST_CONTEXT.get()
    return dict(context) if context else {}


class TextFormatter(logging.Formatter):
    """``<ts> <level> <logger> <message> [key=value ...]`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        head = f"{_timestamp(record)} {record.levelname.lower()} {record.name}"
        fields = _access_fields(record)
        if fields is not None:
            line = head + " " + " ".join(f"{k}={_text(v)}" for k, v in fields.items())
        else:
            line = f"{head} {record.getMessage()}"
            context = _context(record)
            if context:
                line += " " + " ".join(f"{k}={_text(v)}" for k, v in context.items())
        if record.exc_info:
            # A bug's traceback, kept on one line so log readers keep it with its record.
            line += " exc=" + json.dumps(self.formatException(record.exc_info))
        return line


def _text(value: Any) -> str:
    text = str(value)
    return json.dumps(text) if (not text or " " in text or '"' in text) else text


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg" | <access fields>, <request context>, "exc"}``."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        fields = _access_fields(record)
        if fields is not None:
            line.update(fields)
        else:
            line["msg"] = record.getMessage()
            line.update({k: v for k, v in _context(record).items() if k not in line})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), default=str)


def formatter(fmt: str) -> logging.Formatter:
    if fmt not in FORMATS:
        raise ConfigError(f"log format must be text or json, not {fmt!r}")
    return JsonFormatter() if fmt == "json" else TextFormatter()


def setup_logging(fmt: str = "text", level: str = "info") -> None:
    """Send every record of this process to stderr in *fmt* at *level* and above."""
    if level not in LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(LEVELS)}, not {level!r}")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(LEVELS[level])
    for name in NOISY:
        logging.getLogger(name).setLevel(max(LEVELS[level], logging.WARNING))


def log_options(func: _F) -> _F:
    """``--log-format text|json`` and ``--log-level`` (env NATSYNC_LOG_FORMAT / _LEVEL)."""
    import click

    func = click.option(
        "--log-level",
        type=click.Choice(list(LEVELS)),
        default=None,
        envvar="NATSYNC_LOG_LEVEL",
        help="Least important records logged [default: run.log_level, else info].",
    )(func)
    return click.option(
        "--log-format",
        type=click.Choice(FORMATS),
        default=None,
        envvar="NATSYNC_LOG_FORMAT",
        help="text (one line per record) or json (one object per line) "
        "[default: run.log_format, else text].",
    )(func)
