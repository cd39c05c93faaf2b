"""The shape the connection machines share (the server's front, ``natsync.server.connection``,
and the edge's two, ``natsync.edge.connection``): states are members of a :class:`MachineState`
enum, and every change of state goes through one funnel that checks it against a transition
table — state → the states it may become (h11's ``_state.py``, aioquic's ``_set_state``).

:func:`checked_move` is that check; each machine keeps its own table and its own error (what it
says is the machine's). It runs on every state change of every request, so it is one set lookup
and no allocation unless the move is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from typing import TypeVar

from natsync.errors import NatsyncError


class MachineState(Enum):
    """The base of a machine's states: members hash by identity (they are singletons), in C —
    an ``Enum``'s own ``__hash__`` is a Python function, and the tables are read on every
    move."""

    __hash__ = object.__hash__


S = TypeVar("S", bound=MachineState)

#: A machine's transition table: each state → the states it may become.
Moves = Mapping[S, frozenset[S]]


def checked_move(table: Moves[S], old: S, new: S, refuse: Callable[[S, S], NatsyncError]) -> S:
    """*new*, when *table* lets *old* become it; else the error ``refuse(old, new)`` is raised
    (a move a table forbids is a bug in the machine)."""
    if new in table[old]:
        return new
    raise refuse(old, new)
