"""``natsync edge trust-backend HOST:PORT``: look at the server's certificate and pin it.

This is the step the article calls tricky ("export your Client Access server's SSL certificate
and add it to the ISA Server's certificate store"), done in one command: connect, show what the
server presents (subject, names, SHA-256 fingerprint, validity), and on confirmation write the
fingerprint as ``backend_pin`` into the ``[edge]`` table of the config file. The rest of the file
(comments, other tables, order) is kept as it was. After the server's certificate is renewed,
the same command pins the new one.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import tomlkit
from tomlkit.items import Table

from natsync.edge.config import split_hostport
from natsync.edge.tls import PeerCertificate, fetch_certificate
from natsync.errors import ConfigError


async def inspect_backend(backend: str, server_name: str = "") -> PeerCertificate:
    """Fetch the certificate the server at *backend* (host:port) presents for *server_name*."""
    host, port = split_hostport(backend, "backend")
    return await fetch_certificate(host, port, server_name or host)


def describe(peer: PeerCertificate, now: dt.datetime | None = None) -> list[str]:
    """Lines that show an operator what they are about to trust."""
    now = now or dt.datetime.now(dt.UTC)
    cert = peer.cert
    not_before, not_after = cert.not_valid_before_utc, cert.not_valid_after_utc
    state = "valid"
    if now < not_before:
        state = "NOT YET VALID"
    elif now > not_after:
        state = "EXPIRED"
    return [
        f"subject:     {peer.subject}",
        f"issuer:      {peer.issuer}",
        f"names:       {', '.join(peer.names) or '(none)'}",
        f"fingerprint: {peer.fingerprint}",
        f"valid:       {not_before:%Y-%m-%d %H:%M} .. {not_after:%Y-%m-%d %H:%M} UTC ({state})",
    ]


def pin_in_config(
    path: Path, fingerprint: str, *, backend: str | None = None, backend_name: str | None = None
) -> None:
    """Write ``backend_pin`` (and ``backend``) into the ``[edge]`` table, keeping the rest."""
    try:
        text = path.read_text(encoding="utf-8") if path.exists() else ""
        document = tomlkit.parse(text)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except tomlkit.exceptions.ParseError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from exc
    edge = document.get("edge")
    if edge is None:
        edge = tomlkit.table()
        document["edge"] = edge
    if not isinstance(edge, Table):
        raise ConfigError(f"{path}: [edge] must be a table")
    if backend is not None:
        edge["backend"] = backend
    if backend_name:
        edge["backend_name"] = backend_name
    edge["backend_pin"] = fingerprint
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(tomlkit.dumps(document), encoding="utf-8")
    tmp.replace(path)
