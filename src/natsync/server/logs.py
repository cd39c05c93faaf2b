"""Server logging: the request's context (user, device, command) carried by a contextvar, so a
warning deep inside a command still says whose request it was (STYLE: stdlib logging, one
formatter, request context through contextvars). The formats themselves live in
:mod:`natsync.logs` (one format across all parts)."""

from __future__ import annotations

import logging
from typing import Any

from natsync.logs import REQUEST_CONTEXT

__all__ = ["ACCESS_LOGGER", "REQUEST_CONTEXT", "setup_logging"]

ACCESS_LOGGER = "natsync.server.access"


def __getattr__(name: str) -> Any:
    # JsonFormatter moved to natsync.logs (imported lazily: natsync.logs reads REQUEST_CONTEXT).
    if name == "JsonFormatter":
        from natsync.logs import JsonFormatter

        return JsonFormatter
    raise AttributeError(name)


def setup_logging(level: int = logging.INFO) -> None:
    """JSON lines on stderr for the whole process (see natsync.logs.setup_logging)."""
    from natsync.logs import setup_logging as setup

    setup("json", logging.getLevelName(level).lower())
