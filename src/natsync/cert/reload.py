"""Swapping a TLS server's certificate without dropping a connection.

A listener keeps one ``SSLContext`` for its whole life; its ``sni_callback`` moves every new
handshake onto the *current* context. :meth:`CertReloader.reload` builds a fresh context from
the files (so a half-written or mismatched pair is refused and the old one stays), then makes
it current. Connections already open keep the context they were made with: OpenSSL copies the
certificate into each connection at its start, so nothing open is touched.

This is the callback form of hot reload (``natsync.cert.acme.obtain(on_installed=...)``); a
separate edge process gets a SIGHUP instead and does the same on its side.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable
from pathlib import Path

from natsync.cert import policy
from natsync.errors import NatsyncError

log = logging.getLogger(__name__)


class ReloadError(NatsyncError):
    """The new certificate files cannot be used; the old certificate stays in service."""


def server_context(cert_path: Path, key_path: Path) -> ssl.SSLContext:
    context = policy.server_context()
    try:
        context.load_cert_chain(cert_path, key_path)
    except (OSError, ssl.SSLError) as exc:
        raise ReloadError(
            f"cannot load {cert_path} with {key_path}: {exc}; the old certificate stays"
        ) from exc
    return context


class CertReloader:
    """A listening context whose certificate can be replaced while connections stay open."""

    def __init__(
        self,
        cert_path: Path,
        key_path: Path,
        configure: Callable[[ssl.SSLContext], None] | None = None,
        *,
        build: Callable[[Path, Path], ssl.SSLContext] | None = None,
    ) -> None:
        """*build*: how a context is made from the files (default :func:`server_context`);
        *configure*: what is set on each one after."""
        self.cert_path = cert_path
        self.key_path = key_path
        self._configure = configure
        self._build_from = build or server_context
        self._lock = threading.Lock()
        self._current = self._build()
        self.generation = 1
        self.context = self._build()  # the listener's; every handshake moves to _current
        self.context.sni_callback = self._pick

    def _build(self) -> ssl.SSLContext:
        try:
            context = self._build_from(self.cert_path, self.key_path)
        except (OSError, ssl.SSLError) as exc:
            raise ReloadError(
                f"cannot load {self.cert_path} with {self.key_path}: {exc}; the old certificate "
                "stays"
            ) from exc
        if self._configure is not None:
            self._configure(context)
        return context

    def _pick(self, sock: ssl.SSLObject, name: str | None, _: ssl.SSLContext) -> None:
        with self._lock:
            sock.context = self._current

    def reload(self, cert_path: Path | None = None, key_path: Path | None = None) -> None:
        """Load the (possibly new) files; new handshakes use them, open connections go on."""
        self.cert_path = cert_path or self.cert_path
        self.key_path = key_path or self.key_path
        fresh = self._build()
        with self._lock:
            self._current = fresh
            self.generation += 1
        log.info(
            "TLS certificate reloaded from %s (generation %d)", self.cert_path, self.generation
        )
