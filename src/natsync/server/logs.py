"""Server logging: one JSON line per record, with the request's context (user, device,
command) carried by a contextvar, so a warning deep inside a command still says whose request
it was (STYLE: stdlib logging, one JSON formatter, request context through contextvars)."""

from __future__ import annotations

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

#: The request being served on this task: {"user": ..., "device": ..., "cmd": ...}.
REQUEST_CONTEXT: ContextVar[dict[str, Any] | None] = ContextVar("natsync_request", default=None)
ACCESS_LOGGER = "natsync.server.access"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "msg", <request context>, "exc"}``; access-log records (whose
    message already is a JSON object) are merged into the same line rather than nested."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        message = record.getMessage()
        if record.name == ACCESS_LOGGER and message.startswith("{"):
            try:
                line.update(json.loads(message))
            except ValueError:
                line["msg"] = message
        else:
            line["msg"] = message
            context = getattr(record, "request", None) or REQUEST_CONTEXT.get()
            if context:
                line.update({k: v for k, v in context.items() if k not in line})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, separators=(",", ":"), default=str)


def setup_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr for the whole process (natsync server)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
