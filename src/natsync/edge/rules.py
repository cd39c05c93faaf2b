"""Publishing rules: which request paths the edge lets through to the server (sans-I/O).

Like ISA Server's publishing rules, everything not named is answered 404 at the edge and never
reaches the server. A rule ending in ``/`` publishes that prefix (the ACME challenge folder);
any other rule publishes exactly that path, with or without a trailing slash, in any case (IIS
and the natsync server match paths case-insensitively, and phones spell Autodiscover's path
every which way). Paths with percent-escapes, dot segments, empty segments or backslashes are
not published at all: they are how a path that *looks* published is made to mean another one
behind the edge.
"""

from __future__ import annotations

from collections.abc import Iterable

from natsync.edge.config import DEFAULT_PATHS

#: Decisions remembered per path (phones repeat the same few paths; random paths from a scanner
#: only fill this up to here, then it starts again).
REMEMBERED_PATHS = 1024


class PublishRules:
    """Decides, from the path alone, whether a request is published."""

    __slots__ = ("_exact", "_prefixes", "_seen")

    def __init__(self, paths: Iterable[str] = DEFAULT_PATHS) -> None:
        exact: set[str] = set()
        prefixes: list[str] = []
        for path in paths:
            lower = path.lower()
            if lower.endswith("/"):
                prefixes.append(lower)
            else:
                exact.add(lower)
        self._exact = frozenset(exact)
        self._prefixes = tuple(prefixes)
        self._seen: dict[str, bool] = {}

    def allows(self, path: str) -> bool:
        """True when *path* (no query) is published."""
        seen = self._seen.get(path)
        if seen is None:
            if len(self._seen) >= REMEMBERED_PATHS:
                self._seen.clear()
            seen = self._seen[path] = self._decide(path)
        return seen

    def _decide(self, path: str) -> bool:
        if (
            "%" in path
            or "\\" in path
            or "//" in path
            or "/." in path.replace("/.well-known/", "/")
        ):
            return False
        lower = path.lower()
        if lower in self._exact or (lower.endswith("/") and lower[:-1] in self._exact):
            return True
        return any(lower.startswith(p) and len(lower) > len(p) for p in self._prefixes)
