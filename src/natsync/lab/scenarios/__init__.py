"""The article's failures, each reproduced and then fixed, in the order of the issue's
priority. A scenario is a function of the :class:`~natsync.lab.world.World` and the
:class:`~natsync.lab.narrate.Narration` it fills; it leaves the world for
:meth:`~natsync.lab.world.World.reset`."""

from __future__ import annotations

from collections.abc import Callable

from natsync.lab.narrate import Narration
from natsync.lab.world import World

Scenario = Callable[[World, Narration], None]


def registry() -> dict[str, tuple[str, Scenario]]:
    """Name -> (one line on what it shows, the function), in the order `all` runs them."""
    from natsync.lab.scenarios import (
        certificate_mismatch,
        port_forward,
    )

    return {
        "port-forward": (port_forward.__doc__ or "", port_forward.run),
        "certificate-mismatch": (certificate_mismatch.__doc__ or "", certificate_mismatch.run),
    }
