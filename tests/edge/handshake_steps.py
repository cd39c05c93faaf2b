"""One TLS handshake step through the C module (natsync.edge._tickets.handshake_step) or through
CPython's ``do_handshake`` (the Python reference), as a word: "done", "read", "write" or
"error". Shared by tests/edge/test_transport.py and fuzz/fuzz_handshake_steps.py."""

from __future__ import annotations

import ssl

from natsync.edge.tickets import _tickets


def python_step(sslobj: ssl.SSLObject) -> str:
    try:
        sslobj.do_handshake()
    except ssl.SSLWantReadError:
        return "read"
    except ssl.SSLWantWriteError:
        return "write"
    except ssl.SSLError:
        return "error"
    return "done"


def c_step(sslobj: ssl.SSLObject) -> str:
    state = _tickets.handshake_step(sslobj._sslobj)  # type: ignore[attr-defined]
    if state == 3:  # failed: the Python call again raises CPython's error (as TLSServer does)
        return "error" if python_step(sslobj) == "error" else "C failed, Python did not"
    return ("done", "read", "write")[state]
