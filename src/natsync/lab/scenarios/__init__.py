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
        carrier_grade_nat,
        certificate_mismatch,
        direct_push_timeout,
        dns_provider,
        dynamic_address,
        from_scratch,
        hairpin,
        port_forward,
    )

    return {
        "port-forward": (port_forward.__doc__ or "", port_forward.run),
        "certificate-mismatch": (certificate_mismatch.__doc__ or "", certificate_mismatch.run),
        "dynamic-address": (dynamic_address.__doc__ or "", dynamic_address.run),
        "direct-push-timeout": (direct_push_timeout.__doc__ or "", direct_push_timeout.run),
        "hairpin": (hairpin.__doc__ or "", hairpin.run),
        "carrier-grade-nat": (carrier_grade_nat.__doc__ or "", carrier_grade_nat.run),
        "from-scratch": (from_scratch.__doc__ or "", from_scratch.run),
        "dns-provider": (dns_provider.__doc__ or "", dns_provider.run),
    }
