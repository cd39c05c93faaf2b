"""The ActiveSync server's I/O adapter (aiohttp): routing, Basic auth, TLS, held Pings."""

from natsync.server.app import RunningServer, make_app, start_server

__all__ = ["RunningServer", "make_app", "start_server"]
