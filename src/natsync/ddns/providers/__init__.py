"""DNS updaters behind one interface (:class:`DnsUpdater`), one module per provider:
RFC 2136, dyndns2, Duck DNS, Cloudflare, deSEC and ``command``.

``make_updater(settings)`` builds the configured one. Those that can publish TXT records for
DNS-01 (all but dyndns2) satisfy :class:`TxtPublisher`; ``txt_publisher(settings)`` gives one or
says why not.
"""

from __future__ import annotations

from typing import Any, cast

from natsync.ddns.errors import DnsUpdateError
from natsync.ddns.provider_settings import (
    CloudflareSettings,
    CommandSettings,
    DesecSettings,
    DuckdnsSettings,
    Dyndns2Settings,
)
from natsync.ddns.providers.base import (
    Authoritative,
    DnsUpdater,
    PublishOutcome,
    Served,
    TxtPublisher,
)
from natsync.ddns.settings import DdnsSettings, split_host_port
from natsync.ddns.update import DnsServer, load_key
from natsync.errors import ConfigError

__all__ = [
    "Authoritative",
    "DnsUpdater",
    "PublishOutcome",
    "Served",
    "TxtPublisher",
    "authoritative",
    "make_updater",
    "txt_publisher",
]


def authoritative(settings: DdnsSettings) -> Authoritative:
    """Where records are checked: ``confirm_servers``, else the zone's NS records."""
    resolver = split_host_port(settings.resolver) if settings.resolver else None
    return Authoritative(
        (split_host_port(s) for s in settings.confirm_servers),
        resolver=resolver,
        timeout=settings.timeout,
    )


def make_updater(settings: DdnsSettings, provider: str | None = None, **kwargs: Any) -> DnsUpdater:
    """The updater of *provider* (default ``settings.provider``); *kwargs* go to DnsUpdater
    (sleep, rng, attempts, backoff_base, confirm_timeout)."""
    provider = provider or settings.provider
    kwargs.setdefault("confirm_timeout", settings.confirm_timeout)
    if provider != settings.provider:
        settings.check_provider(provider)
    if provider == "rfc2136":
        from natsync.ddns.providers.rfc2136 import Rfc2136Updater

        return Rfc2136Updater(dns_server(settings), **kwargs)
    table = settings.provider_settings(provider)
    where = authoritative(settings)
    if provider == "dyndns2":
        from natsync.ddns.providers.dyndns2 import Dyndns2Updater

        return Dyndns2Updater(cast(Dyndns2Settings, table), where, **kwargs)
    if provider == "duckdns":
        from natsync.ddns.providers.duckdns import DuckdnsUpdater

        return DuckdnsUpdater(cast(DuckdnsSettings, table), where, **kwargs)
    if provider == "cloudflare":
        from natsync.ddns.providers.cloudflare import CloudflareUpdater

        return CloudflareUpdater(cast(CloudflareSettings, table), where, settings.zone, **kwargs)
    if provider == "desec":
        from natsync.ddns.providers.desec import DesecUpdater

        return DesecUpdater(cast(DesecSettings, table), where, **kwargs)
    if provider == "command":
        from natsync.ddns.providers.command import CommandUpdater

        return CommandUpdater(cast(CommandSettings, table), where, **kwargs)
    raise ConfigError(f"unknown ddns.provider {provider!r}")  # pragma: no cover - checked


def txt_publisher(
    settings: DdnsSettings, provider: str | None = None, **kwargs: Any
) -> TxtPublisher:
    """An updater that can publish DNS-01 TXT records, or DnsUpdateError saying why not."""
    updater = make_updater(settings, provider, **kwargs)
    if not isinstance(updater, TxtPublisher):
        raise DnsUpdateError(
            f"the {updater.kind} protocol cannot set TXT records, so DNS-01 cannot use it; use "
            "another challenge, or a provider with an API (rfc2136, cloudflare, desec, duckdns, "
            "command)",
            fatal=True,
        )
    return updater


def dns_server(settings: DdnsSettings) -> DnsServer:
    """The RFC 2136 server of *settings* (with its TSIG key, read now)."""
    settings.require_dns()
    key = load_key(settings.key_file) if settings.key_file else None
    return DnsServer(
        settings.server_host, settings.server_port, settings.zone, key, settings.timeout
    )
